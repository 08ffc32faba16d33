//! Backups end to end: real workspaces (Docker), a real restic-format repository on disk
//! and on a real S3 server (`weed mini`), the real `restic` CLI reading what claude-vm
//! wrote, a real Claude Code conversation that resumes after a restore, and every fault the
//! repository can show.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use claude_vm_testkit::{Script, ScriptedModel};
use common::chat::{ctx_with_claude, git_project, send_wait, wait_for};
use common::s3::{S3Server, restic};
use common::{Ctx, dexec, git};

/// The LAST BACKUP cell of `workspace list -l` for workspace `name`.
fn last_backup_cell(ctx: &Ctx, name: &str) -> String {
    let out = ctx.run(&["workspace", "list", "-l"]).ok().stdout;
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    let start = header.find("LAST BACKUP").expect("a LAST BACKUP column");
    // It ends where the next column starts.
    let after = start + "LAST BACKUP".len();
    let end = header[after..]
        .find(|c: char| c != ' ')
        .map_or(header.len(), |i| after + i);
    let row = lines
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no row for {name} in {out}"));
    row.get(start..end.min(row.len()))
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// Append `yaml` (top-level keys) to the home's config.yaml.
fn configure(ctx: &Ctx, yaml: &str) {
    let p = ctx.home.path().join("config.yaml");
    let mut cfg = std::fs::read_to_string(&p).unwrap_or_default();
    if cfg.is_empty() {
        cfg = format!("default_image: {}\n", common::test_image());
    }
    cfg.push_str(yaml);
    std::fs::write(p, cfg).unwrap();
}

fn s3_config(s3: &S3Server, prefix: &str) -> String {
    format!(
        "backup:\n  repository: s3://{}/{prefix}\n  s3:\n    endpoint: {}\n    access_key_id: {}\n    secret_access_key: {}\n",
        s3.bucket(),
        s3.endpoint(),
        s3.access_key(),
        s3.secret_key()
    )
}

/// What a tree holds, as text: every entry's path, type, mode and link target, and every
/// file's checksum; `ignored` paths left out. The same commands run inside a workspace and
/// here, so the texts compare byte for byte.
const TREE_SCRIPT: &str = r#"cd "$1" && find . -path ./node_modules -prune -o -printf '%p %y %m %l\n' | LC_ALL=C sort && find . -path ./node_modules -prune -o -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum"#;

fn tree_in_workspace(ctx: &Ctx, ws: &str, dir: &str) -> String {
    let out = ctx
        .run(&[
            "exec",
            ws,
            "--user",
            "root",
            "--",
            "sh",
            "-c",
            TREE_SCRIPT,
            "sh",
            dir,
        ])
        .ok();
    out.stdout
}

fn tree_here(dir: &Path) -> String {
    let out = Command::new("sh")
        .args(["-c", TREE_SCRIPT, "sh"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn snapshot_of(run: common::Run) -> String {
    run.ok().json()["snapshot"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn restic_env(ctx: &Ctx) -> Vec<(String, String)> {
    let env = ctx.run(&["backup", "env"]).ok().stdout;
    env.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

fn with_cache(env: &[(String, String)], cache: &Path) -> Vec<(String, String)> {
    let mut e = env.to_vec();
    e.push(("RESTIC_CACHE_DIR".into(), cache.display().to_string()));
    e
}

fn restic_with(env: &[(String, String)], args: &[&str]) -> std::process::Output {
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    restic(args, &refs)
}

#[test]
fn a_workspace_survives_delete_through_its_backup_and_restic_reads_it() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "code word is MANGO"},
               "response": [{"tool_use": {"name": "Write", "input": {"file_path": "/workspace/proj/notes.txt", "content": "the code word\n"}}}]},
              {"match": {"after_tool_result_contains": "notes.txt"}, "response": [{"text": "Noted, and wrote notes.txt."}]},
              {"match": {"last_user_contains": "what was the code word", "contains": "MANGO"}, "response": [{"text": "It was MANGO."}]},
              {"match": {"last_user_contains": "what was the code word"}, "response": [{"text": "I do not remember."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let ctx = ctx_with_claude(&model.url(), "sk-test-backups");
    let proj = git_project(&ctx);
    // Tracked, untracked binary, a symlink, modes, an ignored folder.
    let blob: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(proj.join("data.bin"), &blob).unwrap();
    std::fs::write(proj.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(proj.join("private key.txt"), "secret-ish\n").unwrap();
    std::os::unix::fs::symlink("README.md", proj.join("readme-link")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(proj.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        proj.join("private key.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(proj.join(".gitignore"), "node_modules/\n").unwrap();
    git(&proj, &["add", ".gitignore", "run.sh"]);
    git(&proj, &["commit", "-q", "-m", "more"]);
    let ws = ctx.up(&[proj.to_str().unwrap(), "--name", "keeper"]);
    let old_id = ws["id"].as_str().unwrap().to_owned();
    // Made inside: an empty folder, an ignored folder, an uncommitted change.
    ctx.run(&["exec", "keeper", "--", "sh", "-c", "mkdir -p empty/inner node_modules/pkg && echo big > node_modules/pkg/index.js && echo changed >> README.md"]).ok();

    let conv = ctx
        .run(&["new-chat", "keeper"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert_eq!(
        send_wait(&ctx, &conv, "the code word is MANGO; write it down"),
        "Noted, and wrote notes.txt."
    );
    let before = tree_in_workspace(&ctx, "keeper", "/workspace/proj");
    assert!(before.contains("./notes.txt f 644"), "{before}");
    assert!(before.contains("./empty/inner d"), "{before}");
    assert!(before.contains("./readme-link l 777 README.md"), "{before}");
    assert!(!before.contains("node_modules"));

    assert_eq!(last_backup_cell(&ctx, "keeper"), "-");
    let snap = snapshot_of(ctx.run(&["workspace", "backup", "keeper", "--json"]));
    let cell = last_backup_cell(&ctx, "keeper");
    assert!(cell.ends_with("s ago"), "{cell:?}");
    // Nothing changed since: that snapshot stands, none is written.
    let again = ctx
        .run(&["workspace", "backup", "keeper", "--json"])
        .ok()
        .json();
    assert_eq!(again["unchanged"], true, "{again}");
    assert_eq!(again["snapshot"]["id"], snap.as_str());
    let plain = ctx.run(&["workspace", "backup", "keeper"]).ok();
    assert_eq!(plain.stdout.trim(), snap);
    assert!(plain.stderr.contains("unchanged since"), "{}", plain.stderr);
    // The agent's session files are on the volume, so in the snapshot.
    let sessions = dexec(&old_id, "ls /workspace/.home/.claude/projects/ | head -1");
    assert!(
        !sessions.trim().is_empty(),
        "Claude Code keeps its sessions under ~/.claude"
    );

    // Delete keeps the backups and says so; `up` of the old name says how to restore.
    let del = ctx.run(&["workspace", "delete", "keeper", "-y"]).ok();
    assert!(del.stderr.contains("backups are kept"), "{}", del.stderr);
    assert!(
        del.stderr.contains("workspace restore keeper"),
        "{}",
        del.stderr
    );
    let up = ctx.run(&["workspace", "up", "keeper"]).fails();
    assert!(up.stderr.contains("was deleted"), "{}", up.stderr);
    assert!(
        up.stderr.contains("claude-vm workspace restore keeper"),
        "{}",
        up.stderr
    );
    let listed = ctx.run(&["backup", "list", "keeper", "--json"]).ok().json();
    let listed = listed.as_array().unwrap();
    assert!(listed.iter().any(|s| s["id"] == snap.as_str()));
    assert_eq!(listed.last().unwrap()["workspace_id"], old_id.as_str());

    // Restore: the same files byte for byte, the conversation listed and remembering.
    let restored = ctx
        .run(&["workspace", "restore", "keeper", "--json"])
        .ok()
        .json();
    assert_eq!(restored["workspace"]["name"], "keeper");
    assert_ne!(restored["workspace"]["id"], old_id.as_str());
    assert_eq!(tree_in_workspace(&ctx, "keeper", "/workspace/proj"), before);
    let convs = ctx
        .run(&["chat", "list", "-w", "keeper", "--json"])
        .ok()
        .json();
    assert!(
        convs
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == conv.as_str()),
        "{convs:#}"
    );
    assert_eq!(
        send_wait(&ctx, &conv, "what was the code word?"),
        "It was MANGO.",
        "the restored conversation lost its context"
    );
    wait_for(&ctx, &conv, "the earlier turn", |e| {
        e["type"] == "assistant" && e["text"] == "Noted, and wrote notes.txt."
    });

    // The real restic CLI lists the snapshot and restores the same tree.
    let cache = tempfile::tempdir().unwrap();
    let env = with_cache(&restic_env(&ctx), cache.path());
    let out = restic_with(&env, &["snapshots", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = snaps
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == snap.as_str())
        .expect("restic lists claude-vm's snapshot");
    assert!(
        ours["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == format!("ws:{old_id}").as_str()),
        "{ours:#}"
    );
    let target = tempfile::tempdir().unwrap();
    let out = restic_with(
        &env,
        &[
            "restore",
            &snap,
            "--target",
            target.path().to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree_here(&target.path().join("workspace/proj")), before);

    // Export and import: one archive, the same tree again.
    let file = ctx.path("keeper.tar");
    ctx.run(&[
        "workspace",
        "export",
        "keeper",
        "-o",
        file.to_str().unwrap(),
    ])
    .ok();
    ctx.run(&[
        "workspace",
        "import",
        file.to_str().unwrap(),
        "--name",
        "keeper-copy",
    ])
    .ok();
    assert_eq!(
        tree_in_workspace(&ctx, "keeper-copy", "/workspace/proj"),
        before
    );
    // An archive that is not an export is refused, and nothing is made.
    std::fs::write(ctx.path("junk.tar"), b"not a tar").unwrap();
    let bad = ctx
        .run(&[
            "workspace",
            "import",
            ctx.path("junk.tar").to_str().unwrap(),
        ])
        .fails();
    assert!(
        bad.stderr.contains("not a claude-vm export"),
        "{}",
        bad.stderr
    );
    assert_eq!(ctx.list().len(), 2);
}

#[test]
fn long_backups_and_restores_show_their_progress_on_a_terminal() {
    let ctx = Ctx::new();
    configure(&ctx, "");
    let proj = git_project(&ctx);
    ctx.up(&[proj.to_str().unwrap(), "--name", "slow"]);
    // 200 MB of bytes that do not compress: seconds of work on either side.
    ctx.run(&[
        "exec",
        "slow",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4; do head -c 50000000 /dev/urandom > data$i.bin; done",
    ])
    .ok();
    let shell = |args: &str| {
        format!(
            "CLAUDE_VM_HOME={} NO_COLOR=1 {} {args}; echo exit=$?; sleep 60",
            ctx.home.path().display(),
            ctx.bin.display()
        )
    };
    // The bar: bytes done of the total, throughput; the line above it names the files.
    let term =
        common::chat::Tmux::start("backup-progress", 160, 30, &shell("workspace backup slow"));
    let during = term.wait_for("B/s", Duration::from_secs(120));
    assert!(during.contains("files, "), "{during}");
    // Bytes done of the total (which is in MiB: the bar may still count KiB done).
    assert!(during.contains(" MiB"), "{during}");
    let after = term.wait_for("exit=0", Duration::from_secs(300));
    assert!(after.contains("backed up slow"), "{after}");
    // A finished bar is cleared, not left behind.
    assert!(!after.contains("B/s"), "{after}");
    drop(term);
    let term = common::chat::Tmux::start(
        "restore-progress",
        160,
        30,
        &shell("workspace restore slow --name slow-again"),
    );
    let during = term.wait_for("B/s", Duration::from_secs(120));
    assert!(during.contains("restor"), "{during}");
    let after = term.wait_for("exit=0", Duration::from_secs(300));
    assert!(!after.contains("B/s"), "{after}");
    drop(term);
    // Not on a terminal (and with -q): no bar at all.
    let plain = ctx.run(&["workspace", "backup", "slow"]).ok();
    assert!(!plain.stderr.contains("B/s"), "{}", plain.stderr);
    assert!(
        ctx.run(&["workspace", "backup", "slow", "-q"])
            .ok()
            .stderr
            .is_empty()
    );
}

#[test]
fn twenty_change_and_backup_cycles_restore_first_and_last_and_forget_keeps_the_newest() {
    let ctx = Ctx::new();
    configure(&ctx, "");
    let proj = git_project(&ctx);
    let big: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2246822519) >> 9) as u8)
        .collect();
    std::fs::write(proj.join("big.bin"), &big).unwrap();
    ctx.up(&[proj.to_str().unwrap(), "--name", "cycles"]);
    let first = snapshot_of(ctx.run(&["workspace", "backup", "cycles", "--json"]));
    let first_tree = tree_in_workspace(&ctx, "cycles", "/workspace/proj");
    let mut last = String::new();
    for i in 1..20 {
        ctx.run(&[
            "exec",
            "cycles",
            "--",
            "sh",
            "-c",
            &format!("echo round {i} >> log.txt && echo {i} > file-{i}.txt"),
        ])
        .ok();
        let out = ctx
            .run(&["workspace", "backup", "cycles", "--json"])
            .ok()
            .json();
        // Incremental: a small change adds little (the 2 MB file is not sent again).
        let added = out["snapshot"]["bytes_added"].as_u64().unwrap();
        assert!(added < 200_000, "round {i} added {added} bytes");
        assert!(out["snapshot"]["files_unmodified"].as_u64().unwrap() > 3);
        last = out["snapshot"]["id"].as_str().unwrap().to_owned();
    }
    let last_tree = tree_in_workspace(&ctx, "cycles", "/workspace/proj");
    assert_eq!(
        ctx.run(&["backup", "list", "cycles", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        20
    );

    ctx.run(&[
        "workspace",
        "restore",
        "cycles",
        "--snapshot",
        &first[..10],
        "--name",
        "first",
    ])
    .ok();
    assert_eq!(
        tree_in_workspace(&ctx, "first", "/workspace/proj"),
        first_tree
    );
    ctx.run(&[
        "workspace",
        "restore",
        "cycles",
        "--snapshot",
        &last,
        "--name",
        "last",
    ])
    .ok();
    assert_eq!(
        tree_in_workspace(&ctx, "last", "/workspace/proj"),
        last_tree
    );
    // A name in use is refused with what to do.
    let taken = ctx.run(&["workspace", "restore", "cycles"]).fails();
    assert!(taken.stderr.contains("--name"), "{}", taken.stderr);

    let removed = ctx
        .run(&["backup", "forget", "cycles", "--keep-last", "5", "--json"])
        .ok()
        .json();
    assert_eq!(removed.as_array().unwrap().len(), 15);
    let left = ctx.run(&["backup", "list", "cycles", "--json"]).ok().json();
    assert_eq!(left.as_array().unwrap().len(), 5);
    assert_eq!(
        left.as_array().unwrap().last().unwrap()["id"],
        last.as_str()
    );
    ctx.run(&["workspace", "restore", "cycles", "--name", "after-forget"])
        .ok();
    assert_eq!(
        tree_in_workspace(&ctx, "after-forget", "/workspace/proj"),
        last_tree
    );
    // Keeping nothing is refused.
    ctx.run(&["backup", "forget", "cycles", "--keep-last", "0"])
        .fails();
    // A malformed image is refused before anything is made.
    let bad = ctx
        .run(&[
            "workspace",
            "restore",
            "cycles",
            "--name",
            "bad-image",
            "--image",
            "Not/An Image",
        ])
        .fails();
    assert!(bad.stderr.contains("invalid image name"), "{}", bad.stderr);
    assert!(!ctx.list().iter().any(|w| w["name"] == "bad-image"));
    // Without flags, forget applies the retention of config.yaml.
    configure(&ctx, "backup:\n  keep_last: 2\n  keep_daily: 0\n");
    let removed = ctx
        .run(&["backup", "forget", "cycles", "--json"])
        .ok()
        .json();
    assert_eq!(removed.as_array().unwrap().len(), 3, "{removed}");
    let left = ctx.run(&["backup", "list", "cycles", "--json"]).ok().json();
    assert_eq!(left.as_array().unwrap().len(), 2);
}

#[test]
fn backups_on_s3_are_restic_readable_and_purge_leaves_nothing_of_the_workspace() {
    let s3 = S3Server::start("backups");
    let ctx = Ctx::new();
    configure(&ctx, &s3_config(&s3, "team/cvm"));
    let proj = git_project(&ctx);
    ctx.up(&[proj.to_str().unwrap(), "--name", "cloudy"]);
    let a = snapshot_of(ctx.run(&["workspace", "backup", "cloudy", "--json"]));
    ctx.run(&["exec", "cloudy", "--", "sh", "-c", "echo more > more.txt"])
        .ok();
    snapshot_of(ctx.run(&["workspace", "backup", "cloudy", "--json"]));

    // `backup env` names the repository the way restic does; the keys come from the user.
    let mut env = restic_env(&ctx);
    assert!(
        env.iter()
            .any(|(k, v)| k == "RESTIC_REPOSITORY" && *v == s3.repository("team/cvm"))
    );
    env.push(("AWS_ACCESS_KEY_ID".into(), s3.access_key().into()));
    env.push(("AWS_SECRET_ACCESS_KEY".into(), s3.secret_key().into()));
    let cache = tempfile::tempdir().unwrap();
    let env = with_cache(&env, cache.path());
    let out = restic_with(&env, &["snapshots", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snaps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(snaps.as_array().unwrap().len(), 2);
    assert!(
        snaps
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == a.as_str())
    );
    assert!(!s3.list("team/cvm/data/").is_empty());
    // The secret never shows: not in the home's files, not in any output.
    let shown = ctx.run(&["backup", "list", "--json"]).ok();
    assert!(!shown.stdout.contains(s3.secret_key()));

    ctx.run(&["workspace", "delete", "cloudy", "--purge", "-y"])
        .ok();
    for part in ["data/", "snapshots/", "index/"] {
        let left = s3.list(&format!("team/cvm/{part}"));
        assert!(left.is_empty(), "{part} still holds {left:?}");
    }
    assert!(
        ctx.run(&["backup", "list", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .is_empty()
    );
    let out = restic_with(&env, &["check"]);
    assert!(
        out.status.success(),
        "the repository is consistent after a purge: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Start `args` and kill it with SIGKILL once `ready` holds (checked every 100 ms).
fn kill_when(ctx: &Ctx, args: &[&str], ready: impl Fn() -> bool) {
    let mut child = ctx
        .command(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{args:?} ended ({status}) before it could be killed");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{args:?} never got going"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn repository_faults_are_one_clear_line_and_lose_nothing() {
    let mut s3 = S3Server::start("faults");
    let ctx = Ctx::new();
    configure(&ctx, &s3_config(&s3, "f"));
    let proj = git_project(&ctx);
    ctx.up(&[proj.to_str().unwrap(), "--name", "fragile"]);
    let good = snapshot_of(ctx.run(&["workspace", "backup", "fragile", "--json"]));
    let good_tree = tree_in_workspace(&ctx, "fragile", "/workspace/proj");

    // The store is down: backup fails with the remedy; down still stops (and says so);
    // delete deletes nothing without --force.
    s3.kill();
    let r = ctx.run(&["workspace", "backup", "fragile"]).fails();
    assert!(
        r.stderr.contains("cannot reach the backup repository"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    let d = ctx.run(&["workspace", "down", "fragile"]).fails();
    assert!(d.stderr.contains("final backup failed"), "{}", d.stderr);
    assert_eq!(ctx.list()[0]["status"], "stopped");
    ctx.run(&["workspace", "up", "fragile"]).ok();
    let del = ctx.run(&["workspace", "delete", "fragile", "-y"]).fails();
    assert!(del.stderr.contains("nothing was deleted"), "{}", del.stderr);
    assert!(del.stderr.contains("--force"), "{}", del.stderr);
    assert_eq!(ctx.list().len(), 1);
    // On a terminal it asks again: "no" keeps the workspace.
    let cmd = format!(
        "CLAUDE_VM_HOME={} NO_COLOR=1 {} workspace delete fragile -y; echo exit=$?; sleep 30",
        ctx.home.path().display(),
        ctx.bin.display()
    );
    let term = common::chat::Tmux::start("delete-again", 200, 40, &cmd);
    term.wait_for("Delete it anyway", Duration::from_secs(60));
    term.send("n");
    term.wait_for("exit=1", Duration::from_secs(30));
    drop(term);
    assert_eq!(ctx.list().len(), 1);
    s3.restart();

    // Wrong keys, a missing bucket, a wrong password, an unknown snapshot.
    let cases = [
        (
            s3_config(&s3, "f").replace(s3.secret_key(), "not-the-secret"),
            "refused the credentials",
        ),
        (
            s3_config(&s3, "f").replace("s3://faults/", "s3://no-such-bucket/"),
            "does not exist",
        ),
        (
            format!(
                "{}  password_file: {}\n",
                s3_config(&s3, "f"),
                ctx.path("other-password").display()
            ),
            "wrong password",
        ),
    ];
    std::fs::write(ctx.path("other-password"), "not-the-password\n").unwrap();
    let config_path = ctx.home.path().join("config.yaml");
    let original = std::fs::read_to_string(&config_path).unwrap();
    for (cfg, words) in &cases {
        std::fs::write(
            &config_path,
            format!("default_image: {}\n{cfg}", common::test_image()),
        )
        .unwrap();
        let r = ctx.run(&["workspace", "backup", "fragile"]).fails();
        assert!(r.stderr.contains(words), "{words}: {}", r.stderr);
        assert!(r.stderr.contains("hint:"), "{words}: {}", r.stderr);
        assert_eq!(
            r.stderr.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{}",
            r.stderr
        );
        assert!(
            !r.stderr.contains(s3.secret_key()),
            "a secret in an error: {}",
            r.stderr
        );
    }
    std::fs::write(&config_path, &original).unwrap();
    let r = ctx
        .run(&[
            "workspace",
            "restore",
            "fragile",
            "--snapshot",
            "deadbeef",
            "--name",
            "x",
        ])
        .fails();
    assert!(r.stderr.contains("no snapshot deadbeef"), "{}", r.stderr);

    // A backup killed outright mid-upload leaves the repository consistent: the previous
    // snapshot still restores, the next backup succeeds.
    ctx.run(&[
        "exec",
        "fragile",
        "--",
        "sh",
        "-c",
        "head -c 60000000 /dev/urandom > big.bin",
    ])
    .ok();
    let data_before = s3.list("f/data/").len();
    kill_when(&ctx, &["workspace", "backup", "fragile"], || {
        s3.list("f/data/").len() > data_before
    });
    let listed = ctx
        .run(&["backup", "list", "fragile", "--json"])
        .ok()
        .json();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "no half snapshot: {listed:#}"
    );
    // The S3 server killed mid-upload, then back.
    let data_before = s3.list("f/data/").len();
    let child = ctx
        .command(&["workspace", "backup", "fragile"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while s3.list("f/data/").len() <= data_before {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the backup never uploaded"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s3.kill();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    s3.restart();
    let next = snapshot_of(ctx.run(&["workspace", "backup", "fragile", "--json"]));
    ctx.run(&[
        "workspace",
        "restore",
        "fragile",
        "--snapshot",
        &good,
        "--name",
        "old",
    ])
    .ok();
    assert_eq!(tree_in_workspace(&ctx, "old", "/workspace/proj"), good_tree);

    // A restore that fails half-way (the store dies while the files stream in) removes
    // its half-made workspace.
    let child = ctx
        .command(&[
            "workspace",
            "restore",
            "fragile",
            "--snapshot",
            &next,
            "--name",
            "half",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ctx.list().iter().any(|w| w["name"] == "half") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the restore never began"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s3.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        ctx.list().iter().all(|w| w["name"] != "half"),
        "{stderr}\n{:#?}",
        ctx.list()
    );
    s3.restart();

    // With the store down, --force deletes anyway.
    s3.kill();
    ctx.run(&["workspace", "delete", "old", "-y", "--force"])
        .ok();
    s3.restart();
}

#[test]
fn a_full_disk_under_a_local_repository_is_reported_and_down_still_stops() {
    let ctx = Ctx::new();
    let mnt = ctx.path("small-disk");
    std::fs::create_dir_all(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a small tmpfs needs root");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    configure(
        &ctx,
        &format!("backup:\n  repository: {}\n", mnt.join("repo").display()),
    );
    let proj = git_project(&ctx);
    ctx.up(&[proj.to_str().unwrap(), "--name", "full"]);
    ctx.run(&[
        "exec",
        "full",
        "--",
        "sh",
        "-c",
        "head -c 4000000 /dev/urandom > big.bin",
    ])
    .ok();
    let r = ctx.run(&["workspace", "backup", "full"]).fails();
    assert!(r.stderr.contains("disk is full"), "{}", r.stderr);
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
    let d = ctx.run(&["workspace", "down", "full"]).fails();
    assert!(d.stderr.contains("final backup failed"), "{}", d.stderr);
    assert_eq!(ctx.list()[0]["status"], "stopped");
    // delete cannot take its final backup either; asked again on a terminal, "yes"
    // deletes it all the same.
    let cmd = format!(
        "CLAUDE_VM_HOME={} NO_COLOR=1 {} workspace delete full -y; echo exit=$?; sleep 30",
        ctx.home.path().display(),
        ctx.bin.display()
    );
    let term = common::chat::Tmux::start("delete-yes", 200, 40, &cmd);
    term.wait_for("Delete it anyway", Duration::from_secs(90));
    term.send("y");
    term.wait_for("exit=0", Duration::from_secs(60));
    drop(term);
    assert!(ctx.list().is_empty());
}

#[test]
fn the_server_backs_up_running_workspaces_first_and_after_each_turn() {
    let model = ScriptedModel::start(
        Script::from_json(r#"[{"match": {"last_user_contains": "hello"}, "response": [{"text": "Hello back."}]}]"#)
            .unwrap(),
    )
    .unwrap();
    let ctx = ctx_with_claude(&model.url(), "sk-test-server-backups");
    let proj = git_project(&ctx);
    ctx.up(&[proj.to_str().unwrap(), "--name", "watched"]);
    let _server = common::http::Server::start_env(&ctx, &[("CLAUDE_VM_BACKUP_CHECK_SECS", "1")]);
    let count = || {
        ctx.run(&["backup", "list", "watched", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    let wait_count = |n: usize, within: Duration, what: &str| {
        let start = Instant::now();
        while count() < n {
            assert!(start.elapsed() < within, "no backup {what}");
            std::thread::sleep(Duration::from_secs(1));
        }
    };
    // A workspace never backed up is at once.
    wait_count(1, Duration::from_secs(60), "of a new workspace");
    let shown = ctx.list();
    assert!(shown[0]["last_backup"].is_string(), "{shown:#?}");
    // After an agent's turn (and at most once a minute), again.
    let conv = ctx
        .run(&["new-chat", "watched"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert_eq!(send_wait(&ctx, &conv, "hello"), "Hello back.");
    wait_count(2, Duration::from_secs(120), "after the turn ended");
    // Nothing changed since: no more.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(count(), 2);
}

#[test]
fn a_hostile_agent_cannot_make_a_backup_read_for_it_or_take_the_daemon_down() {
    let ctx = Ctx::new();
    configure(&ctx, "");
    let proj = git_project(&ctx);
    let ws = ctx.up(&[proj.to_str().unwrap(), "--name", "hostile"]);
    let id = ws["id"].as_str().unwrap().to_owned();
    // A .gitignore that never ends, and links to root's files.
    ctx.run(&[
        "exec",
        "hostile",
        "--",
        "sh",
        "-c",
        "mkdir -p sub && ln -s /dev/zero sub/.gitignore && ln -s /etc/shadow shadow && ln -s /workspace/.claude-vm/ssh state-key",
    ])
    .ok();
    let r = ctx.run(&["workspace", "backup", "hostile"]).fails();
    assert!(r.stderr.contains("scan"), "{}", r.stderr);
    // The daemon never noticed: the same link still answers.
    assert_eq!(
        ctx.run(&["exec", "hostile", "--", "echo", "alive"])
            .ok()
            .stdout
            .trim(),
        "alive"
    );
    assert!(common::daemon_pid(&id).is_some());
    // A .gitignore that is a FIFO no one writes to: the scan blocks opening it, lists
    // nothing more, and is stopped after the stall limit (made 3 s here; 120 s by default).
    ctx.run(&[
        "exec",
        "hostile",
        "--",
        "sh",
        "-c",
        "rm sub/.gitignore && mkfifo sub/.gitignore",
    ])
    .ok();
    let started = Instant::now();
    let stalled = common::Run::from(
        ctx.command(&["workspace", "backup", "hostile"])
            .env("CLAUDE_VM_SCAN_STALL_SECS", "3")
            .output()
            .unwrap(),
    )
    .fails();
    let took = started.elapsed();
    assert!(
        stalled.stderr.contains("made no progress for 3s") && stalled.stderr.contains("FIFO"),
        "{}",
        stalled.stderr
    );
    assert!(
        took < Duration::from_secs(60),
        "the stalled scan took {took:?}"
    );
    // The stopped scan left no process behind, and the daemon answers.
    let procs = dexec(
        &id,
        "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '; true",
    );
    assert!(
        !procs.contains("backup-scan"),
        "a scan child is left: {procs}"
    );
    assert_eq!(
        ctx.run(&["exec", "hostile", "--", "echo", "alive"])
            .ok()
            .stdout
            .trim(),
        "alive"
    );
    // Without the endless file the backup works, and holds the links as links.
    ctx.run(&["exec", "hostile", "--", "rm", "sub/.gitignore"])
        .ok();
    let snap = snapshot_of(ctx.run(&["workspace", "backup", "hostile", "--json"]));
    let cache = tempfile::tempdir().unwrap();
    let env = with_cache(&restic_env(&ctx), cache.path());
    let target = tempfile::tempdir().unwrap();
    let out = restic_with(
        &env,
        &[
            "restore",
            &snap,
            "--target",
            target.path().to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = target.path().join("workspace/proj");
    assert_eq!(
        std::fs::read_link(p.join("shadow")).unwrap(),
        Path::new("/etc/shadow")
    );
    assert!(
        std::fs::symlink_metadata(p.join("state-key"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // The daemon's SSH host key is never in a snapshot.
    assert!(!target.path().join("workspace/.claude-vm/ssh").exists());
    assert!(target.path().join("workspace/.claude-vm").is_dir());
}

#[test]
fn read_many_answers_each_path_in_order_and_never_follows_what_an_agent_planted() {
    use claude_vm_protocol::frame::{Decoder, Kind};
    let ctx = Ctx::new();
    configure(&ctx, "");
    let proj = git_project(&ctx);
    ctx.up(&[proj.to_str().unwrap(), "--name", "many"]);
    ctx.run(&[
        "exec",
        "many",
        "--",
        "sh",
        "-c",
        "printf small > a && head -c 2000000 /dev/urandom > big && ln -s /etc/shadow shadow && mkfifo fifo && mkdir dir",
    ])
    .ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine =
        claude_vm_engine::Engine::open(claude_vm_store::Home::at(ctx.home.path()), None).unwrap();
    let asked = [
        "/workspace/proj/a",
        "/workspace/proj/big",
        "/workspace/proj/shadow",
        "/workspace/proj/fifo",
        "/workspace/proj/dir",
        "/workspace/proj/nothing-here",
        "/etc/passwd",
        "/workspace/proj/../../etc/passwd",
        "relative-and-missing",
        "/workspace/proj/a",
    ];
    let frames = rt.block_on(async {
        let (_, link) = engine.link("many").await.unwrap();
        // Too many paths at once is refused whole.
        let many = vec!["/workspace/proj/a".to_owned(); 5000];
        let e = match link.backup_read_many(many).await {
            Ok(_) => panic!("5000 paths were accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("at most"), "{e}");
        let mut d = link
            .backup_read_many(asked.iter().map(|s| (*s).to_owned()).collect())
            .await
            .unwrap();
        let mut dec = Decoder::default();
        let mut frames = Vec::new();
        while let Some(b) = d.chunk().await.unwrap() {
            dec.push(&b);
            while let Some(f) = dec.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(dec.pending(), 0);
        frames
    });
    let kinds: Vec<Kind> = frames.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        kinds,
        [
            Kind::File,    // a
            Kind::Large,   // big: read on its own
            Kind::Failed,  // a symlink is never followed
            Kind::Failed,  // a FIFO is not opened (it could hang the read)
            Kind::Failed,  // a folder
            Kind::Missing, // gone
            Kind::Failed,  // outside the volume
            Kind::Failed,  // climbing out
            Kind::Missing, // relative: in the project folder, and not there
            Kind::File,    // a again
        ],
        "{:?}",
        frames
            .iter()
            .map(|(k, p)| format!("{k:?} {}", String::from_utf8_lossy(p)))
            .collect::<Vec<_>>()
    );
    assert_eq!(frames[0].1, b"small");
    assert_eq!(frames[9].1, b"small");
    for (_, p) in &frames[2..9] {
        let text = String::from_utf8_lossy(p);
        assert!(!text.contains("root:"), "{text}");
    }
    // The daemon is still there for the next request.
    assert_eq!(
        ctx.run(&["exec", "many", "--", "echo", "alive"])
            .ok()
            .stdout
            .trim(),
        "alive"
    );
}

#[test]
fn a_server_killed_mid_backup_leaves_the_repository_consistent() {
    let ctx = Ctx::new();
    configure(&ctx, "");
    let proj = git_project(&ctx);
    ctx.up(&[proj.to_str().unwrap(), "--name", "cut"]);
    let good = snapshot_of(ctx.run(&["workspace", "backup", "cut", "--json"]));
    let good_tree = tree_in_workspace(&ctx, "cut", "/workspace/proj");
    std::thread::sleep(Duration::from_secs(2));
    ctx.run(&[
        "exec",
        "cut",
        "--",
        "sh",
        "-c",
        "head -c 80000000 /dev/urandom > big.bin",
    ])
    .ok();
    // The server backs it up at once (something changed, no backup for over a minute is
    // not needed: the first check after start finds the change); kill it mid-upload.
    let data = ctx.home.path().join("backups/data");
    let packs = || walk_files(&data);
    let before = packs();
    std::fs::write(
        ctx.home.path().join("config.yaml"),
        format!(
            "default_image: {}\nbackup:\n  interval: 1s\n",
            common::test_image()
        ),
    )
    .unwrap();
    // The last attempt must be a minute old before the server tries again.
    std::thread::sleep(Duration::from_secs(61));
    let mut server = common::http::Server::start_env(&ctx, &[("CLAUDE_VM_BACKUP_CHECK_SECS", "1")]);
    let start = Instant::now();
    while packs() <= before {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the server never backed up:\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill();
    let listed = ctx.run(&["backup", "list", "cut", "--json"]).ok().json();
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "no half snapshot: {listed:#}"
    );
    // The next backup succeeds, and the earlier snapshot still restores.
    snapshot_of(ctx.run(&["workspace", "backup", "cut", "--json"]));
    ctx.run(&[
        "workspace",
        "restore",
        "cut",
        "--snapshot",
        &good,
        "--name",
        "cut-old",
    ])
    .ok();
    assert_eq!(
        tree_in_workspace(&ctx, "cut-old", "/workspace/proj"),
        good_tree
    );
    let cache = tempfile::tempdir().unwrap();
    let out = restic_with(&with_cache(&restic_env(&ctx), cache.path()), &["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn walk_files(d: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(d) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() { walk_files(&p) } else { 1 }
        })
        .sum()
}
