//! An agent is hostile to the root daemon: nothing it can write lets it become root.

mod common;

use std::process::Command;

use common::{Ctx, daemon_pid, dexec, wait_daemon};

/// `docker exec` as the agent user; returns (exit code, stdout+stderr).
fn as_agent(id: &str, script: &str) -> (i32, String) {
    let out = Command::new("docker")
        .args([
            "exec",
            "-u",
            "1000:1000",
            &format!("claude-vm-{id}"),
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// kill -9 the daemon and wait for PID 1 to start a new one.
fn restart_daemon(id: &str) {
    let old = daemon_pid(id).expect("daemon answers");
    dexec(id, &format!("kill -9 {old}"));
    wait_daemon(id, Some(old));
}

#[test]
fn an_agent_cannot_become_root_through_the_state_folder() {
    let ctx = Ctx::new();
    let p = ctx.path("proj");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("f.txt"), "x").unwrap();
    let w = ctx.up(&[p.to_str().unwrap()]);
    let id = w["id"].as_str().unwrap().to_owned();

    // The volume's root is root's (group agent, sticky); the state folder root-only.
    assert_eq!(
        dexec(&id, "stat -c '%u %g %a' /workspace /workspace/.claude-vm").trim(),
        "0 1000 1775\n0 0 700"
    );
    // The agent owns its project and may write beside it...
    let (code, out) = as_agent(
        &id,
        "touch /workspace/proj/new /workspace/beside && mkdir /workspace/scratch",
    );
    assert_eq!(code, 0, "{out}");
    // ...but can neither rename, remove nor replace the state folder.
    for attack in [
        "mv /workspace/.claude-vm /workspace/stolen",
        "rm -rf /workspace/.claude-vm",
        "ln -sfn /tmp /workspace/.claude-vm",
        "mv /workspace/scratch /workspace/.claude-vm",
        "ls /workspace/.claude-vm",
    ] {
        let (code, out) = as_agent(&id, attack);
        assert_ne!(code, 0, "{attack} succeeded: {out}");
    }
    assert_eq!(
        dexec(&id, "stat -c '%u %a' /workspace/.claude-vm").trim(),
        "0 700"
    );

    // A volume from an earlier release, where the agent owned /workspace and could swap the
    // state folder: it moves the real one away and plants its own, with a log symlink into
    // root's shell startup file, a hand-over list naming the real state folder (SSH host key
    // inside) and a folder whose name is a shell command.
    dexec(&id, "chown 1000:1000 /workspace && chmod 755 /workspace");
    let (code, out) = as_agent(
        &id,
        r#"set -e
cd /workspace
mv .claude-vm real
mkdir -p .claude-vm/logs
ln -s /root/.profile .claude-vm/logs/daemon.log
ln -s /root/pwned-activity .claude-vm/activity.json
printf 'real\nreal/ssh\n' > .claude-vm/chown-tree
mkdir "$(printf 'x\ncd;id>pwned\n')"
"#,
    );
    assert_eq!(code, 0, "{out}");
    let profile_before = dexec(&id, "cat /root/.profile 2>/dev/null || true");
    restart_daemon(&id);

    // The daemon refused the planted folder, took /workspace back, and followed nothing.
    assert_eq!(
        dexec(&id, "stat -c '%u %g %a' /workspace /workspace/.claude-vm").trim(),
        "0 1000 1775\n0 0 700"
    );
    assert_eq!(
        dexec(&id, "cat /root/.profile 2>/dev/null || true"),
        profile_before,
        "the daemon wrote through a planted symlink"
    );
    assert_eq!(
        dexec(
            &id,
            "ls /root/pwned /root/pwned-activity 2>/dev/null | wc -l"
        )
        .trim(),
        "0"
    );
    assert_eq!(
        dexec(&id, "stat -c %u /workspace/real /workspace/real/ssh").trim(),
        "0\n0",
        "a planted hand-over list gave root's files to the agent"
    );
    let aside = dexec(&id, "ls -d /workspace/.claude-vm.untrusted-* | wc -l");
    assert_eq!(
        aside.trim(),
        "1",
        "the planted folder is kept aside, unused"
    );
    assert_eq!(
        dexec(&id, "stat -c '%F %u' /workspace/.claude-vm/logs/daemon.log").trim(),
        "regular file 0"
    );
    // Every line of the log is one record: no line starts with the planted command.
    let log = dexec(&id, "cat /workspace/.claude-vm/logs/daemon.log");
    assert!(!log.lines().any(|l| l.starts_with("cd;id")), "{log}");
    // And the workspace still works.
    let out = ctx.run(&["exec", &id, "--", "cat", "f.txt"]).ok();
    assert_eq!(out.stdout, "x");
    let (code, _) = as_agent(&id, "mv /workspace/.claude-vm /workspace/stolen");
    assert_ne!(code, 0);
}
