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
use claude_vm_engine::{ExecEvent, ExecSession};
use claude_vm_protocol::api::ExecRequest;
use serde::Deserialize;

use super::ApiJson;
use crate::AppState;
use crate::error::{ApiError, ApiResult};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// The program and its arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// Or a shell command line, run with `sh -c`.
    pub shell: Option<String>,
    /// Working directory [default: the project folder].
    pub workdir: Option<String>,
    /// `NAME=VALUE` pairs.
    #[serde(default)]
    pub env: Vec<String>,
    /// User name or uid [default: the agent user].
    pub user: Option<String>,
    /// Fed to the command's standard input, then closed.
    pub stdin: Option<String>,
    /// The same, base64-encoded (for bytes that are not UTF-8).
    pub stdin_base64: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecQuery {
    /// `text` (default: output as UTF-8, invalid bytes replaced) or `base64`.
    pub encoding: Option<String>,
}

/// How often a silent command's stream says it is alive (as the event streams do).
pub const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

fn line(v: serde_json::Value) -> bytes::Bytes {
    let mut s = v.to_string();
    s.push('\n');
    bytes::Bytes::from(s)
}

pub async fn exec(
    State(s): State<AppState>,
    Path(ws): Path<String>,
    q: Result<Query<ExecQuery>, axum::extract::rejection::QueryRejection>,
    ApiJson(b): ApiJson<ExecBody>,
) -> ApiResult<Response> {
    let Query(q) = q?;
    let base64 = match q.encoding.as_deref() {
        None | Some("text") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown encoding {other:?}; use text or base64"
            )));
        }
    };
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
    let (_, link) = s.engine.link(&ws).await?;
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
    let encode = move |data: &[u8]| -> serde_json::Value {
        if base64 {
            base64::engine::general_purpose::STANDARD
                .encode(data)
                .into()
        } else {
            String::from_utf8_lossy(data).into_owned().into()
        }
    };
    // Dropping the session (client gone) closes the stream, and the daemon kills the command.
    let stream = futures_util::stream::unfold(
        Some((session, encode)),
        |state: Option<(ExecSession, _)>| async move {
            let (mut session, encode) = state?;
            // `next` is cancel-safe: a timeout loses nothing.
            let Ok(next) = tokio::time::timeout(KEEPALIVE, session.next()).await else {
                let alive = line(serde_json::json!({"type": "keepalive"}));
                return Some((Ok(alive), Some((session, encode))));
            };
            let item = match next {
                Ok(Some(ExecEvent::Started(pid))) => {
                    line(serde_json::json!({"type": "started", "pid": pid}))
                }
                Ok(Some(ExecEvent::Stdout(d))) => {
                    line(serde_json::json!({"type": "stdout", "data": encode(&d)}))
                }
                Ok(Some(ExecEvent::Stderr(d))) => {
                    line(serde_json::json!({"type": "stderr", "data": encode(&d)}))
                }
                Ok(Some(ExecEvent::Exit(code))) => {
                    return Some((
                        Ok::<_, std::io::Error>(line(
                            serde_json::json!({"type": "exit", "code": code}),
                        )),
                        None,
                    ));
                }
                Ok(Some(ExecEvent::Error(m))) => {
                    return Some((
                        Ok(line(serde_json::json!({"type": "error", "message": m}))),
                        None,
                    ));
                }
                Ok(None) => return None,
                Err(e) => {
                    return Some((
                        Ok(line(
                            serde_json::json!({"type": "error", "message": e.to_string()}),
                        )),
                        None,
                    ));
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
