//! Remote mode: the CLI working against a `claude-vm server` through its HTTP API.
//!
//! `claude-vm login` saves the server's URL and an API token in `$CLAUDE_VM_HOME/remote.json`
//! (owner-only); while that file exists, workspace and chat commands go to the server
//! ([`crate::backend::Backend::Remote`]). The client speaks HTTP/1.1 over plain TCP, one
//! connection per request; `https://` is refused with a hint to use a tunnel.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use claude_vm_api::encode::path_segment;
use claude_vm_api::{ErrorBody, Event, WhoAmI};
use claude_vm_store::Home;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio_util::io::StreamReader;

/// How long to wait for a TCP connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole answer to an ordinary call (a listing, a message sent, a diff).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The whole answer to a use case that creates or removes things on the server.
pub const LONG_REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A stream silent for this long is dead (the server sends a keep-alive every 15s).
pub const SILENCE_LIMIT: Duration = Duration::from_secs(45);
/// How long a dropped event stream keeps trying to reconnect.
const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// `$CLAUDE_VM_HOME/remote.json`: the server this CLI is logged in to.
#[derive(Clone, Serialize, Deserialize)]
pub struct Login {
    pub url: String,
    pub token: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("url", &self.url)
            .field("token", &"********")
            .finish()
    }
}

impl Login {
    pub fn path(home: &Home) -> PathBuf {
        home.root().join("remote.json")
    }

    /// The saved login, if any.
    pub fn load(home: &Home) -> Result<Option<Login>, RemoteError> {
        let path = Self::path(home);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(RemoteError::new(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            RemoteError::new(format!("{} is damaged: {e}", path.display()))
                .hint("log in again with `claude-vm login <url>`, or `claude-vm logout`")
        })
    }

    /// Write it owner-only (the token is a password), atomically.
    pub fn save(&self, home: &Home) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        claude_vm_store::write_file_atomic(&Self::path(home), text.as_bytes(), 0o600)
    }
}

/// A failure talking to the server: its `error` and `hint` when it answered with one.
#[derive(Debug, Clone)]
pub struct RemoteError {
    /// The HTTP status, when the server answered.
    pub status: Option<u16>,
    pub message: String,
    pub hint: Option<String>,
}

impl RemoteError {
    pub fn new(message: impl Into<String>) -> RemoteError {
        RemoteError {
            status: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> RemoteError {
        self.hint = Some(hint.into());
        self
    }

    /// Whether trying again later may work (the server is restarting or unreachable).
    fn transient(&self) -> bool {
        matches!(self.status, None | Some(502..=504))
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RemoteError {}

/// `http://host:port[/prefix]` from what the user typed (`host:port` means `http://`).
pub fn normalize_url(input: &str) -> Result<String, RemoteError> {
    let input = input.trim();
    if input.starts_with("https://") {
        return Err(RemoteError::new(format!(
            "https:// is not supported by this claude-vm yet: {input}"
        ))
        .hint("reach the server through a tunnel and log in over http, e.g. `ssh -L 7878:127.0.0.1:7878 server` then `claude-vm login http://127.0.0.1:7878`"));
    }
    let rest = match input.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(RemoteError::new(format!(
                "unsupported URL scheme {scheme:?} in {input:?}"
            ))
            .hint("give the server's address, e.g. http://127.0.0.1:7878"));
        }
        None => input,
    };
    let rest = rest.trim_end_matches('/');
    let (authority, _) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
        return Err(RemoteError::new(format!("invalid server URL {input:?}"))
            .hint("give the server's address, e.g. http://127.0.0.1:7878"));
    }
    Ok(format!("http://{rest}"))
}

/// A request body: JSON, a tar stream, or nothing.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub fn empty_body() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

pub fn json_body(value: &impl Serialize) -> Body {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    Full::new(Bytes::from(bytes))
        .map_err(|e| match e {})
        .boxed_unsync()
}

pub fn stream_body(
    stream: impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
) -> Body {
    StreamBody::new(stream.map(|r| r.map(Frame::data))).boxed_unsync()
}

/// An answer's body read as a buffered byte stream.
type BodyReader = StreamReader<
    std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send + Sync>>,
    Bytes,
>;

/// `body` as a buffered reader that fails with [`std::io::ErrorKind::TimedOut`] when the
/// server sends nothing for `silence`.
fn body_reader(body: Incoming, silence: Duration) -> BodyReader {
    let chunks = body.into_data_stream();
    let stream = futures_util::stream::unfold(Some(chunks), move |chunks| async move {
        let mut chunks = chunks?;
        match tokio::time::timeout(silence, chunks.next()).await {
            Ok(Some(Ok(data))) => Some((Ok(data), Some(chunks))),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), None)),
            Ok(None) => None,
            Err(_) => Some((Err(std::io::ErrorKind::TimedOut.into()), None)),
        }
    });
    StreamReader::new(Box::pin(stream))
}

