//! `login` and `logout`: point the CLI at a claude-vm server, or back at this machine.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use claude_vm_api::WhoAmI;
use claude_vm_store::Home;

use super::runtime;
use crate::output::{self, Style};
use crate::remote::{Login, Remote, normalize_url};

pub fn login(url: Option<&str>, token: Option<String>, status: bool) -> Result<ExitCode> {
    let home = Home::from_env()?;
    if status {
        return show_status(&home);
    }
    let url = normalize_url(url.unwrap_or_default())?;
    let token = match token.or_else(|| std::env::var("CLAUDE_VM_TOKEN").ok()) {
        Some(t) => t,
        None => read_token(&url)?,
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("no token given; pass --token, set CLAUDE_VM_TOKEN, or type it when asked");
    }
    let login = Login { url, token };
    let remote = Remote::new(&login)?;
    let who = runtime()?.block_on(remote.whoami())?;
    home.ensure()?;
    login
        .save(&home)
        .with_context(|| format!("cannot save {}", Login::path(&home).display()))?;
    eprintln!(
        "{} logged in to {}{}; workspace and chat commands now run there (`claude-vm logout` to go back to local mode)",
        output::paint("✓", Style::Good),
        login.url,
        describe(&who)
    );
    Ok(ExitCode::SUCCESS)
}

/// ` as token NAME (claude-vm VERSION)`.
fn describe(who: &WhoAmI) -> String {
    let name = who
        .token_name
        .as_deref()
        .map(|n| format!(" as token {n}"))
        .unwrap_or_default();
    format!("{name} (claude-vm {})", who.version)
}

/// Where the CLI points: the URL on stdout when logged in, details on stderr.
fn show_status(home: &Home) -> Result<ExitCode> {
    let Some(login) = Login::load(home)? else {
        eprintln!(
            "not logged in: commands work on this machine ({})",
            home.root().display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    println!("{}", login.url);
    let remote = Remote::new(&login)?;
    let who = runtime()?.block_on(remote.whoami())?;
    eprintln!(
        "logged in to {}{}; `claude-vm logout` goes back to local mode",
        login.url,
        describe(&who)
    );
    Ok(ExitCode::SUCCESS)
}

/// The token from the terminal without echo, or one line of stdin.
fn read_token(url: &str) -> Result<String> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    if !stdin.is_terminal() {
        stdin.lock().read_line(&mut line)?;
        return Ok(line);
    }
    eprint!("API token for {url} (`claude-vm token create` on the server): ");
    let _quiet = NoEcho::enable();
    stdin.lock().read_line(&mut line)?;
    eprintln!();
    Ok(line)
}

/// Turns terminal echo off until dropped.
pub(super) struct NoEcho(Option<nix::sys::termios::Termios>);

impl NoEcho {
    pub(super) fn enable() -> NoEcho {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else {
            return NoEcho(None);
        };
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
        NoEcho(Some(saved))
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

pub fn logout() -> Result<ExitCode> {
    let home = Home::from_env()?;
    let path = Login::path(&home);
    let url = Login::load(&home).ok().flatten().map(|l| l.url);
    match std::fs::remove_file(&path) {
        Ok(()) => eprintln!(
            "{} logged out{}; commands work on this machine again",
            output::paint("✓", Style::Good),
            url.map(|u| format!(" of {u}")).unwrap_or_default()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("not logged in; commands already work on this machine")
        }
        Err(e) => bail!("cannot remove {}: {e}", path.display()),
    }
    Ok(ExitCode::SUCCESS)
}
