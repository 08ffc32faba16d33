//! Building OpenAI Responses API answers (`POST /v1/responses`: one JSON
//! response object, or Server-Sent Events) from scripted blocks, and reading
//! such streams back, so agents that speak the Responses API (Codex) can run
//! against the same scripts as Claude Code.
//!
//! A text block becomes a `message` output item with one `output_text`
//! part; a tool_use block a `function_call` item (`arguments` is the input
//! as JSON text) or, when its input is a string, a `custom_tool_call` item
//! (freeform tools such as Codex's `apply_patch`).

use serde_json::{Value, json};

use crate::script::Block;
use crate::sse::{SseEvent, chunks, estimate_tokens, random_id};

/// A fully resolved Responses answer: output items with ids assigned.
#[derive(Debug, Clone)]
pub struct ResponsesAnswer {
    /// `resp_...` id.
    pub id: String,
    /// Model name echoed from the request.
    pub model: String,
    /// Seconds since the epoch.
    pub created_at: u64,
    /// Output items in their final (`completed`) form.
    pub output: Vec<Value>,
    /// Why the answer is `incomplete` (the rule's stop reason `max_tokens`
    /// gives `max_output_tokens`); `None` for a `completed` answer.
    pub incomplete_reason: Option<String>,
    /// Input tokens reported.
    pub input_tokens: u64,
    /// Output tokens reported.
    pub output_tokens: u64,
}

