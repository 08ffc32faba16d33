//! `GET /v1/git/diff`: a project's changes against its HEAD, untracked files included.
//!
//! We run the real `git` binary rather than a library so the answer is exactly what the agent
//! sees with `git diff` (same attributes, same rename detection, same ignore rules). Untracked
//! files are shown as new files by marking them intent-to-add, but in a throw-away copy of the
//! index and with a throw-away object directory: the repository's own `.git` is never written,
//! so an agent running git at the same time never sees a lock, a changed index or a new object.
//!
//! The daemon runs as root while the project belongs to the agent user, so callers pass that
//! user in `run_as`: the repository's own config (filters, for example) then runs as the agent,
//! never as root, and `safe.directory=*` keeps git from refusing a repository owned by someone
//! else. This is blocking work (it waits for git): call it from `spawn_blocking`.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use claude_vm_protocol::api::{ChangeKind, Diff, FileChange};

/// Largest patch returned, in bytes; a longer one is cut at a line end and ends with
/// [`TRUNCATED_NOTE`].
pub const PATCH_LIMIT: usize = 8 * 1024 * 1024;

/// Last line of a patch cut at [`PATCH_LIMIT`].
pub const TRUNCATED_NOTE: &str = "[truncated: the patch is larger than 8 MiB]\n";

/// Options given to every git command: a repository owned by another user is fine, nothing
/// starts a file-system monitor, the scratch index is written whole (a split index would write
/// a shared file into `.git`), patch paths are readable UTF-8 and pathspecs are never globs.
const GIT_OPTIONS: &[&str] = &[
    "-c",
    "safe.directory=*",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.splitIndex=false",
    "-c",
    "core.quotePath=false",
    "-c",
    "advice.addEmbeddedRepo=false",
    "--no-pager",
    "--literal-pathspecs",
];

/// Options of every `git diff`: no colors, no external programs, git's own prefixes.
const DIFF_OPTIONS: &[&str] = &[
    "diff",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "--submodule=short",
    "-M",
];

