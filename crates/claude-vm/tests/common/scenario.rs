//! One scenario harness for the conversation tests of every agent kind (Claude Code,
//! Codex, an ACP agent): the same home, workspace, chat and wait steps and the same checks,
//! parameterised by [`Agent`]. Each test file keeps only its model script and what is
//! particular to its agent's protocol.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use claude_vm_testkit::ScriptedModel;

use super::chat::{self, claude_binary, ctx_with_agents, git_project};
use super::{Ctx, dexec};

/// The agents the conversation tests run, each the real program from PyPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    /// Claude Code (`claude-agent-sdk`'s bundled CLI), stream-json.
    Claude,
    /// Codex (`openai-codex-cli-bin`), `codex app-server`.
    Codex,
    /// `claude-code-acp`, the Agent Client Protocol, installed in the workspace.
    Acp,
}

/// Where the ACP agent ends up in the workspace.
pub const ACP_AGENT: &str = "/opt/claude-code-acp/bin/claude-code-acp";

/// Where the ACP agent's wheels go in the workspace (outside the project, so not in its
/// diff).
pub const ACP_WHEELS_IN_WS: &str = "/workspace/.acp-wheels";

impl Agent {
    /// The agent kind, as `--agent` takes it.
    pub fn kind(self) -> &'static str {
        match self {
            Agent::Claude => "claude",
            Agent::Codex => "codex",
            Agent::Acp => "acp",
        }
    }

    /// The (fake) API key in the agent's environment, which must never leak.
    pub fn secret(self) -> &'static str {
        match self {
            Agent::Claude | Agent::Acp => "sk-test-DO-NOT-LEAK-4242",
            Agent::Codex => "sk-test-CODEX-DO-NOT-LEAK-4242",
        }
    }

    /// The lines under `agents:` of `config.yaml` that point this agent at `model_url`.
    fn agents_yaml(self, model_url: &str) -> String {
        let secret = self.secret();
        match self {
            Agent::Claude => format!(
                "  claude:\n    binary: {bin}\n    env:\n      ANTHROPIC_BASE_URL: {model_url}\n      ANTHROPIC_API_KEY: {secret}\n      DISABLE_TELEMETRY: '1'\n      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1'\n",
                bin = claude_binary(),
            ),
            // Codex is pointed at the server with a custom model provider on its command
            // line: Codex 0.163 reads no `OPENAI_BASE_URL`, and its built-in provider tries
            // WebSockets first.
            Agent::Codex => {
                let provider = format!(
                    "model_providers.testkit={{name=\"testkit\",base_url=\"{model_url}/v1\",env_key=\"OPENAI_API_KEY\",wire_api=\"responses\"}}"
                );
                let args = [
                    "-c",
                    "model=\"gpt-5.5\"",
                    "-c",
                    "model_provider=\"testkit\"",
                    "-c",
                    &provider,
                ];
                let args_yaml: String = args
                    .iter()
                    .map(|a| format!("      - {}\n", serde_json::to_string(a).unwrap()))
                    .collect();
                format!(
                    "  defaults:\n    agent: codex\n  codex:\n    binary: {bin}\n    args:\n{args_yaml}    env:\n      OPENAI_API_KEY: {secret}\n",
                    bin = codex_binary(),
                )
            }
            Agent::Acp => {
                let install = format!(
                    "python3 -m venv /opt/claude-code-acp && /opt/claude-code-acp/bin/pip install -q --disable-pip-version-check --no-index --find-links {ACP_WHEELS_IN_WS} claude-code-acp==0.5.1"
                );
                format!(
                    "  defaults:\n    agent: acp\n  acp:\n    command: {ACP_AGENT}\n    install: '{install}'\n    env:\n      ANTHROPIC_BASE_URL: {model_url}\n      ANTHROPIC_API_KEY: {secret}\n      DISABLE_TELEMETRY: '1'\n      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1'\n"
                )
            }
        }
    }
}

impl Agent {
    /// A workspace of `ctx` named `name` on a small git project, with what this agent needs
    /// copied in; returns its container id.
    pub fn workspace(self, ctx: &Ctx, name: &str) -> String {
        let p = git_project(ctx);
        let w = ctx.up(&[p.to_str().unwrap(), "--name", name]);
        if self == Agent::Acp {
            let wheels = acp_wheels();
            ctx.run(&[
                "cp",
                wheels.to_str().unwrap(),
                &format!("{name}:{ACP_WHEELS_IN_WS}"),
            ])
            .ok();
        }
        w["id"].as_str().unwrap().to_owned()
    }
}

/// The Codex executable shipped by the PyPI package; the suite installs it.
pub fn codex_binary() -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import codex_cli_bin; print(codex_cli_bin.bundled_codex_path())",
        ])
        .output()
        .expect("python3 runs");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && std::path::Path::new(&path).is_file(),
        "the Codex CLI was not found: install it with `pip install openai-codex-cli-bin` (scripts/test-deps.sh does)\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// The folder of wheels `scripts/test-deps.sh` downloads for the ACP agent; fails the test
