//! The link: how the control side reaches everything inside a workspace.
//!
//! The provider runs `claude-vm agent connect` in the workspace (for Docker, an exec
//! session), which joins its stdin/stdout to the daemon's socket. Over that one byte stream
//! the link speaks HTTP/2: many concurrent requests and streaming responses share it, and
//! no port is published anywhere. Each connection starts with a version handshake
//! (`GET /v1/health`). When the stream drops, requests in flight fail with
//! [`LinkError::Dropped`], and the next request reconnects. A daemon that is alive but
//! stuck (stopped, or wedged) never makes a request hang either: every request must get
//! its answer started within a deadline ([`Timeouts::request`], reconnecting included;
//! an ordinary request must be answered whole within it), and HTTP/2 keep-alive pings
//! fail everything in flight, streams included, when the daemon stops answering them
//! ([`LinkError::Unresponsive`]).

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
    /// The daemon did not answer a request in time.
    #[error(
        "the workspace daemon did not answer {what} within {}s: it is running but stuck or overloaded (its log: /workspace/.claude-vm/logs/daemon.log)",
        after.as_secs_f32()
    )]
    Timeout { what: String, after: Duration },
    /// The daemon stopped answering the link's keep-alive pings.
    #[error(
        "the workspace daemon stopped answering (no reply to the link's keep-alive ping within {}s): it is running but stuck or overloaded (its log: /workspace/.claude-vm/logs/daemon.log)",
        after.as_secs_f32()
    )]
    Unresponsive { after: Duration },
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
    timeouts: Timeouts,
    conn: Mutex<Option<(SendRequest<Body>, ConnEnd)>>,
    health: std::sync::Mutex<Option<Health>>,
}

