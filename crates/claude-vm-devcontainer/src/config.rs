//! The devcontainer.json model: the properties claude-vm uses, typed, with variables
//! substituted and paths resolved.
//!
//! Top-level properties fall in three groups:
//! - **used**: typed into [`DevContainer`] (name, image, build, features, lifecycle
//!   commands, users, environments, mounts, ports, `customizations.claude-vm`, ...);
//! - **ignored**: known to the spec but meaningless for claude-vm, skipped silently:
//!   editor and UI hints (`customizations` other than `claude-vm`, the legacy VS Code
//!   `extensions`/`settings`, `otherPortsAttributes`, `secrets`), host hints
//!   (`hostRequirements`), and what claude-vm decides itself (`shutdownAction`,
//!   `overrideCommand`: it always owns the container's entry point; `waitFor`,
//!   `userEnvProbe`);
//! - **unknown** (anything else, and unknown keys of `build`) and **unsupported**
//!   (`appPort`, deprecated for `forwardPorts`): listed in `unknown_properties` and
//!   `unsupported_properties`, so the caller prints one warning ([`DevContainer::warning`]).
//!
//! Ignored and unknown properties are not even substituted, so nothing claude-vm does not
//! use can make a file fail to load.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use crate::Error;
use crate::command::{Command, Lifecycle};
use crate::features::reference::FeatureRef;
use crate::find::Located;
use crate::jsonc::{self, Typer, child, item};
use crate::mount::Mount;
use crate::ports::{ForwardPort, PortAttributes};
use crate::vars::{self, Context, Policy, STRICT, Vars};

/// What the container is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `image`: an image to pull (or that is there).
    Image(String),
    /// `build`: a Dockerfile to build.
    Build(Build),
    /// `dockerComposeFile`: recognised so it can be refused ([`DevContainer::ensure_supported`]).
    Compose(Compose),
}

/// `build` (or the older top-level `dockerFile` and `context`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// The Dockerfile, resolved against the folder of devcontainer.json.
    pub dockerfile: PathBuf,
    /// The build context, resolved the same way (default: that folder).
    pub context: PathBuf,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// `cacheFrom`, a string or an array in the file.
    pub cache_from: Vec<String>,
    /// Extra `docker build` arguments, as written.
    pub options: Vec<String>,
}

/// `dockerComposeFile` and its companions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compose {
    pub files: Vec<String>,
    pub service: Option<String>,
    pub run_services: Vec<String>,
}

/// A value given to a feature's option.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum OptionValue {
    Bool(bool),
    /// A string (numbers are kept as their JSON text).
    String(String),
}

impl OptionValue {
    /// As the feature's install script sees it.
    pub fn as_env(&self) -> String {
        match self {
            OptionValue::Bool(b) => b.to_string(),
            OptionValue::String(s) => s.clone(),
        }
    }
}

/// One entry of `features`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureEntry {
    /// The key as written.
    pub key: String,
    pub reference: FeatureRef,
    /// The options the user gave (a plain string value is `{"version": value}`).
    pub options: BTreeMap<String, OptionValue>,
    /// For a local feature, its folder (resolved, inside the project).
    pub folder: Option<PathBuf>,
}

/// Container settings of the Docker run kind (`privileged`, `init`, `capAdd`, `securityOpt`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Runtime {
    pub privileged: bool,
    pub init: bool,
    pub cap_add: Vec<String>,
    pub security_opt: Vec<String>,
}

/// A loaded devcontainer.json.
#[derive(Debug, Clone, PartialEq)]
pub struct DevContainer {
    /// The file.
    pub file: PathBuf,
    /// The project folder.
    pub project: PathBuf,
    pub name: Option<String>,
    pub source: Source,
    /// Sorted by key; the install order is [`crate::resolve_features`]'s.
    pub features: Vec<FeatureEntry>,
    /// Feature ids without versions, as written.
    pub override_feature_install_order: Vec<String>,
    pub lifecycle: Lifecycle,
    pub remote_user: Option<String>,
    pub container_user: Option<String>,
    pub update_remote_user_uid: Option<bool>,
    pub container_env: BTreeMap<String, String>,
    /// `None`: the variable is to be unset (`null` in the file).
    pub remote_env: BTreeMap<String, Option<String>>,
    pub mounts: Vec<Mount>,
    pub run_args: Vec<String>,
    /// `workspaceFolder` as written (substituted); `None` when the file sets none.
    pub workspace_folder: Option<String>,
    /// The folder in the container: `workspaceFolder` or the context's default.
    pub container_workspace_folder: String,
    pub workspace_mount: Option<String>,
    pub forward_ports: Vec<ForwardPort>,
    /// Keyed by port, range or pattern, as written.
    pub ports_attributes: BTreeMap<String, PortAttributes>,
    pub runtime: Runtime,
    /// `customizations.claude-vm`, as written (substituted), for the engine to read.
    pub claude_vm: Option<Value>,
    /// Properties nobody knows (`build.x` for keys of `build`), sorted.
    pub unknown_properties: Vec<String>,
    /// Known properties claude-vm does not support, sorted.
    pub unsupported_properties: Vec<String>,
    /// Properties holding a `${containerEnv:...}` left for when the container runs
    /// (empty once [`DevContainer::with_container_env`] substituted them).
    pub container_env_refs: Vec<String>,
    /// `${devcontainerId}`.
    pub devcontainer_id: String,
    raw: Map<String, Value>,
    context: Context,
}