/// How long a call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// [`REQUEST_TIMEOUT`] for the whole answer.
    Ordinary,
    /// [`LONG_REQUEST_TIMEOUT`] for the whole answer.
    Long,
    /// A stream: [`REQUEST_TIMEOUT`] for the answer's head; its body is the caller's (read
    /// it with [`SILENCE_LIMIT`]).
    Stream,
}

impl Deadline {
    fn limit(self) -> Duration {
        match self {
            Deadline::Long => LONG_REQUEST_TIMEOUT,
            Deadline::Ordinary | Deadline::Stream => REQUEST_TIMEOUT,
        }
    }
}

/// A client for one server.
#[derive(Clone)]
pub struct Remote {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    authority: String,
    base: String,
    token: String,
}

impl Remote {
    pub fn new(login: &Login) -> Result<Remote, RemoteError> {
        let url = normalize_url(&login.url)?;
        let rest = &url["http://".len()..];
        let (authority, base) = match rest.split_once('/') {
            Some((a, b)) => (a.to_owned(), format!("/{b}")),
            None => (rest.to_owned(), String::new()),
        };
        Ok(Remote {
            inner: Arc::new(Inner {
                url,
                authority,
                base,
                token: login.token.clone(),
            }),
        })
    }

    pub fn url(&self) -> &str {
        &self.inner.url
    }

    fn unreachable(&self, why: impl fmt::Display) -> RemoteError {
        RemoteError::new(format!("cannot reach the server at {}: {why}", self.url())).hint(
            "check that `claude-vm server` runs there, or go back to local mode with `claude-vm logout`",
        )
    }

    fn not_claude_vm(&self, what: impl fmt::Display) -> RemoteError {
        RemoteError::new(format!("{} {what}", self.url()))
            .hint("is it a claude-vm server? log in to the URL `claude-vm server` prints")
    }

    fn timed_out(&self, what: &str, limit: Duration) -> RemoteError {
        RemoteError::new(format!(
            "the server at {} did not answer {what} within {}s",
            self.url(),
            limit.as_secs()
        ))
        .hint("the server may be overloaded or stuck; check it (its log is $CLAUDE_VM_HOME/logs/server.log there) and try again")
    }

