//! The SSH server itself: keys, authentication, and one task per channel.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use claude_vm_protocol::api::ExecRequest;
use claude_vm_protocol::frame::{Decoder, Input, Kind};
use http_body_util::BodyExt;
use hyper::Response;
use russh::keys::{PrivateKey, PublicKey};
use russh::server::{Auth, Handle, Msg, Session};
use russh::{Channel, ChannelId, ChannelMsg, ChannelOpenFailure, MethodKind, MethodSet, Sig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::{Body, Exec, User};

/// The login name that means "the agent user" whatever the image calls uid 1000.
pub const AGENT_LOGIN: &str = "agent";

/// What every SSH connection of this daemon shares.
pub struct Server {
    config: Arc<russh::server::Config>,
    /// `ssh-ed25519 AAAA...`: what `GET /v1/ssh/host-key` answers.
    pub host_public: String,
    authorized_keys: PathBuf,
    exec: Arc<dyn Exec>,
    /// How to start the SFTP server (this binary).
    self_exe: String,
}

/// Files in the state directory.
pub fn ssh_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("ssh")
}

/// Load the host key, making one on first start. Root-only, on the volume: it survives
/// `down`/`up` and binary replacement.
pub fn load_or_create_host_key(dir: &Path) -> std::io::Result<PrivateKey> {
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let path = dir.join("host_ed25519_key");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return PrivateKey::from_openssh(text.as_bytes()).map_err(|e| {
                std::io::Error::other(format!(
                    "the SSH host key {} is unreadable ({e}); delete it to make a new one",
                    path.display()
                ))
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key = new_ed25519_key()?;
    let text = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    write_private(&path, text.as_bytes())?;
    tracing::info!("made a new SSH host key");
    Ok(key)
}

/// Replace a root-only file atomically: a random temporary name (two logins pushing keys at
/// once never share one), file and folder synced (`atomic-write-file`, claude-vm's writer).
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use atomic_write_file::AtomicWriteFile;
    use atomic_write_file::unix::OpenOptionsExt as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = AtomicWriteFile::options();
    options
        .mode(0o600)
        .preserve_mode(false)
        .preserve_owner(false);
    let mut f = options.open(path)?;
    std::io::Write::write_all(&mut f, data)?;
    f.commit()
}

/// A fresh ed25519 key from the OS's randomness.
pub fn new_ed25519_key() -> std::io::Result<PrivateKey> {
    let seed: [u8; 32] = rand::random();
    let pair = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&seed);
    Ok(PrivateKey::from(pair))
}

/// The SSH channel window: how much a peer may send before the other side reads it. At
/// OpenSSH's 2 MiB the sender waits for a window adjustment every 2 MiB, which caps a
/// transfer at 2 MiB per round trip through the link; 16 MiB keeps the pipe full.
const WINDOW: u32 = 16 << 20;

/// Largest SSH packet this server accepts (OpenSSH sends at most 32 KiB, but asks for up
/// to 256 KiB, and other clients send what they are allowed).
const MAX_PACKET: u32 = 256 * 1024;