/// Used when the daemon has no `PATH` of its own.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{} is not a git repository", path.display())]
    NotARepository { path: PathBuf },
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("git {command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("cannot prepare a scratch index: {0}")]
    Scratch(#[source] std::io::Error),
}

/// The changes of the git repository at `project_dir` against its HEAD (against the empty tree
/// before the first commit), untracked files that are not ignored included as
/// [`ChangeKind::Untracked`]. With `stat_only` the patch is left empty. With `run_as`
/// (uid, gid) git runs as that user, with `HOME` set to the project's parent.
///
/// `project_dir` must be the top of the work tree: git does not look for a repository in its
/// parents. Nothing in the repository is modified.
pub fn diff(
    project_dir: &Path,
    stat_only: bool,
    run_as: Option<(u32, u32)>,
) -> Result<Diff, GitError> {
    let not_a_repository = || GitError::NotARepository {
        path: project_dir.to_path_buf(),
    };
    let canonical = std::fs::canonicalize(project_dir).map_err(|_| not_a_repository())?;
    if !canonical.is_dir() {
        return Err(not_a_repository());
    }
    let mut git = Git::new(&canonical, run_as);

    let inside = git.output(&["rev-parse", "--is-inside-work-tree"], None)?;
    if !inside.status.success() {
        let stderr = String::from_utf8_lossy(&inside.stderr);
        if stderr.contains("not a git repository") {
            return Err(not_a_repository());
        }
        return Err(failed(&["rev-parse"], &inside));
    }
    if inside.stdout.trim_ascii() != b"true" {
        return Err(not_a_repository());
    }

    let paths = git.run(&["rev-parse", "--git-path", "index", "--git-path", "objects"])?;
    let mut paths = paths
        .split(|&b| b == b'\n')
        .map(|p| canonical.join(bytes_to_path(p)));
    let (Some(index), Some(objects)) = (paths.next(), paths.next()) else {
        return Err(GitError::Failed {
            command: "rev-parse".into(),
            stderr: "no index or object directory".into(),
        });
    };

    let head = git
        .success(&["rev-parse", "-q", "--verify", "HEAD^{commit}"])?
        .map(|out| lossy(out.trim_ascii()));
    let branch = git
        .success(&["symbolic-ref", "--short", "-q", "HEAD"])?
        .map(|out| lossy(out.trim_ascii()));
    let base = match &head {
        Some(sha) => sha.clone(),
        None => lossy(
            git.run(&["hash-object", "-t", "tree", "/dev/null"])?
                .trim_ascii(),
        ),
    };

    let scratch = Scratch::new(&index, run_as).map_err(GitError::Scratch)?;
    git.env.push(("GIT_INDEX_FILE", scratch.index().into()));
    git.env
        .push(("GIT_OBJECT_DIRECTORY", scratch.objects().into()));
    git.env
        .push(("GIT_ALTERNATE_OBJECT_DIRECTORIES", alternate(&objects)));

    let others = git.run(&["ls-files", "-z", "--others", "--exclude-standard"])?;
    let untracked: HashSet<String> = split_nul(&others)
        .map(|p| lossy(p.strip_suffix(b"/").unwrap_or(p)))
        .collect();
    if !untracked.is_empty() {
        let args = [
            "add",
            "--intent-to-add",
            "--ignore-errors",
            "--pathspec-from-file=-",
            "--pathspec-file-nul",
        ];
        let added = git.output(&args, Some(others))?;
        if !added.status.success() {
            tracing::warn!(
                project = %project_dir.display(),
                stderr = %String::from_utf8_lossy(&added.stderr).trim(),
                "some untracked files could not be added to the diff"
            );
        }
    }

    let stats = parse_numstat(&git.run(&diff_args(&["--numstat", "-z"], &base))?);
    let names = git.run(&diff_args(&["--name-status", "-z"], &base))?;
    let files = parse_name_status(&names, &stats, &untracked);

    let patch = if stat_only {
        String::new()
    } else {
        let (bytes, truncated) = git.capped(&diff_args(&[], &base), PATCH_LIMIT)?;
        let mut patch = String::from_utf8_lossy(&bytes).into_owned();
        if truncated {
            patch.push_str(TRUNCATED_NOTE);
        }
        patch
    };

    Ok(Diff {
        project_dir: project_dir.to_string_lossy().into_owned(),
        branch,
        head,
        files,
        patch,
    })
}

/// `git diff <base> <extra> --`.
fn diff_args<'a>(extra: &[&'a str], base: &'a str) -> Vec<&'a str> {
    let mut args = DIFF_OPTIONS.to_vec();
    args.extend_from_slice(extra);
    args.push(base);
    args.push("--");
    args
}

