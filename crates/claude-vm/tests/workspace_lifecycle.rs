//! End to end: workspaces on the real Docker engine, driven through the real binary.

mod common;

use std::process::Command;

use common::{Ctx, MANIFEST, dexec, git, local_manifest, sample_project};

#[test]
fn up_from_a_folder_copies_the_project_and_resume_keeps_every_byte() {
    let ctx = Ctx::new();
    let proj = ctx.path("shop");
    sample_project(&proj);
    let w = ctx.up(&[proj.to_str().unwrap()]);
    let id = w["id"].as_str().unwrap().to_owned();
    assert_eq!(w["status"], "running");
    assert_eq!(w["project_dir"], "/workspace/shop");
    assert_eq!(w["source"]["kind"], "path");

    // Tracked + untracked + .git, not ignored; modes and bytes identical.
    let inside = dexec(&id, &format!("cd /workspace/shop && {MANIFEST}"));
    assert_eq!(inside, local_manifest(&proj));
    assert!(
        inside.contains("data.bin f"),
        "untracked binary copied:\n{inside}"
    );
    assert!(inside.contains("run.sh f 755"), "{inside}");
    assert!(inside.contains("private.txt f 600"), "{inside}");
    assert!(inside.contains("lib-link l 777 src/lib.rs"), "{inside}");
    assert!(
        !inside.contains("debug.log") && !inside.contains("build"),
        "ignored files copied:\n{inside}"
    );
    assert!(inside.contains(".git/HEAD"), "{inside}");
    // Files belong to the agent user, not root; the original is untouched by changes.
    assert_eq!(
        dexec(
            &id,
            "stat -c %u:%g /workspace/shop/data.bin /workspace/shop/.git/HEAD"
        ),
        "1000:1000\n1000:1000\n"
    );
    dexec(
        &id,
        "echo changed-in-workspace >> /workspace/shop/README.md && head -c 1000000 /dev/urandom > /workspace/shop/new.bin && chmod 700 /workspace/shop/new.bin",
    );
    assert_eq!(
        std::fs::read_to_string(proj.join("README.md")).unwrap(),
        "# sample\n"
    );

    let before = dexec(&id, &format!("cd /workspace/shop && {MANIFEST}"));
    let down = ctx.run(&["workspace", "down", &id]).ok();
    assert!(down.stderr.contains("stopped"), "{}", down.stderr);
    let listed = ctx.list();
    assert_eq!(listed[0]["status"], "stopped");
    let again = ctx.run(&["workspace", "up", &id, "--json"]).ok().json();
    assert_eq!(again["action"], "resumed");
    let after = dexec(&id, &format!("cd /workspace/shop && {MANIFEST}"));
    assert_eq!(before, after, "files changed across down/up");
    assert!(after.contains("new.bin f 700"));
    // git sees the project as the user left it
    let status = dexec(
        &id,
        "cd /workspace/shop && su -s /bin/sh -c 'git status --porcelain' nobody 2>/dev/null || git -c safe.directory='*' status --porcelain",
    );
    assert!(
        status.contains("M README.md") && status.contains("?? data.bin"),
        "{status}"
    );

    // `up` on a running workspace is a checked no-op.
    let third = ctx
        .run(&["workspace", "up", w["name"].as_str().unwrap(), "--json"])
        .ok()
        .json();
    assert_eq!(third["action"], "already_running");
}

