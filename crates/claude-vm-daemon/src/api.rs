//! The daemon's HTTP API (`/v1/...`): parse each request into a handler call, answer JSON
//! or a stream. Every failure is a 4xx/5xx with `{"error": "..."}`; nothing a client sends
//! can crash the daemon (see the request fuzz test).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use claude_vm_protocol::Health;
use claude_vm_protocol::api::{ApiError, ExecRequest};
use claude_vm_protocol::frame::{Decoder, Kind};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Body as _, Frame};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;

use crate::activity::Activity;
use crate::exec::{self, Input};

/// Response bodies: whole or streamed.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Largest JSON request body (and largest exec start frame).
pub const MAX_JSON_BODY: u64 = 64 * 1024;

/// Shared daemon state.
pub struct State {
    pub health: Health,
    pub activity: Arc<Activity>,
    /// Where commands run when the client does not say (the project folder).
    pub default_dir: String,
    /// The workspace root every file operation is confined to.
    pub root: std::path::PathBuf,
    pub conversations: Arc<claude_vm_agents::Manager>,
    /// The idle-stop policy and timer.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
    /// The embedded SSH server (`None` if its host key could not be made).
    pub ssh: Option<Arc<crate::ssh::Server>>,
}

pub fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("valid response")
}

pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::to_vec(value).expect("serializable"),
    )
}

pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(status, &ApiError::new(message))
}

/// A streamed body whose producer can fail: an error resets the stream, so the client sees
/// a failure rather than a short body.
pub fn fallible_stream_body(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Body {
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|r| (r.map(Frame::data), rx))
    });
    BodyExt::boxed_unsync(StreamBody::new(s))
}

pub fn stream_body(rx: mpsc::Receiver<Bytes>) -> Body {
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
    });
    BodyExt::boxed_unsync(StreamBody::new(s))
}

/// `a=b&c=d` with percent-decoding; malformed escapes are an error.
pub fn parse_query(q: Option<&str>) -> Result<HashMap<String, String>, String> {
    fn decode(s: &str) -> Result<String, String> {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' => {
                    let hex = bytes.get(i + 1..i + 3).ok_or("truncated %-escape")?;
                    let hex = std::str::from_utf8(hex).map_err(|_| "bad %-escape")?;
                    out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad %-escape")?);
                    i += 3;
                }
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| "query is not UTF-8".to_owned())
    }
    let mut map = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        map.insert(decode(k)?, decode(v)?);
    }
    Ok(map)
}

/// Route one request.
pub async fn handle(
    state: Arc<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // One routing style for every module: the method and the path's segments after `/v1/`,
    // matched as slice patterns (an empty segment, as in `//`, matches no route).
    let segments: Vec<&str> = match path.strip_prefix("/v1/") {
        Some(rest) => rest.split('/').collect(),
        None => Vec::new(),
    };
    let not_found = || error(StatusCode::NOT_FOUND, format!("no such route: {path}"));
    let res = match (&method, segments.as_slice()) {
        (&Method::GET, ["health"]) => json(StatusCode::OK, &state.health),
        (&Method::GET, ["activity"]) => json(StatusCode::OK, &state.activity.snapshot()),
        (&Method::POST, ["exec"]) => exec(state, req).await,
        (_, ["health" | "activity" | "exec"]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed on {path}"),
        ),
        (_, ["lifecycle", rest @ ..]) => lifecycle(&state, req, rest, &path).await,
        (_, ["ssh", ..]) => {
            let hold = state.activity.hold("ssh connection");
            held(
                claude_vm_sshd::handle(state.ssh.as_ref(), req)
                    .await
                    .unwrap_or_else(not_found),
                hold,
            )
        }
        (_, ["conversations", rest @ ..]) => {
            crate::conv_routes::handle(&state, req, rest, &path).await
        }
        (_, ["files", ..] | ["git", ..]) => {
            let hold = state.activity.hold("file transfer");
            held(
                crate::routes::handle(&state, req, &segments, &path).await,
                hold,
            )
        }
        // Backups read the workspace without counting as activity in it.
        (_, ["backup", ..]) if crate::backup::handles(&segments) => {
            crate::backup::route(state, req, &segments).await
        }
        _ => not_found(),
    };
    Ok(res)
}

/// `res`, counting as activity until its body is sent whole or dropped.
pub fn held(res: Response<Body>, hold: crate::activity::Hold) -> Response<Body> {
    res.map(|body| {
        body.map_frame(move |frame| {
            let _ = &hold;
            frame
        })
        .boxed_unsync()
    })
}

