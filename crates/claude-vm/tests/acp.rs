//! Conversations with a real Agent Client Protocol agent in real Docker workspaces, against
//! the test kit's scripted model server.
//!
//! The agent is `claude-code-acp` from PyPI (Python; it drives Claude Code through
//! `claude-agent-sdk`, whose bundled CLI talks to the scripted model). It runs as the `acp`
//! agent kind, installed by the config's `agents.acp.install` command: a venv with the
//! workspace image's Python, filled from wheels that `scripts/test-deps.sh` downloads
//! (pinned) and the test copies in with `claude-vm cp`, since the workspace has no way to
//! the registry. A shell script stands in for agents that fail the handshake.

mod common;

use std::time::{Duration, Instant};

use claude_vm_testkit::{Script, ScriptedModel};
use common::chat::{chat, status, wait_for};
use common::scenario::{ACP_AGENT as AGENT, Agent, Scenario};
use common::{Ctx, dexec};

/// A home whose workspaces share the host's network (to reach the model server on
/// loopback) and whose `acp` agent is claude-code-acp pointed at `model`.
fn ctx_with_model(model: &ScriptedModel) -> Ctx {
    Scenario::new(Agent::Acp, model).ctx
}

/// A workspace named `name` on a small git project, with the agent's wheels copied in.
fn workspace(ctx: &Ctx, name: &str) -> String {
    Agent::Acp.workspace(ctx, name)
}

fn count(ev: &[serde_json::Value], kind: &str) -> usize {
    ev.iter().filter(|e| e["type"] == kind).count()
}

