//! The project copied into every workspace: a small git repository.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::exec;

/// Number of committed files (plus one untracked file).
pub const FILES: usize = 20;

/// Fill `dir` with a git repository of [`FILES`] small committed files in a few folders,
/// one commit, and one untracked file.
pub fn small_repo(dir: &Path) -> Result<()> {
    for i in 0..FILES {
        let sub = match i % 4 {
            0 => "src",
            1 => "src/util",
            2 => "docs",
            _ => "tests",
        };
        let path = dir.join(sub).join(format!("file{i:02}.txt"));
        fs::create_dir_all(path.parent().expect("a file in a folder"))?;
        let body: String = (0..40)
            .map(|line| format!("file {i}, line {line}: some text to make it a few KiB\n"))
            .collect();
        fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    let git = |args: &[&str]| {
        let mut cmd = Command::new("git");
        cmd.arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=claude-vm-bench",
                "-c",
                "user.email=bench@claude-vm.invalid",
                "-c",
                "init.defaultBranch=main",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args);
        exec::run(cmd).context("git is needed to make the test repository")
    };
    git(&["init", "-q"])?;
    git(&["add", "-A"])?;
    git(&["commit", "-q", "-m", "initial commit"])?;
    fs::write(dir.join("NOTES.untracked.txt"), "not committed yet\n")?;
    Ok(())
}

/// Number of files [`text_files`] writes.
pub const TEXT_FILES: usize = 300;

/// Fill `dir` with [`TEXT_FILES`] text files of ~1.5 KiB in 10 folders (no git).
pub fn text_files(dir: &Path) -> Result<()> {
    for i in 0..TEXT_FILES {
        let path = dir
            .join(format!("src/part{:02}", i % 10))
            .join(format!("file{i:03}.txt"));
        fs::create_dir_all(path.parent().expect("a file in a folder"))?;
        let body: String = (0..30)
            .map(|line| format!("file {i}, line {line}: a little text for the project\n"))
            .collect();
        fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
