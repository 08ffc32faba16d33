//! The typed provider.yaml: every field DevPod's format defines, named as in Rust and
//! renamed to the YAML's camelCase.
//!
//! What the format requires is a plain value (`name`, `exec.command`, a binary's `os`);
//! what it leaves optional is an `Option`, `None` also for an empty text, since the format
//! treats `default: ""` as no default. [`crate::parse`] is the way in: it accepts the
//! shapes the YAML allows (a script as a string or a list, an enum as plain values, a
//! number where text is expected) and normalizes them before these types see them; what
//! these types serialize, they read back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use crate::expand::expand;

/// A whole provider.yaml.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Manifest {
    /// The provider's name: lowercase letters, digits and dashes, at most 32 characters.
    pub name: String,
    /// A semantic version, optionally with a leading `v` (`v0.1.2`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Image URLs the DevPod desktop app shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icon_dark: Option<String>,
    /// The provider's home page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    /// Where DevPod recorded loading the provider from; kept as written, not used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Value>,
    /// How a user interface groups the options.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub option_groups: Vec<OptionGroup>,
    /// The options, passed to every command as environment variables.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, OptionDef>,
    #[serde(skip_serializing_if = "Agent::is_empty")]
    pub agent: Agent,
    pub exec: Exec,
    /// Helper binaries to download on this machine; each name becomes an environment
    /// variable holding the binary's local path.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub binaries: BTreeMap<String, Vec<Binary>>,
    /// The option names in the order provider.yaml lists them (filled by
    /// [`crate::parse`]); not part of the format.
    #[serde(skip)]
    pub option_order: Vec<String>,
}

impl Manifest {
    /// A machine provider creates (and deletes) a machine per workspace; others only run
    /// `exec.command` somewhere that already exists.
    pub fn is_machine_provider(&self) -> bool {
        self.exec.create.is_some()
    }

    /// The option names in manifest order (names missing from
    /// [`option_order`](Self::option_order) follow, sorted).
    pub fn option_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .option_order
            .iter()
            .map(String::as_str)
            .filter(|name| self.options.contains_key(*name))
            .collect();
        for name in self.options.keys() {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        names
    }

    /// The entry of helper binary `name` (a key of `binaries`) for `os`/`arch`, in DevPod's
    /// spelling ([`crate::devpod_os`], [`crate::devpod_arch`]).
    pub fn binary_for(&self, name: &str, os: &str, arch: &str) -> Option<&Binary> {
        crate::binary_for(self.binaries.get(name)?, os, arch)
    }
}

/// How a user interface groups options; no effect on resolution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OptionGroup {
    pub name: String,
    pub options: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub default_visible: bool,
}

/// One option: how to fill it, check it and show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OptionDef {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The option must not be empty before the provider is used.
    #[serde(skip_serializing_if = "is_false")]
    pub required: bool,
    /// A secret: never show its value.
    #[serde(skip_serializing_if = "is_false")]
    pub password: bool,
    /// `string` (when empty), `multiline`, `duration`, `number` or `boolean`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A regular expression for the value; kept, not checked (see [`crate::parse`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_pattern: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_message: Option<String>,
    /// Values a user interface offers; any other value is allowed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<String>,
    /// The only values allowed, when not empty.
    #[serde(rename = "enum", skip_serializing_if = "Vec::is_empty")]
    pub choices: Vec<EnumChoice>,
    #[serde(skip_serializing_if = "is_false")]
    pub hidden: bool,
    /// Filled per machine rather than once per provider.
    #[serde(skip_serializing_if = "is_false")]
    pub local: bool,
    /// Stored once for all machines.
    #[serde(skip_serializing_if = "is_false")]
    pub global: bool,
    /// The value when the user gives none; may refer to other options (`${OTHER}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// How long a value from `command` stays valid (a duration like `5m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// A shell command whose output is the value when the user gives none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// A command printing more options; not supported by claude-vm (a warning says so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_options_command: Option<String>,
    /// The value may change after a machine was created with it.
    #[serde(skip_serializing_if = "is_false")]
    pub mutable: bool,
}

impl OptionDef {
    /// Whether the value must never be shown (a `password` option).
    pub fn is_secret(&self) -> bool {
        self.password
    }
}

