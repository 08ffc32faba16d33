//! SSH into workspaces: the control side's keys and files.
//!
//! - `$CLAUDE_VM_HOME/ssh/id_ed25519` (+ `.pub`): claude-vm's client key, made once.
//! - `$CLAUDE_VM_HOME/known_hosts`: the workspaces' host keys, one line per workspace
//!   (`<name>.claude-vm,<id>.claude-vm ssh-ed25519 ...`), learnt over the link (which is
//!   already authenticated by the provider) and never silently replaced.
//! - `$CLAUDE_VM_HOME/ssh_config`: one `Host *.claude-vm` block for OpenSSH (ProxyCommand
//!   `claude-vm ssh --stdio %h`), optionally included from `~/.ssh/config`.
//!
//! The editing functions are pure and unit-tested; the engine methods do the IO.

use std::path::{Path, PathBuf};

use claude_vm_link::Link;
use claude_vm_store::WorkspaceRecord;
use russh::keys::{PrivateKey, PublicKey};

use crate::{Engine, EngineError, Result};

/// Host name suffix the ssh_config block matches.
pub const HOST_SUFFIX: &str = ".claude-vm";

/// What pinning a workspace's host key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// Already pinned, same key.
    Known,
    /// First time: added.
    Added,
    /// The name belonged to another (deleted) workspace: its line was replaced.
    Replaced,
}

/// The host key a workspace presents differs from the pinned one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub pinned: String,
    pub presented: String,
}

/// The hosts a workspace is known as.
pub fn host_names(name: &str, id: &str) -> (String, String) {
    (format!("{name}{HOST_SUFFIX}"), format!("{id}{HOST_SUFFIX}"))
}

/// `type base64` of a key line (comments dropped).
fn key_part(line: &str) -> Option<String> {
    let mut it = line.split_whitespace();
    Some(format!("{} {}", it.next()?, it.next()?))
}

/// Pin `key` for workspace (`name`, `id`) in the known_hosts `text`. A line is keyed by the
/// workspace id: the id's own line is never replaced by a different key (that is
/// [`Mismatch`]). A line naming `name` for another id belonged to a workspace since deleted
/// (names are unique among existing workspaces), so it is replaced. Returns the new text.
pub fn pin_host_key(
    text: &str,
    name: &str,
    id: &str,
    key: &str,
) -> std::result::Result<(String, Pin), Mismatch> {
    let (name_host, id_host) = host_names(name, id);
    let key = key_part(key).unwrap_or_default();
    let mut out = String::new();
    let mut found_same = false;
    let mut replaced = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let mut fields = trimmed.splitn(2, char::is_whitespace);
        let hosts: Vec<&str> = fields.next().unwrap_or("").split(',').collect();
        let rest = fields.next().unwrap_or("").trim();
        if hosts.contains(&id_host.as_str()) {
            let pinned = key_part(rest).unwrap_or_default();
            if pinned != key {
                return Err(Mismatch {
                    pinned,
                    presented: key,
                });
            }
            found_same = true;
            // Keep it, with the current name.
            out.push_str(&format!("{name_host},{id_host} {pinned}\n"));
            continue;
        }
        if hosts.contains(&name_host.as_str()) {
            // Another workspace's line under this name: drop it.
            replaced = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if found_same {
        return Ok((out, Pin::Known));
    }
    out.push_str(&format!("{name_host},{id_host} {key}\n"));
    Ok((out, if replaced { Pin::Replaced } else { Pin::Added }))
}

/// The key pinned for workspace `id`, if any.
pub fn pinned_key(text: &str, id: &str) -> Option<String> {
    let id_host = format!("{id}{HOST_SUFFIX}");
    text.lines().find_map(|line| {
        let mut fields = line.trim().splitn(2, char::is_whitespace);
        let hosts = fields.next()?;
        if hosts.split(',').any(|h| h == id_host) {
            key_part(fields.next()?)
        } else {
            None
        }
    })
}

/// Quote a path for ssh_config (which splits on whitespace and honours double quotes).
fn quote(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

/// The `Host *.claude-vm` block.
pub fn render_ssh_config(binary: &Path, home: &Path, user: &str) -> String {
    let known_hosts = home.join("known_hosts");
    let key = home.join("ssh").join("id_ed25519");
    let mut s = String::new();
    s.push_str("# Written by `claude-vm ssh-config`; rewritten by it (and by `workspace up`).\n");
    s.push_str("# Every workspace is reachable as <name>.claude-vm or <id>.claude-vm.\n");
    s.push_str("Host *.claude-vm\n");
    // OpenSSH runs the ProxyCommand with `exec` through the shell: `env` keeps this home.
    s.push_str(&format!(
        "    ProxyCommand env CLAUDE_VM_HOME={} {} ssh --stdio %h\n",
        quote(home),
        quote(binary)
    ));
    s.push_str(&format!("    User {user}\n"));
    s.push_str(&format!("    UserKnownHostsFile {}\n", quote(&known_hosts)));
    s.push_str("    StrictHostKeyChecking yes\n");
    s.push_str("    CheckHostIP no\n");
    s.push_str(&format!("    IdentityFile {}\n", quote(&key)));
    for k in ["id_ed25519", "id_ecdsa", "id_rsa"] {
        s.push_str(&format!("    IdentityFile ~/.ssh/{k}\n"));
    }
    s
}

/// The `Include` line for `~/.ssh/config`.
pub fn include_line(ssh_config: &Path) -> String {
    format!("Include {}", quote(ssh_config))
}

/// `~/.ssh/config` with the Include line at the top (OpenSSH applies an `Include` after a
/// `Host` line only to that host), or `None` if it is already there.
pub fn add_include(text: &str, ssh_config: &Path) -> Option<String> {
    let line = include_line(ssh_config);
    let bare = format!("Include {}", ssh_config.display());
    let present = text.lines().any(|l| {
        let l = l.trim();
        l == line || l == bare
    });
    if present {
        return None;
    }
    Some(format!(
        "# Added by `claude-vm ssh-config --install`: workspaces as <name>.claude-vm\n{line}\n\n{text}"
    ))
}

/// Public keys from `.pub` files in `dir` (sorted by file name).
fn pub_keys_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pub"))
        .collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| PublicKey::from_openssh(l.trim()).is_ok())
        .collect()
}

