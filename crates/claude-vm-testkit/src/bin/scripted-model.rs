//! `scripted-model --listen 127.0.0.1:0 --script FILE`
//!
//! Serves the Anthropic Messages and OpenAI Responses APIs from a script (see the
//! `claude_vm_testkit` crate docs for the format). The first line on stdout
//! is the base URL (`http://127.0.0.1:PORT`); one line per request goes to
//! stderr unless `--quiet`. Runs until SIGINT or SIGTERM.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use claude_vm_testkit::{Script, ScriptedModel};

#[derive(Parser, Debug)]
#[command(
    name = "scripted-model",
    about = "Scripted model server (Anthropic Messages, OpenAI Responses) for tests"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Script file (JSON). Without it every request is answered "ok".
    #[arg(long)]
    script: Option<PathBuf>,
    /// Do not log requests to stderr.
    #[arg(long)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let script = match &args.script {
        Some(p) => Script::from_file(p)?,
        None => Script::new(),
    };
    let server = ScriptedModel::bind(args.listen.as_str(), script)
        .with_context(|| format!("listening on {}", args.listen))?;
    server.set_logging(!args.quiet);
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", server.url())?;
        out.flush()?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    server.shutdown();
    Ok(())
}
