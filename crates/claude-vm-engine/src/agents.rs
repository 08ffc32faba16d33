//! Agents from the control side: putting an agent kind's program in a workspace, and
//! finding the account it uses.
//!
//! A program comes, in this order, from `agents.<kind>.binary` (copied in), the workspace
//! itself (its image, or an earlier install in the agent's home, which is on the volume),
//! the same program on this machine's `PATH` when it is a Linux executable for the
//! workspace's architecture, or an install: `agents.<kind>.install` (as root) or the
//! vendor's documented installer (as the agent user, bounded by `install_timeout`).
//!
//! An account comes, in this order, from `agents.<kind>.env` in config.yaml, what
//! `claude-vm agents login` saved, the environment (`ANTHROPIC_API_KEY`, ...), or the
//! agent's own login on this machine (`~/.claude/.credentials.json`, `~/.codex/auth.json`).
//! It reaches the agent as the environment of its conversation, or (a Codex ChatGPT login)
//! as the agent's own login file in its home.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use claude_vm_core::agent::{self, AccountKind, BinaryKind, LocalLogin};
use claude_vm_core::config::AgentSettings;
use claude_vm_protocol::AGENT_HOME;
use claude_vm_provider::{ExecSpec, Provider};
use claude_vm_store::{SavedAccount, WorkspaceRecord};
use serde::Serialize;
use tokio::io::AsyncBufReadExt;

use crate::pack::{self, Extra, ExtraContent};
use crate::{Engine, EngineError, Reporter, Result};

/// How people name an agent kind's account.
fn account_name(kind: &str) -> &str {
    match kind {
        "claude" => "Claude",
        "codex" => "OpenAI (Codex)",
        "gemini" => "Gemini",
        "qwen" => "Qwen",
        "goose" => "Goose model provider",
        other => other,
    }
}

/// An account found for an agent kind, ready to hand to its conversations.
#[derive(Clone)]
pub(crate) struct Account {
    /// Where it came from, for `agents list` ("environment (ANTHROPIC_API_KEY)").
    pub source: String,
    pub account: Option<AccountKind>,
    /// The secret, masked.
    pub masked: Option<String>,
    /// Environment the agent gets.
    pub env: BTreeMap<String, String>,
    /// A login file written in the agent's home (relative path, bytes).
    pub file: Option<(&'static str, Vec<u8>)>,
}

/// What a conversation is given from an account (its environment and login file), as a
/// digest: the index keeps this, never the secret, to tell when a conversation's account
/// is out of date.
pub(crate) fn fingerprint(env: &BTreeMap<String, String>, account: &Account) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in env {
        for part in [k.as_bytes(), v.as_bytes()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    if let Some((rel, bytes)) = &account.file {
        h.update(b"file");
        for part in [rel.as_bytes(), bytes.as_slice()] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
    }
    crate::hex(&h.finalize())
}

pub(crate) enum AccountState {
    Ready(Account),
    /// The kind takes no account claude-vm knows of (`acp`: its `env` says).
    NotNeeded,
    /// None found: what is missing, and what to do.
    Missing {
        what: String,
        remedy: String,
    },
    /// One was found and cannot be used; why, and what to do.
    Broken(String),
}

/// `sk-ant-…4242`: enough to recognise a secret, never enough to use it.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 20 {
        return "********".to_owned();
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

/// Where to look for an account, so discovery can be tested without the real environment.
pub(crate) struct Places<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The user's home (for the agents' own login files).
    pub user_home: Option<PathBuf>,
    pub now_ms: i64,
}

impl Places<'_> {
    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.trim().is_empty())
    }
}