/// How to run git in one project.
struct Git {
    dir: PathBuf,
    run_as: Option<(u32, u32)>,
    env: Vec<(&'static str, OsString)>,
}

impl Git {
    fn new(dir: &Path, run_as: Option<(u32, u32)>) -> Git {
        let mut env: Vec<(&'static str, OsString)> = vec![
            (
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
            ),
            ("LC_ALL", "C".into()),
            ("GIT_OPTIONAL_LOCKS", "0".into()),
            ("GIT_TERMINAL_PROMPT", "0".into()),
        ];
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            // Never pick up a repository around the project.
            env.push(("GIT_CEILING_DIRECTORIES", parent.into()));
        }
        match (run_as, parent) {
            (Some(_), Some(parent)) => env.push(("HOME", parent.into())),
            (Some(_), None) => env.push(("HOME", dir.into())),
            (None, _) => {
                for name in ["HOME", "XDG_CONFIG_HOME"] {
                    if let Some(value) = std::env::var_os(name) {
                        env.push((name, value));
                    }
                }
            }
        }
        Git {
            dir: dir.to_path_buf(),
            run_as,
            env,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.args(GIT_OPTIONS)
            .args(args)
            .current_dir(&self.dir)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// Run to the end, feeding `stdin`.
    fn output(&self, args: &[&str], stdin: Option<Vec<u8>>) -> Result<Output, GitError> {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let Some(input) = stdin else {
            return cmd.stdin(Stdio::null()).output().map_err(GitError::Spawn);
        };
        let mut child = cmd.stdin(Stdio::piped()).spawn().map_err(GitError::Spawn)?;
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // Written from a thread: git may fill its output pipes before it reads all its input.
        let writer = std::thread::spawn(move || pipe.write_all(&input));
        let output = child.wait_with_output().map_err(GitError::Spawn)?;
        let _ = writer.join();
        Ok(output)
    }

    /// Standard output of a command that must succeed.
    fn run(&self, args: &[&str]) -> Result<Vec<u8>, GitError> {
        let output = self.output(args, None)?;
        if !output.status.success() {
            return Err(failed(args, &output));
        }
        Ok(output.stdout)
    }

    /// Standard output when the command succeeds, `None` when it fails quietly (exit status 1,
    /// as `rev-parse --verify -q` and `symbolic-ref -q` do).
    fn success(&self, args: &[&str]) -> Result<Option<Vec<u8>>, GitError> {
        let output = self.output(args, None)?;
        match output.status.code() {
            Some(0) => Ok(Some(output.stdout)),
            Some(1) => Ok(None),
            _ => Err(failed(args, &output)),
        }
    }

    /// At most `limit` bytes of standard output, cut at a line end; `true` when there was
    /// more (git is then stopped).
    fn capped(&self, args: &[&str], limit: usize) -> Result<(Vec<u8>, bool), GitError> {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(GitError::Spawn)?;
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let errors = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let mut out = Vec::new();
        let read = child
            .stdout
            .take()
            .expect("stdout is piped")
            .take(limit as u64 + 1)
            .read_to_end(&mut out);
        let truncated = out.len() > limit;
        if truncated || read.is_err() {
            // Our own child, by its id: git would otherwise wait on a full pipe.
            let _ = child.kill();
        }
        let status = child.wait().map_err(GitError::Spawn)?;
        let stderr = errors.join().unwrap_or_default();
        read.map_err(GitError::Spawn)?;
        if truncated {
            let end = out[..limit]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            out.truncate(end);
            return Ok((out, true));
        }
        if !status.success() {
            return Err(GitError::Failed {
                command: command_name(args),
                stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            });
        }
        Ok((out, false))
    }
}

fn command_name(args: &[&str]) -> String {
    args.first().copied().unwrap_or("").to_string()
}

fn failed(args: &[&str], output: &Output) -> GitError {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    GitError::Failed {
        command: command_name(args),
        stderr: if stderr.is_empty() {
            output.status.to_string()
        } else {
            stderr
        },
    }
}

/// A private directory holding the copy of the index and the objects git writes while we mark
/// untracked files (the empty blob); removed when dropped.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(index: &Path, run_as: Option<(u32, u32)>) -> std::io::Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "claude-vm-git-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let scratch = Scratch { dir };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(scratch.objects())?;
        match std::fs::copy(index, scratch.index()) {
            // Same modification time as the original: git compares it with the files' to
            // notice files changed right after the index was written (racily clean entries),
            // which a fresh time would hide.
            Ok(_) => std::fs::File::options()
                .write(true)
                .open(scratch.index())?
                .set_modified(std::fs::metadata(index)?.modified()?)?,
            // No index yet: a new repository where nothing was ever added.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some((uid, gid)) = run_as {
            // git writes `index.lock` next to the index and renames it: the agent owns it all.
            let uid = Some(nix::unistd::Uid::from_raw(uid));
            let gid = Some(nix::unistd::Gid::from_raw(gid));
            for path in [scratch.dir.clone(), scratch.objects(), scratch.index()] {
                match nix::unistd::chown(&path, uid, gid) {
                    Ok(()) => {}
                    Err(nix::errno::Errno::ENOENT) if path == scratch.index() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(scratch)
    }

    fn index(&self) -> PathBuf {
        self.dir.join("index")
    }

    fn objects(&self) -> PathBuf {
        self.dir.join("objects")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), "cannot remove git scratch directory: {e}");
        }
    }
}

