//! Workspace lifecycle: `workspace up|list|down|delete`.

//!
//! One module per concern: [`list`] (live status and reconciliation), [`create`] (a new
//! workspace: container, project copy or clone), [`binary`] (the claude-vm binary in a
//! workspace and the daemon's ready handshake), [`lifecycle`] (resume, down, delete). This
//! file holds the requests and views they share and how a target is resolved.

mod binary;
mod create;
pub(crate) use create::RestoreFill;
mod lifecycle;
mod list;

use std::path::{Path, PathBuf};
use std::time::Duration;

use claude_vm_core::resolve::{Resolution, resolve};
use claude_vm_core::source::{self, Source};
use claude_vm_core::workspace::{self, LiveState, Observed};
use claude_vm_core::{Status, WorkspaceId};
use claude_vm_protocol as protocol;
use claude_vm_provider::Provider;
use claude_vm_store::{Store, WorkspaceRecord};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::pack::{Extra, ExtraContent};
use crate::{Engine, EngineError, Reporter, Result};

/// How long `list` waits for a provider before showing `unknown`.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the daemon may take to announce itself after the container starts.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Marker file (on the volume) listing folders the daemon must hand to the agent user.
const CHOWN_MARKER: &str = ".claude-vm/chown-tree";
/// Where a local repository is copied to be cloned from (outside the volume).
const CLONE_SCRATCH: &str = "/tmp/claude-vm-clone-source";

/// What `workspace up` was asked.
#[derive(Debug, Clone, Default)]
pub struct UpRequest {
    /// A workspace id/name/prefix, a folder, or a git URL; `None` means the current folder.
    pub target: Option<String>,
    pub provider: Option<String>,
    pub image: Option<String>,
    pub branch: Option<String>,
    pub name: Option<String>,
    /// For a folder: what to record as its location instead of the local path (a folder
    /// uploaded to the server is recorded as the client's path, not the scratch copy's).
    pub source_label: Option<String>,
    /// The caller may not read this machine's disk (a request to the server): the target
    /// must be an existing workspace or a git URL that is not `file:`, never a path, and
    /// the answer never depends on whether such a path exists.
    pub no_local_paths: bool,
    /// `--idle-stop`: the workspace's own idle-stop policy (kept for later starts too).
    pub idle_stop: Option<claude_vm_core::lifecycle::IdleStop>,
    /// `--devcontainer NAME`: which of several `.devcontainer/<name>/devcontainer.json`.
    pub devcontainer: Option<String>,
    /// `--no-devcontainer`: ignore the project's devcontainer.json.
    pub no_devcontainer: bool,
    /// `--rebuild`: build the devcontainer's image again even if one was built before.
    pub rebuild: bool,
    /// `--allow-host-mounts`: let the devcontainer.json mount folders of the Docker host.
    pub allow_host_mounts: bool,
    /// `--trust`: run the devcontainer.json's initializeCommand on this machine (and
    /// remember that this repository's command may run).
    pub trust: bool,
}

impl UpRequest {
    /// Resume the workspace with this id: what the server does once it resolved one.
    pub fn existing(id: &WorkspaceId) -> UpRequest {
        UpRequest {
            target: Some(id.to_string()),
            no_local_paths: true,
            ..UpRequest::default()
        }
    }
}

/// What `workspace up` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", content = "workspace", rename_all = "snake_case")]
pub enum UpOutcome {
    Created(WorkspaceView),
    Resumed(WorkspaceView),
    AlreadyRunning(WorkspaceView),
}