/// Find the account `kind` uses (see the module's documentation for the order).
pub(crate) fn discover(
    kind: &str,
    settings: &AgentSettings,
    saved: std::io::Result<Option<SavedAccount>>,
    places: &Places<'_>,
) -> AccountState {
    let kinds = agent::account_kinds(kind);
    if kinds.is_empty() {
        return AccountState::NotNeeded;
    }
    let vars: Vec<&str> = kinds
        .iter()
        .flat_map(|k| agent::account_env(kind, *k))
        .copied()
        .collect();
    if let Some(var) = vars.iter().find(|v| settings.env.contains_key(**v)) {
        return AccountState::Ready(Account {
            source: format!("config.yaml (agents.{kind}.env.{var})"),
            account: None,
            masked: settings.env.get(*var).map(|s| mask(s)),
            env: BTreeMap::new(),
            file: None,
        });
    }
    match saved {
        Err(e) => return AccountState::Broken(e.to_string()),
        Ok(Some(s)) => {
            let source = "saved by `claude-vm agents login`".to_owned();
            match (s.account, s.secret, s.path) {
                (AccountKind::LocalLogin, _, Some(path)) => {
                    return local_login(kind, &path, places, format!("{source} from"));
                }
                (k, Some(secret), _) if k != AccountKind::LocalLogin => {
                    let Some(var) = agent::account_env(kind, k).first() else {
                        return AccountState::Broken(format!(
                            "the saved {kind} account is of a kind {kind} cannot use; run `claude-vm agents login {kind}` again"
                        ));
                    };
                    return AccountState::Ready(Account {
                        source,
                        account: Some(k),
                        masked: Some(mask(&secret)),
                        env: BTreeMap::from([((*var).to_owned(), secret)]),
                        file: None,
                    });
                }
                _ => {
                    return AccountState::Broken(format!(
                        "the saved {kind} account is incomplete; run `claude-vm agents login {kind}` again"
                    ));
                }
            }
        }
        Ok(None) => {}
    }
    for k in kinds {
        for var in agent::account_env(kind, *k) {
            if let Some(value) = places.var(var) {
                let mut env = BTreeMap::from([((*var).to_owned(), value.clone())]);
                for c in agent::companion_env(kind) {
                    if let Some(v) = places.var(c) {
                        env.insert((*c).to_owned(), v);
                    }
                }
                return AccountState::Ready(Account {
                    source: format!("environment ({var})"),
                    account: Some(*k),
                    masked: Some(mask(&value)),
                    env,
                    file: None,
                });
            }
        }
    }
    if let (Some(rel), Some(home)) = (agent::local_login_file(kind), &places.user_home) {
        let path = home.join(rel);
        if path.exists() {
            return local_login(kind, &path, places, String::new());
        }
    }
    let vars: Vec<String> = kinds
        .iter()
        .filter_map(|k| agent::account_env(kind, *k).first())
        .map(|v| (*v).to_owned())
        .collect();
    AccountState::Missing {
        what: format!("no {} account", account_name(kind)),
        remedy: format!(
            "run `claude-vm agents login {kind}`{}",
            if vars.is_empty() {
                String::new()
            } else {
                format!(" (or set {})", vars.join(" or "))
            }
        ),
    }
}

/// How `kind`'s program reaches a workspace, or what is wrong with the configuration and
/// what to do about it.
pub(crate) fn install_route(
    kind: &str,
    settings: &AgentSettings,
) -> std::result::Result<String, (String, String)> {
    if let Some(b) = &settings.binary {
        return if Path::new(b).is_file() {
            Ok(format!("copies {b}"))
        } else {
            Err((
                format!("agents.{kind}.binary {b} does not exist"),
                format!("fix agents.{kind}.binary in config.yaml"),
            ))
        };
    }
    if settings.install.is_some() {
        Ok(format!("installed by agents.{kind}.install"))
    } else if let Some(i) = agent::default_install(kind, settings.installer_url.as_deref()) {
        Ok(format!(
            "the workspace's own, this machine's, or installed by {}",
            i.what
        ))
    } else if settings.command.is_some() {
        Ok("its command must be in the workspace image".to_owned())
    } else {
        Err((
            format!("{kind} has no default installer and nothing says where it is"),
            format!("set agents.{kind}.command (and .install or .binary) in config.yaml"),
        ))
    }
}

/// An agent kind claude-vm knows, or the error naming the ones it does.
pub(crate) fn known_kind(kind: &str) -> Result<()> {
    if claude_vm_core::config::AGENT_KINDS.contains(&kind) {
        Ok(())
    } else {
        Err(EngineError::InvalidInput(format!(
            "unknown agent {kind:?}; known agents: {}",
            claude_vm_core::config::AGENT_KINDS.join(", ")
        )))
    }
}

/// The agent's own login file at `path`.
fn local_login(kind: &str, path: &Path, places: &Places<'_>, from: String) -> AccountState {
    let shown = shown_path(path, places.user_home.as_deref());
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return AccountState::Broken(format!(
                "cannot read {shown}: {e}; run `claude-vm agents login {kind}` again"
            ));
        }
    };
    let source = if from.is_empty() {
        shown.clone()
    } else {
        format!("{from} {shown}")
    };
    match agent::read_local_login(kind, &text, places.now_ms) {
        Ok(LocalLogin::Env(env)) => AccountState::Ready(Account {
            source,
            account: Some(AccountKind::LocalLogin),
            masked: env.values().next().map(|v| mask(v)),
            env,
            file: None,
        }),
        Ok(LocalLogin::File(rel, bytes)) => AccountState::Ready(Account {
            source,
            account: Some(AccountKind::LocalLogin),
            masked: None,
            env: BTreeMap::new(),
            file: Some((rel, bytes)),
        }),
        Err(why) => {
            AccountState::Broken(format!("the {kind} login in {shown} cannot be used: {why}"))
        }
    }
}

