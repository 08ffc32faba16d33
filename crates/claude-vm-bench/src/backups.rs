//! The `backup` group: claude-vm's backups of a workspace against the `restic` CLI on the
//! same tree and the same kind of repository (a local folder), in the same run.
//!
//! The tree is real code nobody here wrote: the sources in Cargo's registry cache (up to
//! `--backup-mb`), copied into a temporary folder and made a git repository. Ours reads the
//! workspace through its link; restic reads the same files from the local disk.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::exec::{Tools, run, timed};

pub struct Pair {
    pub ours: Vec<Duration>,
    pub baseline: Vec<Duration>,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            ours: Vec::new(),
            baseline: Vec::new(),
        }
    }
}

pub struct BackupTimes {
    pub tree_bytes: u64,
    pub tree_files: u64,
    pub first: Pair,
    pub unchanged: Pair,
    pub one_file: Pair,
    pub restore: Pair,
    /// Size of the file changed for `one_file`, and what each side added for it.
    pub changed_file_bytes: u64,
    pub ours_added: u64,
    pub baseline_added: u64,
}

/// Copy crate sources from Cargo's registry cache into `dest` until `max_bytes`.
fn corpus(dest: &Path, max_bytes: u64) -> Result<(u64, u64)> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::home_dir().map(|h| h.join(".cargo")))
        .context("no CARGO_HOME or home folder")?;
    let src = home.join("registry").join("src");
    let mut crates: Vec<PathBuf> = Vec::new();
    for index in std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))? {
        for c in std::fs::read_dir(index?.path())? {
            crates.push(c?.path());
        }
    }
    crates.sort();
    if crates.is_empty() {
        bail!(
            "no crate sources in {}; run a cargo build first",
            src.display()
        );
    }
    std::fs::create_dir_all(dest)?;
    let (mut bytes, mut files) = (0u64, 0u64);
    for c in crates {
        if bytes >= max_bytes {
            break;
        }
        let (b, f) = copy_tree(&c, &dest.join(c.file_name().expect("a crate folder")))?;
        bytes += b;
        files += f;
    }
    Ok((bytes, files))
}

fn copy_tree(from: &Path, to: &Path) -> Result<(u64, u64)> {
    std::fs::create_dir_all(to)?;
    let (mut bytes, mut files) = (0, 0);
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let t = e.file_type()?;
        let target = to.join(e.file_name());
        if t.is_dir() {
            let (b, f) = copy_tree(&e.path(), &target)?;
            bytes += b;
            files += f;
        } else if t.is_file() {
            bytes += std::fs::copy(e.path(), &target)?;
            files += 1;
        }
    }
    Ok((bytes, files))
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let st = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !st.success() {
        bail!("git {args:?} failed");
    }
    Ok(())
}

fn restic(repo: &Path, password: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("restic");
    c.env("RESTIC_REPOSITORY", repo)
        .env("RESTIC_PASSWORD_FILE", password)
        .env("RESTIC_CACHE_DIR", cache)
        .args(args);
    c
}

/// `data_added` of restic's `backup --json` summary.
fn restic_added(out: &str) -> u64 {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message_type"] == "summary")
        .and_then(|v| v["data_added"].as_u64())
        .unwrap_or(0)
}