impl Server {
    /// A server with this host key, its authorized keys in `state_dir`'s `ssh/` folder,
    /// running commands through `exec`.
    pub fn new(host_key: PrivateKey, state_dir: &Path, exec: Arc<dyn Exec>) -> Server {
        let host_public = host_key
            .public_key()
            .to_openssh()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let config = russh::server::Config {
            server_id: russh::SshId::Standard(
                format!("SSH-2.0-claude-vm_{}", claude_vm_protocol::VERSION).into(),
            ),
            methods: MethodSet::from(&[MethodKind::PublicKey][..]),
            auth_rejection_time: Duration::from_millis(300),
            // OpenSSH probes with "none" first: answer at once.
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![host_key],
            // Idle shells stay; a dead peer is found by keepalives.
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 4,
            max_auth_attempts: 10,
            window_size: WINDOW,
            maximum_packet_size: MAX_PACKET,
            // Messages the connection task queues for each channel's task (bounded).
            channel_buffer_size: 256,
            ..Default::default()
        };
        let self_exe = std::env::current_exe()
            .ok()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| claude_vm_protocol::BINARY_PATH.to_owned());
        Server {
            config: Arc::new(config),
            host_public,
            authorized_keys: ssh_dir(state_dir).join("authorized_keys"),
            exec,
            self_exe,
        }
    }

    /// Replace the accepted public keys (one OpenSSH line each). Invalid lines are an error
    /// and change nothing.
    pub fn set_authorized_keys(&self, keys: &[String]) -> Result<usize, String> {
        let mut out = String::new();
        for k in keys {
            let line = k.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.contains('\n') {
                return Err("a key must be on one line".into());
            }
            PublicKey::from_openssh(line).map_err(|e| format!("invalid public key: {e}"))?;
            out.push_str(line);
            out.push('\n');
        }
        // Every `claude-vm ssh` pushes the keys: unchanged, they are not written (and
        // fsynced) again.
        if std::fs::read_to_string(&self.authorized_keys).is_ok_and(|current| current == out) {
            return Ok(out.lines().count());
        }
        let dir = self
            .authorized_keys
            .parent()
            .ok_or("no directory for authorized_keys")?;
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            write_private(&self.authorized_keys, out.as_bytes())
        };
        write().map_err(|e| format!("cannot write the authorized keys: {e}"))?;
        Ok(out.lines().count())
    }

    fn is_authorized(&self, key: &PublicKey) -> bool {
        let Ok(text) = std::fs::read_to_string(&self.authorized_keys) else {
            return false;
        };
        text.lines()
            .filter_map(|l| PublicKey::from_openssh(l.trim()).ok())
            .any(|k| k.key_data() == key.key_data())
    }
}

/// Who an SSH login name runs as: `None` is the agent user (exec's default).
fn login_user(name: &str, exec: &dyn Exec) -> Option<Option<String>> {
    if name == "root" {
        return Some(Some("root".to_owned()));
    }
    if name == AGENT_LOGIN {
        return Some(None);
    }
    // The agent user's own name (a devcontainer's remoteUser, `node`, `vscode`...).
    let agent = exec
        .user(None)
        .ok()
        .and_then(|u| nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u.uid)).ok())
        .flatten();
    match agent {
        Some(u) if u.name == name => Some(None),
        _ => None,
    }
}

impl Server {
    /// `POST /v1/ssh`: run one SSH server connection over the request and response bodies.
    pub(crate) fn connection<B>(self: Arc<Self>, mut body: B) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Send,
    {
        let (ours, theirs) = tokio::io::duplex(PIPE);
        let (mut from_server, mut to_server) = tokio::io::split(theirs);
        tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data()
                    && to_server.write_all(&data).await.is_err()
                {
                    break;
                }
            }
            let _ = to_server.shutdown().await;
        });
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        tokio::spawn(async move {
            let mut buf = vec![0u8; PIPE];
            loop {
                match from_server.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx
                            .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        let server = self.clone();
        tokio::spawn(async move {
            let handler = Conn {
                server: server.clone(),
                login: None,
            };
            match russh::server::run_stream(server.config.clone(), ours, handler).await {
                Ok(session) => {
                    if let Err(e) = session.await {
                        tracing::debug!("ssh connection ended: {e}");
                    }
                }
                Err(e) => tracing::debug!("ssh handshake failed: {e}"),
            }
        });
        let body = futures_body(rx);
        let mut res = Response::new(body);
        res.headers_mut().insert(
            "content-type",
            "application/octet-stream".parse().expect("valid"),
        );
        res
    }
}

/// Buffer between the HTTP bodies and the SSH session, each way.
const PIPE: usize = 256 * 1024;

fn futures_body(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Body {
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|r| (r.map(hyper::body::Frame::data), rx))
    });
    BodyExt::boxed_unsync(http_body_util::StreamBody::new(s))
}

/// One SSH connection.
struct Conn {
    server: Arc<Server>,
    /// Set once authenticated: the exec user of the login.
    login: Option<Login>,
}

