//! `claude-vm`: the CLI, and (hidden) the in-workspace daemon. Thin glue: parse arguments,
//! open the engine, render results. The work happens in the library crates.

mod backend;
mod cli;
mod commands;
mod output;
mod remote;

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => report(&err),
    }
}

/// Parse the command line; when logged in to a server, `--help` says so.
fn parse() -> cli::Cli {
    use clap::{CommandFactory, FromArgMatches};
    let mut cmd = cli::Cli::command();
    let login = claude_vm_store::Home::from_env()
        .ok()
        .and_then(|h| remote::Login::load(&h).ok().flatten());
    if let Some(login) = login {
        let note = format!(
            "Logged in to {}: workspace and chat commands run there (`claude-vm logout` returns to local mode).",
            login.url
        );
        cmd = cmd
            .before_help(note.clone())
            .mut_subcommands(|s| s.before_help(note.clone()));
    }
    cli::Cli::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit())
}

/// Print an error chain and, when the engine knows one, a remedy. A closed pipe is not an
/// error (`claude-vm workspace list | head`).
fn report(err: &anyhow::Error) -> ExitCode {
    if let Some(io) = err.downcast_ref::<std::io::Error>()
        && io.kind() == std::io::ErrorKind::BrokenPipe
    {
        return ExitCode::SUCCESS;
    }
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(
        stderr,
        "{} {err:#}",
        output::paint("error:", output::Style::Error)
    );
    if let Some(remote) = err.downcast_ref::<remote::RemoteError>()
        && let Some(hint) = &remote.hint
    {
        let _ = writeln!(
            stderr,
            "{} {hint}",
            output::paint("hint:", output::Style::Hint)
        );
    }
    if let Some(engine) = err.downcast_ref::<claude_vm_engine::EngineError>() {
        if let Some(hint) = engine.hint() {
            let _ = writeln!(
                stderr,
                "{} {hint}",
                output::paint("hint:", output::Style::Hint)
            );
        }
        if matches!(engine, claude_vm_engine::EngineError::Interrupted) {
            return ExitCode::from(130);
        }
    }
    ExitCode::FAILURE
}
