//! The `ssh` provider: the Docker provider, with the Docker Engine API carried over the
//! user's SSH connection to a remote Linux host.
//!
//! Everything goes through the system OpenSSH client, so the user's config, agent, keys,
//! `known_hosts` and `ProxyJump` apply. Connections are multiplexed over one master per
//! destination (`ControlMaster=auto`, socket under `$CLAUDE_VM_HOME`), never prompt
//! (`BatchMode=yes`) and keep host key checking as the user configured it.
//!
//! On first use claude-vm copies its own binary to the host (once per version, checked by
//! sha256 on the host before it is moved into place) and every HTTP connection to Docker is
//! one `ssh HOST <that binary> agent dial-docker` whose stdin/stdout are joined to the
//! host's Docker socket. The link to a workspace's daemon rides a Docker exec session, so it
//! travels over the same SSH connection.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::{BollardRequest, Docker};
use claude_vm_core::posix::{normalize_arch, sh_quote, sh_quote_if_needed};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::OnceCell;

use crate::docker::{Connect, DockerProvider, Unreachable};
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

    /// Run a shell script on the host with `args`, `input` on its stdin; returns its exit
    /// code, stdout and stderr. SSH-level failures are classified errors.
    async fn run_script(
        &self,
        script: &str,
        args: &[&str],
        input: Option<&Path>,
    ) -> Result<(i32, String, String), ProviderError> {
        let mut remote = format!("sh -c {} claude-vm", sh_quote(script));
        for a in args {
            remote.push(' ');
            remote.push_str(&sh_quote(a));
        }
        let mut child = self.command(&remote).spawn().map_err(|e| {
            self.ssh_error(
                SshFailure::Other,
                format!("cannot run `ssh` ({e}); install the OpenSSH client"),
            )
        })?;
        let stdin = child.stdin.take();
        let feed = async move {
            // Without input, stdin closes here: the script sees end of file.
            if let (Some(path), Some(mut stdin)) = (input, stdin) {
                let mut file = tokio::fs::File::open(path).await?;
                tokio::io::copy(&mut file, &mut stdin).await?;
                stdin.shutdown().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        let (fed, out) = tokio::join!(feed, child.wait_with_output());
        let out = out.map_err(|e| self.ssh_error(SshFailure::Other, e.to_string()))?;
        let code = out.status.code().unwrap_or(-1);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if code == 255 {
            let (failure, reason) = classify(&stderr);
            return Err(self.ssh_error(failure, reason));
        }
        if let Err(e) = fed {
            return Err(self.ssh_error(
                SshFailure::Other,
                format!("sending data to the host failed: {e}"),
            ));
        }
        Ok((
            code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        ))
    }

    /// Check the host (architecture, Docker socket) and make sure this claude-vm is
    /// installed there, verified by checksum; returns the path of the installed binary.
    pub async fn prepare(&self) -> Result<String, ProviderError> {
        let local = local_binary().await?;
        let (code, stdout, stderr) = self
            .run_script(
                CHECK_SCRIPT,
                &[&local.sha256, &local.name, &self.socket],
                None,
            )
            .await?;
        let facts: BTreeMap<&str, &str> =
            stdout.lines().filter_map(|l| l.split_once('=')).collect();
        let (Some(arch), Some(dir)) = (facts.get("arch"), facts.get("dir")) else {
            return Err(self.ssh_error(
                SshFailure::Other,
                format!(
                    "the host did not answer the check (exit code {code}): {}",
                    last_line(&stderr)
                ),
            ));
        };
        let remote_arch = normalize_arch(arch);
        if remote_arch != std::env::consts::ARCH {
            return Err(ProviderError::ArchMismatch {
                destination: self.destination(),
                remote: arch.to_string(),
                local: std::env::consts::ARCH.to_owned(),
            });
        }
        let user = facts
            .get("user")
            .filter(|u| !u.is_empty())
            .map(|u| u.to_string())
            .unwrap_or_else(|| self.user_for_messages());
        let no_docker = |reason: String| ProviderError::NoDocker {
            destination: self.destination(),
            user: user.clone(),
            reason,
        };
        match facts.get("docker").copied() {
            Some("ok") => {}
            Some("denied") => {
                return Err(no_docker(format!(
                    "permission denied on {} for {user}",
                    self.socket
                )));
            }
            Some("notsocket") => {
                return Err(no_docker(format!("{} is not a socket", self.socket)));
            }
            _ => {
                return Err(no_docker(format!(
                    "the socket {} does not exist (is Docker installed and running?)",
                    self.socket
                )));
            }
        }
        let path = format!("{dir}/{}", local.name);
        match facts.get("bin").copied() {
            Some("ok") => {}
            state => {
                if state == Some("bad") {
                    tracing::warn!(
                        "the claude-vm binary on {} does not match its checksum; installing it again",
                        self.destination()
                    );
                }
                self.install(&local).await?;
            }
        }
        Ok(path)
    }

    /// Upload this binary to the host, verify its checksum there, then move it into place.
    async fn install(&self, local: &LocalBinary) -> Result<(), ProviderError> {
        tracing::info!("installing claude-vm on {}", self.destination());
        let (code, _, stderr) = self
            .run_script(
                INSTALL_SCRIPT,
                &[&local.sha256, &local.name],
                Some(&local.path),
            )
            .await?;
        if code != 0 {
            return Err(ProviderError::Api {
                op: "installing claude-vm on the host",
                message: last_line(&stderr),
            });
        }
        Ok(())
    }
}

/// Prints `key=value` facts: the architecture, the binary folder, whether the binary is
/// there and intact, whether the Docker socket is usable. Args: sha256, name, socket.
///
/// Hashing a large binary on every command would cost, so a verified binary gets a marker
/// holding its checksum and its size, inode, mtime and ctime: a binary whose metadata no
/// longer matches (it was written to, replaced, touched) is hashed again. The marker's own
/// mtime says when the binary was last used.
const CHECK_SCRIPT: &str = r#"d="${XDG_CACHE_HOME:-$HOME/.cache}/claude-vm/bin"
b="$d/$2"
echo "arch=$(uname -m)"
echo "user=$(id -un 2>/dev/null)"
echo "dir=$d"
if [ -f "$b" ] && [ -x "$b" ]; then
  st="$1 $(stat -c '%s %i %y %z' "$b" 2>/dev/null)"
  if [ -f "$b.verified" ] && [ "$(cat "$b.verified" 2>/dev/null)" = "$st" ]; then
    touch "$b.verified" 2>/dev/null; echo bin=ok
  elif [ "$(sha256sum < "$b" 2>/dev/null | cut -d ' ' -f 1)" = "$1" ]; then
    echo "$st" > "$b.verified" 2>/dev/null; echo bin=ok
  else
    echo bin=bad
  fi
elif [ -e "$b" ]; then
  echo bin=bad
else
  echo bin=missing
fi
if [ -S "$3" ]; then
  if [ -r "$3" ] && [ -w "$3" ]; then echo docker=ok; else echo docker=denied; fi
elif [ -e "$3" ]; then
  echo docker=notsocket
else
  echo docker=missing
fi
"#;

/// Receives the binary on stdin into a temporary file, checks its sha256 and that it runs,
/// and only then moves it into place (and marks it verified). Removes other versions
/// unused for 30 days. Args: sha256, name.
const INSTALL_SCRIPT: &str = r#"set -e
umask 022
command -v sha256sum >/dev/null || { echo "sha256sum is missing on the host (install coreutils)" >&2; exit 3; }
d="${XDG_CACHE_HOME:-$HOME/.cache}/claude-vm/bin"
b="$d/$2"
mkdir -p "$d"
t="$d/.$2.upload.$$"
trap 'rm -f "$t" "$t.err"' EXIT
cat > "$t"
s=$(sha256sum < "$t" | cut -d ' ' -f 1)
if [ "$s" != "$1" ]; then echo "the uploaded binary's checksum is $s, expected $1" >&2; exit 3; fi
chmod 755 "$t"
"$t" --version >/dev/null 2>"$t.err" || { echo "the binary does not run on the host: $(tail -n 1 "$t.err")" >&2; exit 4; }
rm -f "$b.verified"
mv -f "$t" "$b"
echo "$1 $(stat -c '%s %i %y %z' "$b")" > "$b.verified"
trap - EXIT
rm -f "$t.err"
for f in "$d"/claude-vm-*; do
  case "$f" in *.verified|"$b") continue ;; esac
  if [ -z "$(find "$f.verified" "$f" -mtime -30 2>/dev/null)" ]; then rm -f "$f" "$f.verified"; fi