#[derive(Clone)]
struct Login {
    /// For exec (`None`: the agent user).
    user: Option<String>,
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if login_user(user, self.server.exec.as_ref()).is_some()
            && self.server.is_authorized(offer.public_key)
        {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match login_user(user, self.server.exec.as_ref()) {
            Some(exec_user) if self.server.is_authorized(key.public_key) => {
                tracing::info!(user, "ssh login");
                self.login = Some(Login { user: exec_user });
                Ok(Auth::Accept)
            }
            _ => {
                tracing::info!(user, "ssh login refused");
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(login) = self.login.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        reply.accept().await;
        tokio::spawn(session_channel(
            channel,
            session.handle(),
            self.server.clone(),
            login,
        ));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Ok(port) = u16::try_from(port_to_connect) else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return Ok(());
        };
        if self.login.is_none() {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        let host = host_to_connect.to_owned();
        self.server.exec.touch("ssh");
        tokio::spawn(async move {
            let connected = tokio::time::timeout(
                Duration::from_secs(10),
                tokio::net::TcpStream::connect((host.as_str(), port)),
            )
            .await;
            match connected {
                Ok(Ok(mut tcp)) => {
                    reply.accept().await;
                    let mut stream = channel.into_stream();
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!("forwarding to {host}:{port} failed: {e}");
                    reply.reject(ChannelOpenFailure::ConnectFailed).await;
                }
                Err(_) => reply.reject(ChannelOpenFailure::ConnectFailed).await,
            }
        });
        Ok(())
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // The socket itself is made by the session's channel task.
        Ok(self.login.is_some())
    }
}

/// What a session channel runs.
enum Start {
    Exec(String),
    Shell,
    Sftp,
}

fn signal_number(sig: &Sig) -> Option<i32> {
    Some(match sig {
        Sig::ABRT => 6,
        Sig::ALRM => 14,
        Sig::FPE => 8,
        Sig::HUP => 1,
        Sig::ILL => 4,
        Sig::INT => 2,
        Sig::KILL => 9,
        Sig::PIPE => 13,
        Sig::QUIT => 3,
        Sig::SEGV => 11,
        Sig::TERM => 15,
        Sig::USR1 => 10,
        Sig::Custom(name) => match name.as_str() {
            "USR2" => 12,
            "WINCH" => 28,
            "CONT" => 18,
            "STOP" => 19,
            _ => return None,
        },
    })
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A session channel: collect pty-req/env/agent requests, then run the exec, shell or
/// subsystem through the exec machinery until it exits.
async fn session_channel(channel: Channel<Msg>, handle: Handle, server: Arc<Server>, login: Login) {
    let id = channel.id();
    let (mut read, write) = channel.split();
    let mut env: Vec<String> = Vec::new();
    let mut pty: Option<(String, u16, u16)> = None;
    let mut agent: Option<AgentSocket> = None;
    let start = loop {
        match read.wait().await {
            None | Some(ChannelMsg::Close) => return,
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            }) => {
                pty = Some((
                    term,
                    u16::try_from(row_height).unwrap_or(u16::MAX),
                    u16::try_from(col_width).unwrap_or(u16::MAX),
                ));
                let _ = handle.channel_success(id).await;
            }
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            }) => {
                if let Some(p) = pty.as_mut() {
                    p.1 = u16::try_from(row_height).unwrap_or(u16::MAX);
                    p.2 = u16::try_from(col_width).unwrap_or(u16::MAX);
                }
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => {
                if valid_env_name(&variable_name) && env.len() < 256 {
                    env.push(format!("{variable_name}={variable_value}"));
                    let _ = handle.channel_success(id).await;
                } else {
                    let _ = handle.channel_failure(id).await;
                }
            }
            Some(ChannelMsg::AgentForward { .. }) => {
                // Answered by the connection (agent_request); make the socket here.
                if agent.is_none() {
                    match AgentSocket::start(
                        handle.clone(),
                        server.exec.user(login.user.as_deref()),
                    ) {
                        Ok(a) => agent = Some(a),
                        Err(e) => tracing::warn!("agent forwarding unavailable: {e}"),
                    }
                }
            }
            Some(ChannelMsg::Exec { command, .. }) => {
                break Start::Exec(String::from_utf8_lossy(&command).into_owned());
            }
            Some(ChannelMsg::RequestShell { .. }) => break Start::Shell,
            Some(ChannelMsg::RequestSubsystem { name, .. }) => {
                if name == "sftp" {
                    break Start::Sftp;
                }
                let _ = handle.channel_failure(id).await;
            }
            Some(ChannelMsg::RequestX11 { .. }) => {
                let _ = handle.channel_failure(id).await;
            }
            Some(_) => {}
        }
    };
    let _ = handle.channel_success(id).await;

