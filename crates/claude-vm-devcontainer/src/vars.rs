//! The `${...}` variables of devcontainer.json, and `${devcontainerId}`.
//!
//! Substituted in every string value of the properties claude-vm reads (never in keys, and
//! never in properties it ignores, so nothing it does not use can make a file fail):
//!
//! | variable | value |
//! |---|---|
//! | `${localEnv:NAME}`, `${localEnv:NAME:default}` (`${env:...}` too) | this machine's environment; unset is the default, or empty |
//! | `${containerEnv:NAME}`, `${containerEnv:NAME:default}` | the container's environment: see below |
//! | `${localWorkspaceFolder}`, `${localWorkspaceFolderBasename}` | the project folder here |
//! | `${containerWorkspaceFolder}`, `${containerWorkspaceFolderBasename}` | `workspaceFolder` (itself substituted first) |
//! | `${devcontainerId}` | [`devcontainer_id`] of the context's labels |
//!
//! `${containerEnv:...}` can only be known once the container runs, so it is allowed only
//! where it is used after that (remoteEnv, the lifecycle commands but `initializeCommand`,
//! `customizations.claude-vm`); without a container environment in the [`Context`] it is
//! left as written and the property is listed in `DevContainer::container_env_refs`.
//! Anywhere else it is an error, like an unknown variable or a `${` never closed. The one
//! exception is lifecycle commands: there `${HOME}`, `${PATH:-x}` and the like are the
//! shell's, and pass through untouched, as in the reference implementation.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::error::VariableProblem;

/// What substitution needs to know of the world.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// This machine's environment (`${localEnv:...}`), e.g. `std::env::vars().collect()`.
    pub local_env: BTreeMap<String, String>,
    /// The container's environment (`${containerEnv:...}`), once it runs.
    pub container_env: Option<BTreeMap<String, String>>,
    /// The labels identifying the workspace's container (`${devcontainerId}`), e.g.
    /// `{"dev.claude-vm.workspace": "<id>"}`.
    pub id_labels: BTreeMap<String, String>,
    /// The project folder on this machine; `None` is the located project's folder.
    pub local_workspace_folder: Option<String>,
    /// `workspaceFolder` when the file sets none; `None` is the spec's default,
    /// `/workspaces/${localWorkspaceFolderBasename}`.
    pub default_workspace_folder: Option<String>,
}

/// The spec's dev container id for a set of labels: SHA-256 of the labels as a JSON object
/// (keys sorted, no whitespace), written in base 32 (`0-9a-v`), left-padded with `0` to 52
/// characters. Stable for the same labels, different for different ones.
pub fn devcontainer_id(labels: &BTreeMap<String, String>) -> String {
    // A BTreeMap serialises in key order and serde_json writes no whitespace, as the spec's
    // `JSON.stringify` with sorted keys does (both escape the same characters).
    let json = serde_json::to_string(labels).unwrap_or_default();
    let digest = Sha256::digest(json.as_bytes());
    let bit = |n: usize| (digest[31 - n / 8] >> (n % 8)) & 1;
    const DIGITS: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    (0..52)
        .rev()
        .map(|group| {
            let value = (0..5)
                .map(|b| {
                    let n = group * 5 + b;
                    if n < 256 { bit(n) << b } else { 0 }
                })
                .sum::<u8>();
            DIGITS[value as usize] as char
        })
        .collect()
}

/// How a property treats `${...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// `${containerEnv:...}` is allowed (left for later without a container environment).
    pub container_env: bool,
    /// Unknown shell-like `${...}` pass through (lifecycle commands).
    pub shell: bool,
}

pub(crate) const STRICT: Policy = Policy {
    container_env: false,
    shell: false,
};

/// The values of the variables for one file.
pub(crate) struct Vars<'a> {
    pub local_env: &'a BTreeMap<String, String>,
    pub container_env: Option<&'a BTreeMap<String, String>>,
    pub local_workspace_folder: String,
    /// `None` while `workspaceFolder` itself is substituted.
    pub container_workspace_folder: Option<String>,
    pub devcontainer_id: String,
}

/// A string with its variables substituted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Expanded {
    pub text: String,
    /// A `${containerEnv:...}` was left as written, for the container-side step.
    pub waits_for_container: bool,
}

/// A failure: the variable as written and what is wrong with it.
pub(crate) type Failure = (String, VariableProblem);

fn basename(path: &str) -> &str {
    let trimmed = path.trim_end_matches(['/', '\\']);
    trimmed.rsplit(['/', '\\']).next().unwrap_or(trimmed)
}

fn is_shell_parameter(inner: &str) -> bool {
    match inner.chars().next() {
        Some(c) => c.is_ascii_alphanumeric() || "_#!@*?$-".contains(c),
        None => false,
    }
}

