//! Notifications from `claude-vm server`: the real Claude Code CLI against the scripted model,
//! real receivers on loopback (an HTTP server recording ntfy, webhook, Slack and Discord
//! posts; a real SMTP server, PyPI `aiosmtpd`), the server killed and started again.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use claude_vm_testkit::{Script, ScriptedModel};
use common::dexec;
use common::http::{Server, free_port};
use common::scenario::{Agent, Scenario};

/// One request an HTTP receiver got.
#[derive(Debug, Clone)]
struct Post {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    /// Whether it was answered 200 (else 500).
    ok: bool,
}

impl Post {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP/1.1 server on loopback recording every request; `/down...` answers 500, and
/// `/flaky...` too while [`Receiver::flaky_down`] is set.
struct Receiver {
    port: u16,
    posts: Arc<Mutex<Vec<Post>>>,
    flaky_down: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let flaky_down = Arc::new(AtomicBool::new(false));
        let record = posts.clone();
        let flaky = flaky_down.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let record = record.clone();
                let flaky = flaky.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().unwrap());
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                        let mut headers = HashMap::new();
                        loop {
                            let mut h = String::new();
                            reader.read_line(&mut h).unwrap();
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                            }
                        }
                        let len: usize = headers
                            .get("content-length")
                            .and_then(|l| l.parse().ok())
                            .unwrap_or(0);
                        let mut body = vec![0; len];
                        reader.read_exact(&mut body).unwrap();
                        let ok = !(path.starts_with("/down")
                            || (path.starts_with("/flaky") && flaky.load(Ordering::SeqCst)));
                        let status = if ok {
                            "200 OK"
                        } else {
                            "500 Internal Server Error"
                        };
                        record.lock().unwrap().push(Post {
                            path,
                            headers,
                            body,
                            ok,
                        });
                        let _ = conn.write_all(
                            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                        );
                    }
                });
            }
        });
        Receiver {
            port,
            posts,
            flaky_down,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn at(&self, path: &str) -> Vec<Post> {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` got `n` posts; returns them.
    #[track_caller]
    fn wait(&self, path: &str, n: usize, within: Duration) -> Vec<Post> {
        let t = Instant::now();
        loop {
            let got = self.at(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                t.elapsed() < within,
                "{path}: {} of {n} posts: {got:#?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The real SMTP server (`aiosmtpd`), delivering into a Maildir.
struct Smtp {
    port: u16,
    child: Child,
    maildir: tempfile::TempDir,
}

impl Smtp {
    fn start() -> Smtp {
        let port = free_port();
        let maildir = tempfile::tempdir().unwrap();
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("box"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd runs (scripts/test-deps.sh installs it)");
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "aiosmtpd never listened"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Smtp {
            port,
            child,
            maildir,
        }
    }

    fn mails(&self) -> Vec<String> {
        let dir = self.maildir.path().join("box/new");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The signature as a receiver computes it, from the published algorithm (HMAC-SHA256,
/// RFC 2104), independently of the sender's code.
fn hmac_hex(secret: &str, body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut key = secret.as_bytes().to_vec();
    if key.len() > 64 {
        key = Sha256::digest(&key).to_vec();
    }
    key.resize(64, 0);
    let ipad: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(body)
        .finalize();
    let outer = Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize();
    let hex: String = outer.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[test]
fn the_server_tells_every_channel_once_about_turns_approvals_and_keeps_trying_a_dead_one() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "say hello"}, "response": [{"text": "Hello there!\nA second line."}]},
              {"match": {"last_user_contains": "one more"}, "response": [{"text": "Another one."}]},
              {"match": {"last_user_contains": "write the note"},
               "response": [{"tool_use": {"name": "Write", "input": {"file_path": "/workspace/proj/note.txt", "content": "n\n"}}}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let rx = Receiver::start();
    let smtp = Smtp::start();
    let s = Scenario::new(Agent::Claude, &model);
    let cfg = s.ctx.home.path().join("config.yaml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    let lines = [
        "notify:".to_owned(),
        "  coalesce: 8s".to_owned(),
        "  link_base: https://cvm.example".to_owned(),
        "  channels:".to_owned(),
        format!(
            "  - {{type: ntfy, url: '{}', token: tk_secret}}",
            rx.url("/topic")
        ),
        format!(
            "  - {{type: webhook, url: '{}', secret: hook-secret}}",
            rx.url("/hook")
        ),
        format!(
            "  - {{type: slack, url: '{}'}}",
            rx.url("/slack/T1/B1/token")
        ),
        format!(
            "  - {{type: discord, url: '{}'}}",
            rx.url("/discord/1/token")
        ),
        format!(
            "  - {{type: email, host: 127.0.0.1, port: {}, tls: none, from: cvm@example.com, to: [me@example.com]}}",
            smtp.port
        ),
        format!(
            "  - {{type: webhook, name: dead, url: '{}', events: [turn_finished]}}",
            rx.url("/down")
        ),
    ];
    text.push_str(&lines.join("\n"));
    text.push('\n');
    std::fs::write(&cfg, text).unwrap();
    s.workspace("bell");
    let conv = s.new_chat("bell");
    let mut server = Server::start_env(&s.ctx, &[("CLAUDE_VM_WARM_CHECK_SECS", "1")]);
    // The server reads conversations from the moment it finds them (every few seconds).
    std::thread::sleep(Duration::from_secs(7));

    // A turn end reaches every channel in its format, with the reply's first line.
    let t = Instant::now();
    assert_eq!(
        s.send_wait(&conv, "please say hello"),
        "Hello there!\nA second line."
    );
    let turn_took = t.elapsed();
    let ntfy = rx.wait("/topic", 1, Duration::from_secs(20));
    assert_eq!(ntfy[0].headers["title"], "bell: turn finished");
    assert_eq!(ntfy[0].text(), "Hello there!");
    assert_eq!(ntfy[0].headers["authorization"], "Bearer tk_secret");
    assert_eq!(
        ntfy[0].headers["click"],
        format!("https://cvm.example/c/{conv}")
    );
    assert_eq!(ntfy[0].headers["priority"], "3");
    let hook = rx.wait("/hook", 1, Duration::from_secs(10));
    assert_eq!(
        hook[0].headers["x-claude-vm-signature"],
        hmac_hex("hook-secret", &hook[0].body),
        "the signature verifies"
    );
    let v = hook[0].json();
    assert_eq!(
        (v["event"].as_str(), v["conversation"].as_str()),
        (Some("turn_finished"), Some(conv.as_str()))
    );
    let slack = rx.wait("/slack/T1/B1/token", 1, Duration::from_secs(10));
    assert!(
        slack[0].json()["text"]
            .as_str()
            .unwrap()
            .starts_with("*bell: turn finished*\nHello there!")
    );
    let discord = rx.wait("/discord/1/token", 1, Duration::from_secs(10));
    assert!(
        discord[0].json()["content"]
            .as_str()
            .unwrap()
            .contains("Hello there!")
    );
    assert_eq!(
        discord[0].json()["allowed_mentions"]["parse"],
        serde_json::json!([])
    );
    let t = Instant::now();
    while smtp.mails().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(20), "no mail arrived");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mail = &smtp.mails()[0];
    assert!(
        mail.contains("Subject: [claude-vm] bell: turn finished"),
        "{mail}"
    );
    assert!(mail.contains("Hello there!"), "{mail}");

    // Two more turns within the coalescing window: one notification for both.
    assert_eq!(s.send_wait(&conv, "one more"), "Another one.");
    assert_eq!(s.send_wait(&conv, "and one more"), "Another one.");
    let ntfy = rx.wait("/topic", 2, Duration::from_secs(30));
    assert_eq!(
        ntfy[1].headers["title"], "bell: 2 more turns finished",
        "{ntfy:#?}"
    );

    // An approval is told at once, with a higher priority.
    let ask = s.ask_chat("bell", "please write the note");
    let ntfy = rx.wait("/topic", 3, Duration::from_secs(30));
    assert_eq!(ntfy[2].headers["title"], "bell: approval needed");
    assert_eq!(ntfy[2].headers["priority"], "4");
    assert_eq!(
        ntfy[2].headers["click"],
        format!("https://cvm.example/c/{ask}")
    );

    // The dead endpoint is retried, reported, and never slowed the conversation.
    assert!(turn_took < Duration::from_secs(30), "{turn_took:?}");
    let t = Instant::now();
    let dead = loop {
        let st = s.ctx.run(&["notify", "status", "--json"]).ok().json();
        let dead = st
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == "dead")
            .cloned()
            .unwrap();
        if rx.at("/down").len() >= 2 {
            break dead;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{st:#}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        dead["last_error"].as_str().unwrap().contains("HTTP 500"),
        "{dead}"
    );
    assert!(
        !dead["last_error"].as_str().unwrap().contains("/down"),
        "errors show the host only"
    );
    let table = s.ctx.run(&["notify", "status"]).ok();
    assert!(
        table.stdout.contains("dead") && table.stdout.contains("HTTP 500"),
        "{}",
        table.stdout
    );
    // Its filter held: turn ends only, never the approval.
    for p in rx.at("/down") {
        assert_eq!(p.json()["event"], "turn_finished", "{p:?}");
    }
    // And the web UI says so.
    let token = s.ctx.run(&["token", "create", "web", "--json"]).ok().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let page = server.client().bearer(&token).get("/").text();
    assert!(
        page.contains("Notifications to dead are not getting through"),
        "{page}"
    );

    // Restarted, the server tells nothing twice: whatever it sends now (an event that
    // happened about the time of the restart may be told) is no message sent before.
    let paths = ["/topic", "/hook", "/slack/T1/B1/token", "/discord/1/token"];
    let fingerprint = |p: &Post| {
        format!(
            "{} {} {}",
            p.headers.get("title").map_or("", String::as_str),
            p.headers
                .get("x-claude-vm-event")
                .map_or("", String::as_str),
            p.text()
        )
    };
    // Once every channel but the dead one has nothing pending (what was sent is recorded).
    let t = Instant::now();
    loop {
        let st = s.ctx.run(&["notify", "status", "--json"]).ok().json();
        let pending: u64 = st
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["channel"] != "dead")
            .map(|c| c["pending"].as_u64().unwrap_or(0))
            .sum();
        if pending == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{st:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let before: HashMap<&str, usize> = paths.into_iter().map(|p| (p, rx.at(p).len())).collect();
    server.kill();
    server.spawn();
    std::thread::sleep(Duration::from_secs(10));
    for (p, n) in &before {
        let all: Vec<String> = rx.at(p).iter().map(fingerprint).collect();
        let (earlier, since) = all.split_at(*n);
        let repeats: Vec<&String> = since.iter().filter(|f| earlier.contains(f)).collect();
        assert!(
            repeats.is_empty(),
            "{p} was told again after the restart: {repeats:#?}\nbefore it: {earlier:#?}\nafter it: {since:#?}\n--- server log ---\n{}",
            server.log_text()
        );
    }

    // `notify test` reaches every channel and names the one that fails.
    let test = s.ctx.run(&["notify", "test"]);
    assert_eq!(test.code, 1, "{}", test.stderr);
    assert!(
        test.stderr.contains("dead (webhook): 127.0.0.1"),
        "{}",
        test.stderr
    );
    assert!(
        test.stderr.contains("ntfy-1 (ntfy): sent"),
        "{}",
        test.stderr
    );
    assert!(
        rx.at("/topic")
            .iter()
            .any(|p| p.headers["title"] == "claude-vm: test notification")
    );

    // A workspace that stops itself for idleness is told too (the unanswered approval,
    // which would keep it up, is stopped first).
    s.ctx.run(&["chat", "stop", "-c", &ask]).ok();
    let n = rx.at("/topic").len();
    s.ctx
        .run(&["workspace", "set", "bell", "--idle-stop", "6s"])
        .ok();
    let t = Instant::now();
    while !rx.at("/topic")[n..]
        .iter()
        .any(|p| p.headers["title"] == "bell: stopped for idleness")
    {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{:#?}",
            &rx.at("/topic")[n..]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(server);
}

/// Waits until some post to `path` matches `f`; returns the posts to `path`.
#[track_caller]
fn wait_for_post(rx: &Receiver, path: &str, what: &str, f: impl Fn(&Post) -> bool) -> Vec<Post> {
    let t = Instant::now();
    loop {
        let got = rx.at(path);
        if got.iter().any(&f) {
            return got;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{path}: no {what} in {got:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_failed_conversation_and_a_failed_backup_are_told_and_a_pending_one_outlives_a_restart() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[{"match": {"last_user_contains": "say hello"}, "response": [{"text": "Hello."}]}]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let rx = Receiver::start();
    let s = Scenario::new(Agent::Claude, &model);
    // A backup repository that cannot be opened (a plain file where its folder should be).
    let not_a_repo = s.ctx.home.path().join("not-a-repository");
    std::fs::write(&not_a_repo, "plain file\n").unwrap();
    let cfg = s.ctx.home.path().join("config.yaml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "backup:\n  repository: {}\nnotify:\n  coalesce: 1s\n  channels:\n  - {{type: ntfy, url: '{}'}}\n  - {{type: webhook, name: flaky, url: '{}', events: [failed]}}\n",
        not_a_repo.display(),
        rx.url("/topic"),
        rx.url("/flaky"),
    ));
    std::fs::write(&cfg, text).unwrap();
    let id = s.workspace("oops");
    let conv = s.new_chat("oops");
    assert_eq!(s.send_wait(&conv, "say hello"), "Hello.");
    rx.flaky_down.store(true, Ordering::SeqCst);
    let mut server = Server::start_env(
        &s.ctx,
        &[
            ("CLAUDE_VM_WARM_CHECK_SECS", "1"),
            ("CLAUDE_VM_BACKUP_CHECK_SECS", "2"),
        ],
    );

    // The server's continuous backup fails: told once, with the reason.
    let topic = wait_for_post(&rx, "/topic", "backup failure", |p| {
        p.headers["title"] == "oops: backup failed"
    });
    let failed = topic
        .iter()
        .find(|p| p.headers["title"] == "oops: backup failed")
        .unwrap();
    assert!(!failed.text().is_empty(), "{failed:?}");
    assert_eq!(failed.headers["priority"], "4");

    // The agent dies: the conversation fails, and every channel that wants it is told.
    std::thread::sleep(Duration::from_secs(5));
    dexec(
        &id,
        "pkill -KILL -f '/opt/claude-vm/agents/[c]laude/' || true",
    );
    let topic = wait_for_post(&rx, "/topic", "failed conversation", |p| {
        p.headers["title"] == "oops: conversation failed"
    });
    let told = topic
        .iter()
        .find(|p| p.headers["title"] == "oops: conversation failed")
        .unwrap();
    assert!(told.text().contains("the agent exited"), "{told:?}");
    assert_eq!(s.status(&conv), "failed");
    // The flaky endpoint refused it: the notification waits in the outbox.
    wait_for_post(&rx, "/flaky", "attempt", |p| !p.ok);
    assert!(rx.at("/flaky").iter().all(|p| !p.ok));

    // Killed with the notification pending, the server sends it after its restart, once.
    server.kill();
    rx.flaky_down.store(false, Ordering::SeqCst);
    server.spawn();
    let flaky = wait_for_post(&rx, "/flaky", "delivery", |p| p.ok);
    let delivered: Vec<&Post> = flaky.iter().filter(|p| p.ok).collect();
    assert_eq!(delivered[0].json()["event"], "failed", "{delivered:?}");
    assert_eq!(delivered[0].json()["conversation"], conv.as_str());
    std::thread::sleep(Duration::from_secs(8));
    let delivered = rx.at("/flaky").into_iter().filter(|p| p.ok).count();
    assert_eq!(delivered, 1, "{:#?}", rx.at("/flaky"));
    // Nor was any ntfy notification repeated by the restart.
    let mut ids: Vec<String> = rx
        .at("/topic")
        .iter()
        .map(|p| format!("{}|{}", p.headers["title"], p.text()))
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "{:#?}", rx.at("/topic"));
    drop(server);
}

#[test]
fn bad_channel_configs_are_refused_naming_the_key() {
    let ctx = common::Ctx::new();
    let cfg = ctx.home.path().join("config.yaml");
    let base = std::fs::read_to_string(&cfg).unwrap();
    for (yaml, want) in [
        (
            "notify:\n  channels:\n  - type: ntfy\n    url: ntfy.sh/x\n",
            "notify.channels[0].url",
        ),
        (
            "notify:\n  channels:\n  - type: pager\n    url: https://x/y\n",
            "unknown variant",
        ),
        ("notify:\n  coalesce: later\n", "notify.coalesce"),
        ("lifecycle:\n  idle_stop: soon\n", "lifecycle.idle_stop"),
    ] {
        std::fs::write(&cfg, format!("{base}{yaml}")).unwrap();
        let r = ctx.run(&["notify", "status"]).fails();
        assert!(r.stderr.contains(want), "{yaml}: {}", r.stderr);
    }
}

#[test]
fn server_install_writes_or_prints_a_unit_and_status_tells_whether_the_server_runs() {
    let ctx = common::Ctx::new();
    let st = ctx.run(&["server", "status"]);
    assert_eq!((st.code, st.stdout.trim()), (3, "not running"));
    let server = Server::start(&ctx);
    let st = ctx.run(&["server", "status", "--json"]).ok().json();
    assert_eq!(st["running"], true, "{st}");
    assert_eq!(st["url"], format!("http://127.0.0.1:{}", server.port));
    drop(server);
    assert_eq!(ctx.run(&["server", "status"]).code, 3);

    // This machine runs no systemd (a container): the unit is printed, nothing installed.
    assert!(
        !std::path::Path::new("/run/systemd/system").exists(),
        "this test expects no systemd"
    );
    let xdg = ctx.path("xdg");
    let out = ctx
        .command(&[
            "server",
            "install",
            "--user",
            "--listen",
            "0.0.0.0:7979",
            "--public-url",
            "https://cvm.example.com",
        ])
        .env("XDG_CONFIG_HOME", &xdg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let unit = String::from_utf8_lossy(&out.stdout);
    let bin = ctx.bin.display().to_string();
    for want in [
        format!(
            "ExecStart={bin} server --listen 0.0.0.0:7979 --public-url https://cvm.example.com"
        ),
        format!("Environment=CLAUDE_VM_HOME={}", ctx.home.path().display()),
        "Restart=on-failure".to_owned(),
        "WantedBy=default.target".to_owned(),
    ] {
        assert!(unit.lines().any(|l| l == want), "{want:?} in\n{unit}");
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not run systemd"));
    assert!(!xdg.exists(), "nothing is written without systemd");
    let printed = ctx.run(&["server", "install", "--print"]).ok();
    assert!(printed.stdout.contains("WantedBy=multi-user.target"));
    let bad = ctx
        .run(&["server", "install", "--listen", "no port"])
        .fails();
    assert!(bad.stderr.contains("invalid --listen"), "{}", bad.stderr);
    // Still the server itself without a subcommand.
    let help = ctx.run(&["server", "--help"]).ok();
    assert!(help.stdout.contains("install") && help.stdout.contains("--listen"));
}
