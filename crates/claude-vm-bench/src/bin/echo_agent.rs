//! `echo-agent`: a stand-in for Claude Code in stream-json mode, for the conversation
//! benchmarks. It answers every user message at once, so what is measured is claude-vm's
//! own path between the client and the agent, not a model.
//!
//! At start it prints the `system`/`init` line. For each `user` line on stdin it prints an
//! `assistant` line whose text is `<message> read=<ns> wrote=<ns>`, then a `result` line.
//! `read` is when the line was read, `wrote` just before the assistant line was written,
//! both CLOCK_REALTIME in nanoseconds since the epoch (a container shares the host's
//! clock, so the benchmark can subtract its own timestamps). Other lines (control
//! requests) are ignored. Arguments (`-p --input-format stream-json ...`) are ignored.

use std::io::{BufRead, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The text of a user message: a string, or text blocks.
fn user_text(v: &Value) -> Option<String> {
    match v.pointer("/message/content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => Some(
            blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

fn emit(out: &mut impl Write, v: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

fn main() -> std::io::Result<()> {
    const SESSION: &str = "echo-agent";
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    emit(
        &mut out,
        &json!({"type": "system", "subtype": "init", "session_id": SESSION, "tools": []}),
    )?;
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let read = now_ns();
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v.get("type").and_then(Value::as_str) != Some("user") {
            continue;
        }
        let Some(text) = user_text(&v) else {
            continue;
        };
        let wrote = now_ns();
        let reply = format!("{text} read={read} wrote={wrote}");
        emit(
            &mut out,
            &json!({
                "type": "assistant",
                "message": {"role": "assistant", "content": [{"type": "text", "text": reply}]},
                "session_id": SESSION,
            }),
        )?;
        emit(
            &mut out,
            &json!({
                "type": "result",
                "subtype": "success",
                "is_error": false,
                "result": reply,
                "session_id": SESSION,
            }),
        )?;
    }
}
