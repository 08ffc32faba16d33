//! Docker hosts reached through a command: the machinery the `ssh` provider and DevPod
//! machine providers share.
//!
//! A [`Remote`] turns a shell command line into a local process whose stdin and stdout are
//! that command running on the host: `ssh HOST CMD` for the `ssh` provider, a provider.yaml's
//! `exec.command` with `$COMMAND` set for a DevPod machine. Over it claude-vm checks the
//! host, installs its own binary there (once per version, checked by sha256 on the host
//! before it is moved into place) and opens every HTTP connection to the host's Docker as
//! one `<that binary> agent dial-docker` process. The link to a workspace's daemon rides a
//! Docker exec session, so it travels over the same transport.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::{BollardRequest, Docker};
use claude_vm_core::posix::{normalize_arch, sh_quote};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::OnceCell;

use crate::ProviderError;
use crate::docker::{Connect, DockerProvider, Unreachable};

/// A way to run commands on a Docker host.
pub(crate) trait Remote: Send + Sync + 'static {
    /// A process running the shell command line `remote` on the host: stdin, stdout and
    /// stderr piped, killed when dropped.
    fn command(&self, remote: &str) -> Command;
    /// The host for messages (`user@host:port`, `machine claude-vm-1a2b on do`).
    fn destination(&self) -> String;
    /// The user claude-vm acts as on the host, for messages.
    fn user_for_messages(&self) -> String;
    /// The host's Docker socket.
    fn socket(&self) -> &str;
    /// An error of the transport with `reason`.
    fn failure(&self, reason: String) -> ProviderError;
    /// The error when the transport's program cannot be started.
    fn spawn_failed(&self, e: &std::io::Error) -> ProviderError {
        self.failure(format!(
            "cannot start the command that reaches the host: {e}"
        ))
    }
    /// When a command ended with `code` having printed `stderr`: the transport's own
    /// failure (for `ssh`, exit code 255), `None` when the code is the command's.
    fn transport_error(&self, code: i32, stderr: &str) -> Option<ProviderError>;
    /// The error for a connection to Docker that was lost or never made, from what the
    /// transport printed (may be empty) and hyper's `reason`.
    fn lost(&self, stderr: &str, reason: String) -> ProviderError;
    /// What to do when the host does not answer.
    fn hint(&self) -> String;
    /// The Docker endpoint for messages and `doctor` (`ssh://host/var/run/docker.sock`).
    fn endpoint(&self) -> String;
    /// Work before each new connection (for `ssh`: the socket folder of the master).
    fn before_connect(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}

impl dyn Remote {
    /// Run a shell script on the host with `args`, `input` on its stdin; returns its exit
    /// code, stdout and stderr. SSH-level failures are classified errors.
    pub(crate) async fn run_script(
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
        let mut child = self
            .command(&remote)
            .spawn()
            .map_err(|e| self.spawn_failed(&e))?;
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
        let out = out.map_err(|e| self.failure(e.to_string()))?;
        let code = out.status.code().unwrap_or(-1);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if let Some(e) = self.transport_error(code, &stderr) {
            return Err(e);
        }
        if let Err(e) = fed {
            return Err(self.failure(format!("sending data to the host failed: {e}")));
        }
        Ok((
            code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        ))
    }

    /// Check the host (architecture, Docker socket) and make sure this claude-vm is
    /// installed there, verified by checksum; returns the path of the installed binary.
    pub(crate) async fn prepare(&self) -> Result<String, ProviderError> {
        let local = local_binary().await?;
        let (code, stdout, stderr) = self
            .run_script(
                CHECK_SCRIPT,
                &[&local.sha256, &local.name, self.socket()],
                None,
            )
            .await?;
        let facts: BTreeMap<&str, &str> =
            stdout.lines().filter_map(|l| l.split_once('=')).collect();
        let (Some(arch), Some(dir)) = (facts.get("arch"), facts.get("dir")) else {
            return Err(self.failure(format!(
                "the host did not answer the check (exit code {code}): {}",
                last_line(&stderr)
            )));
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
                    self.socket()
                )));
            }
            Some("notsocket") => {
                return Err(no_docker(format!("{} is not a socket", self.socket())));
            }
            _ => {
                return Err(no_docker(format!(
                    "the socket {} does not exist (is Docker installed and running?)",
                    self.socket()
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

/// Docker's provider on the host `target` reaches, every connection one
/// `<claude-vm on the host> agent dial-docker` process of the transport.
pub(crate) fn docker_over(
    target: Arc<dyn Remote>,
    options: &BTreeMap<String, String>,
) -> Result<DockerProvider, ProviderError> {
    let last_stderr: Arc<Mutex<String>> = Arc::default();
    let connect: Connect = {
        let target = target.clone();
        let last_stderr = last_stderr.clone();
        Box::new(move || {
            let target = target.clone();
            let last_stderr = last_stderr.clone();
            Box::pin(async move {
                target.before_connect()?;
                let binary = target.prepare().await?;
                let remote = format!(
                    "{} agent dial-docker --socket {}",
                    sh_quote(&binary),
                    sh_quote(target.socket())
                );
                let connector = RemoteConnector {
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
                    Some("http://docker.remote"),
                    120,
                    bollard::API_DEFAULT_VERSION,
                )
                .map_err(|e| target.failure(e.to_string()))
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
            target.lost(&stderr, reason)
        })
    };
    let hint = target.hint();
    let endpoint = target.endpoint();
    DockerProvider::with_connector(options, endpoint, connect, unreachable, hint)
}

/// Opens one HTTP connection to the host's Docker socket: one process of the transport
/// (for `ssh`, a session on the shared master connection) running `agent dial-docker`.
#[derive(Clone)]
struct RemoteConnector {
    target: Arc<dyn Remote>,
    remote: Arc<String>,
    last_stderr: Arc<Mutex<String>>,
}

impl tower_service::Service<hyper::Uri> for RemoteConnector {
    type Response = TokioIo<RemoteStream>;
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
                let target = this.target.clone();
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::debug!("{}: {line}", target.destination());
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
            Ok(TokioIo::new(RemoteStream {
                _child: child,
                stdin,
                stdout,
            }))
        })
    }
}

/// The stdin and stdout of a transport process as one byte stream; the process is killed when
/// the stream is dropped.
struct RemoteStream {
    _child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Connection for RemoteStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for RemoteStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for RemoteStream {
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

/// The last non-empty line of a message, or a placeholder.
pub(crate) fn last_line(s: &str) -> String {
    s.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(no message)")
        .to_owned()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