/// when missing.
pub fn acp_wheels() -> PathBuf {
    let dir = match std::env::var_os("CLAUDE_VM_ACP_WHEELS") {
        Some(d) => PathBuf::from(d),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
            cache.join("claude-vm-test/acp-wheels")
        }
    };
    let present = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("claude_code_acp-0.5.1-")
            })
        })
        .unwrap_or(false);
    assert!(
        present,
        "the claude-code-acp 0.5.1 wheels (PyPI) are missing from {}: run scripts/test-deps.sh",
        dir.display()
    );
    dir
}

/// A home whose agent is the real one pointed at a scripted model, and the steps every
/// conversation test takes.
pub struct Scenario {
    pub ctx: Ctx,
    pub agent: Agent,
}

impl Scenario {
    /// A home whose workspaces share the host's network (to reach `model` on loopback) and
    /// whose `agent` is configured against `model`.
    pub fn new(agent: Agent, model: &ScriptedModel) -> Scenario {
        Scenario {
            ctx: ctx_with_agents(&agent.agents_yaml(&model.url())),
            agent,
        }
    }

    /// A workspace named `name` on a small git project, with what the agent needs copied
    /// in; returns its container id.
    pub fn workspace(&self, name: &str) -> String {
        self.agent.workspace(&self.ctx, name)
    }

    /// A new conversation with the agent in workspace `ws`; returns its id.
    pub fn new_chat(&self, ws: &str) -> String {
        let conv = self
            .ctx
            .run(&["new-chat", ws, "--agent", self.agent.kind()])
            .ok()
            .stdout
            .trim()
            .to_owned();
        assert_eq!(conv.len(), 12, "{conv}");
        conv
    }

    /// `new-chat WS --ask -m MESSAGE`, once its first approval request is in the
    /// transcript; returns the conversation's id.
    pub fn ask_chat(&self, ws: &str, message: &str) -> String {
        let conv = self
            .ctx
            .run(&["new-chat", ws, "--ask", "-m", message])
            .ok()
            .stdout
            .trim()
            .to_owned();
        chat::wait_for(&self.ctx, &conv, "the approval request", |e| {
            e["type"] == "approval_request"
        });
        conv
    }

    /// `chat send --wait`: the answer that closed the turn.
    pub fn send_wait(&self, conv: &str, text: &str) -> String {
        chat::send_wait(&self.ctx, conv, text)
    }

    pub fn events(&self, conv: &str) -> Vec<serde_json::Value> {
        chat::events(&self.ctx, conv)
    }

    pub fn status(&self, conv: &str) -> String {
        chat::status(&self.ctx, conv)
    }

    /// The agent, running as the agent user, wrote `file` of the project (`/workspace/proj`)
    /// with `content`, and the change shows in workspace `ws`'s diff.
    pub fn assert_agent_wrote(&self, id: &str, ws: &str, file: &str, content: &str) {
        let path = format!("/workspace/proj/{file}");
        assert_eq!(
            dexec(id, &format!("stat -c '%u %n' {path}")),
            format!("1000 {path}\n"),
            "the agent runs as the agent user"
        );
        assert_eq!(dexec(id, &format!("cat {path}")), content);
        let diff = self.ctx.run(&["diff", ws, "--stat"]).ok();
        assert!(
            diff.stdout.contains(file) && diff.stdout.contains("untracked"),
            "{}",
            diff.stdout
        );
    }

    /// The transcript of a tool-using turn tells the story: every kind of event is there.
    /// Returns the transcript.
    pub fn assert_tool_turn_story(&self, conv: &str) -> Vec<serde_json::Value> {
        let ev = self.events(conv);
        let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
        for k in [
            "user",
            "delivered",
            "assistant",
            "tool_call",
            "tool_result",
            "turn_end",
        ] {
            assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
        }
        ev
    }

    /// The agent's secret never reaches transcripts, metadata or logs in the workspace, nor
    /// the CLI's JSON and log output; `spec.json`, which holds it, is root-only.
    pub fn assert_no_leaks(&self, id: &str, conv: &str) {
        let secret = self.agent.secret();
        let leaks = dexec(
            id,
            &format!("grep -rl '{secret}' /workspace/.claude-vm --exclude=spec.json || true"),
        );
        assert_eq!(leaks.trim(), "", "secret found in {leaks}");
        let modes = dexec(
            id,
            "stat -c %a /workspace/.claude-vm/conversations/*/spec.json",
        );
        assert!(modes.lines().all(|m| m == "600"), "{modes}");
        let json = self.ctx.run(&["chat", "list", "--json"]).ok();
        assert!(!json.stdout.contains(secret));
        let log = self.ctx.run(&["chat", "log", "-c", conv]).ok();
        assert!(!log.stdout.contains(secret));
    }

    /// `kill -9` the workspace daemon and wait until PID 1 has it answering again.
    pub fn crash_daemon(&self, id: &str) {
        dexec(id, "kill -9 $(pgrep -f 'agent [s]erve')");
        let start = Instant::now();
        while self.ctx.run(&["chat", "list", "--json"]).code != 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the daemon did not come back"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}
