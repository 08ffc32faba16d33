//! Workspaces that stop themselves when nothing goes on in them and start again when used:
//! the real Claude Code CLI against the scripted model, in real Docker workspaces, with
//! idle timers of seconds.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use claude_vm_testkit::{Script, ScriptedModel};
use common::chat::{status, wait_for};
use common::http::Server;
use common::scenario::{Agent, Scenario};

/// Docker's view of the workspace's container: running, and its exit code.
fn container(id: &str) -> (bool, i64) {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.ExitCode}}",
            &format!("claude-vm-{id}"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    (
        parts.next() == Some("true"),
        parts.next().and_then(|c| c.parse().ok()).unwrap_or(-1),
    )
}

/// The workspace stays up for all of `held` (checked every half second).
#[track_caller]
fn stays_up(id: &str, held: Duration, why: &str) {
    let t = Instant::now();
    while t.elapsed() < held {
        assert!(
            container(id).0,
            "stopped after {:?} while {why}",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until the workspace stopped itself (exit code 0); returns how long that took.
#[track_caller]
fn stops_itself(id: &str, within: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let (running, code) = container(id);
        if !running {
            assert_eq!(
                code, 0,
                "an idle stop exits 0 (the restart policy leaves it)"
            );
            return t.elapsed();
        }
        assert!(t.elapsed() < within, "still running after {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The daemon's log, read from the (possibly stopped) container.
fn daemon_log(id: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker cp claude-vm-{id}:/workspace/.claude-vm/logs/daemon.log - | tar -xO"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sets the idle timer of a running workspace; the daemon has it at once.
fn idle_stop(s: &Scenario, ws: &str, value: &str) {
    let set = s
        .ctx
        .run(&["workspace", "set", ws, "--idle-stop", value, "--json"])
        .ok()
        .json();
    assert_eq!(set["applied"], true, "{set}");
}

#[test]
fn a_workspace_stops_itself_only_when_nothing_goes_on_and_wakes_when_used() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "run the long job"},
               "response": [{"tool_use": {"name": "Bash", "input": {"command": "timeout 40 tail -f /dev/null; echo long-done", "description": "long job"}}}]},
              {"match": {"after_tool_result_contains": "long-done"}, "response": [{"text": "Long job done."}]},
              {"match": {"last_user_contains": "write the note"},
               "response": [{"tool_use": {"name": "Write", "input": {"file_path": "/workspace/proj/note.txt", "content": "n\n"}}}]},
              {"match": {"after_tool_result_contains": "note.txt"}, "response": [{"text": "Wrote the note."}]},
              {"match": {"last_user_contains": "are you back"}, "response": [{"text": "Back and ready."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let s = Scenario::new(Agent::Claude, &model);
    // Approvals keep a workspace up for lifecycle.approval_wait, 12 s here.
    let cfg = s.ctx.home.path().join("config.yaml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("lifecycle:\n  idle_stop: 30m\n  approval_wait: 12s\n");
    std::fs::write(&cfg, text).unwrap();
    let id = s.workspace("nap");
    let conv = s.new_chat("nap");

    // Bad values are refused, naming what is wrong.
    let bad = s
        .ctx
        .run(&["workspace", "set", "nap", "--idle-stop", "soon"])
        .fails();
    assert!(bad.stderr.contains("invalid idle stop"), "{}", bad.stderr);

    // A 40-second tool call with a 5-second timer: up until the turn ends, then down.
    idle_stop(&s, "nap", "5s");
    s.ctx
        .run(&["chat", "send", "-c", &conv, "please run the long job"])
        .ok();
    wait_for(&s.ctx, &conv, "the long tool call", |e| {
        e["type"] == "tool_call"
    });
    let t = Instant::now();
    while status(&s.ctx, &conv) == "working" {
        assert!(container(&id).0, "stopped mid-turn after {:?}", t.elapsed());
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "the turn never ended"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        t.elapsed() >= Duration::from_secs(30),
        "the tool call ran {:?}: {:#?}",
        t.elapsed(),
        s.events(&conv)
    );
    let took = stops_itself(&id, Duration::from_secs(30));
    assert!(
        took >= Duration::from_secs(3),
        "stopped {took:?} after the turn"
    );

    // Seen as stopped for idleness; waking on `chat send` says so in one line.
    let list = s.ctx.run(&["workspace", "list"]).ok();
    assert!(list.stdout.contains("stopped (idle "), "{}", list.stdout);
    let json = s.ctx.list();
    assert!(json[0]["idle_since"].is_string(), "{json:?}");
    let refused = s
        .ctx
        .run(&["--no-start", "exec", "nap", "--", "true"])
        .fails();
    assert!(
        refused.stderr.contains("is not running"),
        "{}",
        refused.stderr
    );
    assert!(!container(&id).0);
    let woke = s
        .ctx
        .run(&["chat", "send", "-c", &conv, "are you back?", "--wait"])
        .ok();
    assert_eq!(woke.stdout.trim(), "Back and ready.");
    assert!(
        woke.stderr.contains("nap is stopped (idle") && woke.stderr.contains("starting it"),
        "{}",
        woke.stderr
    );
    assert!(container(&id).0);
    let json = s.ctx.list();
    assert!(json[0]["idle_since"].is_null(), "{json:?}");

    // A process left by `exec -d` keeps it up while it runs.
    s.ctx
        .run(&["exec", "-d", "nap", "--", "sh", "-c", "sleep 12"])
        .ok();
    stays_up(&id, Duration::from_secs(10), "an exec -d process ran");
    stops_itself(&id, Duration::from_secs(30));

    // `exec` wakes it too; then an open `chat log --follow` keeps it up.
    let out = s.ctx.run(&["exec", "nap", "--", "echo", "awake"]).ok();
    assert_eq!(out.stdout.trim(), "awake");
    let mut follow = s
        .ctx
        .command(&["chat", "log", "-c", &conv, "--follow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    stays_up(&id, Duration::from_secs(10), "a chat log --follow was open");
    follow.kill().unwrap();
    follow.wait().unwrap();
    stops_itself(&id, Duration::from_secs(30));

    // An approval nobody answers keeps it up for approval_wait (12 s), then it stops.
    s.ask_chat("nap", "please write the note");
    let asked = Instant::now();
    stays_up(&id, Duration::from_secs(9), "an approval was pending");
    stops_itself(&id, Duration::from_secs(40));
    assert!(
        asked.elapsed() >= Duration::from_secs(12 + 4),
        "{:?}",
        asked.elapsed()
    );

    // Off: it stays up however long nothing happens.
    s.ctx.run(&["exec", "nap", "--", "true"]).ok();
    idle_stop(&s, "nap", "off");
    stays_up(&id, Duration::from_secs(8), "its idle stop was off");
}

#[test]
fn the_server_backs_up_before_an_idle_stop_and_delivers_a_message_sent_meanwhile() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "HELD-MESSAGE"}, "response": [{"text": "Got the held message."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let s = Scenario::new(Agent::Claude, &model);
    let id = s.workspace("doze");
    let conv = s.new_chat("doze");
    s.ctx
        .run(&[
            "exec",
            "doze",
            "--",
            "sh",
            "-c",
            "echo precious > /workspace/proj/work.txt",
        ])
        .ok();
    let token = s.ctx.run(&["token", "create", "t", "--json"]).ok().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let server = Server::start_env(
        &s.ctx,
        &[
            ("CLAUDE_VM_WARM_CHECK_SECS", "1"),
            ("CLAUDE_VM_BACKUP_CHECK_SECS", "3600"),
            ("CLAUDE_VM_LOG", "warn,claude_vm_engine=info"),
        ],
    );
    // Long enough for the server (which looks every second) to follow the timer.
    idle_stop(&s, "doze", "8s");
    stops_itself(&id, Duration::from_secs(60));
    let log = server.log_text();
    assert!(
        log.contains("final backup before the idle stop taken"),
        "{log}\n--- daemon log ---\n{}",
        daemon_log(&id)
    );
    // The snapshot holds the file written before the stop.
    let snaps = s.ctx.run(&["backup", "list", "doze", "--json"]).ok().json();
    assert!(!snaps.as_array().unwrap().is_empty(), "{snaps}");

    // A message to the stopped workspace is accepted at once, then delivered exactly once.
    let api = server.client().bearer(&token);
    let t = Instant::now();
    let sent = api
        .post(
            &format!("/api/v1/conversations/{conv}/messages"),
            &serde_json::json!({"text": "HELD-MESSAGE please"}),
        )
        .expect(202);
    assert_eq!(sent["held"], true, "{sent}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let ev = wait_for(&s.ctx, &conv, "the held message's answer", |e| {
        e["type"] == "assistant" && e["text"] == "Got the held message."
    });
    let users = ev
        .iter()
        .filter(|e| e["type"] == "user" && e["text"] == "HELD-MESSAGE please")
        .count();
    assert_eq!(users, 1, "{ev:#?}");
    assert_eq!(users, 1);
    assert_eq!(
        ev.iter()
            .find(|e| e["type"] == "user" && e["text"] == "HELD-MESSAGE please")
            .unwrap()["message_id"],
        sent["message_id"]
    );
}

/// A stand-in for a provider that goes down: a Unix socket passing the Docker API through to
/// the real engine, which can refuse every connection (and cut the open ones) at will.
struct DockerGate {
    path: std::path::PathBuf,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>>,
    _dir: tempfile::TempDir,
}

impl DockerGate {
    fn start() -> DockerGate {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (d, o) = (down.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let Ok(engine) = UnixStream::connect("/var/run/docker.sock") else {
                    continue;
                };
                {
                    let mut o = o.lock().unwrap();
                    o.push(client.try_clone().unwrap());
                    o.push(engine.try_clone().unwrap());
                }
                let pipe = |mut from: UnixStream, mut to: UnixStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                };
                pipe(client.try_clone().unwrap(), engine.try_clone().unwrap());
                pipe(engine, client);
            }
        });
        DockerGate {
            path,
            down,
            open,
            _dir: dir,
        }
    }

    fn host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            for s in self.open.lock().unwrap().drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

#[test]
fn a_message_for_a_workspace_that_cannot_start_is_kept_the_sender_told_why_and_delivered_later() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[{"match": {"last_user_contains": "KEPT-MESSAGE"}, "response": [{"text": "Got the kept message."}]}]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let s = Scenario::new(Agent::Claude, &model);
    s.workspace("stuck");
    let conv = s.new_chat("stuck");
    s.ctx.run(&["workspace", "down", "stuck"]).ok();
    let token = s.ctx.run(&["token", "create", "t", "--json"]).ok().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The server reaches Docker through the gate (labelled stand-in for a provider that is
    // down); the CLI goes straight to the engine.
    let gate = DockerGate::start();
    let host = gate.host();
    let server = Server::start_env(
        &s.ctx,
        &[
            ("DOCKER_HOST", host.as_str()),
            ("CLAUDE_VM_WARM_CHECK_SECS", "1"),
        ],
    );
    let api = server.client().bearer(&token);
    gate.set_down(true);
    let r = api.post(
        &format!("/api/v1/conversations/{conv}/messages"),
        &serde_json::json!({"text": "KEPT-MESSAGE please"}),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    let err = r.json();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("the message is kept"),
        "{err}"
    );
    assert!(err["hint"].is_string(), "{err}");
    // The provider comes back: the server starts the workspace and delivers, once.
    std::thread::sleep(Duration::from_secs(3));
    gate.set_down(false);
    let ev = wait_for(&s.ctx, &conv, "the kept message's answer", |e| {
        e["type"] == "assistant" && e["text"] == "Got the kept message."
    });
    let users = ev
        .iter()
        .filter(|e| e["type"] == "user" && e["text"] == "KEPT-MESSAGE please")
        .count();
    assert_eq!(users, 1, "{ev:#?}");
    drop(server);
}

#[test]
fn a_policy_set_while_stopped_reaches_the_daemon_at_its_next_start() {
    let ctx = common::Ctx::new();
    let proj = ctx.path("lazy");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(proj.join("a.txt"), "a\n").unwrap();
    let w = ctx.up(&[proj.to_str().unwrap(), "--name", "lazy"]);
    let id = w["id"].as_str().unwrap().to_owned();
    let kept = || -> serde_json::Value {
        let text = common::dexec(
            &id,
            "cat /workspace/.claude-vm/lifecycle.json 2>/dev/null || echo '{}'",
        );
        serde_json::from_str(text.trim()).unwrap()
    };
    ctx.run(&["workspace", "down", "lazy"]).ok();
    let set = ctx
        .run(&["workspace", "set", "lazy", "--idle-stop", "45m", "--json"])
        .ok()
        .json();
    assert_eq!(set["applied"], false, "{set}");
    ctx.run(&["workspace", "up", "lazy"]).ok();
    assert_eq!(kept()["policy"]["idle_stop_secs"], 2700, "{}", kept());
    // Unchanged, the next start keeps it (the daemon said it started with it).
    ctx.run(&["workspace", "down", "lazy"]).ok();
    ctx.run(&["workspace", "up", "lazy"]).ok();
    assert_eq!(kept()["policy"]["idle_stop_secs"], 2700, "{}", kept());
    // And back to the default (config.yaml's, 30m) while stopped.
    ctx.run(&["workspace", "down", "lazy"]).ok();
    ctx.run(&["workspace", "set", "lazy", "--idle-stop", "default"])
        .ok();
    ctx.run(&["workspace", "up", "lazy"]).ok();
    assert_eq!(kept()["policy"]["idle_stop_secs"], 1800, "{}", kept());
}
