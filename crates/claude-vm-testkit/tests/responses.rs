//! Tests of the scripted model server's OpenAI Responses API (`POST /v1/responses`), with
//! request bodies shaped like the ones Codex 0.163 sends; and one turn of the REAL Codex
//! CLI (`codex exec --json`, from PyPI `openai-codex-cli-bin`) against it, which FAILS
//! when the package is missing (set `CLAUDE_VM_TESTKIT_CODEX` to use another binary).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use claude_vm_testkit::request::normalize;
use claude_vm_testkit::responses::assemble_response;
use claude_vm_testkit::sse::parse_sse;
use claude_vm_testkit::{RequestKind, Rule, Script, ScriptedModel};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 POST on a fresh connection, with an OpenAI-style bearer token.
async fn post(base: &str, path: &str, body: &Value) -> Reply {
    let addr = base.strip_prefix("http://").unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header("host", addr)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-secret-openai")
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        content_type,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

fn tools() -> Value {
    json!([
        {"type": "function", "name": "exec_command", "description": "Runs a command",
         "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}, "strict": false},
        {"type": "custom", "name": "apply_patch", "description": "Edits files",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
    ])
}

fn message(role: &str, text: &str) -> Value {
    let part = if role == "assistant" {
        "output_text"
    } else {
        "input_text"
    };
    json!({"type": "message", "role": role, "content": [{"type": part, "text": text}]})
}

/// A Codex-like request: instructions as developer messages, an environment message, the
/// prompt, then whatever `more` items the turn has produced so far.
fn codex_body(prompt: &str, more: &[Value], stream: bool) -> Value {
    let mut input = vec![
        message(
            "developer",
            "You are Codex, a coding agent. Use apply_patch to edit.",
        ),
        message(
            "user",
            "<environment_context>\n  <cwd>/w/p</cwd>\n</environment_context>",
        ),
        message("user", prompt),
    ];
    input.extend(more.iter().cloned());
    json!({
        "model": "gpt-5.5",
        "instructions": "",
        "input": input,
        "tools": tools(),
        "tool_choice": "auto",
        "parallel_tool_calls": true,
        "reasoning": {"effort": "medium"},
        "store": false,
        "stream": stream,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "01a2-thread",
    })
}

async fn streamed(base: &str, body: &Value) -> (Vec<String>, Value) {
    let r = post(base, "/v1/responses", body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.content_type.starts_with("text/event-stream"),
        "{}",
        r.content_type
    );
    let events = parse_sse(&r.body);
    let names = events.iter().map(|e| e.event.clone().unwrap()).collect();
    (names, assemble_response(&events).unwrap())
}

#[tokio::test]
async fn streams_text_and_function_calls_as_openai_does() {
    let long = "Making the file now; this text is long enough for several deltas.";
    let server = ScriptedModel::start(
        Script::new().rule(
            Rule::any()
                .text(long)
                .tool_use("exec_command", json!({"cmd": "echo hi > a.txt"})),
        ),
    )
    .unwrap();
    let (names, response) = streamed(&server.url(), &codex_body("go", &[], true)).await;
    assert_eq!(names[..2], ["response.created", "response.in_progress"]);
    assert_eq!(names.last().unwrap(), "response.completed");
    for n in [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    let deltas = names
        .iter()
        .filter(|n| *n == "response.output_text.delta")
        .count();
    assert!(deltas > 1, "text streamed in pieces: {names:?}");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["object"], "response");
    assert!(response["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(response["model"], "gpt-5.5");
    assert!(response["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(response["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let out = response["output"].as_array().unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["type"], "message");
    assert_eq!(out[0]["role"], "assistant");
    assert_eq!(out[0]["content"][0]["type"], "output_text");
    assert_eq!(out[0]["content"][0]["text"], long);
    assert_eq!(out[1]["type"], "function_call");
    assert_eq!(out[1]["name"], "exec_command");
    assert!(out[1]["call_id"].as_str().unwrap().starts_with("call_"));
    let args: Value = serde_json::from_str(out[1]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"cmd": "echo hi > a.txt"}));
    let rec = server.responses_requests();
    assert_eq!(rec.len(), 1);
    assert!(rec[0].is_responses() && rec[0].is_model_request() && !rec[0].is_messages());
    assert_eq!(rec[0].answered, "stream");
    assert_eq!(rec[0].header("authorization"), Some("<redacted>"));
    assert!(server.message_requests().is_empty());
    assert_eq!(server.model_requests().len(), 1);
}

#[tokio::test]
async fn a_string_input_becomes_a_custom_tool_call() {
    let patch = "*** Begin Patch\n*** Add File: b.txt\n+b\n*** End Patch\n";
    let server = ScriptedModel::start(Script::from_json(&format!(
        r#"[{{"match": "any", "response": [{{"tool_use": {{"name": "apply_patch", "id": "call_fixed", "input": {}}}}}]}}]"#,
        serde_json::to_string(patch).unwrap()
    )).unwrap())
    .unwrap();
    let (names, response) = streamed(&server.url(), &codex_body("patch", &[], true)).await;
    assert!(
        names
            .iter()
            .any(|n| n == "response.custom_tool_call_input.delta"),
        "{names:?}"
    );
    let item = &response["output"][0];
    assert_eq!(item["type"], "custom_tool_call");
    assert_eq!(item["name"], "apply_patch");
    assert_eq!(item["call_id"], "call_fixed");
    assert_eq!(item["input"], patch);
}

#[tokio::test]
async fn non_streaming_answer_is_one_response_object() {
    let server = ScriptedModel::start(Script::new().rule(Rule::any().text("plain"))).unwrap();
    let r = post(
        &server.url(),
        "/v1/responses",
        &codex_body("hi", &[], false),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("application/json"));
    let v = r.json();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["content"][0]["text"], "plain");
    // The stop reason max_tokens makes an incomplete answer.
    server.set_script(Script::new().rule(Rule::any().text("cut").stop_reason("max_tokens")));
    let (names, response) = streamed(&server.url(), &codex_body("hi", &[], true)).await;
    assert_eq!(names.last().unwrap(), "response.incomplete");
    assert_eq!(response["status"], "incomplete");
    assert_eq!(
        response["incomplete_details"]["reason"],
        "max_output_tokens"
    );
}

fn call(id: &str, cmd: &str) -> Value {
    json!({"type": "function_call", "name": "exec_command", "call_id": id,
           "arguments": json!({"cmd": cmd}).to_string()})
}

fn output(id: &str, out: &str) -> Value {
    json!({"type": "function_call_output", "call_id": id, "output": out})
}

#[tokio::test]
async fn matchers_see_tool_outputs_and_every_message() {
    let script = Script::from_json(
        r#"[
          {"name": "note", "match": {"contains": "ALSO-CHECK", "after_tool_result_contains": "slow-done"}, "response": [{"text": "saw the note"}]},
          {"name": "after", "match": {"after_tool_result_contains": "made-ok"}, "response": [{"text": "made"}]},
          {"name": "history", "match": {"last_user_contains": "what did you do", "contains": "made-ok"}, "response": [{"text": "I made a file"}]},
          {"name": "system", "match": {"system_contains": "apply_patch", "last_user_contains": "system?"}, "response": [{"text": "yes"}]},
          {"name": "dev-not-in-conversation", "match": {"contains": "You are Codex"}, "response": [{"text": "wrong"}]},
          {"name": "first", "match": {"last_user_contains": "make the file"}, "response": [{"text": "making"}]}
        ]"#,
    )
    .unwrap();
    let server = ScriptedModel::start(script).unwrap();
    let url = server.url();
    let text = |(_, r): (Vec<String>, Value)| {
        r["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    // The first request of a turn: the prompt is the last user message.
    assert_eq!(
        text(streamed(&url, &codex_body("please make the file", &[], true)).await),
        "making"
    );
    // After the call: its output is the last user message.
    let turn = [
        message("assistant", "Making it."),
        call("call_1", "echo hi > a.txt && echo made-ok"),
        output("call_1", "made-ok\n"),
    ];
    assert_eq!(
        text(streamed(&url, &codex_body("please make the file", &turn, true)).await),
        "made"
    );
    // The next turn sees the whole history.
    let mut next = turn.to_vec();
    next.push(message("assistant", "Made it."));
    next.push(message("user", "what did you do?"));
    assert_eq!(
        text(streamed(&url, &codex_body("please make the file", &next, true)).await),
        "I made a file"
    );
    // A note the user sent mid-turn follows the tool output (Codex steers the turn).
    let steered = [
        call("call_2", "sleep 6 && echo slow-done"),
        output("call_2", "slow-done\n"),
        message("user", "ALSO-CHECK the logs"),
    ];
    assert_eq!(
        text(streamed(&url, &codex_body("run the slow job", &steered, true)).await),
        "saw the note"
    );
    // Developer messages are the system prompt.
    assert_eq!(
        text(streamed(&url, &codex_body("system?", &[], true)).await),
        "yes"
    );
    let rec = server.responses_requests();
    let names: Vec<_> = rec.iter().map(|r| r.rule_name.clone().unwrap()).collect();
    assert_eq!(names, ["first", "after", "history", "note", "system"]);
    assert_eq!(rec[1].last_user_text().unwrap(), "made-ok\n");
    assert!(rec[2].conversation_text().contains("please make the file"));
    assert!(!rec[2].conversation_text().contains("You are Codex"));
    assert!(rec[0].system_text().contains("You are Codex"));
    assert_eq!(rec[0].input().len(), 3);
}

#[test]
fn normalize_maps_responses_items_to_messages() {
    let body = codex_body(
        "go",
        &[
            json!({"type": "reasoning", "summary": [], "encrypted_content": "x"}),
            message("assistant", "Calling."),
            call("c1", "ls"),
            json!({"type": "custom_tool_call", "name": "apply_patch", "call_id": "c2", "input": "*** Begin Patch"}),
            output("c1", "a.txt"),
            json!({"type": "custom_tool_call_output", "call_id": "c2",
                   "output": [{"type": "input_text", "text": "Done!"}]}),
        ],
        true,
    );
    let n = normalize(&body);
    assert_eq!(
        n["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "<environment_context>\n  <cwd>/w/p</cwd>\n</environment_context>"}]},
            {"role": "user", "content": [{"type": "text", "text": "go"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Calling."},
                {"type": "tool_use", "id": "c1", "name": "exec_command", "input": {"cmd": "ls"}},
                {"type": "tool_use", "id": "c2", "name": "apply_patch", "input": "*** Begin Patch"}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "a.txt"},
                {"type": "tool_result", "tool_use_id": "c2", "content": "Done!"}
            ]}
        ])
    );
    assert_eq!(n["tools"].as_array().unwrap().len(), 2);
    assert_eq!(n["model"], "gpt-5.5");
    // Tools carried by an input item count; a plain string input is one user message.
    let nested = json!({"model": "m", "input": [
        {"type": "additional_tools", "role": "developer", "tools": [{"type": "namespace", "name": "functions", "tools": []}]}
    ]});
    assert!(claude_vm_testkit::request::is_agent_request(&nested));
    let plain = json!({"model": "m", "input": "hello"});
    assert_eq!(
        normalize(&plain)["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hello"}]}])
    );
    assert!(!claude_vm_testkit::request::is_agent_request(&plain));
    // A Messages body is left as it is.
    let anthropic = json!({"model": "claude", "messages": [], "tools": []});
    assert_eq!(*normalize(&anthropic), anthropic);
}

