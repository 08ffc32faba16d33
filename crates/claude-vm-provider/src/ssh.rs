//! The `ssh` provider: the Docker provider, with the Docker Engine API carried over the
//! user's SSH connection to a remote Linux host.
//!
//! Everything goes through the system OpenSSH client, so the user's config, agent, keys,
//! `known_hosts` and `ProxyJump` apply. Connections are multiplexed over one master per
//! destination (`ControlMaster=auto`, socket under `$CLAUDE_VM_HOME`), never prompt
//! (`BatchMode=yes`) and keep host key checking as the user configured it.
//!
//! The host is a [`Remote`]: on first use claude-vm copies its own binary there and every
//! HTTP connection to Docker is one `ssh HOST <that binary> agent dial-docker` whose
//! stdin/stdout are joined to the host's Docker socket (see [`crate::remote`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use claude_vm_core::posix::sh_quote_if_needed;
use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::docker::DockerProvider;
use crate::remote::{Remote, docker_over, hex, last_line};
use crate::{ProviderError, SshFailure, ssh_hint};

/// The Docker socket on the host unless the `docker_socket` option says otherwise.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// How long ssh may take to establish a connection.
const CONNECT_TIMEOUT_SECS: u32 = 10;
/// How long an idle master connection stays up after its last session.
const CONTROL_PERSIST_SECS: u32 = 600;
/// Leaves room for the suffix ssh appends while creating the master's socket, within the
/// ~104 bytes a Unix socket path may have.
const MAX_CONTROL_PATH: usize = 80;

/// Where and how to connect, from the provider's options.
#[derive(Debug, Clone)]
pub struct SshTarget {
    host: String,
    user: Option<String>,
    port: Option<u16>,
    identity: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    ssh_config: Option<PathBuf>,
    socket: String,
    control_path: PathBuf,
}

