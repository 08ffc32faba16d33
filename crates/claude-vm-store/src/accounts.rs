//! Agent accounts saved by `claude-vm agents login`: one owner-only file per agent kind,
//! `accounts/<kind>.json` in the home (0600, in a 0700 folder). Never logged: the secret
//! is masked in `Debug`.

use std::io;
use std::path::PathBuf;

use claude_vm_core::agent::AccountKind;
use serde::{Deserialize, Serialize};

use crate::home::{Home, write_file_atomic};

/// An account saved for an agent kind.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedAccount {
    pub account: AccountKind,
    /// The API key or OAuth token (`api_key`, `oauth_token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The agent's own login file, read each time (`local_login`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// RFC 3339.
    pub saved_at: String,
}

impl std::fmt::Debug for SavedAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedAccount")
            .field("account", &self.account)
            .field("secret", &self.secret.as_ref().map(|_| "********"))
            .field("path", &self.path)
            .field("saved_at", &self.saved_at)
            .finish()
    }
}

impl Home {
    fn account_path(&self, kind: &str) -> io::Result<PathBuf> {
        if !claude_vm_core::config::AGENT_KINDS.contains(&kind) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unknown agent kind {kind:?}"),
            ));
        }
        Ok(self.root().join("accounts").join(format!("{kind}.json")))
    }

    /// The account saved for `kind`, if any.
    pub fn load_account(&self, kind: &str) -> io::Result<Option<SavedAccount>> {
        let path = self.account_path(kind)?;
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} is damaged ({e}); run `claude-vm agents login {kind}` again",
                        path.display()
                    ),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    }

    /// Save `account` for `kind` (owner-only), replacing any other.
    pub fn save_account(&self, kind: &str, account: &SavedAccount) -> io::Result<()> {
        let path = self.account_path(kind)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let json = serde_json::to_vec_pretty(account).map_err(io::Error::other)?;
        write_file_atomic(&path, &json, 0o600)
    }

    /// Forget the account saved for `kind`; whether there was one.
    pub fn remove_account(&self, kind: &str) -> io::Result<bool> {
        match std::fs::remove_file(self.account_path(kind)?) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn accounts_are_saved_owner_only_and_never_debug_printed() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path());
        home.ensure().unwrap();
        assert_eq!(home.load_account("claude").unwrap(), None);
        let a = SavedAccount {
            account: AccountKind::ApiKey,
            secret: Some("sk-secret-1".into()),
            path: None,
            saved_at: "2026-12-02T00:00:00Z".into(),
        };
        home.save_account("claude", &a).unwrap();
        assert_eq!(home.load_account("claude").unwrap(), Some(a.clone()));
        let file = dir.path().join("accounts/claude.json");
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let folder = dir.path().join("accounts");
        assert_eq!(
            std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(!format!("{a:?}").contains("sk-secret-1"));
        assert!(home.load_account("cursor").is_err());
        std::fs::write(&file, "{oops").unwrap();
        let e = home.load_account("claude").unwrap_err().to_string();
        assert!(e.contains("agents login claude"), "{e}");
        assert!(home.remove_account("claude").unwrap());
        assert!(!home.remove_account("claude").unwrap());
    }
}
