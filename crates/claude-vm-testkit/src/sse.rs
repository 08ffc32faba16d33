//! Building Anthropic Messages answers (JSON and Server-Sent Events) and
//! reading SSE streams back.

use rand::Rng;
use serde_json::{Value, json};

use crate::script::Block;

/// Size (in chars) of the pieces text and tool input JSON are streamed in.
pub const CHUNK_CHARS: usize = 24;

/// A random id with the given prefix, shaped like Anthropic's (`toolu_01...`, `msg_01...`).
pub fn random_id(prefix: &str) -> String {
    let tail: String = rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(22)
        .map(char::from)
        .collect();
    format!("{prefix}01{tail}")
}

/// Rough token estimate (4 bytes per token, at least 1).
pub fn estimate_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4).max(1)
}

/// A fully resolved answer: blocks with ids assigned.
#[derive(Debug, Clone)]
pub struct Answer {
    /// `msg_...` id.
    pub id: String,
    /// Model name echoed from the request.
    pub model: String,
    /// Content blocks in API form (`{"type":"text",...}`, `{"type":"tool_use",...}`).
    pub content: Vec<Value>,
    /// Stop reason.
    pub stop_reason: String,
    /// Input tokens reported.
    pub input_tokens: u64,
    /// Output tokens reported.
    pub output_tokens: u64,
}

impl Answer {
    /// Resolves scripted blocks into API content blocks, generating tool_use ids.
    pub fn new(model: &str, blocks: &[Block], stop_reason: String, input_tokens: u64) -> Self {
        let mut out_bytes = 0usize;
        let content = blocks
            .iter()
            .map(|b| match b {
                Block::Text(t) => {
                    out_bytes += t.len();
                    json!({"type": "text", "text": t})
                }
                Block::ToolUse(t) => {
                    out_bytes += t.name.len() + t.input.to_string().len();
                    json!({
                        "type": "tool_use",
                        "id": t.id.clone().unwrap_or_else(|| random_id("toolu_")),
                        "name": t.name,
                        "input": t.input,
                    })
                }
            })
            .collect();
        Answer {
            id: random_id("msg_"),
            model: model.to_string(),
            content,
            stop_reason,
            input_tokens,
            output_tokens: estimate_tokens(out_bytes),
        }
    }

