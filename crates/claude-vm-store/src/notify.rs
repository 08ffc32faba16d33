//! The server's notification outbox: one row per event and channel, delivered at least once
//! with retries, never twice for the same id; and how far each conversation was read.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use crate::db::{Store, StoreError};

/// A notification waiting for (another) delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingNotification {
    pub id: String,
    pub channel: String,
    /// The notification as JSON.
    pub payload: String,
    pub attempts: u32,
}

/// How a channel fares (`claude-vm notify status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelStatus {
    pub channel: String,
    pub delivered: u64,
    pub pending: u64,
    /// Given up on after every retry.
    pub failed: u64,
    pub last_delivered_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

impl Store {
    /// Queue a notification for a channel; false if one with this id exists (already
    /// noticed), so a repeated notice never becomes a second notification.
    pub fn notify_enqueue(
        &self,
        id: &str,
        channel: &str,
        payload: &str,
        now_unix: i64,
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO notifications (id, channel, payload, created_at, next_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, channel, payload, Store::now(), now_unix],
        )?;
        Ok(n == 1)
    }

    /// Notifications due at `now_unix`, oldest first.
    pub fn notify_due(
        &self,
        now_unix: i64,
        limit: u32,
    ) -> Result<Vec<PendingNotification>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, channel, payload, attempts FROM notifications
             WHERE delivered_at IS NULL AND failed_at IS NULL AND next_at <= ?1
             ORDER BY next_at, created_at LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now_unix, limit], |r| {
            Ok(PendingNotification {
                id: r.get(0)?,
                channel: r.get(1)?,
                payload: r.get(2)?,
                attempts: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn notify_delivered(&self, id: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE notifications SET delivered_at = ?2, attempts = attempts + 1 WHERE id = ?1",
            params![id, Store::now()],
        )?;
        Ok(())
    }

    /// A failed attempt: try again at `next_unix`, or (`None`) give up.
    pub fn notify_failed(
        &self,
        id: &str,
        error: &str,
        next_unix: Option<i64>,
    ) -> Result<(), StoreError> {
        match next_unix {
            Some(next) => self.conn.execute(
                "UPDATE notifications SET attempts = attempts + 1, error = ?2, next_at = ?3 WHERE id = ?1",
                params![id, error, next],
            )?,
            None => self.conn.execute(
                "UPDATE notifications SET attempts = attempts + 1, error = ?2, failed_at = ?3 WHERE id = ?1",
                params![id, error, Store::now()],
            )?,
        };
        Ok(())
    }

    /// Per channel: delivered, pending and failed counts, the last delivery, the last error.
    pub fn notify_status(&self) -> Result<Vec<ChannelStatus>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT channel,
                    SUM(delivered_at IS NOT NULL),
                    SUM(delivered_at IS NULL AND failed_at IS NULL),
                    SUM(failed_at IS NOT NULL),
                    MAX(delivered_at)
             FROM notifications GROUP BY channel ORDER BY channel",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ChannelStatus {
                channel: r.get(0)?,
                delivered: r.get::<_, i64>(1)? as u64,
                pending: r.get::<_, i64>(2)? as u64,
                failed: r.get::<_, i64>(3)? as u64,
                last_delivered_at: r.get(4)?,
                last_error: None,
                last_error_at: None,
            })
        })?;
        let mut out: Vec<ChannelStatus> = rows.collect::<Result<_, _>>()?;
        for c in &mut out {
            // The newest row that failed an attempt and was not delivered since.
            let last: Option<(String, String)> = self
                .conn
                .query_row(
                    "SELECT error, created_at FROM notifications
                     WHERE channel = ?1 AND error IS NOT NULL AND delivered_at IS NULL
                     ORDER BY created_at DESC LIMIT 1",
                    [&c.channel],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((e, at)) = last {
                c.last_error = Some(e);
                c.last_error_at = Some(at);
            }
        }
        Ok(out)
    }

    /// Forget delivered and failed notifications older than `before` (RFC 3339).
    pub fn notify_prune(&self, before: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM notifications WHERE (delivered_at IS NOT NULL OR failed_at IS NOT NULL)
             AND created_at < ?1",
            [before],
        )?;
        Ok(())
    }

    /// The last event of a conversation read for notifications.
    pub fn notify_cursor(&self, conversation: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT seq FROM notify_cursors WHERE conversation_id = ?1",
                [conversation],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .map(|s| s as u64))
    }

    pub fn set_notify_cursor(&self, conversation: &str, seq: u64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO notify_cursors (conversation_id, seq) VALUES (?1, ?2)
             ON CONFLICT(conversation_id) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            params![conversation, seq as i64],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_queued_once_per_channel_retried_and_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.db")).unwrap();
        assert!(s.notify_enqueue("e1@ntfy-1", "ntfy-1", "{}", 100).unwrap());
        assert!(!s.notify_enqueue("e1@ntfy-1", "ntfy-1", "{}", 100).unwrap());
        assert!(s.notify_enqueue("e1@hook", "hook", "{}", 100).unwrap());
        assert_eq!(s.notify_due(99, 10).unwrap().len(), 0);
        assert_eq!(s.notify_due(100, 10).unwrap().len(), 2);
        s.notify_delivered("e1@ntfy-1").unwrap();
        s.notify_failed("e1@hook", "hook answered HTTP 500", Some(130))
            .unwrap();
        assert!(s.notify_due(120, 10).unwrap().is_empty());
        let again = s.notify_due(130, 10).unwrap();
        assert_eq!((again[0].id.as_str(), again[0].attempts), ("e1@hook", 1));
        let st = s.notify_status().unwrap();
        assert_eq!((st[0].channel.as_str(), st[0].pending), ("hook", 1));
        assert_eq!(st[0].last_error.as_deref(), Some("hook answered HTTP 500"));
        assert_eq!((st[1].delivered, st[1].last_error.as_deref()), (1, None));
        s.notify_failed("e1@hook", "still down", None).unwrap();
        assert!(s.notify_due(i64::MAX, 10).unwrap().is_empty());
        let st = s.notify_status().unwrap();
        assert_eq!((st[0].failed, st[0].pending), (1, 0));

        assert_eq!(s.notify_cursor("c1").unwrap(), None);
        s.set_notify_cursor("c1", 7).unwrap();
        s.set_notify_cursor("c1", 5).unwrap();
        assert_eq!(s.notify_cursor("c1").unwrap(), Some(7));
    }
}