    let who = server.exec.user(login.user.as_deref());
    let shell = who
        .as_ref()
        .ok()
        .and_then(|w| w.shell.clone())
        .filter(|s| Path::new(s).is_file())
        .unwrap_or_else(|| {
            if Path::new("/bin/bash").exists() {
                "/bin/bash".into()
            } else {
                "/bin/sh".into()
            }
        });
    if let Some(a) = &agent {
        env.push(format!("SSH_AUTH_SOCK={}", a.socket.display()));
    }
    env.push("SSH_CONNECTION=claude-vm 0 claude-vm 0".into());
    let (cmd, tty) = match &start {
        Start::Exec(c) => (vec![shell.clone(), "-c".into(), c.clone()], pty.is_some()),
        Start::Shell => (vec![shell.clone(), "-l".into()], pty.is_some()),
        Start::Sftp => (
            vec![
                server.self_exe.clone(),
                "agent".into(),
                "sftp-server".into(),
            ],
            false,
        ),
    };
    if let Some((term, _, _)) = &pty
        && tty
        && !term.is_empty()
    {
        env.push(format!("TERM={term}"));
    }
    let req = ExecRequest {
        cmd,
        env,
        workdir: None,
        user: login.user.clone(),
        tty,
        rows: pty.as_ref().filter(|_| tty).map(|p| p.1),
        cols: pty.as_ref().filter(|_| tty).map(|p| p.2),
        detach: false,
    };
    let (in_tx, in_rx) = mpsc::channel::<Input>(256);
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(64);
    let runner = tokio::spawn(server.exec.run(req, in_rx, out_tx));
    // What the client sends: never left unread, or the whole connection would stall.
    let reader = tokio::spawn(async move {
        let mut open = true;
        loop {
            let input = match read.wait().await {
                Some(ChannelMsg::Data { data }) => Input::Stdin(data.to_vec()),
                Some(ChannelMsg::Eof) => Input::StdinEof,
                Some(ChannelMsg::WindowChange {
                    col_width,
                    row_height,
                    ..
                }) => Input::Resize {
                    rows: u16::try_from(row_height).unwrap_or(u16::MAX),
                    cols: u16::try_from(col_width).unwrap_or(u16::MAX),
                },
                Some(ChannelMsg::Signal { signal }) => match signal_number(&signal) {
                    Some(n) => Input::Signal(n),
                    None => continue,
                },
                Some(ChannelMsg::Close) | None => {
                    if open {
                        let _ = in_tx.send(Input::Gone).await;
                    }
                    return;
                }
                Some(_) => continue,
            };
            if open && in_tx.send(input).await.is_err() {
                open = false;
            }
        }
    });
    let mut decoder = Decoder::default();
    let mut code: Option<i32> = None;
    'out: while let Some(chunk) = out_rx.recv().await {
        decoder.push(&chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some((Kind::Stdout, data))) => {
                    if write.data(&data[..]).await.is_err() {
                        break 'out;
                    }
                }
                Ok(Some((Kind::Stderr, data))) => {
                    if write.extended_data(1, &data[..]).await.is_err() {
                        break 'out;
                    }
                }
                Ok(Some((Kind::Exit, data))) if data.len() == 4 => {
                    // The last frame (output was drained before it). A background process
                    // still holding the pipes does not keep the session open.
                    code = Some(i32::from_be_bytes([data[0], data[1], data[2], data[3]]));
                    break 'out;
                }
                Ok(Some((Kind::Error, msg))) => {
                    let mut line = String::from_utf8_lossy(&msg).into_owned();
                    let c = if line.contains("No such file") || line.contains("not found") {
                        127
                    } else {
                        126
                    };
                    line = format!("claude-vm: {line}\n");
                    let _ = write.extended_data(1, line.as_bytes()).await;
                    code = Some(c);
                    break 'out;
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => break 'out,
            }
        }
    }
    // It finishes on its own (after the exit frame, or once the reader reports the client gone).
    drop(runner);
    let _ = write
        .exit_status(code.unwrap_or(255).clamp(0, 255) as u32)
        .await;
    let _ = write.eof().await;
    let _ = write.close().await;
    drop(agent);
    // The client answers the close; the reader ends with it (or with the connection).
    let _ = tokio::time::timeout(Duration::from_secs(30), reader).await;
}