    fn usage(&self) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": self.output_tokens,
            "service_tier": "standard",
        })
    }

    /// The non-streaming JSON body.
    pub fn to_message(&self) -> Value {
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.content,
            "stop_reason": self.stop_reason,
            "stop_sequence": null,
            "usage": self.usage(),
        })
    }

    /// The SSE events, in order, as `(event name, data)`.
    ///
    /// The sequence is the one Anthropic sends: `message_start`, `ping`,
    /// for each block `content_block_start` / `content_block_delta`... /
    /// `content_block_stop`, then `message_delta` (stop_reason, usage) and
    /// `message_stop`.
    pub fn to_events(&self) -> Vec<(String, Value)> {
        let mut ev = Vec::new();
        let mut start_usage = self.usage();
        start_usage["output_tokens"] = json!(1);
        ev.push((
            "message_start".to_string(),
            json!({
                "type": "message_start",
                "message": {
                    "id": self.id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": start_usage,
                }
            }),
        ));
        ev.push(("ping".to_string(), json!({"type": "ping"})));
        for (index, block) in self.content.iter().enumerate() {
            match block["type"].as_str() {
                Some("text") => {
                    ev.push((
                        "content_block_start".into(),
                        json!({"type": "content_block_start", "index": index,
                               "content_block": {"type": "text", "text": ""}}),
                    ));
                    for piece in chunks(block["text"].as_str().unwrap_or("")) {
                        ev.push((
                            "content_block_delta".into(),
                            json!({"type": "content_block_delta", "index": index,
                                   "delta": {"type": "text_delta", "text": piece}}),
                        ));
                    }
                }
                _ => {
                    ev.push((
                        "content_block_start".into(),
                        json!({"type": "content_block_start", "index": index,
                               "content_block": {"type": "tool_use", "id": block["id"],
                                                 "name": block["name"], "input": {}}}),
                    ));
                    // Anthropic opens tool input with an empty partial_json.
                    let input = block["input"].to_string();
                    let mut pieces = vec![String::new()];
                    pieces.extend(chunks(&input));
                    for piece in pieces {
                        ev.push((
                            "content_block_delta".into(),
                            json!({"type": "content_block_delta", "index": index,
                                   "delta": {"type": "input_json_delta", "partial_json": piece}}),
                        ));
                    }
                }
            }
            ev.push((
                "content_block_stop".into(),
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
        ev.push((
            "message_delta".into(),
            json!({
                "type": "message_delta",
                "delta": {"stop_reason": self.stop_reason, "stop_sequence": null},
                "usage": {
                    "input_tokens": self.input_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": self.output_tokens,
                },
            }),
        ));
        ev.push(("message_stop".into(), json!({"type": "message_stop"})));
        ev
    }
}

/// Splits text into pieces of at most [`CHUNK_CHARS`] chars (at least one piece).
pub fn chunks(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        return vec![String::new()];
    }
    chars
        .chunks(CHUNK_CHARS)
        .map(|c| c.iter().collect())
        .collect()
}

/// Formats one SSE frame: `event: NAME\ndata: JSON\n\n`.
pub fn frame(event: &str, data: &Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// The error body Anthropic sends: `{"type":"error","error":{"type":..,"message":..}}`.
pub fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// One parsed Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

impl SseEvent {
    /// `data` parsed as JSON.
    pub fn json(&self) -> serde_json::Result<Value> {
        serde_json::from_str(&self.data)
    }
}

/// Parses an SSE stream (per the WHATWG rules: frames separated by a blank
/// line, `field: value` lines, `:` comments ignored, CRLF tolerated).
pub fn parse_sse(text: &str) -> Vec<SseEvent> {
    let mut out = Vec::new();
    let mut event: Option<String> = None;
    let mut data: Vec<String> = Vec::new();
    let mut seen = false;
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.is_empty() {
            if seen {
                out.push(SseEvent {
                    event: event.take(),
                    data: data.join("\n"),
                });
                data.clear();
                seen = false;
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => {
                event = Some(value.to_string());
                seen = true;
            }
            "data" => {
                data.push(value.to_string());
                seen = true;
            }
            _ => {}
        }
    }
    out
}

/// Rebuilds the final message from a Messages SSE stream the way client
/// SDKs do (text deltas appended, `partial_json` concatenated and parsed).
pub fn assemble_message(events: &[SseEvent]) -> anyhow::Result<Value> {
    let mut message: Option<Value> = None;
    let mut partial: Vec<String> = Vec::new();
    for e in events {
        let d = e.json()?;
        let ty = d["type"].as_str().unwrap_or("");
        if let Some(name) = &e.event
            && name != ty
        {
            anyhow::bail!("event name {name} does not match data type {ty}");
        }
        match ty {
            "message_start" => message = Some(d["message"].clone()),
            "ping" => {}
            "content_block_start" => {
                let m = message
                    .as_mut()
                    .ok_or_else(|| anyhow::anyhow!("block before message_start"))?;
                let idx = d["index"].as_u64().unwrap_or(0) as usize;
                let content = m["content"]
                    .as_array_mut()
                    .ok_or_else(|| anyhow::anyhow!("no content"))?;
                if content.len() != idx {
                    anyhow::bail!("block index {idx} out of order");
                }
                content.push(d["content_block"].clone());
                partial.push(String::new());
            }
            "content_block_delta" => {
                let m = message
                    .as_mut()
                    .ok_or_else(|| anyhow::anyhow!("delta before message_start"))?;
                let idx = d["index"].as_u64().unwrap_or(0) as usize;
                let block = m["content"]
                    .get_mut(idx)
                    .ok_or_else(|| anyhow::anyhow!("delta for unknown block {idx}"))?;
                match d["delta"]["type"].as_str() {
                    Some("text_delta") => {
                        let add = d["delta"]["text"].as_str().unwrap_or("");
                        let cur = block["text"].as_str().unwrap_or("").to_string();
                        block["text"] = Value::String(cur + add);
                    }
                    Some("input_json_delta") => {
                        partial[idx].push_str(d["delta"]["partial_json"].as_str().unwrap_or(""));
                    }
                    other => anyhow::bail!("unknown delta type {other:?}"),
                }
            }
            "content_block_stop" => {
                let m = message
                    .as_mut()
                    .ok_or_else(|| anyhow::anyhow!("stop before message_start"))?;
                let idx = d["index"].as_u64().unwrap_or(0) as usize;
                let block = m["content"]
                    .get_mut(idx)
                    .ok_or_else(|| anyhow::anyhow!("stop for unknown block {idx}"))?;
                if block["type"] == "tool_use" {
                    let json = if partial[idx].is_empty() {
                        "{}"
                    } else {
                        &partial[idx]
                    };
                    block["input"] = serde_json::from_str(json)?;
                }
            }
            "message_delta" => {
                let m = message
                    .as_mut()
                    .ok_or_else(|| anyhow::anyhow!("message_delta before message_start"))?;
                if let Some(delta) = d["delta"].as_object() {
                    for (k, v) in delta {
                        m[k] = v.clone();
                    }
                }
                if let Some(usage) = d["usage"].as_object() {
                    for (k, v) in usage {
                        m["usage"][k] = v.clone();
                    }
                }
            }
            "message_stop" => {
                return message.ok_or_else(|| anyhow::anyhow!("message_stop before message_start"));
            }
            "error" => anyhow::bail!("error event: {}", d["error"]),
            other => anyhow::bail!("unknown event type {other}"),
        }
    }
    anyhow::bail!("stream ended without message_stop")
}