#[test]
fn up_from_a_git_url_clones_inside_and_handles_branches() {
    let ctx = Ctx::new();
    let src = ctx.path("src");
    sample_project(&src);
    git(&src, &["branch", "existing"]);
    let bare = ctx.path("origin.git");
    let out = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&src)
        .arg(&bare)
        .output()
        .unwrap();
    assert!(out.status.success());
    let url = format!("file://{}", bare.display());

    // A new branch is created from the default branch.
    let w = ctx.up(&[&url, "--branch", "feature/new", "--name", "clone-a"]);
    let id = w["id"].as_str().unwrap();
    assert_eq!(w["project"], "origin");
    assert_eq!(w["branch"], "feature/new");
    let head = dexec(
        id,
        "cd /workspace/origin && git -c safe.directory='*' rev-parse --abbrev-ref HEAD",
    );
    assert_eq!(head.trim(), "feature/new");
    let origin = dexec(
        id,
        "cd /workspace/origin && git -c safe.directory='*' remote get-url origin",
    );
    assert_eq!(origin.trim(), url);
    assert_eq!(
        dexec(id, "cat /workspace/origin/src/nested/deep.txt"),
        "deep\n"
    );
    assert_eq!(
        dexec(id, "stat -c %u /workspace/origin/README.md").trim(),
        "1000"
    );
    // The clone's scratch copy is gone.
    assert_eq!(
        dexec(
            id,
            "test -e /tmp/claude-vm-clone-source && echo yes || echo no"
        )
        .trim(),
        "no"
    );

    // An existing remote branch is checked out and tracks origin.
    let w2 = ctx.up(&[&url, "--branch", "existing", "--name", "clone-b"]);
    let id2 = w2["id"].as_str().unwrap();
    let upstream = dexec(
        id2,
        "cd /workspace/origin && git -c safe.directory='*' rev-parse --abbrev-ref existing@{upstream}",
    );
    assert_eq!(upstream.trim(), "origin/existing");

    // A branch on a folder source.
    let w3 = ctx.up(&[
        src.to_str().unwrap(),
        "--branch",
        "existing",
        "--name",
        "folder-b",
    ]);
    let head = dexec(
        w3["id"].as_str().unwrap(),
        "cd /workspace/src && git -c safe.directory='*' rev-parse --abbrev-ref HEAD",
    );
    assert_eq!(head.trim(), "existing");
}

#[test]
fn workspaces_are_found_by_id_name_and_unique_prefix() {
    let ctx = Ctx::new();
    let proj = ctx.path("p");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(proj.join("f"), "x").unwrap();
    let a = ctx.up(&[proj.to_str().unwrap(), "--name", "alpha"]);
    let generated = ctx.up(&[proj.to_str().unwrap()]);
    let gname = generated["name"].as_str().unwrap();
    let parts: Vec<&str> = gname.split('-').collect();
    assert_eq!(parts.len(), 3, "generated name {gname}");
    assert!(
        parts[2].len() == 4 && parts[2].chars().all(|c| c.is_ascii_digit()),
        "{gname}"
    );
    let id = a["id"].as_str().unwrap();
    assert_eq!(id.len(), 12);

    // by unique prefix
    let prefix = &id[..6];
    let down = ctx
        .run(&["workspace", "down", prefix, "--json"])
        .ok()
        .json();
    assert_eq!(down["name"], "alpha");
    assert_eq!(down["status"], "stopped");
    // by name, then by full id
    ctx.run(&["workspace", "up", "alpha"]).ok();
    ctx.run(&["workspace", "down", id]).ok();
    // already stopped is fine and says so
    let again = ctx.run(&["workspace", "down", "alpha"]).ok();
    assert!(again.stderr.contains("already stopped"), "{}", again.stderr);

    // duplicate name
    let dup = ctx
        .run(&["workspace", "up", proj.to_str().unwrap(), "--name", "alpha"])
        .fails();
    assert!(
        dup.stderr
            .contains("a workspace named \"alpha\" already exists"),
        "{}",
        dup.stderr
    );
    // unknown workspace
    let unknown = ctx.run(&["workspace", "down", "no-such-ws"]).fails();
    assert!(
        unknown
            .stderr
            .contains("no workspace matches \"no-such-ws\""),
        "{}",
        unknown.stderr
    );
    assert!(unknown.stderr.contains("hint:"), "{}", unknown.stderr);

    // filters
    let running = ctx
        .run(&["workspace", "list", "--status", "running", "--json"])
        .ok()
        .json();
    assert_eq!(running.as_array().unwrap().len(), 1);
    assert_eq!(running[0]["name"], gname);
    let stopped = ctx.run(&["workspace", "list", "--status", "stopped"]).ok();
    assert!(
        stopped.stdout.contains("alpha") && !stopped.stdout.contains(gname),
        "{}",
        stopped.stdout
    );
    let long = ctx.run(&["workspace", "list", "-l"]).ok();
    for col in ["NAME", "ID", "STATUS", "IMAGE", "BRANCH", "SOURCE"] {
        assert!(long.stdout.contains(col), "{}", long.stdout);
    }
}

