//! Where commands run: the local [`Engine`], or a server the CLI is logged in to
//! ([`Remote`]). Both answer with the engine's types (`WorkspaceView`, `ChatView`, the
//! protocol's `Conversation`/`Event`/`Diff`), so commands render them the same way: the
//! server's answers are read as `claude_vm_api`'s types (statuses and times checked), then
//! taken as the engine's view of the same document.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use claude_vm_api::encode::{path_segment, query};
use claude_vm_api::{
    BackupList, BackupTaken, ConversationDetail, CreateConversation, CreateWorkspace, Down, Forget,
    Forgotten, Interrupted, Restore, SendMessage, UploadQuery, WorkspaceList,
};
use claude_vm_core::Status;
use claude_vm_engine::{
    BackupOutcome, BackupReport, CancellationToken, ChatView, DeleteOutcome, DeleteRequest,
    DownRequest, Engine, EngineError, Events, ExportOutcome, FinalBackup, Link, Reporter,
    RestoreRequest, SnapshotInfo, UpOutcome, UpRequest, WorkspaceView,
};
use claude_vm_protocol::api::{Conversation, Decision, Diff, Event, PermissionMode, Sent};
use claude_vm_store::Home;
use hyper::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::remote::{Login, Remote, SseEvents, stream_body};

pub enum Backend {
    Local(Box<Engine>),
    Remote(Remote),
}

/// Providers that did not answer `list`: (name, reason).
pub type Unreachable = Vec<(String, String)>;

/// A server's answer (an API type) as the engine's view of the same document.
fn view<T: DeserializeOwned>(answer: &impl Serialize) -> Result<T> {
    Ok(serde_json::from_value(serde_json::to_value(answer)?)?)
}

impl Backend {
    /// The server from `remote.json` when logged in, else this machine's engine.
    pub fn open(config: Option<PathBuf>) -> Result<Backend> {
        let home = Home::from_env()?;
        if let Some(login) = Login::load(&home)? {
            return Ok(Backend::Remote(Remote::new(&login)?));
        }
        Ok(Backend::Local(Box::new(Engine::open(home, config)?)))
    }

    /// The local engine, for commands that only work locally.
    pub fn engine(&self, command: &str) -> Result<&Engine> {
        match self {
            Backend::Local(e) => Ok(e.as_ref()),
            Backend::Remote(_) => Err(self.unsupported(command)),
        }
    }

    /// One line saying `command` cannot run against the server.
    pub fn unsupported(&self, command: &str) -> anyhow::Error {
        let url = match self {
            Backend::Remote(r) => r.url(),
            Backend::Local(_) => "a server",
        };
        anyhow!(
            "`claude-vm {command}` does not work against a server yet, and this CLI is logged in to {url}; run `claude-vm logout` to go back to local mode"
        )
    }

    /// What to do about a provider that did not answer.
    pub fn unreachable_hint(&self, provider: &str) -> String {
        match self {
            Backend::Local(e) => e.unreachable_hint(provider),
            Backend::Remote(r) => format!(
                "the server at {} could not reach provider {provider}; check it there (`claude-vm provider list -v`)",
                r.url()
            ),
        }
    }

    pub async fn list(&self, detailed: bool) -> Result<(Vec<WorkspaceView>, Unreachable)> {
        match self {
            Backend::Local(e) if detailed => Ok(e.list_detailed().await?),
            Backend::Local(e) => Ok(e.list().await?),
            Backend::Remote(r) => {
                let l: WorkspaceList = r.get("/api/v1/workspaces").await?;
                let mut views: Vec<WorkspaceView> = view(&l.workspaces)?;
                if !detailed {
                    for v in &mut views {
                        v.last_activity = None;
                    }
                }
                let unreachable = l
                    .unreachable
                    .into_iter()
                    .map(|u| (u.provider, u.reason))
                    .collect();
                Ok((views, unreachable))
            }
        }
    }

    /// A workspace's name and id, by id, name or unique id prefix.
    pub async fn find_workspace(&self, query: &str) -> Result<(String, String)> {
        match self {
            Backend::Local(e) => {
                let w = e.find_workspace(query)?;
                Ok((w.name.to_string(), w.id.to_string()))
            }
            Backend::Remote(r) => {
                let w: claude_vm_api::Workspace = r.get(&ws_path(query, "")).await?;
                Ok((w.name, w.id))
            }
        }
    }

