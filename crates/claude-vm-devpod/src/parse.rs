//! Reading a provider.yaml: from text to a [`Manifest`] claude-vm can run, or an error
//! that says what to fix.
//!
//! Two passes. The first walks the YAML against the format's known fields: it accepts
//! the spellings DevPod accepts (a number or `true` where text is expected, a script as a
//! string or a list, an enum of plain values), says which field has the wrong kind of
//! value, and turns each field it does not know into a warning (a provider written for a
//! newer DevPod still loads). The second checks the typed manifest with DevPod's rules,
//! plus claude-vm's own: only providers that run commands on machines through
//! `exec.command` and Docker, and only checksum-verified downloaded binaries.

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml_ng::{Mapping, Number, Value};

use crate::duration::parse_duration;
use crate::expand::references;
use crate::manifest::{Binary, Manifest};
use crate::resolve::resolution_order;

/// A manifest that passed, and what in it claude-vm ignores.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub manifest: Manifest,
    /// One sentence per thing ignored or not checked, for the user to read.
    pub warnings: Vec<String>,
}

/// Why a provider.yaml cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The text is not YAML.
    #[error("provider.yaml is not valid YAML: {0}")]
    Yaml(String),
    /// The provider breaks a rule of the format; the message says which and how to fix it.
    #[error("provider.yaml: {0}")]
    Invalid(String),
    /// A valid provider of a kind claude-vm does not run (DevPod Pro, Kubernetes, ...).
    #[error("provider.yaml: {0}")]
    Unsupported(String),
}

