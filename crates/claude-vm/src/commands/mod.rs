//! One module per command group; each turns parsed arguments into engine calls and renders
//! the result.

mod agent;
mod agents;
mod backup;
pub mod chat;
mod cp;
mod devcontainer;
mod diff;
mod doctor;
pub(crate) mod exec;
mod login;
mod notify;
mod provider;
mod server;
pub mod ssh;
mod workspace;

use std::process::ExitCode;

use anyhow::Result;
use claude_vm_engine::Engine;
use claude_vm_store::Home;

use crate::backend::Backend;
use crate::cli::{Cli, Command};

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLAUDE_VM_LOG")
        // The storage layer logs every failed request as a warning; claude-vm reports the
        // failure itself, once, with what to do.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(
                "warn,opendal=error,rustic_core=error,rustic_backend=error",
            )
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The async runtime of every command: one worker per CPU (at least two, so one slow task
/// never holds up the rest); blocking calls go to tokio's blocking pool, never to a worker.
fn runtime() -> Result<tokio::runtime::Runtime> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
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
    match &cli.command {
        Command::Login { url, token, status } => {
            return login::login(url.as_deref(), token.clone(), *status);
        }
        Command::Logout => return login::logout(),
        // A server always serves this machine's home.
        Command::Server {
            action: None,
            listen,
            public_url,
        } => {
            return server::serve(open_engine(&cli)?, listen, public_url);
        }
        Command::Server {
            action: Some(action),
            ..
        } => return server::manage(action),
        _ => {}
    }
    // Logged in to a server: workspace and chat commands go there, the rest refuse.
    let backend = Backend::open(cli.config.clone())?;
    if cli.no_start && matches!(backend, Backend::Remote(_)) {
        anyhow::bail!(
            "--no-start does not work against a server yet: the server starts a stopped workspace it is asked to use; run `claude-vm logout` to work locally"
        );
    }
    if let Backend::Local(engine) = &backend {
        engine.set_wake(if cli.no_start {
            claude_vm_engine::Wake::Refuse
        } else {
            claude_vm_engine::Wake::Start(std::sync::Arc::new(crate::output::CliReporter::new(
                cli.quiet,
            )))
        });
    }
    match &cli.command {
        Command::Provider(cmd) => provider::run(backend.engine("provider")?, cmd),
        Command::Workspace(cmd) => workspace::run(&backend, cmd, cli.quiet),
        Command::Exec(args) => exec::run(&backend, args),
        Command::Chat(args) => chat::run(&backend, args, cli.quiet),
        Command::NewChat {
            workspace,
            agent,
            message,
            ask,
            wait,
            json,
        } => chat::new_chat(
            &backend,
            workspace,
            agent.as_deref(),
            message.clone(),
            chat::NewChatOptions {
                ask: *ask,
                wait: *wait,
                json: *json,
            },
            cli.quiet,
        ),
        Command::Ssh(args) => ssh::run(backend.engine("ssh")?, args),
        Command::SshConfig {
            install,
            print,
            json,
        } => ssh::config(backend.engine("ssh-config")?, *install, *print, *json),
        Command::Cp { src, dest } => cp::run(backend.engine("cp")?, src, dest, cli.quiet),
        Command::Diff {
            workspace,
            stat,
            json,
            color,
        } => diff::run(&backend, workspace, *stat, *json, *color),
        Command::Web {
            listen,
            no_open,
            json,
        } => server::web(backend.engine("web")?, listen, *no_open, *json),
        Command::Token(cmd) => server::token(backend.engine("token")?, cmd),
        Command::Backup(cmd) => backup::run(&backend, cmd, cli.quiet),
        Command::Notify(cmd) => notify::run(backend.engine("notify")?, cmd),
        Command::Agents(cmd) => agents::run(backend.engine("agents")?, cmd),
        Command::Doctor { json } => doctor::run(backend.engine("doctor")?, *json),
        Command::Devcontainer(cmd) => devcontainer::run(cmd),
        Command::Agent(_)
        | Command::Completions { .. }
        | Command::Server { .. }
        | Command::Login { .. }
        | Command::Logout => unreachable!("handled above"),
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
