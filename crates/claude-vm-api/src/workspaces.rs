//! Workspaces: listing, up (from a git URL, a workspace, or an uploaded folder), down;
//! providers and agents.

use std::collections::BTreeMap;

use claude_vm_core::Status;
use claude_vm_core::provider::ProviderKind;
use claude_vm_core::source::Source;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A workspace (`GET /api/v1/workspaces/{workspace}`, and every answer about one): the
/// document `workspace list --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub status: Status,
    /// Why the status is `error` or `unknown`.
    pub status_reason: Option<String>,
    pub provider: String,
    pub source: Source,
    /// Folder under `/workspace` holding the project.
    pub project: String,
    /// Absolute path of the project inside the workspace.
    pub project_dir: String,
    pub image: String,
    pub branch: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// When something last happened inside, as its daemon reports it; running workspaces
    /// of a detailed list only.
    pub last_activity: Option<Timestamp>,
    /// When its last backup was taken, if ever.
    pub last_backup: Option<Timestamp>,
    /// Why the last backup attempt failed, when it did.
    pub backup_error: Option<String>,
    /// A stopped workspace that stopped itself: since when it had been idle.
    #[serde(default)]
    pub idle_since: Option<Timestamp>,
    /// The ports its devcontainer.json forwards (`3000`, `db:5432`, `3000 (web)` with a
    /// label); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// The machine it runs on, for a provider that creates machines; absent elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
}

/// The machine a workspace runs on (a devpod provider's VM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub id: String,
    /// `Running`, `Busy`, `Stopped`, `NotFound`, or `unknown`.
    pub state: String,
}

/// What `up` did (`POST /api/v1/workspaces`, `POST .../up`): `201` when it created the
/// workspace, `200` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "workspace", rename_all = "snake_case")]
pub enum UpOutcome {
    Created(Workspace),
    Resumed(Workspace),
    AlreadyRunning(Workspace),
}

impl UpOutcome {
    pub fn workspace(&self) -> &Workspace {
        match self {
            UpOutcome::Created(w) | UpOutcome::Resumed(w) | UpOutcome::AlreadyRunning(w) => w,
        }
    }
}

/// A provider that did not answer a listing (its workspaces show as `unknown`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreachable {
    pub provider: String,
    pub reason: String,
}

/// `GET /api/v1/workspaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceList {
    pub workspaces: Vec<Workspace>,
    pub unreachable: Vec<Unreachable>,
}

/// `POST /api/v1/workspaces` with JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// A remote git URL (cloned inside the workspace), or an existing workspace to resume.
    /// Required; never a path on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A new workspace's own idle stop (`off`, `10m`); default: the server's config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_stop: Option<String>,
}

/// `POST /api/v1/workspaces/{workspace}/idle-stop`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetIdleStop {
    /// `off`, a duration (`10m`, `2h`), or `null` for the server's `lifecycle.idle_stop`.
    pub idle_stop: Option<String>,
}

/// The answer to [`SetIdleStop`]: the policy now in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleStopPolicy {
    pub workspace: String,
    /// `off` or a duration.
    pub idle_stop: String,
    /// The workspace has no setting of its own.
    pub from_config: bool,
    /// The running workspace's daemon has it; a stopped one gets it when it starts.
    pub applied: bool,
}

/// `POST /api/v1/workspaces` with a tar body (`Content-Type: application/x-tar`): the
/// query carries the options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Name of the project folder (the uploaded folder's name).
    pub project: String,
    /// Where the folder is on the client, recorded as the workspace's source.
    pub source: Option<String>,
    pub provider: Option<String>,
    pub image: Option<String>,
    pub branch: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub idle_stop: Option<String>,
}

impl UploadQuery {
    /// The query string (without `?`).
    pub fn to_query(&self) -> String {
        crate::encode::query([
            ("project", Some(self.project.as_str())),
            ("source", self.source.as_deref()),
            ("name", self.name.as_deref()),
            ("provider", self.provider.as_deref()),
            ("image", self.image.as_deref()),
            ("branch", self.branch.as_deref()),
            ("idle_stop", self.idle_stop.as_deref()),
        ])
    }
}

