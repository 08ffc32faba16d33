//! A `claude-vm server` started for a test, and a small HTTP/1.1 client with full control
//! over what is sent (headers, malformed bodies) and streamed answers (SSE, NDJSON).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::Ctx;

/// `claude-vm server` for one home on a loopback port; killed when dropped, its log printed
/// when the test failed.
pub struct Server {
    pub port: u16,
    child: Option<Child>,
    bin: std::path::PathBuf,
    home: std::path::PathBuf,
    log: std::path::PathBuf,
    /// More arguments for `claude-vm server`.
    args: Vec<String>,
    /// Its working directory (default: the test's).
    cwd: Option<std::path::PathBuf>,
    /// More environment variables.
    env: Vec<(String, String)>,
}

impl Server {
    /// On a free port.
    pub fn start(ctx: &Ctx) -> Server {
        Server::start_on(ctx, free_port())
    }

    pub fn start_on(ctx: &Ctx, port: u16) -> Server {
        Server::start_with(ctx, port, &[], None)
    }

    /// With more `claude-vm server` arguments, in working directory `cwd`.
    pub fn start_with(
        ctx: &Ctx,
        port: u16,
        args: &[&str],
        cwd: Option<&std::path::Path>,
    ) -> Server {
        let mut s = Server {
            port,
            child: None,
            bin: ctx.bin.clone(),
            home: ctx.home.path().to_owned(),
            log: ctx.home.path().join("server-test.log"),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            cwd: cwd.map(|p| p.to_owned()),
            env: Vec::new(),
        };
        s.spawn();
        s
    }

    /// On a free port, with these environment variables.
    pub fn start_env(ctx: &Ctx, env: &[(&str, &str)]) -> Server {
        let mut s = Server {
            port: free_port(),
            child: None,
            bin: ctx.bin.clone(),
            home: ctx.home.path().to_owned(),
            log: ctx.home.path().join("server-test.log"),
            args: Vec::new(),
            cwd: None,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        s.spawn();
        s
    }

    /// Start the process (again, after [`Server::kill`]) and wait until it listens.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = std::process::Command::new(&self.bin);
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        let child = cmd
            .args(["server", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args(&self.args)
            .env("CLAUDE_VM_HOME", &self.home)
            .env_remove("CLAUDE_VM_PUBLIC_URL")
            .env_remove("CLAUDE_VM_CONFIG")
            .env_remove("DOCKER_HOST")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the server exited ({status}):\n{}", self.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the server never listened:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The URL of a path on this server.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }

    pub fn client(&self) -> Client {
        Client {
            port: self.port,
            headers: Vec::new(),
        }
    }

    /// SIGKILL, as a crash: open streams break.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}", self.log_text());
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.text()))
    }

    /// The JSON body of a response that must have this status.
    #[track_caller]
    pub fn expect(&self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        if self.body.is_empty() {
            serde_json::Value::Null
        } else {
            self.json()
        }
    }
}

/// Requests with fixed extra headers (credentials).
#[derive(Clone)]
pub struct Client {
    pub port: u16,
    pub headers: Vec<(String, String)>,
}

impl Client {
    pub fn with(mut self, name: &str, value: &str) -> Client {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn bearer(self, token: &str) -> Client {
        self.with("Authorization", &format!("Bearer {token}"))
    }

    /// Open a request and read the status line and headers; the body is left on the stream.
    pub fn open(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, BufReader<TcpStream>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
        // A `Host` among the extra headers replaces the default one.
        let own_host = self
            .headers
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(headers.iter().map(|(k, _)| *k))
            .any(|k| k.eq_ignore_ascii_case("host"));
        let mut req = if own_host {
            format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n")
        } else {
            format!(
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
                self.port
            )
        };
        for (k, v) in &self.headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        s.write_all(req.as_bytes()).unwrap();
        // A server may answer (413, 401) and close before reading a large body.
        if let Err(e) = s.write_all(body) {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ),
                "sending the body: {e}"
            );
        }
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        (status, headers, r)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let (status, headers, mut r) = self.open(method, path, headers, body);
        let chunked = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
        let mut body = Vec::new();
        if chunked {
            let mut c = Chunks::new(r);
            while let Some(chunk) = c.next_chunk() {
                body.extend_from_slice(&chunk);
            }
        } else {
            r.read_to_end(&mut body).unwrap();
        }
        Response {
            status,
            headers,
            body,
        }
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, json: &serde_json::Value) -> Response {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            json.to_string().as_bytes(),
        )
    }

    pub fn delete(&self, path: &str) -> Response {
        self.request("DELETE", path, &[], b"")
    }
}

/// A chunked body read chunk by chunk (for streams).
pub struct Chunks {
    r: BufReader<TcpStream>,
    done: bool,
}

impl Chunks {
    pub fn new(r: BufReader<TcpStream>) -> Chunks {
        Chunks { r, done: false }
    }

    pub fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let mut line = String::new();
        if self.r.read_line(&mut line).ok()? == 0 {
            self.done = true;
            return None;
        }
        let size = usize::from_str_radix(line.trim().split(';').next()?, 16).ok()?;
        if size == 0 {
            self.done = true;
            return None;
        }
        let mut buf = vec![0; size + 2];
        self.r.read_exact(&mut buf).ok()?;
        buf.truncate(size);
        Some(buf)
    }
}

/// Server-sent events from a chunked stream: `(id, data)` pairs.
pub struct Sse {
    chunks: Chunks,
    buf: String,
}

impl Sse {
    pub fn new(r: BufReader<TcpStream>) -> Sse {
        Sse {
            chunks: Chunks::new(r),
            buf: String::new(),
        }
    }

    pub fn next_event(&mut self) -> Option<(Option<String>, String)> {
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for l in block.lines() {
                    if let Some(v) = l.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = l.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() && id.is_none() {
                    continue; // keep-alive comment
                }
                return Some((id, data));
            }
            let chunk = self.chunks.next_chunk()?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}
