//! Request and response bodies of the daemon's `/v1` API (JSON). See `docs/protocol.md`.

use serde::{Deserialize, Serialize};

/// An error answer: every non-2xx response carries one, the daemon's (`{"error"}`) and the
/// server's (`{"error", "hint"}`) alike; the words the CLI prints after `error:` and `hint:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
    /// What the caller can do about it, when there is something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ApiError {
    pub fn new(error: impl Into<String>) -> ApiError {
        ApiError {
            error: error.into(),
            hint: None,
        }
    }

    /// The error a failed answer's body carries, if it is an error body.
    pub fn parse(body: &[u8]) -> Option<ApiError> {
        serde_json::from_slice(body).ok()
    }

    /// What to tell about a failed answer: its error, or else its status and body as text.
    pub fn message_of(status: u16, body: &[u8]) -> String {
        match ApiError::parse(body) {
            Some(e) => e.error,
            None => format!("{status}: {}", String::from_utf8_lossy(body).trim()),
        }
    }
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

impl ChangeKind {
    /// The word people are shown: `added`, `modified`, ..., `type changed`.
    pub fn label(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Renamed => "renamed",
            ChangeKind::Untracked => "untracked",
            ChangeKind::TypeChanged => "type changed",
        }
    }
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

/// What a line of a unified diff ([`Diff::patch`]) is, for whoever colors it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchLine {
    /// `diff --git`, `index`, `---`/`+++`, `new file mode`, `Binary files ... differ`, ...
    Header,
    /// `@@ -1,2 +1,3 @@`
    Hunk,
    Added,
    Removed,
    /// Unchanged context, and `\ No newline at end of file`.
    Context,
}

/// Classifies the lines of a unified diff in order. It has to be read in order: inside a
/// hunk, a removed line whose text starts with `--` reads `---`, exactly like the header of
/// the next file; only the hunk's line counts (`@@ -a,b +c,d @@`) tell them apart.
#[derive(Debug, Default, Clone)]
pub struct PatchReader {
    /// Lines of the current hunk still to come, on the old and the new side.
    old: u64,
    new: u64,
}

impl PatchReader {
    pub fn new() -> PatchReader {
        PatchReader::default()
    }

    /// The kind of the next line (with or without its newline).
    pub fn line(&mut self, line: &str) -> PatchLine {
        if self.old > 0 || self.new > 0 {
            match line.as_bytes().first() {
                Some(b'-') if self.old > 0 => {
                    self.old -= 1;
                    return PatchLine::Removed;
                }
                Some(b'+') if self.new > 0 => {
                    self.new -= 1;
                    return PatchLine::Added;
                }
                Some(b' ') | None | Some(b'\n') | Some(b'\r') => {
                    self.old = self.old.saturating_sub(1);
                    self.new = self.new.saturating_sub(1);
                    return PatchLine::Context;
                }
                Some(b'\\') => return PatchLine::Context,
                // Anything else ends the hunk early (a truncated patch).
                _ => {
                    self.old = 0;
                    self.new = 0;
                }
            }
        }
        if line.starts_with("@@") {
            if let Some((old, new)) = hunk_counts(line) {
                self.old = old;
                self.new = new;
            }
            PatchLine::Hunk
        } else if line.starts_with("+++") || line.starts_with("---") {
            PatchLine::Header
        } else if line.starts_with('+') {
            // Outside a counted hunk (a hand-made or cut patch): by its first character.
            PatchLine::Added
        } else if line.starts_with('-') {
            PatchLine::Removed
        } else if line.starts_with(' ') || line.starts_with('\\') {
            PatchLine::Context
        } else {
            PatchLine::Header
        }
    }
}

/// The line counts of a hunk header `@@ -a[,b] +c[,d] @@ ...` (a missing count is 1).
fn hunk_counts(line: &str) -> Option<(u64, u64)> {
    let mut parts = line.split_whitespace().skip(1);
    let count = |range: &str| -> Option<u64> {
        match range.split_once(',') {
            Some((_, n)) => n.parse().ok(),
            None => Some(1),
        }
    };
    let old = count(parts.next()?.strip_prefix('-')?)?;
    let new = count(parts.next()?.strip_prefix('+')?)?;
    Some((old, new))
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

/// When a workspace stops itself (`PUT /v1/lifecycle`): decided on the control side from
/// `config.yaml` `lifecycle:` and the workspace's own setting, kept by the daemon on the
/// volume so it applies with nobody connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecyclePolicy {
    /// Stop after this many seconds with nothing going on; `None`: never.
    pub idle_stop_secs: Option<u64>,
    /// A conversation waiting for an approval keeps the workspace up this long.
    pub approval_wait_secs: u64,
}

