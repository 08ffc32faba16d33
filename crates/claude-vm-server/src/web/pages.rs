//! The pages behind the login: the workspace list, a workspace (conversations, changes,
//! a command box), the new-conversation form. The conversation page is in `conversation`.
//!
//! Lists that change on their own (workspace and conversation states) are also served as
//! bare fragments under `.../parts/...`, which the page script fetches every few seconds.

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use claude_vm_core::Status;
use claude_vm_engine::{ChatView, WorkspaceView};
use maud::{Markup, html};

use super::{diff, layout};
use crate::AppState;
use crate::auth::Principal;
use claude_vm_api::encode::path_segment;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(workspaces))
        .route("/parts/workspaces", get(workspaces_part))
        .route("/w/{ws}", get(workspace))
        .route("/w/{ws}/parts/conversations", get(conversations_part))
        .route("/w/{ws}/new", get(new_conversation))
        .merge(super::conversation::router())
}

pub fn csrf(p: &Principal) -> Option<&str> {
    match p {
        Principal::Session { csrf } => Some(csrf),
        Principal::Token { .. } => None,
    }
}

/// `3 min ago` for an RFC 3339 time, in a `<time>` element carrying the exact time.
pub fn ago(ts: &str) -> Markup {
    let text = match ts.parse::<jiff::Timestamp>() {
        Ok(t) => {
            let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
            match secs {
                0..=59 => "just now".to_owned(),
                60..=3599 => format!("{} min ago", secs / 60),
                3600..=86_399 => format!("{} h ago", secs / 3600),
                _ => format!("{} d ago", secs / 86_400),
            }
        }
        Err(_) => ts.to_owned(),
    };
    html! { time datetime=(ts) title=(ts) { (text) } }
}

/// A workspace's status badge.
fn ws_badge(status: Status) -> Markup {
    html! { span class={"badge ws-" (status.as_str())} { (status.as_str()) } }
}

/// What a conversation status is called on a badge, and whether it needs the user.
fn conv_label(status: &str) -> (&str, bool) {
    match status {
        "waiting_for_approval" => ("needs approval", true),
        "failed" => ("failed", true),
        "working" => ("working", false),
        "starting" => ("starting", false),
        "idle" => ("idle", false),
        "stopped" => ("stopped", false),
        other => (other, false),
    }
}

/// A conversation's status badge. `data-*` let the script mark an idle conversation with
/// output the user has not seen yet ("new reply").
pub fn conv_badge(id: &str, status: &str, updated: &str) -> Markup {
    let (label, attention) = conv_label(status);
    html! {
        span class={"badge cs-" (status) @if attention { " attn" }}
            data-conv=(id) data-status=(status) data-updated=(updated) { (label) }
    }
}

fn conv_title(c: &ChatView) -> String {
    c.title
        .clone()
        .unwrap_or_else(|| format!("{} · {}", c.agent, c.id))
}

fn conv_list(chats: &[ChatView]) -> Markup {
    html! {
        @if chats.is_empty() {
            p.muted { "No conversations yet." }
        } @else {
            ul.convs {
                @for c in chats {
                    li {
                        a href={"/c/" (path_segment(&c.id))} { (conv_title(c)) }
                        " "
                        (conv_badge(&c.id, &c.status, &c.updated_at))
                        @if c.queued > 0 { " " span.badge.queued { (c.queued) " queued" } }
                    }
                }
            }
        }
    }
}

/// Up or down, whichever applies.
fn ws_actions(w: &WorkspaceView) -> Markup {
    let base = format!("/api/v1/workspaces/{}", path_segment(&w.id));
    html! {
        div.actions {
            @match w.status {
                Status::Running => {
                    button.btn.secondary type="button" data-post={(base) "/backup"} data-busy="Backing up…" { "Back up now" }
                    button.btn.secondary type="button" data-post={(base) "/down"} data-busy="Stopping…"
                        data-confirm={"Stop " (w.name) "? Its agents stop with it; files stay."} { "Stop" }
                }
                Status::Stopped | Status::Error | Status::Unknown => {
                    button.btn type="button" data-post={(base) "/up"} data-busy="Starting…" { "Start" }
                }
                Status::Creating => {}
            }
        }
    }
}

fn ws_meta(w: &WorkspaceView) -> Markup {
    html! {
        p.meta {
            span { (w.provider) }
            @if let Some(b) = &w.branch { " · " span.branch { "⎇ " (b) } }
            @if let Some(a) = &w.last_activity { " · active " (ago(a)) }
            @match (&w.last_backup, &w.backup_error) {
                (_, Some(_)) => { " · " span.backup-failed { "backup failed" } }
                (Some(b), None) => { " · " span.backup { "backed up " (ago(b)) } }
                (None, None) => { " · " span.backup { "not backed up yet" } }
            }
            @if !w.ports.is_empty() { " · " span.ports { "ports " (w.ports.join(", ")) } }
        }
        @if let Some(e) = &w.backup_error { p.error { "Last backup failed: " (e) } }
        @if let Some(r) = &w.status_reason { p.error { (r) } }
    }
}

