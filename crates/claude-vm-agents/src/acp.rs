//! The Agent Client Protocol (ACP) adapter, for Gemini CLI, Goose, Qwen Code and any other
//! agent that speaks ACP: JSON-RPC 2.0 over stdio, one message a line.
//!
//! The daemon is the ACP *client*. It sends `initialize`, then opens a session with
//! `session/load` (when resuming and the agent advertises `loadSession`) or `session/new`,
//! authenticating first if the agent insists; each user message is a `session/prompt`
//! request. While a prompt runs the agent streams `session/update` notifications (message
//! chunks, tool calls and their updates, plans) and may call the client's
//! `session/request_permission`; the prompt's response (`stopReason`) ends the turn.
//! `session/cancel` interrupts. The client advertises no file system or terminal
//! capability, so the agent uses its own tools inside the workspace.
//!
//! ACP takes one prompt at a time, so [`Acp::accepts_mid_turn`] is false and the
//! conversation queues messages sent during a turn until it ends. Message chunks are joined
//! into whole `assistant` events at boundaries: a tool call, a plan, a permission request or
//! the end of the turn.

use std::cell::Cell;
use std::collections::HashMap;

use claude_vm_protocol::api::{AgentSpec, Decision, EventBody, PermissionMode};
use serde_json::{Value, json};

use crate::adapter::{Adapter, Parsed, truncate};

/// The ACP major version this client speaks.
const PROTOCOL_VERSION: u64 = 1;

/// JSON-RPC error code ACP uses for "authentication required".
const AUTH_REQUIRED: i64 = -32000;

/// What one of our requests was, to understand its response.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Call {
    Initialize,
    Authenticate,
    NewSession,
    LoadSession,
    Prompt,
}

/// How far the handshake got.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// `initialize` sent.
    Init,
    /// Opening a session (`load` tells which way); updates are history being replayed.
    Opening { load: bool },
    /// A session is open: prompts may be sent.
    Ready,
    /// The handshake failed; the conversation was told.
    Failed,
}

/// What we know of one tool call.
#[derive(Debug, Default)]
struct Tool {
    announced: bool,
    done: bool,
}

/// A permission request waiting for the user.
#[derive(Debug)]
struct Permission {
    /// The agent's JSON-RPC id, echoed in the answer.
    id: Value,
    /// (optionId, kind) of each option offered.
    options: Vec<(String, String)>,
}

/// An ACP agent process. One instance per process: it holds the protocol state.
pub struct Acp {
    kind: String,
    /// Whether tool uses are put to the user (set by [`Adapter::command`], which learns the
    /// conversation's permission mode; the agent is only spoken to afterwards).
    ask: Cell<bool>,
    next_id: u64,
    calls: HashMap<u64, Call>,
    phase: Phase,
    cwd: String,
    resume: Option<String>,
    can_load: bool,
    auth_methods: Vec<String>,
    /// The session call to repeat after authenticating.
    auth_retry: Option<Call>,
    session: Option<String>,
    /// The running prompt's request id.
    prompt: Option<u64>,
    /// Message chunks not yet shown.
    text: String,
    /// The last text shown in the current turn (the turn's result).
    last_text: Option<String>,
    tools: HashMap<String, Tool>,
    plans: u64,
    permissions: HashMap<String, Permission>,
}

/// Default arguments that put each known CLI in ACP mode; an ACP flag already among the
/// configured arguments replaces them (for CLIs that still want `--experimental-acp`).
fn acp_args(kind: &str) -> &'static [&'static str] {
    match kind {
        "gemini" | "qwen" => &["--acp"],
        "goose" => &["acp"],
        _ => &[],
    }
}

impl Acp {
    pub fn new(kind: &str) -> Acp {
        Acp {
            kind: kind.to_owned(),
            ask: Cell::new(false),
            next_id: 0,
            calls: HashMap::new(),
            phase: Phase::Init,
            cwd: String::new(),
            resume: None,
            can_load: false,
            auth_methods: Vec::new(),
            auth_retry: None,
            session: None,
            prompt: None,
            text: String::new(),
            last_text: None,
            tools: HashMap::new(),
            plans: 0,
            permissions: HashMap::new(),
        }
    }

