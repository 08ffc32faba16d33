//! Running commands in the workspace for `POST /v1/exec`.
//!
//! The request body is a stream of frames (start, stdin, resize, signal); the response body
//! is a stream of frames (started, stdout, stderr, exit). Each command runs in its own
//! process group (or terminal session, with a PTY) so a signal or a kill reaches everything
//! it started. When the client goes away the command is killed, unless it asked to be
//! detached.

use std::process::Stdio;
use std::sync::Arc;

use bytes::Bytes;
use claude_vm_protocol::api::ExecRequest;
use claude_vm_protocol::frame::{self, Kind};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::activity::Activity;

pub use claude_vm_protocol::frame::Input;

/// Who a command runs as.
#[derive(Debug, Clone)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub name: Option<String>,
    pub home: String,
    pub shell: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("no command given")]
    NoCommand,
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("working directory {0} does not exist")]
    NoWorkdir(String),
    #[error("invalid environment entry {0:?}: expected NAME=VALUE")]
    BadEnv(String),
    #[error("cannot start {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
}

/// Resolve `user` (a name, a uid, or `uid:gid`); `None` means the agent user.
pub fn identity(user: Option<&str>) -> Result<Identity, ExecError> {
    use nix::unistd::{Gid, Group, Uid, User};
    let from_user = |u: User| {
        let groups = nix::unistd::getgrouplist(
            &std::ffi::CString::new(u.name.clone()).unwrap_or_default(),
            u.gid,
        )
        .map(|g| g.into_iter().map(Gid::as_raw).collect())
        .unwrap_or_else(|_| vec![u.gid.as_raw()]);
        Identity {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            groups,
            name: Some(u.name),
            home: u.dir.display().to_string(),
            shell: Some(u.shell.display().to_string()),
        }
    };
    let numeric = |uid: u32, gid: Option<u32>| -> Identity {
        match User::from_uid(Uid::from_raw(uid)).ok().flatten() {
            Some(u) => {
                let mut id = from_user(u);
                if let Some(g) = gid {
                    id.gid = g;
                    id.groups = vec![g];
                }
                id
            }
            None => Identity {
                uid,
                gid: gid.unwrap_or(uid),
                groups: vec![gid.unwrap_or(uid)],
                name: None,
                home: claude_vm_protocol::WORKSPACE_ROOT.to_owned(),
                shell: None,
            },
        }
    };
    match user {
        // The agent user with its groups from the account files.
        None => Ok(numeric(crate::agent_user::get().uid, None)),
        Some(spec) => {
            if let Some((u, g)) = spec.split_once(':') {
                let uid = u
                    .parse()
                    .ok()
                    .or_else(|| User::from_name(u).ok().flatten().map(|x| x.uid.as_raw()));
                let gid = g
                    .parse()
                    .ok()
                    .or_else(|| Group::from_name(g).ok().flatten().map(|x| x.gid.as_raw()));
                match (uid, gid) {
                    (Some(uid), Some(gid)) => Ok(numeric(uid, Some(gid))),
                    _ => Err(ExecError::UnknownUser(spec.to_owned())),
                }
            } else if let Ok(uid) = spec.parse::<u32>() {
                Ok(numeric(uid, None))
            } else {
                match User::from_name(spec).ok().flatten() {
                    Some(u) => Ok(from_user(u)),
                    None => Err(ExecError::UnknownUser(spec.to_owned())),
                }
            }
        }
    }
}

/// How a spawned command is grouped, so one signal reaches everything it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Its own process group (commands without a terminal).
    ProcessGroup,
    /// Its own session (agents); a PTY spawner makes the session itself.
    Session,
    /// Leave it to the PTY spawner, which makes a session with a controlling terminal.
    Terminal,
}

/// Make `cmd` run as `who` (groups, gid, uid, in that order, while still root) and group it.
/// Privileges are dropped in `pre_exec` rather than with `Command::uid`, because
/// supplementary groups must be set before the uid changes.
pub fn run_as(cmd: &mut tokio::process::Command, who: &Identity, grouping: Grouping) {
    let (uid, gid) = (who.uid, who.gid);
    let groups: Vec<nix::unistd::Gid> = who
        .groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    let root = nix::unistd::geteuid().is_root();
    // SAFETY: only async-signal-safe calls (setsid, setpgid, setgroups, setgid, setuid)
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            match grouping {
                Grouping::Session => {
                    nix::unistd::setsid().map_err(std::io::Error::from)?;
                }
                Grouping::ProcessGroup => {
                    nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))
                        .map_err(std::io::Error::from)?;
                }
                Grouping::Terminal => {}
            }
            if root {
                nix::unistd::setgroups(&groups).map_err(std::io::Error::from)?;
                nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))
                    .map_err(std::io::Error::from)?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))
                    .map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
}

