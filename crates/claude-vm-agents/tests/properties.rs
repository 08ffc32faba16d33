//! Property tests of everything that reads what an agent (or a crash) wrote: the three
//! output parsers and the transcript reader. Arbitrary input never panics; valid input
//! round-trips.
//!
//! 256 cases each by default (bounded, part of `cargo test`); for a longer run:
//! `PROPTEST_CASES=100000 cargo test -p claude-vm-agents --test properties`.

use claude_vm_agents::acp::Acp;
use claude_vm_agents::adapter::{Adapter, Claude, Parsed};
use claude_vm_agents::codex::Codex;
use claude_vm_agents::transcript::{self, Writer};
use claude_vm_protocol::api::{
    AgentSpec, ConversationStatus, Decision, Event, EventBody, PermissionMode,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn config() -> ProptestConfig {
    // `PROPTEST_CASES` overrides the default of 256 (proptest reads it itself). Failures
    // are printed with their minimal input rather than saved beside the sources.
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Words the parsers look for, so generated JSON reaches deep into them.
const KEYS: &[&str] = &[
    "type",
    "subtype",
    "session_id",
    "message",
    "content",
    "text",
    "id",
    "name",
    "input",
    "tool_use_id",
    "is_error",
    "result",
    "request",
    "request_id",
    "tool_name",
    "jsonrpc",
    "method",
    "params",
    "error",
    "code",
    "item",
    "threadId",
    "turnId",
    "turn",
    "thread",
    "status",
    "command",
    "cwd",
    "aggregatedOutput",
    "exitCode",
    "changes",
    "update",
    "sessionUpdate",
    "toolCallId",
    "title",
    "rawInput",
    "rawOutput",
    "kind",
    "locations",
    "stopReason",
    "sessionId",
    "options",
    "optionId",
    "toolCall",
    "entries",
    "authMethods",
    "protocolVersion",
    "agentCapabilities",
    "delta",
    "itemId",
    "path",
    "diff",
];
const WORDS: &[&str] = &[
    "assistant",
    "user",
    "result",
    "system",
    "control_request",
    "can_use_tool",
    "tool_use",
    "tool_result",
    "text",
    "2.0",
    "initialize",
    "turn/started",
    "turn/completed",
    "item/started",
    "item/completed",
    "agentMessage",
    "commandExecution",
    "fileChange",
    "mcpToolCall",
    "completed",
    "failed",
    "inProgress",
    "item/commandExecution/requestApproval",
    "item/fileChange/requestApproval",
    "execCommandApproval",
    "session/update",
    "session/request_permission",
    "agent_message_chunk",
    "tool_call",
    "tool_call_update",
    "plan",
    "end_turn",
    "cancelled",
    "allow_once",
    "reject_once",
    "th1",
    "t1",
    "s1",
    "/bin/bash -lc 'ls'",
    "fs/read_text_file",
    "error",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..5).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Floats that print and read back exactly.
        (-4000i32..4000).prop_map(|i| json!(f64::from(i) / 8.0)),
        prop::sample::select(WORDS).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec(
                (
                    prop_oneof![prop::sample::select(KEYS).prop_map(str::to_owned), ".{0,6}"],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Lines as an agent could print them: structured JSON, junk text, arbitrary bytes.
fn agent_line() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => json_value().prop_map(|v| v.to_string()),
        1 => any::<String>(),
        1 => prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

fn spec(kind: &str) -> AgentSpec {
    AgentSpec {
        kind: kind.into(),
        program: kind.into(),
        ..AgentSpec::default()
    }
}

/// Feed `lines` to `adapter`, exercising the other calls in between; nothing may panic,
/// and everything it wants written back is whole JSON lines.
fn drive(adapter: &mut dyn Adapter, lines: &[String]) {
    for (i, line) in lines.iter().enumerate() {
        if let Ok(parsed) = adapter.parse(line) {
            for p in parsed {
                match p {
                    Parsed::Reply(bytes) => assert_json_lines(&bytes),
                    Parsed::Approval {
                        request_id, input, ..
                    } => {
                        let allow = i % 2 == 0;
                        let bytes = adapter.decision(
                            &request_id,
                            &input,
                            &Decision {
                                allow,
                                message: None,
                            },
                        );
                        assert_json_lines(&bytes);
                    }
                    _ => {}
                }
            }
        }
        match i % 5 {
            1 if adapter.ready() => assert_json_lines(&adapter.message("next")),
            3 => {
                if let Some(b) = adapter.interrupt(i as u64) {
                    assert_json_lines(&b);
                }
            }
            _ => {}
        }
    }
}

fn assert_json_lines(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    assert!(bytes.ends_with(b"\n"));
    for l in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        serde_json::from_slice::<Value>(l).expect("replies are JSON");
    }
}

fn codex_ready() -> Codex {
    let mut c = Codex::new();
    c.command(&spec("codex"), None, PermissionMode::Ask);
    c.startup(None, "/w/p");
    c.parse(r#"{"id":0,"result":{"userAgent":"x"}}"#).unwrap();
    c.parse(r#"{"id":1,"result":{"thread":{"id":"th1"}}}"#)
        .unwrap();
    assert!(c.ready());
    c
}

fn acp_ready() -> Acp {
    let mut a = Acp::new("gemini");
    a.command(&spec("gemini"), None, PermissionMode::Ask);
    a.startup(None, "/w/p");
    a.parse(r#"{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"agentCapabilities":{}}}"#)
        .unwrap();
    a.parse(r#"{"jsonrpc":"2.0","id":1,"result":{"sessionId":"s1"}}"#)
        .unwrap();
    assert!(a.ready());
    a
}

/// Text a model could say (never only whitespace: that is not shown).
fn said() -> impl Strategy<Value = String> {
    any::<String>().prop_filter("shown text", |s| !s.trim().is_empty())
}

fn event_body() -> impl Strategy<Value = EventBody> {
    let s = || any::<String>();
    let status = prop::sample::select(vec![
        ConversationStatus::Idle,
        ConversationStatus::Starting,
        ConversationStatus::Working,
        ConversationStatus::WaitingForApproval,
        ConversationStatus::Failed,
        ConversationStatus::Stopped,
    ]);
    prop_oneof![
        (s(), s()).prop_map(|(message_id, text)| EventBody::User { message_id, text }),
        s().prop_map(|message_id| EventBody::Delivered { message_id }),
        s().prop_map(|text| EventBody::Assistant { text }),
        (s(), s(), json_value()).prop_map(|(id, name, input)| EventBody::ToolCall {
            id,
            name,
            input
        }),
        (s(), s(), any::<bool>()).prop_map(|(id, output, is_error)| EventBody::ToolResult {
            id,
            output,
            is_error
        }),
        (s(), s(), json_value()).prop_map(|(approval_id, tool, input)| {
            EventBody::ApprovalRequest {
                approval_id,
                tool,
                input,
            }
        }),
        (s(), any::<bool>())
            .prop_map(|(approval_id, allow)| EventBody::ApprovalDecision { approval_id, allow }),
        (prop::option::of(s()), any::<bool>())
            .prop_map(|(result, is_error)| EventBody::TurnEnd { result, is_error }),
        (status, prop::option::of(s()))
            .prop_map(|(status, reason)| EventBody::Status { status, reason }),
    ]
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((event_body(), ".{0,30}"), 0..12).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (body, ts))| Event {
                seq: i as u64 + 1,
                ts,
                body,
            })
            .collect()
    })
}

/// JSON numbers are compared as JSON reads them back (floats may not round-trip bit for
/// bit through text; the daemon never stores floats it did not read from JSON).
fn normalized(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .map(|e| serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn claude_parser_never_panics(lines in prop::collection::vec(agent_line(), 0..24)) {
        drive(&mut Claude, &lines);
    }

    #[test]
    fn codex_parser_never_panics(
        handshake in any::<bool>(),
        lines in prop::collection::vec(agent_line(), 0..24),
    ) {
        let mut c = if handshake { codex_ready() } else { Codex::new() };
        if !handshake {
            c.startup(Some("th0"), "/w/p");
        }
        drive(&mut c, &lines);
    }

    #[test]
    fn acp_parser_never_panics(
        handshake in any::<bool>(),
        lines in prop::collection::vec(agent_line(), 0..24),
    ) {
        let mut a = if handshake { acp_ready() } else { Acp::new("acp") };
        if !handshake {
            a.startup(Some("s0"), "/w/p");
        }
        drive(&mut a, &lines);
    }

    #[test]
    fn claude_events_round_trip(text in said(), id in ".{0,20}", name in ".{0,20}", input in json_value(), result in prop::option::of(any::<String>()), is_error in any::<bool>()) {
        let line = json!({"type": "assistant", "message": {"content": [
            {"type": "text", "text": text},
            {"type": "tool_use", "id": id, "name": name, "input": input},
        ]}}).to_string();
        prop_assert_eq!(Claude.parse(&line).unwrap(), vec![
            Parsed::Event(EventBody::Assistant { text: text.clone() }),
            Parsed::Event(EventBody::ToolCall { id, name, input }),
        ]);
        let line = json!({"type": "result", "is_error": is_error, "result": result}).to_string();
        prop_assert_eq!(Claude.parse(&line).unwrap(), vec![
            Parsed::Event(EventBody::TurnEnd { result, is_error }),
        ]);
    }

    #[test]
    fn codex_events_round_trip(text in said()) {
        let mut c = codex_ready();
        let line = json!({"method": "item/completed", "params": {
            "item": {"type": "agentMessage", "id": "m1", "text": text},
            "threadId": "th1", "turnId": "t1"}}).to_string();
        prop_assert_eq!(c.parse(&line).unwrap(), vec![
            Parsed::Event(EventBody::Assistant { text: text.clone() }),
        ]);
        let line = json!({"method": "turn/completed", "params": {
            "threadId": "th1", "turn": {"id": "t1", "items": [], "status": "completed"}}}).to_string();
        let got = c.parse(&line).unwrap();
        prop_assert_eq!(got, vec![
            Parsed::Event(EventBody::TurnEnd { result: Some(text), is_error: false }),
        ]);
    }

    #[test]
    fn acp_events_round_trip(chunks in prop::collection::vec(any::<String>(), 1..5)) {
        let mut a = acp_ready();
        a.message("go");
        let mut got = Vec::new();
        for c in &chunks {
            let line = json!({"jsonrpc": "2.0", "method": "session/update", "params": {
                "sessionId": "s1",
                "update": {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": c}}}});
            got.extend(a.parse(&line.to_string()).unwrap());
        }
        got.extend(a.parse(r#"{"jsonrpc":"2.0","id":2,"result":{"stopReason":"end_turn"}}"#).unwrap());
        let text: String = chunks.concat();
        let mut want = Vec::new();
        if !text.trim().is_empty() {
            want.push(Parsed::Event(EventBody::Assistant { text: text.clone() }));
        }
        let result = (!text.trim().is_empty()).then_some(text);
        want.push(Parsed::Event(EventBody::TurnEnd { result, is_error: false }));
        prop_assert_eq!(got, want);
    }

    #[test]
    fn transcript_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2048), after in any::<u64>()) {
        for e in transcript::parse(&bytes, after) {
            prop_assert!(e.seq > after);
        }
    }

    #[test]
    fn transcript_events_round_trip(events in events()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("transcript.jsonl");
        let (mut w, _) = Writer::open(&path).unwrap();
        for (i, e) in events.iter().enumerate() {
            w.append(e, i % 2 == 0).unwrap();
        }
        prop_assert_eq!(transcript::read(&path, 0), normalized(&events));
    }

    #[test]
    fn a_torn_tail_never_costs_a_complete_line(
        events in events(),
        tail in prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 1..200),
        next in event_body(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("transcript.jsonl");
        let mut bytes = Vec::new();
        for e in &events {
            bytes.extend(serde_json::to_vec(e).unwrap());
            bytes.push(b'\n');
        }
        bytes.extend(&tail);
        std::fs::write(&path, &bytes).unwrap();
        let (mut w, repair) = Writer::open(&path).unwrap();
        let next = Event { seq: events.len() as u64 + 1, ts: "t".into(), body: next };
        w.append(&next, true).unwrap();
        let mut want = normalized(&events);
        // A torn tail that happens to be a whole event is kept, not cut.
        if repair.completed {
            want.push(serde_json::from_slice(&tail).unwrap());
        } else {
            prop_assert_eq!(repair.dropped, tail.len() as u64);
        }
        want.extend(normalized(std::slice::from_ref(&next)));
        prop_assert_eq!(transcript::read(&path, 0), want);
    }
}
