//! Concurrency, interruption and upgrades: nothing corrupt, nothing left behind.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Ctx, dexec};

fn small_project(ctx: &Ctx, name: &str) -> String {
    let p = ctx.path(name);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("file.txt"), name).unwrap();
    p.display().to_string()
}

#[test]
fn concurrent_cli_calls_do_not_corrupt_state() {
    let ctx = Ctx::new();
    let proj = small_project(&ctx, "p");
    // Four `up`s and a stream of `list`s at once.
    let ups: Vec<_> = (0..4)
        .map(|i| {
            ctx.command(&["workspace", "up", &proj, "--name", &format!("ws-{i}"), "-q"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let lists: Vec<_> = (0..6)
        .map(|_| {
            ctx.command(&["workspace", "list", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in ups {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for c in lists {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .expect("list output is whole JSON");
    }
    let all = ctx.list();
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|w| w["status"] == "running"), "{all:?}");

    // Two racing `up --name same`: exactly one wins, the loser leaves nothing.
    let racers: Vec<_> = (0..2)
        .map(|_| {
            ctx.command(&["workspace", "up", &proj, "--name", "same", "-q"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let results: Vec<_> = racers
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|o| o.status.success()).count(), 1);
    let loser = results.iter().find(|o| !o.status.success()).unwrap();
    assert!(String::from_utf8_lossy(&loser.stderr).contains("already exists"));
    assert_eq!(ctx.list().len(), 5);
    assert_eq!(ctx.docker_debris().len(), 10, "5 containers + 5 volumes");

    // Concurrent down and delete of different workspaces.
    let ops: Vec<_> = (0..4)
        .map(|i| {
            let args = if i % 2 == 0 {
                vec!["workspace".to_owned(), "down".into(), format!("ws-{i}")]
            } else {
                vec![
                    "workspace".to_owned(),
                    "delete".into(),
                    format!("ws-{i}"),
                    "-y".into(),
                ]
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ctx.command(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in ops {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let all = ctx.list();
    let names: Vec<&str> = all.iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(!names.contains(&"ws-1") && !names.contains(&"ws-3"));
}

/// A project big enough that copying it takes a while.
fn big_project(ctx: &Ctx) -> String {
    let p = ctx.path("big");
    std::fs::create_dir_all(&p).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let mut f = std::fs::File::create(p.join("big.bin")).unwrap();
    for _ in 0..400 {
        std::io::Write::write_all(&mut f, &chunk).unwrap();
    }
    p.display().to_string()
}

fn wait_for_container(ctx: &Ctx, deadline: Duration) {
    let start = Instant::now();
    while ctx.docker_debris().is_empty() {
        assert!(start.elapsed() < deadline, "up never created its container");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_interrupted_up_cleans_up_after_itself() {
    let ctx = Ctx::new();
    let proj = big_project(&ctx);
    let child = ctx
        .command(&["workspace", "up", &proj])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_container(&ctx, Duration::from_secs(30));
    nix_kill(child.id(), "INT");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(ctx.list().is_empty());
    assert!(ctx.docker_debris().is_empty(), "{:?}", ctx.docker_debris());
}

#[test]
fn an_up_killed_outright_shows_as_error_and_delete_cleans_it() {
    let ctx = Ctx::new();
    let proj = big_project(&ctx);
    let mut child = ctx
        .command(&["workspace", "up", &proj, "--name", "killed"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_container(&ctx, Duration::from_secs(30));
    child.kill().unwrap();
    child.wait().unwrap();
    let listed = ctx.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "error");
    assert!(
        listed[0]["status_reason"]
            .as_str()
            .unwrap()
            .contains("creation was interrupted"),
        "{listed:?}"
    );
    let table = ctx.run(&["workspace", "list"]).ok();
    assert!(
        table.stdout.contains("error (creation was interrupted"),
        "{}",
        table.stdout
    );
    let up = ctx.run(&["workspace", "up", "killed"]).fails();
    assert!(
        up.stderr.contains("claude-vm workspace delete killed"),
        "{}",
        up.stderr
    );
    ctx.run(&["workspace", "delete", "killed", "-y"]).ok();
    assert!(ctx.list().is_empty());
    assert!(ctx.docker_debris().is_empty(), "{:?}", ctx.docker_debris());
}

fn nix_kill(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// A copy of the binary with a chosen mtime: to claude-vm, a different build.
fn binary_copy(ctx: &Ctx, name: &str, mtime: &str) -> std::path::PathBuf {
    let dest = ctx.path(name);
    std::fs::copy(&ctx.bin, &dest).unwrap();
    assert!(
        Command::new("touch")
            .args(["-d", mtime])
            .arg(&dest)
            .status()
            .unwrap()
            .success()
    );
    dest
}

fn fingerprint_in(id: &str) -> String {
    let out = dexec(id, "/opt/claude-vm/bin/claude-vm agent health --wait 5");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["fingerprint"].as_str().unwrap().to_owned()
}

#[test]
fn a_different_build_replaces_the_binary_in_the_workspace() {
    let mut ctx = Ctx::new();
    let proj = small_project(&ctx, "p");
    let old = binary_copy(&ctx, "claude-vm-old", "2020-01-01 00:00:00");
    let new = binary_copy(&ctx, "claude-vm-new", "2021-01-01 00:00:00");
    ctx.bin = old.clone();
    let w = ctx.up(&[&proj, "--name", "upgrade"]);
    let id = w["id"].as_str().unwrap().to_owned();
    let fp_old = fingerprint_in(&id);
    assert!(fp_old.ends_with(&format!("-{}", 1577836800)), "{fp_old}");

    // Running workspace, newer CLI: `up` replaces the binary and restarts the daemon.
    ctx.bin = new.clone();
    let out = ctx.run(&["workspace", "up", "upgrade"]).ok();
    assert!(
        out.stderr.contains("installing this claude-vm"),
        "{}",
        out.stderr
    );
    let fp_new = fingerprint_in(&id);
    assert!(fp_new.ends_with(&format!("-{}", 1609459200)), "{fp_new}");

    // Stopped workspace, other CLI: resume installs it before starting.
    ctx.run(&["workspace", "down", "upgrade"]).ok();
    ctx.bin = old;
    let out = ctx.run(&["workspace", "up", "upgrade"]).ok();
    assert!(out.stderr.contains("replacing it"), "{}", out.stderr);
    assert_eq!(fingerprint_in(&id), fp_old);
    // Same build again: nothing to install.
    ctx.run(&["workspace", "down", "upgrade"]).ok();
    let out = ctx.run(&["workspace", "up", "upgrade"]).ok();
    assert!(
        !out.stderr.contains("installing") && !out.stderr.contains("replacing"),
        "{}",
        out.stderr
    );
}
