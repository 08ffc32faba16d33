//! Tests of the scripted model server itself (no Claude Code needed).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use claude_vm_testkit::sse::{assemble_message, parse_sse};
use claude_vm_testkit::{RecordedRequest, RequestKind, Rule, Script, ScriptedModel};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

struct Reply {
    status: u16,
    content_type: String,
    headers: hyper::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request on a fresh connection.
async fn call(base: &str, method: &str, path: &str, body: Option<&Value>) -> Reply {
    let addr = base.strip_prefix("http://").unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header("content-type", "application/json")
        .header("x-api-key", "sk-secret-value")
        .header("authorization", "Bearer secret-token")
        .header("anthropic-version", "2023-06-01")
        .body(Full::new(Bytes::from(payload)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        content_type,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

fn tools() -> Value {
    json!([{"name": "Write", "description": "write a file", "input_schema": {"type": "object"}}])
}

/// A Claude-Code-like agent request: tools offered, one user message.
fn agent_body(user: &str, stream: bool) -> Value {
    json!({
        "model": "claude-test-model",
        "max_tokens": 1024,
        "stream": stream,
        "system": [{"type": "text", "text": "You are Claude Code."}],
        "tools": tools(),
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "<system-reminder>x</system-reminder>"},
                                         {"type": "text", "text": user}]}
        ]
    })
}

async fn post_messages(base: &str, body: &Value) -> Reply {
    call(base, "POST", "/v1/messages?beta=true", Some(body)).await
}

