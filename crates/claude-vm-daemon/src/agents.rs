//! What the daemon supplies to the conversations of `claude-vm-agents`: agents run as the
//! agent user (uid 1000) in their own session, agent work counts as workspace activity,
//! and each conversation gets a tmux session inside the workspace.

use std::process::Stdio;
use std::sync::Arc;

use crate::activity::Activity;
use crate::exec::{Grouping, identity, run_as};

pub struct DaemonHost {
    pub activity: Arc<Activity>,
}

impl claude_vm_agents::Host for DaemonHost {
    fn command(&self, program: &str, args: &[String]) -> Result<tokio::process::Command, String> {
        let who = identity(None).map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).env("HOME", &who.home);
        if let Some(n) = &who.name {
            cmd.env("USER", n).env("LOGNAME", n);
        }
        run_as(&mut cmd, &who, Grouping::Session);
        Ok(cmd)
    }

    fn active(&self) {
        self.activity.touch("agent");
    }

    fn opened(&self, id: &str) {
        ensure_tmux(id);
    }
}

/// Give the conversation a tmux session (named after its id) that shows it live and sends
/// typed lines as messages, for people who work inside the workspace:
/// `tmux attach -t <id>`. Skipped when the image has no tmux.
fn ensure_tmux(id: &str) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let id = id.to_owned();
    tokio::spawn(async move {
        let exists = tokio::process::Command::new("tmux")
            .args(["has-session", "-t", &format!("={id}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        match exists {
            Err(_) => {
                tracing::debug!("no tmux in this image; conversation {id} gets no tmux session")
            }
            Ok(s) if s.success() => {}
            Ok(_) => {
                let started = tokio::process::Command::new("tmux")
                    .args(["new-session", "-d", "-s", &id, "-x", "160", "-y", "48"])
                    .arg(format!("{} agent chat-tty {id}", exe.display()))
                    .env("TERM", "xterm-256color")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .await;
                if !matches!(started, Ok(s) if s.success()) {
                    tracing::warn!("cannot start the tmux session of conversation {id}");
                }
            }
        }
    });
}