impl Default for LifecyclePolicy {
    fn default() -> Self {
        LifecyclePolicy {
            idle_stop_secs: None,
            approval_wait_secs: 24 * 3600,
        }
    }
}

/// `GET /v1/lifecycle` (and the answer of `GET /v1/lifecycle/watch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleStatus {
    pub policy: LifecyclePolicy,
    /// What keeps the workspace up right now, in words; empty when idle.
    pub busy: Vec<String>,
    /// Seconds since the last activity (0 while busy).
    pub idle_secs: u64,
    /// Seconds until it stops itself, when a timer runs.
    pub stop_in_secs: Option<u64>,
    /// The idle time ran out: the daemon waits for a watcher's final backup, then stops.
    pub stopping: bool,
}

/// Body of `POST /v1/backup/read-many`: files a backup scan listed, by absolute path.
/// The answer is one frame per path, in order ([`crate::frame::Kind::File`], `Missing`,
/// `Failed` or `Large`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ReadMany {
    pub paths: Vec<String>,
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

/// How a conversation treats tool approvals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PermissionMode {
    /// The workspace is the sandbox: the agent never asks (the default).
    #[default]
    Skip,
    /// Every tool use is put to the user, who allows or denies it.
    Ask,
}

/// What a conversation is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    /// The agent process is starting.
    Starting,
    /// A turn is running.
    Working,
    /// Waiting for the next message.
    Idle,
    /// A tool use waits for the user's decision.
    WaitingForApproval,
    /// The agent failed; `status_reason` says why. Sending a message restarts it.
    Failed,
    /// Stopped by the user; sending a message restarts it.
    Stopped,
}

/// How to run an agent: decided by the control side from `config.yaml`, kept by the
/// daemon so it can restart the agent on its own. Its `Debug` shows the names of `env`,
/// never the values (secrets).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentSpec {
    /// `claude`, `codex`, `gemini`, `goose`, `qwen`, or `acp` (any other Agent Client
    /// Protocol agent).
    pub kind: String,
    /// The program to run (a path inside the workspace, or a name on PATH).
    pub program: String,
    /// Extra arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment for the agent. Secrets live here: never echoed by the API.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// A turn that shows no output for this long is considered hung: the agent is stopped
    /// and the conversation fails. Default 30 minutes.
    #[serde(default)]
    pub turn_timeout_secs: Option<u64>,
    /// The program's version as it reports it (`claude --version`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl std::fmt::Debug for AgentSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Masked<'a>(&'a std::collections::BTreeMap<String, String>);
        impl std::fmt::Debug for Masked<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_map()
                    .entries(self.0.keys().map(|k| (k, "********")))
                    .finish()
            }
        }
        f.debug_struct("AgentSpec")
            .field("kind", &self.kind)
            .field("program", &self.program)
            .field("args", &self.args)
            .field("env", &Masked(&self.env))
            .field("turn_timeout_secs", &self.turn_timeout_secs)
            .field("version", &self.version)
            .finish()
    }
}

/// `PUT /v1/conversations/{id}/env`: the agent's environment afresh (its account renewed
/// by `claude-vm agents login`). Its `Debug` shows the names, never the values.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentEnv {
    pub env: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for AgentEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.env.keys().map(|k| (k, "********")))
            .finish()
    }
}

/// Answer to [`AgentEnv`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvApplied {
    /// False when the conversation already had exactly this environment.
    pub changed: bool,
    /// When the agent process takes it: `now` (none runs, or an idle one was stopped so
    /// the next message starts it afresh), `after_turn` (the running turn ends first).
    pub applies: String,
}

/// `POST /v1/conversations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewConversation {
    pub agent: AgentSpec,
    /// First message, sent as soon as the agent is up.
    pub message: Option<String>,
    #[serde(default)]
    pub permission_mode: PermissionMode,
    pub title: Option<String>,
}

/// A conversation as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub agent: String,
    pub title: Option<String>,
    pub status: ConversationStatus,
    pub status_reason: Option<String>,
    pub permission_mode: PermissionMode,
    /// The agent's own session id (Claude Code's `session_id`), once known.
    pub session_id: Option<String>,
    /// Messages accepted but not yet handed to the agent.
    pub queued: u64,
    /// Sequence number of the last transcript event.
    pub last_seq: u64,
    pub created_at: String,
    pub updated_at: String,
    /// The agent program's version, as it reported it when the conversation began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
}

