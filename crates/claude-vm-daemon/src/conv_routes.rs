//! Conversation routes of the daemon API (`/v1/conversations/...`).

#![allow(clippy::result_large_err)]

use std::sync::Arc;

use bytes::Bytes;
use claude_vm_protocol::api::{AgentEnv, Decision, NewConversation, SendMessage};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::{broadcast, mpsc};

use crate::api::{Body, MAX_JSON_BODY, State, error, json, parse_query, read_limited, stream_body};
use claude_vm_agents::ConvError;

/// Largest message a user may send (a pasted file, a long prompt).
pub const MAX_MESSAGE_BODY: u64 = 1024 * 1024;

fn conv_error(e: ConvError) -> Response<Body> {
    error(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        e.to_string(),
    )
}

async fn body_json<T: serde::de::DeserializeOwned>(
    req: Request<hyper::body::Incoming>,
    limit: u64,
) -> Result<T, Response<Body>> {
    let bytes = read_limited(req.into_body(), limit).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: {e}"),
        )
    })
}

/// Routes under `/v1/conversations`: `parts` are the path's segments after it (a trailing
/// `/` is allowed).
pub async fn handle(
    state: &Arc<State>,
    req: Request<hyper::body::Incoming>,
    parts: &[&str],
    path: &str,
) -> Response<Body> {
    let parts = match parts {
        [rest @ .., ""] => rest,
        all => all,
    };
    let method = req.method().clone();
    let convs = state.conversations.clone();
    let res: Result<Response<Body>, Response<Body>> = async {
        match (&method, parts) {
            (&Method::GET, []) => Ok(json(StatusCode::OK, &convs.list())),
            (&Method::POST, []) => {
                let new: NewConversation = body_json(req, MAX_MESSAGE_BODY).await?;
                let c = convs.create(new).await.map_err(conv_error)?;
                Ok(json(StatusCode::CREATED, &c))
            }
            (&Method::GET, [id]) => Ok(json(
                StatusCode::OK,
                &convs.get(id).map_err(conv_error)?.view(),
            )),
            (&Method::POST, [id, "messages"]) => {
                let h = convs.get(id).map_err(conv_error)?;
                let m: SendMessage = body_json(req, MAX_MESSAGE_BODY).await?;
                let sent = h
                    .send_once(m.text, m.message_id)
                    .await
                    .map_err(conv_error)?;
                Ok(json(StatusCode::OK, &sent))
            }
            (&Method::POST, [id, "interrupt"]) => {
                let h = convs.get(id).map_err(conv_error)?;
                let sent = h.interrupt().await.map_err(conv_error)?;
                Ok(json(
                    StatusCode::OK,
                    &serde_json::json!({ "interrupted": sent }),
                ))
            }
            (&Method::POST, [id, "stop"]) => {
                let h = convs.get(id).map_err(conv_error)?;
                h.stop().await.map_err(conv_error)?;
                Ok(json(StatusCode::OK, &h.view()))
            }
            (&Method::PUT, [id, "env"]) => {
                let h = convs.get(id).map_err(conv_error)?;
                let e: AgentEnv = body_json(req, MAX_JSON_BODY).await?;
                let applied = h.set_env(e.env).await.map_err(conv_error)?;
                Ok(json(StatusCode::OK, &applied))
            }
            (&Method::POST, [id, "approvals", approval]) => {
                let h = convs.get(id).map_err(conv_error)?;
                let d: Decision = body_json(req, MAX_JSON_BODY).await?;
                h.decide((*approval).to_owned(), d)
                    .await
                    .map_err(conv_error)?;
                Ok(json(StatusCode::OK, &h.view()))
            }
            (&Method::GET, [id, "events"]) => {
                let h = convs.get(id).map_err(conv_error)?;
                let q = parse_query(req.uri().query())
                    .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
                let after: u64 = match q.get("after") {
                    Some(a) => a.parse().map_err(|_| {
                        error(StatusCode::BAD_REQUEST, format!("invalid after {a:?}"))
                    })?,
                    None => 0,
                };
                let follow = matches!(q.get("follow").map(String::as_str), Some("true" | "1"));
                // Someone following a conversation keeps its workspace up; a control side
                // following it in the background (notifications) does not.
                let background =
                    matches!(q.get("background").map(String::as_str), Some("true" | "1"));
                let hold = (follow && !background).then(|| state.activity.hold("event stream"));
                Ok(events(h, after, follow, hold))
            }
            (
                _,
                []
                | [_]
                | [_, "messages" | "interrupt" | "stop" | "events" | "env"]
                | [_, "approvals", _],
            ) => Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed on {path}"),
            )),
            _ => Err(error(
                StatusCode::NOT_FOUND,
                format!("no such route: {path}"),
            )),
        }
    }
    .await;
    match res {
        Ok(r) | Err(r) => r,
    }
}

/// The transcript after `after` as JSON lines; with `follow`, new events as they happen.
/// Subscribing before reading the file means no event falls between the two.
fn events(
    h: claude_vm_agents::Handle,
    after: u64,
    follow: bool,
    hold: Option<crate::activity::Hold>,
) -> Response<Body> {
    let mut live = h.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let _hold = hold;
        let mut last = after;
        let line = |e: &claude_vm_protocol::api::Event| {
            let mut b = serde_json::to_vec(e).expect("json");
            b.push(b'\n');
            Bytes::from(b)
        };
        for e in h.transcript(after) {
            last = e.seq;
            if tx.send(line(&e)).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        loop {
            // A client that went away is noticed at once, not at the next event: the hold
            // on the workspace's idle timer ends with it.
            let next = tokio::select! {
                next = live.recv() => next,
                _ = tx.closed() => return,
            };
            match next {
                Ok(e) if e.seq > last => {
                    last = e.seq;
                    if tx.send(line(&e)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // Fell behind: catch up from the file.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    for e in h.transcript(last) {
                        last = e.seq;
                        if tx.send(line(&e)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let mut res = Response::new(stream_body(rx));
    res.headers_mut().insert(
        "content-type",
        "application/x-ndjson".parse().expect("valid"),
    );
    res
}
