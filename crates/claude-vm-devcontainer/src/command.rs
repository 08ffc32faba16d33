//! Lifecycle commands (`onCreateCommand`, `postCreateCommand`, ...) in their three forms.
//!
//! The spec's forms decide how a command runs, so they stay apart in the model: a string
//! goes through a shell (`/bin/sh -c`), an array is a program and its arguments without a
//! shell, and an object holds named commands (each a string or an array) run in parallel.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::Error;
use crate::jsonc::{Typer, child, item};

/// One lifecycle command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A string: run by `/bin/sh -c`.
    Shell(String),
    /// An array: the program and its arguments, no shell.
    Exec(Vec<String>),
    /// An object: named commands run in parallel (each `Shell` or `Exec`), by name.
    Parallel(BTreeMap<String, Command>),
}

impl Command {
    pub(crate) fn from_json(typer: &Typer, v: &Value, property: &str) -> Result<Command, Error> {
        match v {
            Value::Object(map) => {
                let mut named = BTreeMap::new();
                for (name, v) in map {
                    let property = child(property, name);
                    let command = match v {
                        Value::String(_) | Value::Array(_) => Self::from_json(typer, v, &property)?,
                        _ => return typer.fail(&property, "a string or an array of strings"),
                    };
                    named.insert(name.clone(), command);
                }
                Ok(Command::Parallel(named))
            }
            Value::String(s) => Ok(Command::Shell(s.clone())),
            Value::Array(items) => {
                let args = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| typer.string(v, &item(property, i)))
                    .collect::<Result<Vec<_>, _>>()?;
                if args.is_empty() {
                    return typer.fail(property, "a non-empty array (the program first)");
                }
                Ok(Command::Exec(args))
            }
            _ => typer.fail(
                property,
                "a string, an array of strings or an object of named commands",
            ),
        }
    }
}

/// The lifecycle commands of a configuration, in the spec's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// Runs on this machine, before anything else (claude-vm's caller decides whether to).
    pub initialize: Option<Command>,
    pub on_create: Option<Command>,
    pub update_content: Option<Command>,
    pub post_create: Option<Command>,
    pub post_start: Option<Command>,
    pub post_attach: Option<Command>,
}

/// Which lifecycle step a command belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    OnCreate,
    UpdateContent,
    PostCreate,
    PostStart,
    PostAttach,
}

impl Step {
    /// The property's name in devcontainer.json.
    pub fn property(self) -> &'static str {
        match self {
            Step::OnCreate => "onCreateCommand",
            Step::UpdateContent => "updateContentCommand",
            Step::PostCreate => "postCreateCommand",
            Step::PostStart => "postStartCommand",
            Step::PostAttach => "postAttachCommand",
        }
    }
}

impl Lifecycle {
    /// The commands run inside the container, in order: on create, update content, post
    /// create (these three once, when the container is made), post start (every start),
    /// post attach (every attach).
    pub fn in_container(&self) -> impl Iterator<Item = (Step, &Command)> {
        [
            (Step::OnCreate, &self.on_create),
            (Step::UpdateContent, &self.update_content),
            (Step::PostCreate, &self.post_create),
            (Step::PostStart, &self.post_start),
            (Step::PostAttach, &self.post_attach),
        ]
        .into_iter()
        .filter_map(|(step, command)| command.as_ref().map(|c| (step, c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    #[test]
    fn the_three_forms() {
        let typer = Typer {
            path: Path::new("dc.json"),
        };
        let cases = [
            (json!("npm ci"), Command::Shell("npm ci".into())),
            (
                json!(["cargo", "fetch"]),
                Command::Exec(vec!["cargo".into(), "fetch".into()]),
            ),
            (
                json!({"deps": "npm ci", "db": ["./db.sh", "init"]}),
                Command::Parallel(BTreeMap::from([
                    (
                        "db".into(),
                        Command::Exec(vec!["./db.sh".into(), "init".into()]),
                    ),
                    ("deps".into(), Command::Shell("npm ci".into())),
                ])),
            ),
        ];
        for (v, want) in cases {
            assert_eq!(
                Command::from_json(&typer, &v, "postCreateCommand").unwrap(),
                want
            );
        }
    }

    #[test]
    fn bad_forms_name_the_property() {
        let typer = Typer {
            path: Path::new("dc.json"),
        };
        let cases = [
            (json!(42), "postCreateCommand"),
            (json!([]), "postCreateCommand"),
            (json!(["a", 1]), "postCreateCommand[1]"),
            (json!({"a": {"b": "c"}}), "postCreateCommand.a"),
            (json!({"a": [true]}), "postCreateCommand.a[0]"),
        ];
        for (v, property) in cases {
            match Command::from_json(&typer, &v, "postCreateCommand") {
                Err(Error::Type { property: p, .. }) => assert_eq!(p, property, "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
    }

    #[test]
    fn in_container_keeps_the_spec_order() {
        let lifecycle = Lifecycle {
            initialize: Some(Command::Shell("i".into())),
            post_start: Some(Command::Shell("s".into())),
            on_create: Some(Command::Shell("o".into())),
            ..Lifecycle::default()
        };
        let steps: Vec<_> = lifecycle
            .in_container()
            .map(|(s, _)| s.property())
            .collect();
        assert_eq!(steps, ["onCreateCommand", "postStartCommand"]);
    }
}
