//! The SQLite index: schema, migrations and typed accessors.

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use claude_vm_core::provider::ProviderKind;
use claude_vm_core::source::Source;
use claude_vm_core::{Status, WorkspaceId, WorkspaceName};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, params};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open state database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("a workspace named {0:?} already exists")]
    NameTaken(String),
    #[error("a provider named {0:?} already exists")]
    ProviderExists(String),
    #[error("a token named {0:?} already exists")]
    TokenExists(String),
    #[error("corrupt row in state database: {0}")]
    Corrupt(String),
    #[error(
        "the state database was written by a newer claude-vm (schema {found}, this build knows {known}); upgrade claude-vm"
    )]
    TooNew { found: i64, known: i64 },
}

/// A configured provider.
#[derive(Clone, PartialEq)]
pub struct ProviderRecord {
    pub name: String,
    pub kind: ProviderKind,
    pub options: BTreeMap<String, String>,
    pub created_at: String,
}

/// Secret options (passwords, tokens) never reach a log through `{:?}`: they are masked as in
/// every view.
impl std::fmt::Debug for ProviderRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRecord")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field(
                "options",
                &claude_vm_core::provider::masked(self.kind, &self.options),
            )
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A workspace as the control side knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceRecord {
    pub id: WorkspaceId,
    pub name: WorkspaceName,
    pub provider: String,
    pub source: Source,
    /// Folder under `/workspace` holding the project.
    pub project: String,
    pub image: String,
    pub branch: Option<String>,
    pub status: Status,
    pub status_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The process creating it while `status` is `creating`.
    pub creator_pid: Option<u32>,
}

impl claude_vm_core::resolve::Named for WorkspaceRecord {
    fn id(&self) -> &str {
        self.id.as_str()
    }
    fn name(&self) -> &str {
        self.name.as_str()
    }
}

/// A conversation as the control side indexes it (the workspace holds the truth).
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationRecord {
    pub id: String,
    pub workspace_id: WorkspaceId,
    pub agent: String,
    pub title: Option<String>,
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
}

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: providers, workspaces, conversations
    "CREATE TABLE providers (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        options TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    );
    CREATE TABLE workspaces (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        provider TEXT NOT NULL REFERENCES providers(name),
        source_kind TEXT NOT NULL,
        source TEXT NOT NULL,
        project TEXT NOT NULL,
        image TEXT NOT NULL,
        branch TEXT,
        status TEXT NOT NULL,
        status_reason TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        creator_pid INTEGER
    );
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        agent TEXT NOT NULL,
        title TEXT,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX conversations_by_workspace ON conversations(workspace_id);
    INSERT INTO providers (name, kind, options, created_at)
        VALUES ('docker', 'docker', '{}', strftime('%Y-%m-%dT%H:%M:%SZ', 'now'));",
    // 2: the server's credentials (only hashes are stored)
    "CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        last_used_at TEXT
    );
    CREATE TABLE web_sessions (
        hash TEXT PRIMARY KEY,
        csrf TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE login_codes (
        hash TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL
    );",
    // 3: the last backup of each workspace (snapshots themselves live in the repository)
    "CREATE TABLE backups (
        workspace_id TEXT PRIMARY KEY,
        snapshot TEXT,
        taken_at TEXT,
        error TEXT,
        error_at TEXT,
        clean INTEGER NOT NULL DEFAULT 0
    );",
    // 4: each workspace's idle-stop setting and its last idle stop; messages the server
    // accepted for a stopped workspace, kept until its daemon has them
    "CREATE TABLE workspace_lifecycle (
        workspace_id TEXT PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
        idle_stop TEXT,
        idle_since TEXT
    );
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        workspace_id TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
        conversation_id TEXT NOT NULL,
        text TEXT NOT NULL,
        created_at TEXT NOT NULL,
        error TEXT
    );",
    // 5: the server's notifications, one row per event and channel (the id makes a second
    // notice of the same event a no-op), and how far each conversation was read for them
    "CREATE TABLE notifications (
        id TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        delivered_at TEXT,
        failed_at TEXT,
        error TEXT
    );
    CREATE INDEX notifications_due ON notifications(next_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
    CREATE TABLE notify_cursors (
        conversation_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL
    );",
    // 6: which account each conversation was last given (a fingerprint, not the secret)
    "ALTER TABLE conversations ADD COLUMN account TEXT;",
    // 7: what a workspace made from a devcontainer.json runs at each start (JSON)
    "CREATE TABLE devcontainers (
        workspace_id TEXT PRIMARY KEY REFERENCES workspaces(id) ON DELETE CASCADE,
        config TEXT NOT NULL
    );",
];

