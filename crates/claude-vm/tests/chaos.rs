//! Chaos: kill -9 of the CLI, the daemon, `agent connect` and the server at random points of
//! `up`, `down`, `chat send`, a streamed exec and an upload, several rounds each. Afterwards
//! no acknowledged message is lost or duplicated, no workspace is stuck in `creating`,
//! nothing is left behind, and the next command works.
//!
//! Rounds are bounded (the whole file runs in a few minutes); `CLAUDE_VM_CHAOS_ROUNDS` raises
//! them for longer runs. Each test prints its seed: `CLAUDE_VM_CHAOS_SEED` replays one.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use claude_vm_testkit::{Script, ScriptedModel};
use common::chat::{ctx_with_claude, events, git_project, status};
use common::http::Server;
use common::{Ctx, dexec, wait_daemon};
use rand::{Rng, SeedableRng};

fn rounds(default: usize) -> usize {
    std::env::var("CLAUDE_VM_CHAOS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rng(test: &str) -> rand::rngs::StdRng {
    let seed = std::env::var("CLAUDE_VM_CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: seed {seed} (CLAUDE_VM_CHAOS_SEED={seed} replays it)");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// No workspace of this home shows `creating`; every one answers `list`.
#[track_caller]
fn nothing_stuck(ctx: &Ctx) -> Vec<serde_json::Value> {
    let all = ctx.list();
    for w in &all {
        assert_ne!(w["status"], "creating", "stuck: {w}");
    }
    all
}

fn kill_in_container(id: &str, pattern: &str) {
    let _ = Command::new("docker")
        .args([
            "exec",
            &format!("claude-vm-{id}"),
            "pkill",
            "-9",
            "-f",
            pattern,
        ])
        .output();
}

/// `claude-vm exec chaos -- sh -c SCRIPT`, its output piped.
fn spawn_exec(ctx: &Ctx, script: &str) -> std::process::Child {
    ctx.command(&["exec", "chaos", "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn the_cli_killed_during_up_and_down_leaves_nothing_stuck_or_behind() {
    let mut rng = rng("up/down");
    let ctx = Ctx::new();
    let p = ctx.path("proj");
    std::fs::create_dir_all(&p).unwrap();
    // Big enough that the copy takes a moment, so kills land in every step of `up`.
    let mut blob = vec![0u8; 8 << 20];
    rng.fill(&mut blob[..]);
    std::fs::write(p.join("blob.bin"), &blob).unwrap();
    std::fs::write(p.join("f.txt"), "x").unwrap();
    let proj = p.to_str().unwrap();
    let n = rounds(4);
    for round in 0..n {
        let name = format!("up-{round}");
        let mut child = ctx
            .command(&["workspace", "up", proj, "--name", &name, "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let after = Duration::from_millis(rng.random_range(0..2500));
        std::thread::sleep(after);
        let _ = child.kill();
        let _ = child.wait();
        // Whatever it reached, nothing is left `creating`, and the next command works: a
        // workspace that came up is used, one that did not is deleted without debris.
        let all = nothing_stuck(&ctx);
        match all.iter().find(|w| w["name"] == name.as_str()) {
            Some(w) if w["status"] == "running" => {
                let out = ctx.run(&["exec", &name, "--", "cat", "f.txt"]).ok();
                assert_eq!(out.stdout, "x");
            }
            Some(w) => {
                eprintln!("round {round}: killed after {after:?}: {}", w["status"]);
                ctx.run(&["workspace", "delete", "-y", &name]).ok();
            }
            None => eprintln!("round {round}: killed after {after:?}, before it was recorded"),
        }
    }
    // `down` killed at random points: the next `up` brings it back with every byte.
    let w = ctx.up(&[proj, "--name", "downs"]);
    let id = w["id"].as_str().unwrap().to_owned();
    for round in 0..n {
        let mut child = ctx
            .command(&["workspace", "down", "downs"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
        let _ = child.kill();
        let _ = child.wait();
        nothing_stuck(&ctx);
        ctx.run(&["workspace", "up", "downs", "-q"]).ok();
        let sum = dexec(&id, "sha256sum /workspace/proj/blob.bin | cut -d' ' -f1");
        assert_eq!(sum.trim().len(), 64, "round {round}");
    }
    // Delete everything: nothing of this home remains in Docker.
    for w in ctx.list() {
        ctx.run(&["workspace", "delete", "-y", w["id"].as_str().unwrap()])
            .ok();
    }
    assert_eq!(ctx.docker_debris(), Vec::<String>::new());
}

#[test]
fn acknowledged_messages_survive_kills_of_the_daemon_and_the_link() {
    let mut rng = rng("chat");
    // Every message answered "ok" at once.
    let model = ScriptedModel::start(Script::from_json("[]").unwrap()).unwrap();
    let ctx = ctx_with_claude(&model.url(), "sk-test-chaos");
    let w = ctx.up(&[git_project(&ctx).to_str().unwrap(), "--name", "chaos"]);
    let id = w["id"].as_str().unwrap().to_owned();
    let conv = ctx
        .run(&["new-chat", "chaos"])
        .ok()
        .stdout
        .trim()
        .to_owned();

    let n = rounds(4) * 4;
    let mut acked = Vec::new();
    let mut refused = 0;
    let mut exec_ok = 0;
    let mut exec_cut = 0;
    for i in 0..n {
        let text = format!("chaos message {i:03}");
        // A kill lands somewhere during this send.
        let victim = if rng.random_bool(0.5) {
            "agent serve"
        } else {
            "agent connect"
        };
        let delay = Duration::from_millis(rng.random_range(0..400));
        let send = ctx
            .command(&["chat", "send", "-c", &conv, &text])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // One streamed exec in flight when the kill lands: it ends, saying why.
        let cut = spawn_exec(&ctx, "echo started; sleep 2; echo done");
        std::thread::sleep(delay);
        kill_in_container(&id, victim);
        // A streamed exec started while the daemon or the link is coming back: it either
        // runs whole or says why it could not.
        let exec = spawn_exec(
            &ctx,
            "for i in $(seq 20); do echo line $i; sleep 0.02; done",
        );
        let started = Instant::now();
        let out = send.wait_with_output().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a send hung after a kill"
        );
        if out.status.success() {
            acked.push(text);
        } else {
            // Refused: said so, clearly, in one line.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("error"), "a failed send said nothing: {err}");
            refused += 1;
        }
        let out = cut.wait_with_output().unwrap();
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("error"),
                "an exec cut by a kill said nothing: {err}"
            );
            exec_cut += 1;
        }
        let out = exec.wait_with_output().unwrap();
        if out.status.success() {
            // A stream that finished is whole.
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(text.lines().count(), 20, "{text}");
            exec_ok += 1;
        } else {
            // One cut by the kill says what happened; it never hangs (it ended to get here).
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("error"), "a broken exec said nothing: {err}");
        }
        wait_daemon(&id, None);
    }
    // Every acknowledged message reaches the transcript exactly once, and is answered.
    let start = Instant::now();
    loop {
        let st = status(&ctx, &conv);
        let ev = events(&ctx, &conv);
        let users: Vec<String> = ev
            .iter()
            .filter(|e| e["type"] == "user")
            .filter_map(|e| e["text"].as_str().map(str::to_owned))
            // The daemon's own notes after a restart are not messages of this test.
            .filter(|t| t.starts_with("chaos message"))
            .collect();
        let all_there = acked.iter().all(|t| users.contains(t));
        if all_there && st == "idle" {
            for t in &acked {
                assert_eq!(
                    users.iter().filter(|u| *u == t).count(),
                    1,
                    "{t} duplicated"
                );
            }
            for u in &users {
                assert!(
                    users.iter().filter(|x| *x == u).count() == 1,
                    "{u} recorded twice"
                );
            }
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "acknowledged messages missing (status {st}): {:?}",
            acked
                .iter()
                .filter(|t| !users.contains(t))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "chat chaos: {n} rounds, {} acknowledged (none lost, none duplicated), {refused} refused; execs started after the kill: {exec_ok} whole; execs in flight: {exec_cut} cut with an error",
        acked.len()
    );
    // The next command works.
    ctx.run(&["chat", "send", "-c", &conv, "after the storm", "--wait"])
        .ok();
}

#[test]
fn the_server_killed_during_an_upload_leaves_nothing_stuck_or_behind() {
    let mut rng = rng("upload");
    let ctx = Ctx::new();
    let token = ctx.run(&["token", "create", "t", "--json"]).ok().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    // A tar stream of a 16 MiB project.
    let p = ctx.path("up");
    std::fs::create_dir_all(&p).unwrap();
    let mut blob = vec![0u8; 16 << 20];
    rng.fill(&mut blob[..]);
    std::fs::write(p.join("blob.bin"), &blob).unwrap();
    let tar = Command::new("tar")
        .args(["-C", p.to_str().unwrap(), "-cf", "-", "."])
        .output()
        .unwrap()
        .stdout;
    let mut server = Server::start(&ctx);
    for round in 0..rounds(3) {
        let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        let head = format!(
            "POST /api/v1/workspaces?project=up&name=upload-{round} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            server.port,
            tar.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        // Send part of the body (or all of it), then kill the server.
        let cut = rng.random_range(0..=tar.len());
        let _ = s.write_all(&tar[..cut]);
        if cut == tar.len() {
            std::thread::sleep(Duration::from_millis(rng.random_range(0..3000)));
        }
        server.kill();
        drop(s);
        server.spawn();
        let all = nothing_stuck(&ctx);
        eprintln!(
            "upload round {round}: cut at {cut}/{} bytes: {:?}",
            tar.len(),
            all.iter().map(|w| w["status"].clone()).collect::<Vec<_>>()
        );
        for w in all {
            ctx.run(&["workspace", "delete", "-y", w["id"].as_str().unwrap()])
                .ok();
        }
        assert_eq!(ctx.docker_debris(), Vec::<String>::new(), "round {round}");
    }
    // The next upload works.
    let r = server.client().bearer(&token).request(
        "POST",
        "/api/v1/workspaces?project=up&name=after",
        &[("Content-Type", "application/x-tar")],
        &tar,
    );
    assert!(r.status < 300, "{} {}", r.status, r.text());
}