    /// A request of ours, remembered until its response arrives.
    fn request(&mut self, call: Call, method: &str, params: Value) -> Vec<u8> {
        let id = self.next_id;
        self.next_id += 1;
        self.calls.insert(id, call);
        line(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
    }

    /// Open the session: load the one being resumed when the agent can, else a new one.
    fn open(&mut self, load: bool) -> Vec<u8> {
        let load = load && self.can_load && self.resume.is_some();
        self.phase = Phase::Opening { load };
        if load {
            let params = json!({"sessionId": self.resume, "cwd": self.cwd, "mcpServers": []});
            self.request(Call::LoadSession, "session/load", params)
        } else {
            let params = json!({"cwd": self.cwd, "mcpServers": []});
            self.request(Call::NewSession, "session/new", params)
        }
    }

    fn fail(&mut self, reason: String) -> Vec<Parsed> {
        self.phase = Phase::Failed;
        vec![Parsed::Fail(reason)]
    }

    /// Show the message chunks gathered so far as one assistant event.
    fn flush(&mut self, out: &mut Vec<Parsed>) {
        let text = std::mem::take(&mut self.text);
        if !text.trim().is_empty() {
            self.last_text = Some(text.clone());
            out.push(Parsed::Event(EventBody::Assistant { text }));
        }
    }

    /// The authentication method to use unasked: one fed by an API key from the environment
    /// rather than an interactive login.
    fn auth_method(&self) -> Option<String> {
        let usable: Vec<&String> = self
            .auth_methods
            .iter()
            .filter(|m| {
                let m = m.to_ascii_lowercase();
                !m.contains("oauth") && !m.contains("login")
            })
            .collect();
        usable
            .iter()
            .find(|m| m.to_ascii_lowercase().contains("key"))
            .or(usable.first())
            .map(|m| (*m).clone())
    }

    fn on_response(&mut self, id: &Value, v: &Value) -> Vec<Parsed> {
        let Some(call) = id.as_u64().and_then(|n| self.calls.remove(&n)) else {
            if id.is_null()
                && let Some(e) = v.get("error")
            {
                // The agent could not even read one of our messages.
                return self.fail(format!("the agent rejected a message: {}", error_text(e)));
            }
            return Vec::new();
        };
        let error = v.get("error");
        let result = v.get("result").unwrap_or(&Value::Null);
        match (call, error) {
            (Call::Initialize, Some(e)) => self.fail(format!(
                "the agent refused to initialize: {}",
                error_text(e)
            )),
            (Call::Initialize, None) => {
                let version = result.get("protocolVersion").and_then(Value::as_u64);
                if version != Some(PROTOCOL_VERSION) {
                    return self.fail(format!(
                        "the agent speaks ACP version {}, claude-vm speaks version {PROTOCOL_VERSION}",
                        version.map_or("(none)".to_owned(), |n| n.to_string())
                    ));
                }
                self.can_load = result
                    .pointer("/agentCapabilities/loadSession")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                self.auth_methods = result
                    .get("authMethods")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|m| m.get("id").and_then(Value::as_str))
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                vec![Parsed::Reply(self.open(true))]
            }
            (Call::NewSession | Call::LoadSession, Some(e))
                if e.get("code").and_then(Value::as_i64) == Some(AUTH_REQUIRED)
                    && self.auth_retry.is_none() =>
            {
                let Some(method) = self.auth_method() else {
                    return self.fail(format!(
                        "the agent needs authentication ({}) and offers no method that works unattended (methods: {}); provide its credentials in agents.{}.env",
                        error_text(e),
                        if self.auth_methods.is_empty() {
                            "none".to_owned()
                        } else {
                            self.auth_methods.join(", ")
                        },
                        self.kind
                    ));
                };
                self.auth_retry = Some(call);
                let bytes = self.request(
                    Call::Authenticate,
                    "authenticate",
                    json!({"methodId": method}),
                );
                vec![Parsed::Reply(bytes)]
            }
            (Call::Authenticate, Some(e)) => self.fail(format!(
                "the agent's authentication failed: {}; provide its credentials in agents.{}.env",
                error_text(e),
                self.kind
            )),
            (Call::Authenticate, None) => {
                let load = self.auth_retry == Some(Call::LoadSession);
                vec![Parsed::Reply(self.open(load))]
            }
            // The session to resume is gone: start afresh rather than fail.
            (Call::LoadSession, Some(_)) => vec![Parsed::Reply(self.open(false))],
            (Call::NewSession, Some(e)) => self.fail(format!(
                "the agent cannot open a session: {}",
                error_text(e)
            )),
            (Call::NewSession | Call::LoadSession, None) => {
                let session = if call == Call::LoadSession {
                    self.resume.clone()
                } else {
                    result
                        .get("sessionId")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                };
                let Some(session) = session else {
                    return self.fail("the agent opened a session without an id".into());
                };
                self.phase = Phase::Ready;
                self.session = Some(session.clone());
                vec![Parsed::Session(session)]
            }
            (Call::Prompt, _) => {
                let mut out = Vec::new();
                self.flush(&mut out);
                if self.prompt == id.as_u64() {
                    self.prompt = None;
                }
                // Requests of the finished turn can no longer be answered.
                self.permissions.clear();
                let end = match error {
                    Some(e) => EventBody::TurnEnd {
                        result: Some(error_text(e)),
                        is_error: true,
                    },
                    None => match result.get("stopReason").and_then(Value::as_str) {
                        Some("end_turn") | None => EventBody::TurnEnd {
                            result: self.last_text.take(),
                            is_error: false,
                        },
                        Some("cancelled") => EventBody::TurnEnd {
                            result: None,
                            is_error: false,
                        },
                        Some(other) => EventBody::TurnEnd {
                            result: Some(format!("the agent stopped the turn: {other}")),
                            is_error: true,
                        },
                    },
                };
                self.last_text = None;
                out.push(Parsed::Event(end));
                out
            }
        }
    }