fn shown_path(path: &Path, home: Option<&Path>) -> String {
    match home.and_then(|h| path.strip_prefix(h).ok()) {
        Some(rel) => format!("~/{}", rel.display()),
        None => path.display().to_string(),
    }
}

/// One agent kind as `claude-vm agents list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub kind: String,
    pub enabled: bool,
    /// Whether a conversation can start: an account is found (or none is needed).
    pub ready: bool,
    /// Where its account comes from.
    pub account_source: Option<String>,
    pub account_kind: Option<AccountKind>,
    /// The secret, masked.
    pub account: Option<String>,
    /// What is wrong or missing, and what to do.
    pub problem: Option<String>,
    /// How its program reaches a workspace.
    pub install: String,
}

/// The result of provisioning: the program to run and its version.
pub(crate) struct Provisioned {
    pub program: String,
    pub version: Option<String>,
}

impl Engine {
    pub(crate) fn places(&self) -> Places<'static> {
        Places {
            env: &|name| std::env::var(name).ok(),
            user_home: std::env::var_os("HOME").map(PathBuf::from),
            now_ms: jiff::Timestamp::now().as_millisecond(),
        }
    }

    /// The account `kind` would use now (files read off the async worker).
    pub(crate) fn account(&self, kind: &str) -> AccountState {
        let settings = self.config.agents.settings(kind);
        crate::off_worker(|| {
            discover(
                kind,
                &settings,
                self.home.load_account(kind),
                &self.places(),
            )
        })
    }

    /// `claude-vm agents list`.
    pub fn agents(&self) -> Vec<AgentView> {
        claude_vm_core::config::AGENT_KINDS
            .iter()
            .map(|kind| self.agent_view(kind))
            .collect()
    }

    /// One agent kind, as `agents list` shows it.
    fn agent_view(&self, kind: &str) -> AgentView {
        let enabled = self.config.agents.enabled.iter().any(|k| k == kind);
        let settings = self.config.agents.settings(kind);
        let mut view = AgentView {
            kind: kind.to_owned(),
            enabled,
            ready: false,
            account_source: None,
            account_kind: None,
            account: None,
            problem: None,
            install: install_route(kind, &settings).unwrap_or_else(|(what, _)| what),
        };
        match self.account(kind) {
            AccountState::Ready(a) => {
                view.ready = true;
                view.account_source = Some(a.source);
                view.account_kind = a.account;
                view.account = a.masked;
            }
            AccountState::NotNeeded => {
                view.ready = true;
                view.account_source = Some(format!("none needed (agents.{kind}.env)"));
            }
            AccountState::Missing { what, remedy } => {
                view.problem = Some(format!("{what}: {remedy}"))
            }
            AccountState::Broken(m) => view.problem = Some(m),
        }
        if !enabled {
            view.ready = false;
            view.problem = Some("not in agents.enabled in config.yaml".to_owned());
        }
        view
    }

    /// `claude-vm agents login KIND`: save an API key or token, or the path of the agent's
    /// own login file (checked before it is saved).
    pub fn agents_login(
        &self,
        kind: &str,
        account: AccountKind,
        secret: Option<String>,
        path: Option<PathBuf>,
    ) -> Result<AgentView> {
        known_kind(kind)?;
        if !agent::account_kinds(kind).contains(&account) {
            let can: Vec<String> = agent::account_kinds(kind)
                .iter()
                .filter_map(|k| serde_json::to_value(k).ok())
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            return Err(EngineError::InvalidInput(if can.is_empty() {
                format!(
                    "{kind} takes no account claude-vm manages; give it its environment in agents.{kind}.env"
                )
            } else {
                format!(
                    "{kind} cannot use that kind of account; it takes: {}",
                    can.join(", ")
                )
            }));
        }
        let places = self.places();
        let saved = match account {
            AccountKind::LocalLogin => {
                let path = match path {
                    Some(p) => p,
                    None => {
                        let rel = agent::local_login_file(kind).unwrap_or_default();
                        places
                            .user_home
                            .clone()
                            .map(|h| h.join(rel))
                            .ok_or_else(|| {
                                EngineError::InvalidInput("HOME is not set".to_owned())
                            })?
                    }
                };
                let path = std::fs::canonicalize(&path).map_err(|e| {
                    EngineError::InvalidInput(format!(
                        "{}: {e}; log in with {kind} on this machine first, or give an API key",
                        path.display()
                    ))
                })?;
                if let AccountState::Broken(why) = local_login(kind, &path, &places, String::new())
                {
                    return Err(EngineError::InvalidInput(why));
                }
                SavedAccount {
                    account,
                    secret: None,
                    path: Some(path),
                    saved_at: jiff::Timestamp::now().to_string(),
                }
            }
            _ => {
                let secret = secret
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        EngineError::InvalidInput("the key or token is empty".to_owned())
                    })?;
                if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(EngineError::InvalidInput(
                        "a key or token is one word: this one holds spaces or control characters"
                            .to_owned(),
                    ));
                }
                SavedAccount {
                    account,
                    secret: Some(secret),
                    path: None,
                    saved_at: jiff::Timestamp::now().to_string(),
                }
            }
        };
        self.home
            .save_account(kind, &saved)
            .map_err(|e| EngineError::InvalidInput(format!("cannot save the account: {e}")))?;
        Ok(self.agent_view(kind))
    }

    /// `claude-vm agents logout KIND`: whether an account was saved.
    pub fn agents_logout(&self, kind: &str) -> Result<bool> {
        self.home
            .remove_account(kind)
            .map_err(|e| EngineError::InvalidInput(e.to_string()))
    }

    /// The account for a new conversation of `kind` in `ws`, or the one line saying what
    /// is missing. An agent logged in inside the workspace itself (its own login file in
    /// the agent's home) needs nothing from here.
    pub(crate) async fn account_for_chat(
        &self,
        provider: &dyn Provider,
        ws: &WorkspaceRecord,
        kind: &str,
    ) -> Result<Option<Account>> {
        match self.account(kind) {
            AccountState::Ready(a) => Ok(Some(a)),
            AccountState::NotNeeded => Ok(None),
            AccountState::Broken(why) => Err(EngineError::NoAccount(why)),
            AccountState::Missing { what, remedy } => {
                if let Some(rel) = agent::local_login_file(kind)
                    && provider
                        .stat(&ws.id, &format!("{AGENT_HOME}/{rel}"))
                        .await?
                        .is_some()
                {
                    return Ok(None);
                }
                Err(EngineError::NoAccount(format!("{what}: {remedy}")))
            }
        }
    }

    /// The environment a conversation of `kind` gets: the account's, then config.yaml's
    /// own (which has the last word).
    pub(crate) fn chat_env(
        &self,
        kind: &str,
        account: Option<&Account>,
    ) -> BTreeMap<String, String> {
        let mut env = account.map(|a| a.env.clone()).unwrap_or_default();
        env.extend(self.config.agents.settings(kind).env);
        env
    }

    /// Give a conversation the account of its kind as it is now, when that changed since
    /// it was last given one (`agents login` again, or the local login file renewed): the
    /// login file is written again and the daemon swaps the agent's environment (an idle
    /// agent restarts on the next message, resuming its session). Best effort: a failure
    /// is logged and the conversation goes on with what it has.
    pub(crate) async fn renew_account(
        &self,
        ws: &WorkspaceRecord,
        link: &claude_vm_link::Link,
        c: &claude_vm_store::ConversationRecord,
    ) {
        if let Err(e) = self.try_renew_account(ws, link, c).await {
            tracing::warn!(
                workspace = %ws.name,
                conversation = %c.id,
                "cannot give the conversation its renewed account: {e}"
            );
        }
    }

    async fn try_renew_account(
        &self,
        ws: &WorkspaceRecord,
        link: &claude_vm_link::Link,
        c: &claude_vm_store::ConversationRecord,
    ) -> Result<()> {
        // Only accounts from here: a conversation using the workspace's own login, or a
        // kind with no account now, keeps what it has.
        let AccountState::Ready(a) = self.account(&c.agent) else {
            return Ok(());
        };
        let env = self.chat_env(&c.agent, Some(&a));
        let fp = fingerprint(&env, &a);
        if self.store(|s| s.conversation_account(&c.id))?.as_deref() == Some(fp.as_str()) {
            return Ok(());
        }
        if let Some((rel, bytes)) = &a.file {
            let provider = self.provider_client(&ws.provider)?;
            self.write_login_file(provider.as_ref(), ws, rel, bytes)
                .await?;
        }
        let applied = link
            .set_conversation_env(&c.id, &claude_vm_protocol::api::AgentEnv { env })
            .await?;
        if applied.changed {
            tracing::info!(
                workspace = %ws.name,
                conversation = %c.id,
                "the conversation takes the renewed {} account ({})",
                c.agent,
                applied.applies
            );
        }
        self.store(|s| s.set_conversation_account(&c.id, &fp))
    }

    /// Write a login file into the agent's home, as the agent (so nothing the agent planted
    /// there can turn the write elsewhere), owner-only. The content goes in the command's
    /// environment, never its arguments.
    pub(crate) async fn write_login_file(
        &self,
        provider: &dyn Provider,
        ws: &WorkspaceRecord,
        rel: &str,
        bytes: &[u8],
    ) -> Result<()> {
        let out = provider
            .exec(
                &ws.id,
                &ExecSpec {
                    cmd: vec![
                        "sh".into(),
                        "-c".into(),
                        r#"umask 077 && mkdir -p "$(dirname "$HOME/$1")" && printf '%s' "$CLAUDE_VM_FILE" > "$HOME/$1.claude-vm-tmp" && mv -f "$HOME/$1.claude-vm-tmp" "$HOME/$1""#.into(),
                        "sh".into(),
                        rel.to_owned(),
                    ],
                    user: Some(self.agent_exec_user(ws)),
                    env: vec![
                        ("HOME".into(), AGENT_HOME.into()),
                        (
                            "CLAUDE_VM_FILE".into(),
                            String::from_utf8_lossy(bytes).into_owned(),
                        ),
                    ],
                    ..Default::default()
                },
            )
            .await?;
        if out.exit_code != 0 {
            return Err(EngineError::Workspace {
                name: ws.name.to_string(),
                message: format!(
                    "cannot write the agent's login file ~/{rel}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(())
    }

    /// Make sure the agent can run in the workspace; returns the program to run.
    pub(crate) async fn provision(
        &self,
        provider: &dyn Provider,
        ws: &WorkspaceRecord,
        kind: &str,
        reporter: &dyn Reporter,
    ) -> Result<Provisioned> {
        let settings = self.config.agents.settings(kind);
        let ws_err = |message: String| EngineError::Workspace {
            name: ws.name.to_string(),
            message,
        };
        if let Some(binary) = &settings.binary {
            let program = self
                .copy_program(provider, ws, kind, Path::new(binary), reporter)
                .await
                .map_err(|e| match e {
                    EngineError::InvalidInput(m) => {
                        EngineError::InvalidInput(format!("agents.{kind}.binary {binary}: {m}"))
                    }
                    other => other,
                })?;
            let version = self.version_of(provider, ws, &program).await;
            return Ok(Provisioned { program, version });
        }
        // The usual command name of each kind is the kind's own.
        let command = settings.command.clone().unwrap_or_else(|| kind.to_owned());
        let default = agent::default_install(kind, settings.installer_url.as_deref());
        let installed_at = default.as_ref().map(|i| i.program);
        if let Some(p) = self
            .find_program(provider, ws, &command, installed_at)
            .await?
        {
            return Ok(p);
        }
        // The same program on this machine, when it can run there.
        if settings.command.is_none()
            && settings.install.is_none()
            && let Some(p) = self
                .host_program(provider, ws, kind, &command, reporter)
                .await?
        {
            return Ok(p);
        }
        let timeout = settings
            .install_timeout
            .unwrap_or(agent::DEFAULT_INSTALL_TIMEOUT);
        let remedy = format!(
            "set agents.{kind}.binary (a Linux program on this machine to copy in) or agents.{kind}.install (a command that installs it) in config.yaml"
        );
        let (what, script, user) = match (&settings.install, &default) {
            (Some(install), _) => (format!("agents.{kind}.install"), install.clone(), None),
            (None, Some(i)) => (
                i.what.to_owned(),
                i.script.clone(),
                Some(self.agent_exec_user(ws)),
            ),
            (None, None) => {
                return Err(ws_err(format!(
                    "{command} is not installed in the workspace and {kind} has no default installer; {remedy}"
                )));
            }
        };
        reporter.step(&format!(
            "installing {kind} in the workspace with {what} (at most {})",
            claude_vm_core::lifecycle::short_duration(Duration::from_secs(timeout))
        ));
        let (code, tail) = self
            .run_installer(provider, ws, &script, user, timeout, reporter)
            .await?;
        if code == 124 {
            return Err(ws_err(format!(
                "installing {kind} with {what} took longer than {timeout}s and was stopped{}; {remedy}",
                shown_tail(&tail)
            )));
        }
        if code != 0 {
            return Err(ws_err(format!(
                "installing {kind} with {what} failed (exit {code}){}; {remedy}",
                shown_tail(&tail)
            )));
        }
        match self
            .find_program(provider, ws, &command, installed_at)
            .await?
        {
            Some(p) => Ok(p),
            None => Err(ws_err(format!(
                "{what} ran but {command} is still not found in the workspace; {remedy}"
            ))),
        }
    }

    /// `command` on the agent's PATH in the workspace, or at `installed_at` (relative to
    /// the agent's home) where a default install leaves it, with its version: one exec.
    async fn find_program(
        &self,
        provider: &dyn Provider,
        ws: &WorkspaceRecord,
        command: &str,
        installed_at: Option<&str>,
    ) -> Result<Option<Provisioned>> {
        let probe = ExecSpec {
            cmd: vec![
                "sh".into(),
                "-c".into(),
                r#"p=$(command -v "$1" 2>/dev/null) || { [ -n "$2" ] && [ -x "$HOME/$2" ] && p="$HOME/$2"; } || exit 1
printf '%s\n' "$p"; timeout 20 "$p" --version 2>/dev/null | head -n 1; exit 0"#
                    .into(),
                "sh".into(),
                command.to_owned(),
                installed_at.unwrap_or_default().to_owned(),
            ],
            user: Some(self.agent_exec_user(ws)),
            env: vec![("HOME".into(), AGENT_HOME.into())],
            ..Default::default()
        };
        let out = provider.exec(&ws.id, &probe).await?;
        if out.exit_code != 0 {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let program = lines.next().unwrap_or_default().trim().to_owned();
        Ok((!program.is_empty()).then(|| Provisioned {
            program,
            version: lines.next().and_then(version_line),
        }))
    }

    /// The program's version (`--version`, first line), bounded; `None` when it says none.
    async fn version_of(
        &self,
        provider: &dyn Provider,
        ws: &WorkspaceRecord,
        program: &str,
    ) -> Option<String> {
        let spec = ExecSpec {
            cmd: vec![
                "timeout".into(),
                "20".into(),
                program.to_owned(),
                "--version".into(),
            ],
            user: Some(self.agent_exec_user(ws)),
            env: vec![("HOME".into(), AGENT_HOME.into())],
            ..Default::default()
        };
        let out = tokio::time::timeout(Duration::from_secs(30), provider.exec(&ws.id, &spec))
            .await
            .ok()?
            .ok()?;
        if out.exit_code != 0 {
            return None;
        }
        version_line(String::from_utf8_lossy(&out.stdout).lines().next()?)
    }

    /// Copy a program of this machine into the workspace (once: the same size there is the
    /// same program); returns its path there.
    async fn copy_program(
        &self,
        provider: &dyn Provider,
        ws: &WorkspaceRecord,
        kind: &str,
        local: &Path,
        reporter: &dyn Reporter,
    ) -> Result<String> {
        let meta = crate::off_worker(|| std::fs::metadata(local))
            .map_err(|e| EngineError::InvalidInput(e.to_string()))?;
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| kind.to_owned());
        let target = format!("/opt/claude-vm/agents/{kind}/{name}");
        let present = provider.stat(&ws.id, &target).await?;
        if present.map(|s| s.size) != Some(meta.len()) {
            reporter.step(&format!("copying {} into the workspace", local.display()));
            let tar = pack::stream(
                None,
                vec![Extra {
                    path: target.trim_start_matches('/').into(),
                    content: ExtraContent::File(local.to_owned()),
                    mode: 0o755,
                    mtime: 0,
                }],
                Arc::new(AtomicU64::new(0)),
            );
            provider.upload(&ws.id, "/", tar).await?;
        }
        Ok(target)
    }

    /// `command` on this machine's PATH, copied in when it is a Linux program for the
    /// workspace's architecture and runs there; `None` (with a word why, where it helps)
    /// otherwise.
    async fn host_program(
        &self,
        provider: &dyn Provider,
        ws: &WorkspaceRecord,
        kind: &str,
        command: &str,
        reporter: &dyn Reporter,
    ) -> Result<Option<Provisioned>> {
        let Some((found, real, head)) = crate::off_worker(|| {
            let found = on_path(command)?;
            let real = std::fs::canonicalize(&found).ok()?;
            let head = read_head(&real);
            Some((found, real, head))
        }) else {
            return Ok(None);
        };
        let arch = provider
            .exec(
                &ws.id,
                &ExecSpec {
                    cmd: vec!["uname".into(), "-m".into()],
                    ..Default::default()
                },
            )
            .await?;
        let ws_arch = claude_vm_core::posix::normalize_arch(&String::from_utf8_lossy(&arch.stdout))
            .to_owned();
        match agent::binary_kind(&head) {
            BinaryKind::Elf(a) if a == ws_arch => {}
            BinaryKind::Elf(a) => {
                reporter.warn(&format!(
                    "{} is built for {a} and the workspace is {ws_arch}: installing {kind} there instead",
                    found.display()
                ));
                return Ok(None);
            }
            BinaryKind::ElfOther(_) | BinaryKind::Unknown => return Ok(None),
            BinaryKind::MachO => {
                reporter.warn(&format!(
                    "{} is a macOS program and cannot run in a Linux workspace: installing {kind} there instead",
                    found.display()
                ));
                return Ok(None);
            }
            // npm's launcher and the like need what they load beside them.
            BinaryKind::Script => return Ok(None),
        }
        let program = self
            .copy_program(provider, ws, kind, &real, reporter)
            .await?;
        match self.version_of(provider, ws, &program).await {
            Some(v) => Ok(Some(Provisioned {
                program,
                version: Some(v),
            })),
            None => {
                reporter.warn(&format!(
                    "{} does not run in the workspace (it may need libraries the image lacks): installing {kind} there instead",
                    found.display()
                ));
                Ok(None)
            }
        }
    }

    /// Run an install script in the workspace (as `user`, with the agent's home as `HOME`
    /// when it is the agent), its output shown as it comes, stopped after `timeout`
    /// seconds; the exit code (124: stopped) and the last lines of its output.
    async fn run_installer(
        &self,
        provider: &dyn Provider,
        ws: &WorkspaceRecord,
        script: &str,
        user: Option<String>,
        timeout: u64,
        reporter: &dyn Reporter,
    ) -> Result<(i64, Vec<String>)> {
        const EXIT: &str = "@@claude-vm-install-exit ";
        // Installers run from the agent's home (one run from `/` may scan the whole disk).
        let mut env = Vec::new();
        let mut workdir = None;
        if user.is_some() {
            env.push(("HOME".to_owned(), AGENT_HOME.to_owned()));
            workdir = Some(AGENT_HOME.to_owned());
        }
        let spec = ExecSpec {
            cmd: vec![
                "sh".into(),
                "-c".into(),
                format!(r#"timeout -k 5 "$2" sh -c "$1" </dev/null 2>&1; echo "{EXIT}$?""#),
                "sh".into(),
                script.to_owned(),
                timeout.to_string(),
            ],
            user,
            workdir,
            env,
        };
        let stream = provider.exec_stream(&ws.id, &spec).await?;
        let mut lines = tokio::io::BufReader::new(stream).lines();
        let mut tail: Vec<String> = Vec::new();
        let mut shown = 0;
        let read = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(code) = line.trim().strip_prefix(EXIT) {
                    return code.trim().parse().ok();
                }
                let clean = plain(&line);
                if clean.is_empty() {
                    continue;
                }
                if shown < 40 {
                    reporter.step(&format!("  {clean}"));
                    shown += 1;
                }
                tail.push(clean);
                if tail.len() > 8 {
                    tail.remove(0);
                }
            }
            None
        };
        let code = tokio::time::timeout(Duration::from_secs(timeout + 30), read)
            .await
            .unwrap_or(Some(124))
            .unwrap_or(-1);
        Ok((code, tail))
    }
}

/// An installer's line without terminal escapes and carriage-return redraws, at most 200
/// characters.
fn plain(line: &str) -> String {
    let last = line
        .rsplit('\r')
        .find(|s| !s.trim().is_empty())
        .unwrap_or("");
    let mut out = String::new();
    let mut chars = last.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI ... final byte in @..~
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        if !c.is_control() {
            out.push(c);
        }
    }
    out.trim().chars().take(200).collect()
}

/// A program's `--version` line as shown: what it prints is the agent's to choose, so one
/// line, no terminal escapes, at most 80 characters.
fn version_line(line: &str) -> Option<String> {
    let line: String = plain(line).chars().take(80).collect();
    (!line.is_empty()).then_some(line)
}

/// The last lines of an installer's output that say something: npm's closing lines
/// (where its log went) say nothing about what failed, and are left out.
fn shown_tail(tail: &[String]) -> String {
    let telling: Vec<&String> = tail
        .iter()
        .filter(|l| {
            let l = l
                .trim_start_matches("npm ERR! ")
                .trim_start_matches("npm error ");
            !(l.starts_with("A complete log of this run can be found in")
                || l.trim_end().ends_with("-debug-0.log")
                || l.trim().is_empty())
        })
        .collect();
    if telling.is_empty() {
        String::new()
    } else {
        let shown: Vec<&str> = telling[telling.len().saturating_sub(3)..]
            .iter()
            .map(|l| l.as_str())
            .collect();
        format!(": {}", shown.join(" / "))
    }
}

fn on_path(command: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if command.contains('/') {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(command))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn read_head(path: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut buf))
        .unwrap_or(0);
    buf.truncate(n);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn places<'a>(env: &'a dyn Fn(&str) -> Option<String>, home: Option<&Path>) -> Places<'a> {
        Places {
            env,
            user_home: home.map(Path::to_owned),
            now_ms: 1_800_000_000_000,
        }
    }

    fn ready(s: AccountState) -> Account {
        match s {
            AccountState::Ready(a) => a,
            AccountState::NotNeeded => panic!("not needed"),
            AccountState::Missing { what, .. } => panic!("{what}"),
            AccountState::Broken(m) => panic!("{m}"),
        }
    }

    #[test]
    fn accounts_are_found_in_order_config_saved_environment_local_login() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        std::fs::create_dir_all(home.join(".claude")).unwrap();
        std::fs::write(
            home.join(".claude/.credentials.json"),
            r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-local-token-1234","expiresAt":1900000000000}}"#,
        )
        .unwrap();
        let none = |_: &str| None;
        let env = |n: &str| {
            (n == "ANTHROPIC_API_KEY" || n == "ANTHROPIC_BASE_URL")
                .then(|| format!("{n}-value-from-env-0000"))
        };
        let mut settings = AgentSettings::default();
        // The local login alone.
        let a = ready(discover(
            "claude",
            &settings,
            Ok(None),
            &places(&none, Some(home)),
        ));
        assert_eq!(a.source, "~/.claude/.credentials.json");
        assert_eq!(
            a.env["CLAUDE_CODE_OAUTH_TOKEN"],
            "sk-ant-oat01-local-token-1234"
        );
        assert_eq!(a.masked.as_deref(), Some("sk-ant…1234"));
        // The environment beats it, and brings its base URL along.
        let a = ready(discover(
            "claude",
            &settings,
            Ok(None),
            &places(&env, Some(home)),
        ));
        assert_eq!(a.source, "environment (ANTHROPIC_API_KEY)");
        assert_eq!(a.env.len(), 2, "{:?}", a.env.keys());
        // A saved login beats the environment.
        let saved = SavedAccount {
            account: AccountKind::OauthToken,
            secret: Some("sk-ant-oat01-saved-token-5678".into()),
            path: None,
            saved_at: String::new(),
        };
        let a = ready(discover(
            "claude",
            &settings,
            Ok(Some(saved.clone())),
            &places(&env, Some(home)),
        ));
        assert_eq!(
            a.env["CLAUDE_CODE_OAUTH_TOKEN"],
            "sk-ant-oat01-saved-token-5678"
        );
        // And config.yaml's own env beats everything, adding nothing.
        settings
            .env
            .insert("ANTHROPIC_API_KEY".into(), "from-config".into());
        let a = ready(discover(
            "claude",
            &settings,
            Ok(Some(saved)),
            &places(&env, Some(home)),
        ));
        assert!(a.env.is_empty() && a.source.starts_with("config.yaml"));
        // A gateway's bearer token in config.yaml counts too.
        let gateway = AgentSettings {
            env: BTreeMap::from([("ANTHROPIC_AUTH_TOKEN".to_owned(), "tok".to_owned())]),
            ..AgentSettings::default()
        };
        let a = ready(discover("claude", &gateway, Ok(None), &places(&none, None)));
        assert_eq!(
            a.source,
            "config.yaml (agents.claude.env.ANTHROPIC_AUTH_TOKEN)"
        );
        // Nothing anywhere: one line saying what to do.
        let empty = tempfile::tempdir().unwrap();
        match discover(
            "claude",
            &AgentSettings::default(),
            Ok(None),
            &places(&none, Some(empty.path())),
        ) {
            AccountState::Missing { what, remedy } => assert_eq!(
                format!("{what}: {remedy}"),
                "no Claude account: run `claude-vm agents login claude` (or set ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN)"
            ),
            _ => panic!("found an account in an empty home"),
        }
        assert!(matches!(
            discover(
                "acp",
                &AgentSettings::default(),
                Ok(None),
                &places(&none, None)
            ),
            AccountState::NotNeeded
        ));
    }

    #[test]
    fn a_malformed_or_expired_local_login_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        std::fs::create_dir_all(home.join(".codex")).unwrap();
        std::fs::write(home.join(".codex/auth.json"), "{\"tokens\": ").unwrap();
        let none = |_: &str| None;
        match discover(
            "codex",
            &AgentSettings::default(),
            Ok(None),
            &places(&none, Some(home)),
        ) {
            AccountState::Broken(m) => {
                assert!(
                    m.contains("~/.codex/auth.json") && m.contains("not valid JSON"),
                    "{m}"
                )
            }
            _ => panic!("a malformed login was used"),
        }
        std::fs::create_dir_all(home.join(".claude")).unwrap();
        std::fs::write(
            home.join(".claude/.credentials.json"),
            r#"{"claudeAiOauth":{"accessToken":"t","expiresAt":1700000000000}}"#,
        )
        .unwrap();
        match discover(
            "claude",
            &AgentSettings::default(),
            Ok(None),
            &places(&none, Some(home)),
        ) {
            AccountState::Broken(m) => assert!(m.contains("expired"), "{m}"),
            _ => panic!("an expired login was used"),
        }
    }

    #[test]
    fn installer_lines_lose_their_escapes_and_secrets_are_masked() {
        assert_eq!(plain("\u{1b}[32m✔\u{1b}[0m Installed\r"), "✔ Installed");
        assert_eq!(plain("10%\r50%\r100%"), "100%");
        assert_eq!(mask("short"), "********");
        assert_eq!(mask("sk-ant-api03-abcdefghijklmn-4242"), "sk-ant…4242");
    }
}