/// One allowed value of an option.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnumChoice {
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// The commands claude-vm runs on this machine to manage a provider's machines.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Exec {
    /// Run once the options are set, to check them (log in, test access).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<Script>,
    /// Runs `$COMMAND` in the machine, with its standard streams connected: required, so
    /// never empty in a parsed manifest.
    pub command: Script,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create: Option<Script>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete: Option<Script>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<Script>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Script>,
    /// Prints one of `Running`, `Busy`, `Stopped`, `NotFound` ([`crate::parse_status`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Script>,
    /// DevPod Pro proxy commands: kept only to refuse the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Value>,
    /// DevPod Pro daemon commands: kept only to refuse the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon: Option<Value>,
}

/// A command: one string is a POSIX shell script, several strings are a program and its
/// arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ScriptRepr", into = "ScriptRepr")]
pub struct Script(pub Vec<String>);

/// How a [`Script`] is written: a string or a list of strings.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ScriptRepr {
    One(String),
    Many(Vec<String>),
}

impl From<ScriptRepr> for Script {
    fn from(repr: ScriptRepr) -> Self {
        match repr {
            ScriptRepr::One(script) => Script(vec![script]),
            ScriptRepr::Many(argv) => Script(argv),
        }
    }
}

impl From<Script> for ScriptRepr {
    fn from(script: Script) -> Self {
        match <[String; 1]>::try_from(script.0) {
            Ok([one]) => ScriptRepr::One(one),
            Err(argv) => ScriptRepr::Many(argv),
        }
    }
}

impl Script {
    /// Whether this is a shell script (one string) rather than a program and arguments.
    pub fn is_shell(&self) -> bool {
        self.0.len() == 1
    }

    /// What to execute: `["sh", "-c", script]` for a script (carriage returns removed, as
    /// DevPod does, so a file saved on Windows still runs), the list itself otherwise.
    pub fn argv(&self) -> Vec<String> {
        match self.0.as_slice() {
            [script] => vec!["sh".into(), "-c".into(), script.replace('\r', "")],
            argv => argv.to_vec(),
        }
    }
}

/// A yes/no field that may also be text referring to an option
/// (`injectGitCredentials: ${INJECT_GIT_CREDENTIALS}`): kept as text, decided once
/// expanded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StrBool(pub String);

impl StrBool {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text with its variables [`expand`]ed.
    pub fn expanded(&self, lookup: &dyn Fn(&str) -> Option<String>) -> String {
        expand(&self.0, lookup)
    }

    /// Whether it expands to exactly `true`, the only spelling DevPod takes as yes.
    pub fn is_true(&self, lookup: &dyn Fn(&str) -> Option<String>) -> bool {
        self.expanded(lookup) == "true"
    }

    /// Whether it expands to exactly `false` (`docker.install` is on unless it is `false`).
    pub fn is_false(&self, lookup: &dyn Fn(&str) -> Option<String>) -> bool {
        self.expanded(lookup) == "false"
    }
}

/// How claude-vm works inside a provider's machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Agent {
    /// Where DevPod's agent binary lives in the machine (DevPod-specific).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_path: Option<String>,
    #[serde(rename = "downloadURL", skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    /// The "machine" is this computer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<StrBool>,
    /// After how long without use to shut the machine down (a duration, or `${OPTION}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inactivity_timeout: Option<String>,
    /// After how long without use to stop the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_inactivity_timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inject_git_credentials: Option<StrBool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inject_docker_credentials: Option<StrBool>,
    /// `docker` (or empty) only: others are refused by [`crate::parse`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(skip_serializing_if = "AgentExec::is_empty")]
    pub exec: AgentExec,
    /// Helper binaries to install in the machine, for `exec.shutdown`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub binaries: BTreeMap<String, Vec<Binary>>,
    #[serde(skip_serializing_if = "Docker::is_empty")]
    pub docker: Docker,
    /// Kept only to warn that claude-vm ignores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerless: Option<Value>,
    /// Kept only to warn that claude-vm ignores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Value>,
    /// Kept only to warn that claude-vm ignores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<Value>,
}

impl Agent {
    fn is_empty(&self) -> bool {
        *self == Agent::default()
    }

