//! Conversations: list, create, send, interrupt, stop, approvals, transcript, and the live
//! event stream (SSE, resumable with `Last-Event-ID`).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use claude_vm_api::{
    AfterQuery, Chat, Conversation, ConversationDetail, ConversationQuery, CreateConversation,
    Decision, Event, Interrupted, PermissionMode, SendMessage, Sent,
};
use claude_vm_engine::{Events, NullReporter};
use futures_util::Stream;

use super::{ApiJson, OptionalJson, typed};
use crate::AppState;
use crate::error::{ApiError, ApiResult};

pub async fn list(
    State(s): State<AppState>,
    q: Result<Query<ConversationQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<Chat>>> {
    let Query(q) = q?;
    Ok(Json(typed(
        &s.engine.chat_list(q.workspace.as_deref()).await?,
    )?))
}

pub async fn list_in_workspace(
    State(s): State<AppState>,
    Path(ws): Path<String>,
) -> ApiResult<Json<Vec<Chat>>> {
    Ok(Json(typed(&s.engine.chat_list(Some(&ws)).await?)?))
}

pub async fn create(
    State(s): State<AppState>,
    Path(ws): Path<String>,
    OptionalJson(b): OptionalJson<CreateConversation>,
) -> ApiResult<impl IntoResponse> {
    let mode = if b.ask {
        PermissionMode::Ask
    } else {
        PermissionMode::Skip
    };
    let engine = s.engine.clone();
    // Provisioning the agent can take a while: finish it even if the client leaves.
    let view = super::detached(async move {
        Ok(engine
            .new_chat(&ws, b.agent.as_deref(), b.message, mode, &NullReporter)
            .await?)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(typed::<Chat>(&view)?)))
}

pub async fn show(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ConversationDetail>> {
    let (id, ws, link) = s.engine.chat_link(&id).await?;
    let conversation = link.conversation(&id).await?;
    Ok(Json(ConversationDetail {
        conversation,
        workspace: ws.name.to_string(),
        workspace_id: ws.id.to_string(),
    }))
}

/// How long a send to a stopped workspace waits to learn whether it can be started.
const HELD_VERDICT: std::time::Duration = std::time::Duration::from_secs(3);

pub async fn send(
    State(s): State<AppState>,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<SendMessage>,
) -> ApiResult<impl IntoResponse> {
    if b.text.trim().is_empty() {
        return Err(ApiError::bad_request("the message is empty"));
    }
    // Accepted at once: a workspace that is not running gets the message once it has been
    // started, in the background (the message is kept in the index until then).
    let (sent, ws): (Sent, _) = s.engine.send_or_hold(&id, &b.text).await?;
    if sent.held {
        let engine = s.engine.clone();
        let ws = ws.id.to_string();
        let delivery = tokio::spawn(async move { engine.deliver_held(&ws).await });
        // A workspace that cannot start (its provider is down) is told to the sender at
        // once; the message stays held and is delivered by a later attempt.
        if let Ok(Ok(Err(e))) = tokio::time::timeout(HELD_VERDICT, delivery).await {
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the message is kept, but the workspace cannot be started now: {e}"),
            );
            err = err.hint(e.hint().unwrap_or_else(|| {
                "it is delivered once the workspace starts (the server tries again every minute)"
                    .to_owned()
            }));
            return Err(err);
        }
    }
    Ok((StatusCode::ACCEPTED, Json(sent)))
}

pub async fn interrupt(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Interrupted>> {
    let (id, _, link) = s.engine.chat_link(&id).await?;
    let interrupted = link.interrupt(&id).await?;
    Ok(Json(Interrupted { interrupted }))
}

pub async fn stop(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Conversation>> {
    let (id, _, link) = s.engine.chat_link(&id).await?;
    Ok(Json(link.stop_conversation(&id).await?))
}

pub async fn decide(
    State(s): State<AppState>,
    Path((id, approval)): Path<(String, String)>,
    ApiJson(d): ApiJson<Decision>,
) -> ApiResult<Json<Conversation>> {
    let (id, _, link) = s.engine.chat_link(&id).await?;
    Ok(Json(link.decide(&id, &approval, &d).await?))
}

pub async fn transcript(
    State(s): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<AfterQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Vec<Event>>> {
    let Query(q) = q?;
    let (id, _, link) = s.engine.chat_link(&id).await?;
    let mut events = link.events(&id, q.after, false).await?;
    let mut out = Vec::new();
    while let Some(e) = events.next().await? {
        out.push(e);
    }
    Ok(Json(out))
}

/// Where a (re)connecting event stream starts: `Last-Event-ID` wins over `?after=`.
pub fn resume_point(headers: &HeaderMap, after: u64) -> u64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(after)
}

/// The live transcript as server-sent events: `id` is the event's sequence number, `data`
/// the event as JSON. Ends when the server shuts down or the workspace goes away; the
/// client reconnects with `Last-Event-ID` and misses nothing.
pub async fn events(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<AfterQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let Query(q) = q?;
    let after = resume_point(&headers, q.after);
    let (id, _, link) = s.engine.chat_link(&id).await?;
    let events = link.events(&id, after, true).await?;
    Ok(sse_stream(events, s.shutdown.clone(), |e| {
        let data = serde_json::to_string(e).unwrap_or_default();
        SseEvent::default().id(e.seq.to_string()).data(data)
    }))
}

/// Transcript events as an SSE stream, rendered by `render`, until the stream or the
/// server ends. Shared with the web pages (which send HTML fragments).
pub fn sse_stream(
    events: Events,
    shutdown: claude_vm_engine::CancellationToken,
    render: impl Fn(&Event) -> SseEvent + Send + 'static,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let stream = futures_util::stream::unfold(
        (events, shutdown, render),
        |(mut events, shutdown, render)| async move {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return None,
                n = events.next() => n,
            };
            match next {
                Ok(Some(e)) => {
                    let sse = render(&e);
                    Some((Ok(sse), (events, shutdown, render)))
                }
                _ => None,
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
