//! Files and git routes of the daemon API (`/v1/files/...`, `/v1/git/diff`).
//!
//! File operations are synchronous and confined to the workspace root ([`crate::files`]);
//! they run on the blocking pool, with request and response bodies streamed through
//! channels so a 50 MB file never sits in memory whole. Relative paths start at the project
//! folder.

// Handlers return `Err(response)` for early exits; the response is what gets sent either
// way, so its size is not a cost worth boxing away.
#![allow(clippy::result_large_err)]

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;

use crate::api::{Body, State, error, fallible_stream_body, json, parse_query, stream_body};
use crate::files::{FileError, Root};

fn file_error(e: FileError) -> Response<Body> {
    // An upload cut off by the client is the client's problem, not a server error.
    if let FileError::Io { source, .. } = &e
        && source.to_string().starts_with("upload interrupted")
    {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, e.to_string())
}

/// Owner of files the API creates: the agent user, when the daemon can give files away.
fn owner() -> Option<(u32, u32)> {
    nix::unistd::geteuid().is_root().then(|| {
        let agent = crate::agent_user::get();
        (agent.uid, agent.gid)
    })
}

/// Bytes written on the blocking pool, sent as a response body.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

/// A request body read on the blocking pool. A body that fails midway is an error, so an
/// interrupted upload never replaces a file.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Forward a request body into a [`ChannelReader`].
fn body_reader(mut body: hyper::body::Incoming) -> ChannelReader {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data()
                        && tx.send(Ok(data)).await.is_err()
                    {
                        break;
                    }
                }
                Some(Err(e)) => {
                    let _ = tx
                        .send(Err(std::io::Error::other(format!(
                            "upload interrupted: {e}"
                        ))))
                        .await;
                    break;
                }
                None => break,
            }
        }
    });
    ChannelReader {
        rx,
        current: Bytes::new(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response<Body>> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
    })
}

fn flag(q: &std::collections::HashMap<String, String>, name: &str) -> bool {
    matches!(q.get(name).map(String::as_str), Some("true" | "1" | "yes"))
}

/// Routes under `/v1/files` and `/v1/git`: `segments` are the path's after `/v1/`.
pub async fn handle(
    state: &Arc<State>,
    req: Request<hyper::body::Incoming>,
    segments: &[&str],
    path: &str,
) -> Response<Body> {
    match route(state, req, segments, path).await {
        Ok(r) | Err(r) => r,
    }
}