async fn workspace_cards(s: &AppState) -> Markup {
    let (list, chats) = tokio::join!(s.engine.list_detailed(), s.engine.chat_list(None));
    let chats = chats.unwrap_or_default();
    // Notification channels in trouble (the rest is `claude-vm notify status`).
    let troubled: Vec<_> = s
        .engine
        .notify_status()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.failed > 0 || (c.pending > 0 && c.last_error.is_some()))
        .collect();
    html! {
        @for c in &troubled {
            p.error.notify-trouble {
                "Notifications to " (c.channel) " are not getting through"
                @if let Some(e) = &c.last_error { ": " (e) }
            }
        }
        @match list {
            Ok((views, unreachable)) => {
                @for (provider, reason) in &unreachable {
                    p.error { "Provider " (provider) " did not answer: " (reason) }
                }
                @if views.is_empty() {
                    p.muted { "No workspaces. Create one with " code { "claude-vm up" } " in a project folder." }
                }
                @for w in &views {
                    @let mine: Vec<ChatView> = chats.iter().filter(|c| c.workspace_id == w.id).cloned().collect();
                    article.card.ws data-ws=(w.name) {
                        div.row {
                            a.name href={"/w/" (path_segment(&w.name))} { (w.name) }
                            (ws_badge(w.status))
                        }
                        (ws_meta(w))
                        (conv_list(&mine))
                        (ws_actions(w))
                    }
                }
            }
            Err(e) => { p.error { (e.to_string()) } }
        }
    }
}

async fn workspaces(State(s): State<AppState>, Extension(p): Extension<Principal>) -> Response {
    let cards = workspace_cards(&s).await;
    layout(
        "Workspaces",
        csrf(&p),
        html! {
            main {
                h1 { "Workspaces" }
                div #workspaces data-refresh="/parts/workspaces" { (cards) }
            }
        },
    )
    .into_response()
}

async fn workspaces_part(State(s): State<AppState>) -> Response {
    workspace_cards(&s).await.into_response()
}

/// One workspace with its live status.
async fn find(s: &AppState, query: &str) -> Result<WorkspaceView, String> {
    s.engine.show(query).await.map_err(|e| e.to_string())
}

fn missing(p: &Principal, message: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        layout(
            "Not found",
            csrf(p),
            html! { main { h1 { "Not found" } p.error { (message) } p { a href="/" { "Back to the workspaces" } } } },
        ),
    )
        .into_response()
}

async fn workspace(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(ws): Path<String>,
) -> Response {
    let w = match find(&s, &ws).await {
        Ok(w) => w,
        Err(e) => return missing(&p, &e),
    };
    let running = w.status == Status::Running;
    let chats = s.engine.chat_list(Some(&w.id)).await.unwrap_or_default();
    let changes = if running {
        match s.engine.link(&w.id).await {
            Ok((_, link)) => match link.diff(false).await {
                Ok(d) => diff::render(&d),
                Err(e) => html! { p.error { "Cannot read the changes: " (e.to_string()) } },
            },
            Err(e) => html! { p.error { "Cannot reach the workspace: " (e.to_string()) } },
        }
    } else {
        html! { p.muted { "Start the workspace to see its changes." } }
    };
    let enc = path_segment(&w.name);
    layout(
        &w.name,
        csrf(&p),
        html! {
            main {
                nav.crumbs { a href="/" { "Workspaces" } " / " }
                div.row {
                    h1 { (w.name) }
                    (ws_badge(w.status))
                }
                (ws_meta(&w))
                p.meta { (w.source.kind()) ": " span.path { (w.source.location()) } }
                (ws_actions(&w))
                section {
                    div.row {
                        h2 { "Conversations" }
                        @if running { a.btn href={"/w/" (enc) "/new"} { "New conversation" } }
                    }
                    div #conversations data-refresh={"/w/" (enc) "/parts/conversations"} { (conv_list(&chats)) }
                }
                section #changes {
                    h2 { "Changes" }
                    (changes)
                }
                @if running {
                    section {
                        h2 { "Run a command" }
                        form #exec data-url={"/api/v1/workspaces/" (path_segment(&w.id)) "/exec"} {
                            div.inline {
                                input #shell name="shell" type="text" autocomplete="off" autocapitalize="off"
                                    spellcheck="false" placeholder="e.g. cargo test" required aria-label="Shell command";
                                button.btn type="submit" { "Run" }
                            }
                        }
                        pre #exec-out.out hidden {}
                        p #exec-exit.muted hidden {}
                    }
                }
            }
        },
    )
    .into_response()
}

async fn conversations_part(State(s): State<AppState>, Path(ws): Path<String>) -> Response {
    match s.engine.chat_list(Some(&ws)).await {
        Ok(chats) => conv_list(&chats).into_response(),
        Err(e) => (StatusCode::NOT_FOUND, e.to_string()).into_response(),
    }
}

async fn new_conversation(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(ws): Path<String>,
) -> Response {
    let w = match s.engine.find_workspace(&ws) {
        Ok(w) => w,
        Err(e) => return missing(&p, &e.to_string()),
    };
    let config = s.engine.config();
    let agents: Vec<&String> = config
        .agents
        .enabled
        .iter()
        .filter(|a| claude_vm_engine::SUPPORTED_AGENTS.contains(&a.as_str()))
        .collect();
    let default = &config.agents.defaults.agent;
    let name = w.name.to_string();
    layout(
        "New conversation",
        csrf(&p),
        html! {
            main {
                nav.crumbs { a href="/" { "Workspaces" } " / " a href={"/w/" (path_segment(&name))} { (name) } " / " }
                h1 { "New conversation" }
                form #new-conv.stack data-url={"/api/v1/workspaces/" (path_segment(w.id.as_str())) "/conversations"} {
                    label for="agent" { "Agent" }
                    select #agent name="agent" {
                        @for a in &agents {
                            option value=(a) selected[*a == default] { (a) }
                        }
                    }
                    label for="message" { "First message (optional)" }
                    textarea #message name="message" rows="4" placeholder="What should the agent do?" {}
                    label.check {
                        input #ask type="checkbox" name="ask";
                        " Ask before each tool use"
                    }
                    button.btn type="submit" data-busy="Starting the agent…" { "Start" }
                    p.error role="alert" hidden {}
                }
            }
        },
    )
    .into_response()
}