fn frame_bytes(kind: Kind, payload: &[u8]) -> Bytes {
    Bytes::from(frame::encode(kind, payload))
}

async fn pump(mut from: impl AsyncRead + Unpin, kind: Kind, out: mpsc::Sender<Bytes>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut listening = true;
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            // Once the client is gone, keep draining so a detached command never blocks
            // on a full pipe.
            Ok(n) if listening => {
                listening = out.send(frame_bytes(kind, &buf[..n])).await.is_ok();
            }
            Ok(_) => {}
        }
    }
}

/// Run one command. Output frames go to `out`; `input` carries what the client sends.
/// Returns when the command has exited (and its output has been sent).
pub async fn run(
    req: ExecRequest,
    default_dir: String,
    mut input: mpsc::Receiver<Input>,
    out: mpsc::Sender<Bytes>,
    activity: Arc<Activity>,
) {
    let fail = |out: mpsc::Sender<Bytes>, e: ExecError| async move {
        let _ = out
            .send(frame_bytes(Kind::Error, e.to_string().as_bytes()))
            .await;
    };
    let Some(program) = req.cmd.first().cloned() else {
        return fail(out, ExecError::NoCommand).await;
    };
    let who = match identity(req.user.as_deref()) {
        Ok(w) => w,
        Err(e) => return fail(out, e).await,
    };
    let workdir = req.workdir.clone().unwrap_or(default_dir);
    if !std::path::Path::new(&workdir).is_dir() {
        return fail(out, ExecError::NoWorkdir(workdir)).await;
    }
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&req.cmd[1..]).current_dir(&workdir);
    cmd.env("HOME", &who.home);
    match &who.name {
        Some(n) => {
            cmd.env("USER", n).env("LOGNAME", n);
        }
        None => {
            cmd.env_remove("USER").env_remove("LOGNAME");
        }
    }
    if let Some(sh) = &who.shell {
        cmd.env("SHELL", sh);
    }
    if req.tty {
        cmd.env(
            "TERM",
            std::env::var("TERM")
                .ok()
                .filter(|t| t != "dumb")
                .unwrap_or_else(|| "xterm-256color".into()),
        );
    }
    for e in &req.env {
        match e.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                cmd.env(k, v);
            }
            _ => return fail(out, ExecError::BadEnv(e.clone())).await,
        }
    }
    let grouping = if req.tty {
        Grouping::Terminal
    } else {
        Grouping::ProcessGroup
    };
    run_as(&mut cmd, &who, grouping);
    activity.exec_started();
    let _guard = ActivityGuard(activity.clone());

    let spawned = if req.tty {
        spawn_pty(cmd, &req, &program)
    } else {
        spawn_pipes(cmd, &program)
    };
    let (mut child, writer, resize, readers) = match spawned {
        Ok(s) => s,
        Err(e) => return fail(out, e).await,
    };
    // A child that already went away has no pid: never signal group 0 (our own) for it.
    let Some(pid) = child.id().filter(|&p| p > 1) else {
        let code = child.wait().await.ok().and_then(|s| s.code()).unwrap_or(1);
        let _ = out.send(frame_bytes(Kind::Exit, &code.to_be_bytes())).await;
        return;
    };
    let _ = out
        .send(frame_bytes(Kind::Started, &pid.to_be_bytes()))
        .await;

    let mut pumps = Vec::new();
    for (reader, kind) in readers {
        pumps.push(tokio::spawn(pump(reader, kind, out.clone())));
    }
    let pgid = Pid::from_raw(pid as i32);
    let detach = req.detach;
    let feeder = tokio::spawn(async move {
        let mut writer = writer;
        while let Some(msg) = input.recv().await {
            match msg {
                Input::Stdin(data) => {
                    if let Some(w) = writer.as_mut()
                        && w.write_all(&data).await.is_err()
                    {
                        writer = None;
                    }
                }
                Input::StdinEof => {
                    if let Some(mut w) = writer.take() {
                        let _ = w.shutdown().await;
                    }
                }
                Input::Resize { rows, cols } => {
                    if let Some(r) = &resize {
                        r(rows, cols);
                    }
                }
                Input::Signal(n) => {
                    if let Ok(sig) = Signal::try_from(n) {
                        let _ = killpg(pgid, sig);
                    }
                }
                Input::Gone => {
                    if !detach {
                        let _ = killpg(pgid, Signal::SIGHUP);
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        let _ = killpg(pgid, Signal::SIGKILL);
                    }
                    return;
                }
            }
        }
    });
    let status = child.wait().await;
    if detach {
        // What a detached command left running in its process group (`nohup x &`) still
        // counts as activity until the group is empty.
        let hold = activity.hold("exec -d process");
        tokio::spawn(async move {
            while killpg(pgid, None).is_ok() {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            drop(hold);
        });
    }
    // Output still buffered in the pipes is delivered before the exit frame.
    for p in pumps {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), p).await;
    }
    feeder.abort();
    let code = match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            s.code()
                .or_else(|| s.signal().map(|n| 128 + n))
                .unwrap_or(-1)
        }
        Err(_) => -1,
    };
    let _ = out.send(frame_bytes(Kind::Exit, &code.to_be_bytes())).await;
}

