//! `claude-vm server` under load: the workspace list (page and API) with many running
//! workspaces, one conversation's events fanned out to many SSE clients, and the server's
//! memory. Requests are plain HTTP/1.0 over TCP (no client library in the measurement).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::exec::{Tools, check_interrupted, run, timed};

/// Server memory (VmRSS, KiB) at each stage.
#[derive(Debug, Clone, Serialize)]
pub struct ServerMemory {
    /// The same server with no workspace at all (its own empty home).
    pub empty_kib: u64,
    /// With `workspaces` running workspaces listed and linked.
    pub linked_kib: u64,
    /// And `clients` SSE clients following a conversation.
    pub with_clients_kib: u64,
    pub workspaces: usize,
    pub clients: usize,
}

pub struct ServerSamples {
    pub page_ttfb: Vec<Duration>,
    pub page_full: Vec<Duration>,
    pub api_full: Vec<Duration>,
    pub docker_ps: Vec<Duration>,
    /// Send → each client has the event, ms: one client, then `clients` at once.
    pub fanout_one: Vec<f64>,
    pub fanout_many: Vec<f64>,
    pub memory: ServerMemory,
}

/// A running `claude-vm server`; killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(tools: &Tools) -> Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = tools
            .cvm(["server", "--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start claude-vm server")?;
        let server = Server { child, port };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(20) {
                bail!("claude-vm server did not start listening within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS")
    }
}

/// Send a request; the answer's status and the reader positioned at the body.
fn open(
    port: u16,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> Result<(u16, BufReader<TcpStream>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line.trim_end().is_empty() {
            break;
        }
    }
    Ok((status, r))
}

/// (time to the first byte, time to the whole answer, the body).
fn get_timed(port: u16, path: &str, token: &str) -> Result<(Duration, Duration, Vec<u8>)> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )?;
    let mut first = [0u8; 1];
    s.read_exact(&mut first)?;
    let ttfb = t0.elapsed();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    let full = t0.elapsed();
    let mut all = first.to_vec();
    all.extend(rest);
    if !all.starts_with(b"HTTP/1.0 200") && !all.starts_with(b"HTTP/1.1 200") {
        bail!(
            "GET {path}: {}",
            String::from_utf8_lossy(&all[..all.len().min(300)])
        );
    }
    Ok((ttfb, full, all))
}