/// Read and load the configuration found by [`crate::find`].
pub fn load(located: &Located, ctx: &Context) -> Result<DevContainer, Error> {
    let raw = jsonc::read_object(&located.config)?;
    build(located, ctx, raw)
}

/// Load a configuration from its text (as if read from `located.config`).
pub fn parse_str(text: &str, located: &Located, ctx: &Context) -> Result<DevContainer, Error> {
    let raw = jsonc::parse_object(&located.config, text)?;
    build(located, ctx, raw)
}

const LIFECYCLE: [&str; 6] = [
    "initializeCommand",
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
    "postStartCommand",
    "postAttachCommand",
];

const USED: &[&str] = &[
    "name",
    "image",
    "build",
    "dockerFile",
    "context",
    "dockerComposeFile",
    "service",
    "runServices",
    "features",
    "overrideFeatureInstallOrder",
    "initializeCommand",
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
    "postStartCommand",
    "postAttachCommand",
    "remoteUser",
    "containerUser",
    "updateRemoteUserUID",
    "containerEnv",
    "remoteEnv",
    "mounts",
    "runArgs",
    "workspaceFolder",
    "workspaceMount",
    "forwardPorts",
    "portsAttributes",
    "customizations",
    "privileged",
    "init",
    "capAdd",
    "securityOpt",
];

const IGNORED: &[&str] = &[
    "$schema",
    "hostRequirements",
    "shutdownAction",
    "otherPortsAttributes",
    "overrideCommand",
    "waitFor",
    "userEnvProbe",
    "secrets",
    "extensions",
    "settings",
    "devPort",
];

const UNSUPPORTED: &[&str] = &["appPort"];

const BUILD_KEYS: &[&str] = &[
    "dockerfile",
    "context",
    "args",
    "target",
    "cacheFrom",
    "options",
];

/// The key under `customizations` claude-vm reads.
pub const CUSTOMIZATIONS_KEY: &str = "claude-vm";

fn policy_of(key: &str) -> Policy {
    match key {
        "initializeCommand" => Policy {
            container_env: false,
            shell: true,
        },
        k if LIFECYCLE.contains(&k) => Policy {
            container_env: true,
            shell: true,
        },
        "remoteEnv" | "customizations" => Policy {
            container_env: true,
            shell: false,
        },
        _ => STRICT,
    }
}

struct Substituter<'a> {
    file: &'a Path,
    vars: Vars<'a>,
    refs: Vec<String>,
}

