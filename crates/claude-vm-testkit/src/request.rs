//! Recorded requests and helpers to read request bodies.
//!
//! Matchers are written against the Anthropic Messages shape (`system`,
//! `tools`, `messages` with `text` / `tool_use` / `tool_result` blocks). An
//! OpenAI Responses body (`instructions`, `tools`, `input` items) is first
//! turned into that shape by [`normalize`], so one script serves both APIs.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Header names whose values are replaced by `<redacted>` when recorded.
pub const SECRET_HEADERS: &[&str] = &[
    "x-api-key",
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// One request the server received (requests to `/_testkit/...` are not recorded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// 0-based arrival order.
    pub seq: u64,
    /// Milliseconds since the server started.
    pub at_ms: u64,
    /// HTTP method.
    pub method: String,
    /// Path including the query string (Claude Code sends `/v1/messages?beta=true`).
    pub path: String,
    /// Lower-case header names; secrets redacted; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The JSON body; `null` when empty, a JSON string holding the raw text when not JSON.
    pub body: Value,
    /// Index of the rule that answered, if any (only for `POST /v1/messages`).
    pub matched_rule: Option<usize>,
    /// Name of the rule that answered, if it had one.
    pub rule_name: Option<String>,
    /// What was answered: a short summary such as `stream`, `json`, `count_tokens`, `404`.
    pub answered: String,
}

impl RecordedRequest {
    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or(&self.path)
    }
    /// Whether this is a `POST .../v1/messages` (not count_tokens).
    pub fn is_messages(&self) -> bool {
        self.method == "POST" && self.path_only().ends_with("/v1/messages")
    }
    /// Whether this is a `POST .../v1/responses` (OpenAI Responses API).
    pub fn is_responses(&self) -> bool {
        self.method == "POST" && self.path_only().ends_with("/v1/responses")
    }
    /// Whether this asked the model for an answer, in either API.
    pub fn is_model_request(&self) -> bool {
        self.is_messages() || self.is_responses()
    }
    /// The `model` field of the body.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }
    /// Whether the body asked for streaming.
    pub fn is_stream(&self) -> bool {
        self.body
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
    /// The `messages` array of the body (empty if absent). For a Responses
    /// body see [`RecordedRequest::input`], or [`normalize`] for the
    /// Messages-shaped view the matchers use.
    pub fn messages(&self) -> &[Value] {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
    /// The `input` items of a Responses body (empty if absent or a plain string).
    pub fn input(&self) -> &[Value] {
        self.body
            .get("input")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
    /// Whether the body offers tools (see [`is_agent_request`]).
    pub fn is_agent(&self) -> bool {
        is_agent_request(&self.body)
    }
    /// All conversation text, as the `contains` matcher sees it.
    pub fn conversation_text(&self) -> String {
        conversation_text(&self.body)
    }
    /// Text of the last user-role message, as `last_user_contains` sees it.
    pub fn last_user_text(&self) -> Option<String> {
        last_user_message(&normalize(&self.body)).map(message_text)
    }
    /// The top-level system prompt text.
    pub fn system_text(&self) -> String {
        system_text(&self.body)
    }
    /// A header value (name is case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// Text of one content value: a string, or an array of blocks of which
/// `text` blocks and `tool_result` contents count.
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            let mut parts = Vec::new();
            for b in blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = b.get("text").and_then(Value::as_str) {
                            parts.push(t.to_string());
                        }
                    }
                    Some("tool_result") => {
                        if let Some(c) = b.get("content") {
                            parts.push(content_text(c));
                        }
                    }
                    _ => {}
                }
            }
            parts.join("\n")
        }
        _ => String::new(),
    }
}

/// Text of a message (`{"role": ..., "content": ...}`).
pub fn message_text(message: &Value) -> String {
    message.get("content").map(content_text).unwrap_or_default()
}

