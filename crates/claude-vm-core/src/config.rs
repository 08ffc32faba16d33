//! The user's `config.yaml`: defaults for new workspaces and conversations.

use serde::{Deserialize, Serialize};

/// Agent kinds claude-vm can run (conversations arrive with a later capability).
pub const AGENT_KINDS: &[&str] = &["claude", "codex", "gemini", "goose", "qwen", "acp"];

/// Image used when neither `--image`, the provider's `image` option nor `default_image` says
/// otherwise: Debian with git, as most projects need it.
pub const FALLBACK_IMAGE: &str = "buildpack-deps:bookworm-scm";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Provider used when `--provider` is not given.
    pub default_provider: String,
    /// Image used when `--image` and the provider's `image` option are not given.
    pub default_image: String,
    pub agents: Agents,
    pub ssh: SshSettings,
    pub backup: crate::backup::BackupSettings,
    pub lifecycle: crate::lifecycle::LifecycleSettings,
    pub notify: crate::notify::NotifySettings,
}

/// The workspaces' SSH servers (`claude-vm ssh`, `ssh <ws>.claude-vm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SshSettings {
    /// Login user when none is given: `agent` (the agent user, uid 1000) or `root`.
    pub user: String,
    /// Also accept the public keys in `~/.ssh/*.pub` (claude-vm's own key always is).
    pub user_keys: bool,
    /// More public keys to accept: OpenSSH key lines, or paths of `.pub` files.
    pub authorized_keys: Vec<String>,
}

impl Default for SshSettings {
    fn default() -> Self {
        SshSettings {
            user: "agent".to_owned(),
            user_keys: true,
            authorized_keys: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Agents {
    pub enabled: Vec<String>,
    pub defaults: AgentDefaults,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claude: Option<AgentSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codex: Option<AgentSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gemini: Option<AgentSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goose: Option<AgentSettings>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qwen: Option<AgentSettings>,
    /// Any other agent that speaks the Agent Client Protocol: set its `command` (or
    /// `binary`) and the `args` that put it in ACP mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acp: Option<AgentSettings>,
}

/// How to provide and run one agent kind in workspaces.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSettings {
    /// A program on this machine copied into each workspace that needs it.
    pub binary: Option<String>,
    /// A shell command run (as root) in a workspace where the agent is missing, instead of
    /// the vendor's installer.
    pub install: Option<String>,
    /// Where the default install fetches the vendor's installer (a mirror or a pinned
    /// copy); for the kinds installed with npm (gemini, qwen), the npm registry to install
    /// from. Default: the vendor's own address, and npm's own configuration.
    pub installer_url: Option<String>,
    /// Seconds an install may take before it is stopped (default 600).
    pub install_timeout: Option<u64>,
    /// Command name or path inside the workspace (default: the kind's usual name).
    pub command: Option<String>,
    /// Environment for the agent (API keys, base URLs). Never shown or logged.
    pub env: std::collections::BTreeMap<String, String>,
    /// Extra arguments.
    pub args: Vec<String>,
    /// Seconds a turn may go without any output before the agent counts as hung.
    pub turn_timeout: Option<u64>,
}

impl Agents {
    /// Settings of an agent kind (defaults when the config says nothing).
    pub fn settings(&self, kind: &str) -> AgentSettings {
        match kind {
            "claude" => self.claude.clone(),
            "codex" => self.codex.clone(),
            "gemini" => self.gemini.clone(),
            "goose" => self.goose.clone(),
            "qwen" => self.qwen.clone(),
            "acp" => self.acp.clone(),
            _ => None,
        }
        .unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentDefaults {
    pub agent: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            default_provider: "docker".to_owned(),
            default_image: FALLBACK_IMAGE.to_owned(),
            agents: Agents::default(),
            ssh: SshSettings::default(),
            backup: crate::backup::BackupSettings::default(),
            lifecycle: crate::lifecycle::LifecycleSettings::default(),
            notify: crate::notify::NotifySettings::default(),
        }
    }
}

impl Default for Agents {
    fn default() -> Self {
        Agents {
            enabled: AGENT_KINDS.iter().map(|s| (*s).to_owned()).collect(),
            defaults: AgentDefaults::default(),
            claude: None,
            codex: None,
            gemini: None,
            goose: None,
            qwen: None,
            acp: None,
        }
    }
}

impl Default for AgentDefaults {
    fn default() -> Self {
        AgentDefaults {
            agent: "claude".to_owned(),
        }
    }
}

impl Config {
    /// Problems a loaded config has beyond its syntax.
    pub fn validate(&self) -> Result<(), String> {
        for a in &self.agents.enabled {
            if !AGENT_KINDS.contains(&a.as_str()) {
                return Err(format!(
                    "agents.enabled lists unknown agent {a:?}; known agents: {}",
                    AGENT_KINDS.join(", ")
                ));
            }
        }
        let default = &self.agents.defaults.agent;
        if !self.agents.enabled.contains(default) {
            return Err(format!(
                "agents.defaults.agent is {default:?}, which is not in agents.enabled"
            ));
        }
        if !matches!(self.ssh.user.as_str(), "agent" | "root") {
            return Err(format!(
                "ssh.user is {:?}; use agent (the agent user) or root",
                self.ssh.user
            ));
        }
        if self.default_image.trim().is_empty() {
            return Err("default_image is empty".to_owned());
        }
        // The home is not known here; a default location needs none.
        self.backup.validate(std::path::Path::new("/"))?;
        self.lifecycle.validate()?;
        self.notify.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn default_agent_must_be_enabled() {
        let mut c = Config::default();
        c.agents.enabled = vec!["codex".into()];
        assert!(c.validate().unwrap_err().contains("not in agents.enabled"));
        c.agents.enabled = vec!["claude".into(), "cursor".into()];
        assert!(
            c.validate()
                .unwrap_err()
                .contains("unknown agent \"cursor\"")
        );
    }
}
