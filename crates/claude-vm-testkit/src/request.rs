//! Recorded requests and helpers to read Messages API request bodies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// The `messages` array of the body (empty if absent).
    pub fn messages(&self) -> &[Value] {
        self.body
            .get("messages")
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
        last_user_message(&self.body).map(message_text)
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

/// Text of every message in `messages`, any role, joined by newlines.
pub fn conversation_text(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .map(|ms| ms.iter().map(message_text).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// The last message whose role is `user`.
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

/// The top-level `system` prompt (string or text blocks).
pub fn system_text(body: &Value) -> String {
    body.get("system").map(content_text).unwrap_or_default()
}

/// Whether a body offers tools (a non-empty `tools` array): Claude Code's
/// agent loop does, its side requests (session titles, ...) do not.
pub fn is_agent_request(body: &Value) -> bool {
    body.get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty())
}
