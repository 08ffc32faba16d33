//! Notifications (`config.yaml` `notify:`), as `claude-vm server` sends them: it follows every
//! conversation of every running workspace in the background (never keeping one up), turns
//! approvals, turn ends and failures (and idle stops and failed backups) into notifications,
//! and delivers them from an outbox in the state database: at least once, with retries and
//! backoff, never twice for the same event (its id), never in the conversation's way.
//!
//! Turn ends of one workspace are coalesced: the first is sent at once, any more within
//! `notify.coalesce` go out together as one when that window closes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use claude_vm_core::notify::{EventKind, Notification, first_line};
use claude_vm_protocol::api::{ConversationStatus, Event, EventBody};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::{Engine, Result};

/// Attempts before a notification is given up (the last one about 10 minutes after the
/// first failure).
const MAX_ATTEMPTS: u32 = 8;
/// How often a followed workspace is asked for new conversations.
const DISCOVER_EVERY: Duration = Duration::from_secs(5);

/// What `claude-vm notify test` did for one channel.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    pub channel: String,
    pub kind: &'static str,
    /// Why it failed; `None` when the channel took the message.
    pub error: Option<String>,
}

fn unix_now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Seconds to wait after the `attempts`-th failure: 2, 4, 8, ... at most 10 minutes.
pub fn backoff(attempts: u32) -> i64 {
    (2i64 << attempts.min(16)).min(600)
}

impl Engine {
    /// Where links in notifications point (the server tells it its address).
    pub fn set_link_base(&self, base: &str) {
        *self.link_base.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(base.trim_end_matches('/').to_owned());
    }

    fn page_link(&self, path: &str) -> Option<String> {
        let base = self.config.notify.link_base.clone().or_else(|| {
            self.link_base
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })?;
        Some(format!("{}{path}", base.trim_end_matches('/')))
    }

    /// A woken sender, so a notification leaves at once rather than at the next tick.
    pub fn notify_wakeup(&self) -> Arc<tokio::sync::Notify> {
        self.notify_kick.clone()
    }

    /// Queue `n` for every channel that wants its kind (a repeat of the same id is a no-op).
    pub fn notify(&self, n: &Notification) {
        let payload = serde_json::to_string(n).expect("serializable");
        let mut queued = false;
        for (i, ch) in self.config.notify.channels.iter().enumerate() {
            if !ch.wants(n.kind) {
                continue;
            }
            let name = ch.display_name(i);
            let id = format!("{}@{name}", n.id);
            match self.store(|s| s.notify_enqueue(&id, &name, &payload, unix_now())) {
                Ok(q) => queued |= q,
                Err(e) => tracing::warn!("cannot queue notification {id}: {e}"),
            }
        }
        if queued {
            self.notify_kick.notify_one();
        }
    }