/// `/v1/lifecycle`: the idle-stop policy, the timer, and the watch of a control side that
/// takes a final backup before the workspace stops itself. None of it counts as activity.
async fn lifecycle(
    state: &Arc<State>,
    req: Request<hyper::body::Incoming>,
    rest: &[&str],
    path: &str,
) -> Response<Body> {
    let lc = &state.lifecycle;
    match (req.method().clone(), rest) {
        (Method::GET, []) => json(StatusCode::OK, &lc.status()),
        (Method::PUT, []) => {
            let body = match read_limited(req.into_body(), MAX_JSON_BODY).await {
                Ok(b) => b,
                Err(res) => return res,
            };
            let policy: claude_vm_protocol::api::LifecyclePolicy =
                match serde_json::from_slice(&body) {
                    Ok(p) => p,
                    Err(e) => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            format!("invalid lifecycle policy: {e}"),
                        );
                    }
                };
            let lc = lc.clone();
            match tokio::task::spawn_blocking(move || lc.set_policy(policy)).await {
                Ok(Ok(status)) => json(StatusCode::OK, &status),
                Ok(Err(e)) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot save the lifecycle policy: {e}"),
                ),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        (Method::GET, ["watch"]) => {
            let q = match parse_query(req.uri().query()) {
                Ok(q) => q,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            let wait = match q.get("wait").map(|w| w.parse::<u64>()) {
                None => crate::lifecycle::MAX_WATCH,
                Some(Ok(secs)) => std::time::Duration::from_secs(secs),
                Some(Err(_)) => {
                    return error(StatusCode::BAD_REQUEST, "wait must be a number of seconds");
                }
            };
            json(StatusCode::OK, &lc.watch(wait).await)
        }
        (Method::POST, ["ready"]) => {
            if lc.ready() {
                json(StatusCode::OK, &lc.status())
            } else {
                error(
                    StatusCode::CONFLICT,
                    "the workspace is not stopping (it became busy again)",
                )
            }
        }
        (method, [] | ["watch"] | ["ready"]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed on {path}"),
        ),
        _ => error(StatusCode::NOT_FOUND, format!("no such route: {path}")),
    }
}

async fn exec(state: Arc<State>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let mut body = req.into_body();
    let mut decoder = Decoder::default();
    // The first frame says what to run.
    let start: ExecRequest = loop {
        match decoder.next_frame() {
            Ok(Some((Kind::Start, payload))) => match serde_json::from_slice(&payload) {
                Ok(r) => break r,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("invalid exec request: {e}"),
                    );
                }
            },
            Ok(Some((kind, _))) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("expected a start frame, got {kind:?}"),
                );
            }
            Ok(None) => {}
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        }
        if decoder.pending() as u64 > MAX_JSON_BODY {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "exec start frame too large");
        }
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    decoder.push(&data);
                }
            }
            Some(Err(e)) => {
                return error(StatusCode::BAD_REQUEST, format!("reading the request: {e}"));
            }
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the request ended before a start frame",
                );
            }
        }
    };
    let (in_tx, in_rx) = mpsc::channel::<Input>(64);
    let (out_tx, out_rx) = mpsc::channel::<Bytes>(64);

    // The rest of the request body: stdin, resizes, signals. A reset stream means the
    // client is gone.
    let feed = in_tx.clone();
    tokio::spawn(async move {
        let mut gone = false;
        'outer: loop {
            loop {
                match decoder.next_frame() {
                    Ok(Some((kind, payload))) => {
                        let input = match kind {
                            Kind::Stdin => Input::Stdin(payload),
                            Kind::StdinEof => Input::StdinEof,
                            Kind::Resize if payload.len() == 4 => Input::Resize {
                                rows: u16::from_be_bytes([payload[0], payload[1]]),
                                cols: u16::from_be_bytes([payload[2], payload[3]]),
                            },
                            Kind::Signal if payload.len() == 1 => Input::Signal(payload[0] as i32),
                            _ => continue,
                        };
                        if feed.send(input).await.is_err() {
                            break 'outer;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        gone = true;
                        break 'outer;
                    }
                }
            }
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        decoder.push(&data);
                    }
                }
                Some(Err(_)) => {
                    gone = true;
                    break;
                }
                None => {
                    let _ = feed.send(Input::StdinEof).await;
                    break;
                }
            }
        }
        if gone {
            let _ = feed.send(Input::Gone).await;
        }
    });
    // The response side going away also means the client is gone.
    let watcher_tx = out_tx.clone();
    tokio::spawn(async move {
        watcher_tx.closed().await;
        let _ = in_tx.send(Input::Gone).await;
    });
    tokio::spawn(exec::run(
        start,
        state.default_dir.clone(),
        in_rx,
        out_tx,
        state.activity.clone(),
    ));
    let mut res = Response::new(stream_body(out_rx));
    res.headers_mut().insert(
        "content-type",
        "application/x-claude-vm-frames".parse().expect("valid"),
    );
    res
}

/// Read a whole request body, refusing more than `limit` bytes.
pub async fn read_limited(
    body: hyper::body::Incoming,
    limit: u64,
) -> Result<Bytes, Response<Body>> {
    if body.size_hint().lower() > limit {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        ));
    }
    let limited = http_body_util::Limited::new(body, limit as usize);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {limit} bytes"),
            ))
        }
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("reading the request: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = parse_query(Some("path=a%20b%2Fc&recursive=true&x")).unwrap();
        assert_eq!(q["path"], "a b/c");
        assert_eq!(q["recursive"], "true");
        assert_eq!(q["x"], "");
        assert!(parse_query(Some("path=%zz")).is_err());
        assert!(parse_query(Some("path=%4")).is_err());
        assert!(parse_query(Some("path=%ff")).is_err());
        assert!(parse_query(None).unwrap().is_empty());
    }
}
