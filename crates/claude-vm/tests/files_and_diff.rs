//! `claude-vm cp` and `claude-vm diff` end to end, and every traversal attempt refused.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Ctx, dexec, git};

fn repo_workspace(ctx: &Ctx) -> String {
    let p = ctx.path("proj");
    std::fs::create_dir_all(p.join("src")).unwrap();
    std::fs::write(p.join("src/lib.rs"), "fn a() {}\nfn b() {}\n").unwrap();
    std::fs::write(p.join("gone.txt"), "bye\n").unwrap();
    std::fs::write(p.join(".gitignore"), "*.log\n").unwrap();
    git(&p, &["init", "-q"]);
    git(&p, &["add", "."]);
    git(&p, &["commit", "-q", "-m", "init"]);
    let w = ctx.up(&[p.to_str().unwrap(), "--name", "files"]);
    w["id"].as_str().unwrap().to_owned()
}

#[test]
fn cp_round_trips_files_and_trees_byte_exact() {
    let ctx = Ctx::new();
    let id = repo_workspace(&ctx);
    // A 50 MB file with a non-default mode.
    let big = ctx.path("big.bin");
    let data: Vec<u8> = (0..50_000_000u32)
        .map(|i| (i.wrapping_mul(40503) >> 5) as u8)
        .collect();
    std::fs::write(&big, &data).unwrap();
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o640)).unwrap();
    ctx.run(&["cp", big.to_str().unwrap(), "files:data/big.bin"])
        .fails(); // parent missing
    ctx.run(&["exec", "files", "--", "mkdir", "data"]).ok();
    ctx.run(&["cp", big.to_str().unwrap(), "files:data/big.bin"])
        .ok();
    assert_eq!(
        dexec(&id, "stat -c '%a %s %u' /workspace/proj/data/big.bin"),
        "640 50000000 1000\n"
    );
    let back = ctx.path("back.bin");
    ctx.run(&["cp", "files:data/big.bin", back.to_str().unwrap()])
        .ok();
    assert!(
        std::fs::read(&back).unwrap() == data,
        "50 MB file changed in transit"
    );
    assert_eq!(
        std::fs::metadata(&back).unwrap().permissions().mode() & 0o777,
        0o640
    );

    // A tree: nested dirs, modes, a symlink, an empty dir; into an existing folder.
    let tree = ctx.path("tree");
    std::fs::create_dir_all(tree.join("a/b/empty")).unwrap();
    std::fs::write(tree.join("a/b/c.txt"), "c").unwrap();
    std::fs::write(tree.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(tree.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("a/b/c.txt", tree.join("link")).unwrap();
    ctx.run(&["cp", tree.to_str().unwrap(), "files:data"]).ok();
    let listing = dexec(
        &id,
        "cd /workspace/proj/data/tree && find . | sort && stat -c '%a' run.sh && readlink link && stat -c %u a/b/c.txt",
    );
    assert_eq!(
        listing,
        ".\n./a\n./a/b\n./a/b/c.txt\n./a/b/empty\n./link\n./run.sh\n750\na/b/c.txt\n1000\n"
    );
    // ...and back to a new local name.
    let out = ctx.path("tree-back");
    ctx.run(&["cp", "files:data/tree", out.to_str().unwrap()])
        .ok();
    let diff = std::process::Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&tree)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
    assert_eq!(
        std::fs::metadata(out.join("run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o750
    );
    assert!(out.join("a/b/empty").is_dir());

    // Errors are clear and leave nothing half-written.
    let missing = ctx
        .run(&["cp", "files:no/such/file", ctx.path("x").to_str().unwrap()])
        .fails();
    assert!(
        missing.stderr.contains("not found") || missing.stderr.contains("no such"),
        "{}",
        missing.stderr
    );
    assert!(!ctx.path("x").exists());
    let local_missing = ctx.run(&["cp", "/no/such/local", "files:x"]).fails();
    assert!(
        local_missing.stderr.contains("cannot read /no/such/local"),
        "{}",
        local_missing.stderr
    );
    let both_local = ctx.run(&["cp", "a", "b"]).fails();
    assert!(
        both_local.stderr.contains("WORKSPACE:PATH"),
        "{}",
        both_local.stderr
    );
}

#[test]
fn traversal_is_refused_everywhere() {
    let ctx = Ctx::new();
    let id = repo_workspace(&ctx);
    dexec(
        &id,
        "ln -s /etc /workspace/proj/etc-link && ln -s ../../etc /workspace/proj/rel-link",
    );
    let local = ctx.path("out");
    let src = ctx.path("payload");
    std::fs::write(&src, "evil").unwrap();
    for remote in [
        "files:../../etc/passwd",
        "files:/etc/passwd",
        "files:etc-link/passwd",
        "files:rel-link/passwd",
        "files:/workspace/../etc/passwd",
        "files:src/../../../etc/shadow",
    ] {
        let out = ctx.run(&["cp", remote, local.to_str().unwrap()]).fails();
        assert!(
            out.stderr.contains("outside the workspace")
                || out.stderr.contains("`..` is not allowed"),
            "{remote}: {}",
            out.stderr
        );
        assert!(!local.exists(), "{remote} wrote locally");
    }
    for remote in [
        "files:/etc/evil",
        "files:etc-link/evil",
        "files:../evil",
        "files:rel-link/evil",
    ] {
        let out = ctx.run(&["cp", src.to_str().unwrap(), remote]).fails();
        assert!(
            out.stderr.contains("outside the workspace")
                || out.stderr.contains("`..` is not allowed"),
            "{remote}: {}",
            out.stderr
        );
    }
    assert_eq!(
        dexec(&id, "ls /etc/evil /workspace/evil 2>/dev/null | wc -l").trim(),
        "0"
    );
}

#[test]
fn diff_shows_modified_deleted_untracked_and_binary_files() {
    let ctx = Ctx::new();
    let id = repo_workspace(&ctx);
    let clean = ctx.run(&["diff", "files"]).ok();
    assert_eq!(clean.stdout, "");
    assert!(clean.stderr.contains("no changes"), "{}", clean.stderr);
    dexec(
        &id,
        "cd /workspace/proj && printf 'fn a() {}\\nfn c() {}\\n' > src/lib.rs && rm gone.txt \
         && echo 'new notes' > notes.md && head -c 4096 /dev/urandom > blob.bin && echo noise > x.log \
         && chown -R 1000:1000 .",
    );
    let stat = ctx.run(&["diff", "files", "--stat"]).ok();
    for line in [
        "src/lib.rs  modified   +1 -1",
        "gone.txt    deleted    +0 -1",
        "notes.md    untracked  +1 -0",
        "blob.bin    untracked  binary",
    ] {
        assert!(
            stat.stdout.contains(line),
            "missing {line:?} in\n{}",
            stat.stdout
        );
    }
    assert!(
        !stat.stdout.contains("x.log"),
        "ignored file shown:\n{}",
        stat.stdout
    );
    let patch = ctx.run(&["diff", "files"]).ok();
    assert!(
        patch.stdout.contains("-fn b() {}\n+fn c() {}"),
        "{}",
        patch.stdout
    );
    assert!(patch.stdout.contains("+new notes"), "{}", patch.stdout);
    assert!(
        patch
            .stdout
            .contains("Binary files /dev/null and b/blob.bin differ"),
        "{}",
        patch.stdout
    );
    assert!(!patch.stdout.contains('\u{1b}'), "no colors when piped");
    let colored = ctx.run(&["diff", "files", "--color", "always"]).ok();
    assert!(
        colored.stdout.contains("\u{1b}[32m+fn c() {}"),
        "{}",
        colored.stdout
    );
    let json = ctx.run(&["diff", "files", "--json"]).ok().json();
    assert_eq!(json["branch"], "main");
    let blob = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "blob.bin")
        .unwrap();
    assert_eq!(blob["change"], "untracked");
    assert_eq!(blob["binary"], true);
    // The project's own index is untouched by looking.
    let status = dexec(
        &id,
        "cd /workspace/proj && git -c safe.directory='*' status --porcelain",
    );
    assert!(
        status.contains("?? notes.md") && status.contains(" D gone.txt"),
        "{status}"
    );
}
