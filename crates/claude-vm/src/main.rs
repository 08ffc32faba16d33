//! `claude-vm`: the CLI, and (hidden) the in-workspace daemon. Thin glue: parse arguments,
//! open the engine, render results. The work happens in the library crates.

mod cli;
mod commands;
mod output;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => report(&err),
    }
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
