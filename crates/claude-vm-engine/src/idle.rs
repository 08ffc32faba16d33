//! Workspaces that stop themselves and start again when used: each workspace's idle-stop
//! policy (`config.yaml` `lifecycle:`, `up --idle-stop`, `workspace set --idle-stop`), given
//! to its daemon, which keeps the timer; the record of an idle stop, for `list`; and the
//! wake of a stopped workspace by the commands that need it running.

use std::sync::Arc;
use std::time::Duration;

use claude_vm_core::lifecycle::IdleStop;
use claude_vm_core::{LiveState, Status};
use claude_vm_link::Link;
use claude_vm_protocol::api::LifecyclePolicy;
use claude_vm_store::WorkspaceRecord;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{Engine, EngineError, Reporter, Result};

/// What `workspace set --idle-stop` did.
#[derive(Debug, Clone, Serialize)]
pub struct IdleStopSet {
    pub workspace: String,
    /// The policy now in force (`off` or a duration such as `30m`).
    pub idle_stop: String,
    /// Whether it comes from `config.yaml` (no setting of its own).
    pub from_config: bool,
    /// The running workspace's daemon has it; a stopped one gets it when it starts.
    pub applied: bool,
}

/// Whether commands start a stopped workspace they need (`--no-start` refuses).
pub enum Wake {
    /// Start it, telling this reporter in one line.
    Start(Arc<dyn Reporter>),
    Refuse,
}

/// Forwards only warnings: a wake is announced in one line, not step by step.
struct WarningsOnly<'a>(&'a dyn Reporter);

impl Reporter for WarningsOnly<'_> {
    fn step(&self, _: &str) {}
    fn progress_start(&self, _: &str, _: u64) {}
    fn progress(&self, _: u64, _: u64) {}
    fn progress_end(&self) {}
    fn warn(&self, message: &str) {
        self.0.warn(message);
    }
}

impl Engine {
    /// What commands do with a stopped workspace they need (default: start it, silently).
    pub fn set_wake(&self, wake: Wake) {
        *self.wake.lock().unwrap_or_else(|e| e.into_inner()) = wake;
    }

    /// The workspace's idle-stop policy: its own setting, else `config.yaml`'s.
    pub(crate) fn idle_policy(&self, w: &WorkspaceRecord) -> Result<LifecyclePolicy> {
        let own = self
            .store(|s| s.idle_stop(&w.id))?
            .map(|v| IdleStop::parse(&v))
            .transpose()
            .map_err(EngineError::InvalidInput)?;
        let p = self
            .config
            .lifecycle
            .policy(own)
            .map_err(EngineError::InvalidInput)?;
        Ok(LifecyclePolicy {
            idle_stop_secs: p.idle_stop.duration().map(|d| d.as_secs()),
            approval_wait_secs: p.approval_wait.as_secs(),
        })
    }

    /// Give a workspace that just started its policy. A failure is reported, never fatal:
    /// the daemon keeps the last policy it was given.
    pub(crate) async fn apply_idle_policy(&self, w: &WorkspaceRecord, reporter: &dyn Reporter) {
        let _ = self.store(|s| s.set_idle_since(&w.id, None));
        let applied = async {
            let policy = self.idle_policy(w)?;
            // A daemon that just started with this very policy needs no link to be told it.
            let started = self
                .started_policy
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(w.id.as_str());
            if started == Some(policy) {
                return Ok(());
            }
            let (_, link) = self.link(w.id.as_str()).await?;
            link.set_lifecycle(&policy).await?;
            Ok::<_, EngineError>(())
        };
        if let Err(e) = applied.await {
            reporter.warn(&format!(
                "{} did not get its idle-stop policy ({e}); it keeps the one it had",
                w.name
            ));
        }
    }

