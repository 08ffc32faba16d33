//! `devcontainer-feature.json`: what a feature says of itself.
//!
//! Read as JSON with comments like devcontainer.json. Kept: what installing and running
//! the feature needs (id, version, options, containerEnv, installsAfter, dependsOn,
//! entrypoint, mounts, privileged, init, capAdd, securityOpt). Descriptive properties
//! (documentationURL, keywords, legacyIds, customizations, ...) and unknown ones are
//! ignored: the file is the feature author's, not the user's, so it is not worth a warning.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::Error;
use crate::config::OptionValue;
use crate::jsonc::{self, Typer, child, item};
use crate::mount::Mount;

/// The name of the file in a feature's folder.
pub const METADATA_FILE: &str = "devcontainer-feature.json";

/// An option's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionType {
    Boolean,
    String,
}

/// One option a feature takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionSpec {
    pub kind: OptionType,
    pub default: Option<OptionValue>,
    /// The only values allowed (`enum`); empty when any is.
    pub allowed: Vec<String>,
    /// Suggested values (`proposals`); others are allowed too.
    pub proposals: Vec<String>,
    pub description: Option<String>,
}

/// A feature's devcontainer-feature.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureMetadata {
    pub id: String,
    pub version: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub options: BTreeMap<String, OptionSpec>,
    /// Set as `ENV` before the feature's install script runs (Docker expands `${VAR}`).
    pub container_env: BTreeMap<String, String>,
    /// Ids (without versions) of features to install first when they are used too.
    pub installs_after: Vec<String>,
    /// Features this one needs, with the options they need (keys as written).
    pub depends_on: BTreeMap<String, Value>,
    /// A script to run at container start.
    pub entrypoint: Option<String>,
    pub mounts: Vec<Mount>,
    pub privileged: bool,
    pub init: bool,
    pub cap_add: Vec<String>,
    pub security_opt: Vec<String>,
}

impl FeatureMetadata {
    /// Read `devcontainer-feature.json` from a feature's folder.
    pub fn read(folder: &Path) -> Result<FeatureMetadata, Error> {
        let path = folder.join(METADATA_FILE);
        let map = jsonc::read_object(&path)?;
        Self::from_map(&path, &map)
    }

    pub(crate) fn from_map(
        path: &Path,
        map: &Map<String, Value>,
    ) -> Result<FeatureMetadata, Error> {
        let typer = Typer { path };
        let Some(id) = typer.opt_string(map.get("id"), "id")? else {
            return typer.fail("id", "the feature's id (a string)");
        };
        let mut options = BTreeMap::new();
        match map.get("options") {
            None | Some(Value::Null) => {}
            Some(Value::Object(specs)) => {
                for (name, spec) in specs {
                    let property = child("options", name);
                    options.insert(name.clone(), option_spec(&typer, spec, &property)?);
                }
            }
            Some(_) => return typer.fail("options", "an object of options"),
        }
        let depends_on = match map.get("dependsOn") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(deps)) => deps.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Some(_) => return typer.fail("dependsOn", "an object of features"),
        };
        let mounts = match map.get("mounts") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| Mount::from_json(&typer, v, &item("mounts", i)))
                .collect::<Result<_, _>>()?,
            Some(_) => return typer.fail("mounts", "an array"),
        };
        Ok(FeatureMetadata {
            id,
            version: typer.opt_string(map.get("version"), "version")?,
            name: typer.opt_string(map.get("name"), "name")?,
            description: typer.opt_string(map.get("description"), "description")?,
            options,
            container_env: typer.string_map(map.get("containerEnv"), "containerEnv")?,
            installs_after: typer.strings(map.get("installsAfter"), "installsAfter")?,
            depends_on,
            entrypoint: typer.opt_string(map.get("entrypoint"), "entrypoint")?,
            mounts,
            privileged: typer
                .opt_bool(map.get("privileged"), "privileged")?
                .unwrap_or(false),
            init: typer.opt_bool(map.get("init"), "init")?.unwrap_or(false),
            cap_add: typer.strings(map.get("capAdd"), "capAdd")?,
            security_opt: typer.strings(map.get("securityOpt"), "securityOpt")?,
        })
    }
}

