//! Backups in the server's repository: list, forget, purge a deleted workspace's, restore
//! one as a new workspace, and carry one out (export) or in (import) as an archive.

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use claude_vm_api::{
    BackupList, BackupsQuery, ExportQuery, Forget, Forgotten, ImportQuery, Purge, Purged, Restore,
};
use claude_vm_engine::{CancellationToken, NullReporter, RestoreRequest};
use tokio::io::AsyncReadExt;

use super::{ApiJson, detached, typed};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

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

pub async fn purge(
    State(s): State<AppState>,
    ApiJson(p): ApiJson<Purge>,
) -> ApiResult<Json<Purged>> {
    let engine = s.engine.clone();
    let (workspace_id, n) =
        detached(async move { Ok(engine.purge_deleted(&p.workspace).await?) }).await?;
    Ok(Json(Purged {
        workspace_id,
        purged: n as u64,
    }))
}

/// A snapshot as the archive `workspace export` writes: made in a private scratch folder
/// first (so a failure is an error answer, never a short archive), then sent with its
/// length; the scratch copy goes when the answer is sent or dropped.
pub async fn export(State(s): State<AppState>, q: QueryResult<ExportQuery>) -> ApiResult<Response> {
    let Query(q) = q?;
    let scratch = super::workspaces::scratch_dir("claude-vm-export-")?;
    let file = scratch.path().join("export.tar");
    let engine = s.engine.clone();
    let path = file.clone();
    // The scratch folder lives in the task that fills it, so a client that hangs up
    // cannot remove it under the export.
    let (out, scratch) = detached(async move {
        let out = engine
            .export(&q.workspace, q.snapshot.as_deref(), &path, &NullReporter)
            .await?;
        Ok((out, scratch))
    })
    .await?;
    let internal =
        |e: std::io::Error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let f = tokio::fs::File::open(&file).await.map_err(internal)?;
    let len = f.metadata().await.map_err(internal)?.len();
    let name = format!(
        "{}-{}.tar",
        out.manifest
            .workspace_name
            .as_deref()
            .unwrap_or("workspace"),
        &out.manifest.snapshot[..out.manifest.snapshot.len().min(8)]
    );
    let body = futures_util::stream::unfold((f, scratch), |(mut f, scratch)| async move {
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), (f, scratch)))
            }
            Err(e) => Some((Err(e), (f, scratch))),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{}\"",
                    name.replace(
                        |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '.',
                        "_"
                    )
                ),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// An export archive sent as the body (`application/x-tar`), received into a private
/// scratch folder and imported as a new workspace.
pub async fn import(
    State(s): State<AppState>,
    q: QueryResult<ImportQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-tar")
        && !content_type.starts_with("application/octet-stream")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the archive `claude-vm workspace export` wrote as the body, with Content-Type: application/x-tar",
        ));
    }
    let (scratch, file) =
        super::workspaces::receive(body, "claude-vm-import-", "import.tar").await?;
    let engine = s.engine.clone();
    let req = RestoreRequest {
        target: String::new(),
        snapshot: None,
        name: q.name,
        provider: q.provider,
        image: q.image,
    };
    // Detached, owning the scratch folder: once started, an import finishes (or cleans up)
    // even if the client goes.
    let out = detached(async move {
        let out = engine
            .import(&file, &req, &NullReporter, &CancellationToken::new())
            .await;
        drop(scratch);
        Ok(out?)
    })
    .await?;
    super::workspaces::outcome_response(out)
}
