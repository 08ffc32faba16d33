//! The server's credentials: API tokens, browser sessions and one-time login codes.
//!
//! Only hashes of secrets reach the database; the caller hashes (see
//! `claude-vm-server::auth`). Expiry times are Unix seconds.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::{Store, StoreError};

/// An API token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        created_at: r.get(2)?,
        last_used_at: r.get(3)?,
    })
}

impl Store {
    /// Record a new token. Fails with [`StoreError::Duplicate`] when the name is taken.
    pub fn insert_token(
        &self,
        id: &str,
        name: &str,
        hash: &str,
    ) -> Result<TokenRecord, StoreError> {
        let now = Store::now();
        self.conn
            .execute(
                "INSERT INTO api_tokens (id, name, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, name, hash, now],
            )
            .map_err(|e| {
                if crate::db::is_unique_violation(&e) {
                    StoreError::TokenExists(name.to_owned())
                } else {
                    e.into()
                }
            })?;
        Ok(TokenRecord {
            id: id.to_owned(),
            name: name.to_owned(),
            created_at: now,
            last_used_at: None,
        })
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, name, created_at, last_used_at FROM api_tokens ORDER BY created_at, name",
        )?;
        let rows = stmt.query_map([], token_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The token with this hash, marking it used.
    pub fn use_token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let found = self
            .conn
            .query_row(
                "SELECT id, name, created_at, last_used_at FROM api_tokens WHERE hash = ?1",
                params![hash],
                token_row,
            )
            .optional()?;
        if let Some(t) = &found {
            let now = Store::now();
            // At most one write a minute per token: `last_used_at` is for humans.
            if t.last_used_at.as_deref().map(|l| &l[..16]) != Some(&now[..16]) {
                self.conn.execute(
                    "UPDATE api_tokens SET last_used_at = ?1 WHERE id = ?2",
                    params![now, t.id],
                )?;
            }
        }
        Ok(found)
    }

    /// Delete the token with this id or name; whether one was deleted.
    pub fn revoke_token(&self, id_or_name: &str) -> Result<Option<TokenRecord>, StoreError> {
        let found = self
            .conn
            .query_row(
                "SELECT id, name, created_at, last_used_at FROM api_tokens WHERE id = ?1 OR name = ?1",
                params![id_or_name],
                token_row,
            )
            .optional()?;
        if let Some(t) = &found {
            self.conn
                .execute("DELETE FROM api_tokens WHERE id = ?1", params![t.id])?;
        }
        Ok(found)
    }

    pub fn insert_session(
        &self,
        hash: &str,
        csrf: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO web_sessions (hash, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![hash, csrf, Store::now(), expires_at],
        )?;
        Ok(())
    }

    /// The CSRF token of a live session.
    pub fn session_csrf(&self, hash: &str, now: i64) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT csrf FROM web_sessions WHERE hash = ?1 AND expires_at > ?2",
                params![hash, now],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn delete_session(&self, hash: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM web_sessions WHERE hash = ?1", params![hash])?;
        Ok(())
    }

    pub fn insert_login_code(&self, hash: &str, expires_at: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO login_codes (hash, expires_at) VALUES (?1, ?2)",
            params![hash, expires_at],
        )?;
        Ok(())
    }

    /// Use up a login code: true exactly once for a live code.
    pub fn redeem_login_code(&self, hash: &str, now: i64) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "DELETE FROM login_codes WHERE hash = ?1 AND expires_at > ?2",
            params![hash, now],
        )?;
        Ok(n == 1)
    }

    /// Forget expired sessions and codes.
    pub fn purge_expired_credentials(&self, now: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM web_sessions WHERE expires_at <= ?1",
            params![now],
        )?;
        self.conn.execute(
            "DELETE FROM login_codes WHERE expires_at <= ?1",
            params![now],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn tokens_are_found_by_hash_listed_without_it_and_revoked() {
        let (_d, s) = store();
        s.insert_token("t1", "laptop", "h1").unwrap();
        assert!(matches!(
            s.insert_token("t2", "laptop", "h2"),
            Err(StoreError::TokenExists(_))
        ));
        assert_eq!(s.use_token("h1").unwrap().unwrap().name, "laptop");
        assert!(s.use_token("nope").unwrap().is_none());
        assert!(s.tokens().unwrap()[0].last_used_at.is_some());
        assert_eq!(s.revoke_token("laptop").unwrap().unwrap().id, "t1");
        assert!(s.use_token("h1").unwrap().is_none());
        assert!(s.revoke_token("t1").unwrap().is_none());
    }

    #[test]
    fn login_codes_work_once_and_expire() {
        let (_d, s) = store();
        s.insert_login_code("c1", 100).unwrap();
        s.insert_login_code("c2", 100).unwrap();
        assert!(s.redeem_login_code("c1", 50).unwrap());
        assert!(!s.redeem_login_code("c1", 50).unwrap());
        assert!(!s.redeem_login_code("c2", 100).unwrap());
    }

    #[test]
    fn sessions_expire() {
        let (_d, s) = store();
        s.insert_session("s1", "x", 100).unwrap();
        assert_eq!(s.session_csrf("s1", 99).unwrap().as_deref(), Some("x"));
        assert_eq!(s.session_csrf("s1", 100).unwrap(), None);
        s.purge_expired_credentials(200).unwrap();
        s.delete_session("s1").unwrap();
    }
}