impl UpOutcome {
    pub fn workspace(&self) -> &WorkspaceView {
        match self {
            UpOutcome::Created(w) | UpOutcome::Resumed(w) | UpOutcome::AlreadyRunning(w) => w,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DownRequest {
    pub target: String,
    /// Kill at once instead of asking the workspace to stop.
    pub force: bool,
    /// How long a graceful stop may take before the workspace is killed.
    pub grace: Duration,
    /// Take a final backup first (when backups are enabled).
    pub backup: bool,
}

/// How a final backup (of `down` or `delete`) went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FinalBackup {
    /// A snapshot was taken: its id.
    Taken {
        snapshot: String,
    },
    /// The workspace was stopped right after its last snapshot: nothing new to save.
    UpToDate {
        snapshot: String,
    },
    Failed {
        error: String,
    },
    /// Backups are disabled, or the user asked for none.
    Skipped,
}

/// What `workspace down` did.
#[derive(Debug, Clone, Serialize)]
pub struct DownOutcome {
    pub workspace: WorkspaceView,
    pub stopped_now: bool,
    pub backup: FinalBackup,
}

#[derive(Debug, Clone)]
pub struct DeleteRequest {
    pub target: String,
    /// Also remove every snapshot of the workspace (and the data only they use).
    pub purge: bool,
    /// Delete even when the final backup cannot be taken.
    pub force: bool,
}

/// What `workspace delete` did.
#[derive(Debug, Clone, Serialize)]
pub struct DeleteOutcome {
    pub workspace: WorkspaceView,
    pub backup: FinalBackup,
    /// Snapshots removed by `--purge`.
    pub purged: Option<usize>,
    /// Where the backups are (for the message that they are kept).
    pub repository: Option<String>,
}

/// A workspace as shown by `list` and `--json` (a stable, documented shape).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkspaceView {
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
    pub created_at: String,
    pub updated_at: String,
    /// When something last happened inside (exec, file writes; agent work later), as the
    /// workspace's daemon reports it. Only filled by a detailed list of running workspaces.
    pub last_activity: Option<String>,
    /// When its last backup was taken (RFC 3339), if ever.
    pub last_backup: Option<String>,
    /// Why the last backup attempt failed, when it did (cleared by the next success).
    pub backup_error: Option<String>,
    /// A stopped workspace that stopped itself: since when it had been idle (RFC 3339).
    pub idle_since: Option<String>,
    /// The ports its devcontainer.json forwards (`3000`, `db:5432`, with their label as
    /// `3000 (web)`): reachable with `ssh -L`. Absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// The machine it runs on, for a provider that creates machines (devpod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<claude_vm_provider::MachineInfo>,
}

impl WorkspaceView {
    fn new(r: &WorkspaceRecord, observed: &Observed) -> Self {
        WorkspaceView {
            id: r.id.to_string(),
            name: r.name.to_string(),
            status: observed.status,
            status_reason: observed.reason.clone(),
            provider: r.provider.clone(),
            source: r.source.clone(),
            project: r.project.clone(),
            project_dir: project_dir(&r.project),
            image: r.image.clone(),
            branch: r.branch.clone(),
            created_at: r.created_at.clone(),
            updated_at: r.updated_at.clone(),
            last_activity: None,
            last_backup: None,
            backup_error: None,
            idle_since: None,
            ports: Vec::new(),
            machine: None,
        }
    }
}

pub(crate) fn project_dir(project: &str) -> String {
    format!("{}/{project}", protocol::WORKSPACE_ROOT)
}

/// Whether a process with this pid exists (on this machine).
pub fn pid_alive(pid: Option<u32>) -> bool {
    match pid {
        Some(pid) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok(),
        None => false,
    }
}

fn observe(r: &WorkspaceRecord, live: &LiveState) -> Observed {
    workspace::reconcile(
        r.status,
        r.status_reason.as_deref(),
        live,
        pid_alive(r.creator_pid),
    )
}

/// The binary to copy into workspaces, and the fingerprint the daemon will report for it.
struct SelfBinary {
    path: PathBuf,
    fingerprint: String,
    size: u64,
    mtime: u64,
}

fn self_binary() -> Result<SelfBinary> {
    let (fingerprint, path, size, mtime) = protocol::own_fingerprint().map_err(|e| {
        EngineError::InvalidInput(format!("cannot read the claude-vm executable: {e}"))
    })?;
    Ok(SelfBinary {
        path,
        fingerprint,
        size,
        mtime: mtime.max(0) as u64,
    })
}

fn binary_extra(bin: &SelfBinary) -> Extra {
    Extra {
        path: protocol::BINARY_PATH.trim_start_matches('/').into(),
        content: ExtraContent::File(bin.path.clone()),
        mode: 0o755,
        mtime: bin.mtime,
    }
}

/// The daemon's announcement, as printed on its stdout.
fn parse_ready(line: &str) -> Result<protocol::Health, String> {
    serde_json::from_str::<protocol::Health>(line)
        .map_err(|e| format!("the workspace daemon sent an unexpected greeting {line:?}: {e}"))
}

fn validate_branch(branch: &str) -> Result<()> {
    let bad = branch.is_empty()
        || branch.starts_with('-')
        || branch.contains("..")
        || branch.ends_with('/')
        || branch.ends_with(".lock")
        || branch
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        return Err(EngineError::InvalidInput(format!(
            "invalid branch name {branch:?}"
        )));
    }
    Ok(())
}