#[test]
fn down_force_kills_and_delete_asks_first_then_removes_everything() {
    let ctx = Ctx::new();
    let proj = ctx.path("p");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(proj.join("f"), "x").unwrap();
    let w = ctx.up(&[proj.to_str().unwrap(), "--name", "doomed"]);
    let id = w["id"].as_str().unwrap();
    ctx.run(&["workspace", "down", "doomed", "-f"]).ok();
    assert_eq!(ctx.list()[0]["status"], "stopped");

    // Without a terminal and without -y, nothing is deleted.
    let refused = ctx.run(&["workspace", "delete", "doomed"]).fails();
    assert!(
        refused.stderr.contains("pass -y/--yes"),
        "{}",
        refused.stderr
    );
    assert_eq!(ctx.list().len(), 1);
    assert_eq!(
        ctx.docker_debris().len(),
        2,
        "container and volume still there"
    );

    let deleted = ctx
        .run(&["workspace", "delete", "doomed", "-y", "--json"])
        .ok()
        .json();
    assert_eq!(deleted["workspace"]["id"], id);
    assert!(ctx.list().is_empty());
    assert!(ctx.docker_debris().is_empty(), "{:?}", ctx.docker_debris());
    let gone = Command::new("docker")
        .args(["volume", "inspect", &format!("claude-vm-{id}")])
        .output()
        .unwrap();
    assert!(!gone.status.success());
    // The name can be used again.
    ctx.up(&[proj.to_str().unwrap(), "--name", "doomed"]);
}