    /// Send one request on a fresh connection; the answer's head must come within
    /// `deadline`'s limit. Answers other than 2xx become errors carrying the server's
    /// `error` and `hint`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        headers: &[(&str, String)],
        body: Body,
        deadline: Deadline,
    ) -> Result<Response<Incoming>, RemoteError> {
        self.request_within(deadline.limit(), method, path, content_type, headers, body)
            .await
    }

    async fn request_within(
        &self,
        limit: Duration,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<Response<Incoming>, RemoteError> {
        let what = format!("{method} {path}");
        tokio::time::timeout(
            limit,
            self.request_untimed(method, path, content_type, headers, body),
        )
        .await
        .map_err(|_| self.timed_out(&what, limit))?
    }

    /// [`Remote::request`] with no deadline but the connect timeout: for uploads, whose
    /// sending takes as long as the link needs (the caller bounds the wait for the answer).
    pub async fn request_untimed(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<Response<Incoming>, RemoteError> {
        let addr = self.inner.authority.as_str();
        let port_given = addr.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
        let target = if port_given {
            addr.to_owned()
        } else {
            format!("{addr}:80")
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&target))
            .await
            .map_err(|_| self.unreachable("no answer within 10s"))?
            .map_err(|e| self.unreachable(e))?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(|e| self.unreachable(e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.inner.base))
            .header(hyper::header::HOST, addr)
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.inner.token),
            )
            .header(
                hyper::header::USER_AGENT,
                format!("claude-vm/{}", claude_vm_protocol::VERSION),
            );
        if let Some(ct) = content_type {
            req = req.header(hyper::header::CONTENT_TYPE, ct);
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(body)
            .map_err(|e| RemoteError::new(format!("invalid request {method} {path}: {e}")))?;
        let resp = sender.send_request(req).await.map_err(|e| {
            self.unreachable(format!("the connection broke during {method} {path}: {e}"))
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let mut err = match ErrorBody::parse(&bytes) {
            Some(b) => RemoteError {
                status: None,
                message: b.error,
                hint: b.hint,
            },
            None if status == StatusCode::BAD_GATEWAY || status == StatusCode::GATEWAY_TIMEOUT => {
                self.unreachable(format!("a proxy answered {status}"))
            }
            None => self.not_claude_vm(format!(
                "answered {method} {path} with {status} and no claude-vm error"
            )),
        };
        err.status = Some(status.as_u16());
        Err(err)
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        what: &str,
        resp: Response<Incoming>,
    ) -> Result<T, RemoteError> {
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(format!("the answer to {what} broke off: {e}")))?
            .to_bytes();
        serde_json::from_slice(&bytes)
            .map_err(|e| self.not_claude_vm(format!("gave an unexpected answer to {what}: {e}")))
    }

    /// One call and its decoded answer, all within `deadline`.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        deadline: Deadline,
    ) -> Result<T, RemoteError> {
        self.call_within(deadline.limit(), method, path, body).await
    }

    async fn call_within<T: DeserializeOwned>(
        &self,
        limit: Duration,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<T, RemoteError> {
        let what = format!("{method} {path}");
        let content_type = body.is_some().then_some("application/json");
        let work = async {
            let resp = self
                .request_untimed(
                    method,
                    path,
                    content_type,
                    &[],
                    body.unwrap_or_else(empty_body),
                )
                .await?;
            self.decode(&what, resp).await
        };
        tokio::time::timeout(limit, work)
            .await
            .map_err(|_| self.timed_out(&what, limit))?
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        self.call(Method::GET, path, None, Deadline::Ordinary).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, RemoteError> {
        self.call(
            Method::POST,
            path,
            Some(json_body(body)),
            Deadline::Ordinary,
        )
        .await
    }

    /// A POST with no body (interrupt, stop).
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        self.call(Method::POST, path, None, Deadline::Ordinary)
            .await
    }

    /// A POST that runs a use case on the server (`up`, `down`, a new conversation).
    pub async fn post_long<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, RemoteError> {
        self.call(Method::POST, path, Some(json_body(body)), Deadline::Long)
            .await
    }

    /// DELETE removes a container and a volume: a use case.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        self.call(Method::DELETE, path, None, Deadline::Long).await
    }

    /// A POST whose answer is streamed, e.g. exec's JSON lines (the server sends a
    /// keep-alive line while a command is silent).
    pub async fn post_stream(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Lines, RemoteError> {
        let resp = self
            .request(
                Method::POST,
                path,
                Some("application/json"),
                &[],
                json_body(body),
                Deadline::Stream,
            )
            .await?;
        Ok(Lines::new(resp.into_body(), self.url(), SILENCE_LIMIT))
    }

    /// `GET /api/v1/whoami`: checks the URL and the token.
    pub async fn whoami(&self) -> Result<WhoAmI, RemoteError> {
        let v: serde_json::Value = self.get("/api/v1/whoami").await.map_err(|e| {
            if e.status == Some(401) {
                RemoteError {
                    message: format!("the server at {} refused the token: {}", self.url(), e.message),
                    hint: Some("create a token on the server with `claude-vm token create` and pass it with --token".into()),
                    ..e
                }
            } else {
                e
            }
        })?;
        serde_json::from_value(v)
            .map_err(|_| self.not_claude_vm("does not answer like a claude-vm server"))
    }

    /// The live transcript of a conversation after `after`, resumed across dropped
    /// connections and server restarts.
    pub async fn events(&self, conversation: &str, after: u64) -> Result<SseEvents, RemoteError> {
        let mut s = SseEvents {
            remote: self.clone(),
            path: format!(
                "/api/v1/conversations/{}/events",
                path_segment(conversation)
            ),
            last: after,
            body: None,
            line: Vec::new(),
            data: String::new(),
        };
        s.body = Some(s.connect().await?);
        Ok(s)
    }
}

/// A streamed answer read line by line.
pub struct Lines {
    body: BodyReader,
    /// The line being read (kept across calls, so a cancelled `next` loses nothing).
    line: Vec<u8>,
    url: String,
    silence: Duration,
}

impl Lines {
    fn new(body: Incoming, url: &str, silence: Duration) -> Lines {
        Lines {
            body: body_reader(body, silence),
            line: Vec::new(),
            url: url.to_owned(),
            silence,
        }
    }

    /// The next line (without its newline); `None` at the end. A server silent for
    /// [`SILENCE_LIMIT`] is taken for dead.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, RemoteError> {
        match self.body.read_until(b'\n', &mut self.line).await {
            Ok(_) if self.line.is_empty() => Ok(None),
            Ok(_) => {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                Ok(Some(line))
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Err(RemoteError::new(format!(
                "the server at {} sent nothing for {}s; the connection is dead",
                self.url,
                self.silence.as_secs()
            ))
            .hint("check that the server still runs; the command may still be running in the workspace")),
            Err(e) => Err(RemoteError::new(format!(
                "the connection to the server broke: {e}"
            ))),
        }
    }
}

