//! `claude-vm server` under load: a hundred clients at once for a bounded time, mixing
//! reads, commands, messages to a real Claude Code conversation, live event streams and
//! `down`/`up` of workspaces. Nothing may fail with a 5xx, nothing may take over 10 s, and
//! the event streams must stay open (with their keep-alives) for the whole run.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use claude_vm_testkit::{Script, ScriptedModel};
use common::chat::ctx_with_claude;
use common::http::{Chunks, Client, Server};

/// How long the clients run.
const RUN_FOR_DEFAULT: Duration = Duration::from_secs(25);

/// How long the clients run: 25 s in the test command, `CLAUDE_VM_LOAD_SECS` for longer.
fn run_for() -> Duration {
    std::env::var("CLAUDE_VM_LOAD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(RUN_FOR_DEFAULT, Duration::from_secs)
}
const CLIENTS: usize = 100;
/// The slowest answer allowed.
const SLOWEST: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Record {
    /// Latencies per kind of request.
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    /// Every answer that was not what that request should get.
    bad: Vec<String>,
}

impl Record {
    fn add(&mut self, kind: &'static str, took: Duration, status: u16, ok: &[u16], body: &str) {
        self.latencies.entry(kind).or_default().push(took);
        if !ok.contains(&status) || took > SLOWEST {
            let body: String = body.chars().take(300).collect();
            self.bad
                .push(format!("{kind}: {status} after {took:.1?}: {body}"));
        }
    }
}

/// A tiny deterministic generator: each client's own mix.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[test]
fn a_hundred_clients_at_once() {
    let model = ScriptedModel::start(Script::from_json("[]").unwrap()).unwrap();
    let ctx = ctx_with_claude(&model.url(), "sk-load");
    // What is measured is the API under load; a `down` with its final backup (and the
    // server's continuous backups) are measured by tests/backups.rs and the benchmark.
    {
        let p = ctx.home.path().join("config.yaml");
        let mut cfg = std::fs::read_to_string(&p).unwrap();
        cfg.push_str("backup:\n  enabled: false\n");
        std::fs::write(p, cfg).unwrap();
    }
    let mut ids = Vec::new();
    for name in ["load-main", "load-b", "load-c"] {
        let proj = ctx.path(name);
        std::fs::create_dir_all(&proj).unwrap();
        std::fs::write(proj.join("README.md"), format!("# {name}\n")).unwrap();
        ids.push(
            ctx.up(&[proj.to_str().unwrap(), "--name", name])["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let server = Server::start(&ctx);
    let token = ctx.run(&["token", "create", "load", "--json"]).ok().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let api = server.client().bearer(&token);
    let conv = api
        .post(
            "/api/v1/workspaces/load-main/conversations",
            &serde_json::json!({"agent": "claude", "message": "hello"}),
        )
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let record = Arc::new(Mutex::new(Record::default()));
    let stream_ends = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let deadline = start + run_for();
    let mut threads = Vec::new();
    for n in 0..CLIENTS {
        let api = api.clone();
        let record = record.clone();
        let stream_ends = stream_ends.clone();
        let conv = conv.clone();
        threads.push(std::thread::spawn(move || match n {
            // Event streams, open for the whole run.
            0..8 => stream_events(&api, &conv, deadline, &record, &stream_ends),
            // Down and up of the other two workspaces, in turn.
            8..10 => {
                let ws = if n == 8 { "load-b" } else { "load-c" };
                while Instant::now() < deadline {
                    timed(&record, "down", &[200], || {
                        api.post(
                            &format!("/api/v1/workspaces/{ws}/down"),
                            &serde_json::json!({"timeout": 5}),
                        )
                    });
                    timed(&record, "up", &[200], || {
                        api.post(
                            &format!("/api/v1/workspaces/{ws}/up"),
                            &serde_json::json!({}),
                        )
                    });
                }
            }
            _ => mixed(&api, &conv, n as u64, deadline, &record),
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = start.elapsed();
    let record = record.lock().unwrap();
    let mut total = 0;
    eprintln!(
        "{CLIENTS} clients for {elapsed:.1?}:\n{:<12} {:>6} {:>9} {:>9} {:>9}",
        "kind", "count", "p50", "p99", "max"
    );
    for (kind, lat) in &record.latencies {
        let mut sorted = lat.clone();
        sorted.sort();
        total += sorted.len();
        eprintln!(
            "{kind:<12} {:>6} {:>9.1?} {:>9.1?} {:>9.1?}",
            sorted.len(),
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.99),
            sorted.last().copied().unwrap_or_default()
        );
    }
    eprintln!(
        "{total} requests, {:.0}/s",
        total as f64 / elapsed.as_secs_f64()
    );
    assert!(
        record.bad.is_empty(),
        "{} bad answers:\n{}\n--- server log ---\n{}",
        record.bad.len(),
        record.bad.join("\n"),
        server.log_text()
    );
    for kind in ["list", "get", "exec", "send", "transcript", "down", "up"] {
        assert!(record.latencies.contains_key(kind), "no {kind} request ran");
    }
    // Every stream stayed open until the end (the header timeout does not cut them).
    let ends = stream_ends.lock().unwrap();
    assert_eq!(ends.len(), 8);
    assert!(
        ends.iter()
            .all(|(open, _)| *open >= run_for() - Duration::from_secs(1)),
        "{ends:?}"
    );
    // The server is fine afterwards and the messages were all stored.
    api.get("/api/v1/whoami").expect(200);
    let t = api
        .get(&format!("/api/v1/conversations/{conv}/transcript"))
        .expect(200);
    let users = t
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "user")
        .count();
    let sent = record.latencies.get("send").map_or(0, Vec::len);
    assert_eq!(users, sent + 1, "every message sent is in the transcript");
}

/// Run one request, record its latency and status.
fn timed(
    record: &Mutex<Record>,
    kind: &'static str,
    ok: &[u16],
    f: impl FnOnce() -> common::http::Response,
) {
    let t = Instant::now();
    let r = f();
    let took = t.elapsed();
    record
        .lock()
        .unwrap()
        .add(kind, took, r.status, ok, &r.text());
}

/// A client mixing reads, commands and (a few) messages until the deadline.
fn mixed(api: &Client, conv: &str, seed: u64, deadline: Instant, record: &Mutex<Record>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (seed * 0x1000_0001));
    while Instant::now() < deadline {
        match rng.below(100) {
            0..30 => timed(record, "list", &[200], || api.get("/api/v1/workspaces")),
            30..50 => timed(record, "get", &[200], || {
                api.get("/api/v1/workspaces/load-main")
            }),
            50..75 => timed(record, "exec", &[200], || {
                let r = api.post(
                    "/api/v1/workspaces/load-main/exec",
                    &serde_json::json!({"shell": "echo hi; cat README.md"}),
                );
                if r.status == 200 && !r.text().contains("\"code\":0") {
                    return common::http::Response {
                        status: 599,
                        headers: r.headers,
                        body: r.body,
                    };
                }
                r
            }),
            75..77 => timed(record, "send", &[202], || {
                api.post(
                    &format!("/api/v1/conversations/{conv}/messages"),
                    &serde_json::json!({"text": "one more"}),
                )
            }),
            77..90 => timed(record, "transcript", &[200], || {
                api.get(&format!("/api/v1/conversations/{conv}/transcript"))
            }),
            _ => timed(record, "conversation", &[200], || {
                api.get(&format!("/api/v1/conversations/{conv}"))
            }),
        }
    }
}

/// Hold an event stream until the deadline; records how long it stayed open and how many
/// chunks (events and keep-alives) came.
fn stream_events(
    api: &Client,
    conv: &str,
    deadline: Instant,
    record: &Mutex<Record>,
    ends: &Mutex<Vec<(Duration, usize)>>,
) {
    let t = Instant::now();
    let (status, _, reader) = api.open(
        "GET",
        &format!("/api/v1/conversations/{conv}/events"),
        &[],
        b"",
    );
    record
        .lock()
        .unwrap()
        .add("events", t.elapsed(), status, &[200], "");
    // The keep-alive comes every 15 s: a read waits at most 20 s, and not past the end.
    let socket = reader.get_ref().try_clone().unwrap();
    let mut chunks = Chunks::new(reader);
    let mut seen = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let wait = left.clamp(Duration::from_millis(100), Duration::from_secs(20));
        socket.set_read_timeout(Some(wait)).unwrap();
        if chunks.next_chunk().is_none() {
            break;
        }
        seen += 1;
    }
    ends.lock().unwrap().push((t.elapsed(), seen));
}
