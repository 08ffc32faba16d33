//! The server's side of the network: accepting connections within limits, and which names
//! and origins it answers to.
//!
//! - A connection must send a whole request head within [`Limits::header_read`] (also the
//!   idle time allowed between two requests on a kept-alive connection), and a request body
//!   must not stall for longer than [`Limits::body_idle`]; at most
//!   [`Limits::max_connections`] are served at once (more wait in the listen queue until a
//!   slot frees). Answers that stream (server-sent events, command output) are not bounded:
//!   they send keep-alives of their own.
//! - Requests must name this server in `Host` ([`HostPolicy`]): the address it listens on,
//!   a loopback name when it listens on loopback, the machine's own names when it listens
//!   on every interface, or a public URL it was told about (`--public-url`, for a reverse
//!   proxy). A web page on another name (DNS rebinding) gets 421.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use claude_vm_engine::CancellationToken;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::sync::Semaphore;

/// How connections are bounded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time to send a request's head; also how long a kept-alive connection may stay idle.
    pub header_read: Duration,
    /// Longest pause while a request body is being received.
    pub body_idle: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// On shutdown, how long open connections get to finish.
    pub grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read: Duration::from_secs(10),
            body_idle: Duration::from_secs(60),
            max_connections: 512,
            grace: Duration::from_secs(5),
        }
    }
}

/// Accept connections and serve `app` on each until `shutdown`; then give open connections
/// [`Limits::grace`] to finish.
pub async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // A slot first: beyond the limit, new connections wait in the listen queue.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_one(tcp, peer, app, limits, stop).await;
        });
    }
    drop(listener);
    // Every connection holds a slot: all slots back means all connections are done.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.grace, slots.acquire_many(all)).await;
    Ok(())
}

async fn serve_one(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(|b| axum::body::Body::new(IdleBody::new(b, limits.body_idle)));
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move {
            use tower_service::Service;
            Ok::<_, Infallible>(app.call(req).await.unwrap_or_else(|e| match e {}))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Half-closes are allowed: a client that sent its whole request (an upload, say) and
    // shut its side still has the request carried out. A client that is gone is noticed
    // when writing to it fails: streams write a keep-alive at least every 15 s.
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .half_close(true)
        .keep_alive(true);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(client = %peer, "connection ended: {e}");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.grace, conn).await;
        }
    }
}

/// A request body that fails when no data arrives for a while (a client that stalls in the
/// middle of a body would otherwise hold its request open forever).
struct IdleBody {
    inner: Incoming,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl IdleBody {
    fn new(inner: Incoming, idle: Duration) -> IdleBody {
        IdleBody {
            inner,
            idle,
            timer: None,
        }
    }
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                        "the request body stalled for {}s",
                        idle.as_secs()
                    )
                    .into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `scheme://host[:port]`, lowercased, the port left out when it is the scheme's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: Option<u16>,
}

impl Origin {
    /// An origin as a browser sends it, or a URL (its path is ignored). Only http and https.
    pub fn parse(url: &str) -> Option<Origin> {
        let (scheme, rest) = url.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return None;
        }
        let (host, port) = split_host_port(authority)?;
        let default = if scheme == "https" { 443 } else { 80 };
        Some(Origin {
            scheme,
            host,
            port: port.filter(|p| *p != default),
        })
    }

    /// The origin of a request that came in with this `Host` over `scheme`.
    fn of_host(scheme: &str, host_header: &str) -> Option<Origin> {
        Origin::parse(&format!("{scheme}://{host_header}"))
    }
}

/// `name[:port]` or `[v6][:port]` into the lowercased name (brackets kept for IPv6) and the
/// port. `None` for anything else (spaces, empty names, bad ports).
pub fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    if authority.is_empty()
        || authority
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'\\' || b >= 0x80)
    {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{inside}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() || (!host.starts_with('[') && host.contains([':', '[', ']'])) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

fn host_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Which `Host` names and browser origins are this server.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    listen: IpAddr,
    /// The machine's own names, accepted when listening on every interface.
    machine_names: Vec<String>,
    public: Vec<Origin>,
}

impl HostPolicy {
    /// For a server listening on `listen`, reached also at `public` URLs.
    pub fn new(listen: IpAddr, public: Vec<Origin>) -> HostPolicy {
        let mut machine_names = Vec::new();
        if listen.is_unspecified()
            && let Ok(name) = nix::unistd::gethostname()
        {
            let name = name.to_string_lossy().to_ascii_lowercase();
            if !name.is_empty() {
                let short = name.split('.').next().unwrap_or(&name).to_owned();
                machine_names.push(format!("{short}.local"));
                machine_names.push(short);
                machine_names.push(name);
            }
        }
        HostPolicy {
            listen,
            machine_names,
            public,
        }
    }

    /// The names a client may use, for error messages.
    pub fn describe(&self) -> String {
        let mut names: Vec<String> = Vec::new();
        if self.listen.is_unspecified() {
            names.push("any address of this machine".into());
        } else {
            names.push(match self.listen {
                IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            });
        }
        if self.listen.is_loopback() || self.listen.is_unspecified() {
            names.push("localhost".into());
        }
        names.extend(self.machine_names.iter().cloned());
        names.extend(self.public.iter().map(|o| o.host.clone()));
        names.dedup();
        names.join(", ")
    }