/// `POST /api/v1/workspaces/{workspace}/backup`: the snapshot just taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupTaken {
    /// The snapshot's id in the restic-format repository.
    pub snapshot: String,
    pub time: Timestamp,
    /// Bytes this snapshot added to the repository.
    pub bytes_added: u64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unmodified: u64,
    /// Nothing changed since the previous snapshot, which stands for this backup: no new
    /// one was written and `snapshot` is that one.
    #[serde(default)]
    pub unchanged: bool,
}

/// `POST /api/v1/workspaces/{workspace}/down` (the body is optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Down {
    /// Kill at once instead of stopping gracefully.
    #[serde(default)]
    pub force: bool,
    /// Seconds to wait for a graceful stop (default 10, at most 600): a whole number, which
    /// JSON may write as `12` or `12.0`.
    #[serde(
        default,
        deserialize_with = "crate::whole_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<u64>,
}

/// Query of `DELETE /api/v1/workspaces/{workspace}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Also remove every snapshot of it (and the data only they use); no final backup is
    /// taken then.
    #[serde(default)]
    pub purge: bool,
    /// Delete even when its final backup cannot be taken (what changed since its last
    /// backup is lost).
    #[serde(default)]
    pub force: bool,
}

/// One of `GET /api/v1/providers` (secret option values masked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ProviderKind,
    /// Whether it is `default_provider` in the config.
    pub default: bool,
    pub options: BTreeMap<String, String>,
    pub workspaces: usize,
    pub created_at: Timestamp,
}

/// `GET /api/v1/agents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agents {
    /// Agents enabled in config.yaml that this build can run.
    pub agents: Vec<String>,
    pub default: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKSPACE: &str = r#"{"id":"0123456789ab","name":"bold-fire-1","status":"running","status_reason":null,"provider":"docker","source":{"kind":"git","location":"https://h/r.git"},"project":"r","project_dir":"/workspace/r","image":"debian","branch":null,"created_at":"2025-01-02T03:04:05Z","updated_at":"2025-01-02T03:04:06.25Z","last_activity":"2025-01-02T03:04:07.123456789Z","last_backup":"2025-01-02T03:04:08Z","backup_error":null,"idle_since":"2025-01-02T03:04:09Z"}"#;

    #[test]
    fn workspaces_read_and_write_the_same_document() {
        let w: Workspace = serde_json::from_str(WORKSPACE).unwrap();
        assert_eq!(w.status, Status::Running);
        assert_eq!(w.created_at, "2025-01-02T03:04:05Z".parse().unwrap());
        assert_eq!(serde_json::to_string(&w).unwrap(), WORKSPACE);
        let up = format!(r#"{{"action":"already_running","workspace":{WORKSPACE}}}"#);
        let o: UpOutcome = serde_json::from_str(&up).unwrap();
        assert_eq!(o.workspace(), &w);
        assert_eq!(serde_json::to_string(&o).unwrap(), up);
    }

    #[test]
    fn upload_and_down_options() {
        let q = UploadQuery {
            project: "my project".into(),
            source: Some("/home/me/my project".into()),
            branch: Some("feat/x&y".into()),
            ..UploadQuery::default()
        };
        assert_eq!(
            q.to_query(),
            "project=my%20project&source=/home/me/my%20project&branch=feat/x%26y"
        );
        let d = Down {
            force: true,
            timeout: Some(12),
        };
        let wire = serde_json::to_string(&d).unwrap();
        assert_eq!(wire, r#"{"force":true,"timeout":12}"#);
        assert_eq!(serde_json::from_str::<Down>(&wire).unwrap(), d);
        assert_eq!(
            serde_json::from_str::<Down>(r#"{"timeout":12.0}"#).unwrap(),
            Down {
                force: false,
                timeout: Some(12)
            }
        );
        assert!(serde_json::from_str::<Down>(r#"{"grace":1}"#).is_err());
    }
}
