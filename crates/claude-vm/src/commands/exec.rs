//! `claude-vm exec`: run a command in a workspace over the link, streaming stdin, stdout and
//! stderr, forwarding signals and terminal size, and returning the command's exit code.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use crate::backend::{Backend, ws_path};
use crate::remote::Remote;
use anyhow::{Result, bail};
use claude_vm_api::{Exec, ExecLine};
use claude_vm_engine::{Engine, ExecEvent};
use claude_vm_protocol::api::ExecRequest;
use tokio::io::AsyncReadExt;

use crate::cli::ExecArgs;

/// Puts the local terminal in raw mode for `-t` and restores it on drop.
pub(crate) struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    pub(crate) fn enable() -> RawMode {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawMode(None);
        }
        let Ok(saved) = tcgetattr(stdin.as_fd()) else {
            return RawMode(None);
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

nix::ioctl_read_bad!(get_winsize, nix::libc::TIOCGWINSZ, nix::libc::winsize);

/// The local terminal's size (rows, cols), if there is one.
pub(crate) fn terminal_size() -> Option<(u16, u16)> {
    use std::os::fd::AsRawFd;
    let mut ws = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    for fd in [std::io::stdout().as_raw_fd(), std::io::stdin().as_raw_fd()] {
        // SAFETY: TIOCGWINSZ writes a winsize into the pointer we pass.
        if unsafe { get_winsize(fd, &mut ws) }.is_ok() && ws.ws_row > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

pub fn run(backend: &Backend, args: &ExecArgs) -> Result<ExitCode> {
    let rt = super::runtime()?;
    let code = match backend {
        Backend::Local(engine) => rt.block_on(exec(engine, args))?,
        Backend::Remote(_) if args.tty => return Err(backend.unsupported("exec -t")),
        Backend::Remote(_) if args.detach => return Err(backend.unsupported("exec -d")),
        Backend::Remote(remote) => rt.block_on(exec_remote(remote, args))?,
    };
    // Do not wait for the blocking stdin reader.
    rt.shutdown_background();
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

fn check_env(args: &ExecArgs) -> Result<()> {
    for e in &args.env {
        if !e.contains('=') || e.starts_with('=') {
            bail!("invalid --env {e:?}: expected NAME=VALUE");
        }
    }
    Ok(())
}

/// Docker's convention for a command that could not be run: 127 not found, 126 otherwise.
fn cannot_run(args: &ExecArgs, msg: &str) -> i32 {
    eprintln!("error: cannot run {}: {msg}", args.command[0]);
    if msg.contains("No such file") || msg.contains("not found") {
        127
    } else {
        126
    }
}

/// Largest standard input sent to a command on a server (it goes in one request).
const MAX_REMOTE_STDIN: usize = 3 * 1024 * 1024;

/// `exec` on a server: standard input is read to its end and sent with the request, the
/// output comes back as JSON lines.
async fn exec_remote(remote: &Remote, args: &ExecArgs) -> Result<i32> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    check_env(args)?;
    let stdin = if args.interactive || !std::io::stdin().is_terminal() {
        let mut buf = Vec::new();
        tokio::io::stdin().read_to_end(&mut buf).await?;
        if buf.len() > MAX_REMOTE_STDIN {
            bail!(
                "standard input is larger than 3 MiB, too much to send to a server in one go; copy the data into the workspace first"
            );
        }
        Some(b64.encode(&buf))
    } else {
        None
    };
    let body = Exec {
        command: args.command.clone(),
        env: args.env.clone(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        stdin_base64: stdin,
        ..Exec::default()
    };
    let path = ws_path(&args.workspace, "/exec?encoding=base64");
    let mut lines = remote.post_stream(&path, &body).await?;
    while let Some(line) = lines.next().await? {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let line = ExecLine::parse(&line)
            .map_err(|e| anyhow::anyhow!("unexpected output from {}: {e}", remote.url()))?;
        match line {
            ExecLine::Stdout { data } => {
                let mut out = std::io::stdout().lock();
                out.write_all(&b64.decode(data)?)?;
                out.flush()?;
            }
            ExecLine::Stderr { data } => {
                let mut err = std::io::stderr().lock();
                err.write_all(&b64.decode(data)?)?;
                err.flush()?;
            }
            ExecLine::Exit { code } => return Ok(code),
            ExecLine::Error { message } => return Ok(cannot_run(args, &message)),
            ExecLine::Started { .. } | ExecLine::Keepalive | ExecLine::Unknown => {}
        }
    }
    bail!(
        "the command ended without an exit status (the connection to {} closed)",
        remote.url()
    )
}

async fn exec(engine: &Engine, args: &ExecArgs) -> Result<i32> {
    check_env(args)?;
    let (_, link) = engine.link_waking(&args.workspace).await?;
    if args.tty {
        // Attaching: the devcontainer.json's postAttachCommand first.
        engine
            .devcontainer_attach(&args.workspace, &crate::output::CliReporter::new(false))
            .await;
    }
    let size = if args.tty { terminal_size() } else { None };
    let req = ExecRequest {
        cmd: args.command.clone(),
        env: args.env.clone(),
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        tty: args.tty,
        rows: size.map(|s| s.0),
        cols: size.map(|s| s.1),
        detach: args.detach,
    };
    let mut session = link.exec(&req).await?;
    let input = session.input();

    if args.detach {
        let _ = input.close_stdin().await;
        return match session.next().await? {
            Some(ExecEvent::Started(pid)) => {
                eprintln!(
                    "started {} (pid {pid}); it keeps running in the workspace",
                    args.command.join(" ")
                );
                Ok(0)
            }
            Some(ExecEvent::Error(msg)) => bail!("cannot run {}: {msg}", args.command[0]),
            other => bail!("unexpected answer from the workspace: {other:?}"),
        };
    }

    let _raw = if args.tty {
        Some(RawMode::enable())
    } else {
        None
    };
    let forward_stdin = args.tty || args.interactive || !std::io::stdin().is_terminal();
    {
        let input = input.clone();
        tokio::spawn(async move {
            if !forward_stdin {
                let _ = input.close_stdin().await;
                return;
            }
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = input.close_stdin().await;
                        break;
                    }
                    Ok(n) => {
                        if input.stdin(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    // Signals: without a terminal, Ctrl-C and friends go to the remote command; with one,
    // the terminal itself sends them as bytes. Terminal resizes follow the window.
    {
        use tokio::signal::unix::{SignalKind, signal};
        let input = input.clone();
        let tty = args.tty;
        tokio::spawn(async move {
            let (Ok(mut int), Ok(mut term), Ok(mut hup), Ok(mut winch)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
                signal(SignalKind::window_change()),
            ) else {
                return;
            };
            loop {
                let sig = tokio::select! {
                    _ = int.recv() => 2u8,
                    _ = term.recv() => 15,
                    _ = hup.recv() => 1,
                    _ = winch.recv() => {
                        if tty && let Some((r, c)) = terminal_size() {
                            let _ = input.resize(r, c).await;
                        }
                        continue;
                    }
                };
                if input.signal(sig).await.is_err() {
                    break;
                }
            }
        });
    }
    let mut stdout = std::io::stdout().lock();
    loop {
        match session.next().await? {
            Some(ExecEvent::Started(_)) => {}
            Some(ExecEvent::Stdout(b)) => {
                stdout.write_all(&b)?;
                stdout.flush()?;
            }
            Some(ExecEvent::Stderr(b)) => {
                let mut err = std::io::stderr().lock();
                err.write_all(&b)?;
                err.flush()?;
            }
            Some(ExecEvent::Exit(code)) => return Ok(code),
            Some(ExecEvent::Error(msg)) => {
                drop(_raw);
                return Ok(cannot_run(args, &msg));
            }
            None => bail!("the command ended without an exit status"),
        }
    }
}