impl ResponsesAnswer {
    /// Resolves scripted blocks into output items, generating ids.
    pub fn new(model: &str, blocks: &[Block], stop_reason: &str, input_tokens: u64) -> Self {
        let mut out_bytes = 0usize;
        let output = blocks
            .iter()
            .map(|b| match b {
                Block::Text(t) => {
                    out_bytes += t.len();
                    json!({
                        "id": random_id("msg_"),
                        "type": "message",
                        "status": "completed",
                        "role": "assistant",
                        "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": t}],
                    })
                }
                Block::ToolUse(t) => {
                    let call_id = t.id.clone().unwrap_or_else(|| random_id("call_"));
                    match &t.input {
                        Value::String(input) => {
                            out_bytes += t.name.len() + input.len();
                            json!({
                                "id": random_id("ctc_"),
                                "type": "custom_tool_call",
                                "status": "completed",
                                "call_id": call_id,
                                "name": t.name,
                                "input": input,
                            })
                        }
                        input => {
                            let arguments = input.to_string();
                            out_bytes += t.name.len() + arguments.len();
                            json!({
                                "id": random_id("fc_"),
                                "type": "function_call",
                                "status": "completed",
                                "call_id": call_id,
                                "name": t.name,
                                "arguments": arguments,
                            })
                        }
                    }
                }
            })
            .collect();
        ResponsesAnswer {
            id: random_id("resp_"),
            model: model.to_string(),
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            output,
            incomplete_reason: (stop_reason == "max_tokens").then(|| "max_output_tokens".into()),
            input_tokens,
            output_tokens: estimate_tokens(out_bytes),
        }
    }

    fn usage(&self) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens + self.output_tokens,
        })
    }

    /// The response object with the given status, output and usage.
    fn object(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": match (&self.incomplete_reason, status) {
                (Some(r), "incomplete") => json!({"reason": r}),
                _ => Value::Null,
            },
            "instructions": null,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "store": false,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage,
        })
    }

    fn final_status(&self) -> &'static str {
        if self.incomplete_reason.is_some() {
            "incomplete"
        } else {
            "completed"
        }
    }

    /// The non-streaming JSON body (the final response object).
    pub fn to_response(&self) -> Value {
        self.object(self.final_status(), self.output.clone(), self.usage())
    }

    /// The SSE events, in order, as `(event name, data)`; every data object
    /// carries its `type` (the event name) and a `sequence_number`.
    ///
    /// The sequence is the one OpenAI sends: `response.created`,
    /// `response.in_progress`; per output item `response.output_item.added`,
    /// then for a message `response.content_part.added`,
    /// `response.output_text.delta`..., `response.output_text.done`,
    /// `response.content_part.done`; for a function call
    /// `response.function_call_arguments.delta`...,
    /// `response.function_call_arguments.done`; for a custom tool call
    /// `response.custom_tool_call_input.delta`...,
    /// `response.custom_tool_call_input.done`; then
    /// `response.output_item.done`; finally `response.completed` (or
    /// `response.incomplete`) with the whole response and its `usage`.
    pub fn to_events(&self) -> Vec<(String, Value)> {
        let mut ev: Vec<(String, Value)> = Vec::new();
        let mut push = |name: &str, mut data: Value| {
            data["type"] = json!(name);
            data["sequence_number"] = json!(ev.len());
            ev.push((name.to_string(), data));
        };
        let start = self.object("in_progress", Vec::new(), Value::Null);
        push("response.created", json!({"response": start}));
        push("response.in_progress", json!({"response": start}));
        for (index, item) in self.output.iter().enumerate() {
            let id = item["id"].clone();
            let mut added = item.clone();
            added["status"] = json!("in_progress");
            match item["type"].as_str() {
                Some("message") => {
                    added["content"] = json!([]);
                    push(
                        "response.output_item.added",
                        json!({"output_index": index, "item": added}),
                    );
                    let text = item["content"][0]["text"].as_str().unwrap_or("");
                    let part = |t: &str| json!({"type": "output_text", "annotations": [], "logprobs": [], "text": t});
                    push(
                        "response.content_part.added",
                        json!({"item_id": id, "output_index": index, "content_index": 0, "part": part("")}),
                    );
                    for piece in chunks(text) {
                        push(
                            "response.output_text.delta",
                            json!({"item_id": id, "output_index": index, "content_index": 0,
                                   "delta": piece, "logprobs": []}),
                        );
                    }
                    push(
                        "response.output_text.done",
                        json!({"item_id": id, "output_index": index, "content_index": 0,
                               "text": text, "logprobs": []}),
                    );
                    push(
                        "response.content_part.done",
                        json!({"item_id": id, "output_index": index, "content_index": 0, "part": part(text)}),
                    );
                }
                Some("function_call") => {
                    added["arguments"] = json!("");
                    push(
                        "response.output_item.added",
                        json!({"output_index": index, "item": added}),
                    );
                    let args = item["arguments"].as_str().unwrap_or("");
                    for piece in chunks(args) {
                        push(
                            "response.function_call_arguments.delta",
                            json!({"item_id": id, "output_index": index, "delta": piece}),
                        );
                    }
                    push(
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": index, "arguments": args}),
                    );
                }
                _ => {
                    added["input"] = json!("");
                    push(
                        "response.output_item.added",
                        json!({"output_index": index, "item": added}),
                    );
                    let input = item["input"].as_str().unwrap_or("");
                    for piece in chunks(input) {
                        push(
                            "response.custom_tool_call_input.delta",
                            json!({"item_id": id, "output_index": index, "delta": piece}),
                        );
                    }
                    push(
                        "response.custom_tool_call_input.done",
                        json!({"item_id": id, "output_index": index, "input": input}),
                    );
                }
            }
            push(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            );
        }
        let status = self.final_status();
        push(
            &format!("response.{status}"),
            json!({"response": self.to_response()}),
        );
        ev
    }
}

/// The error body OpenAI sends: `{"error": {"message", "type", "param", "code"}}`.
pub fn error_body(kind: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
}

