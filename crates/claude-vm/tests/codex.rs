//! Conversations with the real Codex CLI (from PyPI `openai-codex-cli-bin`, one static
//! executable) in real Docker workspaces, driven through `codex app-server`, against the
//! test kit's scripted model server speaking the OpenAI Responses API.
//!
//! Codex is pointed at the server with a custom model provider given on its command line
//! (`agents.codex.args`): `OPENAI_BASE_URL` is not read by Codex 0.163, and its built-in
//! OpenAI provider tries WebSockets first. The model is `gpt-5.5`, which Codex knows (no
//! "unknown model" warning) and offers plain function tools: `exec_command` for shell
//! commands and the freeform `apply_patch`.

mod common;

use std::time::{Duration, Instant};

use claude_vm_testkit::{Script, ScriptedModel};
use common::chat::{events, send_wait, status, wait_for};
use common::scenario::{Agent, Scenario};
use common::{Ctx, dexec};

const AGENT: Agent = Agent::Codex;

/// A home whose workspaces share the host's network (to reach the model server on
/// loopback) and whose Codex agent is the real CLI pointed at `model`.
fn ctx_with_model(model: &ScriptedModel) -> Ctx {
    Scenario::new(AGENT, model).ctx
}

/// A workspace named `name` on a small git project; its container id.
fn workspace(ctx: &Ctx, name: &str) -> String {
    AGENT.workspace(ctx, name)
}