/// Posts a streaming request and rebuilds the message from its events.
async fn streamed(base: &str, body: &Value) -> Value {
    let r = post_messages(base, body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assemble_message(&parse_sse(&r.body)).unwrap()
}

fn text_of(message: &Value) -> String {
    message["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "text")
        .map(|b| b["text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn streams_text_with_anthropic_sse_framing() {
    let long = "Hello there! This reply is long enough to be split into several text deltas.";
    let server = ScriptedModel::start(Script::new().rule(Rule::any().text(long))).unwrap();
    let r = post_messages(&server.url(), &agent_body("say hi", true)).await;
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/event-stream"),
        "{}",
        r.content_type
    );
    assert!(r.headers.get("request-id").is_some());

    // Raw framing: every frame is "event: X\ndata: {json}\n\n".
    assert!(r.body.ends_with("\n\n"));
    for frame in r.body.trim_end().split("\n\n") {
        let lines: Vec<&str> = frame.split('\n').collect();
        assert_eq!(lines.len(), 2, "frame {frame:?}");
        let name = lines[0].strip_prefix("event: ").expect("event line");
        let data: Value =
            serde_json::from_str(lines[1].strip_prefix("data: ").expect("data line")).unwrap();
        assert_eq!(data["type"], name);
    }

    let events = parse_sse(&r.body);
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    let deltas = names
        .iter()
        .filter(|n| **n == "content_block_delta")
        .count();
    assert!(
        deltas >= 3,
        "text should arrive in several deltas: {names:?}"
    );
    let mut expected = vec!["message_start", "ping", "content_block_start"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);

    let start = events[0].json().unwrap();
    assert_eq!(start["message"]["role"], "assistant");
    assert_eq!(start["message"]["model"], "claude-test-model");
    assert!(start["message"]["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["message"]["content"], json!([]));
    assert!(start["message"]["stop_reason"].is_null());
    assert!(start["message"]["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let delta = events[events.len() - 2].json().unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
    let first_delta = events[3].json().unwrap();
    assert_eq!(first_delta["delta"]["type"], "text_delta");

    let message = assemble_message(&events).unwrap();
    assert_eq!(text_of(&message), long);
    assert_eq!(message["stop_reason"], "end_turn");
}

#[tokio::test]
async fn streams_tool_use_with_input_json_deltas() {
    let input =
        json!({"file_path": "/tmp/project/hello.txt", "content": "line one\nline \"two\" ✓\n"});
    let server = ScriptedModel::start(
        Script::new().rule(
            Rule::any()
                .text("Writing.")
                .tool_use("Write", input.clone()),
        ),
    )
    .unwrap();
    let r = post_messages(&server.url(), &agent_body("write it", true)).await;
    let events = parse_sse(&r.body);
    let data: Vec<Value> = events.iter().map(|e| e.json().unwrap()).collect();

    let starts: Vec<&Value> = data
        .iter()
        .filter(|d| d["type"] == "content_block_start")
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0]["index"], 0);
    assert_eq!(starts[0]["content_block"]["type"], "text");
    assert_eq!(starts[1]["index"], 1);
    let tool_block = &starts[1]["content_block"];
    assert_eq!(tool_block["type"], "tool_use");
    assert_eq!(tool_block["name"], "Write");
    assert_eq!(tool_block["input"], json!({}));
    let id = tool_block["id"].as_str().unwrap();
    assert!(id.starts_with("toolu_") && id.len() > 20, "{id}");

    let json_deltas: Vec<&Value> = data
        .iter()
        .filter(|d| d["type"] == "content_block_delta" && d["index"] == 1)
        .collect();
    assert!(json_deltas.len() >= 3);
    assert!(
        json_deltas
            .iter()
            .all(|d| d["delta"]["type"] == "input_json_delta")
    );
    assert_eq!(json_deltas[0]["delta"]["partial_json"], "");
    let joined: String = json_deltas
        .iter()
        .map(|d| d["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&joined).unwrap(), input);

    let message = assemble_message(&events).unwrap();
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(message["content"][0]["text"], "Writing.");
    assert_eq!(message["content"][1]["input"], input);
    assert_eq!(message["content"][1]["id"], id);

    // Ids differ between answers.
    let again = streamed(&server.url(), &agent_body("write it", true)).await;
    assert_ne!(again["content"][1]["id"], id);
}

#[tokio::test]
async fn non_streaming_answer_is_one_json_message() {
    let server = ScriptedModel::start(
        Script::new().rule(
            Rule::any()
                .text("calling")
                .tool_use("Bash", json!({"command": "ls"}))
                .stop_reason("max_tokens"),
        ),
    )
    .unwrap();
    let r = post_messages(&server.url(), &agent_body("hi", false)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type, "application/json");
    let m = r.json();
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["model"], "claude-test-model");
    assert_eq!(m["stop_reason"], "max_tokens");
    assert!(m["stop_sequence"].is_null());
    assert_eq!(m["content"][0], json!({"type": "text", "text": "calling"}));
    assert_eq!(m["content"][1]["type"], "tool_use");
    assert_eq!(m["content"][1]["name"], "Bash");
    assert_eq!(m["content"][1]["input"], json!({"command": "ls"}));
    assert!(
        m["content"][1]["id"]
            .as_str()
            .unwrap()
            .starts_with("toolu_")
    );
    assert!(m["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

/// A mid-turn request as Claude Code sends it: tool_result in the last user
/// message and the interjected user message as a system-role message.
fn mid_turn_body() -> Value {
    json!({
        "model": "claude-test-model",
        "stream": true,
        "system": [{"type": "text", "text": "SYSTEM-PROMPT-ONLY"}],
        "tools": tools(),
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "run the slow thing"}]},
            {"role": "system", "content": "# Environment\nPrimary working directory: /w"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "ASSISTANT-SAID"},
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "sleep 3; echo TOOL-INPUT-ONLY"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": "slept-ok"}]}
            ]},
            {"role": "system", "content": [{"type": "text",
                "text": "The user sent a new message while you were working:\nINTERJECTION-42\n\nAddress it."}]}
        ]
    })
}

#[tokio::test]
async fn matchers_select_rules_in_order() {
    let script = Script::from_json(
        r#"{"rules": [
            {"name": "interject", "match": {"contains": "INTERJECTION-42"}, "response": [{"text": "A"}]},
            {"name": "first", "match": {"last_user_contains": "first question"}, "response": [{"text": "B"}]},
            {"name": "tool", "match": {"after_tool_result_contains": "slept-ok"}, "response": [{"text": "C"}]},
            {"name": "sys", "match": {"system_contains": "SPECIAL-SYSTEM"}, "response": [{"text": "D"}]},
            {"name": "model", "match": {"model_contains": "haiku"}, "response": [{"text": "E"}]},
            {"name": "both", "match": {"contains": "alpha", "not_contains": "beta"}, "response": [{"text": "F"}]},
            {"name": "rest", "match": "any", "response": [{"text": "G"}]}
        ]}"#,
    )
    .unwrap();
    let server = ScriptedModel::start(script).unwrap();
    let url = server.url();

    // `contains` sees system-role messages inside `messages`.
    assert_eq!(text_of(&streamed(&url, &mid_turn_body()).await), "A");

    // Without the interjection, the tool_result rule answers.
    let mut b = mid_turn_body();
    b["messages"].as_array_mut().unwrap().pop();
    assert_eq!(text_of(&streamed(&url, &b).await), "C");

    // `after_tool_result_contains` looks at tool_result blocks only.
    let mut b2 = b.clone();
    b2["messages"][3]["content"] = json!([{"type": "text", "text": "slept-ok"}]);
    assert_eq!(text_of(&streamed(&url, &b2).await), "G");

    // `last_user_contains` only looks at the last user message ...
    assert_eq!(
        text_of(&streamed(&url, &agent_body("my first question", true)).await),
        "B"
    );
    let mut older = agent_body("my first question", true);
    older["messages"].as_array_mut().unwrap().extend([
        json!({"role": "assistant", "content": "answer"}),
        json!({"role": "user", "content": "next"}),
    ]);
    assert_eq!(text_of(&streamed(&url, &older).await), "G");
    // ... and string content counts too.
    let mut plain = agent_body("", true);
    plain["messages"] = json!([{"role": "user", "content": "a first question as a string"}]);
    assert_eq!(text_of(&streamed(&url, &plain).await), "B");

    // The top-level system prompt is not part of `contains` but of `system_contains`.
    let mut s = agent_body("nothing", true);
    s["system"] = json!("SPECIAL-SYSTEM INTERJECTION-42");
    assert_eq!(text_of(&streamed(&url, &s).await), "D");

    // What `contains` searches: every role's text and tool results, not
    // tool inputs nor the top-level system prompt.
    let text = claude_vm_testkit::request::conversation_text(&mid_turn_body());
    for present in [
        "run the slow thing",
        "# Environment",
        "ASSISTANT-SAID",
        "slept-ok",
        "INTERJECTION-42",
    ] {
        assert!(text.contains(present), "{present} missing from {text:?}");
    }
    for absent in ["TOOL-INPUT-ONLY", "SYSTEM-PROMPT-ONLY"] {
        assert!(!text.contains(absent), "{absent} in {text:?}");
    }

    let mut m = agent_body("nothing", true);
    m["model"] = json!("claude-haiku-4-5");
    assert_eq!(text_of(&streamed(&url, &m).await), "E");

    assert_eq!(
        text_of(&streamed(&url, &agent_body("alpha only", true)).await),
        "F"
    );
    assert_eq!(
        text_of(&streamed(&url, &agent_body("alpha and beta", true)).await),
        "G"
    );

    let names: Vec<Option<String>> = server.requests().into_iter().map(|r| r.rule_name).collect();
    let names: Vec<&str> = names.iter().map(|n| n.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "interject",
            "tool",
            "rest",
            "first",
            "rest",
            "first",
            "sys",
            "model",
            "both",
            "rest"
        ]
    );
}