#[tokio::test]
async fn side_requests_errors_and_structured_fallbacks() {
    let server = ScriptedModel::start(
        Script::new()
            .rule(Rule::contains("overload me").error(429, "rate_limit_exceeded", "slow down"))
            .rule(Rule::any().text("agent answer"))
            .rule(
                Rule::any()
                    .kind(RequestKind::Side)
                    .text("side answer")
                    .times(1),
            ),
    )
    .unwrap();
    let url = server.url();
    let r = post(&url, "/v1/responses", &codex_body("overload me", &[], true)).await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json(),
        json!({"error": {"message": "slow down", "type": "rate_limit_exceeded", "param": null, "code": null}})
    );
    // Without tools: a side request, which agent rules skip.
    let side =
        json!({"model": "gpt-5.5", "input": [message("user", "title this")], "stream": true});
    let (_, a) = streamed(&url, &side).await;
    assert_eq!(a["output"][0]["content"][0]["text"], "side answer");
    // Budget used up: a structured-output side request gets JSON fitting its schema.
    let mut structured = side.clone();
    structured["text"] = json!({"format": {"type": "json_schema", "name": "t", "strict": true,
        "schema": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}}});
    let (_, a) = streamed(&url, &structured).await;
    let text = a["output"][0]["content"][0]["text"].as_str().unwrap();
    assert!(
        serde_json::from_str::<Value>(text).unwrap()["title"].is_string(),
        "{text}"
    );
    let r = post(&url, "/v1/responses", &json!("not an object")).await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"].is_string());
    let answered: Vec<_> = server
        .responses_requests()
        .iter()
        .map(|r| r.answered.clone())
        .collect();
    assert_eq!(answered, ["429", "stream", "stream (fallback)", "400"]);
}