async fn route(
    state: &Arc<State>,
    req: Request<hyper::body::Incoming>,
    segments: &[&str],
    path: &str,
) -> Result<Response<Body>, Response<Body>> {
    const FILES: &[&str] = &[
        "stat", "list", "read", "write", "mkdir", "rename", "archive",
    ];
    let known = match segments {
        ["files"] | ["git", "diff"] => true,
        ["files", op] => FILES.contains(op),
        _ => false,
    };
    if !known {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no such route: {path}"),
        ));
    }
    let q = parse_query(req.uri().query()).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let method = req.method().clone();
    if segments == ["git", "diff"] {
        if method != Method::GET {
            return Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed on {path}"),
            ));
        }
        let dir = std::path::PathBuf::from(&state.default_dir);
        let stat = flag(&q, "stat");
        let as_agent = owner();
        let res = blocking(move || crate::git::diff(&dir, stat, as_agent)).await?;
        return match res {
            Ok(d) => Ok(json(StatusCode::OK, &d)),
            Err(e @ crate::git::GitError::NotARepository { .. }) => {
                Err(error(StatusCode::CONFLICT, e.to_string()))
            }
            Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        };
    }
    let root = Root::new(&state.root).map_err(|e| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("workspace root unavailable: {e}"),
        )
    })?;
    let base: Option<String> = std::path::Path::new(&state.default_dir)
        .strip_prefix(root.path())
        .ok()
        .map(|p| p.display().to_string())
        .filter(|p| !p.is_empty());
    let param = |name: &str| -> Result<String, Response<Body>> {
        q.get(name).cloned().ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                format!("missing query parameter `{name}`"),
            )
        })
    };
    let activity = state.activity.clone();
    match (method.clone(), segments) {
        (Method::GET, ["files", "stat"]) => {
            let p = param("path")?;
            let follow = flag(&q, "follow");
            let info = blocking(move || root.stat(&p, base.as_deref(), follow))
                .await?
                .map_err(file_error)?;
            Ok(json(StatusCode::OK, &info))
        }
        (Method::GET, ["files", "list"]) => {
            let p = param("path")?;
            let list = blocking(move || root.list(&p, base.as_deref()))
                .await?
                .map_err(file_error)?;
            Ok(json(StatusCode::OK, &list))
        }
        (Method::GET, ["files", "read"]) => {
            let p = param("path")?;
            let (mut file, info) = blocking(move || root.open_read(&p, base.as_deref()))
                .await?
                .map_err(file_error)?;
            let (tx, rx) = mpsc::channel::<Bytes>(8);
            let size = info.size;
            tokio::task::spawn_blocking(move || {
                // Never more than the announced length, even if the file grows meanwhile.
                let mut file = (&mut file).take(size);
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    match file.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
            let mut res = Response::new(stream_body(rx));
            let h = res.headers_mut();
            h.insert(
                "content-type",
                "application/octet-stream".parse().expect("valid"),
            );
            h.insert("content-length", info.size.into());
            h.insert(
                "x-claude-vm-mode",
                format!("{:o}", info.mode).parse().expect("valid"),
            );
            Ok(res)
        }
        (Method::PUT, ["files", "write"]) => {
            let p = param("path")?;
            let mode = match q.get("mode") {
                Some(m) => Some(
                    u32::from_str_radix(m, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| {
                            error(
                                StatusCode::BAD_REQUEST,
                                format!("invalid mode {m:?}: expected octal like 644"),
                            )
                        })?,
                ),
                None => None,
            };
            let parents = flag(&q, "parents");
            let reader = body_reader(req.into_body());
            let info = blocking(move || {
                root.write_atomic(&p, base.as_deref(), mode, parents, owner(), reader)
            })
            .await?
            .map_err(file_error)?;
            activity.touch("file write");
            Ok(json(StatusCode::OK, &info))
        }
        (Method::POST, ["files", "mkdir"]) => {
            let p = param("path")?;
            let parents = flag(&q, "parents");
            let info = blocking(move || root.mkdir(&p, base.as_deref(), parents, owner()))
                .await?
                .map_err(file_error)?;
            activity.touch("file write");
            Ok(json(StatusCode::OK, &info))
        }
        (Method::DELETE, ["files"]) => {
            let p = param("path")?;
            let recursive = flag(&q, "recursive");
            blocking(move || root.remove(&p, base.as_deref(), recursive))
                .await?
                .map_err(file_error)?;
            activity.touch("file write");
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "removed": true }),
            ))
        }
        (Method::POST, ["files", "rename"]) => {
            let from = param("from")?;
            let to = param("to")?;
            let info = blocking(move || root.rename(&from, &to, base.as_deref()))
                .await?
                .map_err(file_error)?;
            activity.touch("file write");
            Ok(json(StatusCode::OK, &info))
        }
        (Method::GET, ["files", "archive"]) => {
            let p = param("path")?;
            // Check first, so a bad path is a clean 4xx rather than a broken stream.
            let check_root = Root::new(root.path())
                .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            let (p2, b2) = (p.clone(), base.clone());
            blocking(move || check_root.stat(&p2, b2.as_deref(), false))
                .await?
                .map_err(file_error)?;
            let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
            tokio::task::spawn_blocking(move || {
                let mut w = ChannelWriter {
                    tx: tx.clone(),
                    buf: Vec::new(),
                };
                let res = root
                    .write_archive(&p, base.as_deref(), &mut w)
                    .map_err(|e| e.to_string());
                let res = res.and_then(|()| w.flush().map_err(|e| e.to_string()));
                if let Err(e) = res {
                    tracing::warn!("archive of {p} failed: {e}");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e)));
                }
            });
            let mut res = Response::new(fallible_stream_body(rx));
            res.headers_mut()
                .insert("content-type", "application/x-tar".parse().expect("valid"));
            Ok(res)
        }
        (Method::PUT, ["files", "archive"]) => {
            let p = param("path")?;
            let reader = body_reader(req.into_body());
            let entries =
                blocking(move || root.extract_archive(&p, base.as_deref(), reader, owner()))
                    .await?
                    .map_err(file_error)?;
            activity.touch("file write");
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "entries": entries }),
            ))
        }
        _ => Err(error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed on {path}"),
        )),
    }
}
