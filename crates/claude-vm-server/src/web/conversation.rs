//! The conversation page: the transcript so far, then live events from `/c/{id}/stream`
//! (server-sent events whose data are the same HTML fragments the page starts with, `id`
//! the event's sequence number, so a dropped stream resumes where it stopped).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use claude_vm_protocol::api::{Event, EventBody};
use maud::{Markup, html};
use serde::Deserialize;

use super::pages::{ago, conv_badge, csrf};
use super::{layout, markdown};
use crate::AppState;
use crate::api::conversations::{resume_point, sse_stream};
use crate::auth::Principal;
use claude_vm_api::encode::path_segment;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/c/{id}", get(page))
        .route("/c/{id}/stream", get(stream))
}

/// What later events say about earlier ones, for the first render: which messages reached
/// the agent, which approvals were answered. Live fragments start without it and the
/// script applies `delivered` and `decision` events as they come.
#[derive(Default)]
struct Known {
    delivered: HashSet<String>,
    decided: HashMap<String, bool>,
}

impl Known {
    fn of(events: &[Event]) -> Known {
        let mut k = Known::default();
        for e in events {
            match &e.body {
                EventBody::Delivered { message_id } => {
                    k.delivered.insert(message_id.clone());
                }
                EventBody::ApprovalDecision { approval_id, allow } => {
                    k.decided.insert(approval_id.clone(), *allow);
                }
                _ => {}
            }
        }
        k
    }
}

