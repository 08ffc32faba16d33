//! `claude-vm agent ...`: the in-workspace entry points (hidden from help).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use claude_vm_daemon::{client, init, server};

use crate::cli::AgentCommand;

pub fn run(cmd: &AgentCommand) -> Result<ExitCode> {
    match cmd {
        AgentCommand::Init { .. } => Ok(init::run(&["agent".to_owned(), "serve".to_owned()])),
        AgentCommand::Serve => {
            let paths = server::Paths::default();
            server::prepare_dirs(&paths).context("preparing the state directory")?;
            log_to_file(&paths.log_file());
            let exit = super::runtime()?
                .block_on(server::serve(paths, server::stop_signal()))
                .context("daemon failed")?;
            Ok(match exit {
                server::Exit::Asked => ExitCode::SUCCESS,
                server::Exit::Idle => ExitCode::from(claude_vm_protocol::IDLE_STOP_EXIT),
            })
        }
        AgentCommand::SftpServer => {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async {
                    let (input, output) = claude_vm_daemon::bridge::stdio();
                    claude_vm_sshd::sftp::serve_io(input, output).await
                });
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::BackupScan {
            root,
            exclude,
            git_ignore,
        } => {
            let opts = claude_vm_backup::scan::ScanOptions {
                git_ignore: *git_ignore,
                exclude: exclude.clone(),
                with_root: false,
                from_cwd: std::env::set_current_dir(root).is_ok(),
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            claude_vm_backup::scan::scan(root, &opts, &mut out)
                .with_context(|| format!("scanning {}", root.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::ChatTty { conversation } => {
            super::runtime()?.block_on(chat_tty(conversation))?;
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::Connect => {
            let socket = PathBuf::from(claude_vm_protocol::SOCKET_PATH);
            // Long enough for PID 1 to restart a daemon that just died (its backoff starts at
            // 250 ms and stays short while restarts are rare).
            super::runtime()?.block_on(claude_vm_daemon::bridge::connect(
                &socket,
                Duration::from_secs(10),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::MachineWatch {
            machine,
            idle,
            every,
            socket,
            script,
        } => {
            let options = claude_vm_provider::devpod::WatchOptions {
                machine: machine.clone(),
                idle: Duration::from_secs(*idle),
                every: Duration::from_secs((*every).max(1)),
                socket: socket.clone(),
                script: script.clone(),
            };
            super::runtime()?.block_on(claude_vm_provider::devpod::watch_machine(options))?;
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::DialDocker { socket } => {
            // The host's Docker socket: missing is a configuration error, said at once.
            super::runtime()?
                .block_on(claude_vm_daemon::bridge::connect(socket, Duration::ZERO))?;
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::Health { wait } => {
            let socket = PathBuf::from(claude_vm_protocol::SOCKET_PATH);
            let health = super::runtime()?
                .block_on(client::health_wait(&socket, Duration::from_secs(*wait)))?;
            println!("{}", serde_json::to_string(&health)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The daemon's log: opened without following symlinks inside the trusted state folder,
/// and one line per record whatever the text (names an agent chose included).
fn log_to_file(path: &std::path::Path) {
    let file = claude_vm_daemon::state::open_append_private(path);
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAUDE_VM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let _ = match file {
        Ok(f) => builder
            .with_writer(std::sync::Mutex::new(claude_vm_daemon::state::OneLine(f)))
            .try_init(),
        Err(e) => {
            eprintln!("claude-vm daemon: cannot open {}: {e}", path.display());
            builder.with_writer(std::io::stderr).try_init()
        }
    };
}

/// The conversation's tmux view: its transcript as it grows, and an input line.
async fn chat_tty(id: &str) -> Result<()> {
    use claude_vm_protocol::api::Event;
    use http_body_util::BodyExt;
    use hyper::Method;
    use tokio::io::AsyncBufReadExt;

    let socket = PathBuf::from(claude_vm_protocol::SOCKET_PATH);
    println!(
        "claude-vm conversation {id}: type a message and Enter; /interrupt; detach with Ctrl-b d"
    );
    let follow = {
        let socket = socket.clone();
        // In the background: the conversation's tmux window is always there, so it must
        // not keep the workspace from stopping when idle.
        let path = format!("/v1/conversations/{id}/events?after=0&follow=true&background=true");
        tokio::spawn(async move {
            loop {
                if let Ok(res) = client::request(&socket, Method::GET, &path, None).await {
                    let mut body = res.into_body();
                    let mut buf = Vec::new();
                    while let Some(Ok(frame)) = body.frame().await {
                        if let Ok(data) = frame.into_data() {
                            buf.extend_from_slice(&data);
                            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                                let line: Vec<u8> = buf.drain(..=pos).collect();
                                if let Ok(e) = serde_json::from_slice::<Event>(&line)
                                    && let Some(text) = super::chat::render(&e)
                                {
                                    println!("{text}");
                                }
                            }
                        }
                    }
                }
                // The daemon restarted: follow again (from the start; the screen is redrawn).
                tokio::time::sleep(Duration::from_secs(1)).await;
                print!("\x1b[2J\x1b[H");
            }
        })
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let result = if line == "/interrupt" {
            client::request(
                &socket,
                Method::POST,
                &format!("/v1/conversations/{id}/interrupt"),
                None,
            )
            .await
            .map(|_| ())
        } else {
            let text = line
                .strip_prefix('/')
                .filter(|t| t.starts_with('/'))
                .unwrap_or(line);
            let body = serde_json::to_vec(&serde_json::json!({ "text": text }))?;
            client::request(
                &socket,
                Method::POST,
                &format!("/v1/conversations/{id}/messages"),
                Some(body),
            )
            .await
            .map(|_| ())
        };
        if let Err(e) = result {
            eprintln!("error: {e}");
        }
    }
    follow.abort();
    Ok(())
}