    pub async fn up(
        &self,
        req: &UpRequest,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<UpOutcome> {
        match self {
            Backend::Local(e) => Ok(e.up(req, reporter, cancel).await?),
            // Dropping the request closes the connection: an unfinished upload is
            // discarded by the server; once uploaded, the server finishes `up` on its own.
            Backend::Remote(r) => tokio::select! {
                result = remote_up(r, req, reporter) => result,
                _ = cancel.cancelled() => {
                    reporter.progress_end();
                    Err(EngineError::Interrupted.into())
                }
            },
        }
    }

    /// `workspace set --idle-stop`: a workspace's own idle stop (`None`: config.yaml's).
    pub async fn set_idle_stop(
        &self,
        workspace: &str,
        value: Option<claude_vm_core::lifecycle::IdleStop>,
    ) -> Result<claude_vm_engine::IdleStopSet> {
        match self {
            Backend::Local(e) => Ok(e.set_idle_stop(workspace, value).await?),
            Backend::Remote(r) => {
                let p: claude_vm_api::IdleStopPolicy = r
                    .post(
                        &ws_path(workspace, "/idle-stop"),
                        &claude_vm_api::SetIdleStop {
                            idle_stop: value.map(|v| v.to_string()),
                        },
                    )
                    .await?;
                Ok(claude_vm_engine::IdleStopSet {
                    workspace: p.workspace,
                    idle_stop: p.idle_stop,
                    from_config: p.from_config,
                    applied: p.applied,
                })
            }
        }
    }

    /// Stop a workspace; `true` when it was running, and how its final backup went
    /// (`None`: the server did it, and does not say).
    pub async fn down(
        &self,
        req: &DownRequest,
        reporter: &dyn Reporter,
    ) -> Result<(WorkspaceView, bool, Option<FinalBackup>)> {
        match self {
            Backend::Local(e) => {
                let out = e.down(req, reporter).await?;
                Ok((out.workspace, out.stopped_now, Some(out.backup)))
            }
            Backend::Remote(r) => {
                let before: claude_vm_api::Workspace = r.get(&ws_path(&req.target, "")).await?;
                let body = Down {
                    force: req.force,
                    timeout: Some(req.grace.as_secs()),
                };
                let after: claude_vm_api::Workspace =
                    r.post_long(&ws_path(&req.target, "/down"), &body).await?;
                Ok((view(&after)?, before.status != Status::Stopped, None))
            }
        }
    }

    pub async fn delete(
        &self,
        req: &DeleteRequest,
        reporter: &dyn Reporter,
    ) -> Result<DeleteOutcome> {
        match self {
            Backend::Local(e) => Ok(e.delete(req, reporter).await?),
            Backend::Remote(r) => {
                // What a purge removes, counted first (the server answers with the
                // workspace only).
                let purged = if req.purge {
                    Some(self.backups(Some(&req.target)).await?.len())
                } else {
                    None
                };
                let q = claude_vm_api::encode::query([
                    ("purge", req.purge.then_some("true")),
                    ("force", req.force.then_some("true")),
                ]);
                let path = ws_path(&req.target, "");
                let path = if q.is_empty() {
                    path
                } else {
                    format!("{path}?{q}")
                };
                let gone: claude_vm_api::Workspace = r.delete(&path).await?;
                Ok(DeleteOutcome {
                    workspace: view(&gone)?,
                    backup: FinalBackup::Skipped,
                    purged,
                    repository: None,
                })
            }
        }
    }

    /// `workspace backup`: a snapshot now.
    pub async fn backup(&self, target: &str, reporter: &dyn Reporter) -> Result<BackupOutcome> {
        match self {
            Backend::Local(e) => Ok(e.backup(target, reporter).await?),
            Backend::Remote(r) => {
                let w: claude_vm_api::Workspace = r.get(&ws_path(target, "")).await?;
                reporter.step(&format!("backing up {} on {}", w.name, r.url()));
                let taken: BackupTaken = r.post_long(&ws_path(&w.id, "/backup"), &()).await?;
                let snapshot = self
                    .backups(Some(&w.id))
                    .await?
                    .into_iter()
                    .find(|s| s.id == taken.snapshot)
                    .ok_or_else(|| {
                        anyhow!(
                            "the server took snapshot {} but does not list it",
                            taken.snapshot
                        )
                    })?;
                Ok(BackupOutcome {
                    workspace: w.name,
                    workspace_id: w.id,
                    report: BackupReport {
                        snapshot,
                        vanished: Vec::new(),
                        unreadable: Vec::new(),
                        unchanged: taken.unchanged,
                    },
                })
            }
        }
    }

    /// `backup list`: all snapshots, or one workspace's (oldest first).
    pub async fn backups(&self, target: Option<&str>) -> Result<Vec<SnapshotInfo>> {
        match self {
            Backend::Local(e) => Ok(e.backups(target).await?),
            Backend::Remote(r) => {
                let path = match target {
                    Some(_) => format!("/api/v1/backups?{}", query([("workspace", target)])),
                    None => "/api/v1/backups".to_owned(),
                };
                let list: BackupList = r.get(&path).await?;
                view(&list.snapshots)
            }
        }
    }

    /// `backup forget`: the ids removed.
    pub async fn forget_backups(
        &self,
        target: &str,
        keep_last: Option<u32>,
        keep_daily: Option<u32>,
    ) -> Result<Vec<String>> {
        match self {
            Backend::Local(e) => Ok(e.forget_backups(target, keep_last, keep_daily).await?),
            Backend::Remote(r) => {
                let body = Forget {
                    workspace: target.to_owned(),
                    keep_last,
                    keep_daily,
                };
                let f: Forgotten = r.post_long("/api/v1/backups/forget", &body).await?;
                Ok(f.removed)
            }
        }
    }

    /// `workspace restore`: a new workspace from a snapshot.
    pub async fn restore(
        &self,
        req: &RestoreRequest,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<UpOutcome> {
        match self {
            Backend::Local(e) => Ok(e.restore(req, reporter, cancel).await?),
            Backend::Remote(r) => {
                reporter.step(&format!(
                    "restoring {} on {} (the server finishes it if this is interrupted)",
                    req.target,
                    r.url()
                ));
                let body = Restore {
                    workspace: req.target.clone(),
                    snapshot: req.snapshot.clone(),
                    name: req.name.clone(),
                    provider: req.provider.clone(),
                    image: req.image.clone(),
                };
                tokio::select! {
                    o = r.post_long("/api/v1/backups/restore", &body) => outcome(o?),
                    _ = cancel.cancelled() => Err(EngineError::Interrupted.into()),
                }
            }
        }
    }

    /// `workspace export`: one archive of a snapshot, written to `file` here.
    pub async fn export(
        &self,
        target: &str,
        snapshot: Option<&str>,
        file: &Path,
        reporter: &dyn Reporter,
    ) -> Result<ExportOutcome> {
        match self {
            Backend::Local(e) => Ok(e.export(target, snapshot, file, reporter).await?),
            Backend::Remote(r) => remote_export(r, target, snapshot, file, reporter).await,
        }
    }

    /// `workspace import`: a new workspace from an export archive here.
    pub async fn import(
        &self,
        file: &Path,
        req: &RestoreRequest,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<UpOutcome> {
        match self {
            Backend::Local(e) => Ok(e.import(file, req, reporter, cancel).await?),
            Backend::Remote(r) => tokio::select! {
                o = remote_import(r, file, req, reporter) => o,
                _ = cancel.cancelled() => Err(EngineError::Interrupted.into()),
            },
        }
    }

    /// `delete --purge` of a workspace deleted earlier: its id and how many snapshots went.
    pub async fn purge_deleted(&self, target: &str) -> Result<(String, usize)> {
        match self {
            Backend::Local(e) => Ok(e.purge_deleted(target).await?),
            Backend::Remote(r) => {
                let body = claude_vm_api::Purge {
                    workspace: target.to_owned(),
                };
                let p: claude_vm_api::Purged = r.post_long("/api/v1/backups/purge", &body).await?;
                Ok((p.workspace_id, p.purged as usize))
            }
        }
    }

    pub async fn new_chat(
        &self,
        workspace: &str,
        agent: Option<&str>,
        message: Option<String>,
        mode: PermissionMode,
        reporter: &dyn Reporter,
    ) -> Result<ChatView> {
        match self {
            Backend::Local(e) => Ok(e
                .new_chat(workspace, agent, message, mode, reporter)
                .await?),
            Backend::Remote(r) => {
                let body = CreateConversation {
                    agent: agent.map(str::to_owned),
                    message,
                    ask: mode == PermissionMode::Ask,
                };
                let chat: claude_vm_api::Chat = r
                    .post_long(&ws_path(workspace, "/conversations"), &body)
                    .await?;
                view(&chat)
            }
        }
    }

    pub async fn chat_list(&self, workspace: Option<&str>) -> Result<Vec<ChatView>> {
        match self {
            Backend::Local(e) => Ok(e.chat_list(workspace).await?),
            Backend::Remote(r) => {
                let path = match workspace {
                    Some(w) => format!("/api/v1/conversations?{}", query([("workspace", Some(w))])),
                    None => "/api/v1/conversations".to_owned(),
                };
                let chats: Vec<claude_vm_api::Chat> = r.get(&path).await?;
                view(&chats)
            }
        }
    }

    /// A conversation by id or unique id prefix, ready to talk to.
    pub async fn chat(&self, conversation: &str) -> Result<Chat> {
        match self {
            Backend::Local(e) => {
                let (id, ws, link) = e.chat_link(conversation).await?;
                Ok(Chat {
                    id,
                    workspace: ws.name.to_string(),
                    via: Via::Local(link),
                })
            }
            Backend::Remote(r) => {
                let d: ConversationDetail = r
                    .get(&format!(
                        "/api/v1/conversations/{}",
                        path_segment(conversation)
                    ))
                    .await?;
                Ok(Chat {
                    id: d.conversation.id,
                    workspace: d.workspace,
                    via: Via::Remote(r.clone()),
                })
            }
        }
    }

    pub async fn diff(&self, workspace: &str, stat: bool) -> Result<Diff> {
        match self {
            Backend::Local(e) => {
                let (_, link) = e.link_waking(workspace).await?;
                Ok(link.diff(stat).await?)
            }
            Backend::Remote(r) => Ok(r
                .get(&ws_path(workspace, &format!("/diff?stat={stat}")))
                .await?),
        }
    }
}

/// `/api/v1/workspaces/<ws><rest>`.
pub fn ws_path(workspace: &str, rest: &str) -> String {
    format!("/api/v1/workspaces/{}{rest}", path_segment(workspace))
}

fn pathish(arg: &str) -> bool {
    arg.starts_with('.') || arg.starts_with('/') || arg.starts_with('~') || arg.contains('/')
}

/// `workspace up` against a server, deciding what TARGET is in the same order as locally:
/// a workspace's exact id or name, a git URL, a folder (uploaded), a unique id prefix.
async fn remote_up(r: &Remote, req: &UpRequest, reporter: &dyn Reporter) -> Result<UpOutcome> {
    let target = req.target.clone().unwrap_or_else(|| ".".to_owned());
    if req.devcontainer.is_some()
        || req.no_devcontainer
        || req.rebuild
        || req.trust
        || req.allow_host_mounts
    {
        bail!(
            "--devcontainer, --no-devcontainer, --rebuild, --trust and --allow-host-mounts work on this machine's workspaces only for now (the server uses the project's devcontainer.json as it finds it); `claude-vm logout` to work locally"
        );
    }
    let create = |target: String| CreateWorkspace {
        target: Some(target),
        provider: req.provider.clone(),
        image: req.image.clone(),
        branch: req.branch.clone(),
        name: req.name.clone(),
        idle_stop: req.idle_stop.map(|i| i.to_string()),
    };
    if claude_vm_core::source::is_git_url(&target) {
        if target.starts_with("file://") {
            bail!(
                "{target} names a repository on this machine, which the server at {} cannot see",
                r.url()
            );
        }
        return outcome(r.post_long("/api/v1/workspaces", &create(target)).await?);
    }
    let local = Path::new(&target);
    if !pathish(&target) {
        match r
            .get::<claude_vm_api::Workspace>(&ws_path(&target, ""))
            .await
        {
            Ok(w) if w.id == target || w.name == target || !local.exists() => {
                return outcome(r.post_long("/api/v1/workspaces", &create(w.id)).await?);
            }
            Ok(_) => {}
            Err(e) if e.status == Some(404) => {}
            Err(e) if e.status.is_none() || !local.exists() => return Err(e.into()),
            Err(_) => {}
        }
    }
    if local.exists() {
        return upload(r, local, req, reporter).await;
    }
    if pathish(&target) {
        return Err(EngineError::InvalidInput(format!("path {target:?} does not exist")).into());
    }
    Err(EngineError::UnknownTarget(target).into())
}

fn outcome(o: claude_vm_api::UpOutcome) -> Result<UpOutcome> {
    view(&o)
}

/// Create a workspace from a local folder: the same files as a local `up` (git's idea of
/// what belongs, plus `.git`), sent as a tar stream.
async fn upload(
    r: &Remote,
    folder: &Path,
    req: &UpRequest,
    reporter: &dyn Reporter,
) -> Result<UpOutcome> {
    let abs = std::fs::canonicalize(folder)
        .map_err(|e| anyhow!("cannot use {folder:?} as a project folder: {e}"))?;
    if !abs.is_dir() {
        bail!(
            "{} is not a folder; `up` copies a whole project folder",
            abs.display()
        );
    }
    if req.branch.is_some() && !abs.join(".git").exists() {
        bail!(
            "--branch needs a git repository, and {} has no .git",
            abs.display()
        );
    }
    let project = claude_vm_core::source::project_name(&abs.display().to_string());
    let query = UploadQuery {
        project,
        source: Some(abs.display().to_string()),
        provider: req.provider.clone(),
        image: req.image.clone(),
        branch: req.branch.clone(),
        name: req.name.clone(),
        idle_stop: req.idle_stop.map(|i| i.to_string()),
    }
    .to_query();
    reporter.step(&format!("reading {}", abs.display()));
    let root = abs.clone();
    let plan = tokio::task::spawn_blocking(move || claude_vm_engine::pack::plan(&root))
        .await
        .map_err(|e| anyhow!("reading the project failed: {e}"))?
        .map_err(EngineError::from)?;
    let total = plan.bytes;
    reporter.progress_start(
        &format!(
            "uploading {} {} ({}) to {}",
            plan.files,
            if plan.files == 1 { "file" } else { "files" },
            claude_vm_engine::human_bytes(total),
            r.url()
        ),
        total,
    );
    let counter = Arc::new(AtomicU64::new(0));
    let tar =
        claude_vm_engine::pack::stream(Some((plan, PathBuf::from("."))), vec![], counter.clone());
    let path = format!("/api/v1/workspaces?{query}");
    send_tar(
        r,
        &path,
        tar,
        total,
        counter,
        reporter,
        "creating the workspace",
    )
    .await
}

/// POST a tar stream (`total` bytes, `counter` counting what was read) whose answer is a
/// new workspace: the upload's progress (started by the caller) shown while it is sent,
/// then the long deadline for the server to do `then`.
async fn send_tar(
    r: &Remote,
    path: &str,
    tar: impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
    total: u64,
    counter: Arc<AtomicU64>,
    reporter: &dyn Reporter,
    then: &str,
) -> Result<UpOutcome> {
    // Sending takes as long as the link needs; once all is sent, the server's use case
    // gets the long deadline.
    let send = r.request_untimed(
        Method::POST,
        path,
        Some("application/x-tar"),
        &[],
        stream_body(tar),
    );
    tokio::pin!(send);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut uploading = true;
    let answer_by = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(answer_by);
    let timed_out = || {
        anyhow!(
            "the server at {} did not finish {then} within {}s",
            r.url(),
            crate::remote::LONG_REQUEST_TIMEOUT.as_secs()
        )
    };
    let resp = loop {
        tokio::select! {
            r = &mut send => break r,
            _ = &mut answer_by => return Err(timed_out()),
            _ = tick.tick(), if uploading => {
                let done = counter.load(Ordering::Relaxed);
                if total > 0 {
                    reporter.progress(done, total);
                }
                if done >= total {
                    uploading = false;
                    reporter.progress_end();
                    reporter.step(&format!("{then} on {}", r.url()));
                    answer_by.as_mut().reset(
                        tokio::time::Instant::now() + crate::remote::LONG_REQUEST_TIMEOUT,
                    );
                }
            }
        }
    };
    reporter.progress_end();
    let resp = resp?;
    use http_body_util::BodyExt;
    let bytes = tokio::time::timeout_at(answer_by.deadline(), resp.into_body().collect())
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| anyhow!("the answer from {} broke off: {e}", r.url()))?
        .to_bytes();
    let answer: claude_vm_api::UpOutcome = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow!("unexpected answer from {}: {e}", r.url()))?;
    outcome(answer)
}

/// `workspace import` against a server: the archive checked here, then sent.
async fn remote_import(
    r: &Remote,
    file: &Path,
    req: &RestoreRequest,
    reporter: &dyn Reporter,
) -> Result<UpOutcome> {
    let path = file.to_owned();
    let manifest =
        tokio::task::spawn_blocking(move || claude_vm_engine::read_export_manifest(&path))
            .await
            .map_err(|e| anyhow!("reading {} failed: {e}", file.display()))??;
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| anyhow!("cannot read {}: {e}", file.display()))?;
    let total = f
        .metadata()
        .await
        .map_err(|e| anyhow!("cannot read {}: {e}", file.display()))?
        .len();
    let query = claude_vm_api::ImportQuery {
        name: req.name.clone(),
        provider: req.provider.clone(),
        image: req.image.clone(),
    }
    .to_query();
    reporter.progress_start(
        &format!(
            "uploading {} (snapshot {} of {}, {}) to {}",
            file.display(),
            &manifest.snapshot[..manifest.snapshot.len().min(8)],
            manifest.workspace_name.as_deref().unwrap_or("a workspace"),
            claude_vm_engine::human_bytes(total),
            r.url()
        ),
        total,
    );
    let counter = Arc::new(AtomicU64::new(0));
    let count = counter.clone();
    let body = futures_util::stream::unfold(Some(f), move |f| {
        let count = count.clone();
        async move {
            use tokio::io::AsyncReadExt;
            let mut f = f?;
            let mut buf = vec![0u8; 256 * 1024];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    count.fetch_add(n as u64, Ordering::Relaxed);
                    Some((Ok(bytes::Bytes::from(buf)), Some(f)))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    send_tar(
        r,
        &format!("/api/v1/backups/import?{query}"),
        body,
        total,
        counter,
        reporter,
        "creating the workspace",
    )
    .await
}

/// `workspace export` against a server: it makes the archive, then sends it with its
/// length; written beside `file` and renamed into place only when whole.
async fn remote_export(
    r: &Remote,
    target: &str,
    snapshot: Option<&str>,
    file: &Path,
    reporter: &dyn Reporter,
) -> Result<ExportOutcome> {
    use http_body_util::BodyExt;
    use tokio::io::AsyncWriteExt;
    let file = std::path::absolute(file).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let dir = file.parent().unwrap_or(Path::new("/")).to_owned();
    reporter.step(&format!(
        "the server at {} is making the archive of {target}",
        r.url()
    ));
    let path = format!(
        "/api/v1/backups/export?{}",
        query([("workspace", Some(target)), ("snapshot", snapshot)])
    );
    let resp = r
        .request(
            Method::GET,
            &path,
            None,
            &[],
            crate::remote::empty_body(),
            crate::remote::Deadline::Long,
        )
        .await?;
    let total = resp
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            anyhow!(
                "the server at {} sent the archive without its length",
                r.url()
            )
        })?;
    let tmp = tempfile::NamedTempFile::new_in(&dir)
        .map_err(|e| anyhow!("cannot write in {}: {e}", dir.display()))?;
    let mut out = tokio::fs::File::from_std(
        tmp.as_file()
            .try_clone()
            .map_err(|e| anyhow!("cannot write in {}: {e}", dir.display()))?,
    );
    reporter.progress_start(
        &format!(
            "downloading the archive ({})",
            claude_vm_engine::human_bytes(total)
        ),
        total,
    );
    let mut body = resp.into_body();
    let mut got = 0u64;
    let broke = |got: u64, why: String| {
        anyhow!(
            "the archive from {} broke off after {got} of {total} bytes ({why}); nothing was written",
            r.url()
        )
    };
    let result = async {
        loop {
            let frame = match tokio::time::timeout(crate::remote::SILENCE_LIMIT, body.frame()).await
            {
                Err(_) => return Err(broke(got, "the server went silent".into())),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(broke(got, e.to_string())),
                Ok(Some(Ok(f))) => f,
            };
            if let Ok(data) = frame.into_data() {
                got += data.len() as u64;
                out.write_all(&data)
                    .await
                    .map_err(|e| anyhow!("writing {} failed: {e}", file.display()))?;
                reporter.progress(got, total);
            }
        }
        if got != total {
            return Err(broke(got, "it ended early".into()));
        }
        out.sync_all()
            .await
            .map_err(|e| anyhow!("writing {} failed: {e}", file.display()))?;
        Ok(())
    }
    .await;
    reporter.progress_end();
    result?;
    let check = tmp.path().to_owned();
    let (manifest, entries) =
        tokio::task::spawn_blocking(move || claude_vm_engine::inspect_export(&check))
            .await
            .map_err(|e| anyhow!("checking the archive failed: {e}"))??;
    tmp.persist(&file)
        .map_err(|e| anyhow!("cannot write {}: {}", file.display(), e.error))?;
    Ok(ExportOutcome {
        file,
        bytes: total,
        entries,
        manifest,
    })
}

/// A conversation, local or on the server.
pub struct Chat {
    /// The full id.
    pub id: String,
    /// Name of its workspace.
    pub workspace: String,
    via: Via,
}

#[derive(Clone)]
enum Via {
    Local(Link),
    Remote(Remote),
}

impl Chat {
    fn path(&self, rest: &str) -> String {
        format!("/api/v1/conversations/{}{rest}", path_segment(&self.id))
    }

