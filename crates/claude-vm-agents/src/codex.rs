//! The Codex adapter: drives OpenAI's Codex CLI through `codex app-server`, its JSON-RPC
//! interface over stdio (one JSON object a line; `"jsonrpc"` is not sent), the interface
//! Codex's own IDE extension uses. Checked against `openai-codex-cli-bin` 0.163.0 from PyPI,
//! whose `codex` is one static executable.
//!
//! The daemon is the client. It sends `initialize`, then the `initialized` notification and
//! `thread/start` in the project folder, or `thread/resume` with the thread id it reported
//! as the session (a resume Codex refuses, e.g. because its home was wiped, starts a new
//! thread rather than failing the conversation forever). Each user message is a
//! `turn/start`; while a turn runs, `turn/start` steers it instead (the message reaches the
//! model with its next request), so [`Codex::accepts_mid_turn`] is true. `turn/interrupt`
//! stops a turn. Codex streams notifications: `turn/started`, `item/started` and
//! `item/completed` for each item (agent messages, command executions, file changes, MCP
//! and other tool calls), then `turn/completed`, which ends the turn.
//!
//! Permissions are set on the command line (`-c approval_policy=... -c sandbox_mode=...`):
//!
//! * [`PermissionMode::Skip`]: `never` and `danger-full-access`. The workspace container is
//!   the sandbox, and Codex's own (bubblewrap) cannot run in it anyway: a Docker container
//!   allows no unprivileged user namespaces.
//! * [`PermissionMode::Ask`]: `on-request` and `read-only` (Codex 0.163 refuses the
//!   `untrusted` policy that asked before every command). Codex asks through the
//!   `item/commandExecution/requestApproval` and `item/fileChange/requestApproval`
//!   requests, which become approvals: every file edit (`apply_patch`), and every command
//!   the model runs with escalated permissions. As its read-only sandbox cannot start in
//!   the container, a command the model runs *without* asking fails (the model is shown
//!   why) and runs only once the model asks for it and the user allows it. A denial's
//!   message reaches the model as a note in the running turn (Codex's answer carries none).
//!
//! Where the model comes from is Codex's own configuration, from `agents.codex.args` and
//! `env`. Codex 0.163's built-in OpenAI provider does not read `OPENAI_API_KEY` (it wants a
//! `codex login`) and ignores `OPENAI_BASE_URL`; a provider declared on the command line
//! takes the key from the environment variable it names:
//! `-c model_provider="openai-key" -c 'model_providers.openai-key={name="OpenAI",
//! base_url="https://api.openai.com/v1", env_key="OPENAI_API_KEY", wire_api="responses"}'`
//! with `OPENAI_API_KEY` in `env` (`tests/codex.rs` points one at the test kit). The
//! arguments go to `codex app-server`, which takes `-c`, not `-m`: choose the model with
//! `-c model="..."`. Other requests Codex may make of the client
//! (questions to the user, MCP elicitations, dynamic tools, ChatGPT token refresh) are
//! answered with a JSON-RPC error.

use std::collections::HashMap;

use claude_vm_protocol::api::{AgentSpec, Decision, EventBody, PermissionMode};
use serde_json::{Value, json};

use crate::adapter::{Adapter, Parsed, truncate};

/// JSON-RPC "method not found", for server requests this client does not serve.
const METHOD_NOT_FOUND: i64 = -32601;

/// What one of our requests was, to understand its response.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Initialize,
    ThreadStart,
    ThreadResume,
    TurnStart,
    Interrupt,
    /// A note to the model about a denial (a steer); its answer needs no handling.
    Note,
}

/// The kind of an approval Codex asked for: its answer's shape depends on it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ask {
    /// `item/commandExecution/requestApproval` or `item/fileChange/requestApproval`:
    /// `{"decision": "accept" | "decline"}`.
    Item,
    /// The older `execCommandApproval` / `applyPatchApproval`:
    /// `{"decision": "approved" | "denied"}`.
    Legacy,
}

/// A `codex app-server` process. One instance per process: it holds the protocol state.
pub struct Codex {
    next_id: u64,
    calls: HashMap<u64, Call>,
    cwd: String,
    resume: Option<String>,
    /// The thread (Codex's session) once opened: messages may be sent from then on.
    thread: Option<String>,
    /// The running turn.
    turn: Option<String>,
    /// The last assistant text of the running turn (the turn's result).
    last_text: Option<String>,
    /// Tool items shown as calls, by item id, with their input (approvals show it too).
    tools: HashMap<String, Value>,
    /// Open approval requests: our request id (the JSON text of Codex's id) → kind.
    asks: HashMap<String, Ask>,
}

impl Default for Codex {
    fn default() -> Self {
        Self::new()
    }
}

fn line(v: Value) -> Vec<u8> {
    let mut b = serde_json::to_vec(&v).expect("json");
    b.push(b'\n');
    b
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn error_text(e: &Value) -> String {
    e.get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| e.to_string())
}

