//! Backups in the server's repository: list, forget, and restore one as a new workspace.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::Response;
use claude_vm_api::{BackupList, BackupsQuery, Forget, Forgotten, Restore};
use claude_vm_engine::{CancellationToken, NullReporter, RestoreRequest};

use super::{ApiJson, detached, typed};
use crate::AppState;
use crate::error::ApiResult;

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

pub async fn list(
    State(s): State<AppState>,
    q: QueryResult<BackupsQuery>,
) -> ApiResult<Json<BackupList>> {
    let Query(q) = q?;
    let engine = s.engine.clone();
    let snaps = detached(async move { Ok(engine.backups(q.workspace.as_deref()).await?) }).await?;
    Ok(Json(BackupList {
        snapshots: typed(&snaps)?,
    }))
}

pub async fn forget(
    State(s): State<AppState>,
    ApiJson(f): ApiJson<Forget>,
) -> ApiResult<Json<Forgotten>> {
    let engine = s.engine.clone();
    let removed = detached(async move {
        Ok(engine
            .forget_backups(&f.workspace, f.keep_last, f.keep_daily)
            .await?)
    })
    .await?;
    Ok(Json(Forgotten { removed }))
}

pub async fn restore(
    State(s): State<AppState>,
    ApiJson(r): ApiJson<Restore>,
) -> ApiResult<Response> {
    let req = RestoreRequest {
        target: r.workspace,
        snapshot: r.snapshot,
        name: r.name,
        provider: r.provider,
        image: r.image,
    };
    let engine = s.engine.clone();
    // Detached: once started, a restore finishes (or cleans up) even if the client goes.
    let out = detached(async move {
        Ok(engine
            .restore(&req, &NullReporter, &CancellationToken::new())
            .await?)
    })
    .await?;
    super::workspaces::outcome_response(out)
}
