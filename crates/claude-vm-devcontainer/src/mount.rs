//! Mounts, in the string form (`docker run --mount` syntax) or the object form.
//!
//! A bind mount reaches into the machine Docker runs on, which for a remote provider is not
//! this machine and for any provider is outside the workspace; [`Mount::is_bind`] lets the
//! engine refuse or confirm those, while volumes are the workspace's own.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::Error;
use crate::jsonc::{Typer, child};

/// What a mount is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A path of the Docker host.
    Bind,
    /// A named (or anonymous) volume: Docker's default.
    Volume,
    Tmpfs,
    /// Any other type Docker may know (`image`, `npipe`, `cluster`).
    Other(String),
}

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountKind,
    /// The host path or volume name; `None` for an anonymous volume or a tmpfs.
    pub source: Option<String>,
    /// The path inside the container.
    pub target: String,
    pub read_only: bool,
    /// Every other key (`consistency`, `volume-opt`, `bind-propagation`, ...), as written.
    pub options: BTreeMap<String, String>,
}

impl Mount {
    /// A bind mount of a host path.
    pub fn is_bind(&self) -> bool {
        self.kind == MountKind::Bind
    }

    pub(crate) fn from_json(typer: &Typer, v: &Value, property: &str) -> Result<Mount, Error> {
        const EXPECTED: &str =
            "a \"type=...,source=...,target=...\" string or an object with type, source and target";
        match v {
            Value::String(s) => Self::parse(s)
                .ok_or(())
                .or_else(|()| typer.fail(property, EXPECTED)),
            Value::Object(map) => {
                let kind = match typer.opt_string(map.get("type"), &child(property, "type"))? {
                    Some(kind) => kind_of(&kind),
                    None => MountKind::Volume,
                };
                let source = typer.opt_string(map.get("source"), &child(property, "source"))?;
                let Some(target) =
                    typer.opt_string(map.get("target"), &child(property, "target"))?
                else {
                    return typer.fail(&child(property, "target"), "the path inside the container");
                };
                Ok(Mount {
                    kind,
                    source: source.filter(|s| !s.is_empty()),
                    target,
                    read_only: false,
                    options: BTreeMap::new(),
                })
            }
            _ => typer.fail(property, EXPECTED),
        }
    }

    /// The `--mount` string form; `None` when it has no target.
    pub fn parse(s: &str) -> Option<Mount> {
        let mut kind = MountKind::Volume;
        let mut source = None;
        let mut target = None;
        let mut read_only = false;
        let mut options = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (part, None),
            };
            match (key.to_ascii_lowercase().as_str(), value) {
                ("type", Some(v)) => kind = kind_of(v),
                ("source" | "src", Some(v)) => {
                    source = Some(v.to_owned()).filter(|v| !v.is_empty())
                }
                ("target" | "destination" | "dst", Some(v)) => target = Some(v.to_owned()),
                ("readonly" | "ro", v) => read_only = !matches!(v, Some("false" | "0")),
                (_, v) => {
                    options.insert(key.to_owned(), v.unwrap_or("").to_owned());
                }
            }
        }
        Some(Mount {
            kind,
            source,
            target: target.filter(|t| !t.is_empty())?,
            read_only,
            options,
        })
    }
}

fn kind_of(s: &str) -> MountKind {
    match s.to_ascii_lowercase().as_str() {
        "bind" => MountKind::Bind,
        "volume" => MountKind::Volume,
        "tmpfs" => MountKind::Tmpfs,
        other => MountKind::Other(other.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    /// (as written, kind, source, target, read only, a bind)
    #[test]
    fn both_forms_are_classified() {
        let typer = Typer {
            path: Path::new("dc.json"),
        };
        let cases: &[(Value, MountKind, Option<&str>, &str, bool)] = &[
            (
                json!(
                    "source=${localEnv:HOME}/.ssh,target=/home/vscode/.ssh,type=bind,consistency=cached"
                ),
                MountKind::Bind,
                Some("${localEnv:HOME}/.ssh"),
                "/home/vscode/.ssh",
                false,
            ),
            (
                json!("type=volume,source=cache,target=/cache"),
                MountKind::Volume,
                Some("cache"),
                "/cache",
                false,
            ),
            (
                json!("target=/anon"),
                MountKind::Volume,
                None,
                "/anon",
                false,
            ),
            (
                json!("src=/etc/x,dst=/x,type=bind,readonly"),
                MountKind::Bind,
                Some("/etc/x"),
                "/x",
                true,
            ),
            (
                json!("type=bind,src=/a,destination=/b,ro=false"),
                MountKind::Bind,
                Some("/a"),
                "/b",
                false,
            ),
            (
                json!("type=tmpfs,target=/tmp"),
                MountKind::Tmpfs,
                None,
                "/tmp",
                false,
            ),
            (
                json!({"source": "data", "target": "/data", "type": "volume"}),
                MountKind::Volume,
                Some("data"),
                "/data",
                false,
            ),
            (
                json!({"source": "/var/run/docker.sock", "target": "/var/run/docker.sock", "type": "bind"}),
                MountKind::Bind,
                Some("/var/run/docker.sock"),
                "/var/run/docker.sock",
                false,
            ),
        ];
        for (v, kind, source, target, read_only) in cases {
            let m = Mount::from_json(&typer, v, "mounts[0]").unwrap();
            assert_eq!(&m.kind, kind, "{v}");
            assert_eq!(m.source.as_deref(), *source, "{v}");
            assert_eq!(m.target, *target, "{v}");
            assert_eq!(m.read_only, *read_only, "{v}");
            assert_eq!(m.is_bind(), *kind == MountKind::Bind, "{v}");
        }
        let m = Mount::parse("type=bind,source=/a,target=/b,consistency=cached").unwrap();
        assert_eq!(m.options["consistency"], "cached");
    }

    #[test]
    fn a_mount_needs_a_target() {
        let typer = Typer {
            path: Path::new("dc.json"),
        };
        for v in [
            json!("source=a,type=volume"),
            json!({"source": "a", "type": "volume"}),
            json!(3),
        ] {
            assert!(
                matches!(Mount::from_json(&typer, &v, "mounts[2]"), Err(Error::Type { property, .. }) if property.starts_with("mounts[2]")),
                "{v}"
            );
        }
    }
}
