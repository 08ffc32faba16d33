//! The home directory and its permissions.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("cannot create claude-vm home {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot find the home directory: set HOME or CLAUDE_VM_HOME")]
    NoHome,
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
}

/// `$CLAUDE_VM_HOME` and the files in it.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home named by `$CLAUDE_VM_HOME`, else `~/.claude-vm`.
    pub fn from_env() -> Result<Home, HomeError> {
        if let Some(p) = std::env::var_os("CLAUDE_VM_HOME").filter(|p| !p.is_empty()) {
            return Ok(Home {
                root: PathBuf::from(p),
            });
        }
        let home = std::env::home_dir().ok_or(HomeError::NoHome)?;
        Ok(Home {
            root: home.join(".claude-vm"),
        })
    }

    pub fn at(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// Create the directory tree (owner-only) if missing.
    pub fn ensure(&self) -> Result<(), HomeError> {
        let mk = |p: &Path| -> Result<(), HomeError> {
            match fs::DirBuilder::new().recursive(true).mode(0o700).create(p) {
                Ok(()) => {}
                Err(e) => {
                    return Err(HomeError::Create {
                        path: p.to_owned(),
                        source: e,
                    });
                }
            }
            // An existing directory keeps whatever mode it had; tighten it.
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
            Ok(())
        };
        mk(&self.root)?;
        mk(&self.root.join("locks"))?;
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn db_path(&self) -> PathBuf {
        self.root.join("state.db")
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.yaml")
    }

    /// Take the advisory lock of one workspace, waiting for other holders. Held until the
    /// returned file is dropped (or the process dies).
    pub fn lock_workspace(&self, id: &str) -> Result<File, HomeError> {
        self.lock_named(id)
    }

    /// Take a named advisory lock of the home (`locks/<name>.lock`), waiting for other
    /// holders: for files whose content is merged by read-modify-write (`known_hosts`, the
    /// SSH client key), so concurrent writers in any process never lose each other's lines.
    pub fn lock_named(&self, name: &str) -> Result<File, HomeError> {
        let path = self.root.join("locks").join(format!("{name}.lock"));
        let lock_err = |e| HomeError::Lock {
            path: path.clone(),
            source: e,
        };
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(lock_err)?;
        f.lock().map_err(lock_err)?;
        Ok(f)
    }

    /// The backup repository's password: read from `file` (default `backup-password` in
    /// the home), or, when that file does not exist, created once (random, owner-only) so
    /// that every later run and the `restic` CLI use the same one.
    pub fn backup_password(&self, file: Option<&Path>) -> io::Result<(PathBuf, String)> {
        let path = file
            .map(Path::to_owned)
            .unwrap_or_else(|| self.root.join("backup-password"));
        let read = |p: &Path| -> io::Result<String> {
            let text = fs::read_to_string(p)?;
            let pw = text.trim_end_matches(['\n', '\r']).to_owned();
            if pw.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the backup password file {} is empty", p.display()),
                ));
            }
            Ok(pw)
        };
        match read(&path) {
            Ok(pw) => return Ok((path, pw)),
            Err(e) if e.kind() != io::ErrorKind::NotFound || file.is_some() => {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot read the backup password file {}: {e}",
                        path.display()
                    ),
                ));
            }
            Err(_) => {}
        }
        let _lock = self
            .lock_named("backup-password")
            .map_err(|e| io::Error::other(e.to_string()))?;
        // Another process may have made it while this one waited.
        if let Ok(pw) = read(&path) {
            return Ok((path, pw));
        }
        let bytes: [u8; 32] = rand::random();
        let pw: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        write_file_atomic(&path, format!("{pw}\n").as_bytes(), 0o600)?;
        Ok((path, pw))
    }

    /// Where backup repositories keep their local cache (index and tree blobs).
    pub fn backup_cache_dir(&self) -> PathBuf {
        self.root.join("cache").join("backups")
    }

    /// Remove a workspace's lock file (after it is deleted).
    pub fn remove_lock(&self, id: &str) {
        let _ = fs::remove_file(self.root.join("locks").join(format!("{id}.lock")));
    }
}

/// Replace `path` atomically with `data`, created with `mode` (0600 for anything secret):
/// the one atomic writer of the control side. A temporary file with a random name beside
/// it (so concurrent writers in one process never share one), synced, renamed over it,
/// and the folder synced (`atomic-write-file`). Creates the folder.
pub fn write_file_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use atomic_write_file::AtomicWriteFile;
    use atomic_write_file::unix::OpenOptionsExt as _;
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = AtomicWriteFile::options();
    options
        .mode(mode)
        .preserve_mode(false)
        .preserve_owner(false);
    let mut f = options.open(path)?;
    f.write_all(data)?;
    f.commit()
}