/// How long the link waits for the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A request's answer must start within this (headers; for an ordinary request with a
    /// JSON answer, the whole answer), opening a new connection included. Uploads are not
    /// bounded (the daemon answers once it has the whole body): keep-alive covers them.
    pub request: Duration,
    /// After this long without hearing from the daemon, the link pings it...
    pub keep_alive_interval: Duration,
    /// ...and declares it gone if the answer takes longer than this.
    pub keep_alive_timeout: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            request: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(10),
        }
    }
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
        Link::connect_with(provider, id, Timeouts::default()).await
    }

    /// [`Link::connect`] with other timeouts.
    pub async fn connect_with(
        provider: Arc<dyn Provider>,
        id: WorkspaceId,
        timeouts: Timeouts,
    ) -> Result<Link, LinkError> {
        let link = Link::unconnected(provider, id, timeouts);
        link.sender_within(timeouts.request).await?;
        Ok(link)
    }

    fn unconnected(provider: Arc<dyn Provider>, id: WorkspaceId, timeouts: Timeouts) -> Link {
        Link {
            inner: Arc::new(Inner {
                provider,
                id,
                timeouts,
                conn: Mutex::new(None),
                health: std::sync::Mutex::new(None),
            }),
        }
    }

    /// A new link to the same workspace with other timeouts (it connects on first use).
    pub fn with_timeouts(&self, timeouts: Timeouts) -> Link {
        Link::unconnected(self.inner.provider.clone(), self.inner.id.clone(), timeouts)
    }

    pub fn timeouts(&self) -> Timeouts {
        self.inner.timeouts
    }

    /// `fut`, or [`LinkError::Timeout`] once the request deadline has passed.
    pub(crate) async fn within<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, LinkError>>,
    ) -> Result<T, LinkError> {
        let after = self.inner.timeouts.request;
        match tokio::time::timeout(after, fut).await {
            Ok(r) => r,
            Err(_) => Err(LinkError::Timeout {
                what: what.to_owned(),
                after,
            }),
        }
    }

    /// Whether the link has a connection that has not closed (a workspace stopped under it
    /// closes it).
    pub async fn is_open(&self) -> bool {
        self.inner
            .conn
            .lock()
            .await
            .as_ref()
            .is_some_and(|(s, _)| !s.is_closed())
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
    async fn sender_within(
        &self,
        deadline: Duration,
    ) -> Result<(SendRequest<Body>, ConnEnd), LinkError> {
        match tokio::time::timeout(deadline, self.sender()).await {
            Ok(r) => r,
            Err(_) => Err(LinkError::Timeout {
                what: "the link's handshake".into(),
                after: deadline,
            }),
        }
    }

    async fn sender(&self) -> Result<(SendRequest<Body>, ConnEnd), LinkError> {
        let mut guard = self.inner.conn.lock().await;
        if let Some((s, end)) = guard.as_ref()
            && !s.is_closed()
        {
            return Ok((s.clone(), end.clone()));
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

    async fn open(&self) -> Result<(SendRequest<Body>, ConnEnd), LinkError> {
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
        let t = self.inner.timeouts;
        let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME)
            .max_send_buf_size(SEND_BUFFER)
            .keep_alive_interval(t.keep_alive_interval)
            .keep_alive_timeout(t.keep_alive_timeout)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| LinkError::Handshake(e.to_string()))?;
        let id = self.inner.id.clone();
        let (ended, end) = tokio::sync::watch::channel(None);
        let end = ConnEnd {
            ended: end,
            keep_alive_timeout: t.keep_alive_timeout,
        };
        tokio::spawn(async move {
            let result = conn.await;
            if let Err(e) = &result {
                tracing::debug!(workspace = %id, "link closed: {e}");
            }
            let _ = ended.send(Some(matches!(&result, Err(e) if e.is_timeout())));
        });
        // Version handshake.
        let req = Request::get("/v1/health")
            .body(empty())
            .expect("valid request");
        sender
            .ready()
            .await
            .map_err(|e| LinkError::Handshake(e.to_string()))?;
        let wait = t.request.min(Duration::from_secs(15));
        let res = tokio::time::timeout(wait, sender.send_request(req))
            .await
            .map_err(|_| LinkError::Handshake(format!("no answer within {}s", wait.as_secs_f32())))?
            .map_err(|e| LinkError::Handshake(e.to_string()))?;
        let health: Health = read_json(res, &end).await?;
        if health.protocol != protocol::PROTOCOL_VERSION {
            return Err(LinkError::Version {
                ours: protocol::PROTOCOL_VERSION,
                theirs: health.protocol,
            });
        }
        *self.inner.health.lock().unwrap_or_else(|e| e.into_inner()) = Some(health);
        Ok((sender, end))
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
        Ok(self.send_tracked(req).await?.0)
    }

    /// [`Link::send`], with what tells why the connection it went over ended.
    pub(crate) async fn send_tracked(
        &self,
        req: Request<Body>,
    ) -> Result<(Response<hyper::body::Incoming>, ConnEnd), LinkError> {
        let mut req = req;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (mut sender, end) = self.sender_within(self.inner.timeouts.request).await?;
            if let Err(e) = sender.ready().await {
                self.invalidate().await;
                if attempt < 3 {
                    continue;
                }
                return Err(end.error(&e).await);
            }
            match sender.try_send_request(req).await {
                Ok(res) => return Ok((res, end)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if attempt < 3 => {
                        self.invalidate().await;
                        req = unsent;
                    }
                    _ => return Err(end.error(e.error()).await),
                },
            }
        }
    }

    async fn call_unbounded<T: DeserializeOwned>(
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
            match self.send_tracked(req).await {
                Ok((res, end)) => return read_json(res, &end).await,
                Err(LinkError::Dropped(_)) if method == Method::GET && attempt < 3 => {
                    self.invalidate().await
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A request with a JSON (or empty) body whose answer is JSON, answered whole within
    /// the request deadline.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, LinkError> {
        let what = format!("{method} {}", path_of(path_and_query));
        self.within(&what, self.call_unbounded(method, path_and_query, body))
            .await
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

/// The link's HTTP/2 flow-control windows, as the receiving side. The stream window bounds
/// what one transfer has in flight before the receiver says it has read it: a round trip
/// through `docker exec` and `agent connect` takes about a millisecond, so at the 64 KiB
/// default a transfer would crawl; 16 MiB keeps a 100 MB copy streaming. The connection
/// window lets two such transfers run at once.
pub const STREAM_WINDOW: u32 = 16 << 20;
pub const CONNECTION_WINDOW: u32 = 32 << 20;
/// Largest frame accepted (the sender's choice up to it; 16 KiB by default).
pub const MAX_FRAME: u32 = 1 << 20;
/// What each stream may buffer for sending before its body stops being polled.
pub const SEND_BUFFER: usize = 4 << 20;

/// How the connection a request went over ended, once it has: whether it was closed
/// because the daemon stopped answering keep-alive pings.
#[derive(Clone)]
pub(crate) struct ConnEnd {
    ended: tokio::sync::watch::Receiver<Option<bool>>,
    keep_alive_timeout: Duration,
}

impl ConnEnd {
    /// The error for a failed request or body. A stream fails as soon as its connection
    /// does, maybe before the connection's task has said why: give it a moment.
    pub(crate) async fn error(&self, e: &hyper::Error) -> LinkError {
        let unresponsive = LinkError::Unresponsive {
            after: self.keep_alive_timeout,
        };
        if e.is_timeout() {
            return unresponsive;
        }
        let mut ended = self.ended.clone();
        let why = tokio::time::timeout(
            Duration::from_millis(200),
            ended.wait_for(|why| why.is_some()),
        )
        .await;
        match why {
            Ok(Ok(why)) if *why == Some(true) => unresponsive,
            _ => LinkError::Dropped(e.to_string()),
        }
    }
}

/// The path of a path-and-query, for messages (query values may be file names).
fn path_of(path_and_query: &str) -> &str {
    path_and_query.split('?').next().unwrap_or(path_and_query)
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
    let message = api::ApiError::message_of(status.as_u16(), &body);
    Err(LinkError::Api {
        status: status.as_u16(),
        message,
    })
}

async fn read_json<T: DeserializeOwned>(
    res: Response<hyper::body::Incoming>,
    end: &ConnEnd,
) -> Result<T, LinkError> {
    let res = check(res).await?;
    let status = res.status();
    let body = match res.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Err(end.error(&e).await),
    };
    if status == StatusCode::NO_CONTENT && body.is_empty() {
        return serde_json::from_slice(b"null").map_err(|e| LinkError::Invalid(e.to_string()));
    }
    serde_json::from_slice(&body)
        .map_err(|e| LinkError::Invalid(format!("{e}: {}", String::from_utf8_lossy(&body))))
}