#[tokio::test]
async fn times_budget_is_spent_then_next_rule_and_fallback() {
    let server = ScriptedModel::start(
        Script::new()
            .rule(Rule::contains("go").times(2).text("first two"))
            .rule(Rule::contains("go").times(1).text("third"))
            .fallback(vec![claude_vm_testkit::Block::Text(
                "custom fallback".into(),
            )]),
    )
    .unwrap();
    let url = server.url();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(text_of(&streamed(&url, &agent_body("go", true)).await));
    }
    assert_eq!(got, ["first two", "first two", "third", "custom fallback"]);
    assert_eq!(server.rule_hits(), [2, 1]);
    let matched: Vec<Option<usize>> = server.requests().iter().map(|r| r.matched_rule).collect();
    assert_eq!(matched, [Some(0), Some(0), Some(1), None]);
    assert_eq!(server.requests()[3].answered, "stream (fallback)");

    // Replacing the script resets the budgets.
    server.set_script(Script::new().rule(Rule::contains("go").times(1).text("fresh")));
    assert_eq!(
        text_of(&streamed(&url, &agent_body("go", true)).await),
        "fresh"
    );
    assert_eq!(
        text_of(&streamed(&url, &agent_body("go", true)).await),
        "ok"
    );
}

#[tokio::test]
async fn side_requests_skip_rules_unless_asked() {
    let server = ScriptedModel::start(
        Script::new()
            .rule(
                Rule::contains("make the file")
                    .times(1)
                    .text("agent answer"),
            )
            .rule(
                Rule::contains("special side")
                    .kind(RequestKind::Side)
                    .text("side answer"),
            ),
    )
    .unwrap();
    let url = server.url();

    // Interactive Claude Code's title request: no tools, structured output.
    let mut title = agent_body("<session>\nmake the file\n</session>", true);
    title["tools"] = json!([]);
    title["output_config"] = json!({"format": {"type": "json_schema", "schema": {
        "type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"],
        "additionalProperties": false}}});
    let answer = streamed(&url, &title).await;
    let parsed: Value = serde_json::from_str(&text_of(&answer)).unwrap();
    assert!(parsed["title"].is_string(), "{parsed}");

    // The rule's budget is still there for the agent request.
    assert_eq!(
        text_of(&streamed(&url, &agent_body("make the file", true)).await),
        "agent answer"
    );

    let mut side = agent_body("special side", false);
    side.as_object_mut().unwrap().remove("tools");
    assert_eq!(
        text_of(&post_messages(&url, &side).await.json()),
        "side answer"
    );
    // An agent request does not match a side-only rule.
    assert_eq!(
        text_of(&streamed(&url, &agent_body("special side", true)).await),
        "ok"
    );

    let kinds: Vec<bool> = server
        .requests()
        .iter()
        .map(RecordedRequest::is_agent)
        .collect();
    assert_eq!(kinds, [false, true, false, true]);
}