impl Substituter<'_> {
    fn string(&mut self, s: &str, property: &str, policy: Policy) -> Result<String, Error> {
        match self.vars.expand(s, policy) {
            Ok(expanded) => {
                if expanded.waits_for_container && !self.refs.iter().any(|r| r == property) {
                    self.refs.push(property.to_owned());
                }
                Ok(expanded.text)
            }
            Err((variable, problem)) => Err(Error::Variable {
                path: self.file.to_path_buf(),
                property: property.to_owned(),
                variable,
                problem,
            }),
        }
    }

    fn walk(&mut self, v: &mut Value, property: &str, policy: Policy) -> Result<(), Error> {
        match v {
            Value::String(s) => *s = self.string(s, property, policy)?,
            Value::Array(items) => {
                for (i, v) in items.iter_mut().enumerate() {
                    self.walk(v, &item(property, i), policy)?;
                }
            }
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    self.walk(v, &child(property, k), policy)?;
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
        Ok(())
    }
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `relative` resolved against `folder`, refused when it leaves `project`.
pub(crate) fn inside(
    file: &Path,
    project: &Path,
    folder: &Path,
    relative: &str,
    property: &str,
) -> Result<PathBuf, Error> {
    let resolved = normalize(&folder.join(relative));
    if resolved.starts_with(normalize(project)) {
        Ok(resolved)
    } else {
        Err(Error::OutsideProject {
            path: file.to_path_buf(),
            property: property.to_owned(),
            target: relative.to_owned(),
        })
    }
}

fn build(located: &Located, ctx: &Context, raw: Map<String, Value>) -> Result<DevContainer, Error> {
    let file = located.config.as_path();
    let typer = Typer { path: file };
    let local_workspace_folder = ctx
        .local_workspace_folder
        .clone()
        .unwrap_or_else(|| located.project.to_string_lossy().into_owned());
    let mut sub = Substituter {
        file,
        vars: Vars {
            local_env: &ctx.local_env,
            container_env: ctx.container_env.as_ref(),
            local_workspace_folder,
            container_workspace_folder: None,
            devcontainer_id: vars::devcontainer_id(&ctx.id_labels),
        },
        refs: Vec::new(),
    };

    // workspaceFolder first: ${containerWorkspaceFolder} everywhere else is its value.
    let workspace_folder = match raw.get("workspaceFolder") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(sub.string(s, "workspaceFolder", STRICT)?),
        Some(_) => return typer.fail("workspaceFolder", "a string"),
    };
    let container_workspace_folder = match &workspace_folder {
        Some(folder) => folder.clone(),
        None => match &ctx.default_workspace_folder {
            Some(folder) => folder.clone(),
            None => format!(
                "/workspaces/{}",
                sub.string("${localWorkspaceFolderBasename}", "workspaceFolder", STRICT)?
            ),
        },
    };
    sub.vars.container_workspace_folder = Some(container_workspace_folder.clone());

    let mut unknown = Vec::new();
    let mut unsupported = Vec::new();
    let mut map = Map::new();
    for (key, value) in &raw {
        if key == "workspaceFolder" {
            continue;
        }
        if USED.contains(&key.as_str()) {
            let mut value = value.clone();
            if key == "customizations" {
                // Only claude-vm's own part is read (and so substituted).
                let customizations = typer.object(&value, key)?;
                value = match customizations.get(CUSTOMIZATIONS_KEY) {
                    Some(ours) => {
                        let mut ours = ours.clone();
                        sub.walk(&mut ours, &child(key, CUSTOMIZATIONS_KEY), policy_of(key))?;
                        Value::Object(Map::from_iter([(CUSTOMIZATIONS_KEY.to_owned(), ours)]))
                    }
                    None => Value::Object(Map::new()),
                };
            } else {
                sub.walk(&mut value, key, policy_of(key))?;
            }
            map.insert(key.clone(), value);
        } else if UNSUPPORTED.contains(&key.as_str()) {
            unsupported.push(key.clone());
        } else if !IGNORED.contains(&key.as_str()) {
            unknown.push(key.clone());
        }
    }
    if let Some(Value::Object(build)) = map.get("build") {
        unknown.extend(
            build
                .keys()
                .filter(|k| !BUILD_KEYS.contains(&k.as_str()))
                .map(|k| child("build", k)),
        );
    }
    unknown.sort();
    unsupported.sort();

    let folder = located.folder();
    let get = |key: &str| map.get(key);
    let source = source(&typer, located, folder, &map)?;
    let features = features(&typer, located, folder, get("features"))?;

    let mut lifecycle = Lifecycle::default();
    for (key, slot) in [
        ("initializeCommand", &mut lifecycle.initialize),
        ("onCreateCommand", &mut lifecycle.on_create),
        ("updateContentCommand", &mut lifecycle.update_content),
        ("postCreateCommand", &mut lifecycle.post_create),
        ("postStartCommand", &mut lifecycle.post_start),
        ("postAttachCommand", &mut lifecycle.post_attach),
    ] {
        *slot = match get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(Command::from_json(&typer, v, key)?),
        };
    }

    let remote_env = match get("remoteEnv") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(env)) => env
            .iter()
            .map(|(k, v)| match v {
                Value::Null => Ok((k.clone(), None)),
                Value::String(s) => Ok((k.clone(), Some(s.clone()))),
                _ => typer.fail(&child("remoteEnv", k), "a string or null"),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return typer.fail("remoteEnv", "an object of strings (or null)"),
    };

    let mounts = match get("mounts") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| Mount::from_json(&typer, v, &item("mounts", i)))
            .collect::<Result<_, _>>()?,
        Some(_) => return typer.fail("mounts", "an array"),
    };

    let forward_ports = match get("forwardPorts") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| ForwardPort::from_json(&typer, v, &item("forwardPorts", i)))
            .collect::<Result<_, _>>()?,
        Some(_) => return typer.fail("forwardPorts", "an array"),
    };

    let ports_attributes = match get("portsAttributes") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(ports)) => ports
            .iter()
            .map(|(k, v)| {
                let property = child("portsAttributes", k);
                Ok((k.clone(), PortAttributes::from_json(&typer, v, &property)?))
            })
            .collect::<Result<_, Error>>()?,
        Some(_) => return typer.fail("portsAttributes", "an object"),
    };

    let claude_vm = match get("customizations") {
        Some(Value::Object(c)) => c.get(CUSTOMIZATIONS_KEY).cloned(),
        _ => None,
    };

    Ok(DevContainer {
        file: file.to_path_buf(),
        project: located.project.clone(),
        name: typer.opt_string(get("name"), "name")?,
        source,
        features,
        override_feature_install_order: typer.strings(
            get("overrideFeatureInstallOrder"),
            "overrideFeatureInstallOrder",
        )?,
        lifecycle,
        remote_user: typer.opt_string(get("remoteUser"), "remoteUser")?,
        container_user: typer.opt_string(get("containerUser"), "containerUser")?,
        update_remote_user_uid: typer
            .opt_bool(get("updateRemoteUserUID"), "updateRemoteUserUID")?,
        container_env: typer.string_map(get("containerEnv"), "containerEnv")?,
        remote_env,
        mounts,
        run_args: typer.strings(get("runArgs"), "runArgs")?,
        workspace_folder,
        container_workspace_folder,
        workspace_mount: typer.opt_string(get("workspaceMount"), "workspaceMount")?,
        forward_ports,
        ports_attributes,
        runtime: Runtime {
            privileged: typer
                .opt_bool(get("privileged"), "privileged")?
                .unwrap_or(false),
            init: typer.opt_bool(get("init"), "init")?.unwrap_or(false),
            cap_add: typer.strings(get("capAdd"), "capAdd")?,
            security_opt: typer.strings(get("securityOpt"), "securityOpt")?,
        },
        claude_vm,
        unknown_properties: unknown,
        unsupported_properties: unsupported,
        // Sorted: the order of a JSON object's keys depends on how serde_json was built.
        container_env_refs: {
            let mut refs = sub.refs;
            refs.sort();
            refs.dedup();
            refs
        },
        devcontainer_id: sub.vars.devcontainer_id,
        raw,
        context: ctx.clone(),
    })
}