/// What the argument of `up` turned out to be.
enum Target {
    Existing(Box<WorkspaceRecord>),
    New(Source),
}

impl Engine {
    pub(crate) fn all_workspaces(&self) -> Result<Vec<WorkspaceRecord>> {
        self.store(Store::workspaces)
    }

    /// Find the workspace a user means by id, name or unique id prefix.
    pub fn find_workspace(&self, query: &str) -> Result<WorkspaceRecord> {
        let all = self.all_workspaces()?;
        match resolve(query, &all) {
            Resolution::Found(w) => Ok(w.clone()),
            Resolution::NotFound => Err(EngineError::UnknownWorkspace(query.to_owned())),
            Resolution::Ambiguous(c) => Err(EngineError::AmbiguousWorkspace {
                query: query.to_owned(),
                candidates: c
                    .iter()
                    .map(|w| format!("{} ({})", w.id, w.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    fn classify_target(&self, target: Option<&str>, no_local_paths: bool) -> Result<Target> {
        let Some(arg) = target else {
            if no_local_paths {
                return Err(EngineError::InvalidInput(
                    "a target is required: a workspace or a git URL".into(),
                ));
            }
            return Ok(Target::New(Source::Path(".".to_owned())));
        };
        let local_url = arg
            .get(..5)
            .is_some_and(|s| s.eq_ignore_ascii_case("file:"));
        if source::is_git_url(arg) && !(no_local_paths && local_url) {
            return Ok(Target::New(Source::Git(arg.to_owned())));
        }
        let all = self.all_workspaces()?;
        if no_local_paths {
            // Only an existing workspace, by exact id or name, or a unique prefix: the same
            // answer whether or not a path of that name exists here.
            if let Some(w) = all
                .iter()
                .find(|w| w.id.as_str() == arg || w.name.as_str() == arg)
            {
                return Ok(Target::Existing(Box::new(w.clone())));
            }
            return match resolve(arg, &all) {
                Resolution::Found(w) => Ok(Target::Existing(Box::new(w.clone()))),
                Resolution::Ambiguous(_) => self
                    .find_workspace(arg)
                    .map(|w| Target::Existing(Box::new(w))),
                Resolution::NotFound => Err(EngineError::UnknownTarget(arg.to_owned())),
            };
        }
        let pathish = arg.starts_with('.')
            || arg.starts_with('/')
            || arg.starts_with('~')
            || arg.contains('/');
        if !pathish
            && let Some(w) = all
                .iter()
                .find(|w| w.id.as_str() == arg || w.name.as_str() == arg)
        {
            return Ok(Target::Existing(Box::new(w.clone())));
        }
        if Path::new(arg).exists() {
            return Ok(Target::New(Source::Path(arg.to_owned())));
        }
        if !pathish {
            match resolve(arg, &all) {
                Resolution::Found(w) => return Ok(Target::Existing(Box::new(w.clone()))),
                Resolution::Ambiguous(_) => {
                    return self
                        .find_workspace(arg)
                        .map(|w| Target::Existing(Box::new(w)));
                }
                Resolution::NotFound => {}
            }
        }
        if pathish {
            return Err(EngineError::InvalidInput(format!(
                "path {arg:?} does not exist"
            )));
        }
        Err(EngineError::UnknownTarget(arg.to_owned()))
    }

    /// The live state of one workspace before acting on it: the provider connected first
    /// (one-time setup such as installing claude-vm on an ssh host is not cut short), then
    /// asked within [`STATUS_TIMEOUT`]. A provider that fails is an error with its own remedy.
    pub(crate) async fn live_state_checked(
        &self,
        provider: &dyn Provider,
        id: &WorkspaceId,
    ) -> Result<LiveState> {
        provider.connect().await?;
        match tokio::time::timeout(STATUS_TIMEOUT, provider.states()).await {
            Ok(Ok(mut states)) => Ok(states.remove(id).unwrap_or(LiveState::Missing)),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(EngineError::ProviderTimeout {
                secs: STATUS_TIMEOUT.as_secs(),
                hint: provider.unreachable_hint(),
            }),
        }
    }

    /// `workspace up`: create a workspace, or resume a stopped one.
    pub async fn up(
        &self,
        req: &UpRequest,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<UpOutcome> {
        let target = match self.classify_target(req.target.as_deref(), req.no_local_paths) {
            Err(EngineError::UnknownTarget(t)) => {
                // A deleted workspace's name: say that it has backups, and how to restore.
                if !req.no_local_paths
                    && let Some(s) = self.deleted_with_backups(&t).await
                {
                    return Err(EngineError::DeletedWithBackups {
                        name: t,
                        snapshot: s.short_id,
                        time: s.time,
                    });
                }
                return Err(EngineError::UnknownTarget(t));
            }
            other => other?,
        };
        match target {
            Target::Existing(w) => {
                for (flag, given) in [
                    ("--provider", req.provider.is_some()),
                    ("--image", req.image.is_some()),
                    ("--branch", req.branch.is_some()),
                    ("--name", req.name.is_some()),
                    ("--devcontainer", req.devcontainer.is_some()),
                    ("--no-devcontainer", req.no_devcontainer),
                ] {
                    if given {
                        return Err(EngineError::InvalidInput(format!(
                            "{flag} only applies when creating a workspace; {} already exists",
                            w.name
                        )));
                    }
                }
                if let Some(idle) = req.idle_stop {
                    self.store(|s| s.set_idle_stop(&w.id, Some(&idle.to_string())))?;
                }
                if req.rebuild {
                    return self.rebuild(*w, req, reporter, cancel).await;
                }
                self.resume(*w, reporter, cancel).await
            }
            Target::New(source) => self.create(req, source, None, reporter, cancel).await,
        }
    }
}

/// `1.5 MB`, `320 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_requests_never_name_this_machines_disk() {
        let home = tempfile::tempdir().unwrap();
        let engine = Engine::open(claude_vm_store::Home::at(home.path()), None).unwrap();
        let here = home.path().to_str().unwrap().to_owned();
        // Existing and missing paths, file: URLs, a bare word that is a folder of the
        // working directory: one and the same refusal.
        std::fs::create_dir_all(home.path().join("3")).unwrap();
        for target in [
            here.as_str(),
            "/etc",
            "/no/such/path",
            "file:///etc",
            "FILE:///etc",
            "3",
            ".",
        ] {
            let err = engine.classify_target(Some(target), true).err();
            assert!(
                matches!(err, Some(EngineError::UnknownTarget(_))),
                "{target}: {err:?}"
            );
        }
        assert!(engine.classify_target(None, true).is_err());
        // Remote git URLs are still fine; the CLI may still name its own folders.
        assert!(matches!(
            engine.classify_target(Some("https://example.com/r.git"), true),
            Ok(Target::New(Source::Git(_)))
        ));
        assert!(matches!(
            engine.classify_target(Some(&here), false),
            Ok(Target::New(Source::Path(_)))
        ));
    }

    #[test]
    fn branch_names() {
        for ok in ["main", "feature/x", "v1.2", "auth-jwt"] {
            assert!(validate_branch(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-x", "a..b", "a b", "x/", "x.lock", "a:b", "a~1", "$(rm)",
        ] {
            // `$(rm)` is a legal ref name to git; it is passed as an argument, never
            // through a shell, so only git's own rules matter.
            if bad == "$(rm)" {
                assert!(validate_branch(bad).is_ok());
                continue;
            }
            assert!(validate_branch(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(320), "320 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }
}
