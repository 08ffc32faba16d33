//! Workspace lifecycle: `workspace up|list|down|delete`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use claude_vm_core::resolve::{Resolution, resolve};
use claude_vm_core::source::{self, Source};
use claude_vm_core::workspace::{self, Action, LiveState, Observed, Plan};
use claude_vm_core::{Status, WorkspaceId, WorkspaceName};
use claude_vm_protocol as protocol;
use claude_vm_provider::{CreateSpec, ExecSpec, Provider, ProviderError};
use claude_vm_store::{Store, WorkspaceRecord};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::pack::{self, Extra, ExtraContent};
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
        }
    }
}

fn project_dir(project: &str) -> String {
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
    mtime: u64,
}

fn self_binary() -> Result<SelfBinary> {
    let (fingerprint, path, _, mtime) = protocol::own_fingerprint().map_err(|e| {
        EngineError::InvalidInput(format!("cannot read the claude-vm executable: {e}"))
    })?;
    Ok(SelfBinary {
        path,
        fingerprint,
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
    fn all_workspaces(&self) -> Result<Vec<WorkspaceRecord>> {
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

    fn classify_target(&self, target: Option<&str>) -> Result<Target> {
        let Some(arg) = target else {
            return Ok(Target::New(Source::Path(".".to_owned())));
        };
        if source::is_git_url(arg) {
            return Ok(Target::New(Source::Git(arg.to_owned())));
        }
        let all = self.all_workspaces()?;
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

    /// `workspace list -l`: [`Engine::list`] plus each running workspace's last activity,
    /// asked of the workspaces in parallel (a workspace that does not answer in time shows
    /// none).
    pub async fn list_detailed(&self) -> Result<(Vec<WorkspaceView>, Vec<(String, String)>)> {
        let (mut views, unreachable) = self.list().await?;
        self.fill_activity(&mut views).await;
        Ok((views, unreachable))
    }

    /// One workspace (id, name or unique prefix) as the detailed list shows it; only its own
    /// daemon is asked for its last activity.
    pub async fn show(&self, query: &str) -> Result<WorkspaceView> {
        let record = self.find_workspace(query)?;
        let (views, _) = self.list().await?;
        let mut view = views
            .into_iter()
            .find(|v| v.id == record.id.as_str())
            .ok_or_else(|| EngineError::UnknownWorkspace(query.to_owned()))?;
        self.fill_activity(std::slice::from_mut(&mut view)).await;
        Ok(view)
    }

    /// Ask each running workspace of `views` for its last activity, in parallel.
    async fn fill_activity(&self, views: &mut [WorkspaceView]) {
        let asks = views.iter().map(|v| async move {
            if v.status != Status::Running {
                return None;
            }
            let ask = async {
                let (_, link) = self.link(&v.id).await.ok()?;
                link.activity().await.ok()
            };
            tokio::time::timeout(STATUS_TIMEOUT, ask)
                .await
                .ok()
                .flatten()
        });
        let answers = join_all(asks).await;
        for (v, a) in views.iter_mut().zip(answers) {
            v.last_activity = a.and_then(|a| a.last_activity);
        }
    }

    pub async fn list(&self) -> Result<(Vec<WorkspaceView>, Vec<(String, String)>)> {
        let records = self.all_workspaces()?;
        let mut names: Vec<String> = records.iter().map(|r| r.provider.clone()).collect();
        names.sort();
        names.dedup();
        let queries = names.iter().map(|name| async move {
            let states = match self.provider_client(name) {
                Ok(client) => match tokio::time::timeout(STATUS_TIMEOUT, client.states()).await {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => {
                        if let Some(hint) = e.hint() {
                            self.hints
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(name.clone(), hint);
                        }
                        Err(e.to_string())
                    }
                    Err(_) => Err(format!("no answer within {}s", STATUS_TIMEOUT.as_secs())),
                },
                Err(e) => Err(e.to_string()),
            };
            (name.clone(), states)
        });
        let results: HashMap<String, std::result::Result<HashMap<WorkspaceId, LiveState>, String>> =
            join_all(queries).await.into_iter().collect();
        let mut unreachable = Vec::new();
        for (name, res) in &results {
            if let Err(why) = res {
                unreachable.push((name.clone(), why.clone()));
            }
        }
        unreachable.sort();
        let mut views = Vec::with_capacity(records.len());
        for r in &records {
            let live = match &results[&r.provider] {
                Ok(states) => states.get(&r.id).cloned().unwrap_or(LiveState::Missing),
                Err(why) => LiveState::Unreachable(why.clone()),
            };
            let observed = observe(r, &live);
            let changed = observed.status != r.status
                || (observed.status == Status::Error && observed.reason != r.status_reason);
            if changed && observed.status != Status::Unknown && observed.status != Status::Creating
            {
                // Without the workspace's lock: only if nobody changed it since it was read.
                self.store(|s| {
                    s.set_status_if(
                        &r.id,
                        (r.status, r.status_reason.as_deref()),
                        observed.status,
                        observed.reason.as_deref(),
                    )
                })?;
            }
            if observed.status != Status::Running && observed.status != Status::Unknown {
                self.forget_link(&r.id);
            }
            views.push(WorkspaceView::new(r, &observed));
        }
        Ok((views, unreachable))
    }

    /// `workspace up`: create a workspace, or resume a stopped one.
    pub async fn up(
        &self,
        req: &UpRequest,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<UpOutcome> {
        match self.classify_target(req.target.as_deref())? {
            Target::Existing(w) => {
                for (flag, given) in [
                    ("--provider", req.provider.is_some()),
                    ("--image", req.image.is_some()),
                    ("--branch", req.branch.is_some()),
                    ("--name", req.name.is_some()),
                ] {
                    if given {
                        return Err(EngineError::InvalidInput(format!(
                            "{flag} only applies when creating a workspace; {} already exists",
                            w.name
                        )));
                    }
                }
                self.resume(*w, reporter, cancel).await
            }
            Target::New(source) => self.create(req, source, reporter, cancel).await,
        }
    }

    async fn resume(
        &self,
        w: WorkspaceRecord,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<UpOutcome> {
        let _lock = self.lock_workspace(&w.id).await?;
        // Re-read under the lock: another process may have changed it meanwhile.
        let w = self
            .store(|s| s.workspace(&w.id))?
            .ok_or_else(|| EngineError::UnknownWorkspace(w.id.to_string()))?;
        let provider = self.provider_client(&w.provider)?;
        let observed = observe(
            &w,
            &self.live_state_checked(provider.as_ref(), &w.id).await?,
        );
        let plan = workspace::plan(&observed, Action::Up).map_err(|e| EngineError::Transition {
            name: w.name.to_string(),
            source: e,
        })?;
        let bin = self_binary()?;
        let ws_err = |message: String| EngineError::Workspace {
            name: w.name.to_string(),
            message,
        };
        match plan {
            Plan::AlreadyThere => {
                reporter.step(&format!(
                    "{} is already running; checking its daemon",
                    w.name
                ));
                let health = self.exec_health(provider.as_ref(), &w.id).await;
                match health {
                    Ok(h) if h.fingerprint == bin.fingerprint => {}
                    other => {
                        let why = match other {
                            Ok(h) => format!("it runs claude-vm {} ({})", h.version, h.fingerprint),
                            Err(e) => format!("its daemon did not answer ({e})"),
                        };
                        reporter.step(&format!(
                            "{why}; installing this claude-vm and restarting it"
                        ));
                        self.install_binary(provider.as_ref(), &w.id, &bin).await?;
                        provider.stop(&w.id, Duration::from_secs(10)).await?;
                        self.start_verified(provider.as_ref(), &w, &bin, reporter, cancel)
                            .await?;
                    }
                }
                self.store(|s| s.set_status(&w.id, Status::Running, None))?;
                let fresh = self.store(|s| s.workspace(&w.id))?.unwrap_or(w);
                Ok(UpOutcome::AlreadyRunning(WorkspaceView::new(
                    &fresh,
                    &Observed {
                        status: Status::Running,
                        reason: None,
                    },
                )))
            }
            Plan::Start => {
                reporter.step(&format!("starting {}", w.name));
                // The daemon's greeting carries its build; when it is not this one (an
                // upgrade happened in between), start_verified replaces it and restarts.
                self.start_verified(provider.as_ref(), &w, &bin, reporter, cancel)
                    .await?;
                self.store(|s| s.set_status(&w.id, Status::Running, None))?;
                let fresh = self.store(|s| s.workspace(&w.id))?.unwrap_or(w);
                Ok(UpOutcome::Resumed(WorkspaceView::new(
                    &fresh,
                    &Observed {
                        status: Status::Running,
                        reason: None,
                    },
                )))
            }
            Plan::Stop | Plan::Remove => Err(ws_err("unexpected plan for up".to_owned())),
        }
    }

    async fn install_binary(
        &self,
        provider: &dyn Provider,
        id: &WorkspaceId,
        bin: &SelfBinary,
    ) -> Result<()> {
        let tar = pack::stream(None, vec![binary_extra(bin)], Arc::new(AtomicU64::new(0)));
        provider.upload(id, "/", tar).await?;
        Ok(())
    }

    async fn exec_health(
        &self,
        provider: &dyn Provider,
        id: &WorkspaceId,
    ) -> Result<protocol::Health> {
        let out = provider
            .exec(
                id,
                &ExecSpec {
                    cmd: vec![
                        protocol::BINARY_PATH.into(),
                        "agent".into(),
                        "health".into(),
                        "--wait".into(),
                        "5".into(),
                    ],
                    ..Default::default()
                },
            )
            .await?;
        if out.exit_code != 0 {
            return Err(EngineError::Workspace {
                name: id.to_string(),
                message: format!(
                    "daemon health check failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        serde_json::from_slice(&out.stdout).map_err(|e| EngineError::Workspace {
            name: id.to_string(),
            message: format!("daemon health check answered nonsense: {e}"),
        })
    }

    /// Start the container and wait for its daemon's greeting; replace the binary and
    /// restart once if the daemon is not this build.
    async fn start_verified(
        &self,
        provider: &dyn Provider,
        w: &WorkspaceRecord,
        bin: &SelfBinary,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let ws_err = |message: String| EngineError::Workspace {
            name: w.name.to_string(),
            message,
        };
        for attempt in 0..2 {
            let line = tokio::select! {
                r = provider.start_and_wait(&w.id, READY_TIMEOUT) => r?,
                _ = cancel.cancelled() => return Err(EngineError::Interrupted),
            };
            let health = parse_ready(&line).map_err(ws_err)?;
            if health.protocol != protocol::PROTOCOL_VERSION && attempt == 1 {
                return Err(ws_err(format!(
                    "its daemon speaks protocol {} but this claude-vm speaks {}",
                    health.protocol,
                    protocol::PROTOCOL_VERSION
                )));
            }
            if health.fingerprint == bin.fingerprint {
                return Ok(());
            }
            if attempt == 1 {
                return Err(ws_err(format!(
                    "its daemon runs build {} after replacing it with {}",
                    health.fingerprint, bin.fingerprint
                )));
            }
            let what = if health.version == protocol::VERSION {
                format!("another build of claude-vm {}", health.version)
            } else {
                format!("claude-vm {}", health.version)
            };
            reporter.step(&format!(
                "the workspace runs {what}; replacing it with this one ({})",
                protocol::VERSION
            ));
            self.install_binary(provider, &w.id, bin).await?;
            provider.stop(&w.id, Duration::from_secs(10)).await?;
        }
        unreachable!("the loop returns")
    }

    async fn create(
        &self,
        req: &UpRequest,
        source: Source,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<UpOutcome> {
        // Validate everything before creating anything.
        let provider_name = req
            .provider
            .clone()
            .unwrap_or_else(|| self.config.default_provider.clone());
        let provider_record = self
            .store(|s| s.provider(&provider_name))?
            .ok_or_else(|| EngineError::UnknownProvider(provider_name.clone()))?;
        if let Some(b) = &req.branch {
            validate_branch(b)?;
        }
        let (source, local_root) = match source {
            Source::Path(p) => {
                let abs = std::fs::canonicalize(&p).map_err(|e| {
                    EngineError::InvalidInput(format!("cannot use {p:?} as a project folder: {e}"))
                })?;
                if !abs.is_dir() {
                    return Err(EngineError::InvalidInput(format!(
                        "{} is not a folder; `up` copies a whole project folder",
                        abs.display()
                    )));
                }
                if req.branch.is_some() && !abs.join(".git").exists() {
                    return Err(EngineError::InvalidInput(format!(
                        "--branch needs a git repository, and {} has no .git",
                        abs.display()
                    )));
                }
                let location = req
                    .source_label
                    .clone()
                    .unwrap_or_else(|| abs.display().to_string());
                (Source::Path(location), Some(abs))
            }
            git => (git, None),
        };
        let local_clone_source = match &source {
            Source::Git(url) if url.starts_with("file://") => {
                let path = PathBuf::from(url.trim_start_matches("file://"));
                if !path.exists() {
                    return Err(EngineError::InvalidInput(format!(
                        "git repository {} does not exist",
                        path.display()
                    )));
                }
                // A work tree's repository is its .git; a bare repository is itself.
                let git_dir = if path.join(".git").is_dir() {
                    path.join(".git")
                } else {
                    path
                };
                Some(git_dir)
            }
            _ => None,
        };
        let name: WorkspaceName = match &req.name {
            Some(n) => n.parse().map_err(|e: claude_vm_core::name::InvalidName| {
                EngineError::InvalidInput(e.to_string())
            })?,
            None => self.unused_name()?,
        };
        let image = req
            .image
            .clone()
            .or_else(|| provider_record.options.get("image").cloned())
            .unwrap_or_else(|| self.config.default_image.clone());
        if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
            return Err(EngineError::InvalidInput(format!(
                "invalid image name {image:?}"
            )));
        }
        let project = source::project_name(source.location());
        let bin = self_binary()?;
        let now = Store::now();
        let record = WorkspaceRecord {
            id: WorkspaceId::generate(&mut rand::rng()),
            name,
            provider: provider_name,
            source: source.clone(),
            project: project.clone(),
            image: image.clone(),
            branch: req.branch.clone(),
            status: Status::Creating,
            status_reason: None,
            created_at: now.clone(),
            updated_at: now,
            creator_pid: Some(std::process::id()),
        };
        // Claims the name atomically; from here on, failure must clean up.
        self.store(|s| s.insert_workspace(&record))?;
        let _lock = self.lock_workspace(&record.id).await?;
        reporter.step(&format!(
            "creating workspace {} ({})",
            record.name, record.id
        ));
        let provider = self.provider_client(&record.provider)?;
        let touched = std::sync::atomic::AtomicBool::new(false);
        let steps = self.create_steps(
            provider.as_ref(),
            &touched,
            &record,
            local_root.as_deref(),
            local_clone_source.as_deref(),
            &bin,
            reporter,
            cancel,
        );
        // Cancellation is honoured between steps and during long waits inside them, never
        // in the middle of a provider call that creates something (its result would leak).
        match steps.await {
            Ok(()) => {
                self.store(|s| s.set_status(&record.id, Status::Running, None))?;
                let fresh = self.store(|s| s.workspace(&record.id))?.unwrap_or(record);
                Ok(UpOutcome::Created(WorkspaceView::new(
                    &fresh,
                    &Observed {
                        status: Status::Running,
                        reason: None,
                    },
                )))
            }
            Err(e) if !touched.load(Ordering::SeqCst) => {
                // Nothing exists on the provider yet: forgetting the record is enough.
                self.store(|s| s.delete_workspace(&record.id))?;
                self.home.remove_lock(record.id.as_str());
                Err(e)
            }
            Err(e) => {
                reporter.step(&format!("cleaning up after the failed `up`: {e}"));
                let cleanup =
                    tokio::time::timeout(Duration::from_secs(60), provider.remove(&record.id))
                        .await;
                match cleanup {
                    Ok(Ok(())) => {
                        self.store(|s| s.delete_workspace(&record.id))?;
                        self.home.remove_lock(record.id.as_str());
                    }
                    other => {
                        let why = match other {
                            Ok(Err(ce)) => ce.to_string(),
                            _ => "timed out".to_owned(),
                        };
                        let reason = format!("`up` failed ({e}) and cleaning up failed ({why})");
                        self.store(|s| s.set_status(&record.id, Status::Error, Some(&reason)))?;
                    }
                }
                Err(e)
            }
        }
    }

    fn unused_name(&self) -> Result<WorkspaceName> {
        let taken: Vec<String> = self
            .all_workspaces()?
            .into_iter()
            .map(|w| w.name.to_string())
            .collect();
        let mut rng = rand::rng();
        loop {
            let n = WorkspaceName::generate(&mut rng);
            if !taken.iter().any(|t| t == n.as_str()) {
                return Ok(n);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_steps(
        &self,
        provider: &dyn Provider,
        touched: &std::sync::atomic::AtomicBool,
        w: &WorkspaceRecord,
        local_root: Option<&Path>,
        clone_source: Option<&Path>,
        bin: &SelfBinary,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let check = || {
            if cancel.is_cancelled() {
                Err(EngineError::Interrupted)
            } else {
                Ok(())
            }
        };
        provider.ping().await?;
        let progress = |p: claude_vm_provider::Progress| {
            if p.total > 0 {
                reporter.progress(p.current, p.total);
            } else {
                reporter.step(&p.message);
            }
        };
        tokio::select! {
            r = provider.ensure_image(&w.image, &progress) => r?,
            _ = cancel.cancelled() => return Err(EngineError::Interrupted),
        }
        check()?;
        let dir = project_dir(&w.project);
        let mut labels = BTreeMap::new();
        labels.insert("dev.claude-vm.project".to_owned(), w.project.clone());
        labels.insert(
            "dev.claude-vm.home".to_owned(),
            self.home.root().display().to_string(),
        );
        touched.store(true, Ordering::SeqCst);
        provider
            .create(&CreateSpec {
                id: w.id.clone(),
                name: w.name.to_string(),
                image: w.image.clone(),
                workdir: dir.clone(),
                entrypoint: vec![protocol::BINARY_PATH.into(), "agent".into(), "init".into()],
                env: vec![
                    ("CLAUDE_VM_WORKSPACE_ID".into(), w.id.to_string()),
                    ("CLAUDE_VM_WORKSPACE_NAME".into(), w.name.to_string()),
                    ("CLAUDE_VM_PROJECT_DIR".into(), dir.clone()),
                ],
                labels,
            })
            .await?;
        check()?;

        // One archive: the binary, the state folder, and the project (or an empty folder
        // for a clone), extracted at / so it lands in the image and in the volume at once.
        let ws_root = protocol::WORKSPACE_ROOT.trim_start_matches('/');
        let mut extras = vec![
            binary_extra(bin),
            Extra {
                path: format!("{ws_root}/").into(),
                content: ExtraContent::Dir,
                mode: 0o755,
                mtime: bin.mtime,
            },
            Extra {
                path: format!("{ws_root}/.claude-vm/").into(),
                content: ExtraContent::Dir,
                mode: 0o700,
                mtime: bin.mtime,
            },
            Extra {
                path: format!("{ws_root}/{CHOWN_MARKER}").into(),
                content: ExtraContent::Bytes(format!("{}\n", w.project).into_bytes()),
                mode: 0o600,
                mtime: bin.mtime,
            },
        ];
        let counter = Arc::new(AtomicU64::new(0));
        let plan = match local_root {
            Some(root) => {
                reporter.step(&format!("reading {}", root.display()));
                let root = root.to_owned();
                let plan = tokio::task::spawn_blocking(move || pack::plan(&root))
                    .await
                    .map_err(|e| {
                        EngineError::InvalidInput(format!("reading the project failed: {e}"))
                    })??;
                reporter.progress_start(
                    &format!(
                        "copying {} {} ({}) into the workspace",
                        plan.files,
                        if plan.files == 1 { "file" } else { "files" },
                        human_bytes(plan.bytes)
                    ),
                    plan.bytes,
                );
                Some((plan, PathBuf::from(format!("{ws_root}/{}", w.project))))
            }
            None => {
                extras.push(Extra {
                    path: format!("{ws_root}/{}/", w.project).into(),
                    content: ExtraContent::Dir,
                    mode: 0o755,
                    mtime: bin.mtime,
                });
                if let Some(src) = clone_source {
                    reporter.step("copying the local repository for cloning");
                    let src = src.to_owned();
                    let plan = tokio::task::spawn_blocking(move || pack::plan_all(&src))
                        .await
                        .map_err(|e| {
                            EngineError::InvalidInput(format!("reading the repository failed: {e}"))
                        })??;
                    let tar = pack::stream(
                        Some((plan, PathBuf::from(CLONE_SCRATCH.trim_start_matches('/')))),
                        vec![],
                        counter.clone(),
                    );
                    provider.upload(&w.id, "/", tar).await?;
                }
                None
            }
        };
        let total = plan.as_ref().map_or(0, |(p, _)| p.bytes);
        let tar = pack::stream(plan, extras, counter.clone());
        let upload = provider.upload(&w.id, "/", tar);
        tokio::pin!(upload);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                r = &mut upload => { r?; break; }
                _ = cancel.cancelled() => return Err(EngineError::Interrupted),
                _ = tick.tick() => if total > 0 { reporter.progress(counter.load(Ordering::Relaxed), total) },
            }
        }
        if total > 0 {
            reporter.progress(total, total);
            reporter.progress_end();
        }

        check()?;
        reporter.step("starting the workspace");
        self.start_verified(provider, w, bin, reporter, cancel)
            .await?;

        check()?;
        if let Source::Git(url) = &w.source {
            reporter.step(&format!("cloning {url}"));
            let from = if clone_source.is_some() {
                // The scratch copy arrives owned by root, and git refuses to read a
                // repository owned by someone else.
                self.run_checked(
                    provider,
                    w,
                    &["chown", "-R", "1000:1000", CLONE_SCRATCH],
                    None,
                    "preparing the clone",
                )
                .await?;
                CLONE_SCRATCH.to_owned()
            } else {
                url.clone()
            };
            self.git(
                provider,
                w,
                &dir,
                &["clone", "--quiet", "--", &from, &dir],
                "cloning",
            )
            .await?;
            if clone_source.is_some() {
                self.git(
                    provider,
                    w,
                    &dir,
                    &["-C", &dir, "remote", "set-url", "origin", url],
                    "setting the remote",
                )
                .await?;
                let _ = provider
                    .exec(
                        &w.id,
                        &ExecSpec {
                            cmd: vec!["rm".into(), "-rf".into(), CLONE_SCRATCH.into()],
                            ..Default::default()
                        },
                    )
                    .await;
            }
        }
        if let Some(branch) = &w.branch {
            reporter.step(&format!("checking out branch {branch}"));
            let script = r#"set -e
b="$1"
if git rev-parse --verify --quiet "refs/heads/$b" >/dev/null; then git checkout --quiet "$b"
elif git rev-parse --verify --quiet "refs/remotes/origin/$b" >/dev/null; then git checkout --quiet -b "$b" --track "origin/$b"
else git checkout --quiet -b "$b"; fi"#;
            self.run_checked(
                provider,
                w,
                &["sh", "-c", script, "sh", branch],
                Some(&dir),
                "checking out the branch",
            )
            .await?;
        }
        Ok(())
    }

    async fn git(
        &self,
        provider: &dyn Provider,
        w: &WorkspaceRecord,
        dir: &str,
        args: &[&str],
        what: &str,
    ) -> Result<()> {
        let mut cmd = vec!["git"];
        cmd.extend_from_slice(args);
        self.run_checked(provider, w, &cmd, Some(dir), what).await
    }

    /// Run a command in the workspace; as the agent user when `agent_dir` is given (in that
    /// folder), as root otherwise. Fails with the command's stderr.
    async fn run_checked(
        &self,
        provider: &dyn Provider,
        w: &WorkspaceRecord,
        cmd: &[&str],
        agent_dir: Option<&str>,
        what: &str,
    ) -> Result<()> {
        let uid = protocol::AGENT_UID;
        let spec = match agent_dir {
            Some(dir) => ExecSpec {
                cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
                user: Some(format!("{uid}:{uid}")),
                workdir: Some(dir.to_owned()),
                env: vec![
                    ("GIT_TERMINAL_PROMPT".into(), "0".into()),
                    ("HOME".into(), protocol::WORKSPACE_ROOT.into()),
                ],
            },
            None => ExecSpec {
                cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            },
        };
        let out = provider.exec(&w.id, &spec).await?;
        let message = match out.exit_code {
            0 => return Ok(()),
            127 => format!(
                "{what} failed: {} is not installed in image {}",
                cmd[0], w.image
            ),
            _ => format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        };
        Err(EngineError::Workspace {
            name: w.name.to_string(),
            message,
        })
    }

    /// `workspace down`.
    pub async fn down(
        &self,
        req: &DownRequest,
        reporter: &dyn Reporter,
    ) -> Result<(WorkspaceView, bool)> {
        let w = self.find_workspace(&req.target)?;
        let _lock = self.lock_workspace(&w.id).await?;
        let w = self
            .store(|s| s.workspace(&w.id))?
            .ok_or_else(|| EngineError::UnknownWorkspace(req.target.clone()))?;
        let provider = self.provider_client(&w.provider)?;
        let observed = observe(
            &w,
            &self.live_state_checked(provider.as_ref(), &w.id).await?,
        );
        let plan =
            workspace::plan(&observed, Action::Down).map_err(|e| EngineError::Transition {
                name: w.name.to_string(),
                source: e,
            })?;
        self.forget_link(&w.id);
        let stopped_now = match plan {
            Plan::AlreadyThere => false,
            _ => {
                reporter.step(&format!("stopping {}", w.name));
                let res = if req.force {
                    provider.kill(&w.id).await
                } else {
                    provider.stop(&w.id, req.grace).await
                };
                match res {
                    Ok(()) => {}
                    Err(ProviderError::NotFound { .. }) => {
                        return Err(EngineError::Workspace {
                            name: w.name.to_string(),
                            message: "its container no longer exists; nothing to stop (delete the workspace to clean up)".to_owned(),
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
                true
            }
        };
        let observed = if observed.status == Status::Error {
            observed
        } else {
            self.store(|s| s.set_status(&w.id, Status::Stopped, None))?;
            Observed {
                status: Status::Stopped,
                reason: None,
            }
        };
        let fresh = self.store(|s| s.workspace(&w.id))?.unwrap_or(w);
        Ok((WorkspaceView::new(&fresh, &observed), stopped_now))
    }

    /// `workspace delete`: remove the container and the volume, then the record.
    pub async fn delete(&self, target: &str, reporter: &dyn Reporter) -> Result<WorkspaceView> {
        let w = self.find_workspace(target)?;
        let _lock = self.lock_workspace(&w.id).await?;
        let w = self
            .store(|s| s.workspace(&w.id))?
            .ok_or_else(|| EngineError::UnknownWorkspace(target.to_owned()))?;
        let provider = self.provider_client(&w.provider)?;
        let observed = observe(
            &w,
            &self.live_state_checked(provider.as_ref(), &w.id).await?,
        );
        workspace::plan(&observed, Action::Delete).map_err(|e| EngineError::Transition {
            name: w.name.to_string(),
            source: e,
        })?;
        self.forget_link(&w.id);
        reporter.step(&format!("deleting {} (container and volume)", w.name));
        provider.remove(&w.id).await?;
        self.store(|s| s.delete_workspace(&w.id))?;
        self.home.remove_lock(w.id.as_str());
        Ok(WorkspaceView::new(&w, &observed))
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