fn call(port: u16, method: &str, path: &str, token: &str, body: &str) -> Result<serde_json::Value> {
    let (status, mut r) = open(port, method, path, token, body)?;
    let mut text = String::new();
    r.read_to_string(&mut text)?;
    if !(200..300).contains(&status) {
        bail!("{method} {path}: {status} {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

/// Follow a conversation's SSE stream; report (message text, arrival) of every `user`
/// event on `tx` until the stream ends.
fn follower(
    port: u16,
    token: String,
    conv: String,
    after: u64,
    ready: mpsc::Sender<()>,
    tx: mpsc::Sender<(String, Instant)>,
) -> Result<()> {
    let (status, r) = open(
        port,
        "GET",
        &format!("/api/v1/conversations/{conv}/events?after={after}"),
        &token,
        "",
    )?;
    if status != 200 {
        bail!("events: status {status}");
    }
    let _ = ready.send(());
    for line in r.lines() {
        let line = line?;
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let at = Instant::now();
        let e: serde_json::Value = serde_json::from_str(data)?;
        if e["type"] == "user" {
            let text = e["text"].as_str().unwrap_or_default().to_owned();
            if tx.send((text, at)).is_err() {
                break;
            }
        }
    }
    Ok(())
}

/// Send `messages` messages, each after the previous one reached every one of `clients`
/// followers; the latency of every (message, client).
fn fanout(
    port: u16,
    token: &str,
    conv: &str,
    clients: usize,
    messages: usize,
    tag: &str,
    on_connected: impl FnOnce() -> Result<()>,
) -> Result<Vec<f64>> {
    let after = call(
        port,
        "GET",
        &format!("/api/v1/conversations/{conv}"),
        token,
        "",
    )?["last_seq"]
        .as_u64()
        .unwrap_or(0);
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::new();
    for _ in 0..clients {
        let (token, conv, tx, ready) = (
            token.to_owned(),
            conv.to_owned(),
            tx.clone(),
            ready_tx.clone(),
        );
        threads.push(std::thread::spawn(move || {
            follower(port, token, conv, after, ready, tx)
        }));
    }
    drop(tx);
    for _ in 0..clients {
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .context("an SSE client did not connect")?;
    }
    on_connected()?;
    let mut latencies = Vec::with_capacity(clients * messages);
    for m in 0..messages {
        check_interrupted()?;
        let text = format!("fanout-{tag}-{m}");
        let t0 = Instant::now();
        call(
            port,
            "POST",
            &format!("/api/v1/conversations/{conv}/messages"),
            token,
            &serde_json::json!({ "text": text }).to_string(),
        )?;
        let mut got = 0;
        while got < clients {
            let (t, at) = rx
                .recv_timeout(Duration::from_secs(30))
                .with_context(|| format!("message {m} did not reach every client"))?;
            if t == text {
                latencies.push(at.duration_since(t0).as_secs_f64() * 1e3);
                got += 1;
            }
        }
        // Let the stand-in agent answer before the next message.
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(rx);
    Ok(latencies)
}

pub fn server(
    tools: &Tools,
    repo: &std::path::Path,
    workspaces: usize,
    clients: usize,
    repetitions: usize,
    messages: usize,
) -> Result<ServerSamples> {
    // The baseline memory: the same server over an empty home.
    let empty_home = tempfile::Builder::new()
        .prefix("claude-vm-bench-empty.")
        .tempdir()?;
    let empty_tools = Tools {
        bin: tools.bin.clone(),
        docker: tools.docker.clone(),
        home: empty_home.path().to_owned(),
    };
    let empty_kib = {
        let s = Server::start(&empty_tools)?;
        std::thread::sleep(Duration::from_millis(500));
        s.rss_kib()?
    };

    for k in 0..workspaces {
        check_interrupted()?;
        let mut cmd = tools.cvm(["workspace", "up"]);
        cmd.arg(repo).args(["--name", &format!("srv-{k}"), "-q"]);
        run(cmd)?;
        if (k + 1) % 10 == 0 || k + 1 == workspaces {
            eprintln!("server: {}/{workspaces} running workspaces", k + 1);
        }
    }
    let token = run(tools.cvm(["token", "create", "bench", "--json"]))?;
    let token: serde_json::Value = serde_json::from_str(&token)?;
    let token = token["token"].as_str().context("no token")?.to_owned();
    let server = Server::start(tools)?;
    let port = server.port;

    // One unmeasured list links every workspace; then page, API and docker ps interleave.
    let (_, _, body) = get_timed(port, "/api/v1/workspaces", &token)?;
    let text = String::from_utf8_lossy(&body);
    let running = text.matches("\"status\":\"running\"").count();
    if running < workspaces {
        bail!("the API lists {running} running workspaces, expected {workspaces}");
    }
    let mut s = ServerSamples {
        page_ttfb: Vec::new(),
        page_full: Vec::new(),
        api_full: Vec::new(),
        docker_ps: Vec::new(),
        fanout_one: Vec::new(),
        fanout_many: Vec::new(),
        memory: ServerMemory {
            empty_kib,
            linked_kib: 0,
            with_clients_kib: 0,
            workspaces,
            clients,
        },
    };
    for i in 0..repetitions + 1 {
        check_interrupted()?;
        let (ttfb, full, page) = get_timed(port, "/", &token)?;
        if !String::from_utf8_lossy(&page).contains("srv-0") {
            bail!("the workspace page does not list srv-0");
        }
        let (_, api, _) = get_timed(port, "/api/v1/workspaces", &token)?;
        let (ps, _) = timed(tools.docker(["ps", "-a"]))?;
        if i > 0 {
            s.page_ttfb.push(ttfb);
            s.page_full.push(full);
            s.api_full.push(api);
            s.docker_ps.push(ps);
        }
    }
    s.memory.linked_kib = server.rss_kib()?;
    eprintln!(
        "server: list page p50 {:.1} ms with {workspaces} workspaces; RSS {} KiB",
        crate::stats::Summary::of(&s.page_full).p50_ms,
        s.memory.linked_kib
    );

    // A conversation with the stand-in agent, followed by 1 and then `clients` clients.
    let conv = call(
        port,
        "POST",
        "/api/v1/workspaces/srv-0/conversations",
        &token,
        "{\"agent\":\"claude\"}",
    )?;
    let conv = conv["id"]
        .as_str()
        .context("no conversation id")?
        .to_owned();
    s.fanout_one = fanout(port, &token, &conv, 1, messages, "one", || Ok(()))?;
    let mut with_clients = 0;
    s.fanout_many = fanout(port, &token, &conv, clients, messages, "many", || {
        with_clients = server.rss_kib()?;
        Ok(())
    })?;
    s.memory.with_clients_kib = with_clients;
    drop(server);
    Ok(s)
}
