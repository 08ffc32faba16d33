//! Files and diffs of a workspace's project.

use claude_vm_protocol::api::FileInfo;
use serde::{Deserialize, Serialize};

/// `GET /api/v1/workspaces/{workspace}/diff?stat=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// Only the list of changed files with line counts, no patch.
    #[serde(default)]
    pub stat: bool,
}

/// `GET .../files?path=` and `GET .../files/content?path=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathQuery {
    /// Relative to the project folder, or absolute under `/workspace`; default: the
    /// project folder.
    #[serde(default)]
    pub path: String,
}

/// `GET /api/v1/workspaces/{workspace}/files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub file: FileInfo,
    /// The entries, when `file` is a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<FileInfo>>,
}
