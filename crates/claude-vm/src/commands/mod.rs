//! One module per command group; each turns parsed arguments into engine calls and renders
//! the result.

mod agent;
pub mod chat;
mod cp;
mod diff;
pub(crate) mod exec;
mod provider;
pub mod ssh;
mod workspace;

use std::process::ExitCode;

use anyhow::Result;
use claude_vm_engine::Engine;
use claude_vm_store::Home;

use crate::cli::{Cli, Command};

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAUDE_VM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn open_engine(cli: &Cli) -> Result<Engine> {
    let home = Home::from_env()?;
    Ok(Engine::open(home, cli.config.clone())?)
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Agent(cmd) => return agent::run(cmd),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "claude-vm", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    init_logging();
    let engine = open_engine(&cli)?;
    match &cli.command {
        Command::Provider(cmd) => provider::run(&engine, cmd),
        Command::Workspace(cmd) => workspace::run(&engine, cmd, cli.quiet),
        Command::Exec(args) => exec::run(&engine, args),
        Command::Chat(args) => chat::run(&engine, args, cli.quiet),
        Command::NewChat {
            workspace,
            agent,
            message,
            ask,
            json,
        } => chat::new_chat(
            &engine,
            workspace,
            agent.as_deref(),
            message.clone(),
            *ask,
            *json,
            cli.quiet,
        ),
        Command::Ssh(args) => ssh::run(&engine, args),
        Command::SshConfig {
            install,
            print,
            json,
        } => ssh::config(&engine, *install, *print, *json),
        Command::Cp { src, dest } => cp::run(&engine, src, dest, cli.quiet),
        Command::Diff {
            workspace,
            stat,
            json,
            color,
        } => diff::run(&engine, workspace, *stat, *json, *color),
        Command::Agent(_) | Command::Completions { .. } => unreachable!("handled above"),
    }
}

/// Print JSON to stdout.
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}
