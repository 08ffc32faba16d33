//! Running a command in a workspace with its output streamed back as JSON lines:
//! `{"type":"stdout","data":"..."}`, `{"type":"stderr",...}`, then `{"type":"exit","code":N}`
//! (or `{"type":"error","message":...}`). The command is killed if the client goes away.
//! While the command is silent, a `{"type":"keepalive"}` line every
//! [`KEEPALIVE`] tells the client the server is still there.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use claude_vm_api::{Encoding, Exec, ExecLine, ExecQuery};
use claude_vm_engine::{ExecEvent, ExecSession};
use claude_vm_protocol::api::ExecRequest;

use super::ApiJson;
use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// How often a silent command's stream says it is alive (as the event streams do).
pub const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

fn line(l: ExecLine) -> bytes::Bytes {
    bytes::Bytes::from(l.to_line())
}

pub async fn exec(
    State(s): State<AppState>,
    Path(ws): Path<String>,
    q: Result<Query<ExecQuery>, axum::extract::rejection::QueryRejection>,
    ApiJson(b): ApiJson<Exec>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let base64 = q.encoding.unwrap_or_default() == Encoding::Base64;
    let cmd = match (b.command.is_empty(), b.shell) {
        (false, None) => b.command,
        (true, Some(line)) if !line.trim().is_empty() => vec!["sh".into(), "-c".into(), line],
        (true, _) => {
            return Err(ApiError::bad_request(
                "give `command` (an array) or `shell`",
            ));
        }
        (false, Some(_)) => {
            return Err(ApiError::bad_request("give `command` or `shell`, not both"));
        }
    };
    let stdin = match (b.stdin, b.stdin_base64) {
        (Some(t), None) => Some(t.into_bytes()),
        (None, Some(b64)) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| ApiError::bad_request(format!("stdin_base64: {e}")))?,
        ),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give `stdin` or `stdin_base64`, not both",
            ));
        }
    };
    let (_, link) = s.engine.link_waking(&ws).await?;
    let session = link
        .exec(&ExecRequest {
            cmd,
            env: b.env,
            workdir: b.workdir,
            user: b.user,
            ..ExecRequest::default()
        })
        .await?;
    match &stdin {
        Some(data) => {
            if !data.is_empty() {
                session.stdin(data).await?;
            }
            session.close_stdin().await?;
        }
        None => session.close_stdin().await?,
    }
    let encode = move |data: &[u8]| -> String {
        if base64 {
            base64::engine::general_purpose::STANDARD.encode(data)
        } else {
            String::from_utf8_lossy(data).into_owned()
        }
    };
    // Dropping the session (client gone) closes the stream, and the daemon kills the command.
    let stream = futures_util::stream::unfold(
        Some((session, encode)),
        |state: Option<(ExecSession, _)>| async move {
            let (mut session, encode) = state?;
            // `next` is cancel-safe: a timeout loses nothing.
            let Ok(next) = tokio::time::timeout(KEEPALIVE, session.next()).await else {
                let alive = line(ExecLine::Keepalive);
                return Some((Ok(alive), Some((session, encode))));
            };
            let item = match next {
                Ok(Some(ExecEvent::Started(pid))) => line(ExecLine::Started { pid }),
                Ok(Some(ExecEvent::Stdout(d))) => line(ExecLine::Stdout { data: encode(&d) }),
                Ok(Some(ExecEvent::Stderr(d))) => line(ExecLine::Stderr { data: encode(&d) }),
                Ok(Some(ExecEvent::Exit(code))) => {
                    return Some((Ok::<_, std::io::Error>(line(ExecLine::Exit { code })), None));
                }
                Ok(Some(ExecEvent::Error(message))) => {
                    return Some((Ok(line(ExecLine::Error { message })), None));
                }
                Ok(None) => return None,
                Err(e) => {
                    let message = e.to_string();
                    return Some((Ok(line(ExecLine::Error { message })), None));
                }
            };
            Some((Ok(item), Some((session, encode))))
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