done
"#;

/// The running claude-vm binary: what gets installed on hosts.
#[derive(Debug, Clone)]
struct LocalBinary {
    path: PathBuf,
    sha256: String,
    /// `claude-vm-<version>-<sha256 prefix>`.
    name: String,
}

async fn local_binary() -> Result<LocalBinary, ProviderError> {
    static CELL: OnceCell<Result<LocalBinary, String>> = OnceCell::const_new();
    CELL.get_or_init(|| async {
        tokio::task::spawn_blocking(|| {
            let path = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
            let mut h = Sha256::new();
            std::io::copy(&mut file, &mut h).map_err(|e| e.to_string())?;
            let sha256 = hex(&h.finalize());
            let name = format!(
                "claude-vm-{}-{}",
                claude_vm_protocol::VERSION,
                &sha256[..12]
            );
            Ok(LocalBinary { path, sha256, name })
        })
        .await
        .map_err(|e| e.to_string())?
    })
    .await
    .clone()
    .map_err(|e| ProviderError::Config(format!("cannot read the claude-vm binary: {e}")))
}

/// The provider: Docker's, reached through `ssh HOST <binary> agent dial-docker`.
pub fn provider(
    options: &BTreeMap<String, String>,
    state_dir: &Path,
) -> Result<DockerProvider, ProviderError> {
    let target = Arc::new(SshTarget::from_options(options, state_dir)?);
    let last_stderr: Arc<Mutex<String>> = Arc::default();
    let connect: Connect = {
        let target = target.clone();
        let last_stderr = last_stderr.clone();
        Box::new(move || {
            let target = target.clone();
            let last_stderr = last_stderr.clone();
            Box::pin(async move {
                ensure_control_dir(&target.control_path)?;
                let binary = target.prepare().await?;
                let remote = format!(
                    "{} agent dial-docker --socket {}",
                    sh_quote(&binary),
                    sh_quote(&target.socket)
                );
                let connector = SshConnector {
                    target: target.clone(),
                    remote: Arc::new(remote),
                    last_stderr,
                };
                let client = Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(15))
                    .pool_max_idle_per_host(2)
                    .build(connector);
                let transport = move |req: BollardRequest| {
                    let fut = client.request(req);
                    async move { fut.await.map_err(bollard::errors::Error::from) }
                };
                Docker::connect_with_custom_transport(
                    transport,
                    Some("http://docker.ssh"),
                    120,
                    bollard::API_DEFAULT_VERSION,
                )
                .map_err(|e| target.ssh_error(SshFailure::Other, e.to_string()))
            })
        })
    };
    let unreachable: Unreachable = {
        let target = target.clone();
        Box::new(move |reason| {
            // What the remote side printed says more than hyper's "connection closed".
            let stderr =
                std::mem::take(&mut *last_stderr.lock().unwrap_or_else(|e| e.into_inner()));
            if stderr.contains("cannot reach the daemon at") {
                return ProviderError::NoDocker {
                    destination: target.destination(),
                    user: target.user_for_messages(),
                    reason: last_line(&stderr),
                };
            }
            if !stderr.trim().is_empty() {
                let (failure, why) = classify(&stderr);
                return target.ssh_error(failure, why);
            }
            target.ssh_error(
                SshFailure::Other,
                format!("lost the connection to the host's Docker engine: {reason}"),
            )
        })
    };
    let hint = format!(
        "is the host up and reachable? {}",
        ssh_hint(SshFailure::Unreachable, &target.display_command())
    );
    let endpoint = format!("ssh://{}{}", target.destination(), target.socket);
    DockerProvider::with_connector(options, endpoint, connect, unreachable, hint)
}

