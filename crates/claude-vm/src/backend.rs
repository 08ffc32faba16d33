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
    DownRequest, Engine, EngineError, Events, FinalBackup, Link, Reporter, RestoreRequest,
    SnapshotInfo, UpOutcome, UpRequest, WorkspaceView,
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
                if req.purge || req.force {
                    return Err(self.unsupported("workspace delete --purge/--force"));
                }
                let gone: claude_vm_api::Workspace = r.delete(&ws_path(&req.target, "")).await?;
                Ok(DeleteOutcome {
                    workspace: view(&gone)?,
                    backup: FinalBackup::Skipped,
                    purged: None,
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
    // Sending takes as long as the link needs; once all is sent, the server's `up` gets
    // the long deadline of a use case.
    let send = r.request_untimed(
        Method::POST,
        &path,
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
            "the server at {} did not finish creating the workspace within {}s",
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
                    reporter.step(&format!("creating the workspace on {}", r.url()));
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
