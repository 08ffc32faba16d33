//! Conversations with the real Claude Code CLI (from PyPI `claude-agent-sdk`) in real
//! Docker workspaces, against the test kit's scripted model server.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use claude_vm_testkit::{Script, ScriptedModel};
use common::chat::{Tmux, events, status, wait_for};
use common::scenario::{Agent, Scenario};
use common::{Ctx, dexec};

const AGENT: Agent = Agent::Claude;

/// A home whose Claude agent is the real CLI pointed at `model`.
fn ctx_with_model(model: &ScriptedModel) -> Ctx {
    Scenario::new(AGENT, model).ctx
}

/// A workspace named `name` on a small git project; its container id.
fn workspace(ctx: &Ctx, name: &str) -> String {
    AGENT.workspace(ctx, name)
}

#[test]
fn a_tool_using_turn_edits_the_project_and_shows_in_diff() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "create the greeting"},
               "response": [{"text": "Creating it."},
                            {"tool_use": {"name": "Write", "input": {"file_path": "/workspace/proj/greeting.txt", "content": "hello from claude\n"}}}]},
              {"match": {"after_tool_result_contains": "greeting.txt"}, "response": [{"text": "Created greeting.txt for you."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let s = Scenario::new(AGENT, &model);
    let id = s.workspace("talk");
    let conv = s.new_chat("talk");
    assert_eq!(
        s.send_wait(&conv, "please create the greeting"),
        "Created greeting.txt for you."
    );
    s.assert_agent_wrote(&id, "talk", "greeting.txt", "hello from claude\n");
    s.assert_tool_turn_story(&conv);
    assert_eq!(s.status(&conv), "idle");
    let list = s.ctx.run(&["chat", "list", "-w", "talk"]).ok();
    assert!(
        list.stdout.contains(&conv) && list.stdout.contains("idle"),
        "{}",
        list.stdout
    );
    let log = s.ctx.run(&["chat", "log", "-c", &conv]).ok();
    assert!(
        log.stdout.contains("⚙ Write(/workspace/proj/greeting.txt)"),
        "{}",
        log.stdout
    );
    s.assert_no_leaks(&id, &conv);
}

#[test]
fn a_message_sent_while_a_tool_runs_reaches_the_agent_in_that_turn() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "run the slow job"},
               "response": [{"tool_use": {"name": "Bash", "input": {"command": "sleep 6 && echo slow-done", "description": "slow job"}}}]},
              {"match": {"contains": "ALSO-CHECK-THE-LOGS", "after_tool_result_contains": "slow-done"},
               "response": [{"text": "Slow job done, and I saw your note about the logs."}]},
              {"match": {"after_tool_result_contains": "slow-done"}, "response": [{"text": "Slow job done."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let ctx = ctx_with_model(&model);
    workspace(&ctx, "queue");
    let conv = ctx
        .run(&["new-chat", "queue", "-m", "please run the slow job"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    wait_for(&ctx, &conv, "the slow tool call", |e| {
        e["type"] == "tool_call"
    });
    assert_eq!(status(&ctx, &conv), "working");
    // Sent mid-turn: accepted at once (never refused), persisted, delivered into the turn.
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
    assert!(
        model
            .message_requests()
            .iter()
            .any(|r| r.conversation_text().contains("ALSO-CHECK-THE-LOGS"))
    );
}

#[test]
fn conversations_resume_after_a_daemon_crash_and_after_down_and_up() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "code word is PINEAPPLE"}, "response": [{"text": "Noted the code word."}]},
              {"match": {"last_user_contains": "start the long job"},
               "response": [{"tool_use": {"name": "Bash", "input": {"command": "sleep 9 && echo long-done", "description": "long job"}}}]},
              {"match": {"last_user_contains": "previous turn was interrupted"}, "response": [{"text": "Picking up where I left off."}]},
              {"match": {"last_user_contains": "what was the code word", "contains": "PINEAPPLE"}, "response": [{"text": "It was PINEAPPLE."}]},
              {"match": {"last_user_contains": "what was the code word"}, "response": [{"text": "I do not remember."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let ctx = ctx_with_model(&model);
    let id = workspace(&ctx, "resume");
    let conv = ctx
        .run(&["new-chat", "resume"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let a = ctx
        .run(&[
            "chat",
            "send",
            "-c",
            &conv,
            "the code word is PINEAPPLE",
            "--wait",
        ])
        .ok();
    assert_eq!(a.stdout.trim(), "Noted the code word.");

    // kill -9 the daemon mid-turn: PID 1 restarts it, it resumes the session and continues.
    ctx.run(&["chat", "send", "-c", &conv, "start the long job"])
        .ok();
    wait_for(&ctx, &conv, "the long tool call", |e| {
        e["type"] == "tool_call"
    });
    dexec(&id, "kill -9 $(pgrep -f 'agent [s]erve')");
    let ev = wait_for(&ctx, &conv, "the resumed turn", |e| {
        e["type"] == "assistant" && e["text"] == "Picking up where I left off."
    });
    assert!(
        ev.iter()
            .any(|e| e["type"] == "user" && e["text"].as_str().unwrap().contains("interrupted"))
    );
    // Only one agent process for the conversation: the orphan was stopped.
    let agents = dexec(&id, "pgrep -c -f 'input-forma[t] stream-json' || true");
    assert_eq!(agents.trim(), "1");
    let a = ctx
        .run(&[
            "chat",
            "send",
            "-c",
            &conv,
            "what was the code word?",
            "--wait",
        ])
        .ok();
    assert_eq!(
        a.stdout.trim(),
        "It was PINEAPPLE.",
        "context lost after the crash"
    );

    // down, up, continue: the history and the agent's session come back.
    ctx.run(&["workspace", "down", "resume"]).ok();
    let stopped = ctx.run(&["chat", "list", "--json"]).ok().json();
    assert_eq!(stopped[0]["live"], false);
    ctx.run(&["workspace", "up", "resume"]).ok();
    let a = ctx
        .run(&[
            "chat",
            "send",
            "-c",
            &conv,
            "and now, what was the code word?",
            "--wait",
        ])
        .ok();
    assert_eq!(
        a.stdout.trim(),
        "It was PINEAPPLE.",
        "context lost after down/up"
    );
    let ev = events(&ctx, &conv);
    let users = ev.iter().filter(|e| e["type"] == "user").count();
    assert_eq!(users, 5, "every message kept: {ev:#?}");
}

/// A stand-in agent (a shell script) for failures the real one cannot be made to show.
fn broken_agent(ctx: &Ctx, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = ctx.path(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[test]
fn broken_agents_fail_their_conversation_not_the_daemon() {
    let ctx = Ctx::new();
    let cases = [
        (
            "garbage",
            "while read l; do echo 'this is not json'; done",
            "malformed output",
        ),
        (
            "dies",
            "read l; echo 'cannot reach the API' >&2; exit 3",
            "exited with status 3: cannot reach the API",
        ),
        (
            "hangs",
            "while read l; do :; done",
            "no sign of life for 3s",
        ),
        ("missing", "", ""),
    ];
    let p = ctx.path("p");
    std::fs::create_dir_all(&p).unwrap();
    let w = ctx.up(&[p.to_str().unwrap(), "--name", "broken"]);
    let id = w["id"].as_str().unwrap().to_owned();
    for (name, body, want) in cases {
        if name == "missing" {
            // No binary configured and none installed: the vendor's installer is tried, and
            // its failure (no network here) is shown with the remedy.
            std::fs::write(
                ctx.home.path().join("config.yaml"),
                format!(
                    "default_image: {}\nagents:\n  claude:\n    installer_url: http://127.0.0.1:9/install.sh\n    env:\n      ANTHROPIC_API_KEY: sk-test\n",
                    common::test_image()
                ),
            )
            .unwrap();
            let out = ctx.run(&["new-chat", "broken"]).fails();
            assert!(
                out.stderr.contains(
                    "installing claude with Claude Code's native installer failed (exit 7)"
                ),
                "{}",
                out.stderr
            );
            assert!(
                out.stderr.contains("agents.claude.binary"),
                "{}",
                out.stderr
            );
            continue;
        }
        let bin = broken_agent(&ctx, name, body);
        std::fs::write(
            ctx.home.path().join("config.yaml"),
            format!(
                "default_image: {}\nagents:\n  claude:\n    binary: {bin}\n    turn_timeout: 3\n    env:\n      ANTHROPIC_API_KEY: sk-test\n",
                common::test_image()
            ),
        )
        .unwrap();
        let conv = ctx
            .run(&["new-chat", "broken", "-m", "hello"])
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
        assert_eq!(status(&ctx, &conv), "failed");
        // `send --wait` on a failed conversation restarts the agent, which fails again: reported.
        let again = ctx
            .run(&["chat", "send", "-c", &conv, "again", "--wait"])
            .fails();
        assert!(
            again.stderr.contains("the agent failed"),
            "{name}: {}",
            again.stderr
        );
    }
    // The daemon is unaffected.
    let h = dexec(&id, "/opt/claude-vm/bin/claude-vm agent health");
    assert!(h.contains("\"protocol\":1"), "{h}");
    assert_eq!(
        ctx.run(&["chat", "list", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn ask_mode_puts_tool_uses_to_the_user_and_interrupt_stops_a_turn() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "write the approved file"},
               "response": [{"tool_use": {"name": "Write", "input": {"file_path": "/workspace/proj/approved.txt", "content": "yes\n"}}}]},
              {"match": {"after_tool_result_contains": "approved.txt"}, "response": [{"text": "Wrote it after your approval."}]},
              {"match": {"last_user_contains": "write the forbidden file"},
               "response": [{"tool_use": {"name": "Write", "input": {"file_path": "/workspace/proj/forbidden.txt", "content": "no\n"}}}]},
              {"match": {"after_tool_result_contains": "not that one"}, "response": [{"text": "Understood, I left it alone."}]},
              {"match": {"last_user_contains": "are you still there"}, "response": [{"text": "Yes, still here."}]},
              {"match": {"last_user_contains": "think for a long time"}, "delay_ms": 20000, "response": [{"text": "Finally done thinking."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let ctx = ctx_with_model(&model);
    workspace(&ctx, "ask");
    let id = ctx.list()[0]["id"].as_str().unwrap().to_owned();
    let conv = ctx
        .run(&["new-chat", "ask", "--ask"])
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
    assert_eq!(req["tool"], "Write");
    assert_eq!(
        dexec(
            &id,
            "test -e /workspace/proj/approved.txt && echo yes || echo no"
        )
        .trim(),
        "no"
    );
    let log = ctx.run(&["chat", "log", "-c", &conv]).ok();
    assert!(log.stdout.contains("needs your approval"), "{}", log.stdout);
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
    let unknown = ctx.run(&["chat", "allow", "-c", &conv, "nope"]).fails();
    assert!(
        unknown.stderr.contains("no pending approval"),
        "{}",
        unknown.stderr
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
    let a = ctx
        .run(&[
            "chat",
            "send",
            "-c",
            &conv,
            "are you still there?",
            "--wait",
        ])
        .ok();
    assert_eq!(a.stdout.trim(), "Yes, still here.");
}

#[test]
fn conversations_show_in_tmux_inside_and_in_the_interactive_chat_outside() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "hello from tmux"}, "response": [{"text": "Hi, tmux user."}]},
              {"match": {"last_user_contains": "hello from the terminal"}, "response": [{"text": "Hi, terminal user."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let ctx = ctx_with_model(&model);
    let id = workspace(&ctx, "tty");
    let conv = ctx.run(&["new-chat", "tty"]).ok().stdout.trim().to_owned();

    // Inside the workspace: `tmux attach -t <conv>`; a typed line becomes a message.
    let start = Instant::now();
    while !Command::new("docker")
        .args([
            "exec",
            &format!("claude-vm-{id}"),
            "tmux",
            "has-session",
            "-t",
            &conv,
        ])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no tmux session for {conv}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    dexec(
        &id,
        &format!("tmux send-keys -t {conv} 'hello from tmux' Enter"),
    );
    wait_for(&ctx, &conv, "the tmux reply", |e| {
        e["text"] == "Hi, tmux user."
    });
    let start = Instant::now();
    loop {
        let pane = dexec(&id, &format!("tmux capture-pane -p -t {conv}"));
        if pane.contains("› hello from tmux") && pane.contains("Hi, tmux user.") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "pane:\n{pane}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Outside: the interactive chat in a terminal (host tmux drives it), reached through
    // the conversation picker, since the workspace now has two.
    let second = ctx.run(&["new-chat", "tty", "--json"]).ok().json();
    assert_eq!(second["workspace"], "tty");
    assert_eq!(second["agent"], "claude");
    // A follower sees what happens from here on.
    let mut follower = ctx
        .command(&["chat", "log", "-c", &conv, "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let follower_out = follower.stdout.take().unwrap();
    let followed = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(follower_out).lines() {
            let line = line.unwrap();
            let done = line.contains("Hi, terminal user.");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let cmd = format!(
        "CLAUDE_VM_HOME={} {} chat -w tty; sleep 30",
        ctx.home.path().display(),
        ctx.bin.display()
    );
    let term = Tmux::start("chat", 150, 40, &cmd);
    let within = Duration::from_secs(60);
    term.wait_for(second["id"].as_str().unwrap(), within);
    term.wait_for("conversation [1-2]:", within);
    term.send("1");
    // The history is there, then a new exchange, then the commands.
    term.wait_for("Hi, tmux user.", within);
    term.send("hello from the terminal");
    term.wait_for("Hi, terminal user.", within);
    // The answer shows before the turn ends: ask for the status once the agent is idle.
    let deadline = Instant::now() + within;
    while status(&ctx, &conv) != "idle" {
        assert!(Instant::now() < deadline, "the second turn never ended");
        std::thread::sleep(Duration::from_millis(200));
    }
    term.send("/status");
    term.wait_for("Idle", within);
    term.send("/quit");
    term.wait_for("the agent keeps working", within);
    let seen = followed.join().unwrap();
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(
        seen.iter().any(|l| l.contains("› hello from the terminal")),
        "{seen:?}"
    );
    assert_eq!(status(&ctx, &conv), "idle");
}