/// `POST /v1/conversations/{id}/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessage {
    pub text: String,
    /// The sender's own id for the message (1 to 64 of `A-Za-z0-9_-`): sending the same id
    /// again answers the first acceptance instead of queueing it twice, so a sender that
    /// lost the answer can retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// The answer to a sent message: it is on disk before this answer is sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub message_id: String,
    /// Transcript sequence number of the `user` event (0 while `held`).
    pub seq: u64,
    /// The workspace was not running: the control side keeps the message, starts the
    /// workspace and delivers it (under `message_id`, so exactly once).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
}

/// `POST /v1/conversations/{id}/approvals/{approval_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allow: bool,
    /// Told to the agent when denying.
    pub message: Option<String>,
}

/// One line of a conversation's transcript (append-only, `transcript.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// RFC 3339.
    pub ts: String,
    #[serde(flatten)]
    pub body: EventBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// The user sent a message (persisted before it was acknowledged).
    User { message_id: String, text: String },
    /// The message reached the agent.
    Delivered { message_id: String },
    /// Assistant text (a whole block).
    Assistant { text: String },
    /// The agent called a tool.
    ToolCall {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    /// A tool's result (truncated when long).
    ToolResult {
        id: String,
        output: String,
        is_error: bool,
    },
    /// The agent asks for permission to use a tool.
    ApprovalRequest {
        approval_id: String,
        tool: String,
        input: serde_json::Value,
    },
    /// The user's answer.
    ApprovalDecision { approval_id: String, allow: bool },
    /// A turn finished; carries the agent's final text when it has one.
    TurnEnd {
        result: Option<String>,
        is_error: bool,
    },
    /// The status changed.
    Status {
        status: ConversationStatus,
        reason: Option<String>,
    },
}

/// `GET /v1/ssh/host-key`: the workspace's SSH host key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshHostKey {
    /// One OpenSSH public key line: `ssh-ed25519 AAAA...`.
    pub host_key: String,
}

/// `PUT /v1/ssh/authorized-keys`: the public keys the SSH server accepts (replaces the
/// previous list); the answer has the number of keys kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizedKeys {
    pub keys: Vec<String>,
}

#[cfg(test)]
mod agent_spec_tests {
    use super::*;

    #[test]
    fn agent_spec_debug_masks_env_values() {
        let spec = AgentSpec {
            kind: "claude".into(),
            program: "claude".into(),
            env: [("ANTHROPIC_API_KEY".to_owned(), "sk-ant-secret".to_owned())].into(),
            ..AgentSpec::default()
        };
        let new = NewConversation {
            agent: spec.clone(),
            message: None,
            permission_mode: PermissionMode::default(),
            title: None,
        };
        for shown in [format!("{spec:?}"), format!("{new:?}"), format!("{new:#?}")] {
            assert!(!shown.contains("sk-ant-secret"), "{shown}");
            assert!(shown.contains("ANTHROPIC_API_KEY"), "{shown}");
        }
    }
}

#[cfg(test)]
mod patch_line_tests {
    use super::PatchLine::{self, *};
    use super::PatchReader;

    #[test]
    fn a_removed_line_starting_with_dashes_is_not_a_header() {
        let patch = "diff --git a/x b/x
index 0000000..c96f0d9 100644
--- a/x
+++ b/x
@@ -1,3 +1,3 @@
 same
--- removed line that starts with two dashes
+++ added line that starts with two pluses
-old
+new
\\ No newline at end of file
diff --git a/y b/y
Binary files a/y and b/y differ
diff --git a/z b/z
--- a/z
+++ b/z
@@ -1 +1 @@
-a
+b
";
        let want = [
            Header, Header, Header, Header, Hunk, Context, Removed, Added, Removed, Added, Context,
            Header, Header, Header, Header, Header, Hunk, Removed, Added,
        ];
        let mut r = PatchReader::new();
        let got: Vec<PatchLine> = patch.lines().map(|l| r.line(l)).collect();
        assert_eq!(got, want);
        // With newlines kept, as the CLI reads it, the same.
        let mut r = PatchReader::new();
        let got: Vec<PatchLine> = patch.split_inclusive('\n').map(|l| r.line(l)).collect();
        assert_eq!(got, want);
    }
}