fn option_spec(typer: &Typer, v: &Value, property: &str) -> Result<OptionSpec, Error> {
    let spec = typer.object(v, property)?;
    let kind = match spec.get("type") {
        Some(Value::String(t)) if t == "boolean" => OptionType::Boolean,
        Some(Value::String(t)) if t == "string" => OptionType::String,
        _ => return typer.fail(&child(property, "type"), "\"boolean\" or \"string\""),
    };
    let default = match spec.get("default") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(OptionValue::Bool(*b)),
        Some(Value::String(s)) => Some(OptionValue::String(s.clone())),
        Some(Value::Number(n)) => Some(OptionValue::String(n.to_string())),
        Some(_) => return typer.fail(&child(property, "default"), "a string or a boolean"),
    };
    Ok(OptionSpec {
        kind,
        default,
        allowed: typer.strings(spec.get("enum"), &child(property, "enum"))?,
        proposals: typer.strings(spec.get("proposals"), &child(property, "proposals"))?,
        description: typer.opt_string(spec.get("description"), &child(property, "description"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_full_feature_file() {
        let text = r#"{
            // comments are allowed here too
            "id": "hello",
            "version": "1.0.2",
            "name": "Hello",
            "documentationURL": "https://example.com",
            "options": {
                "greeting": {"type": "string", "default": "hey", "proposals": ["hey", "hello"], "description": "Greeting"},
                "loud": {"type": "boolean", "default": false},
                "flavor": {"type": "string", "enum": ["a", "b"], "default": "a"},
            },
            "containerEnv": {"PATH": "/opt/hello/bin:${PATH}"},
            "installsAfter": ["ghcr.io/devcontainers/features/common-utils"],
            "dependsOn": {"ghcr.io/devcontainers/features/git:1": {}},
            "entrypoint": "/usr/local/share/hello-init.sh",
            "mounts": [{"source": "hello-${devcontainerId}", "target": "/var/hello", "type": "volume"}],
            "privileged": true,
            "capAdd": ["SYS_PTRACE"],
        }"#;
        let path = Path::new("/f/devcontainer-feature.json");
        let map = jsonc::parse_object(path, text).unwrap();
        let m = FeatureMetadata::from_map(path, &map).unwrap();
        assert_eq!(m.id, "hello");
        assert_eq!(m.version.as_deref(), Some("1.0.2"));
        assert_eq!(m.options.len(), 3);
        assert_eq!(m.options["loud"].kind, OptionType::Boolean);
        assert_eq!(m.options["loud"].default, Some(OptionValue::Bool(false)));
        assert_eq!(m.options["flavor"].allowed, ["a", "b"]);
        assert_eq!(m.options["greeting"].proposals, ["hey", "hello"]);
        assert_eq!(m.container_env["PATH"], "/opt/hello/bin:${PATH}");
        assert_eq!(
            m.installs_after,
            ["ghcr.io/devcontainers/features/common-utils"]
        );
        assert!(
            m.depends_on
                .contains_key("ghcr.io/devcontainers/features/git:1")
        );
        assert_eq!(
            m.mounts[0].source.as_deref(),
            Some("hello-${devcontainerId}")
        );
        assert!(m.privileged);
        assert_eq!(m.cap_add, ["SYS_PTRACE"]);
    }

    #[test]
    fn bad_files_name_the_property() {
        let path = Path::new("/f/devcontainer-feature.json");
        let cases = [
            (r#"{}"#, "id"),
            (r#"{"id": 1}"#, "id"),
            (
                r#"{"id": "x", "options": {"a": {"type": "number"}}}"#,
                "options.a.type",
            ),
            (
                r#"{"id": "x", "options": {"a": {"type": "string", "default": []}}}"#,
                "options.a.default",
            ),
            (r#"{"id": "x", "installsAfter": "y"}"#, "installsAfter"),
            (r#"{"id": "x", "containerEnv": {"A": 1}}"#, "containerEnv.A"),
        ];
        for (text, property) in cases {
            let map = jsonc::parse_object(path, text).unwrap();
            match FeatureMetadata::from_map(path, &map) {
                Err(Error::Type { property: p, .. }) => assert_eq!(p, property, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