    /// Whether a request's `Host` header names this server (the port is not compared: a
    /// proxy in front may use its own).
    pub fn host_allowed(&self, host_header: &str) -> bool {
        let Some((host, _)) = split_host_port(host_header) else {
            return false;
        };
        if self.public.iter().any(|o| o.host == host) {
            return true;
        }
        let local = self.listen.is_loopback() || self.listen.is_unspecified();
        if let Some(ip) = host_ip(&host) {
            return self.listen.is_unspecified()
                || ip == self.listen
                || (self.listen.is_loopback() && ip.is_loopback());
        }
        if local && (host == "localhost" || host.ends_with(".localhost")) {
            return true;
        }
        self.machine_names.contains(&host)
    }

    /// Whether a browser's `Origin` is this server: a public URL's origin, or the origin of
    /// the request itself (its `Host`, over https when a proxy in front says so, else http):
    /// scheme, host and port all compared.
    pub fn origin_allowed(&self, origin: &str, host_header: &str, forwarded_https: bool) -> bool {
        let Some(origin) = Origin::parse(origin) else {
            return false;
        };
        if self.public.contains(&origin) {
            return true;
        }
        let scheme = if forwarded_https { "https" } else { "http" };
        self.host_allowed(host_header) && Origin::of_host(scheme, host_header) == Some(origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn read_all(s: &mut TcpStream, within: Duration) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(within, s.read_to_end(&mut out))
            .await
            .expect("the server left the connection open")
            .ok();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn slow_clients_are_cut_off_and_the_limit_makes_others_wait() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/", axum::routing::get(|| async { "ok" }))
            .route(
                "/echo",
                axum::routing::post(|body: String| async move { body }),
            );
        let limits = Limits {
            header_read: Duration::from_secs(1),
            body_idle: Duration::from_secs(1),
            max_connections: 4,
            grace: Duration::from_secs(1),
        };
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_connections(listener, app, limits, stop.clone()));
        // Four clients that send one byte take every slot...
        let mut slow = Vec::new();
        for _ in 0..4 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"G").await.unwrap();
            slow.push(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // ...so a fifth waits until the header timeout frees one, then is served.
        let start = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_all(&mut s, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        for mut s in slow {
            read_all(&mut s, Duration::from_secs(2)).await;
        }
        // A kept-alive connection that goes idle is closed too.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_all(&mut idle, Duration::from_secs(3)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // A body that stalls is given up.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .unwrap();
        let start = Instant::now();
        let answer = read_all(&mut s, Duration::from_secs(4)).await;
        assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(start.elapsed() >= Duration::from_millis(900));
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }

    fn loopback() -> HostPolicy {
        HostPolicy::new("127.0.0.1".parse().unwrap(), Vec::new())
    }

    #[test]
    fn hosts_are_split_and_checked() {
        assert_eq!(
            split_host_port("Example.COM:8080"),
            Some(("example.com".into(), Some(8080)))
        );
        assert_eq!(
            split_host_port("[::1]:7878"),
            Some(("[::1]".into(), Some(7878)))
        );
        for bad in [
            "", "a b", "h:99999", "[zz]:1", "h:x", "a:b:c", "h\u{7f}", "h\\x",
        ] {
            assert_eq!(split_host_port(bad), None, "{bad:?}");
        }
        let p = loopback();
        for ok in [
            "127.0.0.1:7878",
            "localhost:7878",
            "LOCALHOST",
            "app.localhost:1",
        ] {
            assert!(p.host_allowed(ok), "{ok}");
        }
        for bad in ["evil.example:7878", "10.0.0.1:7878", "", "127.0.0.1:7878 x"] {
            assert!(!p.host_allowed(bad), "{bad}");
        }
        let all = HostPolicy::new(
            "0.0.0.0".parse().unwrap(),
            vec![Origin::parse("https://cvm.example.com").unwrap()],
        );
        for ok in [
            "192.168.1.5:7878",
            "[fe80::1]:7878",
            "localhost",
            "cvm.example.com",
        ] {
            assert!(all.host_allowed(ok), "{ok}");
        }
        assert!(!all.host_allowed("evil.example"));
        let lan = HostPolicy::new("192.168.1.5".parse().unwrap(), Vec::new());
        assert!(lan.host_allowed("192.168.1.5:7878"));
        assert!(!lan.host_allowed("localhost:7878"));
        assert!(!lan.host_allowed("127.0.0.1:7878"));
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let p = loopback();
        let host = "127.0.0.1:7878";
        assert!(p.origin_allowed("http://127.0.0.1:7878", host, false));
        assert!(p.origin_allowed("HTTP://127.0.0.1:7878", host, false));
        for bad in [
            "evil://127.0.0.1:7878",
            "https://127.0.0.1:7878",
            "http://127.0.0.1:7879",
            "http://127.0.0.1",
            "null",
            "http://evil.example",
            "http://user@127.0.0.1:7878",
        ] {
            assert!(!p.origin_allowed(bad, host, false), "{bad}");
        }
        // Behind a proxy that says it is https.
        assert!(p.origin_allowed("https://127.0.0.1:7878", host, true));
        assert!(!p.origin_allowed("http://127.0.0.1:7878", host, true));
        let proxied = HostPolicy::new(
            "127.0.0.1".parse().unwrap(),
            vec![Origin::parse("https://cvm.example.com/").unwrap()],
        );
        assert!(proxied.origin_allowed("https://cvm.example.com", "127.0.0.1:7878", false));
        assert!(proxied.origin_allowed("https://cvm.example.com:443", "cvm.example.com", false));
        assert!(!proxied.origin_allowed("http://cvm.example.com", "127.0.0.1:7878", false));
        assert!(Origin::parse("ftp://x").is_none());
    }
}