    fn on_request(&mut self, id: &Value, method: &str, params: &Value) -> Vec<Parsed> {
        if method != "session/request_permission" {
            // No file system or terminal capability was advertised: nothing else is ours.
            return vec![Parsed::Reply(line(json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": -32601, "message": format!("method not found: {method}")}
            })))];
        }
        let mut out = Vec::new();
        self.flush(&mut out);
        let options: Vec<(String, String)> = params
            .get("options")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|o| (str_field(o, "optionId"), str_field(o, "kind")))
                    .collect()
            })
            .unwrap_or_default();
        let permission = Permission {
            id: id.clone(),
            options,
        };
        if !self.ask.get() {
            // The workspace is the sandbox: allow without asking anyone.
            out.push(Parsed::Reply(answer(&permission, true)));
            return out;
        }
        let call = params.get("toolCall").unwrap_or(&Value::Null);
        let key = id.to_string();
        self.permissions.insert(key.clone(), permission);
        out.push(Parsed::Approval {
            request_id: key,
            tool: tool_name(call),
            input: tool_input(call),
        });
        out
    }

    fn on_update(&mut self, update: &Value) -> Vec<Parsed> {
        if matches!(self.phase, Phase::Opening { load: true }) {
            // History replayed by session/load: the transcript already has it.
            return Vec::new();
        }
        let mut out = Vec::new();
        match update.get("sessionUpdate").and_then(Value::as_str) {
            Some("agent_message_chunk") => {
                if let Some(t) = update.pointer("/content/text").and_then(Value::as_str) {
                    self.text.push_str(t);
                }
            }
            Some("tool_call" | "tool_call_update") => {
                self.flush(&mut out);
                self.on_tool(update, &mut out);
            }
            Some("plan") => {
                self.flush(&mut out);
                self.plans += 1;
                let entries = update.get("entries").cloned().unwrap_or(json!([]));
                let list = entries.as_array().cloned().unwrap_or_default();
                let done = list
                    .iter()
                    .filter(|e| e.get("status").and_then(Value::as_str) == Some("completed"))
                    .count();
                let id = format!("plan-{}", self.plans);
                let checklist = list
                    .iter()
                    .map(|e| {
                        let mark = match e.get("status").and_then(Value::as_str) {
                            Some("completed") => "[x]",
                            Some("in_progress") => "[~]",
                            _ => "[ ]",
                        };
                        format!("{mark} {}", str_field(e, "content"))
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                out.push(Parsed::Event(EventBody::ToolCall {
                    id: id.clone(),
                    name: "Plan".into(),
                    input: json!({
                        "description": format!("{} steps, {done} done", list.len()),
                        "entries": entries,
                    }),
                }));
                out.push(Parsed::Event(EventBody::ToolResult {
                    id,
                    output: truncate(checklist),
                    is_error: false,
                }));
            }
            // Thoughts, echoes of the user's message, commands, modes, usage: nothing to show.
            _ => {}
        }
        out
    }

    /// A tool call is shown when first reported, its result when it completes or fails.
    fn on_tool(&mut self, u: &Value, out: &mut Vec<Parsed>) {
        let id = str_field(u, "toolCallId");
        let tool = self.tools.entry(id.clone()).or_default();
        if !tool.announced {
            tool.announced = true;
            out.push(Parsed::Event(EventBody::ToolCall {
                id: id.clone(),
                name: tool_name(u),
                input: tool_input(u),
            }));
        }
        let status = u.get("status").and_then(Value::as_str);
        if matches!(status, Some("completed" | "failed")) && !tool.done {
            tool.done = true;
            out.push(Parsed::Event(EventBody::ToolResult {
                id,
                output: truncate(tool_output(u)),
                is_error: status == Some("failed"),
            }));
        }
    }
}

impl Adapter for Acp {
    fn command(
        &self,
        spec: &AgentSpec,
        _resume: Option<&str>,
        mode: PermissionMode,
    ) -> (String, Vec<String>) {
        self.ask.set(mode == PermissionMode::Ask);
        let defaults = acp_args(&self.kind);
        let configured_acp = spec
            .args
            .iter()
            .any(|a| a == "acp" || a == "--acp" || a == "--experimental-acp");
        let mut args: Vec<String> = if configured_acp {
            Vec::new()
        } else {
            defaults.iter().map(|s| (*s).to_owned()).collect()
        };
        args.extend(spec.args.iter().cloned());
        (spec.program.clone(), args)
    }

    fn startup(&mut self, resume: Option<&str>, project_dir: &str) -> Vec<u8> {
        self.cwd = project_dir.to_owned();
        self.resume = resume.map(str::to_owned);
        self.request(
            Call::Initialize,
            "initialize",
            json!({
                "protocolVersion": PROTOCOL_VERSION,
                "clientCapabilities": {
                    "fs": {"readTextFile": false, "writeTextFile": false},
                    "terminal": false
                },
                "clientInfo": {"name": "claude-vm", "version": env!("CARGO_PKG_VERSION")}
            }),
        )
    }

    fn ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    fn message(&mut self, text: &str) -> Vec<u8> {
        self.text.clear();
        self.last_text = None;
        let params = json!({
            "sessionId": self.session,
            "prompt": [{"type": "text", "text": text}]
        });
        let bytes = self.request(Call::Prompt, "session/prompt", params);
        self.prompt = Some(self.next_id - 1);
        bytes
    }

    fn accepts_mid_turn(&self) -> bool {
        false
    }

    fn interrupt(&mut self, _n: u64) -> Option<Vec<u8>> {
        let session = self.session.clone()?;
        let mut out = line(json!({
            "jsonrpc": "2.0",
            "method": "session/cancel",
            "params": {"sessionId": session}
        }));
        // Permission requests of the cancelled turn must be answered "cancelled".
        for (_, p) in self.permissions.drain() {
            out.extend(line(json!({
                "jsonrpc": "2.0",
                "id": p.id,
                "result": {"outcome": {"outcome": "cancelled"}}
            })));
        }
        Some(out)
    }

    fn decision(&mut self, request_id: &str, _input: &Value, decision: &Decision) -> Vec<u8> {
        // Gone when the turn ended or was cancelled meanwhile: nothing to answer.
        match self.permissions.remove(request_id) {
            Some(p) => answer(&p, decision.allow),
            None => Vec::new(),
        }
    }

    fn parse(&mut self, raw: &str) -> Result<Vec<Parsed>, String> {
        let v: Value = serde_json::from_str(raw).map_err(|e| format!("not JSON ({e})"))?;
        if !v.is_object() {
            return Err("not a JSON-RPC message".into());
        }
        let method = v.get("method").and_then(Value::as_str);
        let id = v.get("id").filter(|i| !i.is_null());
        let params = v.get("params").unwrap_or(&Value::Null);
        Ok(match (method, id) {
            (Some(m), Some(id)) => self.on_request(id, m, params),
            (Some("session/update"), None) => {
                self.on_update(params.get("update").unwrap_or(&Value::Null))
            }
            (Some(_), None) => Vec::new(),
            (None, _) if v.get("result").is_some() || v.get("error").is_some() => {
                let id = v.get("id").cloned().unwrap_or(Value::Null);
                self.on_response(&id, &v)
            }
            (None, _) => return Err("not a JSON-RPC message (no method, result or error)".into()),
        })
    }
}

fn line(v: Value) -> Vec<u8> {
    let mut b = serde_json::to_vec(&v).expect("json");
    b.push(b'\n');
    b
}

fn str_field(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_owned()
}

fn error_text(e: &Value) -> String {
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("unknown error");
    match e.get("data") {
        Some(Value::String(d)) if !d.is_empty() => format!("{message} ({d})"),
        Some(d) if !d.is_null() => format!("{message} ({d})"),
        _ => message.to_owned(),
    }
}

/// The answer to a permission request: the first allow (or reject) option offered, allowing
/// once rather than always; "cancelled" when no option fits.
fn answer(p: &Permission, allow: bool) -> Vec<u8> {
    let wanted: &[&str] = if allow {
        &["allow_once", "allow_always"]
    } else {
        &["reject_once", "reject_always"]
    };
    let option = wanted
        .iter()
        .find_map(|k| p.options.iter().find(|(_, kind)| kind == k));
    let outcome = match option {
        Some((id, _)) => json!({"outcome": "selected", "optionId": id}),
        None => json!({"outcome": "cancelled"}),
    };
    line(json!({"jsonrpc": "2.0", "id": p.id, "result": {"outcome": outcome}}))
}

/// What to call a tool: its programmatic name when given, else its title, else its kind.
fn tool_name(call: &Value) -> String {
    ["name", "title", "kind"]
        .iter()
        .find_map(|k| {
            call.get(*k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("tool")
        .to_owned()
}

/// A tool call's input: its raw input when the agent shares it, else what it touches.
fn tool_input(call: &Value) -> Value {
    if let Some(raw) = call.get("rawInput").filter(|r| !r.is_null()) {
        return raw.clone();
    }
    let mut input = serde_json::Map::new();
    if let Some(kind) = call.get("kind").filter(|k| !k.is_null()) {
        input.insert("kind".into(), kind.clone());
    }
    if let Some(locations) = call.get("locations").and_then(Value::as_array)
        && !locations.is_empty()
    {
        if let Some(path) = locations[0].get("path") {
            input.insert("path".into(), path.clone());
        }
        input.insert("locations".into(), Value::Array(locations.clone()));
    }
    Value::Object(input)
}

/// A tool call's output as text: its content blocks, else its raw output.
fn tool_output(u: &Value) -> String {
    let mut parts = Vec::new();
    for c in u
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match c.get("type").and_then(Value::as_str) {
            Some("content") => {
                if let Some(t) = c.pointer("/content/text").and_then(Value::as_str) {
                    parts.push(t.to_owned());
                }
            }
            Some("diff") => parts.push(format!("edited {}", str_field(c, "path"))),
            Some("terminal") => parts.push(format!("terminal {}", str_field(c, "terminalId"))),
            _ => {}
        }
    }
    if !parts.is_empty() {
        return parts.join("\n");
    }
    match u.get("rawOutput") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|b| match b.get("text").and_then(Value::as_str) {
                Some(t) => t.to_owned(),
                None => b.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, args: &[&str]) -> AgentSpec {
        AgentSpec {
            kind: kind.into(),
            program: kind.into(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: Default::default(),
            turn_timeout_secs: None,
            version: None,
        }
    }

    fn json_of(bytes: &[u8]) -> Value {
        let s = std::str::from_utf8(bytes).unwrap();
        assert!(s.ends_with('\n') && s.matches('\n').count() == 1, "{s:?}");
        serde_json::from_str(s).unwrap()
    }

    fn reply(p: &[Parsed]) -> Value {
        match p {
            [Parsed::Reply(b)] => json_of(b),
            other => panic!("expected one reply, got {other:?}"),
        }
    }

    /// An adapter through the handshake with a new session `s1`.
    fn ready(mode: PermissionMode) -> Acp {
        let mut a = Acp::new("gemini");
        a.command(&spec("gemini", &[]), None, mode);
        a.startup(None, "/workspace/p");
        a.parse(
            r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"agentCapabilities":{}}}"#,
        )
        .unwrap();
        let p = a
            .parse(r#"{"jsonrpc":"2.0","id":1,"result":{"sessionId":"s1"}}"#)
            .unwrap();
        assert_eq!(p, [Parsed::Session("s1".into())]);
        a
    }

    #[test]
    fn default_arguments_per_kind_and_an_acp_flag_of_the_config_replaces_them() {
        let cmd = |kind: &str, args: &[&str]| {
            let (p, a) = Acp::new(kind).command(&spec(kind, args), None, PermissionMode::Skip);
            format!("{p} {}", a.join(" ")).trim().to_owned()
        };
        assert_eq!(cmd("gemini", &[]), "gemini --acp");
        assert_eq!(cmd("qwen", &["--model", "m"]), "qwen --acp --model m");
        assert_eq!(cmd("goose", &[]), "goose acp");
        assert_eq!(
            cmd("gemini", &["--experimental-acp"]),
            "gemini --experimental-acp"
        );
        assert_eq!(cmd("acp", &["--stdio"]), "acp --stdio");
    }

    #[test]
    fn handshake_new_session_then_prompt() {
        let mut a = Acp::new("qwen");
        a.command(&spec("qwen", &[]), Some("old"), PermissionMode::Skip);
        let init = json_of(&a.startup(Some("old"), "/workspace/p"));
        assert_eq!(init["method"], "initialize");
        assert_eq!(init["id"], 0);
        assert_eq!(init["params"]["protocolVersion"], 1);
        assert_eq!(
            init["params"]["clientCapabilities"],
            json!({"fs": {"readTextFile": false, "writeTextFile": false}, "terminal": false})
        );
        assert!(!a.ready());
        // No loadSession capability: a new session even though one is being resumed.
        let new = reply(
            &a.parse(r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"agentCapabilities":{"loadSession":false,"promptCapabilities":{"image":true}},"authMethods":[]}}"#)
                .unwrap(),
        );
        assert_eq!(new["method"], "session/new");
        assert_eq!(
            new["params"],
            json!({"cwd": "/workspace/p", "mcpServers": []})
        );
        assert!(!a.ready());
        let p = a
            .parse(r#"{"jsonrpc":"2.0","id":1,"result":{"sessionId":"sess-9","modes":null}}"#)
            .unwrap();
        assert_eq!(p, [Parsed::Session("sess-9".into())]);
        assert!(a.ready());
        assert!(!a.accepts_mid_turn());
        let prompt = json_of(&a.message("hello \"there\""));
        assert_eq!(prompt["method"], "session/prompt");
        assert_eq!(prompt["id"], 2);
        assert_eq!(
            prompt["params"],
            json!({"sessionId": "sess-9", "prompt": [{"type": "text", "text": "hello \"there\""}]})
        );
    }

    #[test]
    fn resume_loads_the_session_ignores_its_replay_and_falls_back_to_a_new_one() {
        let mut a = Acp::new("goose");
        a.command(&spec("goose", &[]), Some("s0"), PermissionMode::Skip);
        a.startup(Some("s0"), "/w");
        let load = reply(
            &a.parse(r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"agentCapabilities":{"loadSession":true}}}"#)
                .unwrap(),
        );
        assert_eq!(load["method"], "session/load");
        assert_eq!(
            load["params"],
            json!({"sessionId": "s0", "cwd": "/w", "mcpServers": []})
        );
        // The replayed history is not shown again.
        let replay = a
            .parse(r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s0","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"old answer"}}}}"#)
            .unwrap();
        assert!(replay.is_empty());
        let p = a
            .parse(r#"{"jsonrpc":"2.0","id":1,"result":null}"#)
            .unwrap();
        assert_eq!(p, [Parsed::Session("s0".into())]);
        assert!(a.ready());
        a.message("next");
        let p = a
            .parse(r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s0","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"new"}}}}"#)
            .unwrap();
        assert!(p.is_empty());
        let p = a
            .parse(r#"{"jsonrpc":"2.0","id":2,"result":{"stopReason":"end_turn"}}"#)
            .unwrap();
        assert_eq!(
            p,
            [
                Parsed::Event(EventBody::Assistant { text: "new".into() }),
                Parsed::Event(EventBody::TurnEnd {
                    result: Some("new".into()),
                    is_error: false
                })
            ]
        );

        // A session the agent no longer has: a new one instead.
        let mut a = Acp::new("goose");
        a.startup(Some("gone"), "/w");
        a.parse(r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"agentCapabilities":{"loadSession":true}}}"#)
            .unwrap();
        let new = reply(
            &a.parse(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32002,"message":"Resource not found"}}"#)
                .unwrap(),
        );
        assert_eq!(new["method"], "session/new");
        assert_eq!(
            a.parse(r#"{"jsonrpc":"2.0","id":2,"result":{"sessionId":"fresh"}}"#)
                .unwrap(),
            [Parsed::Session("fresh".into())]
        );
    }

    #[test]
    fn authentication_when_the_agent_requires_it() {
        let mut a = Acp::new("gemini");
        a.startup(None, "/w");
        a.parse(r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"agentCapabilities":{"loadSession":true},"authMethods":[{"id":"oauth-personal","name":"Log in with Google"},{"id":"gemini-api-key","name":"Use Gemini API key"},{"id":"vertex-ai","name":"Vertex AI"}]}}"#)
            .unwrap();
        let auth = reply(
            &a.parse(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"Authentication required"}}"#)
                .unwrap(),
        );
        assert_eq!(auth["method"], "authenticate");
        assert_eq!(auth["params"], json!({"methodId": "gemini-api-key"}));
        let new = reply(&a.parse(r#"{"jsonrpc":"2.0","id":2,"result":{}}"#).unwrap());
        assert_eq!(new["method"], "session/new");
        // Still refused after authenticating: the conversation fails, clearly.
        let p = a
            .parse(r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32000,"message":"Authentication required"}}"#)
            .unwrap();
        assert!(
            matches!(&p[..], [Parsed::Fail(r)] if r.contains("cannot open a session: Authentication required")),
            "{p:?}"
        );
        assert!(!a.ready());

        // Only interactive logins: nothing to try.
        let mut a = Acp::new("gemini");
        a.startup(None, "/w");
        a.parse(r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"authMethods":[{"id":"oauth-personal","name":"Google"}]}}"#)
            .unwrap();
        let p = a
            .parse(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"Authentication required"}}"#)
            .unwrap();
        assert!(
            matches!(&p[..], [Parsed::Fail(r)] if r.contains("agents.gemini.env") && r.contains("oauth-personal")),
            "{p:?}"
        );
    }

    #[test]
    fn handshake_failures_fail_the_conversation() {
        let mut a = Acp::new("acp");
        a.startup(None, "/w");
        let p = a
            .parse(r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":7}}"#)
            .unwrap();
        assert!(
            matches!(&p[..], [Parsed::Fail(r)] if r.contains("ACP version 7")),
            "{p:?}"
        );
        let mut a = Acp::new("acp");
        a.startup(None, "/w");
        let p = a
            .parse(r#"{"jsonrpc":"2.0","id":0,"error":{"code":-32603,"message":"Internal error","data":"boom"}}"#)
            .unwrap();
        assert_eq!(
            p,
            [Parsed::Fail(
                "the agent refused to initialize: Internal error (boom)".into()
            )]
        );
        assert!(a.parse("not json").is_err());
        assert!(a.parse("[1,2]").is_err());
        assert!(a.parse(r#"{"jsonrpc":"2.0","id":5}"#).is_err());
        // Responses to nothing we asked, and unknown notifications, are ignored.
        assert!(
            a.parse(r#"{"jsonrpc":"2.0","id":99,"result":{}}"#)
                .unwrap()
                .is_empty()
        );
        assert!(
            a.parse(r#"{"jsonrpc":"2.0","method":"_goose/notice","params":{}}"#)
                .unwrap()
                .is_empty()
        );
    }

    /// A turn as claude-code-acp streams it: chunks, a tool call, its result, more chunks.
    #[test]
    fn a_turn_maps_to_whole_assistant_blocks_tool_calls_and_a_turn_end() {
        let mut a = ready(PermissionMode::Skip);
        a.message("create the greeting");
        let lines = [
            r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s1","update":{"sessionUpdate":"agent_thought_chunk","content":{"type":"text","text":"hmm"}}}}"#,
            r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"Creat"}}}}"#,
            r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"ing it."}}}}"#,
            r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s1","update":{"sessionUpdate":"tool_call","toolCallId":"toolu_01","title":"Write /w/greeting.txt","status":"pending","rawInput":{"file_path":"/w/greeting.txt","content":"hi\n"}}}}"#,
            r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s1","update":{"sessionUpdate":"tool_call_update","toolCallId":"toolu_01","status":"in_progress"}}}"#,
            r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s1","update":{"sessionUpdate":"tool_call_update","toolCallId":"toolu_01","status":"completed","rawOutput":"File created successfully at: /w/greeting.txt"}}}"#,
            r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"Created greeting.txt for you."}}}}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{"stopReason":"end_turn"}}"#,
        ];
        let got: Vec<Parsed> = lines.iter().flat_map(|l| a.parse(l).unwrap()).collect();
        assert_eq!(
            got,
            [
                Parsed::Event(EventBody::Assistant {
                    text: "Creating it.".into()
                }),
                Parsed::Event(EventBody::ToolCall {
                    id: "toolu_01".into(),
                    name: "Write /w/greeting.txt".into(),
                    input: json!({"file_path": "/w/greeting.txt", "content": "hi\n"}),
                }),
                Parsed::Event(EventBody::ToolResult {
                    id: "toolu_01".into(),
                    output: "File created successfully at: /w/greeting.txt".into(),
                    is_error: false,
                }),
                Parsed::Event(EventBody::Assistant {
                    text: "Created greeting.txt for you.".into()
                }),
                Parsed::Event(EventBody::TurnEnd {
                    result: Some("Created greeting.txt for you.".into()),
                    is_error: false,
                }),
            ]
        );
    }

    /// Tool calls as Gemini CLI reports them: kind, locations and content, no raw input.
    #[test]
    fn tool_calls_without_raw_input_plans_and_failures() {
        let mut a = ready(PermissionMode::Skip);
        a.message("go");
        let p = a
            .parse(r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s1","update":{"sessionUpdate":"tool_call","toolCallId":"write_file-1","title":"Writing to a.txt","kind":"edit","status":"completed","locations":[{"path":"/w/a.txt"}],"content":[{"type":"diff","path":"/w/a.txt","oldText":null,"newText":"x"},{"type":"content","content":{"type":"text","text":"ok"}}]}}}"#)
            .unwrap();
        assert_eq!(
            p,
            [
                Parsed::Event(EventBody::ToolCall {
                    id: "write_file-1".into(),
                    name: "Writing to a.txt".into(),
                    input: json!({"kind": "edit", "path": "/w/a.txt", "locations": [{"path": "/w/a.txt"}]}),
                }),
                Parsed::Event(EventBody::ToolResult {
                    id: "write_file-1".into(),
                    output: "edited /w/a.txt\nok".into(),
                    is_error: false,
                }),
            ]
        );
        // A repeated completion is not shown twice; a failure is an error result.
        assert!(
            a.parse(r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s1","update":{"sessionUpdate":"tool_call_update","toolCallId":"write_file-1","status":"completed"}}}"#)
                .unwrap()
                .is_empty()
        );
        let p = a
            .parse(r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s1","update":{"sessionUpdate":"tool_call_update","toolCallId":"sh-2","title":"ls","kind":"execute","status":"failed","rawOutput":[{"type":"text","text":"ls: cannot access"}]}}}"#)
            .unwrap();
        assert_eq!(
            p[1],
            Parsed::Event(EventBody::ToolResult {
                id: "sh-2".into(),
                output: "ls: cannot access".into(),
                is_error: true,
            })
        );
        let p = a
            .parse(r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s1","update":{"sessionUpdate":"plan","entries":[{"content":"read","priority":"high","status":"completed"},{"content":"write","priority":"medium","status":"pending"}]}}}"#)
            .unwrap();
        assert_eq!(
            p,
            [
                Parsed::Event(EventBody::ToolCall {
                    id: "plan-1".into(),
                    name: "Plan".into(),
                    input: json!({"description": "2 steps, 1 done", "entries": [{"content":"read","priority":"high","status":"completed"},{"content":"write","priority":"medium","status":"pending"}]}),
                }),
                Parsed::Event(EventBody::ToolResult {
                    id: "plan-1".into(),
                    output: "[x] read\n[ ] write".into(),
                    is_error: false,
                }),
            ]
        );
        // Stop reasons other than the end of the turn are errors; a JSON-RPC error too.
        assert_eq!(
            a.parse(r#"{"jsonrpc":"2.0","id":2,"result":{"stopReason":"max_tokens"}}"#)
                .unwrap(),
            [Parsed::Event(EventBody::TurnEnd {
                result: Some("the agent stopped the turn: max_tokens".into()),
                is_error: true
            })]
        );
        a.message("again");
        assert_eq!(
            a.parse(r#"{"jsonrpc":"2.0","id":3,"error":{"code":-32603,"message":"Internal error: API key not valid"}}"#)
                .unwrap(),
            [Parsed::Event(EventBody::TurnEnd {
                result: Some("Internal error: API key not valid".into()),
                is_error: true
            })]
        );
    }

    #[test]
    fn permissions_are_put_to_the_user_in_ask_mode() {
        let mut a = ready(PermissionMode::Ask);
        a.message("write it");
        a.parse(r#"{"jsonrpc":"2.0","method":"session/update","params":{"sessionId":"s1","update":{"sessionUpdate":"agent_message_chunk","content":{"type":"text","text":"May I?"}}}}"#)
            .unwrap();
        let p = a
            .parse(r#"{"jsonrpc":"2.0","id":7,"method":"session/request_permission","params":{"sessionId":"s1","toolCall":{"toolCallId":"c1","title":"Write /w/x","rawInput":{"file_path":"/w/x"}},"options":[{"optionId":"allow_always","name":"Always Allow","kind":"allow_always"},{"optionId":"allow","name":"Allow","kind":"allow_once"},{"optionId":"reject","name":"Reject","kind":"reject_once"}]}}"#)
            .unwrap();
        assert_eq!(
            p,
            [
                Parsed::Event(EventBody::Assistant {
                    text: "May I?".into()
                }),
                Parsed::Approval {
                    request_id: "7".into(),
                    tool: "Write /w/x".into(),
                    input: json!({"file_path": "/w/x"}),
                }
            ]
        );
        let yes = json_of(&a.decision(
            "7",
            &Value::Null,
            &Decision {
                allow: true,
                message: None,
            },
        ));
        assert_eq!(
            yes,
            json!({"jsonrpc": "2.0", "id": 7, "result": {"outcome": {"outcome": "selected", "optionId": "allow"}}})
        );
        // Answered already: nothing more to send.
        assert!(
            a.decision(
                "7",
                &Value::Null,
                &Decision {
                    allow: false,
                    message: None
                }
            )
            .is_empty()
        );
        // String ids, and a denial picks the reject option.
        let p = a
            .parse(r#"{"jsonrpc":"2.0","id":"p-2","method":"session/request_permission","params":{"sessionId":"s1","toolCall":{"toolCallId":"c2","title":"rm"},"options":[{"optionId":"y","name":"Yes","kind":"allow_once"},{"optionId":"n","name":"No","kind":"reject_once"}]}}"#)
            .unwrap();
        let Parsed::Approval { request_id, .. } = &p[0] else {
            panic!("{p:?}")
        };
        let no = json_of(&a.decision(
            request_id,
            &Value::Null,
            &Decision {
                allow: false,
                message: Some("no".into()),
            },
        ));
        assert_eq!(
            no,
            json!({"jsonrpc": "2.0", "id": "p-2", "result": {"outcome": {"outcome": "selected", "optionId": "n"}}})
        );
        // An interrupt cancels the prompt and answers a pending request "cancelled".
        a.parse(r#"{"jsonrpc":"2.0","id":8,"method":"session/request_permission","params":{"sessionId":"s1","toolCall":{"toolCallId":"c3","title":"rm"},"options":[{"optionId":"y","name":"Yes","kind":"allow_once"}]}}"#)
            .unwrap();
        let bytes = a.interrupt(0).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let msgs: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            msgs,
            [
                json!({"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": "s1"}}),
                json!({"jsonrpc": "2.0", "id": 8, "result": {"outcome": {"outcome": "cancelled"}}}),
            ]
        );
        assert_eq!(
            a.parse(r#"{"jsonrpc":"2.0","id":2,"result":{"stopReason":"cancelled"}}"#)
                .unwrap(),
            [Parsed::Event(EventBody::TurnEnd {
                result: None,
                is_error: false
            })]
        );
    }

    #[test]
    fn skip_mode_allows_without_asking_and_other_client_methods_are_refused() {
        let mut a = ready(PermissionMode::Skip);
        a.message("go");
        let p = a
            .parse(r#"{"jsonrpc":"2.0","id":3,"method":"session/request_permission","params":{"sessionId":"s1","toolCall":{"toolCallId":"c1","title":"Bash"},"options":[{"optionId":"always","name":"Always","kind":"allow_always"},{"optionId":"once","name":"Once","kind":"allow_once"},{"optionId":"no","name":"No","kind":"reject_once"}]}}"#)
            .unwrap();
        assert_eq!(
            reply(&p),
            json!({"jsonrpc": "2.0", "id": 3, "result": {"outcome": {"outcome": "selected", "optionId": "once"}}})
        );
        let p = a
            .parse(r#"{"jsonrpc":"2.0","id":4,"method":"fs/read_text_file","params":{"sessionId":"s1","path":"/etc/passwd"}}"#)
            .unwrap();
        let r = reply(&p);
        assert_eq!(r["id"], 4);
        assert_eq!(r["error"]["code"], -32601);
        // No session yet: nothing to interrupt.
        assert!(Acp::new("gemini").interrupt(0).is_none());
    }
}
