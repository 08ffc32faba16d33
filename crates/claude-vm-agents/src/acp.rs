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
//!
//! The payloads are the protocol's version 1 wire types from `agent-client-protocol-schema`
//! (requests built from its structs, answers and notifications read into them); the JSON-RPC
//! envelope (`jsonrpc`, `id`, `method`) is this adapter's own. What the agent prints is
//! untrusted: a payload that does not fit its type is never an error of the conversation
//! where it can be done without (an update is skipped, a permission request is answered
//! with what could be read of it, an answer falls back to what its one needed field says).

use std::cell::Cell;
use std::collections::HashMap;

use agent_client_protocol_schema::ProtocolVersion;
use agent_client_protocol_schema::v1::{
    AGENT_METHOD_NAMES, AuthCapabilities, AuthenticateRequest, CLIENT_METHOD_NAMES,
    CancelNotification, ClientCapabilities, ContentBlock, ContentChunk, Error as RpcError,
    ErrorCode, FileSystemCapabilities, Implementation, InitializeRequest, InitializeResponse,
    LoadSessionRequest, NewSessionRequest, NewSessionResponse, PermissionOption,
    PermissionOptionKind, Plan, PlanEntryStatus, PromptRequest, PromptResponse,
    RequestPermissionOutcome, RequestPermissionRequest, RequestPermissionResponse,
    SelectedPermissionOutcome, SessionUpdate, StopReason, ToolCallContent, ToolCallStatus,
    ToolCallUpdate, ToolCallUpdateFields,
};
use claude_vm_protocol::api::{AgentSpec, Decision, EventBody, PermissionMode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::adapter::{Adapter, Parsed, truncate};

/// The ACP version this client speaks (the schema crate's stable one).
const PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::V1;

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
    /// The agent's JSON-RPC id, echoed in the answer as it came.
    id: Value,
    /// The options offered (those that could be read).
    options: Vec<PermissionOption>,
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
    fn request(&mut self, call: Call, method: &str, params: impl Serialize) -> Vec<u8> {
        let id = self.next_id;
        self.next_id += 1;
        self.calls.insert(id, call);
        line(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": to_json(params)}))
    }

    /// Open the session: load the one being resumed when the agent can, else a new one.
    fn open(&mut self, load: bool) -> Vec<u8> {
        let resume = self.resume.clone().filter(|_| load && self.can_load);
        self.phase = Phase::Opening {
            load: resume.is_some(),
        };
        match resume {
            Some(session) => {
                let params = LoadSessionRequest::new(session, self.cwd.clone());
                self.request(Call::LoadSession, AGENT_METHOD_NAMES.session_load, params)
            }
            None => {
                let params = NewSessionRequest::new(self.cwd.clone());
                self.request(Call::NewSession, AGENT_METHOD_NAMES.session_new, params)
            }
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
        let error = v.get("error").map(rpc_error);
        let Some(call) = id.as_u64().and_then(|n| self.calls.remove(&n)) else {
            if id.is_null()
                && let Some(e) = &error
            {
                // The agent could not even read one of our messages.
                return self.fail(format!("the agent rejected a message: {}", error_text(e)));
            }
            return Vec::new();
        };
        let result = v.get("result").unwrap_or(&Value::Null);
        match (call, &error) {
            (Call::Initialize, Some(e)) => self.fail(format!(
                "the agent refused to initialize: {}",
                error_text(e)
            )),
            (Call::Initialize, None) => {
                let init = match InitializeResponse::deserialize(result) {
                    Ok(init) if init.protocol_version == PROTOCOL_VERSION => init,
                    Ok(init) => {
                        return self.fail(version_mismatch(&init.protocol_version.to_string()));
                    }
                    // Only a missing or unreadable version makes the answer unreadable (every
                    // other field of it defaults): say what the agent sent.
                    Err(_) => {
                        let version = result
                            .get("protocolVersion")
                            .filter(|v| !v.is_null())
                            .map_or("(none)".to_owned(), Value::to_string);
                        return self.fail(version_mismatch(&version));
                    }
                };
                self.can_load = init.agent_capabilities.load_session;
                self.auth_methods = init
                    .auth_methods
                    .iter()
                    .map(|m| m.id().to_string())
                    .collect();
                vec![Parsed::Reply(self.open(true))]
            }
            (Call::NewSession | Call::LoadSession, Some(e))
                if e.code == ErrorCode::AuthRequired && self.auth_retry.is_none() =>
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
                    AGENT_METHOD_NAMES.authenticate,
                    AuthenticateRequest::new(method),
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
                // A loaded session keeps the id it was asked for; nothing else of the
                // answer to `session/load` is needed (it may even be `null`).
                let session = if call == Call::LoadSession {
                    self.resume.clone()
                } else {
                    NewSessionResponse::deserialize(result)
                        .ok()
                        .map(|r| r.session_id.to_string())
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
                let end = match &error {
                    Some(e) => EventBody::TurnEnd {
                        result: Some(error_text(e)),
                        is_error: true,
                    },
                    None => self.turn_end(result),
                };
                self.last_text = None;
                out.push(Parsed::Event(end));
                out
            }
        }
    }

    /// The end of a turn, from the prompt's answer.
    fn turn_end(&mut self, result: &Value) -> EventBody {
        let stopped = |reason: &str| EventBody::TurnEnd {
            result: Some(format!("the agent stopped the turn: {reason}")),
            is_error: true,
        };
        let stop = match PromptResponse::deserialize(result) {
            Ok(r) => Some(r.stop_reason),
            // A stop reason the schema does not know is still a stop; no stop reason at all
            // (or no answer object) is taken as the end of the turn.
            Err(_) => match result.get("stopReason").and_then(Value::as_str) {
                Some(other) => return stopped(other),
                None => None,
            },
        };
        match stop {
            Some(StopReason::EndTurn) | None => EventBody::TurnEnd {
                result: self.last_text.take(),
                is_error: false,
            },
            Some(StopReason::Cancelled) => EventBody::TurnEnd {
                result: None,
                is_error: false,
            },
            Some(other) => stopped(&wire_name(&other)),
        }
    }

    fn on_request(&mut self, id: &Value, method: &str, params: &Value) -> Vec<Parsed> {
        if method != CLIENT_METHOD_NAMES.session_request_permission {
            // No file system or terminal capability was advertised: nothing else is ours.
            let error = RpcError::new(
                ErrorCode::MethodNotFound.into(),
                format!("method not found: {method}"),
            );
            return vec![Parsed::Reply(line(json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": to_json(error),
            })))];
        }
        let mut out = Vec::new();
        self.flush(&mut out);
        let (call, options) = permission_request(params);
        let permission = Permission {
            id: id.clone(),
            options,
        };
        if !self.ask.get() {
            // The workspace is the sandbox: allow without asking anyone.
            out.push(Parsed::Reply(answer(&permission, true)));
            return out;
        }
        let key = id.to_string();
        self.permissions.insert(key.clone(), permission);
        out.push(Parsed::Approval {
            request_id: key,
            tool: call
                .as_ref()
                .map_or_else(|| "tool".to_owned(), |c| tool_name(&c.fields)),
            input: call
                .as_ref()
                .map_or_else(|| json!({}), |c| tool_input(&c.fields)),
        });
        out
    }

    fn on_update(&mut self, update: &Value) -> Vec<Parsed> {
        if matches!(self.phase, Phase::Opening { load: true }) {
            // History replayed by session/load: the transcript already has it.
            return Vec::new();
        }
        // A `tool_call` is read as the update it is with every field given: that keeps a
        // field the agent left out apart from the schema's defaults (kind `other`, status
        // `pending`), and takes a call without a title.
        let parsed = match update.get("sessionUpdate").and_then(Value::as_str) {
            Some("tool_call") => {
                ToolCallUpdate::deserialize(update).map(SessionUpdate::ToolCallUpdate)
            }
            _ => SessionUpdate::deserialize(update),
        };
        let mut out = Vec::new();
        match parsed {
            Ok(SessionUpdate::AgentMessageChunk(ContentChunk {
                content: ContentBlock::Text(t),
                ..
            })) => self.text.push_str(&t.text),
            Ok(SessionUpdate::ToolCallUpdate(call)) => {
                self.flush(&mut out);
                self.on_tool(&call, &mut out);
            }
            Ok(SessionUpdate::Plan(plan)) => {
                self.flush(&mut out);
                self.on_plan(&plan, &mut out);
            }
            // Thoughts, echoes of the user's message, other content, commands, modes, usage:
            // nothing to show; nor in an update that does not fit the schema.
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("skipped an ACP session update that does not fit the schema: {e}")
            }
        }
        out
    }

    /// A plan is shown as a tool call whose result is its checklist.
    fn on_plan(&mut self, plan: &Plan, out: &mut Vec<Parsed>) {
        self.plans += 1;
        let done = plan
            .entries
            .iter()
            .filter(|e| e.status == PlanEntryStatus::Completed)
            .count();
        let id = format!("plan-{}", self.plans);
        let checklist = plan
            .entries
            .iter()
            .map(|e| {
                let mark = match e.status {
                    PlanEntryStatus::Completed => "[x]",
                    PlanEntryStatus::InProgress => "[~]",
                    _ => "[ ]",
                };
                format!("{mark} {}", e.content)
            })
            .collect::<Vec<_>>()
            .join("\n");
        out.push(Parsed::Event(EventBody::ToolCall {
            id: id.clone(),
            name: "Plan".into(),
            input: json!({
                "description": format!("{} steps, {done} done", plan.entries.len()),
                "entries": to_json(&plan.entries),
            }),
        }));
        out.push(Parsed::Event(EventBody::ToolResult {
            id,
            output: truncate(checklist),
            is_error: false,
        }));
    }

    /// A tool call is shown when first reported, its result when it completes or fails.
    fn on_tool(&mut self, call: &ToolCallUpdate, out: &mut Vec<Parsed>) {
        let id = call.tool_call_id.to_string();
        let fields = &call.fields;
        let tool = self.tools.entry(id.clone()).or_default();
        if !tool.announced {
            tool.announced = true;
            out.push(Parsed::Event(EventBody::ToolCall {
                id: id.clone(),
                name: tool_name(fields),
                input: tool_input(fields),
            }));
        }
        let status = fields.status;
        if matches!(
            status,
            Some(ToolCallStatus::Completed | ToolCallStatus::Failed)
        ) && !tool.done
        {
            tool.done = true;
            out.push(Parsed::Event(EventBody::ToolResult {
                id,
                output: truncate(tool_output(fields)),
                is_error: status == Some(ToolCallStatus::Failed),
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
        let params = InitializeRequest::new(PROTOCOL_VERSION)
            .client_capabilities(
                ClientCapabilities::new()
                    .fs(FileSystemCapabilities::new()
                        .read_text_file(false)
                        .write_text_file(false))
                    .terminal(false)
                    // Nor an interactive login in a terminal to offer the user.
                    .auth(AuthCapabilities::new().terminal(false)),
            )
            .client_info(Implementation::new("claude-vm", env!("CARGO_PKG_VERSION")));
        self.request(Call::Initialize, AGENT_METHOD_NAMES.initialize, params)
    }

    fn ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    fn message(&mut self, text: &str) -> Vec<u8> {
        self.text.clear();
        self.last_text = None;
        // Only sent once ready, so a session is open.
        let session = self.session.clone().unwrap_or_default();
        let params = PromptRequest::new(session, vec![ContentBlock::from(text)]);
        let bytes = self.request(Call::Prompt, AGENT_METHOD_NAMES.session_prompt, params);
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
            "method": AGENT_METHOD_NAMES.session_cancel,
            "params": to_json(CancelNotification::new(session)),
        }));
        // Permission requests of the cancelled turn must be answered "cancelled".
        for (_, p) in self.permissions.drain() {
            out.extend(permission_answer(&p, RequestPermissionOutcome::Cancelled));
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
            (Some(m), None) if m == CLIENT_METHOD_NAMES.session_update => {
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

/// A wire type as JSON. The schema's types and what was read into them always serialize
/// (their maps have string keys, their paths came from JSON strings).
fn to_json(v: impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// How an enum of the schema (a stop reason, a tool kind) is spelled on the wire.
fn wire_name(v: &impl Serialize) -> String {
    match to_json(v) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn version_mismatch(version: &str) -> String {
    format!("the agent speaks ACP version {version}, claude-vm speaks version {PROTOCOL_VERSION}")
}

/// A JSON-RPC error object. One that does not fit the shape (no code, no message, not an
/// object) is still an error: what it does say is kept.
fn rpc_error(e: &Value) -> RpcError {
    RpcError::deserialize(e).unwrap_or_else(|_| {
        let code = e
            .get("code")
            .and_then(Value::as_i64)
            .and_then(|c| i32::try_from(c).ok())
            .unwrap_or(ErrorCode::InternalError.into());
        let message = e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        RpcError::new(code, message).data(e.get("data").filter(|d| !d.is_null()).cloned())
    })
}

fn error_text(e: &RpcError) -> String {
    match &e.data {
        Some(Value::String(d)) if !d.is_empty() => format!("{} ({d})", e.message),
        Some(d) if !d.is_null() => format!("{} ({d})", e.message),
        _ => e.message.clone(),
    }
}

/// The tool call and the options of a permission request. One that does not fit the schema
/// whole (a malformed option, no session id) is read piece by piece, so that it is still
/// answered: the agent waits for the answer.
fn permission_request(params: &Value) -> (Option<ToolCallUpdate>, Vec<PermissionOption>) {
    if let Ok(r) = RequestPermissionRequest::deserialize(params) {
        return (Some(r.tool_call), r.options);
    }
    let call = params
        .get("toolCall")
        .and_then(|c| ToolCallUpdate::deserialize(c).ok());
    let options = params
        .get("options")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|o| PermissionOption::deserialize(o).ok())
                .collect()
        })
        .unwrap_or_default();
    (call, options)
}

/// The answer to a permission request: the first allow (or reject) option offered, allowing
/// once rather than always; "cancelled" when no option fits.
fn answer(p: &Permission, allow: bool) -> Vec<u8> {
    use PermissionOptionKind::{AllowAlways, AllowOnce, RejectAlways, RejectOnce};
    let wanted = if allow {
        [AllowOnce, AllowAlways]
    } else {
        [RejectOnce, RejectAlways]
    };
    let option = wanted
        .iter()
        .find_map(|k| p.options.iter().find(|o| o.kind == *k));
    let outcome = match option {
        Some(o) => {
            RequestPermissionOutcome::Selected(SelectedPermissionOutcome::new(o.option_id.clone()))
        }
        None => RequestPermissionOutcome::Cancelled,
    };
    permission_answer(p, outcome)
}

fn permission_answer(p: &Permission, outcome: RequestPermissionOutcome) -> Vec<u8> {
    line(json!({
        "jsonrpc": "2.0",
        "id": p.id,
        "result": to_json(RequestPermissionResponse::new(outcome)),
    }))
}

/// What to call a tool: its programmatic name when given, else its title, else its kind.
fn tool_name(call: &ToolCallUpdateFields) -> String {
    [
        call.name.clone(),
        call.title.clone(),
        call.kind.map(|k| wire_name(&k)),
    ]
    .into_iter()
    .flatten()
    .find(|s| !s.is_empty())
    .unwrap_or_else(|| "tool".to_owned())
}

/// A tool call's input: its raw input when the agent shares it, else what it touches.
fn tool_input(call: &ToolCallUpdateFields) -> Value {
    if let Some(raw) = &call.raw_input {
        return raw.clone();
    }
    let mut input = serde_json::Map::new();
    if let Some(kind) = call.kind {
        input.insert("kind".into(), to_json(kind));
    }
    if let Some(locations) = call.locations.as_deref().filter(|l| !l.is_empty()) {
        input.insert("path".into(), to_json(&locations[0].path));
        input.insert("locations".into(), to_json(locations));
    }
    Value::Object(input)
}

/// A tool call's output as text: its content blocks, else its raw output.
fn tool_output(call: &ToolCallUpdateFields) -> String {
    let parts: Vec<String> = call
        .content
        .iter()
        .flatten()
        .filter_map(|c| match c {
            ToolCallContent::Content(c) => match &c.content {
                ContentBlock::Text(t) => Some(t.text.clone()),
                _ => None,
            },
            ToolCallContent::Diff(d) => Some(format!("edited {}", d.path.display())),
            ToolCallContent::Terminal(t) => Some(format!("terminal {}", t.terminal_id)),
            _ => None,
        })
        .collect();
    if !parts.is_empty() {
        return parts.join("\n");
    }
    match &call.raw_output {
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
            // The schema's v1 capabilities also tell that no terminal login can be run.
            json!({
                "fs": {"readTextFile": false, "writeTextFile": false},
                "terminal": false,
                "auth": {"terminal": false}
            })
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

    /// Payloads that do not fit the schema never fail the conversation: an update is
    /// skipped, a permission request is still answered, an answer keeps what it says.
    #[test]
    fn payloads_that_do_not_fit_the_schema_are_tolerated() {
        let update = |u: &str| {
            format!(
                r#"{{"jsonrpc":"2.0","method":"session/update","params":{{"sessionId":"s1","update":{u}}}}}"#
            )
        };
        let mut a = ready(PermissionMode::Skip);
        a.message("go");
        // Updates of kinds unknown to the schema, content that is not text, a tool call
        // without an id: nothing to show.
        for u in [
            r#"{"sessionUpdate":"_vendor/progress","percent":5}"#,
            r#"{"sessionUpdate":"agent_message_chunk","content":{"type":"image","data":"AA==","mimeType":"image/png"}}"#,
            r#"{"sessionUpdate":"agent_message_chunk","content":{"type":"text"}}"#,
            r#"{"sessionUpdate":"tool_call","title":"ls"}"#,
            r#"{"sessionUpdate":"usage_update","used":"lots"}"#,
        ] {
            assert!(a.parse(&update(u)).unwrap().is_empty(), "{u}");
        }
        // A tool call without title or kind is still shown; what it leaves out is not made up.
        let p = a
            .parse(&update(
                r#"{"sessionUpdate":"tool_call","toolCallId":"t9","status":"bogus","kind":null}"#,
            ))
            .unwrap();
        assert_eq!(
            p,
            [Parsed::Event(EventBody::ToolCall {
                id: "t9".into(),
                name: "tool".into(),
                input: json!({}),
            })]
        );
        // A plan entry the schema cannot read is left out; the rest is shown.
        let p = a
            .parse(&update(r#"{"sessionUpdate":"plan","entries":[{"content":"a","priority":"high","status":"completed"},{"content":"b","status":"someday"}]}"#))
            .unwrap();
        assert_eq!(
            p[1],
            Parsed::Event(EventBody::ToolResult {
                id: "plan-1".into(),
                output: "[x] a".into(),
                is_error: false,
            })
        );
        // A permission request without a session id and with a malformed option is
        // answered with the options that could be read; one with nothing readable is
        // answered "cancelled".
        let p = a
            .parse(r#"{"jsonrpc":"2.0","id":5,"method":"session/request_permission","params":{"toolCall":{"title":"rm"},"options":[{"optionId":"x","kind":"allow_once"},{"optionId":"ok","name":"Ok","kind":"allow_once"}]}}"#)
            .unwrap();
        assert_eq!(
            reply(&p),
            json!({"jsonrpc": "2.0", "id": 5, "result": {"outcome": {"outcome": "selected", "optionId": "ok"}}})
        );
        let p = a
            .parse(
                r#"{"jsonrpc":"2.0","id":6,"method":"session/request_permission","params":null}"#,
            )
            .unwrap();
        assert_eq!(
            reply(&p),
            json!({"jsonrpc": "2.0", "id": 6, "result": {"outcome": {"outcome": "cancelled"}}})
        );
        // A stop reason the schema does not know still ends the turn, as an error.
        assert_eq!(
            a.parse(r#"{"jsonrpc":"2.0","id":2,"result":{"stopReason":"paused"}}"#)
                .unwrap(),
            [Parsed::Event(EventBody::TurnEnd {
                result: Some("the agent stopped the turn: paused".into()),
                is_error: true
            })]
        );
        // An error that is not an error object is still the turn's error.
        a.message("again");
        assert_eq!(
            a.parse(r#"{"jsonrpc":"2.0","id":3,"error":"boom"}"#)
                .unwrap(),
            [Parsed::Event(EventBody::TurnEnd {
                result: Some("unknown error".into()),
                is_error: true
            })]
        );

        // An answer to initialize without a readable version fails, saying what came.
        for (result, says) in [
            (r#"{}"#, "ACP version (none)"),
            (r#"{"protocolVersion":"1.0.0"}"#, r#"ACP version "1.0.0""#),
            (r#"{"protocolVersion":100000}"#, "ACP version 100000"),
        ] {
            let mut a = Acp::new("acp");
            a.startup(None, "/w");
            let p = a
                .parse(&format!(r#"{{"jsonrpc":"2.0","id":0,"result":{result}}}"#))
                .unwrap();
            assert!(
                matches!(&p[..], [Parsed::Fail(r)] if r.contains(says)),
                "{p:?}"
            );
        }
        // Capabilities and auth methods that do not fit are taken as none.
        let mut a = Acp::new("goose");
        a.startup(Some("s0"), "/w");
        let new = reply(
            &a.parse(r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"agentCapabilities":{"loadSession":"yes"},"authMethods":[{"name":"no id"}]}}"#)
                .unwrap(),
        );
        assert_eq!(new["method"], "session/new");
        // An authentication error without a message is still one.
        let p = a
            .parse(r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000}}"#)
            .unwrap();
        assert!(
            matches!(&p[..], [Parsed::Fail(r)] if r.contains("needs authentication (unknown error)") && r.contains("methods: none")),
            "{p:?}"
        );
    }
}
