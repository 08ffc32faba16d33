//! The workspace daemon: PID 1, handshake, reaping, restart after a crash, clean stop.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Ctx, dexec};

fn health(id: &str) -> serde_json::Value {
    serde_json::from_str(&dexec(
        id,
        "/opt/claude-vm/bin/claude-vm agent health --wait 10",
    ))
    .unwrap()
}

#[test]
fn the_daemon_answers_reaps_orphans_restarts_and_stops_cleanly() {
    let ctx = Ctx::new();
    let p = ctx.path("p");
    std::fs::create_dir_all(&p).unwrap();
    let w = ctx.up(&[p.to_str().unwrap()]);
    let id = w["id"].as_str().unwrap().to_owned();

    // PID 1 is the supervisor; the daemon answers on its socket.
    let ps = dexec(&id, "ps -eo pid,args");
    assert!(
        ps.contains("1 /opt/claude-vm/bin/claude-vm agent init"),
        "{ps}"
    );
    let h = health(&id);
    assert_eq!(h["name"], "claude-vm");
    assert_eq!(h["protocol"], 1);
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    // The socket is root-only: agents run unprivileged.
    assert_eq!(
        dexec(&id, "stat -c %a /run/claude-vm/daemon.sock").trim(),
        "600"
    );
    // State and logs live on the volume.
    assert!(dexec(&id, "cat /workspace/.claude-vm/logs/daemon.log").contains("daemon ready"));

    // Orphans are reaped: a double-forked child dies, no zombie remains.
    dexec(&id, "sh -c 'sleep 0.2 &' ; true");
    std::thread::sleep(Duration::from_millis(600));
    let zombies = dexec(&id, "ps -eo stat,args | awk '$1 ~ /^Z/' ");
    assert_eq!(zombies.trim(), "", "zombies: {zombies}");

    // kill -9 the daemon: PID 1 restarts it.
    let old_pid = h["pid"].as_u64().unwrap();
    dexec(&id, &format!("kill -9 {old_pid}"));
    common::wait_daemon(&id, Some(old_pid));
    assert_eq!(ctx.list()[0]["status"], "running");

    // A graceful stop is quick (the daemon handles SIGTERM), not a 10 s kill.
    let t = Instant::now();
    ctx.run(&["workspace", "down", &id]).ok();
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "stop took {:?}",
        t.elapsed()
    );
    let code = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.ExitCode}}",
            &format!("claude-vm-{id}"),
        ])
        .output()
        .unwrap();
    // 128 + SIGTERM: a stopped workspace is told apart from one that stopped itself for
    // idleness (0), and Docker's on-failure policy restarts it after a host's Docker
    // restarts, never after a stop by hand.
    assert_eq!(String::from_utf8_lossy(&code.stdout).trim(), "143");
}

#[test]
fn init_retries_a_failed_restart_of_the_daemon() {
    let ctx = Ctx::new();
    let p = ctx.path("p");
    std::fs::create_dir_all(&p).unwrap();
    let w = ctx.up(&[p.to_str().unwrap()]);
    let id = w["id"].as_str().unwrap().to_owned();
    let old_pid = health(&id)["pid"].as_u64().unwrap();
    // The binary is this machine's copy, shared read-only (not copied into the workspace).
    let mounts = dexec(&id, "cat /proc/mounts");
    assert!(
        mounts
            .lines()
            .any(|l| l.split(' ').nth(1) == Some("/opt/claude-vm/bin") && l.contains(" ro,")),
        "{mounts}"
    );
    let shared = ctx.home.path().join("runtime/claude-vm");
    let aside = ctx.home.path().join("runtime/aside");
    // The binary is gone when the daemon dies: the restart fails, and no child is left to
    // wake PID 1 up again.
    std::fs::rename(&shared, &aside).unwrap();
    dexec(&id, &format!("kill -9 {old_pid}"));
    std::thread::sleep(Duration::from_secs(2));
    std::fs::rename(&aside, &shared).unwrap();
    // PID 1 keeps trying and starts it once the binary is back.
    let h = health(&id);
    assert_ne!(h["pid"].as_u64(), Some(old_pid));
    let log = Command::new("docker")
        .args(["logs", &format!("claude-vm-{id}")])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&log.stderr);
    assert!(log.contains("cannot restart the daemon"), "{log}");
    assert!(log.contains("daemon restarted"), "{log}");
    ctx.run(&["exec", &id, "--", "true"]).ok();
}