impl Vars<'_> {
    pub fn expand(&self, s: &str, policy: Policy) -> Result<Expanded, Failure> {
        let mut out = String::with_capacity(s.len());
        let mut waits = false;
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err((rest[start..].to_owned(), VariableProblem::Unterminated));
            };
            let inner = &after[..end];
            let token = &rest[start..start + 2 + end + 1];
            match self.lookup(inner, policy) {
                Ok(Some(value)) => out.push_str(&value),
                Ok(None) => {
                    waits |= inner.starts_with("containerEnv:");
                    out.push_str(token);
                }
                Err(problem) => return Err((token.to_owned(), problem)),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(Expanded {
            text: out,
            waits_for_container: waits,
        })
    }

    /// `Ok(None)`: leave the token as written.
    fn lookup(&self, inner: &str, policy: Policy) -> Result<Option<String>, VariableProblem> {
        let (name, args) = match inner.split_once(':') {
            Some((name, args)) => (name, Some(args)),
            None => (inner, None),
        };
        let from_env = |env: &BTreeMap<String, String>, args: &str| {
            let (var, default) = match args.split_once(':') {
                Some((var, default)) => (var, default),
                None => (args, ""),
            };
            if var.is_empty() {
                return Err(VariableProblem::NoName);
            }
            Ok(Some(
                env.get(var).cloned().unwrap_or_else(|| default.to_owned()),
            ))
        };
        match (name, args) {
            ("localEnv", Some(args)) => from_env(self.local_env, args),
            ("env", Some(args))
                if args.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') =>
            {
                from_env(self.local_env, args)
            }
            ("containerEnv", Some(args)) => {
                if !policy.container_env {
                    return Err(VariableProblem::ContainerEnvTooEarly);
                }
                match self.container_env {
                    Some(env) => from_env(env, args),
                    None if args.split(':').next().is_some_and(|v| !v.is_empty()) => Ok(None),
                    None => Err(VariableProblem::NoName),
                }
            }
            ("localEnv" | "containerEnv", None) => Err(VariableProblem::NoName),
            ("localWorkspaceFolder", None) => Ok(Some(self.local_workspace_folder.clone())),
            ("localWorkspaceFolderBasename", None) => {
                Ok(Some(basename(&self.local_workspace_folder).to_owned()))
            }
            ("containerWorkspaceFolder", None) => match &self.container_workspace_folder {
                Some(folder) => Ok(Some(folder.clone())),
                None => Err(VariableProblem::SelfReference),
            },
            ("containerWorkspaceFolderBasename", None) => match &self.container_workspace_folder {
                Some(folder) => Ok(Some(basename(folder).to_owned())),
                None => Err(VariableProblem::SelfReference),
            },
            ("devcontainerId", None) => Ok(Some(self.devcontainer_id.clone())),
            _ if policy.shell && is_shell_parameter(inner) => Ok(None),
            _ => Err(VariableProblem::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const COMMAND: Policy = Policy {
        container_env: true,
        shell: true,
    };
    const REMOTE: Policy = Policy {
        container_env: true,
        shell: false,
    };

    /// (input, policy, with a container environment, expected output or problem)
    #[test]
    fn substitution_table() {
        let local = env(&[("USER", "ann"), ("EMPTY", ""), ("URL", "http://x:1")]);
        let container = env(&[("PATH", "/usr/bin"), ("HOME", "/home/vscode")]);
        type Case = (
            &'static str,
            Policy,
            bool,
            Result<&'static str, VariableProblem>,
        );
        let cases: &[Case] = &[
            ("plain", STRICT, false, Ok("plain")),
            ("$HOME and $ {x}", STRICT, false, Ok("$HOME and $ {x}")),
            ("${localEnv:USER}", STRICT, false, Ok("ann")),
            ("${env:USER}", STRICT, false, Ok("ann")),
            ("a-${localEnv:USER}-b", STRICT, false, Ok("a-ann-b")),
            ("${localEnv:NOPE}", STRICT, false, Ok("")),
            ("${localEnv:NOPE:fallback}", STRICT, false, Ok("fallback")),
            ("${localEnv:NOPE:a:b}", STRICT, false, Ok("a:b")),
            ("${localEnv:EMPTY:fallback}", STRICT, false, Ok("")),
            ("${localEnv:URL}", STRICT, false, Ok("http://x:1")),
            (
                "${localWorkspaceFolder}",
                STRICT,
                false,
                Ok("/home/ann/proj"),
            ),
            ("${localWorkspaceFolderBasename}", STRICT, false, Ok("proj")),
            (
                "${containerWorkspaceFolder}/src",
                STRICT,
                false,
                Ok("/workspace/proj/src"),
            ),
            (
                "${containerWorkspaceFolderBasename}",
                STRICT,
                false,
                Ok("proj"),
            ),
            ("vol-${devcontainerId}", STRICT, false, Ok("vol-ID")),
            ("${containerEnv:PATH}:/x", REMOTE, true, Ok("/usr/bin:/x")),
            ("${containerEnv:NOPE:d}", REMOTE, true, Ok("d")),
            (
                "${containerEnv:PATH}:/x",
                REMOTE,
                false,
                Ok("${containerEnv:PATH}:/x"),
            ),
            (
                "${containerEnv:PATH}",
                STRICT,
                true,
                Err(VariableProblem::ContainerEnvTooEarly),
            ),
            (
                "${containerEnv:}",
                REMOTE,
                false,
                Err(VariableProblem::NoName),
            ),
            (
                "${containerEnv:}",
                REMOTE,
                true,
                Err(VariableProblem::NoName),
            ),
            ("${localEnv:}", STRICT, false, Err(VariableProblem::NoName)),
            ("${localEnv}", STRICT, false, Err(VariableProblem::NoName)),
            ("${localEnv}", COMMAND, false, Err(VariableProblem::NoName)),
            ("${HOME}", STRICT, false, Err(VariableProblem::Unknown)),
            (
                "${locelEnv:USER}",
                STRICT,
                false,
                Err(VariableProblem::Unknown),
            ),
            ("${}", STRICT, false, Err(VariableProblem::Unknown)),
            ("${}", COMMAND, false, Err(VariableProblem::Unknown)),
            (
                "${localEnv:USER",
                STRICT,
                false,
                Err(VariableProblem::Unterminated),
            ),
            (
                "echo ${HOME} ${PATH:-/bin} ${#X}",
                COMMAND,
                false,
                Ok("echo ${HOME} ${PATH:-/bin} ${#X}"),
            ),
            (
                "cd ${containerWorkspaceFolder} && echo ${USER}",
                COMMAND,
                false,
                Ok("cd /workspace/proj && echo ${USER}"),
            ),
            ("echo ${localEnv:USER}", COMMAND, false, Ok("echo ann")),
            (
                "echo ${",
                COMMAND,
                false,
                Err(VariableProblem::Unterminated),
            ),
            // A value is not substituted again.
            (
                "${localEnv:X}",
                STRICT,
                false,
                Ok("${localWorkspaceFolder}"),
            ),
        ];
        for (input, policy, with_container, want) in cases {
            let mut local = local.clone();
            local.insert("X".into(), "${localWorkspaceFolder}".into());
            let vars = Vars {
                local_env: &local,
                container_env: with_container.then_some(&container),
                local_workspace_folder: "/home/ann/proj".into(),
                container_workspace_folder: Some("/workspace/proj".into()),
                devcontainer_id: "ID".into(),
            };
            let got = vars
                .expand(input, *policy)
                .map(|e| e.text)
                .map_err(|(_, problem)| problem);
            assert_eq!(
                got.as_deref().map_err(Clone::clone),
                want.clone(),
                "{input:?}"
            );
        }
    }

    #[test]
    fn failures_name_the_variable_as_written() {
        let local = BTreeMap::new();
        let vars = Vars {
            local_env: &local,
            container_env: None,
            local_workspace_folder: "/p".into(),
            container_workspace_folder: None,
            devcontainer_id: String::new(),
        };
        assert_eq!(
            vars.expand("a ${nope} b", STRICT),
            Err(("${nope}".into(), VariableProblem::Unknown))
        );
        assert_eq!(
            vars.expand("x${localEnv:A", STRICT),
            Err(("${localEnv:A".into(), VariableProblem::Unterminated))
        );
        assert_eq!(
            vars.expand("${containerWorkspaceFolder}", STRICT),
            Err((
                "${containerWorkspaceFolder}".into(),
                VariableProblem::SelfReference
            ))
        );
    }

    #[test]
    fn a_left_container_variable_is_reported() {
        let local = BTreeMap::new();
        let vars = Vars {
            local_env: &local,
            container_env: None,
            local_workspace_folder: "/p".into(),
            container_workspace_folder: Some("/w".into()),
            devcontainer_id: String::new(),
        };
        let e = vars.expand("${containerEnv:PATH}", REMOTE).unwrap();
        assert!(e.waits_for_container);
        let e = vars.expand("echo ${HOME}", COMMAND).unwrap();
        assert!(!e.waits_for_container);
    }

    /// Expected values computed with the spec's JavaScript (`uniqueIdForLabels`) in Node.
    #[test]
    fn devcontainer_id_follows_the_spec() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], ID_EMPTY),
            (
                &[("devcontainer.local_folder", "/home/ann/proj")],
                ID_FOLDER,
            ),
            (
                &[("dev.claude-vm.workspace", "ws1"), ("a", "\"quoted\"\n")],
                ID_TWO,
            ),
        ];
        for (labels, want) in cases {
            let id = devcontainer_id(&env(labels));
            assert_eq!(id.len(), 52);
            assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
            assert_eq!(id, *want, "{labels:?}");
        }
    }

    const ID_EMPTY: &str = "0h0jduhlbcr7h88kdb8muvk697kkvd7s47v7fq1h1g30uoealvsa";
    const ID_FOLDER: &str = "1sb695fagf5lb5h4po6n81oue2rhf7de68ro44un62l8fmvmpmcb";
    const ID_TWO: &str = "04pnokm71d6t9g0sb5gtl0k1p9um31a55mj0bo1cjdsm1m8b432r";
}