fn source(
    typer: &Typer,
    located: &Located,
    folder: &Path,
    map: &Map<String, Value>,
) -> Result<Source, Error> {
    let file = typer.path;
    if let Some(compose) = map.get("dockerComposeFile").filter(|v| !v.is_null()) {
        return Ok(Source::Compose(Compose {
            files: typer.string_or_strings(Some(compose), "dockerComposeFile")?,
            service: typer.opt_string(map.get("service"), "service")?,
            run_services: typer.strings(map.get("runServices"), "runServices")?,
        }));
    }
    let build = match map.get("build") {
        None | Some(Value::Null) => None,
        Some(v) => Some(typer.object(v, "build")?),
    };
    let dockerfile = match build.and_then(|b| b.get("dockerfile")) {
        Some(v) => Some((typer.string(v, "build.dockerfile")?, "build.dockerfile")),
        None => typer
            .opt_string(map.get("dockerFile"), "dockerFile")?
            .map(|d| (d, "dockerFile")),
    };
    if let Some((dockerfile, property)) = dockerfile {
        let build = build.cloned().unwrap_or_default();
        let context = match build.get("context") {
            Some(v) => Some((typer.string(v, "build.context")?, "build.context")),
            None => typer
                .opt_string(map.get("context"), "context")?
                .map(|c| (c, "context")),
        };
        let (context, context_property) =
            context.unwrap_or_else(|| (".".to_owned(), "build.context"));
        return Ok(Source::Build(Build {
            dockerfile: inside(file, &located.project, folder, &dockerfile, property)?,
            context: inside(file, &located.project, folder, &context, context_property)?,
            args: typer.string_map(build.get("args"), "build.args")?,
            target: typer.opt_string(build.get("target"), "build.target")?,
            cache_from: typer.string_or_strings(build.get("cacheFrom"), "build.cacheFrom")?,
            options: typer.strings(build.get("options"), "build.options")?,
        }));
    }
    if build.is_some() {
        return typer.fail(
            "build.dockerfile",
            "the Dockerfile's path (relative to devcontainer.json)",
        );
    }
    match typer.opt_string(map.get("image"), "image")? {
        Some(image) if !image.trim().is_empty() => Ok(Source::Image(image)),
        _ => Err(Error::NoSource {
            path: file.to_path_buf(),
        }),
    }
}