/// Parses and checks a provider.yaml.
pub fn parse(text: &str) -> Result<Parsed, ManifestError> {
    let mut value: Value =
        serde_yaml_ng::from_str(text).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    value
        .apply_merge()
        .map_err(|e| ManifestError::Yaml(e.to_string()))?;
    match value {
        Value::Null => {
            return Err(invalid(
                "the file is empty; a provider needs at least a name and exec.command",
            ));
        }
        Value::Mapping(_) => {}
        _ => {
            return Err(invalid(
                "the file must be a mapping of fields (name, version, options, exec, ...)",
            ));
        }
    }
    let mut warnings = Vec::new();
    normalize(&mut value, MANIFEST, "", &mut warnings).map_err(ManifestError::Invalid)?;
    let option_order = match value.get("options") {
        Some(Value::Mapping(options)) => options
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let mut manifest: Manifest =
        serde_yaml_ng::from_value(value).map_err(|e| invalid(&e.to_string()))?;
    manifest.option_order = option_order;
    validate(&manifest, &mut warnings)?;
    Ok(Parsed { manifest, warnings })
}

fn invalid(message: &str) -> ManifestError {
    ManifestError::Invalid(message.to_string())
}

/// What a field holds, for the first pass.
#[derive(Clone, Copy)]
enum Shape {
    /// Text; a number or a boolean is taken as written (`default: 40`); empty is not given.
    Text,
    /// `true` or `false`.
    Flag,
    /// A boolean or text that refers to an option ([`crate::StrBool`]).
    TextOrFlag,
    /// A string or a list of strings ([`crate::Script`]); an empty list is no script.
    Script,
    /// A list of text.
    Texts,
    /// An option's `enum`: plain values or `{value, displayName}`.
    Choices,
    /// Anything, kept as written and not looked into.
    Raw,
    /// A mapping with these fields.
    Fields(&'static [(&'static str, Shape)]),
    /// A mapping from names to values of one shape.
    MapOf(&'static Shape),
    /// A list of values of one shape.
    ListOf(&'static Shape),
}

use Shape::*;

const BINARY: Shape = Fields(&[
    ("os", Text),
    ("arch", Text),
    ("checksum", Text),
    ("path", Text),
    ("archivePath", Text),
    ("name", Text),
]);

const BINARIES: Shape = MapOf(&ListOf(&BINARY));

const CHOICE: Shape = Fields(&[("value", Text), ("displayName", Text)]);

const OPTION: Shape = Fields(&[
    ("displayName", Text),
    ("description", Text),
    ("required", Flag),
    ("password", Flag),
    ("type", Text),
    ("validationPattern", Text),
    ("validationMessage", Text),
    ("suggestions", Texts),
    ("enum", Choices),
    ("hidden", Flag),
    ("local", Flag),
    ("global", Flag),
    ("default", Text),
    ("cache", Text),
    ("command", Text),
    ("subOptionsCommand", Text),
    ("mutable", Flag),
]);

const AGENT: Shape = Fields(&[
    ("path", Text),
    ("dataPath", Text),
    ("downloadURL", Text),
    ("local", TextOrFlag),
    ("inactivityTimeout", Text),
    ("containerInactivityTimeout", Text),
    ("injectGitCredentials", TextOrFlag),
    ("injectDockerCredentials", TextOrFlag),
    ("exec", Fields(&[("shutdown", Script)])),
    ("binaries", BINARIES),
    ("dockerless", Raw),
    ("driver", Text),
    (
        "docker",
        Fields(&[
            ("path", Text),
            ("install", TextOrFlag),
            ("builder", Text),
            ("env", MapOf(&Text)),
        ]),
    ),
    ("custom", Raw),
    ("kubernetes", Raw),
]);

const EXEC: Shape = Fields(&[
    ("init", Script),
    ("command", Script),
    ("create", Script),
    ("delete", Script),
    ("start", Script),
    ("stop", Script),
    ("status", Script),
    ("proxy", Raw),
    ("daemon", Raw),
]);

const MANIFEST: Shape = Fields(&[
    ("name", Text),
    ("version", Text),
    ("description", Text),
    ("icon", Text),
    ("iconDark", Text),
    ("home", Text),
    ("source", Raw),
    (
        "optionGroups",
        ListOf(&Fields(&[
            ("name", Text),
            ("options", Texts),
            ("defaultVisible", Flag),
        ])),
    ),
    ("options", MapOf(&OPTION)),
    ("agent", AGENT),
    ("exec", EXEC),
    ("binaries", BINARIES),
]);

/// Brings `value` (at `path`) to `shape`'s one spelling, dropping and reporting unknown
/// fields. `Ok(false)`: the value means "not given" and is to be dropped.
fn normalize(
    value: &mut Value,
    shape: Shape,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<bool, String> {
    if let Value::Tagged(tagged) = value {
        return Err(format!(
            "{path} has the YAML tag {}, which provider.yaml does not use; remove it",
            tagged.tag
        ));
    }
    match shape {
        Raw => {}
        Text => {
            text(value, path)?;
            return Ok(value.as_str() != Some(""));
        }
        Flag => {
            let flag = match &*value {
                Value::Bool(b) => *b,
                Value::String(s) => yaml11_bool(s)
                    .ok_or_else(|| format!("{path} must be true or false, not '{s}'"))?,
                other => return Err(format!("{path} must be true or false, not {}", kind(other))),
            };
            *value = Value::Bool(flag);
        }
        TextOrFlag => match &*value {
            Value::String(s) => return Ok(!s.is_empty()),
            Value::Bool(b) => *value = Value::String(b.to_string()),
            other => {
                return Err(format!(
                    "{path} must be true, false or text like ${{OPTION}}, not {}",
                    kind(other)
                ));
            }
        },
        Script => match value {
            Value::String(_) => {}
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.is_string() {
                        return Err(format!(
                            "{path}[{i}] must be text (a script is a string or a list of \
                             strings), not {}",
                            kind(item)
                        ));
                    }
                }
                return Ok(!items.is_empty());
            }
            other => {
                return Err(format!(
                    "{path} must be a script (a string) or a command (a list of strings), not {}",
                    kind(other)
                ));
            }
        },
        Texts => match value {
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    text(item, &format!("{path}[{i}]"))?;
                }
            }
            other => {
                return Err(format!(
                    "{path} must be a list of text, not {}",
                    kind(other)
                ));
            }
        },
        Choices => match value {
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    if let Value::String(s) = item {
                        let mut choice = Mapping::new();
                        choice.insert("value".into(), Value::String(std::mem::take(s)));
                        *item = Value::Mapping(choice);
                    } else if item.is_mapping() {
                        normalize(item, CHOICE, &item_path, warnings)?;
                    } else {
                        return Err(format!(
                            "{item_path} must be a value or {{value, displayName}}, not {}",
                            kind(item)
                        ));
                    }
                }
            }
            other => {
                return Err(format!(
                    "{path} must be a list of allowed values, not {}",
                    kind(other)
                ));
            }
        },
        Fields(fields) => {
            let Value::Mapping(mapping) = value else {
                return Err(format!(
                    "{path} must be a mapping of fields, not {}",
                    kind(value)
                ));
            };
            let mut kept = Mapping::new();
            for (key, mut child) in std::mem::take(mapping) {
                let key = key_text(&key, path)?;
                let child_path = join(path, &key);
                let Some((_, child_shape)) = fields.iter().find(|(name, _)| *name == key) else {
                    warnings.push(format!("unknown field {child_path}, ignored"));
                    continue;
                };
                if !child.is_null() && normalize(&mut child, *child_shape, &child_path, warnings)? {
                    kept.insert(Value::String(key), child);
                }
            }
            *mapping = kept;
        }
        MapOf(inner) => {
            let Value::Mapping(mapping) = value else {
                return Err(format!(
                    "{path} must be a mapping of names, not {}",
                    kind(value)
                ));
            };
            let mut kept = Mapping::new();
            for (key, mut child) in std::mem::take(mapping) {
                let key = key_text(&key, path)?;
                let child_path = join(path, &key);
                if child.is_null() {
                    match inner {
                        Fields(_) => child = Value::Mapping(Mapping::new()),
                        _ => continue,
                    }
                }
                if normalize(&mut child, *inner, &child_path, warnings)? {
                    kept.insert(Value::String(key), child);
                }
            }
            *mapping = kept;
        }
        ListOf(inner) => {
            let Value::Sequence(items) = value else {
                return Err(format!("{path} must be a list, not {}", kind(value)));
            };
            for (i, item) in items.iter_mut().enumerate() {
                let item_path = format!("{path}[{i}]");
                if item.is_null() {
                    return Err(format!("{item_path} is empty"));
                }
                normalize(item, *inner, &item_path, warnings)?;
            }
        }
    }
    Ok(true)
}

