//! The link: how the control side reaches everything inside a workspace.
//!
//! The provider runs `claude-vm agent connect` in the workspace (for Docker, an exec
//! session), which joins its stdin/stdout to the daemon's socket. Over that one byte stream
//! the link speaks HTTP/2: many concurrent requests and streaming responses share it, and
//! no port is published anywhere. Each connection starts with a version handshake
//! (`GET /v1/health`). When the stream drops, requests in flight fail with
//! [`LinkError::Dropped`] (never hang: HTTP/2 keep-alive pings detect a dead peer), and the
//! next request reconnects.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use claude_vm_core::WorkspaceId;
use claude_vm_protocol::{self as protocol, Health, api};
use claude_vm_provider::{ExecSpec, Provider, ProviderError};
use futures_util::Stream;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http2::SendRequest;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

/// Request bodies: whole or streamed.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("cannot talk to the workspace daemon: {0}")]
    Handshake(String),
    #[error(
        "the workspace runs claude-vm protocol {theirs}, this claude-vm speaks {ours}; run `claude-vm workspace up` to update it"
    )]
    Version { ours: u32, theirs: u32 },
    #[error("the link to the workspace dropped: {0}")]
    Dropped(String),
    /// The daemon answered with an error.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("invalid answer from the workspace daemon: {0}")]
    Invalid(String),
}

/// A link to one workspace's daemon. Cheap to clone; reconnects on demand.
#[derive(Clone)]
pub struct Link {
    inner: Arc<Inner>,
}

struct Inner {
    provider: Arc<dyn Provider>,
    id: WorkspaceId,
    conn: Mutex<Option<SendRequest<Body>>>,
    health: std::sync::Mutex<Option<Health>>,
}

/// Bytes for an empty body.
pub fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A whole body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A streamed body.
pub fn streamed(s: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static) -> Body {
    use futures_util::TryStreamExt;
    BodyExt::boxed_unsync(StreamBody::new(s.map_ok(Frame::data)))
}

/// A streamed body fed through a channel.
pub fn channel_body(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    streamed(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok(b), rx))
    }))
}

impl Link {
    /// Open a link to the workspace `id` and check the daemon speaks our protocol.
    pub async fn connect(provider: Arc<dyn Provider>, id: WorkspaceId) -> Result<Link, LinkError> {
        let link = Link {
            inner: Arc::new(Inner {
                provider,
                id,
                conn: Mutex::new(None),
                health: std::sync::Mutex::new(None),
            }),
        };
        link.sender().await?;
        Ok(link)
    }

    /// What the daemon said at the last handshake.
    pub fn health(&self) -> Option<Health> {
        self.inner
            .health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A ready sender, reconnecting if the previous connection is gone. A daemon that is
    /// restarting gets a few moments to come back.
    async fn sender(&self) -> Result<SendRequest<Body>, LinkError> {
        let mut guard = self.inner.conn.lock().await;
        if let Some(s) = guard.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        *guard = None;
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            match self.open().await {
                Ok(sender) => {
                    *guard = Some(sender.clone());
                    return Ok(sender);
                }
                Err(e @ (LinkError::Handshake(_) | LinkError::Dropped(_))) if attempt < 5 => {
                    tracing::debug!(workspace = %self.inner.id, "link attempt {attempt} failed: {e}");
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn open(&self) -> Result<SendRequest<Body>, LinkError> {
        let stream = self
            .inner
            .provider
            .exec_stream(
                &self.inner.id,
                &ExecSpec {
                    cmd: vec![
                        protocol::BINARY_PATH.into(),
                        "agent".into(),
                        "connect".into(),
                    ],
                    user: Some("0:0".into()),
                    ..Default::default()
                },
            )
            .await?;
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(8 << 20)
            .max_frame_size(1 << 20)
            .keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| LinkError::Handshake(e.to_string()))?;
        let id = self.inner.id.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(workspace = %id, "link closed: {e}");
            }
        });
        // Version handshake.
        let req = Request::get("/v1/health")
            .body(empty())
            .expect("valid request");
        sender
            .ready()
            .await
            .map_err(|e| LinkError::Handshake(e.to_string()))?;
        let res = tokio::time::timeout(Duration::from_secs(15), sender.send_request(req))
            .await
            .map_err(|_| LinkError::Handshake("no answer within 15s".into()))?
            .map_err(|e| LinkError::Handshake(e.to_string()))?;
        let health: Health = read_json(res).await?;
        if health.protocol != protocol::PROTOCOL_VERSION {
            return Err(LinkError::Version {
                ours: protocol::PROTOCOL_VERSION,
                theirs: health.protocol,
            });
        }
        *self.inner.health.lock().unwrap_or_else(|e| e.into_inner()) = Some(health);
        Ok(sender)
    }

