//! `claude-vm chat` and `new-chat`: talk to agents running in workspaces.
//!
//! The interactive chat prints the transcript as it grows and reads lines from the
//! terminal at the same time: a line is sent as a message at once (queued by the daemon if
//! the agent is busy). Leaving the chat never stops the agent.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::{Result, bail};
use claude_vm_engine::ChatView;
use claude_vm_protocol::api::{ConversationStatus, Decision, Event, EventBody, PermissionMode};
use tokio::io::AsyncBufReadExt;

use super::print_json;
use crate::backend::{Backend, Chat};
use crate::cli::{ChatArgs, ChatCommand};
use crate::output::{self, CliReporter, Style};

/// `new-chat`'s flags.
pub struct NewChatOptions {
    pub ask: bool,
    pub wait: bool,
    pub json: bool,
}

pub fn new_chat(
    engine: &Backend,
    workspace: &str,
    agent: Option<&str>,
    message: Option<String>,
    o: NewChatOptions,
    quiet: bool,
) -> Result<ExitCode> {
    let rt = super::runtime()?;
    let reporter = CliReporter::new(quiet);
    let mode = if o.ask {
        PermissionMode::Ask
    } else {
        PermissionMode::Skip
    };
    let view = rt.block_on(engine.new_chat(workspace, agent, message, mode, &reporter))?;
    let started = |then: &str| {
        if !quiet {
            eprintln!(
                "{} started {} conversation {} in {}; {then}",
                output::paint("✓", Style::Good),
                view.agent,
                view.id,
                view.workspace
            );
        }
    };
    if o.wait {
        started("waiting for its answer");
        return rt.block_on(async {
            let chat = engine.chat(&view.id).await?;
            wait_turn(&chat, 0).await
        });
    }
    if o.json {
        print_json(&view)?;
    } else {
        println!("{}", view.id);
        started(&format!("talk to it with `claude-vm chat -c {}`", view.id));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(engine: &Backend, args: &ChatArgs, quiet: bool) -> Result<ExitCode> {
    let rt = super::runtime()?;
    let code = rt.block_on(async {
        match &args.command {
            None => {
                interactive(
                    engine,
                    args.workspace.as_deref(),
                    args.conversation.as_deref(),
                )
                .await
            }
            Some(ChatCommand::Send {
                conversation,
                text,
                wait,
            }) => send(engine, conversation, text, *wait, quiet).await,
            Some(ChatCommand::Log {
                conversation,
                follow,
                json,
            }) => log(engine, conversation, *follow, *json).await,
            Some(ChatCommand::List {
                workspace,
                long,
                json,
            }) => list(engine, workspace.as_deref(), *long, *json).await,
            Some(ChatCommand::Stop { conversation }) => {
                let chat = engine.chat(conversation).await?;
                chat.stop().await?;
                if !quiet {
                    eprintln!("{} stopped {}", output::paint("✓", Style::Good), chat.id);
                }
                Ok(ExitCode::SUCCESS)
            }
            Some(ChatCommand::Interrupt { conversation }) => {
                let chat = engine.chat(conversation).await?;
                if !chat.interrupt().await? {
                    bail!("conversation {} has no running agent to interrupt", chat.id);
                }
                Ok(ExitCode::SUCCESS)
            }
            Some(ChatCommand::Allow {
                conversation,
                approval,
            }) => {
                let chat = engine.chat(conversation).await?;
                chat.decide(
                    approval,
                    &Decision {
                        allow: true,
                        message: None,
                    },
                )
                .await?;
                Ok(ExitCode::SUCCESS)
            }
            Some(ChatCommand::Deny {
                conversation,
                approval,
                message,
            }) => {
                let chat = engine.chat(conversation).await?;
                chat.decide(
                    approval,
                    &Decision {
                        allow: false,
                        message: message.clone(),
                    },
                )
                .await?;
                Ok(ExitCode::SUCCESS)
            }
        }
    })?;
    rt.shutdown_background();
    Ok(code)
}

/// A short description of a tool call's input: the argument a person would look at.
fn summarize(input: &serde_json::Value) -> String {
    for key in [
        "command",
        "file_path",
        "path",
        "pattern",
        "url",
        "query",
        "description",
    ] {
        if let Some(v) = input.get(key).and_then(|v| v.as_str()) {
            let one_line = v.lines().next().unwrap_or("");
            let mut s: String = one_line.chars().take(80).collect();
            if one_line.chars().count() > 80 || v.lines().count() > 1 {
                s.push('…');
            }
            return s;
        }
    }
    String::new()
}

/// One event as a person reads it; `None` for bookkeeping events.
pub fn render(e: &Event) -> Option<String> {
    Some(match &e.body {
        EventBody::User { text, .. } => format!("{} {text}", output::paint_out("›", Style::Bold)),
        EventBody::Assistant { text } => text.clone(),
        EventBody::ToolCall { name, input, .. } => {
            output::paint_out(&format!("⚙ {name}({})", summarize(input)), Style::Dim)
        }
        EventBody::ToolResult {
            output, is_error, ..
        } => {
            let first = output.lines().next().unwrap_or("");
            let n = output.lines().count();
            let more = if n > 1 {
                format!(" (+{} lines)", n - 1)
            } else {
                String::new()
            };
            let first: String = first.chars().take(100).collect();
            let style = if *is_error { Style::Error } else { Style::Dim };
            output::paint_out(&format!("  ↳ {first}{more}"), style)
        }
        EventBody::ApprovalRequest {
            approval_id,
            tool,
            input,
        } => output::paint_out(
            &format!(
                "? {tool}({}) needs your approval: /allow {approval_id} or /deny {approval_id}",
                summarize(input)
            ),
            Style::Warn,
        ),
        EventBody::ApprovalDecision { approval_id, allow } => output::paint_out(
            &format!(
                "  {} {approval_id}",
                if *allow { "allowed" } else { "denied" }
            ),
            Style::Dim,
        ),
        EventBody::TurnEnd {
            is_error: true,
            result,
        } => output::paint_out(
            &format!(
                "— turn ended with an error{}",
                result
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            Style::Error,
        ),
        EventBody::TurnEnd { .. } => output::paint_out("— done", Style::Dim),
        EventBody::Status {
            status: s @ (ConversationStatus::Failed | ConversationStatus::Stopped),
            reason,
        } => {
            let what = if *s == ConversationStatus::Failed {
                "failed"
            } else {
                "stopped"
            };
            output::paint_out(
                &format!(
                    "[agent {what}{}]",
                    reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ),
                Style::Error,
            )
        }
        EventBody::Status { .. } | EventBody::Delivered { .. } => return None,
    })
}

async fn send(
    engine: &Backend,
    conversation: &str,
    text: &str,
    wait: bool,
    quiet: bool,
) -> Result<ExitCode> {
    let chat = engine.chat(conversation).await?;
    let sent = chat.send_message(text).await?;
    if !wait {
        if !quiet {
            eprintln!(
                "{} sent (message {})",
                output::paint("✓", Style::Good),
                sent.message_id
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    wait_turn(&chat, sent.seq).await
}

/// Follow the conversation until the first turn after event `after` ends (events after it
/// are replayed from the transcript, so a reply cannot slip past); print its answer.
async fn wait_turn(chat: &Chat, after: u64) -> Result<ExitCode> {
    let mut events = chat.events(after, true).await?;
    let mut last_text: Option<String> = None;
    while let Some(e) = events.next().await? {
        if e.seq <= after {
            continue;
        }
        match e.body {
            EventBody::Assistant { text } => last_text = Some(text),
            EventBody::TurnEnd { result, is_error } => {
                let answer = result.or(last_text).unwrap_or_default();
                println!("{answer}");
                return Ok(if is_error {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                });
            }
            EventBody::Status {
                status: ConversationStatus::Failed,
                reason,
            } => {
                bail!("the agent failed: {}", reason.unwrap_or_default())
            }
            EventBody::Status {
                status: ConversationStatus::Stopped,
                ..
            } => bail!("the conversation was stopped"),
            _ => {}
        }
    }
    bail!("the event stream ended before the turn finished")
}

async fn log(engine: &Backend, conversation: &str, follow: bool, json: bool) -> Result<ExitCode> {
    let chat = engine.chat(conversation).await?;
    let mut events = chat.events(0, follow).await?;
    let mut out = std::io::stdout().lock();
    while let Some(e) = events.next().await? {
        if json {
            serde_json::to_writer(&mut out, &e)?;
            writeln!(out)?;
        } else if let Some(line) = render(&e) {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(
    engine: &Backend,
    workspace: Option<&str>,
    long: bool,
    json: bool,
) -> Result<ExitCode> {
    let chats = engine.chat_list(workspace).await?;
    if json {
        print_json(&chats)?;
        return Ok(ExitCode::SUCCESS);
    }
    if chats.is_empty() {
        eprintln!("no conversations; start one with `claude-vm new-chat <workspace>`");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows: Vec<Vec<String>> = chats.iter().map(row).collect();
    let mut header = vec!["ID", "WORKSPACE", "AGENT", "STATUS", "UPDATED", "TITLE"];
    if long {
        header.splice(3..3, ["VERSION", "QUEUED"]);
        for (r, c) in rows.iter_mut().zip(&chats) {
            let version = c.agent_version.clone().unwrap_or_else(|| "-".to_owned());
            r.splice(3..3, [version, c.queued.to_string()]);
        }
    }
    let mut out = std::io::stdout().lock();
    out.write_all(output::table(&header, &rows).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn row(c: &ChatView) -> Vec<String> {
    let style = match c.status.as_str() {
        "waiting_for_approval" | "failed" => Style::Error,
        "working" | "starting" => Style::Warn,
        "idle" => Style::Good,
        _ => Style::Dim,
    };
    let mut status = output::paint_out(&c.status.replace('_', " "), style);
    if !c.live {
        status.push_str(" (last known)");
    }
    vec![
        c.id.clone(),
        c.workspace.clone(),
        c.agent.clone(),
        status,
        output::ago(&c.updated_at),
        c.title.clone().unwrap_or_default(),
    ]
}

/// Ask the user to pick one of `items` on the terminal.
fn pick<'a, T>(what: &str, items: &'a [T], label: impl Fn(&T) -> String) -> Result<&'a T> {
    match items {
        [] => bail!("no {what} to choose from"),
        [one] => Ok(one),
        many => {
            if !std::io::stdin().is_terminal() {
                bail!("several {what}s match; name one (see `claude-vm chat list`)");
            }
            for (i, item) in many.iter().enumerate() {
                eprintln!("  {:>2}) {}", i + 1, label(item));
            }
            loop {
                eprint!("{what} [1-{}]: ", many.len());
                let mut line = String::new();
                if std::io::stdin().read_line(&mut line)? == 0 {
                    bail!("no choice made");
                }
                if let Ok(n) = line.trim().parse::<usize>()
                    && (1..=many.len()).contains(&n)
                {
                    return Ok(&many[n - 1]);
                }
            }
        }
    }
}

async fn interactive(
    engine: &Backend,
    workspace: Option<&str>,
    conversation: Option<&str>,
) -> Result<ExitCode> {
    let conv = match conversation {
        Some(c) => c.to_owned(),
        None => {
            let ws = match workspace {
                Some(w) => w.to_owned(),
                None => {
                    let (all, _) = engine.list(false).await?;
                    let running: Vec<_> = all
                        .into_iter()
                        .filter(|w| w.status == claude_vm_core::Status::Running)
                        .collect();
                    pick("workspace", &running, |w| {
                        format!("{} ({})", w.name, w.project)
                    })?
                    .name
                    .clone()
                }
            };
            let chats = engine.chat_list(Some(&ws)).await?;
            if chats.is_empty() {
                bail!("{ws} has no conversations; start one with `claude-vm new-chat {ws}`");
            }
            pick("conversation", &chats, |c| {
                format!(
                    "{}  {}  {}  {}",
                    c.id,
                    c.agent,
                    c.status,
                    c.title.clone().unwrap_or_default()
                )
            })?
            .id
            .clone()
        }
    };
    let chat = engine.chat(&conv).await?;
    let c = chat.conversation().await?;
    eprintln!(
        "{} {} in {} — {}. Type a message and Enter; /interrupt, /status, /quit.",
        output::paint("conversation", Style::Dim),
        chat.id,
        chat.workspace,
        c.agent
    );
    let mut events = chat.events(0, true).await?;
    let follower = tokio::spawn(async move {
        while let Ok(Some(e)) = events.next().await {
            if let Some(line) = render(&e) {
                println!("{line}");
            }
        }
    });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Err(e) = command(&chat, line).await {
            match e {
                Quit => break,
                Failed(msg) => eprintln!("{} {msg}", output::paint("error:", Style::Error)),
            }
        }
    }
    follower.abort();
    eprintln!(
        "left the conversation; the agent keeps working (`claude-vm chat -c {}` to come back)",
        chat.id
    );
    Ok(ExitCode::SUCCESS)
}

enum Outcome {
    Quit,
    Failed(String),
}
use Outcome::{Failed, Quit};

async fn command(chat: &Chat, line: &str) -> Result<(), Outcome> {
    let fail = |e: anyhow::Error| Failed(format!("{e:#}"));
    let mut words = line.split_whitespace();
    match words.next() {
        Some("/quit" | "/exit" | "/q") => Err(Quit),
        Some("/interrupt") => match chat.interrupt().await.map_err(fail)? {
            true => Ok(()),
            false => Err(Failed("no running agent to interrupt".into())),
        },
        Some("/status") => {
            let c = chat.conversation().await.map_err(fail)?;
            eprintln!(
                "{:?}{}; {} queued; agent {}{}",
                c.status,
                c.status_reason
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                c.queued,
                c.agent,
                c.session_id
                    .map(|s| format!(", session {s}"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Some(cmd @ ("/allow" | "/deny")) => {
            let Some(approval) = words.next() else {
                return Err(Failed(format!("usage: {cmd} APPROVAL-ID")));
            };
            let message: Vec<&str> = words.collect();
            let decision = Decision {
                allow: cmd == "/allow",
                message: (!message.is_empty()).then(|| message.join(" ")),
            };
            chat.decide(approval, &decision).await.map_err(fail)?;
            Ok(())
        }
        Some(w) if w.starts_with('/') && !w.starts_with("//") => Err(Failed(format!(
            "unknown command {w}; /interrupt, /status, /allow ID, /deny ID, /quit"
        ))),
        _ => {
            // `//text` sends a message starting with `/`.
            let text = line
                .strip_prefix('/')
                .filter(|t| t.starts_with('/'))
                .unwrap_or(line);
            chat.send_message(text).await.map_err(fail)?;
            Ok(())
        }
    }
}
