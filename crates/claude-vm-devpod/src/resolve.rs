//! Filling a provider's options: what the user gave, else the option's default (which may
//! refer to other options and built-ins such as `${MACHINE_ID}`), else the output of its
//! command, as DevPod resolves them.
//!
//! Options are filled in dependency order (an option after those its default or command
//! refers to; otherwise in manifest order), so each command runs with the options before
//! it in its environment. `local` options are per machine: they wait for
//! [`Scope::Machine`], when the caller knows the machine's id and folder.
//!
//! What is kept between runs is the caller's business: DevPod stores the values it
//! filled and passes them back, so a command runs once (or again after its `cache`
//! duration, see [`Resolved::cached`]). Pass stored values back in `user_values`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::duration::parse_duration;
use crate::expand::{expand, references};
use crate::manifest::{Manifest, OptionDef};

/// Which options to fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Once per provider (`provider add`, `provider set-options`): every option but the
    /// `local` ones.
    Provider,
    /// For one machine: every option. The built-ins then include `MACHINE_ID`,
    /// `MACHINE_FOLDER`, `MACHINE_CONTEXT` and `MACHINE_PROVIDER`.
    Machine,
}

/// The options once filled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Every option filled in this scope, empty ones included: the environment of the
    /// provider's commands (with the built-ins).
    pub values: BTreeMap<String, String>,
    /// Required options that are still empty, in manifest order: ask the user for them
    /// (their `description` and `password` say how).
    pub missing: Vec<String>,
    /// Options whose value came from a command with a `cache` duration: after that long,
    /// drop the stored value so the command runs again.
    pub cached: BTreeMap<String, Duration>,
}

/// Why options cannot be filled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("unknown {} {}; {}", plural_options(names), names.join(", "),
        if known.is_empty() { "this provider has no options".to_string() }
        else { format!("this provider's options are {}", known.join(", ")) })]
    UnknownOptions {
        names: Vec<String>,
        known: Vec<String>,
    },
    #[error("option '{option}': {problem}")]
    InvalidValue { option: String, problem: String },
    #[error(
        "options {} refer to each other in their defaults or commands; break the cycle",
        cycle.join(" -> ")
    )]
    Cycle { cycle: Vec<String> },
    #[error("option '{option}': its command failed: {message}")]
    Command { option: String, message: String },
}

fn plural_options(names: &[String]) -> &'static str {
    if names.len() == 1 {
        "option"
    } else {
        "options"
    }
}

/// Runs an option's command (a shell script) with these variables in its environment and
/// returns its standard output, or says why it failed.
pub type RunCommand<'a> = dyn FnMut(&str, &BTreeMap<String, String>) -> Result<String, String> + 'a;

/// Fills the options of `manifest` for `scope`.
///
/// `user_values` win (and are checked against the option's `enum` and `type`);
/// `builtins` are what DevPod calls its built-in options (`DEVPOD_OS`, `PROVIDER_ID`, the
/// helper binaries' paths, ...), which defaults and commands may use but which are not
/// options. `run` executes an option's command, a POSIX shell script, with the given
/// variables in its environment (add this process's environment: commands like
/// `printf %s "${AWS_REGION:-}"` read it), and returns its standard output.
pub fn resolve(
    manifest: &Manifest,
    user_values: &BTreeMap<String, String>,
    builtins: &BTreeMap<String, String>,
    scope: Scope,
    run: &mut RunCommand<'_>,
) -> Result<Resolved, ResolveError> {
    let unknown: Vec<String> = user_values
        .keys()
        .filter(|name| !manifest.options.contains_key(*name))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(ResolveError::UnknownOptions {
            names: unknown,
            known: manifest
                .option_names()
                .iter()
                .map(|s| s.to_string())
                .collect(),
        });
    }
    for name in manifest.option_names() {
        if let Some(value) = user_values.get(name) {
            check_value(name, &manifest.options[name], value)?;
        }
    }
    let order = resolution_order(manifest).map_err(|cycle| ResolveError::Cycle { cycle })?;

    let mut resolved = Resolved::default();
    for name in order {
        let option = &manifest.options[name];
        let value = if let Some(value) = user_values.get(name) {
            value.clone()
        } else if scope == Scope::Provider && option.local {
            continue;
        } else if let Some(default) = &option.default {
            let values = &resolved.values;
            expand(default, &|var| {
                values.get(var).or_else(|| builtins.get(var)).cloned()
            })
        } else if let Some(command) = &option.command {
            let mut env = builtins.clone();
            env.extend(resolved.values.clone());
            let output = run(command, &env).map_err(|message| ResolveError::Command {
                option: name.to_string(),
                message,
            })?;
            if let Some(Ok(duration)) = option.cache.as_deref().map(parse_duration) {
                resolved.cached.insert(name.to_string(), duration);
            }
            output.trim().to_string()
        } else if let [only] = option.choices.as_slice() {
            only.value.clone()
        } else {
            String::new()
        };
        resolved.values.insert(name.to_string(), value);
    }

    resolved.missing = manifest
        .option_names()
        .into_iter()
        .filter(|name| manifest.options[*name].required)
        .filter(|name| resolved.values.get(*name).is_some_and(String::is_empty))
        .map(str::to_string)
        .collect();
    Ok(resolved)
}