#[test]
fn a_multi_turn_codex_conversation_edits_the_project_and_keeps_its_context() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "create the greeting"},
               "response": [{"text": "Creating it."},
                            {"tool_use": {"name": "exec_command", "input": {"cmd": "printf 'hello from codex\\n' > greeting.txt && echo created-greeting"}}}]},
              {"match": {"after_tool_result_contains": "created-greeting"}, "response": [{"text": "Created greeting.txt for you."}]},
              {"match": {"last_user_contains": "what did you do", "contains": "created-greeting"},
               "response": [{"text": "I ran a command that created greeting.txt."}]},
              {"match": {"last_user_contains": "code word is MANGO"}, "response": [{"text": "Noted the code word."}]},
              {"match": {"last_user_contains": "what was the code word", "contains": "MANGO"}, "response": [{"text": "It was MANGO."}]},
              {"match": "any", "response": [{"text": "I do not remember anything."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let s = Scenario::new(AGENT, &model);
    let ctx = &s.ctx;
    let id = s.workspace("codex");
    let conv = s.new_chat("codex");

    // Turn 1: Codex runs a shell command that writes a file.
    assert_eq!(
        s.send_wait(&conv, "please create the greeting"),
        "Created greeting.txt for you."
    );
    s.assert_agent_wrote(&id, "codex", "greeting.txt", "hello from codex\n");
    let ev = s.assert_tool_turn_story(&conv);
    let call = ev.iter().find(|e| e["type"] == "tool_call").unwrap();
    assert_eq!(call["name"], "shell");
    assert_eq!(
        call["input"]["command"],
        "printf 'hello from codex\\n' > greeting.txt && echo created-greeting"
    );
    let result = ev.iter().find(|e| e["type"] == "tool_result").unwrap();
    assert_eq!(result["id"], call["id"]);
    assert_eq!(result["output"], "created-greeting\n");
    assert_eq!(result["is_error"], false);
    assert_eq!(s.status(&conv), "idle");
    let log = ctx.run(&["chat", "log", "-c", &conv]).ok();
    assert!(
        log.stdout.contains("⚙ shell(printf 'hello from codex"),
        "{}",
        log.stdout
    );

    // Turn 2: the first turn's messages, call and output reach the model again.
    assert_eq!(
        s.send_wait(&conv, "what did you do?"),
        "I ran a command that created greeting.txt."
    );
    let last = model.responses_requests().pop().unwrap();
    let text = last.conversation_text();
    assert!(
        text.contains("please create the greeting")
            && text.contains("Created greeting.txt for you.")
            && text.contains("created-greeting"),
        "{text}"
    );
    assert_eq!(last.header("authorization"), Some("<redacted>"));

    // The daemon dies between turns: the next message resumes Codex's thread.
    assert_eq!(
        s.send_wait(&conv, "the code word is MANGO"),
        "Noted the code word."
    );
    s.crash_daemon(&id);
    assert_eq!(
        s.send_wait(&conv, "what was the code word?"),
        "It was MANGO.",
        "context lost after the daemon restarted"
    );
    let agents = dexec(&id, "pgrep -c -f 'codex app-serve[r]' || true");
    assert_eq!(agents.trim(), "1", "one Codex process for the conversation");

    s.assert_no_leaks(&id, &conv);
    let users = s
        .events(&conv)
        .iter()
        .filter(|e| e["type"] == "user")
        .count();
    assert_eq!(users, 4, "every message kept");
}

#[test]
fn a_message_sent_while_codex_works_steers_the_running_turn() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "run the slow job"},
               "response": [{"tool_use": {"name": "exec_command", "input": {"cmd": "sleep 6 && echo slow-done"}}}]},
              {"match": {"contains": "ALSO-CHECK-THE-LOGS", "after_tool_result_contains": "slow-done"},
               "response": [{"text": "Slow job done, and I saw your note about the logs."}]},
              {"match": {"after_tool_result_contains": "slow-done"}, "response": [{"text": "Slow job done."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let ctx = ctx_with_model(&model);
    workspace(&ctx, "steer");
    let conv = ctx
        .run(&["new-chat", "steer", "-m", "please run the slow job"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    wait_for(&ctx, &conv, "the slow tool call", |e| {
        e["type"] == "tool_call"
    });
    assert_eq!(status(&ctx, &conv), "working");
    let t = Instant::now();
    ctx.run(&["chat", "send", "-c", &conv, "ALSO-CHECK-THE-LOGS please"])
        .ok();
    assert!(t.elapsed() < Duration::from_secs(5));
    let ev = wait_for(&ctx, &conv, "the end of the turn", |e| {
        e["type"] == "turn_end"
    });
    let turn_ends = ev.iter().filter(|e| e["type"] == "turn_end").count();
    assert_eq!(turn_ends, 1, "the note must not need its own turn: {ev:#?}");
    let answer = ev.iter().rev().find(|e| e["type"] == "assistant").unwrap();
    assert_eq!(
        answer["text"],
        "Slow job done, and I saw your note about the logs."
    );
    assert_eq!(status(&ctx, &conv), "idle");
}

#[test]
fn ask_mode_puts_codex_escalations_and_edits_to_the_user_and_interrupt_stops_a_turn() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "write the approved file"},
               "response": [{"tool_use": {"name": "exec_command", "input": {"cmd": "echo yes > approved.txt && echo wrote-approved", "sandbox_permissions": "require_escalated", "justification": "It writes approved.txt."}}}]},
              {"match": {"after_tool_result_contains": "wrote-approved"}, "response": [{"text": "Wrote it after your approval."}]},
              {"match": {"last_user_contains": "patch in the forbidden file"},
               "response": [{"tool_use": {"name": "apply_patch", "input": "*** Begin Patch\n*** Add File: forbidden.txt\n+no\n*** End Patch\n"}}]},
              {"match": {"after_tool_result_contains": "rejected", "last_user_contains": "not that one"}, "response": [{"text": "Understood, I left it alone."}]},
              {"match": {"last_user_contains": "are you still there"}, "response": [{"text": "Yes, still here."}]},
              {"match": {"last_user_contains": "think for a long time"}, "delay_ms": 20000, "response": [{"text": "Finally done thinking."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let ctx = ctx_with_model(&model);
    let id = workspace(&ctx, "ask");
    let conv = ctx
        .run(&["new-chat", "ask", "--ask"])
        .ok()
        .stdout
        .trim()
        .to_owned();

    // Allowed: the command runs after the user says yes.
    ctx.run(&[
        "chat",
        "send",
        "-c",
        &conv,
        "please write the approved file",
    ])
    .ok();
    let ev = wait_for(&ctx, &conv, "an approval request", |e| {
        e["type"] == "approval_request"
    });
    assert_eq!(status(&ctx, &conv), "waiting_for_approval");
    let req = ev.iter().find(|e| e["type"] == "approval_request").unwrap();
    assert_eq!(req["tool"], "shell");
    assert_eq!(
        req["input"]["command"],
        "echo yes > approved.txt && echo wrote-approved"
    );
    assert_eq!(req["input"]["reason"], "It writes approved.txt.");
    assert_eq!(
        dexec(
            &id,
            "test -e /workspace/proj/approved.txt && echo yes || echo no"
        )
        .trim(),
        "no"
    );
    ctx.run(&[
        "chat",
        "allow",
        "-c",
        &conv,
        req["approval_id"].as_str().unwrap(),
    ])
    .ok();
    wait_for(&ctx, &conv, "the approved turn", |e| {
        e["type"] == "assistant" && e["text"] == "Wrote it after your approval."
    });
    assert_eq!(dexec(&id, "cat /workspace/proj/approved.txt"), "yes\n");

    // Denied: the edit is never made; the reason reaches the model.
    ctx.run(&[
        "chat",
        "send",
        "-c",
        &conv,
        "now patch in the forbidden file",
    ])
    .ok();
    let ev = wait_for(&ctx, &conv, "an approval for the patch", |e| {
        e["type"] == "approval_request" && e["tool"] == "apply_patch"
    });
    let req = ev
        .iter()
        .rev()
        .find(|e| e["type"] == "approval_request")
        .unwrap();
    assert_eq!(
        req["input"]["path"], "/workspace/proj/forbidden.txt",
        "{req}"
    );
    ctx.run(&[
        "chat",
        "deny",
        "-c",
        &conv,
        req["approval_id"].as_str().unwrap(),
        "-m",
        "not that one",
    ])
    .ok();
    wait_for(&ctx, &conv, "the denied turn", |e| {
        e["type"] == "assistant" && e["text"] == "Understood, I left it alone."
    });
    assert_eq!(
        dexec(
            &id,
            "test -e /workspace/proj/forbidden.txt && echo yes || echo no"
        )
        .trim(),
        "no"
    );

    // Interrupt: a slow turn stops early, and the conversation goes on.
    ctx.run(&["chat", "send", "-c", &conv, "think for a long time"])
        .ok();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(status(&ctx, &conv), "working");
    ctx.run(&["chat", "interrupt", "-c", &conv]).ok();
    let start = Instant::now();
    while status(&ctx, &conv) != "idle" {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "interrupt did not end the turn"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        !events(&ctx, &conv)
            .iter()
            .any(|e| e["text"] == "Finally done thinking.")
    );
    assert_eq!(
        send_wait(&ctx, &conv, "are you still there?"),
        "Yes, still here."
    );
}