/// Text of every message in `messages`, any role, joined by newlines
/// (of a Responses body: of its [`normalize`]d form).
pub fn conversation_text(body: &Value) -> String {
    normalize(body)
        .get("messages")
        .and_then(Value::as_array)
        .map(|ms| ms.iter().map(message_text).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// The last message whose role is `user` (of a Messages-shaped body: call
/// [`normalize`] first for a Responses body).
pub fn last_user_message(body: &Value) -> Option<&Value> {
    body.get("messages")?
        .as_array()?
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
}

/// Contents of the tool_result blocks of a message.
pub fn tool_results(message: &Value) -> Vec<String> {
    match message.get("content") {
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .map(|b| b.get("content").map(content_text).unwrap_or_default())
            .collect(),
        _ => Vec::new(),
    }
}

/// The top-level `system` prompt (string or text blocks); of a Responses
/// body, its `instructions` and `developer`/`system`-role input messages.
pub fn system_text(body: &Value) -> String {
    normalize(body)
        .get("system")
        .map(content_text)
        .unwrap_or_default()
}

/// Whether a body offers tools (a non-empty `tools` array): Claude Code's
/// agent loop does, its side requests (session titles, ...) do not. Codex
/// offers its tools in the top-level `tools` array or, for some models, in
/// a `tools` field of an input item: both count.
pub fn is_agent_request(body: &Value) -> bool {
    normalize(body)
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
}

/// Whether a body is an OpenAI Responses request: it has `input` and no `messages`.
pub fn is_responses_body(body: &Value) -> bool {
    body.get("input").is_some() && body.get("messages").is_none()
}

/// The Messages-shaped view of a request body, which every matcher reads.
///
/// A Messages body is returned as it is. A Responses body becomes
/// `{"model", "stream", "system", "tools", "messages"}`:
///
/// * `instructions` and `developer`/`system`-role input messages become
///   `system` text blocks (they are the system prompt: Codex puts its
///   instructions, permissions and skills there);
/// * `user`-role messages become `user` messages, `assistant`-role ones
///   `assistant` messages (`input_text` / `output_text` parts as `text`
///   blocks; a plain string `input` is one user message);
/// * `function_call` / `custom_tool_call` items become `tool_use` blocks of
///   an assistant message (`arguments` parsed as JSON, a custom tool's
///   `input` kept as a string), and `function_call_output` /
///   `custom_tool_call_output` items `tool_result` blocks of a user message;
/// * consecutive assistant items (text and calls of one answer) form one
///   assistant message; consecutive tool outputs form one user message,
///   and user text right after tool outputs joins that message (Codex puts
///   a message the user sent mid-turn there), so after a tool call the last
///   user message holds the tool results as with Claude Code; other user
///   messages stay separate (the last one is the latest prompt);
/// * `tools` is the top-level `tools` plus the `tools` of any input item;
/// * reasoning and other items are left out.
pub fn normalize(body: &Value) -> Cow<'_, Value> {
    if !is_responses_body(body) {
        return Cow::Borrowed(body);
    }
    let mut system: Vec<Value> = Vec::new();
    if let Some(i) = body.get("instructions").and_then(Value::as_str)
        && !i.is_empty()
    {
        system.push(json!({"type": "text", "text": i}));
    }
    let mut tools: Vec<Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut messages: Vec<Value> = Vec::new();
    let mut push = |role: &str, blocks: Vec<Value>| {
        if blocks.is_empty() {
            return;
        }
        // Assistant output of one answer forms one message; tool results,
        // and user text that follows them, form one user message.
        if let Some(last) = messages.last_mut()
            && last["role"] == role
            && let Some(content) = last["content"].as_array_mut()
            && (role == "assistant" || content.iter().any(|b| b["type"] == "tool_result"))
        {
            content.extend(blocks);
            return;
        }
        messages.push(json!({"role": role, "content": blocks}));
    };
    match body.get("input") {
        Some(Value::String(s)) => push("user", vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(t) = item.get("tools").and_then(Value::as_array) {
                    tools.extend(t.iter().cloned());
                }
                let ty = item.get("type").and_then(Value::as_str);
                let role = item.get("role").and_then(Value::as_str);
                match (ty, role) {
                    (Some("message") | None, Some(role)) => {
                        let blocks = input_content_blocks(item.get("content"));
                        match role {
                            "developer" | "system" => system.extend(blocks),
                            "assistant" => push("assistant", blocks),
                            _ => push("user", blocks),
                        }
                    }
                    (Some("function_call" | "custom_tool_call"), _) => {
                        let input = match (item.get("arguments"), item.get("input")) {
                            (Some(Value::String(a)), _) => {
                                serde_json::from_str(a).unwrap_or_else(|_| Value::String(a.clone()))
                            }
                            (_, Some(i)) => i.clone(),
                            _ => json!({}),
                        };
                        push(
                            "assistant",
                            vec![json!({
                                "type": "tool_use",
                                "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                                "name": item.get("name").cloned().unwrap_or(Value::Null),
                                "input": input,
                            })],
                        );
                    }
                    (Some("function_call_output" | "custom_tool_call_output"), _) => {
                        let output = item.get("output").map(output_text).unwrap_or_default();
                        push(
                            "user",
                            vec![json!({
                                "type": "tool_result",
                                "tool_use_id": item.get("call_id").cloned().unwrap_or(Value::Null),
                                "content": output,
                            })],
                        );
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    let mut out = json!({
        "system": system,
        "tools": tools,
        "messages": messages,
    });
    for k in ["model", "stream"] {
        if let Some(v) = body.get(k) {
            out[k] = v.clone();
        }
    }
    Cow::Owned(out)
}

/// `text` blocks from a Responses message's `content` (a string, or parts
/// of type `input_text`, `output_text` or `text`).
fn input_content_blocks(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| {
                matches!(
                    p.get("type").and_then(Value::as_str),
                    Some("input_text" | "output_text" | "text")
                )
            })
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(|t| json!({"type": "text", "text": t}))
            .collect(),
        _ => Vec::new(),
    }
}

/// The text of a tool output: a string, or content items with `text`.
fn output_text(output: &Value) -> String {
    match output {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}
