//! Shared pieces of the conversation tests: a home whose agent is configured, a small git
//! project, reading and waiting on transcripts, and driving a terminal through tmux.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Ctx, git, test_image};

/// The Claude Code binary bundled with the Python SDK; the suite installs it.
pub fn claude_binary() -> String {
    let out = Command::new("python3")
        .args(["-c", "import claude_agent_sdk,os;print(os.path.join(os.path.dirname(claude_agent_sdk.__file__),'_bundled','claude'))"])
        .output()
        .expect("python3 runs");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && std::path::Path::new(&path).exists(),
        "Claude Code not found: install it with `pip install claude-agent-sdk` (scripts/test-deps.sh does)\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// A home whose `claude` agent is the real Claude Code CLI talking to the scripted model at
/// `model_url` with this (fake) API key; workspaces on the host network (see below).
pub fn ctx_with_claude(model_url: &str, api_key: &str) -> Ctx {
    ctx_with_agents(&format!(
        "  claude:\n    binary: {bin}\n    env:\n      ANTHROPIC_BASE_URL: {model_url}\n      ANTHROPIC_API_KEY: {api_key}\n      DISABLE_TELEMETRY: '1'\n      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1'\n",
        bin = claude_binary(),
    ))
}

/// A home whose `config.yaml` sets the test image and `agents_yaml` (the lines under
/// `agents:`, indented by two), and whose workspaces share the host's network so agents
/// reach the scripted model server on loopback.
pub fn ctx_with_agents(agents_yaml: &str) -> Ctx {
    let ctx = Ctx::new();
    let cfg = format!("default_image: {}\nagents:\n{agents_yaml}", test_image());
    std::fs::write(ctx.home.path().join("config.yaml"), cfg).unwrap();
    ctx.run(&[
        "provider",
        "set-options",
        "docker",
        "--option",
        "network=host",
    ])
    .ok();
    ctx
}

/// A one-commit git project at `<work>/proj`.
pub fn git_project(ctx: &Ctx) -> PathBuf {
    let p = ctx.path("proj");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("README.md"), "# proj\n").unwrap();
    git(&p, &["init", "-q"]);
    git(&p, &["add", "."]);
    git(&p, &["commit", "-q", "-m", "init"]);
    p
}

/// A conversation's whole transcript, through `chat log --json`.
pub fn events(ctx: &Ctx, conv: &str) -> Vec<serde_json::Value> {
    let out = ctx.run(&["chat", "log", "-c", conv, "--json"]).ok();
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Wait until the transcript has an event satisfying `pred`; returns the transcript.
pub fn wait_for(
    ctx: &Ctx,
    conv: &str,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let ev = events(ctx, conv);
        if ev.iter().any(&pred) {
            return ev;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out waiting for {what}; transcript:\n{ev:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The conversation as `chat list --json` shows it.
pub fn chat(ctx: &Ctx, conv: &str) -> serde_json::Value {
    let list = ctx.run(&["chat", "list", "--json"]).ok().json();
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == conv)
        .unwrap()
        .clone()
}

pub fn status(ctx: &Ctx, conv: &str) -> String {
    chat(ctx, conv)["status"].as_str().unwrap().to_owned()
}

/// `chat send --wait`: the answer that closed the turn.
pub fn send_wait(ctx: &Ctx, conv: &str, text: &str) -> String {
    ctx.run(&["chat", "send", "-c", conv, text, "--wait"])
        .ok()
        .stdout
        .trim()
        .to_owned()
}

/// A detached tmux session on this machine: a real terminal to drive a command in. Each has
/// its own tmux server (`-L <name>`): tests running at once never share one, so one
/// test's server exiting cannot fail another's `new-session`.
pub struct Tmux {
    pub name: String,
}

impl Tmux {
    pub fn start(tag: &str, cols: u16, rows: u16, command: &str) -> Tmux {
        let name = format!("cvm-{tag}-{}", std::process::id());
        let t = Tmux { name };
        t.run(&[
            "new-session",
            "-d",
            "-s",
            &t.name,
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            command,
        ]);
        t
    }

    /// Run a tmux command against the server; panics when it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.name])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn send(&self, keys: &str) {
        self.run(&["send-keys", "-t", &self.name, keys, "Enter"]);
    }

    /// Wait until the screen shows `want`; returns the screen.
    pub fn wait_for(&self, want: &str, within: Duration) -> String {
        let start = Instant::now();
        loop {
            let s = self.run(&["capture-pane", "-p", "-t", &self.name]);
            if s.contains(want) {
                return s;
            }
            assert!(start.elapsed() < within, "never saw {want:?} in:\n{s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["-L", &self.name, "has-session", "-t", &self.name])
            .status()
            .unwrap()
            .success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.name, "kill-server"])
            .status();
    }
}
