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
            super::runtime()?
                .block_on(server::serve(paths, server::stop_signal()))
                .context("daemon failed")?;
            Ok(ExitCode::SUCCESS)
        }
        AgentCommand::Connect => {
            let socket = PathBuf::from(claude_vm_protocol::SOCKET_PATH);
            super::runtime()?.block_on(claude_vm_daemon::bridge::connect(&socket))?;
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

fn log_to_file(path: &std::path::Path) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAUDE_VM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    let _ = match file {
        Ok(f) => builder.with_writer(std::sync::Mutex::new(f)).try_init(),
        Err(_) => builder.with_writer(std::io::stderr).try_init(),
    };
}