struct ActivityGuard(Arc<Activity>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        self.0.exec_finished();
    }
}

type Writer = Option<Box<dyn AsyncWrite + Send + Unpin>>;
type Resizer = Option<Box<dyn Fn(u16, u16) + Send + Sync>>;
type Readers = Vec<(Box<dyn AsyncRead + Send + Unpin>, Kind)>;

fn spawn_pipes(
    mut cmd: tokio::process::Command,
    program: &str,
) -> Result<(tokio::process::Child, Writer, Resizer, Readers), ExecError> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| ExecError::Spawn {
        cmd: program.to_owned(),
        source: e,
    })?;
    let stdin = child
        .stdin
        .take()
        .map(|s| Box::new(s) as Box<dyn AsyncWrite + Send + Unpin>);
    let mut readers: Readers = Vec::new();
    if let Some(s) = child.stdout.take() {
        readers.push((Box::new(s), Kind::Stdout));
    }
    if let Some(s) = child.stderr.take() {
        readers.push((Box::new(s), Kind::Stderr));
    }
    Ok((child, stdin, None, readers))
}

fn spawn_pty(
    cmd: tokio::process::Command,
    req: &ExecRequest,
    program: &str,
) -> Result<(tokio::process::Child, Writer, Resizer, Readers), ExecError> {
    let spawn_err = |e: pty_process::Error| ExecError::Spawn {
        cmd: program.to_owned(),
        source: std::io::Error::other(e.to_string()),
    };
    let (pty, pts) = pty_process::open().map_err(spawn_err)?;
    let _ = pty.resize(pty_process::Size::new(
        req.rows.unwrap_or(24),
        req.cols.unwrap_or(80),
    ));
    let child = pty_process::Command::from(cmd)
        .spawn(pts)
        .map_err(spawn_err)?;
    let (read, write) = pty.into_split();
    let write = Arc::new(tokio::sync::Mutex::new(write));
    let resize_handle = write.clone();
    let resize: Resizer = Some(Box::new(move |rows, cols| {
        if let Ok(w) = resize_handle.try_lock() {
            let _ = w.resize(pty_process::Size::new(rows, cols));
        }
    }));
    let writer: Writer = Some(Box::new(SharedWriter(write)));
    Ok((child, writer, resize, vec![(Box::new(read), Kind::Stdout)]))
}

/// The PTY's write half shared with the resizer.
struct SharedWriter(Arc<tokio::sync::Mutex<pty_process::OwnedWritePty>>);

impl AsyncWrite for SharedWriter {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.0.try_lock() {
            Ok(mut w) => std::pin::Pin::new(&mut *w).poll_write(cx, buf),
            Err(_) => {
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.0.try_lock() {
            Ok(mut w) => std::pin::Pin::new(&mut *w).poll_flush(cx),
            Err(_) => {
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.0.try_lock() {
            Ok(mut w) => std::pin::Pin::new(&mut *w).poll_shutdown(cx),
            Err(_) => {
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        }
    }
}
