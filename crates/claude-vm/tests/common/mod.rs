//! The test kit for end-to-end tests: run the real `claude-vm` binary against the real
//! Docker engine, each test in its own `CLAUDE_VM_HOME`, and clean up whatever it created.
#![allow(dead_code)]

pub mod browser;
pub mod chat;
pub mod http;
pub mod s3;
pub mod scenario;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The local base image the test suite builds (`scripts/base-image.sh`).
pub fn test_image() -> String {
    std::env::var("CLAUDE_VM_TEST_IMAGE")
        .unwrap_or_else(|_| "claude-vm-test-base:bookworm-4".to_owned())
}

/// One isolated claude-vm home.
pub struct Ctx {
    pub home: tempfile::TempDir,
    pub bin: PathBuf,
    pub work: tempfile::TempDir,
}

/// What a command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails(self) -> Run {
        assert_ne!(
            self.code, 0,
            "command unexpectedly succeeded\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("bad JSON ({e}):\n{}", self.stdout))
    }
}

impl Ctx {
    /// A fresh home whose default image is the test image. Fails (never skips) when Docker
    /// or the image is missing.
    pub fn new() -> Ctx {
        let image = test_image();
        let inspect = Command::new("docker")
            .args(["image", "inspect", &image])
            .output();
        match inspect {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "test image {image} is missing ({}); build it with scripts/test-deps.sh",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!("cannot run docker: {e}"),
        }
        let home = tempfile::Builder::new()
            .prefix("cvm-home-")
            .tempdir()
            .unwrap();
        std::fs::write(
            home.path().join("config.yaml"),
            format!("default_image: {image}\n"),
        )
        .unwrap();
        Ctx {
            home,
            bin: PathBuf::from(env!("CARGO_BIN_EXE_claude-vm")),
            work: tempfile::Builder::new()
                .prefix("cvm-work-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("CLAUDE_VM_HOME", self.home.path())
            .env_remove("CLAUDE_VM_CONFIG")
            .env_remove("DOCKER_HOST")
            // Whoever ran the tests through sudo is no one the workspaces should know of.
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    /// Run claude-vm with these arguments.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().unwrap())
    }

    /// `workspace up` that must succeed; returns the workspace JSON.
    #[track_caller]
    pub fn up(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["workspace", "up", "--json"];
        full.extend_from_slice(args);
        let out = self.run(&full).ok();
        out.json()["workspace"].clone()
    }

    pub fn list(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["workspace", "list", "--json"]);
        out.json().as_array().cloned().unwrap_or_default()
    }

    /// Docker resources (containers and volumes) labelled as belonging to this home.
    pub fn docker_debris(&self) -> Vec<String> {
        let label = format!("label=dev.claude-vm.home={}", self.home.path().display());
        let mut found = Vec::new();
        for args in [
            vec!["ps", "-a", "--filter", &label, "--format", "{{.Names}}"],
            vec!["volume", "ls", "--filter", &label, "--format", "{{.Name}}"],
        ] {
            let out = Command::new("docker").args(&args).output().unwrap();
            found.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_owned),
            );
        }
        found
    }

    /// A path inside the work folder.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.work.path().join(rel)
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // Remove everything this home created, even when the test failed.
        let label = format!("label=dev.claude-vm.home={}", self.home.path().display());
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output();
        if let Ok(o) = ids {
            for id in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        let vols = Command::new("docker")
            .args(["volume", "ls", "-q", "--filter", &label])
            .output();
        if let Ok(o) = vols {
            for v in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("docker")
                    .args(["volume", "rm", "-f", v])
                    .output();
            }
        }
    }
}

/// `docker exec` in a workspace's container; returns stdout, panics on failure.
#[track_caller]
pub fn dexec(id: &str, script: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", &format!("claude-vm-{id}"), "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker exec {script:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pid of a workspace's daemon, if it answers its health check now.
pub fn daemon_pid(id: &str) -> Option<u64> {
    let out = Command::new("docker")
        .args([
            "exec",
            &format!("claude-vm-{id}"),
            "/opt/claude-vm/bin/claude-vm",
            "agent",
            "health",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()?["pid"].as_u64()
}

/// Wait (up to 20 s) until the workspace's daemon answers with a pid other than `not`.
#[track_caller]
pub fn wait_daemon(id: &str, not: Option<u64>) -> u64 {
    let start = std::time::Instant::now();
    loop {
        if let Some(pid) = daemon_pid(id)
            && Some(pid) != not
        {
            return pid;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the daemon did not come back"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Run git in `dir` with a fixed identity.
#[track_caller]
pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.email=test@example.com",
            "-c",
            "user.name=Test",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small project: a git repo with tracked files, an untracked binary file, an executable,
/// a symlink and ignored files.
pub fn sample_project(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("src/nested")).unwrap();
    std::fs::create_dir_all(dir.join("build")).unwrap();
    std::fs::write(dir.join(".gitignore"), "build/\n*.log\n").unwrap();
    std::fs::write(dir.join("README.md"), "# sample\n").unwrap();
    std::fs::write(dir.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    std::fs::write(dir.join("src/nested/deep.txt"), "deep\n").unwrap();
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("private.txt"), "secret-ish\n").unwrap();
    std::fs::set_permissions(
        dir.join("private.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("src/lib.rs", dir.join("lib-link")).unwrap();
    git(dir, &["init", "-q"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "initial"]);
    // Untracked, binary, not ignored: must be copied.
    let blob: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("data.bin"), blob).unwrap();
    // Ignored: must not be copied.
    std::fs::write(dir.join("build/out.o"), "object").unwrap();
    std::fs::write(dir.join("debug.log"), "log").unwrap();
}

/// A listing of a tree: path, type, mode, size, sha256 — the same command on both sides.
pub const MANIFEST: &str = r#"find . -mindepth 1 \( -name build -o -name debug.log \) -prune -o -printf '%P %y %m %l\n' | LC_ALL=C sort; find . -type f ! -path './build/*' ! -name debug.log -print0 | LC_ALL=C sort -z | xargs -0 sha256sum"#;

/// The manifest of a local folder.
pub fn local_manifest(dir: &Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(MANIFEST)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}