    /// What a daemon's ready line said about its policy, for the next
    /// [`Engine::apply_idle_policy`] of that workspace.
    pub(crate) fn daemon_started_with(
        &self,
        id: &claude_vm_core::WorkspaceId,
        policy: claude_vm_protocol::api::LifecyclePolicy,
    ) {
        self.started_policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), policy);
    }

    /// `workspace set <ws> --idle-stop off|DURATION|default`: `None` goes back to
    /// `config.yaml`'s `lifecycle.idle_stop`.
    pub async fn set_idle_stop(
        &self,
        target: &str,
        value: Option<IdleStop>,
    ) -> Result<IdleStopSet> {
        let w = self.find_workspace(target)?;
        let text = value.map(|v| v.to_string());
        self.store(|s| s.set_idle_stop(&w.id, text.as_deref()))?;
        let policy = self.idle_policy(&w)?;
        let provider = self.provider_client(&w.provider)?;
        let running = matches!(
            self.live_state_checked(provider.as_ref(), &w.id).await?,
            LiveState::Running
        ) && w.status != Status::Creating;
        let applied = if running {
            let (_, link) = self.link(w.id.as_str()).await?;
            link.set_lifecycle(&policy).await?;
            true
        } else {
            false
        };
        Ok(IdleStopSet {
            workspace: w.name.to_string(),
            idle_stop: match policy.idle_stop_secs {
                Some(s) => IdleStop::After(Duration::from_secs(s)).to_string(),
                None => "off".to_owned(),
            },
            from_config: value.is_none(),
            applied,
        })
    }

    /// Seen stopped after it ran: if it stopped itself, remember since when it had been
    /// idle (its stop time less its idle timer), for `list`'s `stopped (idle 31m)`.
    pub(crate) async fn note_stop(&self, w: &WorkspaceRecord) {
        let Ok(provider) = self.provider_client(&w.provider) else {
            return;
        };
        let Ok(Some(at)) = provider.stopped_itself(&w.id).await else {
            return;
        };
        let idle = self
            .idle_policy(w)
            .ok()
            .and_then(|p| p.idle_stop_secs)
            .unwrap_or(0);
        let since = at
            .checked_sub(jiff::SignedDuration::from_secs(idle as i64))
            .unwrap_or(at);
        let _ = self.store(|s| s.set_idle_since(&w.id, Some(&since.to_string())));
    }

    /// The link to a workspace a command needs running: a stopped one is started first (one
    /// line on the wake reporter), unless waking is refused (`--no-start`).
    pub async fn link_waking(&self, target: &str) -> Result<(WorkspaceRecord, Link)> {
        match self.link(target).await {
            Err(EngineError::NotRunning { name }) => {
                let w = self.find_workspace(target)?;
                let reporter = match &*self.wake.lock().unwrap_or_else(|e| e.into_inner()) {
                    Wake::Start(r) => r.clone(),
                    Wake::Refuse => return Err(EngineError::NotRunning { name }),
                };
                let idle = self
                    .store(|s| s.idle_since(&w.id))?
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map(|t| {
                        let d = jiff::Timestamp::now().duration_since(t).unsigned_abs();
                        format!(" (idle {})", claude_vm_core::lifecycle::idle_duration(d))
                    })
                    .unwrap_or_default();
                reporter.step(&format!("{name} is stopped{idle}; starting it"));
                self.resume(
                    w,
                    &WarningsOnly(reporter.as_ref()),
                    &CancellationToken::new(),
                )
                .await?;
                self.link(target).await
            }
            other => other,
        }
    }
}

impl Engine {
    /// Send a message to a conversation; if its workspace is not running, keep the message
    /// in the index (answered `held`) for [`Engine::deliver_held`]. What the server does, so
    /// a message to a stopped workspace is accepted at once.
    pub async fn send_or_hold(
        &self,
        conversation: &str,
        text: &str,
    ) -> Result<(claude_vm_protocol::api::Sent, WorkspaceRecord)> {
        let (c, ws) = self.find_chat(conversation)?;
        // One id for every attempt: if a send that failed did reach the daemon, the held
        // copy delivered later under the same id is not queued twice.
        let id = format!("held-{:016x}", rand::random::<u64>());
        // Messages already held go first: this one may not overtake them.
        let earlier = self.store(|s| s.outbox(Some(&ws.id)))?;
        if earlier.is_empty() {
            match self.link(ws.id.as_str()).await {
                Ok((ws, link)) => {
                    self.renew_account(&ws, &link, &c).await;
                    match link.send_message_once(&c.id, text, Some(&id)).await {
                        Ok(sent) => return Ok((sent, ws)),
                        Err(e) => {
                            // Stopped under the link? Then hold it; else the error stands.
                            self.forget_link(&ws.id);
                            if self.link(ws.id.as_str()).await.is_ok() {
                                return Err(e.into());
                            }
                            tracing::debug!(workspace = %ws.name, "holding a message: {e}");
                        }
                    }
                }
                // Stopped, or its provider cannot be reached now: kept for later.
                Err(e) => tracing::debug!(workspace = %ws.name, "holding a message: {e}"),
            }
        }
        self.store(|s| s.outbox_add(&id, &ws.id, &c.id, text))?;
        Ok((
            claude_vm_protocol::api::Sent {
                message_id: id,
                seq: 0,
                held: true,
            },
            ws,
        ))
    }