#[test]
fn an_acp_agent_edits_the_project_queues_messages_between_turns_and_stops_when_interrupted() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "create the greeting"},
               "response": [{"text": "Creating it."},
                            {"tool_use": {"name": "Write", "input": {"file_path": "/workspace/proj/greeting.txt", "content": "hello from acp\n"}}}]},
              {"match": {"after_tool_result_contains": "greeting.txt"}, "response": [{"text": "Created greeting.txt for you."}]},
              {"match": {"last_user_contains": "what did you just create", "contains": "create the greeting"},
               "response": [{"text": "I created greeting.txt."}]},
              {"match": {"last_user_contains": "run the slow job"},
               "response": [{"tool_use": {"name": "Bash", "input": {"command": "sleep 6 && echo slow-done", "description": "slow job"}}}]},
              {"match": {"after_tool_result_contains": "slow-done", "contains": "ALSO-CHECK-THE-LOGS"},
               "response": [{"text": "The note reached the slow turn: wrong for ACP."}]},
              {"match": {"after_tool_result_contains": "slow-done"}, "response": [{"text": "Slow job done."}]},
              {"match": {"last_user_contains": "ALSO-CHECK-THE-LOGS"}, "response": [{"text": "Checking the logs now."}]},
              {"match": {"last_user_contains": "think for a long time"}, "chunk_delay_ms": 400,
               "response": [{"text": "Thinking hard. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Still thinking. Finally done thinking."}]},
              {"match": {"last_user_contains": "are you still there"}, "response": [{"text": "Yes, still here."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let s = Scenario::new(Agent::Acp, &model);
    let ctx = &s.ctx;
    let id = s.workspace("acp");
    // Provisioning runs the install command: the agent is there afterwards.
    let conv = s.new_chat("acp");
    assert_eq!(dexec(&id, &format!("test -x {AGENT} && echo yes")), "yes\n");

    // Turn 1: a tool use (auto-allowed: the default mode asks nobody) that edits the project.
    assert_eq!(
        s.send_wait(&conv, "please create the greeting"),
        "Created greeting.txt for you."
    );
    s.assert_agent_wrote(&id, "acp", "greeting.txt", "hello from acp\n");
    let diff = ctx.run(&["diff", "acp", "--stat"]).ok();
    assert!(!diff.stdout.contains("acp-wheels"), "{}", diff.stdout);
    let ev = s.assert_tool_turn_story(&conv);
    // Message chunks become whole blocks, split at the tool call.
    let texts: Vec<&str> = ev
        .iter()
        .filter(|e| e["type"] == "assistant")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["Creating it.", "Created greeting.txt for you."]);
    let call = ev.iter().find(|e| e["type"] == "tool_call").unwrap();
    assert_eq!(call["input"]["file_path"], "/workspace/proj/greeting.txt");
    let result = ev.iter().find(|e| e["type"] == "tool_result").unwrap();
    assert_eq!(result["id"], call["id"]);
    assert_eq!(result["is_error"], false);
    // Nothing was put to the user.
    assert_eq!(count(&ev, "approval_request"), 0);
    let session = chat(ctx, &conv);
    assert_eq!(session["status"], "idle");
    let log = ctx.run(&["chat", "log", "-c", &conv]).ok();
    assert!(
        log.stdout.contains("⚙ Write /workspace/proj/greeting.txt("),
        "{}",
        log.stdout
    );

    // Turn 2: the same ACP session, so the agent remembers turn 1.
    let answer = ctx
        .run(&[
            "chat",
            "send",
            "-c",
            &conv,
            "what did you just create?",
            "--wait",
        ])
        .ok();
    assert_eq!(answer.stdout.trim(), "I created greeting.txt.");

    // A message sent while a turn runs is accepted at once, queued (ACP takes one prompt at
    // a time) and delivered as the next turn.
    ctx.run(&["chat", "send", "-c", &conv, "please run the slow job"])
        .ok();
    wait_for(ctx, &conv, "the slow tool call", |e| {
        e["type"] == "tool_call" && e["input"]["command"] == "sleep 6 && echo slow-done"
    });
    assert_eq!(s.status(&conv), "working");
    let t = Instant::now();
    ctx.run(&["chat", "send", "-c", &conv, "ALSO-CHECK-THE-LOGS please"])
        .ok();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(chat(ctx, &conv)["queued"], 1);
    let ev = wait_for(ctx, &conv, "the queued message's turn", |e| {
        e["type"] == "assistant" && e["text"] == "Checking the logs now."
    });
    let ev = {
        // Let its turn end.
        let start = Instant::now();
        let mut ev = ev;
        while count(&ev, "turn_end") < 4 {
            assert!(start.elapsed() < Duration::from_secs(30), "{ev:#?}");
            std::thread::sleep(Duration::from_millis(300));
            ev = s.events(&conv);
        }
        ev
    };
    let pos = |pred: &dyn Fn(&serde_json::Value) -> bool| ev.iter().position(pred).unwrap();
    let note = pos(&|e| e["type"] == "user" && e["text"] == "ALSO-CHECK-THE-LOGS please");
    let note_id = ev[note]["message_id"].clone();
    let slow_done = pos(&|e| e["type"] == "assistant" && e["text"] == "Slow job done.");
    let delivered = pos(&|e| e["type"] == "delivered" && e["message_id"] == note_id);
    let third_end = ev
        .iter()
        .enumerate()
        .filter(|(_, e)| e["type"] == "turn_end")
        .nth(2)
        .unwrap()
        .0;
    assert!(
        note < slow_done && slow_done < third_end && third_end < delivered,
        "the note must wait for the end of the slow turn: {ev:#?}"
    );
    assert_eq!(chat(ctx, &conv)["queued"], 0);
    assert_eq!(s.status(&conv), "idle");

    // Interrupt: session/cancel stops a slow turn early, and the conversation goes on.
    ctx.run(&["chat", "send", "-c", &conv, "think for a long time"])
        .ok();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.status(&conv), "working");
    let interrupted = Instant::now();
    ctx.run(&["chat", "interrupt", "-c", &conv]).ok();
    while s.status(&conv) != "idle" {
        assert!(
            interrupted.elapsed() < Duration::from_secs(15),
            "interrupt did not end the turn"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let ev = s.events(&conv);
    assert_eq!(count(&ev, "turn_end"), 5, "{ev:#?}");
    let end = ev.iter().rev().find(|e| e["type"] == "turn_end").unwrap();
    assert_eq!(end["is_error"], false);
    assert!(
        !ev.iter().any(|e| e["type"] == "assistant"
            && e["text"]
                .as_str()
                .unwrap()
                .contains("Finally done thinking")),
        "{ev:#?}"
    );
    // The agent process lives on and takes the next prompt to the model. (What it answers is
    // its own business: claude-code-acp 0.5.1 leaves the cancelled turn's result queued in
    // its SDK client, so its next turn ends at once and answers come one turn late.)
    ctx.run(&[
        "chat",
        "send",
        "-c",
        &conv,
        "are you still there?",
        "--wait",
    ])
    .ok();
    let asked = Instant::now();
    while !model
        .message_requests()
        .iter()
        .any(|r| r.conversation_text().contains("are you still there"))
    {
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "the prompt after the interrupt never reached the model"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(s.status(&conv), "idle");

    // Stopped, then restarted by the next message: a new agent process, which gets a new
    // session (claude-code-acp does not advertise loadSession) and, fresh, answers in step.
    let session_id = || {
        let meta = dexec(
            &id,
            &format!("cat /workspace/.claude-vm/conversations/{conv}/meta.json"),
        );
        serde_json::from_str::<serde_json::Value>(&meta).unwrap()["session_id"].clone()
    };
    let before = session_id();
    assert!(before.is_string(), "{before}");
    ctx.run(&["chat", "stop", "-c", &conv]).ok();
    let stopped = Instant::now();
    while s.status(&conv) != "stopped" {
        assert!(stopped.elapsed() < Duration::from_secs(15), "stop failed");
        std::thread::sleep(Duration::from_millis(300));
    }
    let answer = ctx
        .run(&[
            "chat",
            "send",
            "-c",
            &conv,
            "are you still there?",
            "--wait",
        ])
        .ok();
    assert_eq!(answer.stdout.trim(), "Yes, still here.");
    let after = session_id();
    assert!(after.is_string() && after != before, "{before} → {after}");

    s.assert_no_leaks(&id, &conv);
}

#[test]
fn ask_mode_puts_acp_permission_requests_to_the_user() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "write the approved file"},
               "response": [{"tool_use": {"name": "Write", "input": {"file_path": "/workspace/proj/approved.txt", "content": "yes\n"}}}]},
              {"match": {"after_tool_result_contains": "approved.txt"}, "response": [{"text": "Wrote it after your approval."}]},
              {"match": {"last_user_contains": "write the forbidden file"},
               "response": [{"tool_use": {"name": "Write", "input": {"file_path": "/workspace/proj/forbidden.txt", "content": "no\n"}}}]},
              {"match": {"contains": "write the forbidden file", "after_tool_result_contains": ""},
               "response": [{"text": "Understood, I left it alone."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let ctx = ctx_with_model(&model);
    let id = workspace(&ctx, "ask");
    let conv = ctx
        .run(&["new-chat", "ask", "--agent", "acp", "--ask"])
        .ok()
        .stdout
        .trim()
        .to_owned();

    // Allowed: the tool runs after the user says yes.
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
    assert_eq!(req["tool"], "Write /workspace/proj/approved.txt");
    assert_eq!(req["input"]["file_path"], "/workspace/proj/approved.txt");
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

    // Denied: the tool never runs, the agent is told.
    ctx.run(&["chat", "send", "-c", &conv, "now write the forbidden file"])
        .ok();
    let ev = wait_for(&ctx, &conv, "a second approval request", |e| {
        e["type"] == "approval_request"
            && e["input"]["file_path"] == "/workspace/proj/forbidden.txt"
    });
    let req = ev
        .iter()
        .rev()
        .find(|e| e["type"] == "approval_request")
        .unwrap();
    ctx.run(&[
        "chat",
        "deny",
        "-c",
        &conv,
        req["approval_id"].as_str().unwrap(),
    ])
    .ok();
    let ev = wait_for(&ctx, &conv, "the denied turn", |e| {
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
    let decisions: Vec<bool> = ev
        .iter()
        .filter(|e| e["type"] == "approval_decision")
        .map(|e| e["allow"].as_bool().unwrap())
        .collect();
    assert_eq!(decisions, [true, false]);
}

/// Stand-in ACP agents (shell scripts) for handshakes the real one cannot be made to fail.
#[test]
fn acp_agents_that_fail_the_handshake_fail_their_conversation_clearly() {
    use std::os::unix::fs::PermissionsExt;
    let ctx = Ctx::new();
    let p = ctx.path("p");
    std::fs::create_dir_all(&p).unwrap();
    ctx.up(&[p.to_str().unwrap(), "--name", "broken"]);
    let cases = [
        (
            "refuses",
            r#"read l; echo '{"jsonrpc":"2.0","id":0,"error":{"code":-32603,"message":"no model configured"}}'; sleep 60"#,
            "the agent refused to initialize: no model configured",
        ),
        (
            "login",
            r#"read l; echo '{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":1,"authMethods":[{"id":"oauth-personal","name":"Log in"}]}}'; read l; echo '{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"Authentication required"}}'; sleep 60"#,
            "provide its credentials in agents.acp.env",
        ),
    ];
    for (name, body, want) in cases {
        let bin = ctx.path(name);
        std::fs::write(&bin, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            ctx.home.path().join("config.yaml"),
            format!(
                "default_image: {}\nagents:\n  acp:\n    binary: {}\n",
                common::test_image(),
                bin.display()
            ),
        )
        .unwrap();
        let conv = ctx
            .run(&["new-chat", "broken", "--agent", "acp", "-m", "hello"])
            .ok()
            .stdout
            .trim()
            .to_owned();
        let ev = wait_for(&ctx, &conv, "failure", |e| {
            e["type"] == "status" && e["status"] == "failed"
        });
        let failed = ev.iter().rev().find(|e| e["status"] == "failed").unwrap();
        assert!(
            failed["reason"].as_str().unwrap().contains(want),
            "{name}: {failed}"
        );
        // The message stays queued for when the agent can take it.
        assert_eq!(chat(&ctx, &conv)["queued"], 1, "{name}");
        assert_eq!(count(&ev, "delivered"), 0, "{name}");
    }
}