fn features(
    typer: &Typer,
    located: &Located,
    folder: &Path,
    v: Option<&Value>,
) -> Result<Vec<FeatureEntry>, Error> {
    let file = typer.path;
    let map = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(v) => typer.object(v, "features")?,
    };
    let mut entries: Vec<FeatureEntry> = Vec::new();
    for (key, value) in map {
        let property = child("features", key);
        let reference = FeatureRef::parse(key).map_err(|problem| Error::FeatureReference {
            path: file.to_path_buf(),
            key: key.clone(),
            problem,
        })?;
        let options = match value {
            Value::Bool(false) => continue,
            Value::Bool(true) | Value::Null => BTreeMap::new(),
            Value::String(version) => {
                BTreeMap::from([("version".to_owned(), OptionValue::String(version.clone()))])
            }
            Value::Object(options) => options
                .iter()
                .map(|(name, v)| {
                    let value = match v {
                        Value::Bool(b) => OptionValue::Bool(*b),
                        Value::String(s) => OptionValue::String(s.clone()),
                        Value::Number(n) => OptionValue::String(n.to_string()),
                        _ => return typer.fail(&child(&property, name), "a string or a boolean"),
                    };
                    Ok((name.clone(), value))
                })
                .collect::<Result<_, _>>()?,
            _ => return typer.fail(&property, "an object of options, a version string or true"),
        };
        let folder = match &reference {
            FeatureRef::Local(path) => {
                Some(inside(file, &located.project, folder, path, &property)?)
            }
            _ => None,
        };
        if let Some(other) = entries.iter().find(|e| {
            e.reference.id().eq_ignore_ascii_case(&reference.id())
                || (e.folder.is_some() && e.folder == folder)
        }) {
            return Err(Error::DuplicateFeature {
                path: file.to_path_buf(),
                key: key.clone(),
                other: other.key.clone(),
            });
        }
        entries.push(FeatureEntry {
            key: key.clone(),
            reference,
            options,
            folder,
        });
    }
    entries.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(entries)
}

impl DevContainer {
    /// Refuse what claude-vm cannot run yet: Docker Compose configurations.
    pub fn ensure_supported(&self) -> Result<(), Error> {
        match self.source {
            Source::Compose(_) => Err(Error::ComposeUnsupported {
                path: self.file.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The one warning to print about what the file has that claude-vm ignores, if anything.
    pub fn warning(&self) -> Option<String> {
        let mut parts = Vec::new();
        if !self.unknown_properties.is_empty() {
            parts.push(format!(
                "unknown properties {}",
                self.unknown_properties.join(", ")
            ));
        }
        if !self.unsupported_properties.is_empty() {
            parts.push(format!(
                "unsupported properties {}",
                self.unsupported_properties.join(", ")
            ));
        }
        (!parts.is_empty())
            .then(|| format!("{}: ignoring {}", self.file.display(), parts.join(" and ")))
    }

    /// The bind mounts (host paths), which the engine may refuse or ask about.
    pub fn bind_mounts(&self) -> impl Iterator<Item = &Mount> {
        self.mounts.iter().filter(|m| m.is_bind())
    }

    /// The same configuration with `${containerEnv:...}` substituted from the running
    /// container's environment.
    pub fn with_container_env(&self, env: BTreeMap<String, String>) -> Result<DevContainer, Error> {
        let ctx = Context {
            container_env: Some(env),
            ..self.context.clone()
        };
        let located = Located {
            project: self.project.clone(),
            config: self.file.clone(),
            name: None,
        };
        build(&located, &ctx, self.raw.clone())
    }

    /// The folder of devcontainer.json (relative paths are resolved against it).
    pub fn folder(&self) -> &Path {
        self.file.parent().unwrap_or(&self.project)
    }
}

/// For tests: a problem of a `${...}`.
#[cfg(test)]
pub(crate) fn variable_problem(e: &Error) -> Option<(&str, &str, &crate::VariableProblem)> {
    match e {
        Error::Variable {
            property,
            variable,
            problem,
            ..
        } => Some((property, variable, problem)),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
