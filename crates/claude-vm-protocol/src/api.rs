//! Request and response bodies of the daemon's `/v1` API (JSON). See `docs/protocol.md`.

use serde::{Deserialize, Serialize};

/// An error answer: every non-2xx response carries one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// Kind of a file system entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// `GET /v1/files/stat`, and each entry of `GET /v1/files/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Path relative to the workspace root (`/workspace`), `/`-separated.
    pub path: String,
    /// Last component.
    pub name: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (`0o755` as 493).
    pub mode: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Target of a symlink.
    pub link_target: Option<String>,
}

/// Status of one changed path in `GET /v1/git/diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
    Renamed,
    /// Not tracked by git (and not ignored): shown as a new file.
    Untracked,
    TypeChanged,
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    /// Path relative to the project folder.
    pub path: String,
    /// For renames: the old path.
    pub old_path: Option<String>,
    pub change: ChangeKind,
    /// Lines added/removed; `None` for binary files.
    pub additions: Option<u64>,
    pub deletions: Option<u64>,
    pub binary: bool,
}

/// `GET /v1/git/diff`: the project's changes against its HEAD, untracked files included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    /// Project folder (absolute, inside the workspace).
    pub project_dir: String,
    /// Current branch, `None` when detached or not a repository.
    pub branch: Option<String>,
    /// Commit the diff is against; `None` before the first commit.
    pub head: Option<String>,
    pub files: Vec<FileChange>,
    /// Unified diff (git format); binary files appear as "Binary files ... differ" only.
    /// Empty when the request asked for `stat` only.
    pub patch: String,
}

/// What the daemon has seen happen lately (`GET /v1/activity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// RFC 3339 time of the last exec session or file write; `None` if nothing yet.
    pub last_activity: Option<String>,
    /// What it was ("exec", "file write", ...).
    pub last_kind: Option<String>,
    /// Exec sessions running now.
    pub running_execs: u64,
}

/// First frame of `POST /v1/exec`: what to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    /// `NAME=VALUE` pairs added to the environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; default: the project folder.
    pub workdir: Option<String>,
    /// User name or uid; default: the agent user.
    pub user: Option<String>,
    /// Allocate a pseudo-terminal (stdout and stderr merged).
    #[serde(default)]
    pub tty: bool,
    /// Initial terminal size.
    pub rows: Option<u16>,
    pub cols: Option<u16>,
    /// Keep running when the client goes away.
    #[serde(default)]
    pub detach: bool,
}
