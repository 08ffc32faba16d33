//! Backups: the snapshots of the server's repository, pruning them, and restoring one as a
//! new workspace. (Taking one is `POST /api/v1/workspaces/{workspace}/backup`.)

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One snapshot in the server's restic-format repository: the document `backup list
/// --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Full id (what `restic` shows shortened to 8 characters).
    pub id: String,
    pub short_id: String,
    pub time: Timestamp,
    pub workspace_id: Option<String>,
    pub workspace_name: Option<String>,
    pub provider: Option<String>,
    /// Where the workspace came from (folder or git URL).
    pub source: Option<String>,
    /// The claude-vm version that took it.
    pub version: Option<String>,
    pub image: Option<String>,
    pub tags: Vec<String>,
    /// Bytes this snapshot added to the repository (before compression).
    pub bytes_added: u64,
    pub files_changed: u64,
    pub files_new: u64,
    pub files_unmodified: u64,
    /// Total size and number of the files it holds.
    pub total_bytes: u64,
    pub total_files: u64,
}

/// `GET /api/v1/backups`: oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupList {
    pub snapshots: Vec<Snapshot>,
}

/// Query of `GET /api/v1/backups`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupsQuery {
    /// Only this workspace's: an existing one by id or name, or a deleted one by its old
    /// name or id.
    pub workspace: Option<String>,
}

/// `POST /api/v1/backups/forget`: keep the newest `keep_last` and one a day for
/// `keep_daily` days of a workspace's snapshots (both absent: the server's retention).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forget {
    pub workspace: String,
    #[serde(default)]
    pub keep_last: Option<u32>,
    #[serde(default)]
    pub keep_daily: Option<u32>,
}

/// What `POST /api/v1/backups/forget` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forgotten {
    /// Ids of the snapshots removed.
    pub removed: Vec<String>,
}

/// `POST /api/v1/backups/restore`: a new workspace from a snapshot. The answer is the
/// same as creating one (`201` and the workspace).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restore {
    /// The workspace (existing, or deleted: its old name or id) whose snapshot to restore.
    pub workspace: String,
    /// A snapshot id or unique prefix; default: the workspace's newest.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Name of the new workspace; default: the original's, when it is free.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
}

/// Query of `GET /api/v1/backups/export`: one snapshot as a portable archive (the file
/// `claude-vm workspace export` writes), streamed with its length.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// The workspace (existing, or deleted: its old name or id).
    pub workspace: String,
    /// A snapshot id or unique prefix; default: the workspace's newest.
    #[serde(default)]
    pub snapshot: Option<String>,
}

/// Query of `POST /api/v1/backups/import`, whose body is an export archive
/// (`application/x-tar`). The answer is the same as creating a workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// Name of the new workspace; default: the exported one's, when it is free.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
}

impl ImportQuery {
    /// The query string (without `?`).
    pub fn to_query(&self) -> String {
        crate::encode::query([
            ("name", self.name.as_deref()),
            ("provider", self.provider.as_deref()),
            ("image", self.image.as_deref()),
        ])
    }
}

/// `POST /api/v1/backups/purge`: every snapshot of a deleted workspace (its old name or
/// id), and the data only they use, removed. A workspace that still exists is refused:
/// `DELETE /api/v1/workspaces/{workspace}?purge=true` deletes it with its backups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purge {
    pub workspace: String,
}

/// What `POST /api/v1/backups/purge` removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    /// The deleted workspace's id.
    pub workspace_id: String,
    /// How many snapshots were removed.
    pub purged: u64,
}