/// The command a person typed, without the `/bin/bash -lc '...'` Codex wraps it in (the
/// display form is the argv joined with shell quoting).
fn unwrap_shell(command: &str) -> String {
    let Some((shell, rest)) = command.split_once(" -lc ") else {
        return command.to_owned();
    };
    if !shell.ends_with("bash") && !shell.ends_with("sh") {
        return command.to_owned();
    }
    shell_word(rest).unwrap_or_else(|| command.to_owned())
}

/// The one shell word `s` is (quoted with `'...'`, `"..."` and `\`, or bare), if it is
/// exactly one and means itself (no expansion inside double quotes).
fn shell_word(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    if s.is_empty() {
        return None;
    }
    while let Some(c) = chars.next() {
        match c {
            '\'' => loop {
                match chars.next()? {
                    '\'' => break,
                    ch => out.push(ch),
                }
            },
            '"' => loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => match chars.next()? {
                        ch @ ('\\' | '"' | '$' | '`') => out.push(ch),
                        '\n' => {}
                        ch => {
                            out.push('\\');
                            out.push(ch);
                        }
                    },
                    '$' | '`' => return None,
                    ch => out.push(ch),
                }
            },
            '\\' => out.push(chars.next()?),
            c if c.is_alphanumeric() || "-_./=:,+@%".contains(c) => out.push(c),
            _ => return None,
        }
    }
    Some(out)
}