    /// Start a workspace with held messages and deliver them in order, each under its own
    /// id (a delivery repeated after a crash is accepted once). Stops at the first failure,
    /// keeping that message and the rest with the reason. Returns how many were delivered.
    pub async fn deliver_held(&self, workspace: &str) -> Result<usize> {
        let w = self.find_workspace(workspace)?;
        let held = self.store(|s| s.outbox(Some(&w.id)))?;
        if held.is_empty() {
            return Ok(0);
        }
        let fail = |m: &claude_vm_store::OutboxMessage, e: &EngineError| {
            let _ = self.store(|s| s.outbox_failed(&m.id, &e.to_string()));
        };
        let link = match self.link_waking(w.id.as_str()).await {
            Ok((_, link)) => link,
            Err(e) => {
                fail(&held[0], &e);
                return Err(e);
            }
        };
        let mut n = 0;
        let mut renewed = std::collections::BTreeSet::new();
        for m in &held {
            if renewed.insert(m.conversation_id.clone())
                && let Ok((c, _)) = self.find_chat(&m.conversation_id)
            {
                self.renew_account(&w, &link, &c).await;
            }
            match link
                .send_message_once(&m.conversation_id, &m.text, Some(&m.id))
                .await
            {
                Ok(_) => {
                    self.store(|s| s.outbox_delivered(&m.id))?;
                    n += 1;
                }
                Err(e) => {
                    let e = EngineError::from(e);
                    fail(m, &e);
                    return Err(e);
                }
            }
        }
        Ok(n)
    }

    /// Workspaces with held messages, by id.
    pub fn workspaces_with_held(&self) -> Result<Vec<String>> {
        // Rows come in acceptance order, workspaces interleaved: a set, not `dedup`.
        let ids: std::collections::BTreeSet<String> = self
            .store(|s| s.outbox(None))?
            .into_iter()
            .map(|m| m.workspace_id.to_string())
            .collect();
        Ok(ids.into_iter().collect())
    }

    /// `claude-vm server`: follow a running workspace's idle timer; when it decides to stop
    /// itself, take its final backup, then let it stop. Returns once it stopped or cannot be
    /// reached.
    pub async fn follow_idle(&self, workspace: &str) -> Result<()> {
        loop {
            let (w, link) = self.link(workspace).await?;
            let st = link.watch_lifecycle(Duration::from_secs(20)).await?;
            if !st.stopping {
                continue;
            }
            if self.config.backup.enabled {
                match self.backup(w.id.as_str(), &crate::NullReporter).await {
                    Ok(_) => {
                        tracing::info!(workspace = %w.name, "final backup before the idle stop taken")
                    }
                    Err(e) => {
                        tracing::warn!(workspace = %w.name, "the final backup before the idle stop failed: {e}; it stops anyway")
                    }
                }
            }
            // Refused when it became busy meanwhile: then it keeps running, and so do we.
            if link.ready_to_stop().await.is_ok() {
                tracing::info!(workspace = %w.name, "stopping itself for idleness");
                self.notify_idle_stop(w.name.as_str());
                // Followed until it is gone, so no second follower backs it up again.
                let t = std::time::Instant::now();
                while t.elapsed() < Duration::from_secs(60) && link.activity().await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                self.forget_link(&w.id);
                return Ok(());
            }
        }
    }
}