    /// Forget the current connection (it is known to be dead).
    pub(crate) async fn invalidate(&self) {
        *self.inner.conn.lock().await = None;
    }

    /// Send a request; the response body is left to the caller (it may be a stream). A
    /// request that never left because the connection had just died is sent again on a
    /// fresh connection; one that was already sent fails with [`LinkError::Dropped`].
    pub async fn send(
        &self,
        req: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, LinkError> {
        let mut req = req;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut sender = self.sender().await?;
            if let Err(e) = sender.ready().await {
                self.invalidate().await;
                if attempt < 3 {
                    continue;
                }
                return Err(LinkError::Dropped(e.to_string()));
            }
            match sender.try_send_request(req).await {
                Ok(res) => return Ok(res),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if attempt < 3 => {
                        self.invalidate().await;
                        req = unsent;
                    }
                    _ => return Err(LinkError::Dropped(e.error().to_string())),
                },
            }
        }
    }

    /// A request with a JSON (or empty) body whose answer is JSON.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, LinkError> {
        let body = match body {
            Some(b) => Some(Bytes::from(
                serde_json::to_vec(b).map_err(|e| LinkError::Invalid(e.to_string()))?,
            )),
            None => None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let req = Request::builder()
                .method(method.clone())
                .uri(path_and_query)
                .header("content-type", "application/json")
                .body(body.clone().map_or_else(empty, full))
                .map_err(|e| LinkError::Invalid(e.to_string()))?;
            // Reads are safe to repeat on a fresh connection; changes are not.
            match self.send(req).await {
                Ok(res) => return read_json(res).await,
                Err(LinkError::Dropped(_)) if method == Method::GET && attempt < 3 => {
                    self.invalidate().await
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `GET /v1/activity`.
    pub async fn activity(&self) -> Result<api::Activity, LinkError> {
        self.call(Method::GET, "/v1/activity", None::<&()>).await
    }
}

mod conversations;
mod exec;
pub use conversations::Events;
mod files;
mod ssh;
pub use exec::{ExecEvent, ExecInput, ExecSession};
pub use files::Download;

/// Percent-encode a query value.
pub fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Turn a non-2xx answer into [`LinkError::Api`]; pass 2xx through.
pub async fn check(
    res: Response<hyper::body::Incoming>,
) -> Result<Response<hyper::body::Incoming>, LinkError> {
    if res.status().is_success() {
        return Ok(res);
    }
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<api::ApiError>(&body)
        .map(|e| e.error)
        .unwrap_or_else(|_| format!("{status}: {}", String::from_utf8_lossy(&body)));
    Err(LinkError::Api {
        status: status.as_u16(),
        message,
    })
}

async fn read_json<T: DeserializeOwned>(
    res: Response<hyper::body::Incoming>,
) -> Result<T, LinkError> {
    let res = check(res).await?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| LinkError::Dropped(e.to_string()))?
        .to_bytes();
    if status == StatusCode::NO_CONTENT && body.is_empty() {
        return serde_json::from_slice(b"null").map_err(|e| LinkError::Invalid(e.to_string()));
    }
    serde_json::from_slice(&body)
        .map_err(|e| LinkError::Invalid(format!("{e}: {}", String::from_utf8_lossy(&body))))
}
