//! Agent-aware idle stop: the daemon itself decides when its workspace has nothing going
//! on, so the decision holds with the laptop closed and no server.
//!
//! Busy means any of: a conversation starting or in a turn (however long the model thinks),
//! messages not yet delivered to an agent, an approval asked for less than
//! `approval_wait` ago, an exec or SSH session, a file transfer, a followed event stream,
//! or a process left by `exec -d` (see [`crate::activity`]). Idle time counts from the last
//! moment any of these was seen. When it reaches the policy's `idle_stop_secs`:
//!
//! - if a control side watches (`GET /v1/lifecycle/watch`, held by `claude-vm server`), it
//!   is told, takes its final backup and answers `POST /v1/lifecycle/ready`; the daemon
//!   waits for that at most [`FINAL_BACKUP_WAIT`], and anything that makes the workspace busy
//!   meanwhile calls the stop off;
//! - then the reason is recorded in `lifecycle.json` and the daemon exits with
//!   [`claude_vm_protocol::IDLE_STOP_EXIT`], on which PID 1 exits 0: the container stops,
//!   the volume stays.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use claude_vm_protocol::api::{Conversation, ConversationStatus, LifecyclePolicy, LifecycleStatus};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::activity::Activity;

/// How long a watcher may take for its final backup before the workspace stops anyway.
pub const FINAL_BACKUP_WAIT: Duration = Duration::from_secs(600);
/// A watcher that came back within this long after its last watch still counts as there
/// (the watch is a long poll, renewed every 25 s).
const WATCHER_GRACE: Duration = Duration::from_secs(35);
/// Longest single watch.
pub const MAX_WATCH: Duration = Duration::from_secs(25);
const TICK: Duration = Duration::from_secs(1);

/// `lifecycle.json` in the state folder.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    #[serde(default)]
    policy: LifecyclePolicy,
    /// Why and when the workspace last stopped itself.
    #[serde(default)]
    last_stop: Option<LastStop>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LastStop {
    reason: String,
    at: String,
    idle_secs: u64,
}

/// What keeps a workspace up on account of its conversations, in words.
pub fn conversations_busy(
    convs: &[Conversation],
    now: jiff::Timestamp,
    approval_wait: Duration,
) -> Vec<String> {
    let mut out = Vec::new();
    for c in convs {
        match c.status {
            ConversationStatus::Starting => out.push(format!("conversation {} is starting", c.id)),
            ConversationStatus::Working => out.push(format!("conversation {} is working", c.id)),
            ConversationStatus::WaitingForApproval => {
                let asked = c.updated_at.parse::<jiff::Timestamp>().ok();
                let young =
                    asked.is_none_or(|t| now.duration_since(t).unsigned_abs() < approval_wait);
                if young {
                    out.push(format!("conversation {} waits for an approval", c.id));
                }
            }
            _ => {}
        }
        if c.queued > 0 && c.status != ConversationStatus::Failed {
            out.push(format!(
                "conversation {} has {} message(s) to deliver",
                c.id, c.queued
            ));
        }
    }
    out
}

pub struct Lifecycle {
    file: PathBuf,
    saved: Mutex<Saved>,
    activity: Arc<Activity>,
    conversations: Arc<claude_vm_agents::Manager>,
    /// The last tick that found something busy.
    busy_seen: Mutex<Instant>,
    watchers: AtomicUsize,
    last_watch: Mutex<Option<Instant>>,
    /// When the idle time ran out, while a stop is pending.
    stopping: watch::Sender<Option<Instant>>,
    /// A watcher took its final backup.
    ready: AtomicBool,
}

/// The policy kept in `file` (the default when there is none or it cannot be read).
pub fn saved_policy(file: &std::path::Path) -> LifecyclePolicy {
    crate::state::read_private(file)
        .ok()
        .and_then(|b| serde_json::from_slice::<Saved>(&b).ok())
        .unwrap_or_default()
        .policy
}

impl Lifecycle {
    pub fn load(
        file: PathBuf,
        activity: Arc<Activity>,
        conversations: Arc<claude_vm_agents::Manager>,
    ) -> Arc<Lifecycle> {
        let saved: Saved = crate::state::read_private(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Arc::new(Lifecycle {
            file,
            saved: Mutex::new(saved),
            activity,
            conversations,
            busy_seen: Mutex::new(Instant::now()),
            watchers: AtomicUsize::new(0),
            last_watch: Mutex::new(None),
            stopping: watch::channel(None).0,
            ready: AtomicBool::new(false),
        })
    }

    fn policy(&self) -> LifecyclePolicy {
        self.saved.lock().unwrap_or_else(|e| e.into_inner()).policy
    }

    /// Replace the policy (kept on the volume); the idle time counts on from where it was.
    pub fn set_policy(&self, policy: LifecyclePolicy) -> std::io::Result<LifecycleStatus> {
        let body = {
            let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
            saved.policy = policy;
            serde_json::to_vec(&*saved).expect("serializable")
        };
        crate::state::write_private(&self.file, &body)?;
        Ok(self.status())
    }

    fn busy(&self) -> Vec<String> {
        let mut busy = self.activity.open();
        busy.extend(conversations_busy(
            &self.conversations.list(),
            jiff::Timestamp::now(),
            Duration::from_secs(self.policy().approval_wait_secs),
        ));
        busy
    }

    fn idle_for(&self) -> Duration {
        let seen = self
            .busy_seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        seen.min(self.activity.since_last())
    }

    pub fn status(&self) -> LifecycleStatus {
        let policy = self.policy();
        let busy = self.busy();
        let idle = if busy.is_empty() {
            self.idle_for()
        } else {
            Duration::ZERO
        };
        LifecycleStatus {
            policy,
            idle_secs: idle.as_secs(),
            stop_in_secs: policy
                .idle_stop_secs
                .map(|limit| limit.saturating_sub(idle.as_secs())),
            stopping: self.stopping.borrow().is_some(),
            busy,
        }
    }

    fn watched(&self) -> bool {
        self.watchers.load(Ordering::SeqCst) > 0
            || self
                .last_watch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|t| t.elapsed() < WATCHER_GRACE)
    }