#[tokio::test]
async fn records_requests_and_serves_them_as_json() {
    let server =
        ScriptedModel::start(Script::new().rule(Rule::any().named("r0").text("hi"))).unwrap();
    let url = server.url();
    let body = agent_body("record me", true);
    post_messages(&url, &body).await;
    let ct = call(
        &url,
        "POST",
        "/v1/messages/count_tokens",
        Some(&json!({"model": "m", "messages": []})),
    )
    .await;
    assert_eq!(ct.status, 200);
    assert!(ct.json()["input_tokens"].as_u64().unwrap() > 0);
    let nf = call(&url, "GET", "/v1/unknown", None).await;
    assert_eq!(nf.status, 404);
    assert_eq!(nf.json()["type"], "error");
    assert_eq!(nf.json()["error"]["type"], "not_found_error");
    assert_eq!(call(&url, "HEAD", "/api/hello", None).await.status, 200);
    let models = call(&url, "GET", "/v1/models", None).await.json();
    assert!(!models["data"].as_array().unwrap().is_empty());
    assert_eq!(
        call(&url, "GET", "/v1/models/claude-x", None).await.json()["id"],
        "claude-x"
    );
    assert_eq!(
        call(&url, "GET", "/_testkit/health", None).await.status,
        200
    );

    let reqs = server.requests();
    assert_eq!(reqs.len(), 6, "testkit endpoints are not recorded");
    let r = &reqs[0];
    assert_eq!(r.seq, 0);
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/messages?beta=true");
    assert_eq!(r.path_only(), "/v1/messages");
    assert!(r.is_messages() && r.is_stream() && r.is_agent());
    assert_eq!(r.body, body);
    assert_eq!(r.model(), Some("claude-test-model"));
    assert_eq!(r.header("X-API-Key"), Some("<redacted>"));
    assert_eq!(r.header("authorization"), Some("<redacted>"));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.matched_rule, Some(0));
    assert_eq!(r.rule_name.as_deref(), Some("r0"));
    assert_eq!(r.answered, "stream");
    assert_eq!(
        r.last_user_text().unwrap(),
        "<system-reminder>x</system-reminder>\nrecord me"
    );
    assert_eq!(r.system_text(), "You are Claude Code.");
    assert!(!reqs[1].is_messages());
    assert_eq!(reqs[1].answered, "count_tokens");
    assert_eq!(reqs[2].answered, "404");
    assert_eq!(server.message_requests().len(), 1);
    let all = serde_json::to_string(&reqs).unwrap();
    assert!(!all.contains("sk-secret-value") && !all.contains("secret-token"));

    let over_http: Vec<RecordedRequest> =
        serde_json::from_str(&call(&url, "GET", "/_testkit/requests", None).await.body).unwrap();
    assert_eq!(over_http, reqs);

    let report = call(&url, "GET", "/_testkit/script", None).await.json();
    assert_eq!(report["used"], json!([1]));
    assert_eq!(report["script"]["rules"][0]["name"], "r0");

    assert_eq!(
        call(&url, "DELETE", "/_testkit/requests", None)
            .await
            .status,
        200
    );
    assert!(server.requests().is_empty());

    let put = call(
        &url,
        "PUT",
        "/_testkit/script",
        Some(&json!([{"response": [{"text": "replaced"}]}])),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(
        text_of(&streamed(&url, &agent_body("x", true)).await),
        "replaced"
    );
    let bad = call(
        &url,
        "PUT",
        "/_testkit/script",
        Some(&json!({"rules": [{"bogus": 1}]})),
    )
    .await;
    assert_eq!(bad.status, 400);

    // Non-JSON bodies are answered 400 and recorded as text.
    let addr = url.strip_prefix("http://").unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::post("/v1/messages")
                .header("host", addr)
                .body(Full::new(Bytes::from_static(b"not json")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(server.requests().last().unwrap().body, json!("not json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_error_and_wait_for() {
    let server = ScriptedModel::start(
        Script::new()
            .rule(Rule::contains("slow").delay_ms(400).text("late"))
            .rule(Rule::contains("busy").error(529, "overloaded_error", "Overloaded")),
    )
    .unwrap();
    let url = server.url();

    let t = Instant::now();
    let pending = tokio::spawn({
        let url = url.clone();
        async move { streamed(&url, &agent_body("slow", true)).await }
    });
    // The request is recorded on arrival, before the delay is over.
    let got = tokio::task::block_in_place(|| {
        server.wait_for(Duration::from_secs(5), |r| {
            r.iter().any(|r| r.matched_rule == Some(0))
        })
    });
    assert!(got.is_some());
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "recorded before answering"
    );
    assert_eq!(text_of(&pending.await.unwrap()), "late");
    assert!(t.elapsed() >= Duration::from_millis(400));

    for stream in [true, false] {
        let r = post_messages(&url, &agent_body("busy", stream)).await;
        assert_eq!(r.status, 529);
        assert_eq!(
            r.json(),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        );
    }
    assert!(
        tokio::task::block_in_place(
            || server.wait_for(Duration::from_millis(100), |r| r.len() > 10)
        )
        .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_with_chunk_delay() {
    let rule = Rule::any()
        .text("a fairly long answer that gets streamed in several chunks")
        .chunk_delay_ms(30);
    let server = ScriptedModel::start(Script::new().rule(rule)).unwrap();
    let url = server.url();
    let t = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move { streamed(&url, &agent_body(&format!("q{i}"), true)).await })
        })
        .collect();
    for t in tasks {
        assert!(text_of(&t.await.unwrap()).starts_with("a fairly long answer"));
    }
    // 3 deltas * 30 ms each, served concurrently rather than one after another.
    assert!(t.elapsed() < Duration::from_millis(4 * 3 * 30 + 1000));
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn script_parsing() {
    // The bare array form.
    let s = Script::from_json(r#"[{"match": {"contains": "x"}, "response": [{"text": "y"}]}]"#)
        .unwrap();
    assert_eq!(s.rules.len(), 1);
    assert_eq!(s.rules[0].matcher.contains.as_deref(), Some("x"));
    // Missing match = any; "any" string; {"any": true}.
    for m in [
        "",
        r#""match": "any","#,
        r#""match": {"any": true},"#,
        r#""match": null,"#,
    ] {
        let s = Script::from_json(&format!(r#"[{{{m} "response": []}}]"#)).unwrap();
        assert!(
            s.rules[0].matcher.matches(&agent_body("whatever", true)),
            "{m}"
        );
    }
    // Typos are errors, not silently ignored.
    assert!(Script::from_json(r#"[{"match": {"contain": "x"}}]"#).is_err());
    assert!(Script::from_json(r#"[{"respons": []}]"#).is_err());
    assert!(Script::from_json(r#"[{"response": [{"txt": "a"}]}]"#).is_err());
    assert!(Script::from_json(r#"{"rule": []}"#).is_err());
    assert!(Script::from_json(r#"[{"match": 3}]"#).is_err());
    // Default stop reasons.
    let s = Script::from_json(
        r#"[{"response": [{"text": "a"}]},
            {"response": [{"tool_use": {"name": "Read", "input": {"file_path": "/x"}}}]},
            {"response": [{"tool_use": {"name": "Read"}}], "stop_reason": "pause_turn"}]"#,
    )
    .unwrap();
    assert_eq!(s.rules[0].effective_stop_reason(), "end_turn");
    assert_eq!(s.rules[1].effective_stop_reason(), "tool_use");
    assert_eq!(s.rules[2].effective_stop_reason(), "pause_turn");
    // Round trip.
    assert_eq!(Script::from_json(&s.to_json()).unwrap(), s);
}

#[test]
fn documented_example_script_parses() {
    let lib = include_str!("../src/lib.rs");
    let mut inside = false;
    let mut json = String::new();
    for line in lib.lines() {
        let line = line.strip_prefix("//!").unwrap_or("");
        let line = line.strip_prefix(' ').unwrap_or(line);
        if line.trim() == "```json" {
            inside = true;
        } else if inside && line.trim() == "```" {
            break;
        } else if inside {
            json.push_str(line);
            json.push('\n');
        }
    }
    let s = Script::from_json(&json).unwrap();
    assert_eq!(s.rules.len(), 4);
    assert_eq!(s.rules[0].times, Some(1));
    assert_eq!(s.rules[1].delay_ms, Some(200));
}

#[test]
fn sse_parser_handles_crlf_comments_and_multiline_data() {
    let events = parse_sse(
        ": comment\r\nevent: a\r\ndata: {\"x\":\r\ndata: 1}\r\n\r\nevent: b\ndata:2\n\n\n",
    );
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event.as_deref(), Some("a"));
    assert_eq!(events[0].json().unwrap(), json!({"x": 1}));
    assert_eq!(events[1].data, "2");
}

#[test]
fn works_from_sync_code_and_stops_on_drop() {
    let server = ScriptedModel::start(Script::new()).unwrap();
    let addr = server.addr();
    assert!(std::net::TcpStream::connect(addr).is_ok());
    drop(server);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "listener closed after drop"
    );
}

#[test]
fn binary_prints_url_and_serves_script() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.json");
    std::fs::write(
        &script,
        r#"[{"match": {"contains": "ping"}, "response": [{"text": "pong"}]}]"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_scripted-model"))
        .args(["--listen", "127.0.0.1:0", "--script"])
        .arg(&script)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first.trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
        "{url:?}"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (answer, recorded) = rt.block_on(async {
        let answer = streamed(&url, &agent_body("ping", true)).await;
        let recorded: Vec<RecordedRequest> =
            serde_json::from_str(&call(&url, "GET", "/_testkit/requests", None).await.body)
                .unwrap();
        (answer, recorded)
    });
    assert_eq!(text_of(&answer), "pong");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].matched_rule, Some(0));

    // SIGTERM ends it cleanly; the request was logged on stderr.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("POST /v1/messages"), "{log}");

    // A bad script fails with a message.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"[{"match": {"contain": "x"}}]"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scripted-model"))
        .arg("--script")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("contain"));
}
