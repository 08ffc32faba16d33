//! Idle stops in the index: each workspace's own `--idle-stop`, when it last stopped itself,
//! and the outbox of messages the server accepted for a workspace that was not running.

use claude_vm_core::WorkspaceId;
use rusqlite::{OptionalExtension, params};

use crate::db::{Store, StoreError};

/// A message accepted for a conversation whose workspace was not running, kept until the
/// daemon has it. `id` is also the message id the daemon is given, so a delivery retried
/// after a crash is accepted once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: String,
    pub workspace_id: WorkspaceId,
    pub conversation_id: String,
    pub text: String,
    pub created_at: String,
    /// Why the last delivery attempt failed.
    pub error: Option<String>,
}

impl Store {
    /// The workspace's own idle-stop setting (`None`: the config's default).
    pub fn idle_stop(&self, id: &WorkspaceId) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT idle_stop FROM workspace_lifecycle WHERE workspace_id = ?1",
                [id.as_str()],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    pub fn set_idle_stop(&self, id: &WorkspaceId, value: Option<&str>) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO workspace_lifecycle (workspace_id, idle_stop) VALUES (?1, ?2)
             ON CONFLICT(workspace_id) DO UPDATE SET idle_stop = excluded.idle_stop",
            params![id.as_str(), value],
        )?;
        Ok(())
    }

    /// Since when a workspace that stopped itself had been idle (`None`: it did not, or it
    /// ran again since).
    pub fn idle_since(&self, id: &WorkspaceId) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT idle_since FROM workspace_lifecycle WHERE workspace_id = ?1",
                [id.as_str()],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    pub fn set_idle_since(&self, id: &WorkspaceId, since: Option<&str>) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO workspace_lifecycle (workspace_id, idle_since) VALUES (?1, ?2)
             ON CONFLICT(workspace_id) DO UPDATE SET idle_since = excluded.idle_since",
            params![id.as_str(), since],
        )?;
        Ok(())
    }

    /// Keep a message for later delivery; answers its id.
    pub fn outbox_add(
        &self,
        id: &str,
        workspace: &WorkspaceId,
        conversation: &str,
        text: &str,
    ) -> Result<OutboxMessage, StoreError> {
        let created_at = Store::now();
        self.conn.execute(
            "INSERT INTO outbox (id, workspace_id, conversation_id, text, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, workspace.as_str(), conversation, text, created_at],
        )?;
        Ok(OutboxMessage {
            id: id.to_owned(),
            workspace_id: workspace.clone(),
            conversation_id: conversation.to_owned(),
            text: text.to_owned(),
            created_at,
            error: None,
        })
    }

    /// Messages waiting, of one workspace or all, in the order they were accepted.
    pub fn outbox(
        &self,
        workspace: Option<&WorkspaceId>,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, workspace_id, conversation_id, text, created_at, error FROM outbox
             WHERE ?1 IS NULL OR workspace_id = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([workspace.map(WorkspaceId::as_str)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, ws, conversation_id, text, created_at, error) = row?;
            let workspace_id = ws
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("outbox message {id}: {e}")))?;
            out.push(OutboxMessage {
                id,
                workspace_id,
                conversation_id,
                text,
                created_at,
                error,
            });
        }
        Ok(out)
    }

    /// The daemon has the message.
    pub fn outbox_delivered(&self, id: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM outbox WHERE id = ?1", [id])?;
        Ok(())
    }

    /// A delivery attempt failed; the message stays.
    pub fn outbox_failed(&self, id: &str, error: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE outbox SET error = ?2 WHERE id = ?1",
            params![id, error],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_settings_and_outbox_round_trip_and_go_with_the_workspace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let rec = crate::db::tests::record("abcabcabcabc", "w1");
        store.insert_workspace(&rec).unwrap();
        let w = rec.id.clone();
        assert_eq!(store.idle_stop(&w).unwrap(), None);
        store.set_idle_stop(&w, Some("10m")).unwrap();
        store
            .set_idle_since(&w, Some("2026-12-02T10:00:00Z"))
            .unwrap();
        assert_eq!(store.idle_stop(&w).unwrap().as_deref(), Some("10m"));
        assert_eq!(
            store.idle_since(&w).unwrap().as_deref(),
            Some("2026-12-02T10:00:00Z")
        );
        store.set_idle_since(&w, None).unwrap();
        assert_eq!(store.idle_stop(&w).unwrap().as_deref(), Some("10m"));
        assert_eq!(store.idle_since(&w).unwrap(), None);

        store.outbox_add("m1", &w, "c1", "first").unwrap();
        store.outbox_add("m2", &w, "c1", "second").unwrap();
        assert!(
            store.outbox_add("m1", &w, "c1", "again").is_err(),
            "ids are unique"
        );
        store.outbox_failed("m1", "provider down").unwrap();
        let all = store.outbox(Some(&w)).unwrap();
        assert_eq!(
            all.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
            ["first", "second"]
        );
        assert_eq!(all[0].error.as_deref(), Some("provider down"));
        store.outbox_delivered("m1").unwrap();
        assert_eq!(store.outbox(None).unwrap().len(), 1);
        store.delete_workspace(&w).unwrap();
        assert!(store.outbox(None).unwrap().is_empty());
        assert_eq!(store.idle_stop(&w).unwrap(), None);
    }
}