impl SshTarget {
    /// `state_dir` is where the multiplexing sockets live (`$CLAUDE_VM_HOME/ssh`).
    pub fn from_options(
        options: &BTreeMap<String, String>,
        state_dir: &Path,
    ) -> Result<SshTarget, ProviderError> {
        let get = |k: &str| options.get(k).filter(|v| !v.is_empty()).cloned();
        let host = get("host").ok_or_else(|| {
            ProviderError::Config("an ssh provider needs the host option".to_owned())
        })?;
        let port = match get("port") {
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| ProviderError::Config(format!("invalid port {p:?}")))?,
            ),
            None => None,
        };
        let path = |k: &str| get(k).map(|p| expand_tilde(&p));
        let mut target = SshTarget {
            host,
            user: get("user"),
            port,
            identity: path("identity"),
            known_hosts: path("known_hosts"),
            ssh_config: path("ssh_config"),
            socket: get("docker_socket").unwrap_or_else(|| DEFAULT_DOCKER_SOCKET.to_owned()),
            control_path: PathBuf::new(),
        };
        target.control_path = control_dir(state_dir).join(target.connection_hash());
        Ok(target)
    }

    /// `user@host:port`, as far as configured.
    pub fn destination(&self) -> String {
        let mut d = String::new();
        if let Some(u) = &self.user {
            d.push_str(u);
            d.push('@');
        }
        d.push_str(&self.host);
        if let Some(p) = self.port {
            d.push_str(&format!(":{p}"));
        }
        d
    }

    /// The remote user for messages: configured, else "your user".
    fn user_for_messages(&self) -> String {
        self.user.clone().unwrap_or_else(|| "your user".to_owned())
    }

    /// The options that make one connection different from another, hashed: the name of
    /// its multiplexing socket. Short, so the socket path fits.
    fn connection_hash(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            Some(self.host.clone()),
            self.user.clone(),
            self.port.map(|p| p.to_string()),
            self.identity.as_ref().map(|p| p.display().to_string()),
            self.known_hosts.as_ref().map(|p| p.display().to_string()),
            self.ssh_config.as_ref().map(|p| p.display().to_string()),
        ] {
            h.update(part.unwrap_or_default().as_bytes());
            h.update([0]);
        }
        hex(&h.finalize())[..16].to_owned()
    }

    /// Options that choose the destination and the credentials (the ones a user would type).
    fn user_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        if let Some(f) = &self.ssh_config {
            a.extend(["-F".into(), f.into()]);
        }
        if let Some(p) = self.port {
            a.extend(["-p".into(), p.to_string().into()]);
        }
        if let Some(u) = &self.user {
            a.extend(["-l".into(), u.into()]);
        }
        if let Some(i) = &self.identity {
            a.extend([
                "-i".into(),
                i.into(),
                "-o".into(),
                "IdentitiesOnly=yes".into(),
            ]);
        }
        if let Some(k) = &self.known_hosts {
            let mut o = OsString::from("UserKnownHostsFile=");
            o.push(k);
            a.extend(["-o".into(), o]);
        }
        a
    }

    /// The `ssh` command a user can run to see what claude-vm sees (for hints).
    pub fn display_command(&self) -> String {
        let mut s = String::from("ssh");
        for a in self.user_args() {
            s.push(' ');
            s.push_str(&sh_quote_if_needed(&a.to_string_lossy()));
        }
        s.push(' ');
        s.push_str(&self.host);
        s
    }

    /// `ssh ... HOST -- REMOTE`: never prompts, multiplexed, stdio piped.
    fn command(&self, remote: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(self.user_args());
        let mut control = OsString::from("ControlPath=");
        control.push(&self.control_path);
        c.args(["-T", "-o", "BatchMode=yes"])
            .args(["-o", &format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}")])
            .args(["-o", "ControlMaster=auto", "-o"])
            .arg(control)
            .args(["-o", &format!("ControlPersist={CONTROL_PERSIST_SECS}")])
            .args([
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=3",
            ])
            .arg("--")
            .arg(&self.host)
            .arg(remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    fn ssh_error(&self, failure: SshFailure, reason: String) -> ProviderError {
        ProviderError::Ssh {
            failure,
            destination: self.destination(),
            reason,
            command: self.display_command(),
        }
    }
}

impl Remote for SshTarget {
    fn command(&self, remote: &str) -> Command {
        SshTarget::command(self, remote)
    }

    fn destination(&self) -> String {
        SshTarget::destination(self)
    }

    fn user_for_messages(&self) -> String {
        SshTarget::user_for_messages(self)
    }

    fn socket(&self) -> &str {
        &self.socket
    }

    fn failure(&self, reason: String) -> ProviderError {
        self.ssh_error(SshFailure::Other, reason)
    }

    fn spawn_failed(&self, e: &std::io::Error) -> ProviderError {
        self.failure(format!(
            "cannot run `ssh` ({e}); install the OpenSSH client"
        ))
    }

    fn transport_error(&self, code: i32, stderr: &str) -> Option<ProviderError> {
        (code == 255).then(|| {
            let (failure, reason) = classify(stderr);
            self.ssh_error(failure, reason)
        })
    }

    fn lost(&self, stderr: &str, reason: String) -> ProviderError {
        if !stderr.trim().is_empty() {
            let (failure, why) = classify(stderr);
            return self.ssh_error(failure, why);
        }
        self.failure(format!(
            "lost the connection to the host's Docker engine: {reason}"
        ))
    }

    fn hint(&self) -> String {
        format!(
            "is the host up and reachable? {}",
            ssh_hint(SshFailure::Unreachable, &self.display_command())
        )
    }

    fn endpoint(&self) -> String {
        format!("ssh://{}{}", SshTarget::destination(self), self.socket)
    }

    fn before_connect(&self) -> Result<(), ProviderError> {
        ensure_control_dir(&self.control_path)
    }
}

/// The provider: Docker's, reached through `ssh HOST <binary> agent dial-docker`.
pub fn provider(
    options: &BTreeMap<String, String>,
    state_dir: &Path,
) -> Result<DockerProvider, ProviderError> {
    let target: Arc<dyn Remote> = Arc::new(SshTarget::from_options(options, state_dir)?);
    docker_over(target, options)
}

/// What an OpenSSH client's messages say went wrong, and the line that says it.
pub fn classify(stderr: &str) -> (SshFailure, String) {
    let lower = stderr.to_ascii_lowercase();
    let line_with = |needle: &str| {
        stderr
            .lines()
            .find(|l| l.to_ascii_lowercase().contains(needle))
            .map(|l| l.trim().trim_start_matches("ssh: ").to_owned())
    };
    let checks: &[(&str, SshFailure)] = &[
        (
            "remote host identification has changed",
            SshFailure::ChangedHostKey,
        ),
        ("host key for", SshFailure::ChangedHostKey),
        ("no ", SshFailure::UnknownHostKey),
        ("host key verification failed", SshFailure::UnknownHostKey),
        ("permission denied", SshFailure::Auth),
        ("too many authentication failures", SshFailure::Auth),
        ("no more authentication methods", SshFailure::Auth),
        ("could not resolve hostname", SshFailure::Unreachable),
        ("connection refused", SshFailure::Unreachable),
        ("no route to host", SshFailure::Unreachable),
        ("network is unreachable", SshFailure::Unreachable),
        ("connection timed out", SshFailure::Unreachable),
        ("operation timed out", SshFailure::Unreachable),
    ];
    for (needle, failure) in checks {
        let hit = match *needle {
            // "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested
            // strict checking."
            "no " => lower.contains("host key is known for") && lower.contains("strict checking"),
            "host key for" => lower.contains("host key for") && lower.contains("has changed"),
            n => lower.contains(n),
        };
        if hit {
            let line = match *needle {
                "no " => line_with("host key is known for"),
                "host key for" => line_with("has changed"),
                n => line_with(n),
            };
            return (*failure, line.unwrap_or_else(|| last_line(stderr)));
        }
    }
    (SshFailure::Other, last_line(stderr))
}

fn expand_tilde(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => std::env::home_dir()
            .map(|h| h.join(rest))
            .unwrap_or_else(|| PathBuf::from(p)),
        None => PathBuf::from(p),
    }
}

/// `<state>/ssh`, or a private folder under the temp dir when that path would make socket
/// paths too long.
fn control_dir(state_dir: &Path) -> PathBuf {
    let preferred = state_dir.join("ssh");
    // +1 for the separator, +16 for the hashed name.
    if preferred.as_os_str().len() + 17 <= MAX_CONTROL_PATH {
        return preferred;
    }
    let uid = nix_uid();
    std::env::temp_dir().join(format!("claude-vm-ssh-{uid}"))
}

fn nix_uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// Create the socket folder owner-only; refuse one someone else owns or can enter.
fn ensure_control_dir(control_path: &Path) -> Result<(), ProviderError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let Some(dir) = control_path.parent() else {
        return Ok(());
    };
    let err = |why: String| {
        ProviderError::Config(format!(
            "cannot use {} for ssh connection sockets: {why}",
            dir.display()
        ))
    };
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => return Err(err(e.to_string())),
    }
    let meta = std::fs::metadata(dir).map_err(|e| err(e.to_string()))?;
    if meta.uid() != nix_uid() {
        return Err(err("it belongs to another user".to_owned()));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pairs: &[(&str, &str)], state: &str) -> SshTarget {
        let options = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SshTarget::from_options(&options, Path::new(state)).unwrap()
    }

    #[test]
    fn openssh_messages_are_classified() {
        let table: &[(&str, SshFailure, &str)] = &[
            (
                "ssh: connect to host 127.0.0.1 port 1: Connection refused\r\n",
                SshFailure::Unreachable,
                "connect to host 127.0.0.1 port 1: Connection refused",
            ),
            (
                "ssh: Could not resolve hostname nowhere.invalid: Name or service not known\n",
                SshFailure::Unreachable,
                "Could not resolve hostname nowhere.invalid: Name or service not known",
            ),
            (
                "ssh: connect to host 10.1.2.3 port 22: Connection timed out\n",
                SshFailure::Unreachable,
                "connect to host 10.1.2.3 port 22: Connection timed out",
            ),
            (
                "root@127.0.0.1: Permission denied (publickey).\n",
                SshFailure::Auth,
                "root@127.0.0.1: Permission denied (publickey).",
            ),
            (
                "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.\nHost key verification failed.\n",
                SshFailure::UnknownHostKey,
                "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested strict checking.",
            ),
            (
                "@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@@@@@\nIT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\nHost key for [127.0.0.1]:2222 has changed and you have requested strict checking.\nHost key verification failed.\n",
                SshFailure::ChangedHostKey,
                "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
            ),
            (
                "kex_exchange_identification: Connection closed by remote host\n",
                SshFailure::Other,
                "kex_exchange_identification: Connection closed by remote host",
            ),
            ("", SshFailure::Other, "(no message)"),
        ];
        for (stderr, failure, line) in table {
            assert_eq!(classify(stderr), (*failure, line.to_string()), "{stderr:?}");
        }
    }

    #[test]
    fn commands_carry_the_options_and_stay_short() {
        let t = target(
            &[
                ("host", "box.example"),
                ("user", "deploy"),
                ("port", "2222"),
                ("identity", "/keys/id ed"),
                ("known_hosts", "/tmp/kh"),
            ],
            "/home/me/.claude-vm",
        );
        assert_eq!(t.destination(), "deploy@box.example:2222");
        assert_eq!(
            t.display_command(),
            "ssh -p 2222 -l deploy -i '/keys/id ed' -o IdentitiesOnly=yes -o UserKnownHostsFile=/tmp/kh box.example"
        );
        let cmd = t.command("true");
        let args: Vec<String> = cmd
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        for want in [
            "BatchMode=yes",
            "ControlMaster=auto",
            "ControlPersist=600",
            "ConnectTimeout=10",
            "-- box.example true",
        ] {
            assert!(joined.contains(want), "{want} missing from {joined}");
        }
        assert!(!joined.contains("StrictHostKeyChecking"), "{joined}");
        assert!(t.control_path.starts_with("/home/me/.claude-vm/ssh/"));
        // Another destination, another master; a long home falls back to a short folder.
        let other = target(&[("host", "box.example")], "/home/me/.claude-vm");
        assert_ne!(other.control_path, t.control_path);
        let long = target(&[("host", "h")], &format!("/{}", "x".repeat(90)));
        assert!(long.control_path.as_os_str().len() <= MAX_CONTROL_PATH);
    }
}
