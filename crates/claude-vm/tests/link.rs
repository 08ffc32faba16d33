//! The link and the daemon's exec API, end to end on real containers.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use claude_vm_engine::{Engine, ExecEvent};
use claude_vm_protocol::api::ExecRequest;
use claude_vm_store::Home;
use common::chat::Tmux;
use common::{Ctx, dexec};

fn workspace(ctx: &Ctx, name: &str) -> String {
    let p = ctx.path(name);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("hello.txt"), "hello\n").unwrap();
    let w = ctx.up(&[p.to_str().unwrap(), "--name", name]);
    w["id"].as_str().unwrap().to_owned()
}

/// The runtime the link tests drive the engine with (two workers, as a small machine has).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn engine(ctx: &Ctx) -> Engine {
    Engine::open(Home::at(ctx.home.path()), None).unwrap()
}

/// Run a command over a link, collecting (stdout, stderr, exit code).
async fn run(link: &claude_vm_engine::Link, cmd: &[&str], stdin: &[u8]) -> (Vec<u8>, Vec<u8>, i32) {
    let mut s = link
        .exec(&ExecRequest {
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    s.stdin(stdin).await.unwrap();
    s.close_stdin().await.unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match s.next().await.unwrap() {
            Some(ExecEvent::Stdout(b)) => out.extend_from_slice(&b),
            Some(ExecEvent::Stderr(b)) => err.extend_from_slice(&b),
            Some(ExecEvent::Exit(c)) => return (out, err, c),
            Some(ExecEvent::Error(m)) => panic!("exec error {m}"),
            Some(ExecEvent::Started(_)) => {}
            None => panic!("no exit"),
        }
    }
}

#[test]
fn exec_cli_streams_separately_propagates_codes_and_pipes_stdin() {
    let ctx = Ctx::new();
    workspace(&ctx, "ex");
    let out = ctx.run(&[
        "exec",
        "ex",
        "--",
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 7",
    ]);
    assert_eq!(out.code, 7);
    assert_eq!(out.stdout, "to-out\n");
    assert_eq!(out.stderr, "to-err\n");
    // runs in the project folder, as the agent user
    let who = ctx
        .run(&["exec", "ex", "--", "sh", "-c", "pwd; id -u; cat hello.txt"])
        .ok();
    assert_eq!(who.stdout, "/workspace/ex\n1000\nhello\n");
    // -u -w -e
    let opts = ctx
        .run(&[
            "exec",
            "-u",
            "root",
            "-w",
            "/tmp",
            "-e",
            "GREETING=hi there",
            "ex",
            "--",
            "sh",
            "-c",
            "id -u; pwd; echo $GREETING",
        ])
        .ok();
    assert_eq!(opts.stdout, "0\n/tmp\nhi there\n");
    // not found / not runnable
    let missing = ctx.run(&["exec", "ex", "--", "no-such-program"]);
    assert_eq!(missing.code, 127, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("cannot run no-such-program"),
        "{}",
        missing.stderr
    );
    let bad_dir = ctx.run(&["exec", "-w", "/nope", "ex", "--", "true"]);
    assert_ne!(bad_dir.code, 0);
    assert!(
        bad_dir.stderr.contains("/nope does not exist"),
        "{}",
        bad_dir.stderr
    );
    let bad_user = ctx.run(&["exec", "-u", "nobody-here", "ex", "--", "true"]);
    assert!(
        bad_user.stderr.contains("unknown user"),
        "{}",
        bad_user.stderr
    );

    // 20 MB through stdin and back out, byte-exact.
    let payload: Vec<u8> = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let mut child = ctx
        .command(&["exec", "ex", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = {
        let payload = payload.clone();
        std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &payload).unwrap())
    };
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(output.status.success());
    assert_eq!(output.stdout.len(), payload.len());
    assert!(output.stdout == payload, "payload differs");

    // a stopped workspace is a clear error with --no-start (and started first without)
    ctx.run(&["workspace", "down", "ex"]).ok();
    let stopped = ctx.run(&["--no-start", "exec", "ex", "--", "true"]).fails();
    assert!(
        stopped.stderr.contains("workspace ex is not running"),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("claude-vm workspace up ex"),
        "{}",
        stopped.stderr
    );
}

#[test]
fn exec_with_a_terminal_ctrl_c_and_detach() {
    let ctx = Ctx::new();
    let id = workspace(&ctx, "tty");
    // `script` gives claude-vm a terminal of a known size.
    let bin = ctx.bin.display().to_string();
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("stty rows 33 cols 111; {bin} exec -t tty -- sh -c 'tty; stty size; exit 4'"),
            "/dev/null",
        ])
        .env("CLAUDE_VM_HOME", ctx.home.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("33 111"), "{text}");
    assert_eq!(out.status.code(), Some(4), "{text}");

    // Ctrl-C reaches the remote command, which dies of it; nothing is left running.
    let child = ctx
        .command(&["exec", "tty", "--", "sleep", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dexec(&id, "pgrep -c -f 'slee[p] 300' || true").trim(), "0");

    // Killing the client kills the command unless detached.
    let mut child = ctx
        .command(&["exec", "tty", "--", "sleep", "301"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    let start = Instant::now();
    while dexec(&id, "pgrep -c -f 'slee[p] 301' || true").trim() != "0" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "command outlived its client"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let detached = ctx
        .run(&[
            "exec",
            "-d",
            "tty",
            "--",
            "sh",
            "-c",
            "sleep 2; echo done > /workspace/tty/detached.txt",
        ])
        .ok();
    assert!(
        detached.stderr.contains("keeps running"),
        "{}",
        detached.stderr
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(dexec(&id, "cat /workspace/tty/detached.txt"), "done\n");
}

#[test]
fn one_link_carries_concurrent_requests_and_survives_drops() {
    let ctx = Ctx::new();
    let id = workspace(&ctx, "mux");
    let rt = runtime();
    if std::env::var_os("LINK_DEBUG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,hyper=trace,h2=debug")
            .try_init();
    }
    rt.block_on(async {
        let engine = engine(&ctx);
        let (_, link) = engine.link("mux").await.unwrap();
        // 16 commands at once over one connection, each with its own output.
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let link = link.clone();
                tokio::spawn(async move {
                    let script = format!("sleep 0.5; echo {i}");
                    run(&link, &["sh", "-c", &script], b"").await
                })
            })
            .collect();
        let start = Instant::now();
        for (i, t) in tasks.into_iter().enumerate() {
            let (out, _, code) = t.await.unwrap();
            assert_eq!(code, 0);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{i}\n"));
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not concurrent: {:?}",
            start.elapsed()
        );
        let connects = dexec(&id, "pgrep -c -f 'agent [c]onnect' || true");
        assert_eq!(connects.trim(), "1", "one link, one transport");

        // Kill the transport mid-stream: the request in flight fails (does not hang)...
        let mut s = link
            .exec(&ExecRequest {
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "while true; do echo tick; sleep 0.1; done".into(),
                ],
                ..Default::default()
            })
            .await
            .unwrap();
        let _ = s.next().await.unwrap();
        dexec(&id, "pkill -9 -f 'agent [c]onnect'");
        let failed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match s.next().await {
                    Ok(Some(ExecEvent::Stdout(_) | ExecEvent::Started(_))) => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("in-flight request hung after the link dropped");
        assert!(failed.is_err(), "{failed:?}");
        // ...and the next one reconnects by itself.
        let (out, _, code) = run(&link, &["echo", "again"], b"").await;
        assert_eq!((out, code), (b"again\n".to_vec(), 0));

        // The daemon itself killed: PID 1 restarts it, the link reconnects.
        let pid = dexec(&id, "pgrep -f 'agent [s]erve'");
        dexec(&id, &format!("kill -9 {}", pid.trim()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (out, _, code) = run(&link, &["echo", "back"], b"").await;
        assert_eq!((out, code), (b"back\n".to_vec(), 0));
        let h = link.health().unwrap();
        assert_ne!(h.pid.to_string(), pid.trim());

        // Activity is recorded.
        let activity = link.activity().await.unwrap();
        assert!(activity.last_activity.is_some());
        assert_eq!(activity.last_kind.as_deref(), Some("exec"));
    });
}

#[test]
fn a_terminal_session_follows_window_resizes_and_counts_as_activity() {
    let ctx = Ctx::new();
    workspace(&ctx, "resize");
    let cmd = format!(
        "CLAUDE_VM_HOME={} {} exec -t resize -- sh",
        ctx.home.path().display(),
        ctx.bin.display()
    );
    let term = Tmux::start("resize", 100, 30, &cmd);
    let within = Duration::from_secs(15);
    term.send("stty size");
    term.wait_for("30 100", within);
    term.run(&["resize-window", "-t", &term.name, "-x", "120", "-y", "40"]);
    std::thread::sleep(Duration::from_millis(500));
    term.send("stty size");
    term.wait_for("40 120", within);
    term.send("exit");
    let start = Instant::now();
    while term.alive() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "session did not end"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let listed = ctx.run(&["workspace", "list", "-l", "--json"]).ok().json();
    assert!(listed[0]["last_activity"].is_string(), "{listed}");
    let table = ctx.run(&["workspace", "list", "-l"]).ok();
    assert!(
        table.stdout.contains("LAST ACTIVITY") && table.stdout.contains("s ago"),
        "{}",
        table.stdout
    );
}

/// Stops (SIGSTOP) the daemon of workspace `id` until dropped (SIGCONT), so a failing test
/// does not leave it stopped for the next step.
struct Stopped<'a> {
    id: &'a str,
    pid: String,
}

impl<'a> Stopped<'a> {
    fn daemon(id: &'a str) -> Stopped<'a> {
        let pid = dexec(id, "pgrep -f 'agent [s]erve'").trim().to_owned();
        dexec(id, &format!("kill -STOP {pid}"));
        Stopped { id, pid }
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["exec", &format!("claude-vm-{}", self.id)])
            .args(["kill", "-CONT", &self.pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Regression: the link had no per-request deadline, so an ordinary request to a daemon
/// that is alive but does not answer (stopped here) waited forever.
#[test]
fn no_per_request_deadline_a_request_to_a_stopped_daemon_fails_within_it() {
    use claude_vm_link::{LinkError, Timeouts};
    let ctx = Ctx::new();
    let id = workspace(&ctx, "deadline");
    let rt = runtime();
    rt.block_on(async {
        let engine = engine(&ctx);
        let (_, link) = engine.link("deadline").await.unwrap();
        // Keep-alive far away: only the deadline can end the request.
        let link = link.with_timeouts(Timeouts {
            request: Duration::from_secs(3),
            keep_alive_interval: Duration::from_secs(120),
            keep_alive_timeout: Duration::from_secs(120),
        });
        link.activity().await.unwrap();
        {
            let _stopped = Stopped::daemon(&id);
            let start = Instant::now();
            let err = link.activity().await.unwrap_err();
            let took = start.elapsed();
            assert!(matches!(err, LinkError::Timeout { .. }), "{err:?}");
            assert!(
                took >= Duration::from_secs(3) && took < Duration::from_secs(8),
                "failed after {took:?}"
            );
            let message = err.to_string();
            assert!(
                message.contains("did not answer GET /v1/activity within 3s")
                    && message.contains("stuck"),
                "{message}"
            );
            // A stream's answer is bounded the same way (until its headers).
            let start = Instant::now();
            let err = link
                .exec(&ExecRequest {
                    cmd: vec!["true".into()],
                    ..Default::default()
                })
                .await
                .err()
                .expect("exec on a stopped daemon started");
            assert!(matches!(err, LinkError::Timeout { .. }), "{err:?}");
            assert!(start.elapsed() < Duration::from_secs(8));
        }
        // Continued: the same link works again.
        let activity = tokio::time::timeout(Duration::from_secs(10), link.activity())
            .await
            .expect("hung after SIGCONT");
        activity.unwrap();
        let (out, _, code) = run(&link, &["echo", "back"], b"").await;
        assert_eq!((out, code), (b"back\n".to_vec(), 0));
    });
}

/// Regression: a daemon that is alive but stuck was never detected: a streaming request
/// (an exec, a download, an SSH connection) to it waited forever. Keep-alive pings must
/// fail everything in flight, and the link must reconnect once the daemon is back.
#[test]
fn stuck_daemon_never_detected_keep_alive_fails_streams_and_the_link_recovers() {
    use claude_vm_link::{LinkError, Timeouts};
    let ctx = Ctx::new();
    let id = workspace(&ctx, "stuck");
    let rt = runtime();
    rt.block_on(async {
        let engine = engine(&ctx);
        let (_, link) = engine.link("stuck").await.unwrap();
        let link = link.with_timeouts(Timeouts {
            request: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(1),
            keep_alive_timeout: Duration::from_secs(2),
        });
        // A command that streams its output.
        let mut s = link
            .exec(&ExecRequest {
                cmd: vec!["sh".into(), "-c".into(), "echo started; sleep 60".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        loop {
            match s.next().await.unwrap() {
                Some(ExecEvent::Stdout(_)) => break,
                Some(ExecEvent::Started(_)) => continue,
                other => panic!("{other:?}"),
            }
        }
        {
            let _stopped = Stopped::daemon(&id);
            let start = Instant::now();
            let ended = tokio::time::timeout(Duration::from_secs(20), s.next())
                .await
                .expect("the stream to a stopped daemon hung");
            let took = start.elapsed();
            let err = ended.expect_err("the stream went on");
            assert!(matches!(err, LinkError::Unresponsive { .. }), "{err:?}");
            assert!(took < Duration::from_secs(8), "detected after {took:?}");
            assert!(err.to_string().contains("stopped answering"), "{err}");
            // Still stopped: reconnecting does not hang either.
            let start = Instant::now();
            let err = link.activity().await.unwrap_err();
            assert!(
                matches!(err, LinkError::Timeout { .. } | LinkError::Handshake(_)),
                "{err:?}"
            );
            assert!(start.elapsed() < Duration::from_secs(10));
        }
        // Back: the next request reconnects by itself.
        let (out, _, code) =
            tokio::time::timeout(Duration::from_secs(20), run(&link, &["echo", "again"], b""))
                .await
                .expect("hung after SIGCONT");
        assert_eq!((out, code), (b"again\n".to_vec(), 0));
    });
}