/// Server-sent transcript events: reconnects with `Last-Event-ID` when the connection
/// drops, so nothing is missed or repeated.
pub struct SseEvents {
    remote: Remote,
    path: String,
    /// Sequence number of the last event handed out.
    last: u64,
    body: Option<BodyReader>,
    /// The line being read, and the `data` of the event being read.
    line: Vec<u8>,
    data: String,
}

impl SseEvents {
    async fn connect(&self) -> Result<BodyReader, RemoteError> {
        let resp = self
            .remote
            .request(
                Method::GET,
                &self.path,
                None,
                &[
                    ("accept", "text/event-stream".to_owned()),
                    ("last-event-id", self.last.to_string()),
                ],
                empty_body(),
                Deadline::Stream,
            )
            .await?;
        Ok(body_reader(resp.into_body(), SILENCE_LIMIT))
    }

    async fn reconnect(&mut self) -> Result<(), RemoteError> {
        let start = Instant::now();
        let mut told = false;
        loop {
            match self.connect().await {
                Ok(body) => {
                    if told {
                        eprintln!("reconnected to {}", self.remote.url());
                    }
                    self.body = Some(body);
                    return Ok(());
                }
                Err(e) if e.transient() && start.elapsed() < RECONNECT_FOR => {
                    if !told {
                        eprintln!(
                            "lost the connection to {}; reconnecting…",
                            self.remote.url()
                        );
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The next event. Waits for it; never ends by itself.
    pub async fn next(&mut self) -> Result<Option<Event>, RemoteError> {
        loop {
            let Some(body) = self.body.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            let whole = body.read_until(b'\n', &mut self.line).await.is_ok()
                && self.line.last() == Some(&b'\n');
            if !whole {
                // Ended, broke or went silent: start again after the last event seen.
                self.body = None;
                self.line.clear();
                self.data.clear();
                continue;
            }
            let raw = std::mem::take(&mut self.line);
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.data.is_empty() {
                    continue;
                }
                let data = std::mem::take(&mut self.data);
                let event: Event = serde_json::from_str(&data).map_err(|e| {
                    self.remote
                        .not_claude_vm(format!("sent an event that is not one: {e}"))
                })?;
                if event.seq <= self.last {
                    continue;
                }
                self.last = event.seq;
                return Ok(Some(event));
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            if field == "data" {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            normalize_url("127.0.0.1:7878").unwrap(),
            "http://127.0.0.1:7878"
        );
        assert_eq!(
            normalize_url("http://h:1/prefix/").unwrap(),
            "http://h:1/prefix"
        );
        assert!(normalize_url("https://h").unwrap_err().hint.is_some());
        assert!(normalize_url("ftp://h").is_err());
        assert!(normalize_url("http://").is_err());
        let r = Remote::new(&Login {
            url: "http://[::1]:9/x".into(),
            token: "t".into(),
        })
        .unwrap();
        assert_eq!(r.inner.authority, "[::1]:9");
        assert_eq!(r.inner.base, "/x");
    }

    /// A server that accepts connections and never answers (or answers a head, then goes
    /// silent): every kind of call gives up.
    #[tokio::test]
    async fn calls_to_a_silent_server_time_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut open = Vec::new();
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                if String::from_utf8_lossy(&buf[..n]).contains("/stream") {
                    let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                    let _ = s.write_all(head.as_bytes()).await;
                }
                open.push(s);
            }
        });
        let r = Remote::new(&Login {
            url: format!("http://{addr}"),
            token: "t".into(),
        })
        .unwrap();
        let short = Duration::from_millis(300);
        let e = r
            .call_within::<serde_json::Value>(short, Method::GET, "/api/v1/whoami", None)
            .await
            .unwrap_err();
        assert!(e.message.contains("did not answer GET"), "{}", e.message);
        let e = r
            .request_within(short, Method::GET, "/x", None, &[], empty_body())
            .await
            .unwrap_err();
        assert!(e.message.contains("did not answer"), "{}", e.message);
        // A stream's head arrives, then nothing: the body read gives up after the silence
        // limit (shortened here).
        let resp = r
            .request_within(short, Method::POST, "/stream", None, &[], empty_body())
            .await
            .unwrap();
        let mut lines = Lines::new(resp.into_body(), r.url(), short);
        let e = lines.next().await.unwrap_err();
        assert!(e.message.contains("sent nothing"), "{}", e.message);
        assert_eq!(Deadline::Ordinary.limit(), REQUEST_TIMEOUT);
        assert_eq!(Deadline::Long.limit(), LONG_REQUEST_TIMEOUT);
        assert!(SILENCE_LIMIT > Duration::from_secs(15) * 2);
        hold.abort();
    }

    #[test]
    fn the_token_is_not_debug_printed() {
        let l = Login {
            url: "http://h".into(),
            token: "cvm_secret".into(),
        };
        assert!(!format!("{l:?}").contains("cvm_secret"));
    }
}