/// Text, or a number or boolean written where text is expected, as text.
fn text(value: &mut Value, path: &str) -> Result<(), String> {
    match &*value {
        Value::String(_) => {}
        Value::Number(n) => *value = Value::String(number_text(n)),
        Value::Bool(b) => *value = Value::String(b.to_string()),
        other => return Err(format!("{path} must be text, not {}", kind(other))),
    }
    Ok(())
}

/// A number as DevPod turns it into text: integers as written, `1.0` as `1`.
fn number_text(n: &Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 => {
            format!("{}", f as i64)
        }
        _ => n.to_string(),
    }
}

/// The booleans of YAML 1.1, which DevPod's YAML reader takes unquoted.
fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            Some(false)
        }
        _ => None,
    }
}

/// A mapping key as text (`1:` is the key "1").
fn key_text(key: &Value, path: &str) -> Result<String, String> {
    match key {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(number_text(n)),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!(
            "{} has a key that is {}; keys must be names",
            if path.is_empty() { "the file" } else { path },
            kind(other)
        )),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

const OPTION_TYPES: [&str; 5] = ["string", "multiline", "duration", "number", "boolean"];

/// The second pass: DevPod's rules and claude-vm's.
fn validate(m: &Manifest, warnings: &mut Vec<String>) -> Result<(), ManifestError> {
    validate_name(&m.name)?;
    if let Some(version) = &m.version
        && !is_semver(version.strip_prefix('v').unwrap_or(version))
    {
        return Err(ManifestError::Invalid(format!(
            "version '{version}' is not a semantic version like v1.2.3 or 0.4.0-beta.1"
        )));
    }
    for name in m.option_names() {
        validate_option(m, name, warnings)?;
    }
    validate_binaries("binaries", "binary", &m.binaries, warnings)?;
    validate_kind(m, warnings)?;
    validate_binaries(
        "agent.binaries",
        "agent binary",
        &m.agent.binaries,
        warnings,
    )?;
    validate_exec(m)?;
    for (i, group) in m.option_groups.iter().enumerate() {
        if group.name.is_empty() {
            return Err(ManifestError::Invalid(format!(
                "optionGroups[{i}].name is empty; name the group"
            )));
        }
        for option in &group.options {
            if !m.options.contains_key(option) {
                warnings.push(format!(
                    "optionGroups[{i}] ('{}') lists option '{option}', which is not defined, \
                     ignored",
                    group.name
                ));
            }
        }
    }
    validate_dependencies(m)
}

fn validate_name(name: &str) -> Result<(), ManifestError> {
    if name.is_empty() {
        return Err(invalid(
            "name is missing; give the provider a name like my-cloud",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ManifestError::Invalid(format!(
            "name '{name}' may only contain lowercase letters, digits and dashes"
        )));
    }
    if name.len() > 32 {
        return Err(ManifestError::Invalid(format!(
            "name '{name}' is longer than 32 characters"
        )));
    }
    Ok(())
}

/// Semantic versioning 2.0: `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`.
fn is_semver(version: &str) -> bool {
    let numeric = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
    };
    let identifier =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let (rest, build) = match version.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (version, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| numeric(p))
        && pre.is_none_or(|pre| {
            pre.split('.').all(|id| {
                identifier(id) && (!id.bytes().all(|b| b.is_ascii_digit()) || numeric(id))
            })
        })
        && build.is_none_or(|build| build.split('.').all(identifier))
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn validate_option(
    m: &Manifest,
    name: &str,
    warnings: &mut Vec<String>,
) -> Result<(), ManifestError> {
    let option = &m.options[name];
    let fail = |problem: &str| ManifestError::Invalid(format!("option '{name}': {problem}"));
    if !is_env_name(name) {
        return Err(ManifestError::Invalid(format!(
            "option name '{name}' may only contain upper-case letters, digits and underscores \
             (like MY_OPTION): it becomes an environment variable"
        )));
    }
    if let Some(pattern) = &option.validation_pattern {
        warnings.push(format!(
            "option '{name}': validationPattern '{pattern}' is not checked by claude-vm"
        ));
    }
    if option.default.is_some() && option.command.is_some() {
        return Err(fail(
            "default and command cannot be used together; keep one",
        ));
    }
    if option.global && option.cache.is_some() {
        return Err(fail("global and cache cannot be used together"));
    }
    if option.global && option.mutable {
        return Err(fail("global and mutable cannot be used together"));
    }
    if let Some(cache) = &option.cache {
        parse_duration(cache).map_err(|e| fail(&format!("cache: {e}")))?;
    }
    if let Some(kind) = &option.kind
        && !OPTION_TYPES.contains(&kind.as_str())
    {
        return Err(fail(&format!(
            "type '{kind}' is not one of {}",
            OPTION_TYPES.join(", ")
        )));
    }
    if option.cache.is_some() && option.command.is_none() {
        return Err(fail(
            "cache needs a command (it says how long the command's value is kept)",
        ));
    }
    if option.sub_options_command.is_some() {
        warnings.push(format!(
            "option '{name}': subOptionsCommand is not supported by claude-vm, ignored"
        ));
    }
    Ok(())
}

fn validate_binaries(
    section: &str,
    what: &str,
    binaries: &BTreeMap<String, Vec<Binary>>,
    warnings: &mut Vec<String>,
) -> Result<(), ManifestError> {
    for (name, builds) in binaries {
        if !is_env_name(name) {
            return Err(ManifestError::Invalid(format!(
                "{section}: binary name '{name}' may only contain upper-case letters, digits and \
                 underscores (like MY_TOOL): it becomes an environment variable"
            )));
        }
        let mut seen = BTreeSet::new();
        for (i, build) in builds.iter().enumerate() {
            let at = format!("{section}.{name}[{i}]");
            if !["linux", "darwin", "windows"].contains(&build.os.as_str()) {
                return Err(ManifestError::Invalid(format!(
                    "{at}: os '{}' must be linux, darwin or windows",
                    build.os
                )));
            }
            if build.arch.is_empty() {
                return Err(ManifestError::Invalid(format!(
                    "{at}: arch is missing (like amd64 or arm64)"
                )));
            }
            let label = format!("{what} {name} for {}/{}", build.os, build.arch);
            if build.path.is_empty() {
                return Err(ManifestError::Invalid(format!(
                    "{label} has no path (an https URL or a file)"
                )));
            }
            if build.archive_path.is_none() && build.is_archive() {
                return Err(ManifestError::Invalid(format!(
                    "{label}: {} is an archive, so archivePath must say which file in it is the \
                     binary",
                    build.path
                )));
            }
            match &build.checksum {
                None if build.is_remote() => {
                    return Err(ManifestError::Invalid(format!(
                        "{label} has no checksum; claude-vm runs only checksum-verified binaries"
                    )));
                }
                None => warnings.push(format!(
                    "{label} ({}) has no checksum; it is a file on this machine and is used as \
                     it is",
                    build.path
                )),
                Some(sum) if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    return Err(ManifestError::Invalid(format!(
                        "{label}: checksum '{sum}' is not a SHA-256 (64 hexadecimal digits)"
                    )));
                }
                Some(_) => {}
            }
            if !seen.insert((&build.os, &build.arch)) {
                warnings.push(format!(
                    "{what} {name} is listed more than once for {}/{}; the last entry is used",
                    build.os, build.arch
                ));
            }
        }
    }
    Ok(())
}

/// Refuses the kinds of provider claude-vm does not run; warns about ignored sections.
fn validate_kind(m: &Manifest, warnings: &mut Vec<String>) -> Result<(), ManifestError> {
    let unsupported = |message: String| Err(ManifestError::Unsupported(message));
    if m.exec.proxy.is_some() {
        return unsupported(
            "exec.proxy: proxy providers (DevPod Pro) are not supported by claude-vm (it needs \
             exec.command)"
                .into(),
        );
    }
    if m.exec.daemon.is_some() {
        return unsupported(
            "exec.daemon: daemon providers (DevPod Pro) are not supported by claude-vm (it needs \
             exec.command)"
                .into(),
        );
    }
    match m.agent.driver.as_deref().unwrap_or("docker") {
        "docker" => {}
        driver @ ("kubernetes" | "custom") => {
            return unsupported(format!(
                "claude-vm runs workspaces with Docker; agent.driver {driver} is not supported"
            ));
        }
        driver => {
            return Err(ManifestError::Invalid(format!(
                "agent.driver '{driver}' is not a driver; leave it out or write docker"
            )));
        }
    }
    for (section, value) in [
        ("kubernetes", &m.agent.kubernetes),
        ("custom", &m.agent.custom),
        ("dockerless", &m.agent.dockerless),
    ] {
        if value.is_some() {
            warnings.push(format!(
                "agent.{section} is ignored: claude-vm runs workspaces with Docker"
            ));
        }
    }
    Ok(())
}

fn validate_exec(m: &Manifest) -> Result<(), ManifestError> {
    let e = &m.exec;
    let problem = if e.command.0.is_empty() {
        Some("exec.command is missing; claude-vm needs it to run commands in the machine")
    } else if e.create.is_some() && e.delete.is_none() {
        Some("exec.create is given without exec.delete; a machine provider needs both")
    } else if e.delete.is_some() && e.create.is_none() {
        Some("exec.delete is given without exec.create; a machine provider needs both")
    } else if e.start.is_some() && e.stop.is_none() {
        Some("exec.start is given without exec.stop; give both or neither")
    } else if e.stop.is_some() && e.start.is_none() {
        Some("exec.stop is given without exec.start; give both or neither")
    } else if e.start.is_some() && e.status.is_none() {
        Some("exec.start needs exec.status, to know when the machine is stopped")
    } else if e.start.is_some() && e.create.is_none() {
        Some("exec.start needs exec.create: only machine providers start machines")
    } else {
        None
    };
    problem.map_or(Ok(()), |p| Err(invalid(p)))
}

/// Options may refer to each other, but not in a cycle, not from a per-provider option to
/// a per-machine (`local`) one, and not from a `global` option to one that is not.
fn validate_dependencies(m: &Manifest) -> Result<(), ManifestError> {
    for name in m.option_names() {
        let option = &m.options[name];
        for (field, text) in [("default", &option.default), ("command", &option.command)] {
            for dep in references(text.as_deref().unwrap_or_default()) {
                let Some(dep_option) = m.options.get(&dep).filter(|_| dep != name) else {
                    continue;
                };
                if !option.local && dep_option.local {
                    return Err(ManifestError::Invalid(format!(
                        "option '{name}' is filled once per provider, but its {field} uses \
                         '{dep}', which is local (filled per machine); make '{name}' local too"
                    )));
                }
                if option.global && !dep_option.global {
                    return Err(ManifestError::Invalid(format!(
                        "option '{name}' is global, but its {field} uses '{dep}', which is not; \
                         make '{dep}' global too"
                    )));
                }
            }
        }
    }
    resolution_order(m).map(drop).map_err(|cycle| {
        ManifestError::Invalid(format!(
            "options {} refer to each other in their defaults or commands; break the cycle",
            cycle.join(" -> ")
        ))
    })
}

#[cfg(test)]
mod tests;
