//! Files and diffs of a workspace's project (paths relative to the project folder, or
//! absolute under `/workspace`; the daemon confines every path to the workspace).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use claude_vm_protocol::api::{Diff, FileInfo, FileKind};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiResult;

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// Only the list of changed files with line counts, no patch.
    #[serde(default)]
    pub stat: bool,
}

pub async fn diff(
    State(s): State<AppState>,
    Path(ws): Path<String>,
    q: QueryResult<DiffQuery>,
) -> ApiResult<Json<Diff>> {
    let Query(q) = q?;
    let (_, link) = s.engine.link(&ws).await?;
    Ok(Json(link.diff(q.stat).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// Default: the project folder.
    #[serde(default)]
    pub path: String,
}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub file: FileInfo,
    /// The entries, when `file` is a directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<FileInfo>>,
}

fn or_project(path: &str) -> &str {
    if path.is_empty() { "." } else { path }
}

pub async fn list(
    State(s): State<AppState>,
    Path(ws): Path<String>,
    q: QueryResult<PathQuery>,
) -> ApiResult<Json<Listing>> {
    let Query(q) = q?;
    let (_, link) = s.engine.link(&ws).await?;
    let path = or_project(&q.path);
    let file = link.stat(path).await?;
    let entries = match file.kind {
        FileKind::Dir => Some(link.list(path).await?),
        _ => None,
    };
    Ok(Json(Listing { file, entries }))
}

pub async fn content(
    State(s): State<AppState>,
    Path(ws): Path<String>,
    q: QueryResult<PathQuery>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    if q.path.is_empty() {
        return Err(crate::error::ApiError::bad_request(
            "`path` is required: the file to read",
        ));
    }
    let (_, link) = s.engine.link(&ws).await?;
    let path = q.path.as_str();
    let info = link.stat(path).await?;
    if info.kind == FileKind::Dir {
        return Err(
            crate::error::ApiError::bad_request(format!("{path:?} is a directory"))
                .hint("list it with GET .../files?path=…"),
        );
    }
    let download = link.read(path).await?;
    let stream = download
        .into_stream()
        .map(|r| r.map_err(std::io::Error::other));
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, info.size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{}\"",
                    info.name.replace(['"', '\\', '\r', '\n'], "_")
                ),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