    /// One round of deliveries: every notification due, in parallel; returns how many were
    /// delivered.
    pub async fn notify_deliver_due(&self) -> usize {
        let Ok(due) = self.store(|s| s.notify_due(unix_now(), 64)) else {
            return 0;
        };
        let channels: HashMap<String, &claude_vm_core::notify::Channel> = self
            .config
            .notify
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| (c.display_name(i), c))
            .collect();
        // Each outcome is recorded as soon as its attempt ends, not when the slowest of the
        // round does: a server stopped meanwhile sends again only what was in flight.
        let attempts = due.iter().map(|p| {
            let channel = channels.get(&p.channel).copied();
            async move {
                let n: Option<Notification> = serde_json::from_str(&p.payload).ok();
                let result = match (channel, n) {
                    (Some(c), Some(n)) => claude_vm_notify::send(c, &n)
                        .await
                        .map_err(|e| e.to_string()),
                    (None, _) => Err("the channel is no longer in config.yaml".to_owned()),
                    (_, None) => Err("unreadable notification".to_owned()),
                };
                let known = channel.is_some();
                match result {
                    Ok(()) => {
                        let _ = self.store(|s| s.notify_delivered(&p.id));
                        true
                    }
                    Err(e) => {
                        let next = (known && p.attempts + 1 < MAX_ATTEMPTS)
                            .then(|| unix_now() + backoff(p.attempts));
                        tracing::warn!(channel = %p.channel, "notification not delivered: {e}");
                        let _ = self.store(|s| s.notify_failed(&p.id, &e, next));
                        false
                    }
                }
            }
        });
        futures_util::future::join_all(attempts)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }

    /// Forget notifications settled more than a week ago.
    pub fn notify_prune(&self) {
        let week = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 7);
        let _ = self.store(|s| s.notify_prune(&week.to_string()));
    }

    /// `claude-vm notify status`.
    pub fn notify_status(&self) -> Result<Vec<claude_vm_store::ChannelStatus>> {
        let mut out = self.store(|s| s.notify_status())?;
        for (i, c) in self.config.notify.channels.iter().enumerate() {
            let name = c.display_name(i);
            if !out.iter().any(|s| s.channel == name) {
                out.push(claude_vm_store::ChannelStatus {
                    channel: name,
                    delivered: 0,
                    pending: 0,
                    failed: 0,
                    last_delivered_at: None,
                    last_error: None,
                    last_error_at: None,
                });
            }
        }
        Ok(out)
    }

    /// `claude-vm notify test`: one message to every channel, now, past the outbox.
    pub async fn notify_test(&self) -> Vec<TestOutcome> {
        let n = Notification {
            id: format!("test:{}", unix_now()),
            kind: EventKind::Test,
            workspace: String::new(),
            conversation: None,
            title: "claude-vm: test notification".to_owned(),
            body: "Notifications from claude-vm reach you here.".to_owned(),
            link: self.page_link("/"),
            at: jiff::Timestamp::now().to_string(),
        };
        let sends = self
            .config
            .notify
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let n = &n;
                async move {
                    TestOutcome {
                        channel: c.display_name(i),
                        kind: c.kind.type_name(),
                        error: claude_vm_notify::send(c, n)
                            .await
                            .err()
                            .map(|e| e.to_string()),
                    }
                }
            });
        futures_util::future::join_all(sends).await
    }

    pub(crate) fn notify_idle_stop(&self, workspace: &str) {
        self.notify(&Notification {
            id: format!("idle:{workspace}:{}", unix_now()),
            kind: EventKind::IdleStopped,
            workspace: workspace.to_owned(),
            conversation: None,
            title: format!("{workspace}: stopped for idleness"),
            body: "Nothing was going on; it starts again when you use it.".to_owned(),
            link: self.page_link(&format!("/w/{workspace}")),
            at: jiff::Timestamp::now().to_string(),
        });
    }

    pub(crate) fn notify_backup_failed(&self, workspace: &str, error: &str) {
        // At most one an hour per workspace, however often the retries fail.
        let hour = unix_now() / 3600;
        self.notify(&Notification {
            id: format!("backup:{workspace}:{hour}"),
            kind: EventKind::BackupFailed,
            workspace: workspace.to_owned(),
            conversation: None,
            title: format!("{workspace}: backup failed"),
            body: first_line(error, 300),
            link: self.page_link(&format!("/w/{workspace}")),
            at: jiff::Timestamp::now().to_string(),
        });
    }

    /// `claude-vm server`: follow every conversation of a running workspace for
    /// notifications, until the workspace can no longer be reached.
    pub async fn follow_conversations(self: Arc<Self>, workspace: String) -> Result<()> {
        let (tx, mut rx) = mpsc::channel::<(String, Event)>(256);
        let mut followed: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let coalesce = claude_vm_core::backup::parse_interval(&self.config.notify.coalesce)
            .unwrap_or(Duration::from_secs(10));
        let mut window: Option<Instant> = None;
        let mut gathered: Vec<(String, Event)> = Vec::new();
        // The last event read of each conversation.
        let mut latest: HashMap<String, u64> = HashMap::new();
        let mut discover = tokio::time::interval(DISCOVER_EVERY);
        let started = jiff::Timestamp::now();
        let (ws, _) = self
            .link(&workspace)
            .await
            .map(|(w, l)| (w.name.to_string(), l))?;
        let result = loop {
            let window_end = window.map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = discover.tick() => {
                    followed.retain(|_, t| !t.is_finished());
                    let convs = match self.link(&workspace).await {
                        Ok((_, link)) => match link.conversations().await {
                            Ok(c) => c.into_iter().map(|c| (c, link.clone())).collect::<Vec<_>>(),
                            Err(e) => break Err(e.into()),
                        },
                        Err(e) => break Err(e),
                    };
                    for (c, link) in convs {
                        if followed.contains_key(&c.id) {
                            continue;
                        }
                        // A conversation seen for the first time is read from its start if
                        // it began while this follower ran, else from now on (its history
                        // was before there was anyone to tell).
                        let new = c
                            .created_at
                            .parse::<jiff::Timestamp>()
                            .is_ok_and(|t| t >= started);
                        let after = match self.store(|s| s.notify_cursor(&c.id)) {
                            Ok(Some(seq)) => seq,
                            _ => {
                                let from = if new { 0 } else { c.last_seq };
                                let _ = self.store(|s| s.set_notify_cursor(&c.id, from));
                                from
                            }
                        };
                        let tx = tx.clone();
                        let id = c.id.clone();
                        followed.insert(c.id.clone(), tokio::spawn(async move {
                            let Ok(mut events) = link.events_background(&id, after).await else {
                                return;
                            };
                            while let Ok(Some(e)) = events.next().await {
                                if tx.send((id.clone(), e)).await.is_err() {
                                    return;
                                }
                            }
                        }));
                    }
                }
                Some((conv, e)) = rx.recv() => {
                    latest.insert(conv.clone(), e.seq);
                    if matches!(e.body, EventBody::TurnEnd { .. }) {
                        if window.is_some() {
                            gathered.push((conv, e));
                            continue;
                        }
                        window = Some(Instant::now() + coalesce);
                    }
                    if let Some(n) = self.event_notification(&ws, &conv, &e) {
                        self.notify(&n);
                    }
                    // A turn end still gathered keeps its conversation's cursor before it,
                    // so that after a restart it is read (and told) again; what was told
                    // already is not told twice (the outbox knows its id).
                    if !gathered.iter().any(|(c, _)| *c == conv) {
                        let _ = self.store(|s| s.set_notify_cursor(&conv, e.seq));
                    }
                }
                _ = async { tokio::time::sleep_until(window_end.expect("set")).await }, if window_end.is_some() => {
                    if gathered.is_empty() {
                        window = None;
                        continue;
                    }
                    let turns = std::mem::take(&mut gathered);
                    self.notify(&self.turns_notification(&ws, &turns));
                    for (conv, e) in &turns {
                        let seq = latest.get(conv).copied().unwrap_or(e.seq).max(e.seq);
                        let _ = self.store(|s| s.set_notify_cursor(conv, seq));
                    }
                    window = Some(Instant::now() + coalesce);
                }
            }
        };
        for (_, t) in followed {
            t.abort();
        }
        // Turn ends gathered but not sent: their cursors did not move, so the next follower
        // reads and sends them.
        result
    }

    fn event_notification(&self, ws: &str, conv: &str, e: &Event) -> Option<Notification> {
        let (kind, title, body) = match &e.body {
            EventBody::ApprovalRequest { tool, .. } => (
                EventKind::Approval,
                format!("{ws}: approval needed"),
                format!("The agent asks to use {tool}."),
            ),
            EventBody::TurnEnd { result, is_error } => (
                EventKind::TurnFinished,
                format!(
                    "{ws}: turn {}",
                    if *is_error {
                        "ended with an error"
                    } else {
                        "finished"
                    }
                ),
                first_line(result.as_deref().unwrap_or(""), 200),
            ),
            EventBody::Status {
                status: ConversationStatus::Failed,
                reason,
            } => (
                EventKind::Failed,
                format!("{ws}: conversation failed"),
                first_line(reason.as_deref().unwrap_or("the agent failed"), 300),
            ),
            _ => return None,
        };
        Some(Notification {
            id: format!("{conv}:{}", e.seq),
            kind,
            workspace: ws.to_owned(),
            conversation: Some(conv.to_owned()),
            title,
            body,
            link: self.page_link(&format!("/c/{conv}")),
            at: e.ts.clone(),
        })
    }

    /// Several turn ends as one notification (the id of the first, so a repeat after a
    /// restart is the same notification).
    fn turns_notification(&self, ws: &str, turns: &[(String, Event)]) -> Notification {
        let (first_conv, first) = &turns[0];
        let lines: Vec<String> = turns
            .iter()
            .take(5)
            .map(|(_, e)| match &e.body {
                EventBody::TurnEnd { result, .. } => {
                    format!(
                        "• {}",
                        first_line(result.as_deref().unwrap_or("(no text)"), 120)
                    )
                }
                _ => String::new(),
            })
            .collect();
        let convs: std::collections::BTreeSet<&str> =
            turns.iter().map(|(c, _)| c.as_str()).collect();
        Notification {
            id: format!("{first_conv}:{}", first.seq),
            kind: EventKind::TurnFinished,
            workspace: ws.to_owned(),
            conversation: (convs.len() == 1).then(|| first_conv.clone()),
            title: format!("{ws}: {} more turns finished", turns.len()),
            body: lines.join("\n"),
            link: if convs.len() == 1 {
                self.page_link(&format!("/c/{first_conv}"))
            } else {
                self.page_link(&format!("/w/{ws}"))
            },
            at: first.ts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        let b: Vec<i64> = (0..9).map(super::backoff).collect();
        assert_eq!(b, [2, 4, 8, 16, 32, 64, 128, 256, 512]);
        assert_eq!(super::backoff(12), 600);
        assert_eq!(super::backoff(40), 600);
    }
}