/// The Codex CLI from PyPI (`codex_cli_bin/bin/codex`), or `CLAUDE_VM_TESTKIT_CODEX`.
fn codex() -> PathBuf {
    if let Some(p) = std::env::var_os("CLAUDE_VM_TESTKIT_CODEX") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import codex_cli_bin; print(codex_cli_bin.bundled_codex_path())",
        ])
        .output()
        .expect("python3 runs");
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && p.is_file(),
        "\n\nThe real-Codex test needs the Codex CLI from the Python package openai-codex-cli-bin, \
         and it is not installed.\nInstall it with:   pip install openai-codex-cli-bin \
         (scripts/test-deps.sh does)\n(or point CLAUDE_VM_TESTKIT_CODEX at a codex binary).\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p
}

#[test]
fn the_real_codex_cli_runs_a_tool_using_turn() {
    let server = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "make the file"},
               "response": [{"text": "Making it."}, {"tool_use": {"name": "exec_command", "input": {"cmd": "echo hello > made.txt && echo made-ok"}}}]},
              {"match": {"after_tool_result_contains": "made-ok"}, "response": [{"text": "Made the file."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let proj = tempfile::tempdir().unwrap();
    let provider = format!(
        "model_providers.testkit={{name=\"testkit\",base_url=\"{}/v1\",env_key=\"OPENAI_API_KEY\",wire_api=\"responses\"}}",
        server.url()
    );
    std::fs::create_dir_all(home.path().join(".codex")).unwrap();
    let child = Command::new(codex())
        .args([
            "exec",
            "--json",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            "-c",
            "model=\"gpt-5.5\"",
            "-c",
            "model_provider=\"testkit\"",
            "-c",
            &provider,
            "please make the file",
        ])
        .current_dir(proj.path())
        .env("HOME", home.path())
        .env("CODEX_HOME", home.path().join(".codex"))
        .env("OPENAI_API_KEY", "sk-test")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "codex failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let command = events
        .iter()
        .find(|e| e["type"] == "item.completed" && e["item"]["type"] == "command_execution")
        .unwrap_or_else(|| panic!("no command ran: {stdout}"));
    assert_eq!(command["item"]["aggregated_output"], "made-ok\n");
    let last = events
        .iter()
        .rev()
        .find(|e| e["type"] == "item.completed" && e["item"]["type"] == "agent_message")
        .unwrap();
    assert_eq!(last["item"]["text"], "Made the file.");
    assert!(events.iter().any(|e| e["type"] == "turn.completed"));
    assert_eq!(
        std::fs::read_to_string(proj.path().join("made.txt")).unwrap(),
        "hello\n"
    );
    let rec = server.responses_requests();
    assert_eq!(rec.len(), 2, "{rec:#?}");
    assert_eq!(rec[0].matched_rule, Some(0));
    assert_eq!(rec[1].matched_rule, Some(1));
    // Codex prefixes the output with a header ("Chunk ID: ...\nOutput:\n").
    let result = rec[1].last_user_text().unwrap();
    assert!(result.ends_with("\nOutput:\nmade-ok\n"), "{result}");
    assert!(rec.iter().all(|r| r.is_agent() && r.is_stream()));
}

fn wait_with_timeout(child: std::process::Child, limit: Duration) -> std::process::Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("codex did not finish within {limit:?}");
        }
    }
}
