//! Files and diffs of a workspace's project (paths relative to the project folder, or
//! absolute under `/workspace`; the daemon confines every path to the workspace).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use claude_vm_api::{Diff, DiffQuery, Listing, PathQuery};
use claude_vm_protocol::api::FileKind;
use futures_util::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::AppState;
use crate::error::ApiResult;

type QueryResult<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

pub async fn diff(
    State(s): State<AppState>,
    Path(ws): Path<String>,
    q: QueryResult<DiffQuery>,
) -> ApiResult<Json<Diff>> {
    let Query(q) = q?;
    let (_, link) = s.engine.link_waking(&ws).await?;
    Ok(Json(link.diff(q.stat).await?))
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
    let (_, link) = s.engine.link_waking(&ws).await?;
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
    let (_, link) = s.engine.link_waking(&ws).await?;
    let path = q.path.as_str();
    let info = link.stat(path).await?;
    if info.kind == FileKind::Dir {
        return Err(
            crate::error::ApiError::bad_request(format!("{path:?} is a directory"))
                .hint("list it with GET .../files?path=…"),
        );
    }
    let download = link.read(path).await?;
    // The length of what is read (a symlink's target, not the link itself).
    let size = download.size();
    let stream = download
        .into_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let mut res = Body::from_stream(stream).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(size) = size {
        h.insert(header::CONTENT_LENGTH, size.into());
    }
    if let Ok(v) = header::HeaderValue::from_str(&content_disposition(&info.name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// What RFC 8187 escapes in an extended parameter value: all but its `attr-char`s.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// `attachment` with a plain-ASCII `filename` (anything else, quotes and control
/// characters included, becomes `_`) and the exact name as RFC 8187 `filename*`.
fn content_disposition(name: &str) -> String {
    let plain: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    let exact = utf8_percent_encode(name, ATTR_CHAR);
    format!("attachment; filename=\"{plain}\"; filename*=UTF-8''{exact}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn content_disposition_of_any_name_is_a_valid_header() {
        for (name, want) in [
            (
                "a.txt",
                "attachment; filename=\"a.txt\"; filename*=UTF-8''a.txt",
            ),
            (
                "x\ny\"z\u{7f}é",
                "attachment; filename=\"x_y_z__\"; filename*=UTF-8''x%0Ay%22z%7F%C3%A9",
            ),
        ] {
            let v = super::content_disposition(name);
            assert_eq!(v, want);
            axum::http::HeaderValue::from_str(&v).unwrap();
        }
    }
}
