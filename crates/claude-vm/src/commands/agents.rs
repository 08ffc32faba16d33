//! `claude-vm agents list|login|logout`: the agent kinds and the accounts they use.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Result, bail};
use claude_vm_core::agent::{self, AccountKind};
use claude_vm_engine::{AgentView, Engine};

use super::print_json;
use crate::cli::AgentsCommand;
use crate::output::{self, Style};

pub fn run(engine: &Engine, cmd: &AgentsCommand) -> Result<ExitCode> {
    match cmd {
        AgentsCommand::List { json } => {
            let views = engine.agents();
            if *json {
                print_json(&views)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = views.iter().map(row).collect();
            let mut out = std::io::stdout().lock();
            out.write_all(
                output::table(&["AGENT", "READY", "ACCOUNT", "INSTALL"], &rows).as_bytes(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        AgentsCommand::Login {
            kind,
            with_api_key,
            with_oauth_token,
            from_local,
            json,
        } => {
            let (account, secret, path) = if *with_api_key {
                (
                    AccountKind::ApiKey,
                    Some(read_secret(kind, "API key")?),
                    None,
                )
            } else if *with_oauth_token {
                (
                    AccountKind::OauthToken,
                    Some(read_secret(kind, "OAuth token")?),
                    None,
                )
            } else if let Some(file) = from_local {
                (AccountKind::LocalLogin, None, file.clone())
            } else {
                guess(kind)?
            };
            let view = engine.agents_login(kind, account, secret, path)?;
            if *json {
                print_json(&view)?;
            } else {
                eprintln!(
                    "{} {kind} conversations will use the account from {}{}",
                    output::paint("✓", Style::Good),
                    view.account_source.as_deref().unwrap_or("?"),
                    view.account
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                );
                eprintln!(
                    "  conversations already started take it with their next message (an idle agent restarts, resuming its session)"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AgentsCommand::Logout { kind } => {
            if engine.agents_logout(kind)? {
                eprintln!("forgot the {kind} account saved by `agents login`");
            } else {
                eprintln!("no {kind} account was saved by `agents login`");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn row(v: &AgentView) -> Vec<String> {
    let ready = if v.ready {
        output::paint_out("yes", Style::Good)
    } else {
        output::paint_out("no", Style::Error)
    };
    let account = match (&v.problem, &v.account_source) {
        (Some(p), _) => p.clone(),
        (None, Some(s)) => match &v.account {
            Some(m) => format!("{s} ({m})"),
            None => s.clone(),
        },
        (None, None) => "-".to_owned(),
    };
    vec![
        output::paint_out(&v.kind, Style::Bold),
        ready,
        account,
        v.install.clone(),
    ]
}

/// No flag: the agent's own login on this machine when there is one, else a key or token
/// (told apart by its prefix).
fn guess(kind: &str) -> Result<(AccountKind, Option<String>, Option<std::path::PathBuf>)> {
    let kinds = agent::account_kinds(kind);
    if kinds.contains(&AccountKind::LocalLogin)
        && let (Some(rel), Some(home)) = (agent::local_login_file(kind), std::env::var_os("HOME"))
        && std::path::Path::new(&home).join(rel).exists()
    {
        eprintln!("using your own {kind} login on this machine (~/{rel})");
        return Ok((AccountKind::LocalLogin, None, None));
    }
    if kinds.is_empty() {
        bail!(
            "{kind} takes no account claude-vm manages; give it its environment in agents.{kind}.env in config.yaml"
        );
    }
    if kind == "claude" && std::io::stdin().is_terminal() {
        // macOS keeps Claude Code's login in the Keychain, out of reach: a subscription
        // comes in as a long-lived token instead.
        eprintln!(
            "Paste an Anthropic API key, or use your Claude subscription: run `claude setup-token` in another terminal and paste the token it prints."
        );
    }
    let what = if kinds.contains(&AccountKind::OauthToken) {
        "API key or OAuth token (`claude setup-token`)"
    } else {
        "API key"
    };
    let secret = read_secret(kind, what)?;
    let account =
        if kinds.contains(&AccountKind::OauthToken) && secret.trim().starts_with("sk-ant-oat") {
            AccountKind::OauthToken
        } else {
            AccountKind::ApiKey
        };
    Ok((account, Some(secret), None))
}

/// A secret from the terminal without echo, or one line of stdin.
fn read_secret(kind: &str, what: &str) -> Result<String> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        eprint!("{kind} {what}: ");
        let _quiet = super::login::NoEcho::enable();
        stdin.lock().read_line(&mut line)?;
    } else {
        stdin.lock().read_line(&mut line)?;
    }
    let s = line.trim().to_owned();
    if s.is_empty() {
        bail!("no {what} given (pipe it in, or type it at the prompt)");
    }
    Ok(s)
}
