//! The workspace side of a backup: what is in a tree, as restic nodes, one JSON line per
//! entry in the order the archiver needs (depth first, names sorted).
//!
//! The walk is rustic's own (`LocalSource`: `.gitignore` rules, no symlink followed), so
//! every node carries exactly the metadata `restic backup` would record. The daemon runs it
//! for the agent's part of the volume in a child process with the agent's privileges (a
//! hostile `.gitignore`, a FIFO or a symlink to `/dev/zero`, can only stall or exhaust that
//! child), and in-process only for its own root-only state folder. File contents are not
//! read here: the control side asks for the ones that changed.

use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use rustic_core::repofile::Node;
use rustic_core::{
    LocalSource, LocalSourceFilterOptions, LocalSourceSaveOptions, ReadSource, XattrOption,
};
use serde::{Deserialize, Serialize};

/// One line of a scan.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScanLine {
    Entry {
        path: PathBuf,
        node: Box<Node>,
    },
    /// An entry that could not be read (it is left out; the backup reports it).
    Error {
        error: String,
    },
    /// The scan ended before its end, and why (the daemon's last line when it stops a scan
    /// that made no progress): the backup fails.
    Stopped {
        stopped: String,
    },
}

/// What to leave out of a scan.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Honour `.gitignore` (and `.git/info/exclude`) files.
    pub git_ignore: bool,
    /// Absolute paths left out with everything below them.
    pub exclude: Vec<PathBuf>,
    /// List the root folder itself first (when it is not the snapshot's root, but one
    /// folder in it scanned on its own).
    pub with_root: bool,
    /// Walk by paths relative to the current directory, which is `root` (a process of
    /// its own, which may change directory): a path looked up from `/` is checked at every
    /// step, and where `/` is a FUSE file system (Docker's fuse-overlayfs) every check of a
    /// non-root user's lookup is a round trip to its daemon, ten times slower.
    pub from_cwd: bool,
}

