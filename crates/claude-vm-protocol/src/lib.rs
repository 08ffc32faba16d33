//! The contract between the control side and the in-workspace daemon.
//!
//! Both ends are the same `claude-vm` binary, but a workspace can outlive an upgrade of the
//! control side, so every connection starts with a version check: the daemon reports its
//! version, protocol number and binary fingerprint, and the control side replaces the binary
//! in the workspace when they differ.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change of the daemon's API.
pub const PROTOCOL_VERSION: u32 = 1;

/// The version of this build of claude-vm.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the binary lives inside a workspace container.
pub const BINARY_PATH: &str = "/opt/claude-vm/bin/claude-vm";
/// The folder of [`BINARY_PATH`]: nothing else is in it (it may be a read-only mount of the
/// control side's copy).
pub const BINARY_DIR: &str = "/opt/claude-vm/bin";

/// Mount point of the workspace's persistent volume.
pub const WORKSPACE_ROOT: &str = "/workspace";

/// The daemon's state and logs, on the persistent volume.
pub const STATE_DIR: &str = "/workspace/.claude-vm";

/// The agent user's home, on the volume so that everything an agent needs to resume (its
/// session files, `~/.claude`, `~/.codex`, caches) survives the container and is in every
/// backup. The image's home of the agent user becomes a symlink to it.
pub const AGENT_HOME: &str = "/workspace/.home";

/// The daemon's Unix socket. Not on the volume: it belongs to one run of the container.
pub const SOCKET_PATH: &str = "/run/claude-vm/daemon.sock";

/// uid/gid that owns the project files and runs agents: the first non-root user of most
/// images (and of devcontainer images). A devcontainer.json's `remoteUser` takes its place
/// (see [`AGENT_USER_ENV`]).
pub const AGENT_UID: u32 = 1000;

/// The container variable naming the agent user when it is not uid [`AGENT_UID`]: a
/// devcontainer.json's `remoteUser` (or `containerUser`), set by the control side at create.
/// Never root: the daemon runs agents as uid [`AGENT_UID`] when the name is root's or
/// unknown to the image.
pub const AGENT_USER_ENV: &str = "CLAUDE_VM_AGENT_USER";

/// The daemon's exit status when the workspace stopped itself for idleness: PID 1 then
/// exits with 0, the one status Docker's `on-failure` restart policy leaves stopped (a
/// crash or a stop signal exits non-zero, so a host reboot restarts the workspace).
pub const IDLE_STOP_EXIT: u8 = 86;

/// The daemon's answer to `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always "claude-vm".
    pub name: String,
    pub version: String,
    pub protocol: u32,
    /// [`fingerprint`] of the running binary.
    pub fingerprint: String,
    pub pid: u32,
    /// RFC 3339 time the daemon started.
    pub started_at: String,
    /// The idle-stop policy it started with (kept on the volume): the control side pushes
    /// its own only when it differs. Absent from daemons that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<api::LifecyclePolicy>,
}

/// Identifies a build of the binary cheaply: version plus the executable's size and mtime.
/// The control side sets the mtime when it copies the binary in, so both ends compute the
/// same string for the same file.
pub fn fingerprint(size: u64, mtime_secs: i64) -> String {
    format!("{VERSION}-{size}-{mtime_secs}")
}

/// Fingerprint of the running executable.
pub fn own_fingerprint() -> std::io::Result<(String, std::path::PathBuf, u64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let exe = std::env::current_exe()?;
    let meta = std::fs::metadata(&exe)?;
    Ok((
        fingerprint(meta.size(), meta.mtime()),
        exe,
        meta.size(),
        meta.mtime(),
    ))
}

pub mod api;
pub mod encode;
pub mod frame;