fn write_private(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    claude_vm_store::write_file_atomic(path, text.as_bytes(), mode)
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> EngineError {
    let msg = format!("{what} {}", path.display());
    move |e| EngineError::Ssh(format!("{msg}: {e}"))
}

impl Engine {
    pub fn ssh_config_path(&self) -> PathBuf {
        self.home.root().join("ssh_config")
    }

    pub fn known_hosts_path(&self) -> PathBuf {
        self.home.root().join("known_hosts")
    }

    pub fn ssh_key_path(&self) -> PathBuf {
        self.home.root().join("ssh").join("id_ed25519")
    }

    /// claude-vm's client key, made on first use (0600, in the home).
    pub fn ssh_client_key(&self) -> Result<PrivateKey> {
        crate::off_worker(|| {
            // Two first uses at once must not make two keys (one would be pushed, the other
            // saved): made under the home's `ssh` lock, re-read once holding it.
            let _lock = self.home.lock_named("ssh")?;
            self.ssh_client_key_locked()
        })
    }

    fn ssh_client_key_locked(&self) -> Result<PrivateKey> {
        let path = self.ssh_key_path();
        if let Ok(text) = std::fs::read_to_string(&path) {
            return PrivateKey::from_openssh(text.as_bytes()).map_err(|e| {
                EngineError::Ssh(format!(
                    "the claude-vm SSH key {} is unreadable ({e}); delete it (and its .pub) to make a new one",
                    path.display()
                ))
            });
        }
        let seed: [u8; 32] = rand::random();
        let mut key = PrivateKey::from(russh::keys::ssh_key::private::Ed25519Keypair::from_seed(
            &seed,
        ));
        key.set_comment("claude-vm");
        let text = key
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .map_err(|e| EngineError::Ssh(e.to_string()))?;
        let public = key
            .public_key()
            .to_openssh()
            .map_err(|e| EngineError::Ssh(e.to_string()))?;
        write_private(&path, &text, 0o600).map_err(io_err("cannot write", &path))?;
        let pub_path = path.with_extension("pub");
        write_private(&pub_path, &format!("{public}\n"), 0o644)
            .map_err(io_err("cannot write", &pub_path))?;
        Ok(key)
    }

    /// Every public key workspaces accept: claude-vm's own, `~/.ssh/*.pub` (unless
    /// `ssh.user_keys: false`), and `ssh.authorized_keys` from config.yaml.
    pub fn ssh_authorized_keys(&self) -> Result<Vec<String>> {
        let own = self.ssh_client_key()?;
        let mut keys = vec![
            own.public_key()
                .to_openssh()
                .map_err(|e| EngineError::Ssh(e.to_string()))?,
        ];
        let settings = &self.config.ssh;
        if settings.user_keys
            && let Some(home) = std::env::var_os("HOME")
        {
            keys.extend(pub_keys_in(&Path::new(&home).join(".ssh")));
        }
        for entry in &settings.authorized_keys {
            if PublicKey::from_openssh(entry.trim()).is_ok() {
                keys.push(entry.trim().to_owned());
                continue;
            }
            let path = PathBuf::from(entry);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                EngineError::Ssh(format!(
                    "ssh.authorized_keys in config.yaml lists {entry:?}, which is neither a public key nor a readable file ({e})"
                ))
            })?;
            keys.extend(
                text.lines()
                    .filter(|l| PublicKey::from_openssh(l.trim()).is_ok())
                    .map(|l| l.trim().to_owned()),
            );
        }
        keys.dedup();
        Ok(keys)
    }

    /// Pin `key` for the workspace in the managed known_hosts.
    pub fn pin_host_key(&self, w: &WorkspaceRecord, key: &str) -> Result<Pin> {
        crate::off_worker(|| {
            // Read-modify-write of a file every workspace shares: under the home's lock.
            let _lock = self.home.lock_named("known_hosts")?;
            self.pin_host_key_locked(w, key)
        })
    }

    fn pin_host_key_locked(&self, w: &WorkspaceRecord, key: &str) -> Result<Pin> {
        let path = self.known_hosts_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err("cannot read", &path)(e)),
        };
        match pin_host_key(&text, w.name.as_str(), w.id.as_str(), key) {
            Ok((new, pin)) => {
                if new != text {
                    write_private(&path, &new, 0o600).map_err(io_err("cannot write", &path))?;
                }
                Ok(pin)
            }
            Err(m) => Err(EngineError::HostKeyChanged {
                name: w.name.to_string(),
                pinned: m.pinned,
                presented: m.presented,
                known_hosts: path,
            }),
        }
    }

    /// The link to a running workspace, ready for SSH: its host key pinned and the
    /// authorised keys pushed. A host key that differs from the pinned one is never pinned;
    /// with `refuse_changed` it is an error, otherwise it is left to the SSH client (OpenSSH
    /// refuses it and says why). Accepts `<ws>.claude-vm` as well as `<ws>`.
    pub async fn ssh_link(
        &self,
        target: &str,
        refuse_changed: bool,
    ) -> Result<(WorkspaceRecord, Link, String)> {
        let target = target.strip_suffix(HOST_SUFFIX).unwrap_or(target);
        let (w, link) = self.link_waking(target).await?;
        let host_key = link.ssh_host_key().await?;
        match self.pin_host_key(&w, &host_key) {
            Ok(_) => {}
            Err(e @ EngineError::HostKeyChanged { .. }) if refuse_changed => return Err(e),
            Err(EngineError::HostKeyChanged { .. }) => {}
            Err(e) => return Err(e),
        }
        let keys = self.ssh_authorized_keys()?;
        link.ssh_set_authorized_keys(&keys).await?;
        Ok((w, link, host_key))
    }

    /// Has the user run `claude-vm ssh-config` (so `up` keeps it current)?
    pub fn ssh_config_opted_in(&self) -> bool {
        self.ssh_config_path().exists()
    }

    /// Write `$CLAUDE_VM_HOME/ssh_config` for this binary.
    pub fn write_ssh_config(&self, binary: &Path) -> Result<PathBuf> {
        self.ssh_client_key()?;
        let path = self.ssh_config_path();
        let text = render_ssh_config(binary, self.home.root(), &self.config.ssh.user);
        write_private(&path, &text, 0o600).map_err(io_err("cannot write", &path))?;
        Ok(path)
    }

    /// Add the Include line to the user's `~/.ssh/config` (made 0600 if missing). Returns
    /// whether the file changed.
    pub fn install_ssh_include(&self, user_config: &Path) -> Result<bool> {
        let text = match std::fs::read_to_string(user_config) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err("cannot read", user_config)(e)),
        };
        let Some(new) = add_include(&text, &self.ssh_config_path()) else {
            return Ok(false);
        };
        if let Some(dir) = user_config.parent()
            && !dir.exists()
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("cannot create", dir))?;
        }
        // Keep the file's mode if it exists.
        let mode = std::fs::metadata(user_config)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap_or(0o600);
        write_private(user_config, &new, mode).map_err(io_err("cannot write", user_config))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const K2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7MhmMYDFP3sPRzUNIQ1SujLcGWbl2YUu6Wn6Jkwvj/";

    #[test]
    fn concurrent_pins_and_first_key_uses_lose_nothing() {
        let home = tempfile::tempdir().unwrap();
        let engine = crate::Engine::open(claude_vm_store::Home::at(home.path()), None).unwrap();
        let record = |i: usize| WorkspaceRecord {
            id: format!("{i:012x}").parse().unwrap(),
            name: format!("ws-{i}").parse().unwrap(),
            provider: "docker".into(),
            source: claude_vm_core::source::Source::Path("/p".into()),
            project: "p".into(),
            image: "i".into(),
            branch: None,
            status: claude_vm_core::Status::Running,
            status_reason: None,
            created_at: String::new(),
            updated_at: String::new(),
            creator_pid: None,
        };
        let keys: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let engine = &engine;
                    s.spawn(move || {
                        engine.pin_host_key(&record(i), K1).unwrap();
                        engine
                            .ssh_client_key()
                            .unwrap()
                            .public_key()
                            .to_openssh()
                            .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        // One client key for everyone, and every workspace's pin kept.
        assert!(keys.iter().all(|k| k == &keys[0]));
        let text = std::fs::read_to_string(engine.known_hosts_path()).unwrap();
        for i in 0..16 {
            assert_eq!(pinned_key(&text, &format!("{i:012x}")).as_deref(), Some(K1));
        }
    }

    #[test]
    fn pinning_adds_keeps_and_refuses_changes() {
        let (t, p) = pin_host_key("", "web", "aaaa", K1).unwrap();
        assert_eq!(p, Pin::Added);
        assert_eq!(t, format!("web.claude-vm,aaaa.claude-vm {K1}\n"));
        // same key: unchanged
        let (t2, p) = pin_host_key(&t, "web", "aaaa", &format!("{K1} comment")).unwrap();
        assert_eq!((t2.as_str(), p), (t.as_str(), Pin::Known));
        // a different key for the same workspace: refused, never replaced
        let m = pin_host_key(&t, "web", "aaaa", K2).unwrap_err();
        assert_eq!(m.pinned, K1);
        assert_eq!(m.presented, K2);
        // a re-created workspace with the same name (new id): the old line goes
        let (t3, p) = pin_host_key(&t, "web", "bbbb", K2).unwrap();
        assert_eq!(p, Pin::Replaced);
        assert_eq!(t3, format!("web.claude-vm,bbbb.claude-vm {K2}\n"));
        // other lines and comments are kept
        let text = format!("# mine\nother.claude-vm,cccc.claude-vm {K1}\n");
        let (t4, _) = pin_host_key(&text, "web", "aaaa", K2).unwrap();
        assert!(t4.starts_with(&text));
        assert_eq!(pinned_key(&t4, "aaaa").as_deref(), Some(K2));
        assert_eq!(pinned_key(&t4, "cccc").as_deref(), Some(K1));
        assert_eq!(pinned_key(&t4, "dddd"), None);
    }

    #[test]
    fn include_goes_on_top_once() {
        let cfg = Path::new("/h/.claude-vm/ssh_config");
        let added = add_include("Host foo\n  User bar\n", cfg).unwrap();
        assert!(added.starts_with("# Added by"));
        let first_directive = added
            .lines()
            .find(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap();
        assert_eq!(first_directive, "Include \"/h/.claude-vm/ssh_config\"");
        assert!(added.ends_with("Host foo\n  User bar\n"));
        assert_eq!(add_include(&added, cfg), None);
        assert_eq!(add_include("Include /h/.claude-vm/ssh_config\n", cfg), None);
        assert!(add_include("", cfg).is_some());
    }

    #[test]
    fn config_block_pins_strictly() {
        let s = render_ssh_config(
            Path::new("/usr/bin/claude-vm"),
            Path::new("/h/cvm"),
            "agent",
        );
        assert!(s.contains("Host *.claude-vm\n"));
        assert!(s.contains(
            "ProxyCommand env CLAUDE_VM_HOME=\"/h/cvm\" \"/usr/bin/claude-vm\" ssh --stdio %h"
        ));
        assert!(s.contains("StrictHostKeyChecking yes"));
        assert!(s.contains("UserKnownHostsFile \"/h/cvm/known_hosts\""));
        assert!(s.contains("IdentityFile \"/h/cvm/ssh/id_ed25519\""));
        assert!(!s.to_lowercase().contains("stricthostkeychecking no"));
    }
}