/// A one-line hint of what a tool call does: its command, file or first string.
fn tool_hint(input: &serde_json::Value) -> String {
    let pick = ["command", "file_path", "path", "pattern", "url", "query"]
        .iter()
        .find_map(|k| input.get(*k).and_then(|v| v.as_str()))
        .map(str::to_owned)
        .or_else(|| {
            input
                .as_object()
                .and_then(|o| o.values().find_map(|v| v.as_str().map(str::to_owned)))
        })
        .unwrap_or_default();
    let line = pick.lines().next().unwrap_or("").to_owned();
    if line.chars().count() > 80 {
        format!("{}…", line.chars().take(80).collect::<String>())
    } else {
        line
    }
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn approval_buttons(approval_id: &str) -> Markup {
    html! {
        div.actions {
            button.btn type="button" data-approve=(approval_id) data-allow="true" { "Allow" }
            button.btn.danger type="button" data-approve=(approval_id) data-allow="false" { "Deny" }
        }
    }
}

fn decided(allow: bool) -> Markup {
    html! { p class={"decided " @if allow { "ok" } @else { "bad" }} { @if allow { "Allowed" } @else { "Denied" } } }
}

/// One transcript event as HTML. Everything from the agent or the user is text, except
/// assistant messages, which go through the safe [`markdown`].
fn render(e: &Event, known: &Known) -> Markup {
    let seq = e.seq;
    let ts = e.ts.as_str();
    match &e.body {
        EventBody::User { message_id, text } => html! {
            div.ev.user data-seq=(seq) data-ts=(ts) data-msg=(message_id) {
                div.bubble { (text) }
                @if !known.delivered.contains(message_id) { span.badge.queued { "queued" } }
            }
        },
        EventBody::Delivered { message_id } => html! {
            div.ev.delivered data-seq=(seq) data-ts=(ts) data-msg=(message_id) hidden {}
        },
        EventBody::Assistant { text } => html! {
            div.ev.assistant data-seq=(seq) data-ts=(ts) { div.md { (markdown(text)) } }
        },
        EventBody::ToolCall { id, name, input } => html! {
            details.ev.tool data-seq=(seq) data-ts=(ts) data-tool=(id) {
                summary { span.tname { "⚙ " (name) } " " code.hint { (tool_hint(input)) } }
                pre { (pretty(input)) }
            }
        },
        EventBody::ToolResult {
            id,
            output,
            is_error,
        } => {
            let lines = output.lines().count();
            html! {
                details class={"ev result" @if *is_error { " err" }} data-seq=(seq) data-ts=(ts) data-tool=(id) {
                    summary {
                        @if *is_error { "✗ error" } @else { "↳ result" }
                        " " span.muted { (lines) @if lines == 1 { " line" } @else { " lines" } }
                    }
                    pre { (output) }
                }
            }
        }
        EventBody::ApprovalRequest {
            approval_id,
            tool,
            input,
        } => html! {
            div.ev.approval data-seq=(seq) data-ts=(ts) data-approval=(approval_id) {
                p { "Allow " strong { (tool) } "?" }
                pre { (pretty(input)) }
                @match known.decided.get(approval_id) {
                    Some(allow) => (decided(*allow)),
                    None => (approval_buttons(approval_id)),
                }
            }
        },
        EventBody::ApprovalDecision { approval_id, allow } => html! {
            div.ev.decision data-seq=(seq) data-ts=(ts) data-approval=(approval_id) data-allow=(allow) hidden {}
        },
        EventBody::TurnEnd { result, is_error } => html! {
            div class={"ev turnend" @if *is_error { " err" }} data-seq=(seq) data-ts=(ts) {
                @if *is_error {
                    "Turn failed" @if let Some(r) = result { ": " (r) }
                } @else { "Turn finished" }
            }
        },
        EventBody::Status { status, reason } => {
            let name = serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let shown = matches!(name.as_str(), "failed" | "stopped");
            html! {
                div class={"ev status st-" (name)} data-seq=(seq) data-ts=(ts) data-status=(name) hidden[!shown] {
                    (name.replace('_', " ")) @if let Some(r) = reason { ": " (r) }
                }
            }
        }
    }
}

async fn page(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let loaded = async {
        let (id, ws, link) = s.engine.chat_link(&id).await?;
        let conv = link.conversation(&id).await?;
        let mut stream = link.events(&id, 0, false).await?;
        let mut events = Vec::new();
        while let Some(e) = stream.next().await? {
            events.push(e);
        }
        Ok::<_, crate::ApiError>((ws, conv, events))
    }
    .await;
    let (ws, conv, events) = match loaded {
        Ok(x) => x,
        Err(e) => {
            return (
                StatusCode::from_u16(e.status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                layout(
                    "Conversation",
                    csrf(&p),
                    html! { main { h1 { "Conversation" } p.error { (e.body.error) } p { a href="/" { "Back to the workspaces" } } } },
                ),
            )
                .into_response();
        }
    };
    let known = Known::of(&events);
    let last_seq = events.last().map(|e| e.seq).unwrap_or(0);
    let status = serde_json::to_value(conv.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let api = format!("/api/v1/conversations/{}", path_segment(&conv.id));
    let ws_name = ws.name.to_string();
    let title = conv
        .title
        .clone()
        .unwrap_or_else(|| format!("{} · {}", conv.agent, conv.id));
    layout(
        &title,
        csrf(&p),
        html! {
            main.conv {
                nav.crumbs { a href="/" { "Workspaces" } " / " a href={"/w/" (path_segment(&ws_name))} { (ws_name) } " / " }
                div.row {
                    h1 { (title) }
                    span #status { (conv_badge(&conv.id, &status, &conv.updated_at)) }
                }
                p.meta {
                    (conv.agent)
                    @if conv.permission_mode == claude_vm_protocol::api::PermissionMode::Ask { " · asks before tool use" }
                    " · started " (ago(&conv.created_at))
                }
                @if let Some(r) = &conv.status_reason { p.error #reason { (r) } }
                div #transcript data-conv=(conv.id) data-api=(api)
                    data-stream={"/c/" (path_segment(&conv.id)) "/stream"} data-last-seq=(last_seq) aria-live="polite" {
                    @for e in &events { (render(e, &known)) }
                }
                form #composer {
                    textarea #text name="text" rows="2" placeholder="Message (sent when the agent is ready; Ctrl+Enter sends)" required aria-label="Message" {}
                    div.actions {
                        button.btn type="submit" { "Send" }
                        button.btn.secondary #interrupt type="button" { "Interrupt" }
                    }
                    p.error role="alert" hidden {}
                }
            }
        },
    )
    .into_response()
}

#[derive(Debug, Default, Deserialize)]
struct StreamQuery {
    #[serde(default)]
    after: u64,
}

/// The live transcript for the page: SSE, `id` = sequence number, `data` = the event's
/// HTML fragment. Resumes after `Last-Event-ID` (or `?after=`).
async fn stream(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Response {
    let after = resume_point(&headers, q.after);
    let opened = async {
        let (id, _, link) = s.engine.chat_link(&id).await?;
        Ok::<_, crate::ApiError>(link.events(&id, after, true).await?)
    }
    .await;
    match opened {
        Ok(events) => sse_stream(events, s.shutdown.clone(), |e| {
            SseEvent::default()
                .id(e.seq.to_string())
                .retry(Duration::from_secs(1))
                .data(render(e, &Known::default()).into_string())
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, body: EventBody) -> Event {
        Event {
            seq,
            ts: "2025-01-01T00:00:00Z".into(),
            body,
        }
    }

    #[test]
    fn agent_output_is_text_and_state_follows_later_events() {
        let events = vec![
            ev(
                1,
                EventBody::User {
                    message_id: "m1".into(),
                    text: "<img src=x onerror=alert(1)>".into(),
                },
            ),
            ev(
                2,
                EventBody::Delivered {
                    message_id: "m1".into(),
                },
            ),
            ev(
                3,
                EventBody::Assistant {
                    text: "<script>window.__xss=1</script>\n\n**hi**".into(),
                },
            ),
            ev(
                4,
                EventBody::ToolCall {
                    id: "t1".into(),
                    name: "Bash".into(),
                    input: serde_json::json!({"command": "echo '<b>x</b>'"}),
                },
            ),
            ev(
                5,
                EventBody::ToolResult {
                    id: "t1".into(),
                    output: "<b>x</b>".into(),
                    is_error: false,
                },
            ),
            ev(
                6,
                EventBody::ApprovalRequest {
                    approval_id: "a1".into(),
                    tool: "Bash".into(),
                    input: serde_json::json!({}),
                },
            ),
            ev(
                7,
                EventBody::ApprovalDecision {
                    approval_id: "a1".into(),
                    allow: true,
                },
            ),
        ];
        let known = Known::of(&events);
        let html: String = events
            .iter()
            .map(|e| render(e, &known).into_string())
            .collect();
        for bad in ["<img", "<script", "<b>"] {
            assert!(!html.contains(bad), "{bad} in {html}");
        }
        assert!(html.contains("<strong>hi</strong>"), "{html}");
        assert!(
            !html.contains("queued"),
            "delivered message shown queued: {html}"
        );
        assert!(
            html.contains("Allowed") && !html.contains("data-approve"),
            "{html}"
        );
        // Live, with nothing known yet: the message is queued, the approval open.
        let live = render(&events[0], &Known::default()).into_string();
        assert!(live.contains("queued"));
        let live = render(&events[5], &Known::default()).into_string();
        assert!(live.contains("data-approve=\"a1\""));
        assert_eq!(tool_hint(&serde_json::json!({"command": "ls\npwd"})), "ls");
    }
}