    /// A copy with the variables of the fields DevPod expands filled in by `lookup` (the
    /// resolved options and built-ins): path, dataPath, downloadURL, local, both timeouts,
    /// both inject flags, driver and `docker`. A field that expands to nothing becomes
    /// `None` (and so does such an entry of `docker.env`). `exec.shutdown` runs in a shell
    /// with the options in its environment, so it is left as written.
    pub fn expanded(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Agent {
        let text = |s: &Option<String>| {
            s.as_deref()
                .map(|s| expand(s, lookup))
                .filter(|s| !s.is_empty())
        };
        let flag = |b: &Option<StrBool>| text(&b.as_ref().map(|b| b.0.clone())).map(StrBool);
        Agent {
            path: text(&self.path),
            data_path: text(&self.data_path),
            download_url: text(&self.download_url),
            local: flag(&self.local),
            inactivity_timeout: text(&self.inactivity_timeout),
            container_inactivity_timeout: text(&self.container_inactivity_timeout),
            inject_git_credentials: flag(&self.inject_git_credentials),
            inject_docker_credentials: flag(&self.inject_docker_credentials),
            driver: text(&self.driver),
            docker: Docker {
                path: text(&self.docker.path),
                install: flag(&self.docker.install),
                builder: text(&self.docker.builder),
                env: self
                    .docker
                    .env
                    .iter()
                    .map(|(name, value)| (name.clone(), expand(value, lookup)))
                    .filter(|(_, value)| !value.is_empty())
                    .collect(),
            },
            ..self.clone()
        }
    }
}

/// Commands the agent runs inside the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AgentExec {
    /// Shuts the machine down from inside once it was unused for `inactivityTimeout`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<Script>,
}

impl AgentExec {
    fn is_empty(&self) -> bool {
        self.shutdown.is_none()
    }
}

/// How to run Docker in the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Docker {
    /// The Docker command (default `docker`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Install Docker in the machine unless this is `false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install: Option<StrBool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
    /// Environment of every Docker command.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl Docker {
    fn is_empty(&self) -> bool {
        *self == Docker::default()
    }
}

/// One build of a helper binary, for one operating system and architecture.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Binary {
    /// `linux`, `darwin` or `windows`.
    pub os: String,
    /// In Go's spelling: `amd64`, `arm64`, ...
    pub arch: String,
    /// The SHA-256 of the binary (of the extracted file for an archive), in hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// An https URL to download, or a path on this machine.
    pub path: String,
    /// For an archive (`.tar.gz`, `.tgz`, `.tar`, `.gz`, `.zip`): the binary's path in it
    /// (required then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive_path: Option<String>,
    /// The file name to store it under (default: the last part of `path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Binary {
    /// Whether `path` is a URL to download rather than a file on this machine.
    pub fn is_remote(&self) -> bool {
        self.path.starts_with("https://") || self.path.starts_with("http://")
    }

    /// Whether `path` names an archive the binary must be extracted from.
    pub fn is_archive(&self) -> bool {
        [".gz", ".tar", ".tgz", ".zip"]
            .iter()
            .any(|suffix| self.path.ends_with(suffix))
    }
}