    pub async fn conversation(&self) -> Result<Conversation> {
        match &self.via {
            Via::Local(l) => Ok(l.conversation(&self.id).await?),
            Via::Remote(r) => Ok(r.get(&self.path("")).await?),
        }
    }

    pub async fn send_message(&self, text: &str) -> Result<Sent> {
        match &self.via {
            Via::Local(l) => Ok(l.send_message(&self.id, text).await?),
            Via::Remote(r) => Ok(r
                .post(
                    &self.path("/messages"),
                    &SendMessage {
                        text: text.to_owned(),
                    },
                )
                .await?),
        }
    }

    /// Transcript events after `after`; with `follow`, waits for new ones.
    pub async fn events(&self, after: u64, follow: bool) -> Result<EventStream> {
        match &self.via {
            Via::Local(l) => Ok(EventStream::Local(l.events(&self.id, after, follow).await?)),
            Via::Remote(r) if follow => Ok(EventStream::Remote(r.events(&self.id, after).await?)),
            Via::Remote(r) => {
                let all: Vec<Event> = r
                    .get(&self.path(&format!("/transcript?after={after}")))
                    .await?;
                Ok(EventStream::List(all.into()))
            }
        }
    }

    /// Interrupt the running turn; `false` when no agent runs.
    pub async fn interrupt(&self) -> Result<bool> {
        match &self.via {
            Via::Local(l) => Ok(l.interrupt(&self.id).await?),
            Via::Remote(r) => {
                let i: Interrupted = r.post_empty(&self.path("/interrupt")).await?;
                Ok(i.interrupted)
            }
        }
    }

    pub async fn stop(&self) -> Result<Conversation> {
        match &self.via {
            Via::Local(l) => Ok(l.stop_conversation(&self.id).await?),
            Via::Remote(r) => Ok(r.post_empty(&self.path("/stop")).await?),
        }
    }

    pub async fn decide(&self, approval: &str, decision: &Decision) -> Result<Conversation> {
        match &self.via {
            Via::Local(l) => Ok(l.decide(&self.id, approval, decision).await?),
            Via::Remote(r) => Ok(r
                .post(
                    &self.path(&format!("/approvals/{}", path_segment(approval))),
                    decision,
                )
                .await?),
        }
    }
}

/// Transcript events from either side.
pub enum EventStream {
    Local(Events),
    Remote(SseEvents),
    List(VecDeque<Event>),
}

impl EventStream {
    pub async fn next(&mut self) -> Result<Option<Event>> {
        match self {
            EventStream::Local(e) => Ok(e.next().await?),
            EventStream::Remote(e) => Ok(e.next().await?),
            EventStream::List(l) => Ok(l.pop_front()),
        }
    }
}
