//! `claude-vm ssh` (an SSH client in this process, over the link), `claude-vm ssh --stdio`
//! (OpenSSH's ProxyCommand) and `claude-vm ssh-config`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use claude_vm_engine::Engine;
use russh::ChannelMsg;
use russh::keys::PublicKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::exec::{RawMode, terminal_size};
use super::print_json;
use crate::cli::SshArgs;

pub fn run(engine: &Engine, args: &SshArgs) -> Result<ExitCode> {
    let rt = super::runtime()?;
    let code = if args.stdio {
        rt.block_on(stdio(engine, &args.workspace))?;
        0
    } else {
        rt.block_on(client(engine, args))?
    };
    // Do not wait for the blocking stdin reader.
    rt.shutdown_background();
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// ProxyCommand: stdin → the workspace's SSH server → stdout.
async fn stdio(engine: &Engine, host: &str) -> Result<()> {
    // A changed host key is left to OpenSSH, which refuses it with its own explanation.
    // The SSH connection is opened while the host key is pinned and the keys pushed: both
    // are done before a byte of OpenSSH's goes through, so its login finds the keys there.
    let target = host
        .strip_suffix(claude_vm_engine::ssh::HOST_SUFFIX)
        .unwrap_or(host);
    let (_, link) = engine.link_waking(target).await?;
    let (_, stream) = tokio::try_join!(
        async { anyhow::Ok(engine.ssh_link(target, false).await?) },
        async { anyhow::Ok(link.ssh_stream().await?) },
    )?;
    let (mut from_server, mut to_server) = tokio::io::split(stream);
    // OpenSSH gives its ProxyCommand pipes: moved without a helper thread.
    let (mut stdin, mut stdout) = claude_vm_daemon::bridge::stdio();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_server.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to_server.shutdown().await;
    });
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = from_server.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        stdout.write_all(&buf[..n]).await?;
        stdout.flush().await?;
    }
    up.abort();
    Ok(())
}

struct Client {
    pinned: PublicKey,
}

impl russh::client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.key_data() == self.pinned.key_data()
            }
            _ => false,
        })
    }
}