    /// `GET /v1/lifecycle/watch`: answers once a stop is pending, or after `wait`.
    pub async fn watch(&self, wait: Duration) -> LifecycleStatus {
        struct Watching<'a>(&'a Lifecycle);
        impl Drop for Watching<'_> {
            fn drop(&mut self) {
                self.0.watchers.fetch_sub(1, Ordering::SeqCst);
                *self.0.last_watch.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            }
        }
        self.watchers.fetch_add(1, Ordering::SeqCst);
        let _watching = Watching(self);
        let mut rx = self.stopping.subscribe();
        let _ = tokio::time::timeout(wait.min(MAX_WATCH), rx.wait_for(Option::is_some)).await;
        self.status()
    }

    /// `POST /v1/lifecycle/ready`: the watcher's final backup is done. False when no stop
    /// is pending (the workspace became busy again).
    pub fn ready(&self) -> bool {
        if self.stopping.borrow().is_none() {
            return false;
        }
        self.ready.store(true, Ordering::SeqCst);
        true
    }

    /// Runs until the workspace should stop for idleness; records why.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::time::sleep(TICK).await;
            let busy = self.busy();
            if !busy.is_empty() {
                *self.busy_seen.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                if self.stopping.borrow().is_some() {
                    tracing::info!("not stopping: {}", busy.join(", "));
                    self.ready.store(false, Ordering::SeqCst);
                    self.stopping.send_replace(None);
                }
                continue;
            }
            let idle = self.idle_for();
            let Some(limit) = self.policy().idle_stop_secs.map(Duration::from_secs) else {
                continue;
            };
            if idle < limit {
                if self.stopping.borrow().is_some() {
                    // Something happened and ended between two ticks.
                    self.ready.store(false, Ordering::SeqCst);
                    self.stopping.send_replace(None);
                }
                continue;
            }
            // Copied out first: the channel's read guard must be gone before a send.
            let pending = *self.stopping.borrow();
            let since = match pending {
                Some(t) => t,
                None => {
                    let now = Instant::now();
                    tracing::info!("idle for {}s: stopping the workspace", idle.as_secs());
                    self.stopping.send_replace(Some(now));
                    now
                }
            };
            let proceed = !self.watched()
                || self.ready.load(Ordering::SeqCst)
                || since.elapsed() >= FINAL_BACKUP_WAIT;
            if proceed {
                self.record_stop(idle);
                return;
            }
        }
    }

    fn record_stop(&self, idle: Duration) {
        let body = {
            let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
            saved.last_stop = Some(LastStop {
                reason: "idle".to_owned(),
                at: jiff::Timestamp::now().to_string(),
                idle_secs: idle.as_secs(),
            });
            serde_json::to_vec(&*saved).expect("serializable")
        };
        if let Err(e) = crate::state::write_private(&self.file, &body) {
            tracing::warn!("cannot record the idle stop: {e}");
        }
        tracing::info!("stopped for idleness after {}s", idle.as_secs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use claude_vm_protocol::api::PermissionMode;

    fn conv(id: &str, status: ConversationStatus, queued: u64, updated: &str) -> Conversation {
        Conversation {
            id: id.to_owned(),
            agent: "claude".to_owned(),
            title: None,
            status,
            status_reason: None,
            permission_mode: PermissionMode::default(),
            session_id: None,
            queued,
            last_seq: 0,
            created_at: updated.to_owned(),
            updated_at: updated.to_owned(),
            agent_version: None,
        }
    }

    #[test]
    fn which_conversations_keep_a_workspace_up() {
        use ConversationStatus as S;
        let now: jiff::Timestamp = "2026-12-02T12:00:00Z".parse().unwrap();
        let day = Duration::from_secs(86400);
        let recent = "2026-12-02T11:00:00Z";
        let old = "2026-11-30T11:00:00Z";
        let table: &[(Conversation, bool)] = &[
            (conv("a", S::Idle, 0, old), false),
            (conv("b", S::Working, 0, old), true),
            (conv("c", S::Starting, 0, old), true),
            (conv("d", S::WaitingForApproval, 0, recent), true),
            (conv("e", S::WaitingForApproval, 0, old), false),
            (conv("f", S::Idle, 2, old), true),
            (conv("g", S::Failed, 2, old), false),
            (conv("h", S::Stopped, 0, old), false),
            (conv("i", S::Failed, 0, recent), false),
            (conv("j", S::WaitingForApproval, 0, "garbage"), true),
        ];
        for (c, busy) in table {
            let got = conversations_busy(std::slice::from_ref(c), now, day);
            assert_eq!(!got.is_empty(), *busy, "{} {:?}: {got:?}", c.id, c.status);
        }
    }
}