/// Rebuilds the final response from a Responses SSE stream the way client
/// SDKs do: items from `response.output_item.added`, text and argument
/// deltas appended, checked against each `*.done` event and the item of
/// `response.output_item.done`; the result is the `response` of the closing
/// `response.completed` / `response.incomplete`, whose `output` must equal
/// the rebuilt items.
pub fn assemble_response(events: &[SseEvent]) -> anyhow::Result<Value> {
    let mut items: Vec<Value> = Vec::new();
    let mut created = false;
    for (n, e) in events.iter().enumerate() {
        let d = e.json()?;
        let ty = d["type"].as_str().unwrap_or("");
        if let Some(name) = &e.event
            && name != ty
        {
            anyhow::bail!("event name {name} does not match data type {ty}");
        }
        if d["sequence_number"].as_u64() != Some(n as u64) {
            anyhow::bail!(
                "event {n} ({ty}) has sequence_number {}",
                d["sequence_number"]
            );
        }
        let idx = d["output_index"].as_u64().unwrap_or(0) as usize;
        match ty {
            "response.created" => created = true,
            "response.in_progress" => {}
            "response.output_item.added" => {
                if !created {
                    anyhow::bail!("output item before response.created");
                }
                if items.len() != idx {
                    anyhow::bail!("output item {idx} out of order");
                }
                items.push(d["item"].clone());
            }
            "response.content_part.added" | "response.content_part.done" => {
                let it = item_mut(&mut items, idx, ty)?;
                let ci = d["content_index"].as_u64().unwrap_or(0) as usize;
                let content = it["content"]
                    .as_array_mut()
                    .ok_or_else(|| anyhow::anyhow!("content part for an item without content"))?;
                if ty.ends_with("added") {
                    if content.len() != ci {
                        anyhow::bail!("content part {ci} out of order");
                    }
                    content.push(d["part"].clone());
                } else if content.get(ci) != Some(&d["part"]) {
                    anyhow::bail!("content_part.done differs from the streamed part");
                }
            }
            "response.output_text.delta" | "response.output_text.done" => {
                let it = item_mut(&mut items, idx, ty)?;
                let ci = d["content_index"].as_u64().unwrap_or(0) as usize;
                let part = it["content"]
                    .get_mut(ci)
                    .ok_or_else(|| anyhow::anyhow!("text for unknown content part {ci}"))?;
                let cur = part["text"].as_str().unwrap_or("").to_string();
                if ty.ends_with("delta") {
                    part["text"] = json!(cur + d["delta"].as_str().unwrap_or(""));
                } else if d["text"].as_str() != Some(cur.as_str()) {
                    anyhow::bail!("output_text.done differs from the deltas");
                }
            }
            "response.function_call_arguments.delta"
            | "response.function_call_arguments.done"
            | "response.custom_tool_call_input.delta"
            | "response.custom_tool_call_input.done" => {
                let it = item_mut(&mut items, idx, ty)?;
                let field = if ty.contains("function_call") {
                    "arguments"
                } else {
                    "input"
                };
                let cur = it[field].as_str().unwrap_or("").to_string();
                if ty.ends_with("delta") {
                    it[field] = json!(cur + d["delta"].as_str().unwrap_or(""));
                } else if d[field].as_str() != Some(cur.as_str()) {
                    anyhow::bail!("{ty} differs from the deltas");
                }
            }
            "response.output_item.done" => {
                let it = item_mut(&mut items, idx, ty)?;
                let done = &d["item"];
                for field in ["id", "type", "call_id", "name", "arguments", "input"] {
                    if it.get(field).is_some() && it[field] != done[field] {
                        anyhow::bail!("output_item.done changes {field} of item {idx}");
                    }
                }
                if it.get("content").is_some() && it["content"] != done["content"] {
                    anyhow::bail!("output_item.done changes the content of item {idx}");
                }
                *it = done.clone();
            }
            "response.completed" | "response.incomplete" => {
                let response = d["response"].clone();
                if response["output"] != json!(items) {
                    anyhow::bail!("the final response's output differs from the streamed items");
                }
                if n + 1 != events.len() {
                    anyhow::bail!("events after {ty}");
                }
                return Ok(response);
            }
            "response.failed" | "error" => anyhow::bail!("error event: {d}"),
            other => anyhow::bail!("unknown event type {other}"),
        }
    }
    anyhow::bail!("stream ended without response.completed")
}

fn item_mut<'a>(items: &'a mut [Value], idx: usize, ty: &str) -> anyhow::Result<&'a mut Value> {
    items
        .get_mut(idx)
        .ok_or_else(|| anyhow::anyhow!("{ty} for unknown output item {idx}"))
}