fn is_false(b: &bool) -> bool {
    !b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        let value = match name {
            "AGENT_PATH" => "/opt/agent",
            "INACTIVITY_TIMEOUT" => "10m",
            "INJECT_GIT_CREDENTIALS" => "true",
            "INJECT_DOCKER_CREDENTIALS" => "True",
            "INSTALL_DOCKER" => "false",
            "ZONE" => "fra-1",
            "EMPTY" => "",
            _ => return None,
        };
        Some(value.to_string())
    }

    #[test]
    fn scripts_run_in_a_shell_or_as_argv() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["echo hi"], &["sh", "-c", "echo hi"]),
            (&["set -e\r\nrun\r\n"], &["sh", "-c", "set -e\nrun\n"]),
            (&["ssh", "host", "echo hi"], &["ssh", "host", "echo hi"]),
            (&["a\rb", "c"], &["a\rb", "c"]),
            (&[], &[]),
        ];
        for (script, argv) in cases {
            let script = Script(script.iter().map(|s| s.to_string()).collect());
            assert_eq!(script.argv(), *argv, "{script:?}");
            assert_eq!(script.is_shell(), script.0.len() == 1);
        }
    }

    #[test]
    fn scripts_keep_their_spelling() {
        let one: Script = serde_json::from_str(r#""echo hi""#).unwrap();
        assert_eq!(one, Script(vec!["echo hi".into()]));
        assert_eq!(serde_json::to_string(&one).unwrap(), r#""echo hi""#);
        let many: Script = serde_json::from_str(r#"["a","b"]"#).unwrap();
        assert_eq!(many, Script(vec!["a".into(), "b".into()]));
        assert_eq!(serde_json::to_string(&many).unwrap(), r#"["a","b"]"#);
    }

    #[test]
    fn str_bools_decide_once_expanded() {
        let cases = [
            ("true", true, false),
            ("false", false, true),
            ("${INJECT_GIT_CREDENTIALS}", true, false),
            ("${INSTALL_DOCKER}", false, true),
            // Only the exact spellings count, as in DevPod.
            ("${INJECT_DOCKER_CREDENTIALS}", false, false),
            ("TRUE", false, false),
            ("", false, false),
            ("${UNKNOWN}", false, false),
        ];
        for (text, is_true, is_false) in cases {
            let flag = StrBool(text.into());
            assert_eq!(flag.is_true(&lookup), is_true, "{text}");
            assert_eq!(flag.is_false(&lookup), is_false, "{text}");
        }
        assert_eq!(StrBool("${ZONE}".into()).expanded(&lookup), "fra-1");
    }

    #[test]
    fn expands_the_agent_fields_devpod_expands() {
        let some = |s: &str| Some(s.to_string());
        let flag = |s: &str| Some(StrBool(s.into()));
        let agent = Agent {
            path: some("${AGENT_PATH}/devpod"),
            data_path: some("${AGENT_PATH}/data"),
            download_url: some("https://dl.example/${ZONE}"),
            local: flag("false"),
            inactivity_timeout: some("${INACTIVITY_TIMEOUT}"),
            container_inactivity_timeout: some("${NOT_SET}"),
            inject_git_credentials: flag("${INJECT_GIT_CREDENTIALS}"),
            inject_docker_credentials: flag("${INJECT_DOCKER_CREDENTIALS}"),
            driver: some("${EMPTY}"),
            exec: AgentExec {
                shutdown: Some(Script(vec!["${TOOL} stop ${ZONE}".into()])),
            },
            docker: Docker {
                path: some("/usr/bin/docker"),
                install: flag("${INSTALL_DOCKER}"),
                builder: some("${ZONE}-builder"),
                env: BTreeMap::from([
                    ("ZONE".to_string(), "${ZONE}".to_string()),
                    ("GONE".to_string(), "${EMPTY}".to_string()),
                ]),
            },
            ..Agent::default()
        };
        let expanded = agent.expanded(&lookup);
        assert_eq!(
            expanded,
            Agent {
                path: some("/opt/agent/devpod"),
                data_path: some("/opt/agent/data"),
                download_url: some("https://dl.example/fra-1"),
                local: flag("false"),
                inactivity_timeout: some("10m"),
                // Unknown variables stay as written.
                container_inactivity_timeout: some("${NOT_SET}"),
                inject_git_credentials: flag("true"),
                inject_docker_credentials: flag("True"),
                // Expanded to nothing: not given.
                driver: None,
                exec: agent.exec.clone(),
                docker: Docker {
                    path: some("/usr/bin/docker"),
                    install: flag("false"),
                    builder: some("fra-1-builder"),
                    env: BTreeMap::from([("ZONE".to_string(), "fra-1".to_string())]),
                },
                ..Agent::default()
            }
        );
        assert_eq!(Agent::default().expanded(&lookup), Agent::default());
    }

    #[test]
    fn binaries_know_downloads_and_archives() {
        let binary = |path: &str| Binary {
            path: path.into(),
            ..Binary::default()
        };
        assert!(binary("https://e.com/t").is_remote());
        assert!(binary("http://127.0.0.1/t").is_remote());
        assert!(!binary("/usr/bin/t").is_remote());
        for archive in ["t.tar.gz", "t.tgz", "t.tar", "t.gz", "t.zip"] {
            assert!(binary(archive).is_archive(), "{archive}");
        }
        assert!(!binary("t.exe").is_archive());
    }
}
