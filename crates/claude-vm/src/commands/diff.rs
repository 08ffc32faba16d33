//! `claude-vm diff`: the project's changes in a workspace, untracked files included.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Result;
use claude_vm_protocol::api::{Diff, PatchLine, PatchReader};

use super::print_json;
use crate::backend::Backend;
use crate::cli::ColorChoice;

pub fn run(
    engine: &Backend,
    workspace: &str,
    stat: bool,
    json: bool,
    color: ColorChoice,
) -> Result<ExitCode> {
    let rt = super::runtime()?;
    let diff = rt.block_on(engine.diff(workspace, stat))?;
    if json {
        print_json(&diff)?;
        return Ok(ExitCode::SUCCESS);
    }
    let color = match color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    if diff.files.is_empty() {
        eprintln!("no changes in {}", diff.project_dir);
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    if stat {
        out.write_all(render_stat(&diff, color).as_bytes())?;
    } else {
        out.write_all(render_patch(&diff.patch, color).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn paint(s: &str, code: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

/// `git diff --stat`-like summary, marking untracked and binary files.
pub fn render_stat(diff: &Diff, color: bool) -> String {
    let width = diff
        .files
        .iter()
        .map(|f| f.path.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    let (mut adds, mut dels) = (0, 0);
    for f in &diff.files {
        let tag = f.change.label();
        let counts = if f.binary {
            "binary".to_owned()
        } else {
            let a = f.additions.unwrap_or(0);
            let d = f.deletions.unwrap_or(0);
            adds += a;
            dels += d;
            format!(
                "{} {}",
                paint(&format!("+{a}"), "32", color),
                paint(&format!("-{d}"), "31", color)
            )
        };
        let path = match &f.old_path {
            Some(old) => format!("{old} => {}", f.path),
            None => f.path.clone(),
        };
        out.push_str(&format!(" {path:<width$}  {tag:<10} {counts}\n"));
    }
    out.push_str(&format!(
        " {} file{} changed, {adds} insertion{}(+), {dels} deletion{}(-)\n",
        diff.files.len(),
        if diff.files.len() == 1 { "" } else { "s" },
        if adds == 1 { "" } else { "s" },
        if dels == 1 { "" } else { "s" },
    ));
    out
}

/// The unified diff, colored like git's.
pub fn render_patch(patch: &str, color: bool) -> String {
    if !color {
        return patch.to_owned();
    }
    let mut out = String::with_capacity(patch.len() + patch.len() / 8);
    let mut reader = PatchReader::new();
    for line in patch.split_inclusive('\n') {
        let code = match reader.line(line) {
            PatchLine::Header => "1",
            PatchLine::Hunk => "36",
            PatchLine::Added => "32",
            PatchLine::Removed => "31",
            PatchLine::Context => "",
        };
        if code.is_empty() {
            out.push_str(line);
        } else {
            let body = line.trim_end_matches('\n');
            out.push_str(&format!("\x1b[{code}m{body}\x1b[0m"));
            if line.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use claude_vm_protocol::api::{ChangeKind, FileChange};

    #[test]
    fn stat_rendering() {
        let d = Diff {
            project_dir: "/workspace/p".into(),
            branch: Some("main".into()),
            head: None,
            patch: String::new(),
            files: vec![
                FileChange {
                    path: "a.rs".into(),
                    old_path: None,
                    change: ChangeKind::Modified,
                    additions: Some(3),
                    deletions: Some(1),
                    binary: false,
                },
                FileChange {
                    path: "img.png".into(),
                    old_path: None,
                    change: ChangeKind::Untracked,
                    additions: None,
                    deletions: None,
                    binary: true,
                },
            ],
        };
        let s = render_stat(&d, false);
        assert!(s.contains(" a.rs     modified   +3 -1\n"), "{s}");
        assert!(s.contains(" img.png  untracked  binary\n"), "{s}");
        assert!(
            s.ends_with(" 2 files changed, 3 insertions(+), 1 deletion(-)\n"),
            "{s}"
        );
    }

    #[test]
    fn patch_coloring() {
        let p = "diff --git a/x b/x\n@@ -1 +1 @@\n-old\n+new\n ctx\n";
        let c = render_patch(p, true);
        assert!(
            c.contains("\x1b[31m-old\x1b[0m\n")
                && c.contains("\x1b[32m+new\x1b[0m\n")
                && c.contains(" ctx\n")
        );
        assert_eq!(render_patch(p, false), p);
    }
}
