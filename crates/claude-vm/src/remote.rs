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
use claude_vm_protocol::api::Event;
use claude_vm_store::Home;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// How long to wait for a TCP connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// An event stream silent for this long is dead (the server sends a keep-alive every 15s).
const SILENCE_LIMIT: Duration = Duration::from_secs(45);
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

/// Percent-encode one path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
    use futures_util::StreamExt;
    StreamBody::new(stream.map(|r| r.map(Frame::data))).boxed_unsync()
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    hint: Option<String>,
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

    /// Send one request on a fresh connection. Answers other than 2xx become errors
    /// carrying the server's `error` and `hint`.
    pub async fn request(
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
        let mut err = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => RemoteError {
                status: None,
                message: b.error,
                hint: b.hint,
            },
            Err(_)
                if status == StatusCode::BAD_GATEWAY || status == StatusCode::GATEWAY_TIMEOUT =>
            {
                self.unreachable(format!("a proxy answered {status}"))
            }
            Err(_) => self.not_claude_vm(format!(
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

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        let resp = self
            .request(Method::GET, path, None, &[], empty_body())
            .await?;
        self.decode(&format!("GET {path}"), resp).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, RemoteError> {
        let resp = self
            .request(
                Method::POST,
                path,
                Some("application/json"),
                &[],
                json_body(body),
            )
            .await?;
        self.decode(&format!("POST {path}"), resp).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, RemoteError> {
        let resp = self
            .request(Method::DELETE, path, None, &[], empty_body())
            .await?;
        self.decode(&format!("DELETE {path}"), resp).await
    }

    /// A POST whose answer is streamed, e.g. exec's JSON lines.
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
            )
            .await?;
        Ok(Lines {
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }

    /// `GET /api/v1/whoami`: checks the URL and the token.
    pub async fn whoami(&self) -> Result<serde_json::Value, RemoteError> {
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
        if v.get("version").and_then(|v| v.as_str()).is_none() {
            return Err(self.not_claude_vm("does not answer like a claude-vm server"));
        }
        Ok(v)
    }

    /// The live transcript of a conversation after `after`, resumed across dropped
    /// connections and server restarts.
    pub async fn events(&self, conversation: &str, after: u64) -> Result<SseEvents, RemoteError> {
        let mut s = SseEvents {
            remote: self.clone(),
            path: format!("/api/v1/conversations/{}/events", enc(conversation)),
            last: after,
            body: None,
            buf: Vec::new(),
            data: String::new(),
        };
        s.body = Some(s.connect().await?);
        Ok(s)
    }
}

/// A streamed answer read line by line.
pub struct Lines {
    body: Incoming,
    buf: Vec<u8>,
}

impl Lines {
    /// The next line (without its newline); `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, RemoteError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                return Ok(Some(line));
            }
            match self.body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
                Some(Err(e)) => {
                    return Err(RemoteError::new(format!(
                        "the connection to the server broke: {e}"
                    )));
                }
                None if self.buf.is_empty() => return Ok(None),
                None => return Ok(Some(std::mem::take(&mut self.buf))),
            }
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
    body: Option<Incoming>,
    buf: Vec<u8>,
    data: String,
}

impl SseEvents {
    async fn connect(&self) -> Result<Incoming, RemoteError> {
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
            )
            .await?;
        Ok(resp.into_body())
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
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=pos).collect();
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
            let Some(body) = self.body.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            match tokio::time::timeout(SILENCE_LIMIT, body.frame()).await {
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
                // Ended, broke or went silent: start again after the last event seen.
                _ => {
                    self.body = None;
                    self.buf.clear();
                    self.data.clear();
                }
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

    #[test]
    fn encoding() {
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
        assert_eq!(enc("bold-fire-1"), "bold-fire-1");
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