/// Walk `root` and write one [`ScanLine`] per entry (the root itself is not listed).
/// Returns the number of entries written.
pub fn scan(root: &Path, opts: &ScanOptions, out: &mut impl Write) -> io::Result<u64> {
    let save = LocalSourceSaveOptions::default().set_xattrs(XattrOption::No);
    // Rules apply in a project whether or not git itself is installed.
    let filter = LocalSourceFilterOptions::default()
        .git_ignore(opts.git_ignore)
        .no_require_git(true);
    let walk_root = if opts.from_cwd { Path::new(".") } else { root };
    // Paths as the walk names them, back under `root`.
    let rooted = |p: PathBuf| -> PathBuf {
        if !opts.from_cwd {
            return p;
        }
        match p.strip_prefix(".") {
            Ok(rel) if rel.as_os_str().is_empty() => root.to_owned(),
            Ok(rel) => root.join(rel),
            Err(_) => root.join(p),
        }
    };
    let source = LocalSource::new(
        save,
        &rustic_core::Excludes::default(),
        &filter,
        &[walk_root],
    )
    .map_err(|e| io::Error::other(e.to_string()))?;
    let mut n = 0;
    if opts.with_root {
        let entry = ignore::WalkBuilder::new(root)
            .max_depth(Some(0))
            .build()
            .next()
            .ok_or_else(|| io::Error::other("the folder to scan vanished"))?
            .map_err(io::Error::other)?;
        let entry = save
            .map_entry(entry)
            .map_err(|e| io::Error::other(e.to_string()))?;
        serde_json::to_writer(
            &mut *out,
            &ScanLine::Entry {
                path: entry.path,
                node: Box::new(entry.node),
            },
        )?;
        out.write_all(b"\n")?;
        n += 1;
    }
    let mut skip: Option<PathBuf> = None;
    for item in source.entries() {
        let line = match item {
            Ok(mut entry) => {
                entry.path = rooted(entry.path);
                if let Some(s) = &skip {
                    if entry.path.starts_with(s) {
                        continue;
                    }
                    skip = None;
                }
                if opts.exclude.iter().any(|x| entry.path.starts_with(x)) {
                    skip = Some(entry.path.clone());
                    continue;
                }
                ScanLine::Entry {
                    path: entry.path,
                    node: Box::new(entry.node),
                }
            }
            Err(e) => {
                let text = e.to_string();
                let named = |x: &PathBuf| {
                    text.contains(&*x.to_string_lossy())
                        || (opts.from_cwd
                            && x.strip_prefix(root).is_ok_and(|rel| {
                                text.contains(&*Path::new(".").join(rel).to_string_lossy())
                            }))
                };
                if opts.exclude.iter().any(named) {
                    continue;
                }
                ScanLine::Error { error: text }
            }
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        n += 1;
    }
    out.flush()?;
    Ok(n)
}

/// Why a line of a scan was refused: the control side reads scans as hostile input.
#[derive(Debug, thiserror::Error)]
pub enum BadScan {
    #[error("line {line}: not a scan entry ({reason})")]
    Syntax { line: u64, reason: String },
    #[error("line {line}: path {path:?} is not a plain absolute path under {root}")]
    Outside {
        line: u64,
        path: PathBuf,
        root: PathBuf,
    },
    #[error("line {line}: path {path:?} comes after {previous:?}; a scan is sorted")]
    Unsorted {
        line: u64,
        path: PathBuf,
        previous: PathBuf,
    },
    #[error("line {line}: the node's name does not match path {path:?}")]
    Name { line: u64, path: PathBuf },
    /// A [`ScanLine::Stopped`]: its reason, printable characters only (an agent may have
    /// written it).
    #[error("{reason}")]
    Stopped { reason: String },
}

/// Checks a scan line by line: every path plain, absolute, strictly below `root`, in
/// strictly increasing order, its node named like its last component.
#[derive(Debug)]
pub struct Checker {
    root: PathBuf,
    previous: Option<PathBuf>,
    line: u64,
}

impl Checker {
    pub fn new(root: impl Into<PathBuf>) -> Checker {
        Checker {
            root: root.into(),
            previous: None,
            line: 0,
        }
    }

    /// Parse and check one line. `Ok(None)` for an error line (given back as text).
    pub fn check(&mut self, text: &[u8]) -> Result<Result<(PathBuf, Node), String>, BadScan> {
        self.line += 1;
        let line = self.line;
        let parsed: ScanLine = serde_json::from_slice(text).map_err(|e| BadScan::Syntax {
            line,
            reason: e.to_string(),
        })?;
        let (path, node) = match parsed {
            ScanLine::Error { error } => return Ok(Err(error)),
            ScanLine::Stopped { stopped } => {
                return Err(BadScan::Stopped {
                    reason: stopped
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(500)
                        .collect(),
                });
            }
            ScanLine::Entry { path, node } => (path, *node),
        };
        let plain = path.is_absolute()
            && path.starts_with(&self.root)
            && path != self.root
            && path
                .components()
                .skip(1)
                .all(|c| matches!(c, Component::Normal(_)));
        if !plain {
            return Err(BadScan::Outside {
                line,
                path,
                root: self.root.clone(),
            });
        }
        if let Some(prev) = &self.previous
            && path.cmp(prev) != std::cmp::Ordering::Greater
        {
            return Err(BadScan::Unsorted {
                line,
                path,
                previous: prev.clone(),
            });
        }
        if path.file_name() != Some(&*node.name()) {
            return Err(BadScan::Name { line, path });
        }
        self.previous = Some(path.clone());
        Ok(Ok((path, node)))
    }
}

/// Merge two sorted scans into one sorted scan.
pub fn merge(a: Vec<(PathBuf, Node)>, b: Vec<(PathBuf, Node)>) -> Vec<(PathBuf, Node)> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    loop {
        let take_a = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.0 <= y.0,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        out.extend(if take_a { a.next() } else { b.next() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn lines(out: &[u8]) -> Vec<ScanLine> {
        out.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    fn paths(out: &[u8]) -> Vec<String> {
        lines(out)
            .into_iter()
            .filter_map(|l| match l {
                ScanLine::Entry { path, .. } => Some(path.display().to_string()),
                ScanLine::Error { .. } | ScanLine::Stopped { .. } => None,
            })
            .collect()
    }

    #[test]
    fn scan_is_sorted_honours_gitignore_and_exclusions() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("p/target")).unwrap();
        std::fs::create_dir_all(r.join("p/src")).unwrap();
        std::fs::create_dir_all(r.join("state/ssh")).unwrap();
        std::fs::write(r.join("p/.gitignore"), "target/\n").unwrap();
        std::fs::write(r.join("p/target/big"), "x").unwrap();
        std::fs::write(r.join("p/src/b.rs"), "b").unwrap();
        std::fs::write(r.join("p/src/a.rs"), "a").unwrap();
        std::fs::write(r.join("state/ssh/key"), "k").unwrap();
        std::fs::write(r.join("state/t.jsonl"), "t").unwrap();
        symlink("/etc/passwd", r.join("p/link")).unwrap();
        let mut out = Vec::new();
        let opts = ScanOptions {
            git_ignore: true,
            exclude: vec![r.join("state/ssh")],
            with_root: false,
            from_cwd: false,
        };
        scan(r, &opts, &mut out).unwrap();
        let got = paths(&out);
        let rel: Vec<String> = got
            .iter()
            .map(|p| p.strip_prefix(&*r.to_string_lossy()).unwrap().to_owned())
            .collect();
        assert_eq!(
            rel,
            [
                "/p",
                "/p/.gitignore",
                "/p/link",
                "/p/src",
                "/p/src/a.rs",
                "/p/src/b.rs",
                "/state",
                "/state/t.jsonl"
            ]
        );
        // Every line passes the control side's checks.
        let mut c = Checker::new(r);
        for l in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            c.check(l).unwrap().unwrap();
        }
        // And ignored files are kept when asked.
        let mut out = Vec::new();
        scan(r, &ScanOptions::default(), &mut out).unwrap();
        assert!(paths(&out).iter().any(|p| p.ends_with("p/target/big")));
    }

    #[test]
    fn checker_refuses_what_a_hostile_scan_could_say() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), "x").unwrap();
        let mut out = Vec::new();
        scan(d.path(), &ScanOptions::default(), &mut out).unwrap();
        let line = String::from_utf8(out).unwrap();
        let root = d.path().display().to_string();
        let with_path = |p: &str| line.replace(&format!("{root}/f"), p);
        for (bad, why) in [
            (with_path("/etc/f"), "outside"),
            (with_path(&format!("{root}/../f")), "dotdot"),
            (with_path("f"), "relative"),
            (with_path(&format!("{root}/g")), "name"),
            ("{\"path\":1}".to_owned(), "syntax"),
        ] {
            let mut c = Checker::new(d.path());
            assert!(c.check(bad.trim().as_bytes()).is_err(), "{why}: {bad}");
        }
        let mut c = Checker::new(d.path());
        c.check(line.trim().as_bytes()).unwrap().unwrap();
        assert!(matches!(
            c.check(line.trim().as_bytes()),
            Err(BadScan::Unsorted { .. })
        ));
        assert_eq!(
            Checker::new(d.path())
                .check(br#"{"error":"permission denied"}"#)
                .unwrap()
                .unwrap_err(),
            "permission denied"
        );
        // A scan stopped early fails, with its reason in printable characters only.
        match Checker::new(d.path()).check(br#"{"stopped":"no progress\u001b[2J\nfor 3s"}"#) {
            Err(BadScan::Stopped { reason }) => assert_eq!(reason, "no progress[2Jfor 3s"),
            other => panic!("{other:?}"),
        }
    }
}
