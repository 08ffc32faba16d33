//! Agent adapters: how to start an agent kind, talk to it on stdin, and understand what
//! it prints. One adapter per protocol (Claude Code's stream-json here, the Agent Client
//! Protocol in `acp.rs`; Codex next), all line-oriented JSON over stdio, behind one trait.

use claude_vm_protocol::api::{AgentSpec, Decision, EventBody, PermissionMode};
use serde_json::{Value, json};

/// What one line of agent output means.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Something for the transcript.
    Event(EventBody),
    /// The agent's session id (for resuming).
    Session(String),
    /// A tool use waits for a decision; `request_id` is the agent's handle for it.
    Approval {
        request_id: String,
        tool: String,
        input: Value,
    },
    /// Bytes to write back to the agent at once (protocol-level answers, e.g. JSON-RPC
    /// responses or the next step of a handshake).
    Reply(Vec<u8>),
    /// The agent cannot go on (e.g. its protocol handshake was refused): stop it and fail
    /// the conversation with this reason.
    Fail(String),
}

/// One agent protocol. An adapter instance serves one agent process (a new one is made
/// for each start), so it may keep protocol state: request ids, the session it opened.
pub trait Adapter: Send {
    /// Program and arguments to start the agent.
    fn command(
        &self,
        spec: &AgentSpec,
        resume: Option<&str>,
        mode: PermissionMode,
    ) -> (String, Vec<String>);
    /// Bytes to write as soon as the agent starts (a protocol handshake); none by default.
    fn startup(&mut self, _resume: Option<&str>, _project_dir: &str) -> Vec<u8> {
        Vec::new()
    }
    /// Whether the agent can take a message now (a handshake may still be running).
    fn ready(&self) -> bool {
        true
    }
    /// Bytes that deliver a user message.
    fn message(&mut self, text: &str) -> Vec<u8>;
    /// Whether a message written while a turn runs reaches the agent within that turn.
    fn accepts_mid_turn(&self) -> bool;
    /// Bytes that interrupt the running turn, if the agent supports it.
    fn interrupt(&mut self, n: u64) -> Option<Vec<u8>>;
    /// Bytes answering an approval request.
    fn decision(&mut self, request_id: &str, input: &Value, decision: &Decision) -> Vec<u8>;
    /// Understand one line of output; an error means the agent is not speaking its protocol.
    fn parse(&mut self, line: &str) -> Result<Vec<Parsed>, String>;
}

/// The adapter for an agent kind.
pub fn for_kind(kind: &str) -> Option<Box<dyn Adapter>> {
    match kind {
        "claude" => Some(Box::new(Claude)),
        "codex" => Some(Box::new(crate::codex::Codex::new())),
        "gemini" | "goose" | "qwen" | "acp" => Some(Box::new(crate::acp::Acp::new(kind))),
        _ => None,
    }
}

/// Longest tool output kept in the transcript.
const MAX_TOOL_OUTPUT: usize = 16 * 1024;

pub(crate) fn truncate(mut s: String) -> String {
    if s.len() > MAX_TOOL_OUTPUT {
        let mut cut = MAX_TOOL_OUTPUT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("\n[... truncated]");
    }
    s
}

/// Claude Code, driven with `-p --input-format stream-json --output-format stream-json`.
pub struct Claude;

fn line(v: Value) -> Vec<u8> {
    let mut b = serde_json::to_vec(&v).expect("json");
    b.push(b'\n');
    b
}

impl Adapter for Claude {
    fn command(
        &self,
        spec: &AgentSpec,
        resume: Option<&str>,
        mode: PermissionMode,
    ) -> (String, Vec<String>) {
        let mut args: Vec<String> = [
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
        ]
        .map(String::from)
        .to_vec();
        match mode {
            PermissionMode::Skip => args.push("--dangerously-skip-permissions".into()),
            PermissionMode::Ask => {
                args.extend(["--permission-prompt-tool".into(), "stdio".into()]);
            }
        }
        if let Some(session) = resume {
            args.extend(["--resume".into(), session.to_owned()]);
        }
        args.extend(spec.args.iter().cloned());
        (spec.program.clone(), args)
    }

    fn message(&mut self, text: &str) -> Vec<u8> {
        line(json!({"type": "user", "message": {"role": "user", "content": text}}))
    }

    fn accepts_mid_turn(&self) -> bool {
        true
    }

    fn interrupt(&mut self, n: u64) -> Option<Vec<u8>> {
        Some(line(json!({
            "type": "control_request",
            "request_id": format!("claude-vm-interrupt-{n}"),
            "request": {"subtype": "interrupt"}
        })))
    }