/// `GIT_ALTERNATE_OBJECT_DIRECTORIES` naming one directory: C-quoted when it holds a `:`.
fn alternate(objects: &Path) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let raw = objects.as_os_str().as_bytes();
    if !raw.contains(&b':') && !raw.starts_with(b"\"") {
        return objects.as_os_str().to_owned();
    }
    let mut quoted = vec![b'"'];
    for &b in raw {
        match b {
            b'"' | b'\\' => quoted.extend_from_slice(&[b'\\', b]),
            b'\n' => quoted.extend_from_slice(b"\\n"),
            _ => quoted.push(b),
        }
    }
    quoted.push(b'"');
    OsString::from_vec(quoted)
}

fn bytes_to_path(bytes: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(OsStr::from_bytes(bytes))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// NUL-terminated fields (a trailing empty field is dropped).
fn split_nul(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    bytes.split(|&b| b == 0).filter(move |_| !bytes.is_empty())
}

/// Lines added and removed, `None` for binary files.
#[derive(Debug, Clone, Copy)]
struct Stat {
    additions: Option<u64>,
    deletions: Option<u64>,
    binary: bool,
}

/// `git diff --numstat -z`: `added\tdeleted\tpath\0`, or for renames
/// `added\tdeleted\t\0old\0new\0`; binary files count `-`. Keyed by the new path.
fn parse_numstat(out: &[u8]) -> HashMap<String, Stat> {
    let mut stats = HashMap::new();
    let mut fields = split_nul(out);
    while let Some(record) = fields.next() {
        let mut parts = record.splitn(3, |&b| b == b'\t');
        let (Some(added), Some(deleted), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = if path.is_empty() {
            let _old = fields.next();
            match fields.next() {
                Some(new) => new,
                None => break,
            }
        } else {
            path
        };
        let count = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|s| s.parse().ok());
        stats.insert(
            lossy(path),
            Stat {
                additions: count(added),
                deletions: count(deleted),
                binary: added == b"-" && deleted == b"-",
            },
        );
    }
    stats
}

/// `git diff --name-status -z`: `X\0path\0`, or for renames and copies `R100\0old\0new\0`.
fn parse_name_status(
    out: &[u8],
    stats: &HashMap<String, Stat>,
    untracked: &HashSet<String>,
) -> Vec<FileChange> {
    let mut files: Vec<FileChange> = Vec::new();
    let mut seen = HashSet::new();
    let mut fields = split_nul(out);
    while let Some(status) = fields.next() {
        let Some(&letter) = status.first() else {
            continue;
        };
        let Some(first) = fields.next() else { break };
        let (path, old_path) = if matches!(letter, b'R' | b'C') {
            let Some(new) = fields.next() else { break };
            (lossy(new), Some(lossy(first)))
        } else {
            (lossy(first), None)
        };
        let change = match letter {
            b'A' if untracked.contains(&path) => ChangeKind::Untracked,
            b'A' | b'C' => ChangeKind::Added,
            b'D' => ChangeKind::Deleted,
            b'R' => ChangeKind::Renamed,
            b'T' => ChangeKind::TypeChanged,
            // M, and U (unmerged) or X (unknown), which both have a working-tree file.
            _ => ChangeKind::Modified,
        };
        if !seen.insert(path.clone()) {
            continue;
        }
        let stat = stats.get(&path).copied().unwrap_or(Stat {
            additions: None,
            deletions: None,
            binary: false,
        });
        files.push(FileChange {
            path,
            old_path,
            change,
            additions: stat.additions,
            deletions: stat.deletions,
            binary: stat.binary,
        });
    }
    files
}