#[test]
fn bad_input_is_refused_before_anything_is_created() {
    let ctx = Ctx::new();
    let file = ctx.path("plain.txt");
    std::fs::write(&file, "x").unwrap();
    let not_git = ctx.path("notgit");
    std::fs::create_dir_all(&not_git).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["/no/such/dir".into()],
            "path \"/no/such/dir\" does not exist",
        ),
        (vec![file.display().to_string()], "is not a folder"),
        (
            vec!["no-such-thing".into()],
            "no workspace, folder or git URL matches \"no-such-thing\"",
        ),
        (
            vec![not_git.display().to_string(), "--branch".into(), "x".into()],
            "--branch needs a git repository",
        ),
        (
            vec![
                not_git.display().to_string(),
                "--name".into(),
                "Bad_Name".into(),
            ],
            "may only contain lowercase letters",
        ),
        (
            vec![
                not_git.display().to_string(),
                "--name".into(),
                "0123456789ab".into(),
            ],
            "looks like a workspace id",
        ),
        (
            vec![
                not_git.display().to_string(),
                "--provider".into(),
                "nope".into(),
            ],
            "no provider named \"nope\"",
        ),
        (vec!["file:///no/such/repo.git".into()], "does not exist"),
        (
            vec![
                not_git.display().to_string(),
                "--branch".into(),
                "a..b".into(),
            ],
            "invalid branch name",
        ),
    ];
    for (args, want) in cases {
        let mut full = vec!["workspace", "up"];
        full.extend(args.iter().map(String::as_str));
        let out = ctx.run(&full).fails();
        assert!(
            out.stderr.starts_with("error: "),
            "{args:?}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(want),
            "{args:?}: want {want:?} in {}",
            out.stderr
        );
    }
    assert!(ctx.list().is_empty());
    assert!(ctx.docker_debris().is_empty());

    // Creation-only flags on an existing workspace.
    std::fs::write(not_git.join("f"), "x").unwrap();
    ctx.up(&[not_git.to_str().unwrap(), "--name", "exists"]);
    let out = ctx
        .run(&["workspace", "up", "exists", "--image", "other"])
        .fails();
    assert!(
        out.stderr
            .contains("--image only applies when creating a workspace"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_missing_image_fails_clearly_and_leaves_no_debris() {
    let ctx = Ctx::new();
    let proj = ctx.path("p");
    std::fs::create_dir_all(&proj).unwrap();
    let out = ctx
        .run(&[
            "workspace",
            "up",
            proj.to_str().unwrap(),
            "--image",
            "claude-vm-test/missing:nope",
        ])
        .fails();
    assert!(
        out.stderr
            .contains("image \"claude-vm-test/missing:nope\" is not available"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: pull or build it first"),
        "{}",
        out.stderr
    );
    assert!(ctx.list().is_empty());
    assert!(ctx.docker_debris().is_empty(), "{:?}", ctx.docker_debris());
}

#[test]
fn a_failure_after_the_container_exists_is_cleaned_up() {
    let ctx = Ctx::new();
    // Exists, but is no git repository: the clone inside the workspace fails.
    let bogus = ctx.path("bogus.git");
    std::fs::create_dir_all(&bogus).unwrap();
    std::fs::write(bogus.join("not-a-repo"), "x").unwrap();
    let out = ctx
        .run(&["workspace", "up", &format!("file://{}", bogus.display())])
        .fails();
    assert!(out.stderr.contains("cloning failed"), "{}", out.stderr);
    assert!(out.stderr.contains("cleaning up"), "{}", out.stderr);
    assert!(ctx.list().is_empty());
    assert!(ctx.docker_debris().is_empty(), "{:?}", ctx.docker_debris());
}

#[test]
fn docker_down_is_one_clear_error() {
    let ctx = Ctx::new();
    let proj = ctx.path("p");
    std::fs::create_dir_all(&proj).unwrap();
    // DOCKER_HOST is honoured...
    let out = Run::of(
        ctx.command(&["workspace", "up", proj.to_str().unwrap()])
            .env("DOCKER_HOST", "unix:///tmp/claude-vm-no-docker.sock"),
    );
    assert_ne!(out.code, 0);
    let first = out
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap();
    assert!(
        first.contains("cannot reach the Docker engine at unix:///tmp/claude-vm-no-docker.sock"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: is Docker running?"),
        "{}",
        out.stderr
    );
    assert!(ctx.list().is_empty(), "nothing recorded");

    // ...and so is the provider's host option, which wins over DOCKER_HOST.
    let w = ctx.up(&[proj.to_str().unwrap(), "--name", "later"]);
    ctx.run(&[
        "provider",
        "set-options",
        "docker",
        "--option",
        "host=unix:///tmp/claude-vm-no-docker.sock",
    ])
    .ok();
    let listed = ctx.run(&["workspace", "list", "--json"]).fails();
    assert_eq!(listed.json()[0]["status"], "unknown");
    assert!(
        listed
            .stderr
            .contains("provider docker could not be reached"),
        "{}",
        listed.stderr
    );
    let down = ctx.run(&["workspace", "down", "later"]).fails();
    assert!(
        down.stderr.contains("cannot be reached") || down.stderr.contains("cannot reach"),
        "{}",
        down.stderr
    );
    ctx.run(&["provider", "set-options", "docker", "--option", "host="])
        .ok();
    assert_eq!(ctx.list()[0]["status"], "running");
    assert_eq!(ctx.list()[0]["id"], w["id"]);
}

struct Run;
impl Run {
    fn of(cmd: &mut Command) -> common::Run {
        let o = cmd.output().unwrap();
        common::Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

#[test]
fn list_gives_up_on_a_provider_that_never_answers() {
    let ctx = Ctx::new();
    let proj = ctx.path("p");
    std::fs::create_dir_all(&proj).unwrap();
    ctx.up(&[proj.to_str().unwrap(), "--name", "patient"]);
    // An "engine" that accepts connections and never says a word.
    let sock = ctx.path("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    ctx.run(&[
        "provider",
        "set-options",
        "docker",
        "--option",
        &format!("host=unix://{}", sock.display()),
    ])
    .ok();
    let start = std::time::Instant::now();
    let out = ctx.run(&["workspace", "list", "--json"]).fails();
    let took = start.elapsed();
    assert!(
        took < std::time::Duration::from_secs(12),
        "list hung for {took:?}"
    );
    assert_eq!(out.json()[0]["status"], "unknown");
    assert!(
        out.json()[0]["status_reason"]
            .as_str()
            .unwrap()
            .contains("no answer"),
        "{}",
        out.stdout
    );
}