/// What the index remembers of a workspace's backups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupState {
    /// Id of the last snapshot taken.
    pub snapshot: Option<String>,
    pub taken_at: Option<String>,
    /// Why the last attempt failed, when it did (cleared by a success).
    pub error: Option<String>,
    pub error_at: Option<String>,
    /// Stopped right after a successful backup: nothing changed since.
    pub clean: bool,
}

/// A connection to the state database.
pub struct Store {
    pub(crate) conn: Connection,
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .expect("rounding")
        .to_string()
}

impl Store {
    /// Open (creating if needed, owner-only) and migrate the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |e| StoreError::Open {
            path: path.to_owned(),
            source: e,
        };
        // Create the file ourselves so it is 0600 from the first byte.
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path);
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(15))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        let mut store = Store { conn };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let known = MIGRATIONS.len() as i64;
        let current: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if current == known {
            return Ok(());
        }
        if current > known {
            return Err(StoreError::TooNew {
                found: current,
                known,
            });
        }
        // IMMEDIATE takes the write lock first, so two processes never both migrate.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    // ---- providers -------------------------------------------------------------------

    pub fn providers(&self) -> Result<Vec<ProviderRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, kind, options, created_at FROM providers ORDER BY name")?;
        let rows = stmt.query_map([], provider_row)?;
        rows.map(|r| r?).collect()
    }

    pub fn provider(&self, name: &str) -> Result<Option<ProviderRecord>, StoreError> {
        self.conn
            .query_row(
                "SELECT name, kind, options, created_at FROM providers WHERE name = ?1",
                [name],
                provider_row,
            )
            .optional()?
            .transpose()
    }

    pub fn add_provider(
        &self,
        name: &str,
        kind: ProviderKind,
        options: &BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let opts = serde_json::to_string(options).expect("options serialize");
        match self.conn.execute(
            "INSERT INTO providers (name, kind, options, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![name, kind.as_str(), opts, now()],
        ) {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => Err(StoreError::ProviderExists(name.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// Replace a provider's options. Returns false if there is no such provider.
    pub fn set_provider_options(
        &self,
        name: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<bool, StoreError> {
        let opts = serde_json::to_string(options).expect("options serialize");
        let n = self.conn.execute(
            "UPDATE providers SET options = ?2 WHERE name = ?1",
            params![name, opts],
        )?;
        Ok(n == 1)
    }

    /// Delete a provider. Returns false if there is no such provider.
    pub fn delete_provider(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM providers WHERE name = ?1", [name])?
            == 1)
    }

    pub fn workspaces_on_provider(&self, provider: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM workspaces WHERE provider = ?1 ORDER BY name")?;
        let rows = stmt.query_map([provider], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- workspaces ------------------------------------------------------------------

    /// Record a new workspace. Fails with [`StoreError::NameTaken`] if the name is in use,
    /// which makes the name claim atomic across processes.
    pub fn insert_workspace(&self, w: &WorkspaceRecord) -> Result<(), StoreError> {
        let res = self.conn.execute(
            "INSERT INTO workspaces (id, name, provider, source_kind, source, project, image,
                branch, status, status_reason, created_at, updated_at, creator_pid)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                w.id.as_str(),
                w.name.as_str(),
                w.provider,
                w.source.kind(),
                w.source.location(),
                w.project,
                w.image,
                w.branch,
                w.status.as_str(),
                w.status_reason,
                w.created_at,
                w.updated_at,
                w.creator_pid,
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::NameTaken(w.name.as_str().to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn workspaces(&self) -> Result<Vec<WorkspaceRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("{WS_SELECT} ORDER BY created_at, name"))?;
        let rows = stmt.query_map([], workspace_row)?;
        rows.map(|r| r?).collect()
    }

    pub fn workspace(&self, id: &WorkspaceId) -> Result<Option<WorkspaceRecord>, StoreError> {
        self.conn
            .query_row(
                &format!("{WS_SELECT} WHERE id = ?1"),
                [id.as_str()],
                workspace_row,
            )
            .optional()?
            .transpose()
    }

    /// Record a status (and its reason). Clears the creator once out of `creating`.
    pub fn set_status(
        &self,
        id: &WorkspaceId,
        status: Status,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE workspaces SET status = ?2, status_reason = ?3, updated_at = ?4,
                creator_pid = CASE WHEN ?2 = 'creating' THEN creator_pid ELSE NULL END
             WHERE id = ?1",
            params![id.as_str(), status.as_str(), reason, now()],
        )?;
        Ok(())
    }

    /// The image a workspace's container runs (after it was made again from another).
    pub fn set_image(&self, id: &WorkspaceId, image: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE workspaces SET image = ?2, updated_at = ?3 WHERE id = ?1",
            params![id.as_str(), image, now()],
        )?;
        Ok(())
    }

    /// Record a status only if the row still has the status (and reason) it was read with:
    /// a reader that observed the workspace without its lock (`list`) never overwrites what
    /// a lifecycle action under the lock wrote meanwhile. Returns whether it was written.
    pub fn set_status_if(
        &self,
        id: &WorkspaceId,
        expected: (Status, Option<&str>),
        status: Status,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE workspaces SET status = ?2, status_reason = ?3, updated_at = ?4,
                creator_pid = CASE WHEN ?2 = 'creating' THEN creator_pid ELSE NULL END
             WHERE id = ?1 AND status = ?5 AND status_reason IS ?6",
            params![
                id.as_str(),
                status.as_str(),
                reason,
                now(),
                expected.0.as_str(),
                expected.1
            ],
        )?;
        Ok(n == 1)
    }

    pub fn delete_workspace(&self, id: &WorkspaceId) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM workspaces WHERE id = ?1", [id.as_str()])?;
        Ok(())
    }

    // ---- backups ----------------------------------------------------------------------

    /// The last backup of a workspace, if one was ever tried.
    pub fn backup_state(&self, id: &WorkspaceId) -> Result<Option<BackupState>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT snapshot, taken_at, error, error_at, clean FROM backups WHERE workspace_id = ?1",
                [id.as_str()],
                |r| {
                    Ok(BackupState {
                        snapshot: r.get(0)?,
                        taken_at: r.get(1)?,
                        error: r.get(2)?,
                        error_at: r.get(3)?,
                        clean: r.get::<_, i64>(4)? != 0,
                    })
                },
            )
            .optional()?)
    }

    /// A backup succeeded. `clean`: the workspace is stopped and the snapshot holds all of
    /// it (taken by `down` just before stopping).
    pub fn backup_succeeded(
        &self,
        id: &WorkspaceId,
        snapshot: &str,
        clean: bool,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO backups (workspace_id, snapshot, taken_at, error, error_at, clean)
             VALUES (?1, ?2, ?3, NULL, NULL, ?4)
             ON CONFLICT(workspace_id) DO UPDATE SET snapshot = excluded.snapshot,
                taken_at = excluded.taken_at, error = NULL, error_at = NULL, clean = excluded.clean",
            params![id.as_str(), snapshot, now(), clean as i64],
        )?;
        Ok(())
    }

    /// A backup failed: remembered (and shown) until one succeeds.
    pub fn backup_failed(&self, id: &WorkspaceId, error: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO backups (workspace_id, error, error_at, clean) VALUES (?1, ?2, ?3, 0)
             ON CONFLICT(workspace_id) DO UPDATE SET error = excluded.error,
                error_at = excluded.error_at, clean = 0",
            params![id.as_str(), error, now()],
        )?;
        Ok(())
    }

    /// The workspace runs (again): its last snapshot no longer holds all of it.
    pub fn backup_dirty(&self, id: &WorkspaceId) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE backups SET clean = 0 WHERE workspace_id = ?1",
            [id.as_str()],
        )?;
        Ok(())
    }

    pub fn forget_backup_state(&self, id: &WorkspaceId) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM backups WHERE workspace_id = ?1", [id.as_str()])?;
        Ok(())
    }

    // ---- conversations ---------------------------------------------------------------

    /// Insert or refresh a conversation's index row.
    pub fn upsert_conversation(&self, c: &ConversationRecord) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO conversations (id, workspace_id, agent, title, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(id) DO UPDATE SET title = excluded.title, status = excluded.status,
                updated_at = excluded.updated_at",
            params![c.id, c.workspace_id.as_str(), c.agent, c.title, c.status, c.created_at, c.updated_at],
        )?;
        Ok(())
    }

    /// What a workspace made from a devcontainer.json keeps of it (JSON), if anything.
    pub fn devcontainer(&self, workspace: &WorkspaceId) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT config FROM devcontainers WHERE workspace_id = ?1",
                [workspace.as_str()],
                |r| r.get::<_, String>(0),
            )
            .optional()?)
    }

    pub fn set_devcontainer(
        &self,
        workspace: &WorkspaceId,
        config: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO devcontainers (workspace_id, config) VALUES (?1, ?2)
             ON CONFLICT(workspace_id) DO UPDATE SET config = excluded.config",
            params![workspace.as_str(), config],
        )?;
        Ok(())
    }

    /// The fingerprint of the account a conversation was last given, if any.
    pub fn conversation_account(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT account FROM conversations WHERE id = ?1",
                [id],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Remember the fingerprint of the account a conversation was given.
    pub fn set_conversation_account(&self, id: &str, fingerprint: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE conversations SET account = ?2 WHERE id = ?1",
            params![id, fingerprint],
        )?;
        Ok(())
    }

    /// Conversations, of one workspace or all, oldest first.
    pub fn conversations(
        &self,
        workspace: Option<&WorkspaceId>,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, workspace_id, agent, title, status, created_at, updated_at FROM conversations
             WHERE ?1 IS NULL OR workspace_id = ?1 ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([workspace.map(WorkspaceId::as_str)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, ws, agent, title, status, created_at, updated_at) = row?;
            let workspace_id = ws
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("conversation {id}: {e}")))?;
            out.push(ConversationRecord {
                id,
                workspace_id,
                agent,
                title,
                status,
                created_at,
                updated_at,
            });
        }
        Ok(out)
    }

    /// A fresh timestamp in the format the store uses.
    pub fn now() -> String {
        now()
    }
}