async fn client(engine: &Engine, args: &SshArgs) -> Result<i32> {
    let (w, link, host_key) = engine.ssh_link(&args.workspace, true).await?;
    // Attaching: the devcontainer.json's postAttachCommand first.
    engine
        .devcontainer_attach(&args.workspace, &crate::output::CliReporter::new(false))
        .await;
    let pinned = PublicKey::from_openssh(&host_key).context("invalid host key")?;
    let key = engine.ssh_client_key()?;
    let user = args
        .user
        .clone()
        .unwrap_or_else(|| engine.config().ssh.user.clone());
    let stream = link.ssh_stream().await?;
    let config = Arc::new(russh::client::Config {
        inactivity_timeout: None,
        keepalive_interval: Some(std::time::Duration::from_secs(30)),
        ..Default::default()
    });
    let mut session = russh::client::connect_stream(config, stream, Client { pinned })
        .await
        .with_context(|| format!("cannot open an SSH session to {}", w.name))?;
    let auth = session
        .authenticate_publickey(
            user.clone(),
            russh::keys::PrivateKeyWithHashAlg::new(Arc::new(key), None),
        )
        .await?;
    if !auth.success() {
        bail!(
            "workspace {} refused user {user:?} with claude-vm's key (users: agent, root)",
            w.name
        );
    }
    let channel = session.channel_open_session().await?;
    let command = args.command.join(" ");
    let interactive = std::io::stdin().is_terminal();
    let tty = args.tty || (command.is_empty() && interactive);
    if tty {
        let (rows, cols) = terminal_size().unwrap_or((24, 80));
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm-256color".into());
        channel
            .request_pty(true, &term, cols.into(), rows.into(), 0, 0, &[])
            .await?;
    }
    for var in ["LANG", "LC_ALL", "LC_CTYPE"] {
        if let Ok(v) = std::env::var(var) {
            let _ = channel.set_env(false, var, v).await;
        }
    }
    if command.is_empty() {
        channel.request_shell(true).await?;
    } else {
        channel.exec(true, command.as_bytes()).await?;
    }
    let (mut read, write) = channel.split();
    let _raw = tty.then(RawMode::enable);

    // stdin and window changes, from their own task.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(16);
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None).await;
                    break;
                }
                Ok(n) => {
                    if tx.send(Some(buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut stdin_open = true;
    let mut code: Option<i32> = None;
    let mut stdout = std::io::stdout().lock();
    loop {
        tokio::select! {
            msg = read.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    stdout.write_all(&data)?;
                    stdout.flush()?;
                }
                Some(ChannelMsg::ExtendedData { data, .. }) => {
                    let mut err = std::io::stderr().lock();
                    err.write_all(&data)?;
                    err.flush()?;
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => code = Some(exit_status as i32),
                Some(ChannelMsg::ExitSignal { .. }) => code = Some(255),
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            input = rx.recv(), if stdin_open => match input {
                Some(Some(data)) => {
                    if write.data(&data[..]).await.is_err() {
                        stdin_open = false;
                    }
                }
                _ => {
                    stdin_open = false;
                    let _ = write.eof().await;
                }
            },
            _ = winch.recv() => {
                if tty && let Some((rows, cols)) = terminal_size() {
                    let _ = write.window_change(cols.into(), rows.into(), 0, 0).await;
                }
            }
        }
    }
    drop(_raw);
    let _ = session
        .disconnect(russh::Disconnect::ByApplication, "", "en")
        .await;
    match code {
        Some(c) => Ok(c),
        None => bail!("the SSH session to {} ended without an exit status", w.name),
    }
}

/// After `workspace up`, for users who ran `ssh-config` once: keep the file pointing at
/// this binary, pin the workspace's host key and push the accepted keys.
pub async fn refresh(engine: &Engine, id: &str) -> Result<()> {
    engine.write_ssh_config(&current_binary()?)?;
    engine.ssh_link(id, true).await?;
    Ok(())
}

fn current_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this claude-vm binary")?;
    Ok(exe.canonicalize().unwrap_or(exe))
}

#[derive(serde::Serialize)]
struct ConfigReport {
    ssh_config: PathBuf,
    known_hosts: PathBuf,
    identity_file: PathBuf,
    /// Workspaces whose host keys are pinned now.
    pinned: Vec<String>,
    /// `~/.ssh/config`, when --install was given.
    user_config: Option<PathBuf>,
    /// Whether --install added the Include line (false: it was there already).
    include_added: bool,
    /// Running workspaces that could not be reached, with the reason.
    warnings: Vec<String>,
}

pub fn config(engine: &Engine, install: bool, print: bool, json: bool) -> Result<ExitCode> {
    let rt = super::runtime()?;
    let report = rt.block_on(async {
        let path = engine.write_ssh_config(&current_binary()?)?;
        let mut pinned = Vec::new();
        let mut warnings = Vec::new();
        let (views, _) = engine.list().await?;
        for v in views
            .iter()
            .filter(|v| v.status == claude_vm_core::Status::Running)
        {
            match engine.ssh_link(&v.id, true).await {
                Ok(_) => pinned.push(v.name.clone()),
                Err(e) => warnings.push(format!("{}: {e}", v.name)),
            }
        }
        let (user_config, include_added) = if install {
            let home =
                std::env::var_os("HOME").context("HOME is not set: cannot find ~/.ssh/config")?;
            let user_config = PathBuf::from(home).join(".ssh").join("config");
            let added = engine.install_ssh_include(&user_config)?;
            (Some(user_config), added)
        } else {
            (None, false)
        };
        anyhow::Ok(ConfigReport {
            ssh_config: path,
            known_hosts: engine.known_hosts_path(),
            identity_file: engine.ssh_key_path(),
            pinned,
            user_config,
            include_added,
            warnings,
        })
    })?;
    if json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    if print {
        print!("{}", std::fs::read_to_string(&report.ssh_config)?);
    }
    for w in &report.warnings {
        eprintln!(
            "{} {w}",
            crate::output::paint("warning:", crate::output::Style::Warn)
        );
    }
    eprintln!("wrote {}", report.ssh_config.display());
    match &report.user_config {
        Some(p) if report.include_added => eprintln!("added its Include line to {}", p.display()),
        Some(p) => eprintln!("{} already includes it", p.display()),
        None => eprintln!(
            "{} add `{}` at the top of ~/.ssh/config (or run `claude-vm ssh-config --install`), then `ssh <workspace>.claude-vm`",
            crate::output::paint("hint:", crate::output::Style::Hint),
            claude_vm_engine::ssh::include_line(&report.ssh_config)
        ),
    }
    Ok(ExitCode::SUCCESS)
}