/// A user's value against the option's `enum` and `type` (a secret is not quoted).
fn check_value(name: &str, option: &OptionDef, value: &str) -> Result<(), ResolveError> {
    let quoted = if option.is_secret() {
        "the value".to_string()
    } else {
        format!("'{value}'")
    };
    let problem = if !option.choices.is_empty() && !option.choices.iter().any(|c| c.value == value)
    {
        let allowed: Vec<&str> = option.choices.iter().map(|c| c.value.as_str()).collect();
        Some(format!("{quoted} is not one of {}", allowed.join(", ")))
    } else {
        match option.kind.as_deref().unwrap_or("string") {
            "number" if value.parse::<i64>().is_err() => {
                Some(format!("{quoted} must be a whole number"))
            }
            "boolean" if !is_go_bool(value) => Some(format!("{quoted} must be true or false")),
            "duration" if parse_duration(value).is_err() => {
                Some(format!("{quoted} must be a duration like 10s, 5m or 24h"))
            }
            _ => None,
        }
    };
    problem.map_or(Ok(()), |problem| {
        Err(ResolveError::InvalidValue {
            option: name.to_string(),
            problem,
        })
    })
}

/// The spellings of a boolean Go's `strconv.ParseBool` takes.
fn is_go_bool(value: &str) -> bool {
    matches!(
        value,
        "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false" | "False"
    )
}

/// The options in the order to fill them: each after the options its default and command
/// refer to, otherwise in manifest order. `Err` is a cycle, its first name repeated last.
pub(crate) fn resolution_order(m: &Manifest) -> Result<Vec<&str>, Vec<String>> {
    let names = m.option_names();
    let deps = |name: &str| -> Vec<&str> {
        let option = &m.options[name];
        let refs: BTreeSet<String> = [&option.default, &option.command]
            .into_iter()
            .flat_map(|text| references(text.as_deref().unwrap_or_default()))
            .collect();
        names
            .iter()
            .copied()
            .filter(|n| *n != name && refs.contains(*n))
            .collect()
    };
    let mut walk = Walk {
        deps: &deps,
        stack: Vec::new(),
        done: BTreeSet::new(),
        order: Vec::new(),
    };
    for name in &names {
        walk.visit(name)?;
    }
    Ok(walk.order)
}

/// A depth-first walk of the option dependencies.
struct Walk<'a, 'd> {
    deps: &'d dyn Fn(&str) -> Vec<&'a str>,
    stack: Vec<&'a str>,
    done: BTreeSet<&'a str>,
    order: Vec<&'a str>,
}

impl<'a> Walk<'a, '_> {
    fn visit(&mut self, name: &'a str) -> Result<(), Vec<String>> {
        if self.done.contains(name) {
            return Ok(());
        }
        if let Some(at) = self.stack.iter().position(|n| *n == name) {
            let mut cycle: Vec<String> = self.stack[at..].iter().map(|n| n.to_string()).collect();
            cycle.push(name.to_string());
            return Err(cycle);
        }
        self.stack.push(name);
        for dep in (self.deps)(name) {
            self.visit(dep)?;
        }
        self.stack.pop();
        self.done.insert(name);
        self.order.push(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