const WS_SELECT: &str = "SELECT id, name, provider, source_kind, source, project, image, branch,
    status, status_reason, created_at, updated_at, creator_pid FROM workspaces";

pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

fn provider_row(r: &Row<'_>) -> rusqlite::Result<Result<ProviderRecord, StoreError>> {
    let name: String = r.get(0)?;
    let kind: String = r.get(1)?;
    let options: String = r.get(2)?;
    let created_at: String = r.get(3)?;
    Ok((|| {
        let kind = kind
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("provider {name}: {e}")))?;
        let options = serde_json::from_str(&options)
            .map_err(|e| StoreError::Corrupt(format!("provider {name} options: {e}")))?;
        Ok(ProviderRecord {
            name: name.clone(),
            kind,
            options,
            created_at,
        })
    })())
}

fn workspace_row(r: &Row<'_>) -> rusqlite::Result<Result<WorkspaceRecord, StoreError>> {
    let id: String = r.get(0)?;
    let name: String = r.get(1)?;
    let source_kind: String = r.get(3)?;
    let source: String = r.get(4)?;
    let status: String = r.get(8)?;
    let provider: String = r.get(2)?;
    let project: String = r.get(5)?;
    let image: String = r.get(6)?;
    let branch: Option<String> = r.get(7)?;
    let status_reason: Option<String> = r.get(9)?;
    let created_at: String = r.get(10)?;
    let updated_at: String = r.get(11)?;
    let creator_pid: Option<u32> = r.get(12)?;
    Ok((|| {
        let corrupt = |what: String| StoreError::Corrupt(format!("workspace {id}: {what}"));
        Ok(WorkspaceRecord {
            id: id.parse().map_err(|e| corrupt(format!("{e}")))?,
            name: name.parse().map_err(|e| corrupt(format!("{e}")))?,
            provider,
            source: Source::from_parts(&source_kind, source)
                .ok_or_else(|| corrupt(format!("unknown source kind {source_kind:?}")))?,
            project,
            image,
            branch,
            status: status.parse().map_err(|e| corrupt(format!("{e}")))?,
            status_reason,
            created_at,
            updated_at,
            creator_pid,
        })
    })())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(id: &str, name: &str) -> WorkspaceRecord {
        WorkspaceRecord {
            id: id.parse().unwrap(),
            name: name.parse().unwrap(),
            provider: "docker".into(),
            source: Source::Path("/tmp/p".into()),
            project: "p".into(),
            image: "img".into(),
            branch: None,
            status: Status::Creating,
            status_reason: None,
            created_at: now(),
            updated_at: now(),
            creator_pid: Some(42),
        }
    }

    #[test]
    fn fresh_database_has_the_docker_provider_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let p = store.providers().unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].name, "docker");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        drop(store);
        // reopening does not re-run migrations
        let store = Store::open(&path).unwrap();
        assert_eq!(store.providers().unwrap().len(), 1);
    }

    #[test]
    fn workspace_names_are_unique_and_status_updates_clear_the_creator() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let a = record("aaaaaaaaaaaa", "one");
        store.insert_workspace(&a).unwrap();
        let err = store
            .insert_workspace(&record("bbbbbbbbbbbb", "one"))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::NameTaken(ref n) if n == "one"),
            "{err}"
        );
        store.set_status(&a.id, Status::Running, None).unwrap();
        let got = store.workspace(&a.id).unwrap().unwrap();
        assert_eq!(got.status, Status::Running);
        assert_eq!(got.creator_pid, None);
        store.delete_workspace(&a.id).unwrap();
        assert!(store.workspace(&a.id).unwrap().is_none());
    }

    #[test]
    fn list_status_updates_are_compare_and_set() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.db")).unwrap();
        let w = record("abcdefabcdef", "cas");
        s.insert_workspace(&w).unwrap();
        s.set_status(&w.id, Status::Running, None).unwrap();
        // A lifecycle action stopped it after `list` read `running`...
        s.set_status(&w.id, Status::Stopped, None).unwrap();
        // ...so the reader's stale observation is not written.
        assert!(
            !s.set_status_if(&w.id, (Status::Running, None), Status::Error, Some("gone"))
                .unwrap()
        );
        assert_eq!(s.workspace(&w.id).unwrap().unwrap().status, Status::Stopped);
        assert!(
            s.set_status_if(&w.id, (Status::Stopped, None), Status::Running, None)
                .unwrap()
        );
        assert_eq!(s.workspace(&w.id).unwrap().unwrap().status, Status::Running);
    }

    #[test]
    fn provider_records_debug_print_no_secret() {
        let mut options = BTreeMap::new();
        options.insert("registry_password".to_owned(), "hunter2-secret".to_owned());
        options.insert("host".to_owned(), "ssh://h".to_owned());
        let r = ProviderRecord {
            name: "p".into(),
            kind: ProviderKind::Docker,
            options,
            created_at: String::new(),
        };
        let shown = format!("{r:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("ssh://h"), "{shown}");
    }

    #[test]
    fn providers_crud() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let mut opts = BTreeMap::new();
        opts.insert("cpus".to_owned(), "2".to_owned());
        store
            .add_provider("box", ProviderKind::Docker, &opts)
            .unwrap();
        assert!(matches!(
            store.add_provider("box", ProviderKind::Docker, &opts),
            Err(StoreError::ProviderExists(_))
        ));
        opts.insert("memory".to_owned(), "4g".to_owned());
        assert!(store.set_provider_options("box", &opts).unwrap());
        assert_eq!(store.provider("box").unwrap().unwrap().options, opts);
        assert!(!store.set_provider_options("nope", &opts).unwrap());
        assert!(store.delete_provider("box").unwrap());
        assert!(!store.delete_provider("box").unwrap());
    }

    #[test]
    fn concurrent_writers_do_not_lose_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        Store::open(&path).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let store = Store::open(&path).unwrap();
                    for i in 0..25 {
                        let id = format!("{t:06x}{i:06x}");
                        store
                            .insert_workspace(&record(&id, &format!("w-{t}-{i}")))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(Store::open(&path).unwrap().workspaces().unwrap().len(), 200);
    }
}
