//! The user's `config.yaml`: defaults for new workspaces and conversations.

use serde::{Deserialize, Serialize};

/// Agent kinds claude-vm can run (conversations arrive with a later capability).
pub const AGENT_KINDS: &[&str] = &["claude", "codex", "gemini", "goose", "qwen"];

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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Agents {
    pub enabled: Vec<String>,
    pub defaults: AgentDefaults,
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
        }
    }
}

impl Default for Agents {
    fn default() -> Self {
        Agents {
            enabled: AGENT_KINDS.iter().map(|s| (*s).to_owned()).collect(),
            defaults: AgentDefaults::default(),
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
        if self.default_image.trim().is_empty() {
            return Err("default_image is empty".to_owned());
        }
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