    fn decision(&mut self, request_id: &str, input: &Value, decision: &Decision) -> Vec<u8> {
        let response = if decision.allow {
            json!({"behavior": "allow", "updatedInput": input})
        } else {
            json!({"behavior": "deny", "message": decision.message.clone().unwrap_or_else(|| "The user denied this.".into())})
        };
        line(json!({
            "type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": response}
        }))
    }

    fn parse(&mut self, raw: &str) -> Result<Vec<Parsed>, String> {
        let v: Value = serde_json::from_str(raw).map_err(|e| format!("not JSON ({e})"))?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .ok_or("no \"type\" field")?;
        let mut out = Vec::new();
        if let Some(s) = v.get("session_id").and_then(Value::as_str)
            && matches!(kind, "system" | "result")
        {
            out.push(Parsed::Session(s.to_owned()));
        }
        match kind {
            "assistant" => {
                for block in content(&v) {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                            if !text.is_empty() {
                                out.push(Parsed::Event(EventBody::Assistant {
                                    text: text.to_owned(),
                                }));
                            }
                        }
                        Some("tool_use") => out.push(Parsed::Event(EventBody::ToolCall {
                            id: str_field(block, "id"),
                            name: str_field(block, "name"),
                            input: block.get("input").cloned().unwrap_or(Value::Null),
                        })),
                        _ => {}
                    }
                }
            }
            "user" => {
                for block in content(&v) {
                    if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                        out.push(Parsed::Event(EventBody::ToolResult {
                            id: str_field(block, "tool_use_id"),
                            output: truncate(tool_output(block.get("content"))),
                            is_error: block
                                .get("is_error")
                                .and_then(Value::as_bool)
                                .unwrap_or(false),
                        }));
                    }
                }
            }
            "result" => {
                let is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(false);
                let result = v.get("result").and_then(Value::as_str).map(str::to_owned);
                out.push(Parsed::Event(EventBody::TurnEnd { result, is_error }));
            }
            "control_request" => {
                let req = v.get("request").cloned().unwrap_or(Value::Null);
                if req.get("subtype").and_then(Value::as_str) == Some("can_use_tool") {
                    out.push(Parsed::Approval {
                        request_id: str_field(&v, "request_id"),
                        tool: str_field(&req, "tool_name"),
                        input: req.get("input").cloned().unwrap_or(Value::Null),
                    });
                }
            }
            // init, hooks, stream events, control responses, rate limits...: nothing to show
            _ => {}
        }
        Ok(out)
    }
}

fn content(v: &Value) -> Vec<&Value> {
    match v.pointer("/message/content") {
        Some(Value::Array(a)) => a.iter().collect(),
        _ => Vec::new(),
    }
}

fn str_field(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// A tool result's content: a string or a list of text blocks.
fn tool_output(c: Option<&Value>) -> String {
    match c {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, want: &[Parsed]) {
        assert_eq!(Claude.parse(line).unwrap(), want, "{line}");
    }

    #[test]
    fn every_agent_kind_of_the_config_is_known_or_refused_clearly() {
        assert!(for_kind("claude").is_some());
        assert!(for_kind("codex").is_some());
        for acp in ["gemini", "goose", "qwen", "acp"] {
            assert!(for_kind(acp).is_some(), "{acp}");
        }
        assert!(for_kind("cursor").is_none());
    }

    #[test]
    fn claude_stream_json_lines() {
        check(
            r#"{"type":"system","subtype":"init","session_id":"s1","tools":[]}"#,
            &[Parsed::Session("s1".into())],
        );
        check(
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"t1","name":"Write","input":{"file_path":"/a"}}]},"session_id":"s1"}"#,
            &[
                Parsed::Event(EventBody::Assistant { text: "hi".into() }),
                Parsed::Event(EventBody::ToolCall {
                    id: "t1".into(),
                    name: "Write".into(),
                    input: json!({"file_path": "/a"}),
                }),
            ],
        );
        check(
            r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"done"}]}]}}"#,
            &[Parsed::Event(EventBody::ToolResult {
                id: "t1".into(),
                output: "done".into(),
                is_error: false,
            })],
        );
        check(
            r#"{"type":"result","subtype":"success","is_error":false,"result":"All done","session_id":"s1"}"#,
            &[
                Parsed::Session("s1".into()),
                Parsed::Event(EventBody::TurnEnd {
                    result: Some("All done".into()),
                    is_error: false,
                }),
            ],
        );
        check(
            r#"{"type":"control_request","request_id":"r1","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"ls"}}}"#,
            &[Parsed::Approval {
                request_id: "r1".into(),
                tool: "Bash".into(),
                input: json!({"command": "ls"}),
            }],
        );
        check(r#"{"type":"stream_event","event":{}}"#, &[]);
        assert!(Claude.parse("garbage").is_err());
        assert!(Claude.parse(r#"{"no":"type"}"#).is_err());
    }

    #[test]
    fn long_tool_output_is_truncated_on_a_char_boundary() {
        let long = "é".repeat(MAX_TOOL_OUTPUT);
        let t = truncate(long);
        assert!(t.len() < MAX_TOOL_OUTPUT + 40 && t.ends_with("[... truncated]"));
    }

    #[test]
    fn messages_and_control_lines() {
        // Keys stay in the order written (serde_json's `preserve_order`, which the ACP
        // schema crate turns on).
        assert_eq!(
            Claude.message("hello\n\"x\""),
            b"{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":\"hello\\n\\\"x\\\"\"}}\n".to_vec()
        );
        let (prog, args) = Claude.command(
            &AgentSpec {
                kind: "claude".into(),
                program: "claude".into(),
                args: vec!["--model".into(), "m".into()],
                env: Default::default(),
                turn_timeout_secs: None,
                version: None,
            },
            Some("s1"),
            PermissionMode::Skip,
        );
        assert_eq!(prog, "claude");
        assert_eq!(
            args.join(" "),
            "-p --input-format stream-json --output-format stream-json --verbose --dangerously-skip-permissions --resume s1 --model m"
        );
    }
}