/// The text of tool output content: a string, or items with `text`.
fn content_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Codex {
    pub fn new() -> Codex {
        Codex {
            next_id: 0,
            calls: HashMap::new(),
            cwd: String::new(),
            resume: None,
            thread: None,
            turn: None,
            last_text: None,
            tools: HashMap::new(),
            asks: HashMap::new(),
        }
    }

    /// A request of ours, remembered until its response arrives.
    fn request(&mut self, call: Call, method: &str, params: Value) -> Vec<u8> {
        let id = self.next_id;
        self.next_id += 1;
        self.calls.insert(id, call);
        line(json!({"id": id, "method": method, "params": params}))
    }

    fn start_thread(&mut self) -> Vec<u8> {
        let params = json!({"cwd": self.cwd});
        self.request(Call::ThreadStart, "thread/start", params)
    }

    /// A user message: starts a turn, or steers the running one.
    fn turn_input(&mut self, call: Call, text: &str) -> Vec<u8> {
        let params = json!({
            "threadId": self.thread,
            "input": [{"type": "text", "text": text, "text_elements": []}],
        });
        self.request(call, "turn/start", params)
    }

    /// Whether a notification is about our thread (sub-agents run threads of their own).
    fn ours(&self, params: &Value) -> bool {
        match params.get("threadId").and_then(Value::as_str) {
            Some(t) => self.thread.as_deref() == Some(t),
            None => true,
        }
    }

    fn on_response(&mut self, id: &Value, v: &Value) -> Vec<Parsed> {
        let Some(call) = id.as_u64().and_then(|n| self.calls.remove(&n)) else {
            return Vec::new();
        };
        let result = v.get("result").unwrap_or(&Value::Null);
        match (call, v.get("error")) {
            (Call::Initialize, Some(e)) => vec![Parsed::Fail(format!(
                "codex refused to initialize: {}",
                error_text(e)
            ))],
            (Call::Initialize, None) => {
                let mut bytes = line(json!({"method": "initialized"}));
                bytes.extend(match self.resume.clone() {
                    Some(thread) => self.request(
                        Call::ThreadResume,
                        "thread/resume",
                        json!({"threadId": thread, "cwd": self.cwd}),
                    ),
                    None => self.start_thread(),
                });
                vec![Parsed::Reply(bytes)]
            }
            (Call::ThreadStart, Some(e)) => vec![Parsed::Fail(format!(
                "codex could not start a thread: {}",
                error_text(e)
            ))],
            (Call::ThreadResume, Some(e)) => {
                tracing::warn!(
                    "codex cannot resume thread {:?} ({}); starting a new one",
                    self.resume,
                    error_text(e)
                );
                vec![Parsed::Reply(self.start_thread())]
            }
            (Call::ThreadStart | Call::ThreadResume, None) => match str_at(result, "/thread/id") {
                Some(t) => {
                    self.thread = Some(t.to_owned());
                    vec![Parsed::Session(t.to_owned())]
                }
                None => vec![Parsed::Fail(format!(
                    "codex opened a thread without an id: {result}"
                ))],
            },
            (Call::TurnStart, None) => {
                if self.turn.is_none()
                    && let Some(t) = str_at(result, "/turn/id")
                {
                    self.turn = Some(t.to_owned());
                }
                Vec::new()
            }
            (Call::TurnStart, Some(e)) if self.turn.is_none() => {
                vec![Parsed::Event(EventBody::TurnEnd {
                    result: Some(format!("codex refused the message: {}", error_text(e))),
                    is_error: true,
                })]
            }
            (Call::TurnStart | Call::Note, Some(e)) => {
                tracing::warn!("codex refused a message during a turn: {}", error_text(e));
                Vec::new()
            }
            (Call::Interrupt | Call::Note, _) => Vec::new(),
        }
    }

    fn on_request(&mut self, id: &Value, method: &str, params: &Value) -> Vec<Parsed> {
        let ask = match method {
            "item/commandExecution/requestApproval" | "item/fileChange/requestApproval" => {
                Some(Ask::Item)
            }
            "execCommandApproval" | "applyPatchApproval" => Some(Ask::Legacy),
            _ => None,
        };
        let Some(ask) = ask else {
            return vec![Parsed::Reply(line(json!({
                "id": id,
                "error": {"code": METHOD_NOT_FOUND,
                          "message": format!("{method} is not supported by claude-vm")},
            })))];
        };
        let item = params
            .get("itemId")
            .or_else(|| params.get("callId"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let patch = method.contains("ileChange") || method.contains("Patch");
        let tool = if patch { "apply_patch" } else { "shell" };
        let input = match self.tools.get(item) {
            Some(known) => {
                let mut input = known.clone();
                if let Some(r) = params.get("reason").filter(|r| r.is_string()) {
                    input["reason"] = r.clone();
                }
                input
            }
            None => {
                let mut input = json!({});
                if let Some(c) = params.get("command") {
                    let c = match c {
                        Value::String(s) => unwrap_shell(s),
                        Value::Array(words) => words
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" "),
                        other => other.to_string(),
                    };
                    input["command"] = json!(c);
                }
                for k in ["cwd", "reason", "changes"] {
                    if let Some(v) = params.get(k).filter(|v| !v.is_null()) {
                        input[k] = v.clone();
                    }
                }
                input
            }
        };
        let request_id = id.to_string();
        self.asks.insert(request_id.clone(), ask);
        vec![Parsed::Approval {
            request_id,
            tool: tool.to_owned(),
            input,
        }]
    }

    /// A tool item starts: show it as a call (its id is Codex's item id, the model's call id).
    fn on_item_started(&mut self, item: &Value) -> Vec<Parsed> {
        let id = item.get("id").and_then(Value::as_str).unwrap_or("");
        let (name, input) = match item.get("type").and_then(Value::as_str) {
            Some("commandExecution") => {
                let command = unwrap_shell(str_at(item, "/command").unwrap_or(""));
                (
                    "shell".to_owned(),
                    json!({"command": command, "cwd": item.get("cwd").cloned().unwrap_or(Value::Null)}),
                )
            }
            Some("fileChange") => {
                let changes = item.get("changes").cloned().unwrap_or(json!([]));
                let path = changes.pointer("/0/path").cloned().unwrap_or(Value::Null);
                (
                    "apply_patch".to_owned(),
                    json!({"path": path, "changes": changes}),
                )
            }
            Some("mcpToolCall") => (
                format!(
                    "mcp__{}__{}",
                    str_at(item, "/server").unwrap_or(""),
                    str_at(item, "/tool").unwrap_or("")
                ),
                item.get("arguments").cloned().unwrap_or(Value::Null),
            ),
            Some("dynamicToolCall") => (
                str_at(item, "/tool").unwrap_or("tool").to_owned(),
                item.get("arguments").cloned().unwrap_or(Value::Null),
            ),
            Some("webSearch") => (
                "web_search".to_owned(),
                json!({"query": item.get("query").cloned().unwrap_or(Value::Null)}),
            ),
            Some("collabAgentToolCall") => (
                str_at(item, "/tool").unwrap_or("agent").to_owned(),
                json!({"description": item.get("prompt").cloned().unwrap_or(Value::Null)}),
            ),
            _ => return Vec::new(),
        };
        if id.is_empty() || self.tools.contains_key(id) {
            return Vec::new();
        }
        self.tools.insert(id.to_owned(), input.clone());
        vec![Parsed::Event(EventBody::ToolCall {
            id: id.to_owned(),
            name,
            input,
        })]
    }

    fn on_item_completed(&mut self, item: &Value) -> Vec<Parsed> {
        let id = item.get("id").and_then(Value::as_str).unwrap_or("");
        let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
        if kind == "agentMessage" {
            let text = str_at(item, "/text").unwrap_or("");
            if text.trim().is_empty() {
                return Vec::new();
            }
            self.last_text = Some(text.to_owned());
            return vec![Parsed::Event(EventBody::Assistant {
                text: text.to_owned(),
            })];
        }
        // A tool item Codex reports only once done: show its call first.
        let mut out = self.on_item_started(item);
        if !self.tools.contains_key(id) {
            return out;
        }
        let status = str_at(item, "/status").unwrap_or("completed");
        let failed = !matches!(status, "completed" | "inProgress");
        let (output, is_error) = match kind {
            "commandExecution" => {
                let mut output = str_at(item, "/aggregatedOutput").unwrap_or("").to_owned();
                let code = item.get("exitCode").and_then(Value::as_i64);
                if status == "declined" && output.is_empty() {
                    output = "declined".into();
                }
                (output, failed || code.is_some_and(|c| c != 0))
            }
            "fileChange" => {
                let changes = item
                    .get("changes")
                    .and_then(Value::as_array)
                    .map(|cs| {
                        cs.iter()
                            .map(|c| {
                                format!(
                                    "{} {}",
                                    str_at(c, "/kind/type").unwrap_or("update"),
                                    str_at(c, "/path").unwrap_or("")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default();
                let output = if failed {
                    format!("{status}: {changes}")
                } else {
                    changes
                };
                (output, failed)
            }
            "mcpToolCall" => match item.get("error").filter(|e| !e.is_null()) {
                Some(e) => (error_text(e), true),
                None => (
                    content_text(item.pointer("/result/content").unwrap_or(&Value::Null)),
                    failed,
                ),
            },
            "dynamicToolCall" => (
                content_text(item.get("contentItems").unwrap_or(&Value::Null)),
                failed || item.get("success").and_then(Value::as_bool) == Some(false),
            ),
            _ => (String::new(), failed),
        };
        out.push(Parsed::Event(EventBody::ToolResult {
            id: id.to_owned(),
            output: truncate(output),
            is_error,
        }));
        out
    }

    fn on_notification(&mut self, method: &str, params: &Value) -> Vec<Parsed> {
        if !self.ours(params) {
            return Vec::new();
        }
        match method {
            "turn/started" => {
                if let Some(t) = str_at(params, "/turn/id") {
                    self.turn = Some(t.to_owned());
                }
                Vec::new()
            }
            "item/started" => params
                .get("item")
                .map(|i| self.on_item_started(i))
                .unwrap_or_default(),
            "item/completed" => params
                .get("item")
                .map(|i| self.on_item_completed(i))
                .unwrap_or_default(),
            "turn/completed" => {
                let turn = params.get("turn").unwrap_or(&Value::Null);
                let status = str_at(turn, "/status").unwrap_or("completed");
                self.turn = None;
                self.tools.clear();
                let last = self.last_text.take();
                let (result, is_error) = match status {
                    "failed" => (
                        Some(
                            turn.get("error")
                                .filter(|e| !e.is_null())
                                .map(error_text)
                                .unwrap_or_else(|| "the turn failed".into()),
                        ),
                        true,
                    ),
                    "interrupted" => (None, false),
                    _ => (last, false),
                };
                vec![Parsed::Event(EventBody::TurnEnd { result, is_error })]
            }
            // Deltas, token usage, rate limits, thread status, warnings...: nothing to show.
            _ => Vec::new(),
        }
    }
}

impl Adapter for Codex {
    fn command(
        &self,
        spec: &AgentSpec,
        _resume: Option<&str>,
        mode: PermissionMode,
    ) -> (String, Vec<String>) {
        let (approval, sandbox) = match mode {
            PermissionMode::Skip => ("never", "danger-full-access"),
            PermissionMode::Ask => ("on-request", "read-only"),
        };
        let mut args: Vec<String> = vec![
            "app-server".into(),
            "-c".into(),
            format!("approval_policy=\"{approval}\""),
            "-c".into(),
            format!("sandbox_mode=\"{sandbox}\""),
        ];
        args.extend(spec.args.iter().cloned());
        (spec.program.clone(), args)
    }

    fn startup(&mut self, resume: Option<&str>, project_dir: &str) -> Vec<u8> {
        self.resume = resume.map(str::to_owned);
        self.cwd = project_dir.to_owned();
        self.request(
            Call::Initialize,
            "initialize",
            json!({"clientInfo": {"name": "claude-vm", "title": "claude-vm",
                                  "version": env!("CARGO_PKG_VERSION")}}),
        )
    }

    fn ready(&self) -> bool {
        self.thread.is_some()
    }

    fn message(&mut self, text: &str) -> Vec<u8> {
        self.turn_input(Call::TurnStart, text)
    }

    fn accepts_mid_turn(&self) -> bool {
        true
    }

    fn interrupt(&mut self, _n: u64) -> Option<Vec<u8>> {
        let (thread, turn) = (self.thread.clone()?, self.turn.clone()?);
        Some(self.request(
            Call::Interrupt,
            "turn/interrupt",
            json!({"threadId": thread, "turnId": turn}),
        ))
    }

    fn decision(&mut self, request_id: &str, _input: &Value, decision: &Decision) -> Vec<u8> {
        let ask = self.asks.remove(request_id).unwrap_or(Ask::Item);
        let id: Value = serde_json::from_str(request_id).unwrap_or(json!(request_id));
        let answer = match (ask, decision.allow) {
            (Ask::Item, true) => "accept",
            (Ask::Item, false) => "decline",
            (Ask::Legacy, true) => "approved",
            (Ask::Legacy, false) => "denied",
        };
        let mut bytes = line(json!({"id": id, "result": {"decision": answer}}));
        if !decision.allow
            && let Some(why) = decision.message.as_deref().filter(|m| !m.trim().is_empty())
            && self.turn.is_some()
        {
            let note = format!("(claude-vm) The user denied that request: {why}");
            bytes.extend(self.turn_input(Call::Note, &note));
        }
        bytes
    }

    fn parse(&mut self, raw: &str) -> Result<Vec<Parsed>, String> {
        let v: Value = serde_json::from_str(raw).map_err(|e| format!("not JSON ({e})"))?;
        if !v.is_object() {
            return Err("not a JSON-RPC message".into());
        }
        let method = v.get("method").and_then(Value::as_str);
        let params = v.get("params").unwrap_or(&Value::Null);
        Ok(match (v.get("id"), method) {
            (Some(id), Some(m)) => self.on_request(id, m, params),
            (Some(id), None) if v.get("result").is_some() || v.get("error").is_some() => {
                self.on_response(id, &v)
            }
            (None, Some(m)) => self.on_notification(m, params),
            _ => return Err("not a JSON-RPC message".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AgentSpec {
        AgentSpec {
            kind: "codex".into(),
            program: "/opt/codex".into(),
            args: vec!["-c".into(), "model=\"gpt-5.5\"".into()],
            env: Default::default(),
            turn_timeout_secs: None,
            version: None,
        }
    }

    fn sent(bytes: &[u8]) -> Vec<Value> {
        assert!(bytes.ends_with(b"\n"), "{}", String::from_utf8_lossy(bytes));
        String::from_utf8_lossy(bytes)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn reply(p: &[Parsed]) -> Vec<Value> {
        match p {
            [Parsed::Reply(b)] => sent(b),
            other => panic!("expected one reply, got {other:?}"),
        }
    }

    /// An adapter past the handshake, on thread `th1`.
    fn ready() -> Codex {
        let mut c = Codex::new();
        c.startup(None, "/w/p");
        c.parse(r#"{"id":0,"result":{"userAgent":"x"}}"#).unwrap();
        let p = c
            .parse(r#"{"id":1,"result":{"thread":{"id":"th1"}}}"#)
            .unwrap();
        assert_eq!(p, [Parsed::Session("th1".into())]);
        c
    }

    #[test]
    fn command_line_sets_permissions_then_the_configured_arguments() {
        let c = Codex::new();
        let (prog, args) = c.command(&spec(), Some("th1"), PermissionMode::Skip);
        assert_eq!(prog, "/opt/codex");
        assert_eq!(
            args.join(" "),
            r#"app-server -c approval_policy="never" -c sandbox_mode="danger-full-access" -c model="gpt-5.5""#
        );
        let (_, args) = c.command(&spec(), None, PermissionMode::Ask);
        assert!(
            args.join(" ")
                .contains(r#"-c approval_policy="on-request" -c sandbox_mode="read-only""#)
        );
    }

    #[test]
    fn handshake_starts_a_thread_in_the_project() {
        let mut c = Codex::new();
        let hello = sent(&c.startup(None, "/workspace/proj"));
        assert_eq!(hello[0]["method"], "initialize");
        assert_eq!(hello[0]["params"]["clientInfo"]["name"], "claude-vm");
        assert!(!c.ready());
        let p = c
            .parse(r#"{"id":0,"result":{"userAgent":"codex","codexHome":"/h/.codex","platformFamily":"unix","platformOs":"linux"}}"#)
            .unwrap();
        let r = reply(&p);
        assert_eq!(r[0], json!({"method": "initialized"}));
        assert_eq!(r[1]["method"], "thread/start");
        assert_eq!(r[1]["params"]["cwd"], "/workspace/proj");
        assert!(!c.ready());
        // Notifications before the thread is ours are harmless.
        assert_eq!(
            c.parse(r#"{"method":"configWarning","params":{"summary":"no bubblewrap"}}"#)
                .unwrap(),
            []
        );
        let p = c
            .parse(r#"{"id":1,"result":{"thread":{"id":"th1","cwd":"/workspace/proj"},"model":"gpt-5.5"}}"#)
            .unwrap();
        assert_eq!(p, [Parsed::Session("th1".into())]);
        assert!(c.ready());
    }

    #[test]
    fn resume_opens_the_old_thread_or_a_new_one_when_codex_lost_it() {
        let mut c = Codex::new();
        c.startup(Some("th-old"), "/w");
        let r = reply(&c.parse(r#"{"id":0,"result":{}}"#).unwrap());
        assert_eq!(r[1]["method"], "thread/resume");
        assert_eq!(r[1]["params"]["threadId"], "th-old");
        // Resumed.
        let mut ok = Codex::new();
        ok.startup(Some("th-old"), "/w");
        ok.parse(r#"{"id":0,"result":{}}"#).unwrap();
        assert_eq!(
            ok.parse(r#"{"id":1,"result":{"thread":{"id":"th-old"}}}"#)
                .unwrap(),
            [Parsed::Session("th-old".into())]
        );
        // Refused: a new thread.
        let r = reply(
            &c.parse(r#"{"error":{"code":-32600,"message":"no rollout found for thread id th-old"},"id":1}"#)
                .unwrap(),
        );
        assert_eq!(r[0]["method"], "thread/start");
        assert!(!c.ready());
        assert_eq!(
            c.parse(r#"{"id":2,"result":{"thread":{"id":"th-new"}}}"#)
                .unwrap(),
            [Parsed::Session("th-new".into())]
        );
    }

    #[test]
    fn a_refused_handshake_fails_the_conversation() {
        let mut c = Codex::new();
        c.startup(None, "/w");
        let p = c
            .parse(r#"{"id":0,"error":{"code":-32600,"message":"bad client"}}"#)
            .unwrap();
        assert_eq!(
            p,
            [Parsed::Fail(
                "codex refused to initialize: bad client".into()
            )]
        );
        let mut c = Codex::new();
        c.startup(None, "/w");
        c.parse(r#"{"id":0,"result":{}}"#).unwrap();
        let p = c
            .parse(r#"{"id":1,"error":{"code":-32603,"message":"no model provider"}}"#)
            .unwrap();
        assert!(matches!(&p[..], [Parsed::Fail(r)] if r.contains("no model provider")));
    }

    #[test]
    fn messages_start_turns_and_steer_running_ones() {
        let mut c = ready();
        let m = sent(&c.message("hello\n\"x\""));
        assert_eq!(m[0]["method"], "turn/start");
        assert_eq!(m[0]["params"]["threadId"], "th1");
        assert_eq!(
            m[0]["params"]["input"],
            json!([{"type": "text", "text": "hello\n\"x\"", "text_elements": []}])
        );
        assert!(c.accepts_mid_turn());
        assert_eq!(c.interrupt(0), None, "no turn known yet");
        let id = m[0]["id"].as_u64().unwrap();
        c.parse(&format!(
            r#"{{"id":{id},"result":{{"turn":{{"id":"t1","status":"inProgress","items":[]}}}}}}"#
        ))
        .unwrap();
        let i = sent(&c.interrupt(0).unwrap());
        assert_eq!(i[0]["method"], "turn/interrupt");
        assert_eq!(i[0]["params"], json!({"threadId": "th1", "turnId": "t1"}));
        // A message during the turn is the same request: Codex steers the running turn.
        assert_eq!(sent(&c.message("also this"))[0]["method"], "turn/start");
        // A refused message outside a turn ends that (never started) turn with the reason.
        let mut c = ready();
        let id = sent(&c.message("hi"))[0]["id"].as_u64().unwrap();
        let p = c
            .parse(&format!(
                r#"{{"id":{id},"error":{{"code":-32600,"message":"input too large"}}}}"#
            ))
            .unwrap();
        assert_eq!(
            p,
            [Parsed::Event(EventBody::TurnEnd {
                result: Some("codex refused the message: input too large".into()),
                is_error: true
            })]
        );
    }

    #[test]
    fn a_turn_with_a_command_as_codex_reports_it() {
        let mut c = ready();
        let lines = [
            r#"{"method":"turn/started","params":{"threadId":"th1","turn":{"id":"t1","items":[],"status":"inProgress"}}}"#,
            r#"{"method":"item/started","params":{"item":{"type":"userMessage","id":"u1","content":[{"type":"text","text":"go"}]},"threadId":"th1","turnId":"t1"}}"#,
            r#"{"method":"item/agentMessage/delta","params":{"delta":"Mak","itemId":"m1","threadId":"th1","turnId":"t1"}}"#,
            r#"{"method":"item/completed","params":{"item":{"type":"agentMessage","id":"m1","text":"Making it."},"threadId":"th1","turnId":"t1"}}"#,
            r#"{"method":"item/started","params":{"item":{"type":"commandExecution","id":"call_1","command":"/bin/bash -lc 'echo hi > a.txt && echo '\\''ok'\\'''","cwd":"/w/p","status":"inProgress","commandActions":[],"aggregatedOutput":null,"exitCode":null},"threadId":"th1","turnId":"t1"}}"#,
            r#"{"method":"item/commandExecution/outputDelta","params":{"delta":"ok","itemId":"call_1","threadId":"th1","turnId":"t1"}}"#,
            r#"{"method":"item/completed","params":{"item":{"type":"commandExecution","id":"call_1","command":"/bin/bash -lc 'echo hi > a.txt && echo '\\''ok'\\'''","cwd":"/w/p","status":"completed","commandActions":[],"aggregatedOutput":"ok\n","exitCode":0},"threadId":"th1","turnId":"t1"}}"#,
            r#"{"method":"item/completed","params":{"item":{"type":"commandExecution","id":"call_2","command":"false","cwd":"/w/p","status":"failed","commandActions":[],"aggregatedOutput":"","exitCode":1},"threadId":"th1","turnId":"t1"}}"#,
            r#"{"method":"item/completed","params":{"item":{"type":"agentMessage","id":"m2","text":"Done."},"threadId":"th1","turnId":"t1"}}"#,
            r#"{"method":"thread/tokenUsage/updated","params":{"threadId":"th1","turnId":"t1","tokenUsage":{}}}"#,
            r#"{"method":"turn/completed","params":{"threadId":"th1","turn":{"id":"t1","items":[],"status":"completed","error":null}}}"#,
        ];
        let got: Vec<Parsed> = lines
            .iter()
            .flat_map(|l| c.parse(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        let ev = |b: EventBody| Parsed::Event(b);
        assert_eq!(
            got,
            [
                ev(EventBody::Assistant {
                    text: "Making it.".into()
                }),
                ev(EventBody::ToolCall {
                    id: "call_1".into(),
                    name: "shell".into(),
                    input: json!({"command": "echo hi > a.txt && echo 'ok'", "cwd": "/w/p"}),
                }),
                ev(EventBody::ToolResult {
                    id: "call_1".into(),
                    output: "ok\n".into(),
                    is_error: false
                }),
                ev(EventBody::ToolCall {
                    id: "call_2".into(),
                    name: "shell".into(),
                    input: json!({"command": "false", "cwd": "/w/p"}),
                }),
                ev(EventBody::ToolResult {
                    id: "call_2".into(),
                    output: String::new(),
                    is_error: true
                }),
                ev(EventBody::Assistant {
                    text: "Done.".into()
                }),
                ev(EventBody::TurnEnd {
                    result: Some("Done.".into()),
                    is_error: false
                }),
            ]
        );
        assert_eq!(c.interrupt(1), None, "the turn is over");
    }

    #[test]
    fn file_changes_mcp_calls_and_other_threads() {
        let mut c = ready();
        let p = c
            .parse(r#"{"method":"item/started","params":{"item":{"type":"fileChange","id":"call_p","changes":[{"path":"/w/p/new.txt","kind":{"type":"add"},"diff":"new\n"}],"status":"inProgress"},"threadId":"th1","turnId":"t1"}}"#)
            .unwrap();
        assert_eq!(
            p,
            [Parsed::Event(EventBody::ToolCall {
                id: "call_p".into(),
                name: "apply_patch".into(),
                input: json!({"path": "/w/p/new.txt", "changes": [{"path": "/w/p/new.txt", "kind": {"type": "add"}, "diff": "new\n"}]}),
            })]
        );
        let p = c
            .parse(r#"{"method":"item/completed","params":{"item":{"type":"fileChange","id":"call_p","changes":[{"path":"/w/p/new.txt","kind":{"type":"add"},"diff":"new\n"}],"status":"completed"},"threadId":"th1","turnId":"t1"}}"#)
            .unwrap();
        assert_eq!(
            p,
            [Parsed::Event(EventBody::ToolResult {
                id: "call_p".into(),
                output: "add /w/p/new.txt".into(),
                is_error: false
            })]
        );
        let p = c
            .parse(r#"{"method":"item/completed","params":{"item":{"type":"mcpToolCall","id":"mc1","server":"docs","tool":"search","arguments":{"q":"x"},"status":"completed","result":{"content":[{"type":"text","text":"found"}]},"error":null},"threadId":"th1","turnId":"t1"}}"#)
            .unwrap();
        assert_eq!(
            p,
            [
                Parsed::Event(EventBody::ToolCall {
                    id: "mc1".into(),
                    name: "mcp__docs__search".into(),
                    input: json!({"q": "x"}),
                }),
                Parsed::Event(EventBody::ToolResult {
                    id: "mc1".into(),
                    output: "found".into(),
                    is_error: false
                })
            ]
        );
        // A sub-agent's thread is not this conversation's.
        let p = c
            .parse(r#"{"method":"item/completed","params":{"item":{"type":"agentMessage","id":"x","text":"sub"},"threadId":"th-sub","turnId":"t9"}}"#)
            .unwrap();
        assert_eq!(p, []);
        // Failed and interrupted turns.
        let p = c
            .parse(r#"{"method":"turn/completed","params":{"threadId":"th1","turn":{"id":"t1","items":[],"status":"failed","error":{"message":"stream disconnected"}}}}"#)
            .unwrap();
        assert_eq!(
            p,
            [Parsed::Event(EventBody::TurnEnd {
                result: Some("stream disconnected".into()),
                is_error: true
            })]
        );
        let p = c
            .parse(r#"{"method":"turn/completed","params":{"threadId":"th1","turn":{"id":"t2","items":[],"status":"interrupted","error":null}}}"#)
            .unwrap();
        assert_eq!(
            p,
            [Parsed::Event(EventBody::TurnEnd {
                result: None,
                is_error: false
            })]
        );
    }

    #[test]
    fn approvals_are_put_to_the_user_and_answered() {
        let mut c = ready();
        c.parse(r#"{"method":"turn/started","params":{"threadId":"th1","turn":{"id":"t1","items":[],"status":"inProgress"}}}"#)
            .unwrap();
        c.parse(r#"{"method":"item/started","params":{"item":{"type":"commandExecution","id":"call_1","command":"/bin/bash -lc 'rm -rf build'","cwd":"/w/p","status":"inProgress","commandActions":[]},"threadId":"th1","turnId":"t1"}}"#)
            .unwrap();
        let p = c
            .parse(r#"{"method":"item/commandExecution/requestApproval","id":0,"params":{"kind":"command","threadId":"th1","turnId":"t1","itemId":"call_1","startedAtMs":1,"reason":"clean up","command":"/bin/bash -lc 'rm -rf build'","cwd":"/w/p"}}"#)
            .unwrap();
        assert_eq!(
            p,
            [Parsed::Approval {
                request_id: "0".into(),
                tool: "shell".into(),
                input: json!({"command": "rm -rf build", "cwd": "/w/p", "reason": "clean up"}),
            }]
        );
        let a = sent(&c.decision(
            "0",
            &json!({}),
            &Decision {
                allow: true,
                message: None,
            },
        ));
        assert_eq!(a, [json!({"id": 0, "result": {"decision": "accept"}})]);

        // A file change; denied with a reason, which reaches the model as a note.
        let p = c
            .parse(r#"{"method":"item/fileChange/requestApproval","id":"req-7","params":{"threadId":"th1","turnId":"t1","itemId":"call_9","startedAtMs":1,"reason":null,"grantRoot":null}}"#)
            .unwrap();
        assert_eq!(
            p,
            [Parsed::Approval {
                request_id: "\"req-7\"".into(),
                tool: "apply_patch".into(),
                input: json!({}),
            }]
        );
        let a = sent(&c.decision(
            "\"req-7\"",
            &json!({}),
            &Decision {
                allow: false,
                message: Some("not that file".into()),
            },
        ));
        assert_eq!(
            a[0],
            json!({"id": "req-7", "result": {"decision": "decline"}})
        );
        assert_eq!(a[1]["method"], "turn/start");
        assert_eq!(
            a[1]["params"]["input"][0]["text"],
            "(claude-vm) The user denied that request: not that file"
        );
        // The older approval requests take the older answers.
        let p = c
            .parse(r#"{"method":"execCommandApproval","id":5,"params":{"conversationId":"th1","callId":"c5","command":["ls","-la"],"cwd":"/w/p"}}"#)
            .unwrap();
        assert!(matches!(&p[..], [Parsed::Approval { input, .. }] if input["command"] == "ls -la"));
        let a = sent(&c.decision(
            "5",
            &json!({}),
            &Decision {
                allow: false,
                message: None,
            },
        ));
        assert_eq!(a, [json!({"id": 5, "result": {"decision": "denied"}})]);
    }

    #[test]
    fn requests_it_cannot_serve_get_an_error_and_junk_is_refused() {
        let mut c = ready();
        let r = reply(
            &c.parse(r#"{"method":"item/tool/requestUserInput","id":3,"params":{"threadId":"th1","turnId":"t1","itemId":"i","questions":[],"isBlocking":true}}"#)
                .unwrap(),
        );
        assert_eq!(r[0]["id"], 3);
        assert_eq!(r[0]["error"]["code"], METHOD_NOT_FOUND);
        assert!(c.parse("garbage").is_err());
        assert!(c.parse("[1,2]").is_err());
        assert!(c.parse(r#"{"no":"method"}"#).is_err());
        // Answers to requests we never made are ignored.
        assert_eq!(c.parse(r#"{"id":99,"result":{}}"#).unwrap(), []);
    }

    #[test]
    fn shell_wrappers_are_removed_only_when_unambiguous() {
        assert_eq!(unwrap_shell("/bin/bash -lc 'ls -la'"), "ls -la");
        assert_eq!(unwrap_shell("/usr/bin/bash -lc ls"), "ls");
        assert_eq!(
            unwrap_shell(r#"/bin/bash -lc 'echo '\''hi'\'''"#),
            "echo 'hi'"
        );
        assert_eq!(unwrap_shell("git status"), "git status");
        assert_eq!(unwrap_shell("python -lc 'x'"), "python -lc 'x'");
        assert_eq!(
            unwrap_shell("/bin/bash -lc 'a' 'b'"),
            "/bin/bash -lc 'a' 'b'"
        );
        assert_eq!(
            unwrap_shell(r#"/bin/bash -lc 'a'\''b' 'c'"#),
            r#"/bin/bash -lc 'a'\''b' 'c'"#
        );
        assert_eq!(
            unwrap_shell("/bin/bash -lc 'unclosed"),
            "/bin/bash -lc 'unclosed"
        );
        // Codex quotes with double quotes when the command holds single quotes.
        assert_eq!(
            unwrap_shell(r#"/bin/bash -lc "printf 'hi\\n' > a.txt && echo \"ok\"""#),
            r#"printf 'hi\n' > a.txt && echo "ok""#
        );
        assert_eq!(
            unwrap_shell(r#"/bin/bash -lc "echo $HOME""#),
            r#"/bin/bash -lc "echo $HOME""#
        );
    }
}