pub fn backups(tools: &Tools, max_mb: u64, repetitions: usize) -> Result<BackupTimes> {
    let scratch = tempfile::Builder::new()
        .prefix("claude-vm-bench-backup.")
        .tempdir()?;
    let tree = scratch.path().join("crates");
    eprintln!("backup: copying crate sources into {}", tree.display());
    let (tree_bytes, tree_files) = corpus(&tree, max_mb * 1_000_000)?;
    git(&tree, &["init", "-q"])?;
    git(&tree, &["add", "-A"])?;
    git(&tree, &["commit", "-q", "-m", "sources"])?;
    eprintln!(
        "backup: {tree_files} files, {:.0} MB; bringing up workspace bench-backup",
        tree_bytes as f64 / 1e6
    );
    run(tools.cvm([
        "workspace",
        "up",
        &tree.display().to_string(),
        "--name",
        "bench-backup",
        "-q",
    ]))?;
    // The same bytes on both sides: what is in the workspace, read back out by restic.
    let password = scratch.path().join("restic-password");
    std::fs::write(&password, "bench\n")?;
    let cache = scratch.path().join("restic-cache");
    let mut t = BackupTimes {
        tree_bytes,
        tree_files,
        first: Pair::new(),
        unchanged: Pair::new(),
        one_file: Pair::new(),
        restore: Pair::new(),
        changed_file_bytes: 0,
        ours_added: 0,
        baseline_added: 0,
    };
    let ours_backup = || -> Result<(Duration, serde_json::Value)> {
        settle();
        let (d, out) = timed(tools.cvm(["workspace", "backup", "bench-backup", "--json"]))?;
        Ok((d, serde_json::from_str(&out)?))
    };
    // First backups: each into a fresh repository.
    for i in 0..repetitions {
        let repo = scratch.path().join(format!("restic-repo-{i}"));
        run(restic(&repo, &password, &cache, &["init", "-q"]))?;
        settle();
        let (d, _) = timed(restic(
            &repo,
            &password,
            &cache,
            &["backup", "-q", "--json", &tree.display().to_string()],
        ))?;
        t.first.baseline.push(d);
        let ours_repo = scratch.path().join(format!("ours-repo-{i}"));
        std::fs::write(
            tools.home.join("config.yaml"),
            with_repository(&tools.home.join("config.yaml"), &ours_repo)?,
        )?;
        let (d, _) = ours_backup()?;
        t.first.ours.push(d);
    }
    let repo = scratch
        .path()
        .join(format!("restic-repo-{}", repetitions - 1));
    // Nothing changed.
    for _ in 0..repetitions {
        settle();
        let (d, _) = timed(restic(
            &repo,
            &password,
            &cache,
            &["backup", "-q", "--json", &tree.display().to_string()],
        ))?;
        t.unchanged.baseline.push(d);
        let (d, _) = ours_backup()?;
        t.unchanged.ours.push(d);
    }
    // One file changed (1 MB of new bytes appended to a source file, on both sides).
    let rel = "changed-by-bench.bin";
    for i in 0..repetitions {
        let blob: Vec<u8> = (0..1_000_000u32)
            .map(|j| (j.wrapping_mul(2654435761).wrapping_add(i as u32 * 7919) >> 13) as u8)
            .collect();
        t.changed_file_bytes = blob.len() as u64;
        std::fs::write(tree.join(rel), &blob)?;
        settle();
        let (d, out) = timed(restic(
            &repo,
            &password,
            &cache,
            &["backup", "--json", &tree.display().to_string()],
        ))?;
        t.one_file.baseline.push(d);
        t.baseline_added = restic_added(&out);
        run(tools.cvm([
            "cp",
            &tree.join(rel).display().to_string(),
            &format!("bench-backup:/workspace/crates/{rel}"),
        ]))?;
        let (d, v) = ours_backup()?;
        t.one_file.ours.push(d);
        t.ours_added = v["snapshot"]["bytes_added"].as_u64().unwrap_or(0);
    }
    // Full restores.
    for i in 0..repetitions {
        let target = scratch.path().join(format!("restored-{i}"));
        settle();
        let (d, _) = timed(restic(
            &repo,
            &password,
            &cache,
            &[
                "restore",
                "latest",
                "--target",
                &target.display().to_string(),
            ],
        ))?;
        t.restore.baseline.push(d);
        std::fs::remove_dir_all(&target)?;
        let name = format!("bench-restored-{i}");
        settle();
        let (d, _) = timed(tools.cvm([
            "workspace",
            "restore",
            "bench-backup",
            "--name",
            &name,
            "-q",
        ]))?;
        t.restore.ours.push(d);
        run(tools.cvm(["workspace", "delete", &name, "-y", "--purge", "-q"]))?;
    }
    run(tools.cvm(["workspace", "delete", "bench-backup", "-y", "--purge", "-q"]))?;
    Ok(t)
}

/// Write out what earlier steps left dirty, so neither side's time includes the other's
/// writeback.
fn settle() {
    let _ = Command::new("sync").status();
}

/// The config with `backup.repository` set to `repo` (replacing an earlier one).
fn with_repository(config: &Path, repo: &Path) -> Result<String> {
    let text = std::fs::read_to_string(config).unwrap_or_default();
    let mut out: String = text
        .lines()
        .take_while(|l| !l.starts_with("backup:"))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!("backup:\n  repository: {}\n", repo.display()));
    Ok(out)
}