/// A forwarded agent: a socket owned by the login user in a fresh private folder; every
/// connection to it becomes an `auth-agent@openssh.com` channel to the client.
struct AgentSocket {
    dir: PathBuf,
    socket: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl AgentSocket {
    fn start(handle: Handle, who: Result<User, String>) -> std::io::Result<AgentSocket> {
        let who = who.map_err(std::io::Error::other)?;
        let dir = PathBuf::from(format!("/tmp/claude-vm-ssh-{:016x}", rand::random::<u64>()));
        // create_dir fails if anything is there already: nobody can plant a symlink.
        std::fs::create_dir(&dir)?;
        let made = (|| {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
            let socket = dir.join("agent.sock");
            let listener = std::os::unix::net::UnixListener::bind(&socket)?;
            listener.set_nonblocking(true)?;
            let uid = Some(nix::unistd::Uid::from_raw(who.uid));
            let gid = Some(nix::unistd::Gid::from_raw(who.gid));
            if nix::unistd::geteuid().is_root() {
                nix::unistd::chown(&socket, uid, gid).map_err(std::io::Error::from)?;
                nix::unistd::chown(&dir, uid, gid).map_err(std::io::Error::from)?;
            }
            std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
            Ok::<_, std::io::Error>((socket, tokio::net::UnixListener::from_std(listener)?))
        })();
        let (socket, listener) = match made {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let handle = handle.clone();
                tokio::spawn(async move {
                    match handle.channel_open_agent().await {
                        Ok(ch) => {
                            let mut stream = ch.into_stream();
                            let _ = tokio::io::copy_bidirectional(&mut conn, &mut stream).await;
                        }
                        Err(e) => tracing::debug!("agent channel refused: {e}"),
                    }
                });
            }
        });
        Ok(AgentSocket { dir, socket, task })
    }
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoExec;

    impl Exec for NoExec {
        fn run(
            &self,
            _: ExecRequest,
            _: mpsc::Receiver<Input>,
            _: mpsc::Sender<Bytes>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
            Box::pin(async {})
        }
        fn user(&self, _: Option<&str>) -> Result<User, String> {
            Err("no users here".into())
        }
        fn touch(&self, _: &str) {}
    }

    #[test]
    fn host_key_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join("ssh");
        let a = load_or_create_host_key(&ssh).unwrap();
        let b = load_or_create_host_key(&ssh).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let mode = std::fs::metadata(ssh.join("host_ed25519_key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(ssh.join("host_ed25519_key"), "garbage").unwrap();
        assert!(load_or_create_host_key(&ssh).is_err());
    }

    #[test]
    fn authorized_keys_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_host_key(&dir.path().join("ssh")).unwrap();
        let shared = Server::new(key.clone(), dir.path(), Arc::new(NoExec));
        let other = new_ed25519_key().unwrap();
        assert!(!shared.is_authorized(other.public_key()));
        let line = other.public_key().to_openssh().unwrap();
        assert_eq!(
            shared
                .set_authorized_keys(&[line.clone(), "# comment".into(), String::new()])
                .unwrap(),
            1
        );
        assert!(shared.is_authorized(other.public_key()));
        assert!(!shared.is_authorized(key.public_key()));
        assert!(
            shared
                .set_authorized_keys(&["ssh-ed25519 nope".into()])
                .is_err()
        );
        assert!(
            shared.is_authorized(other.public_key()),
            "unchanged on error"
        );
        assert!(signal_number(&Sig::INT) == Some(2));
        assert!(valid_env_name("LANG") && !valid_env_name("A=B") && !valid_env_name("1A"));
    }
}