/// Opens one HTTP connection to the host's Docker socket: one `ssh` process (a session on
/// the shared master connection) running `agent dial-docker`.
#[derive(Clone)]
struct SshConnector {
    target: Arc<SshTarget>,
    remote: Arc<String>,
    last_stderr: Arc<Mutex<String>>,
}

impl tower_service::Service<hyper::Uri> for SshConnector {
    type Response = TokioIo<SshStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let mut child = this.target.command(&this.remote).spawn()?;
            let stdin = child
                .stdin
                .take()
                .ok_or_else(|| std::io::Error::other("no stdin"))?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| std::io::Error::other("no stdout"))?;
            if let Some(stderr) = child.stderr.take() {
                let last = this.last_stderr.clone();
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::debug!("ssh: {line}");
                        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                        last.push_str(&line);
                        last.push('\n');
                        if last.len() > 4096 {
                            let cut = last.len() - 4096;
                            let cut = (cut..last.len())
                                .find(|i| last.is_char_boundary(*i))
                                .unwrap_or(last.len());
                            last.drain(..cut);
                        }
                    }
                });
            }
            Ok(TokioIo::new(SshStream {
                _child: child,
                stdin,
                stdout,
            }))
        })
    }
}

/// The stdin and stdout of an `ssh` process as one byte stream; the process is killed when
/// the stream is dropped.
struct SshStream {
    _child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Connection for SshStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for SshStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for SshStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
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

/// The last non-empty line of a message, or a placeholder.
fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no message)")
        .to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
