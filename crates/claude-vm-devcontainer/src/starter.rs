//! A starter devcontainer.json for a project (`claude-vm devcontainer init`).
//!
//! The project's stack is told by its marker files, first match wins, in this order:
//! `Cargo.toml` (Rust), `package.json` (Node; TypeScript with a `tsconfig.json`),
//! `pyproject.toml`/`requirements.txt`/`setup.py` (Python), `go.mod` (Go), `Gemfile`
//! (Ruby), `pom.xml`/`build.gradle`/`build.gradle.kts` (Java); anything else gets the
//! plain Debian image. Each stack gets the matching `mcr.microsoft.com/devcontainers`
//! image and, when a lock file (or requirements file) says how, a `postCreateCommand`
//! that installs the dependencies. The text is JSON with comments for the user to edit;
//! nothing is written here, the caller writes [`Starter::text`] to [`Starter::path`].

use std::path::{Path, PathBuf};

/// A project's stack, as its files tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    Rust,
    Node,
    TypeScript,
    Python,
    Go,
    Ruby,
    Java,
    /// Nothing recognised.
    Other,
}

impl Stack {
    /// The dev container image for the stack.
    pub fn image(self) -> &'static str {
        match self {
            Stack::Rust => "mcr.microsoft.com/devcontainers/rust:1",
            Stack::Node => "mcr.microsoft.com/devcontainers/javascript-node:22",
            Stack::TypeScript => "mcr.microsoft.com/devcontainers/typescript-node:22",
            Stack::Python => "mcr.microsoft.com/devcontainers/python:3.12",
            Stack::Go => "mcr.microsoft.com/devcontainers/go:1",
            Stack::Ruby => "mcr.microsoft.com/devcontainers/ruby:3",
            Stack::Java => "mcr.microsoft.com/devcontainers/java:21",
            Stack::Other => "mcr.microsoft.com/devcontainers/base:bookworm",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Stack::Rust => "a Rust",
            Stack::Node => "a Node.js",
            Stack::TypeScript => "a TypeScript",
            Stack::Python => "a Python",
            Stack::Go => "a Go",
            Stack::Ruby => "a Ruby",
            Stack::Java => "a Java",
            Stack::Other => "no particular",
        }
    }
}

/// A starter configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Starter {
    pub stack: Stack,
    /// The file that told the stack (`Cargo.toml`), if any.
    pub marker: Option<&'static str>,
    pub image: &'static str,
    pub post_create: Option<String>,
    /// Where `init` writes it: `<project>/.devcontainer/devcontainer.json`.
    pub path: PathBuf,
    /// The devcontainer.json text.
    pub text: String,
}

/// Detect the project's stack and write its starter configuration.
pub fn starter(project: &Path) -> Starter {
    let has = |name: &str| project.join(name).is_file();
    let (stack, marker) = detect(&has);
    let post_create = post_create(stack, &has);
    let name = project
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "project".to_owned());
    let text = render(&name, stack, marker, post_create.as_deref());
    Starter {
        stack,
        marker,
        image: stack.image(),
        post_create,
        path: project.join(".devcontainer").join("devcontainer.json"),
        text,
    }
}

fn detect(has: &dyn Fn(&str) -> bool) -> (Stack, Option<&'static str>) {
    let markers: &[(&str, Stack)] = &[
        ("Cargo.toml", Stack::Rust),
        ("package.json", Stack::Node),
        ("pyproject.toml", Stack::Python),
        ("requirements.txt", Stack::Python),
        ("setup.py", Stack::Python),
        ("go.mod", Stack::Go),
        ("Gemfile", Stack::Ruby),
        ("pom.xml", Stack::Java),
        ("build.gradle", Stack::Java),
        ("build.gradle.kts", Stack::Java),
    ];
    for &(marker, stack) in markers {
        if has(marker) {
            let stack = if stack == Stack::Node && has("tsconfig.json") {
                Stack::TypeScript
            } else {
                stack
            };
            return (stack, Some(marker));
        }
    }
    (Stack::Other, None)
}

fn post_create(stack: Stack, has: &dyn Fn(&str) -> bool) -> Option<String> {
    let command = match stack {
        Stack::Rust if has("Cargo.lock") => "cargo fetch",
        Stack::Node | Stack::TypeScript => {
            if has("package-lock.json") {
                "npm ci"
            } else if has("pnpm-lock.yaml") {
                "corepack enable && pnpm install --frozen-lockfile"
            } else if has("yarn.lock") {
                "yarn install --frozen-lockfile"
            } else {
                return None;
            }
        }
        Stack::Python => {
            if has("uv.lock") {
                "pip install --user uv && uv sync"
            } else if has("poetry.lock") {
                "pip install --user poetry && poetry install"
            } else if has("requirements.txt") {
                "pip install --user -r requirements.txt"
            } else if has("pyproject.toml") || has("setup.py") {
                "pip install --user -e ."
            } else {
                return None;
            }
        }
        Stack::Go if has("go.sum") => "go mod download",
        Stack::Ruby if has("Gemfile.lock") => "bundle install",
        _ => return None,
    };
    Some(command.to_owned())
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn render(name: &str, stack: Stack, marker: Option<&str>, post_create: Option<&str>) -> String {
    let mut t = String::new();
    t.push_str("// Dev container configuration, generated by `claude-vm devcontainer init`.\n");
    match marker {
        Some(marker) => t.push_str(&format!(
            "// It found {} project ({marker}) and picked the image below.\n",
            stack.label()
        )),
        None => t.push_str("// It found no particular stack, so it picked a plain Debian image.\n"),
    }
    t.push_str("// This file is yours: edit it and commit it. The format is described at\n");
    t.push_str("// https://containers.dev/implementors/json_reference/ (comments are allowed).\n");
    t.push_str("{\n");
    t.push_str(&format!("  \"name\": {},\n", json_string(name)));
    t.push_str(&format!("  \"image\": {},\n", json_string(stack.image())));
    t.push_str(
        "\n  // Add tools as features: folders next to this file, referenced as \"./name\".\n",
    );
    t.push_str("  \"features\": {},\n");
    match post_create {
        Some(command) => {
            t.push_str("\n  // Runs once, after the container is created.\n");
            t.push_str(&format!(
                "  \"postCreateCommand\": {},\n",
                json_string(command)
            ));
        }
        None => {
            t.push_str(
                "\n  // Runs once, after the container is created, e.g. to install dependencies.\n",
            );
            t.push_str("  // \"postCreateCommand\": \"make deps\",\n");
        }
    }
    t.push_str(
        "\n  // Environment variables of the container; ${localEnv:NAME} reads this machine's.\n",
    );
    t.push_str("  \"containerEnv\": {},\n");
    t.push_str("\n  \"customizations\": {\n");
    t.push_str("    // Settings for claude-vm itself.\n");
    t.push_str("    \"claude-vm\": {}\n");
    t.push_str("  }\n");
    t.push_str("}\n");
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Source, parse_str};
    use crate::find::Located;
    use crate::vars::Context;

    fn project(name: &str, files: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(name);
        std::fs::create_dir(&root).unwrap();
        for file in files {
            std::fs::write(root.join(file), "").unwrap();
        }
        (dir, root)
    }

    /// (files, stack, image, postCreateCommand)
    #[test]
    fn detection_table() {
        let cases: &[(&[&str], Stack, &str, Option<&str>)] = &[
            (
                &["Cargo.toml", "Cargo.lock"],
                Stack::Rust,
                "mcr.microsoft.com/devcontainers/rust:1",
                Some("cargo fetch"),
            ),
            (
                &["Cargo.toml"],
                Stack::Rust,
                "mcr.microsoft.com/devcontainers/rust:1",
                None,
            ),
            (
                &["package.json", "package-lock.json"],
                Stack::Node,
                "mcr.microsoft.com/devcontainers/javascript-node:22",
                Some("npm ci"),
            ),
            (
                &["package.json", "yarn.lock"],
                Stack::Node,
                "mcr.microsoft.com/devcontainers/javascript-node:22",
                Some("yarn install --frozen-lockfile"),
            ),
            (
                &["package.json", "tsconfig.json", "pnpm-lock.yaml"],
                Stack::TypeScript,
                "mcr.microsoft.com/devcontainers/typescript-node:22",
                Some("corepack enable && pnpm install --frozen-lockfile"),
            ),
            (
                &["pyproject.toml"],
                Stack::Python,
                "mcr.microsoft.com/devcontainers/python:3.12",
                Some("pip install --user -e ."),
            ),
            (
                &["pyproject.toml", "uv.lock"],
                Stack::Python,
                "mcr.microsoft.com/devcontainers/python:3.12",
                Some("pip install --user uv && uv sync"),
            ),
            (
                &["requirements.txt"],
                Stack::Python,
                "mcr.microsoft.com/devcontainers/python:3.12",
                Some("pip install --user -r requirements.txt"),
            ),
            (
                &["setup.py"],
                Stack::Python,
                "mcr.microsoft.com/devcontainers/python:3.12",
                Some("pip install --user -e ."),
            ),
            (
                &["go.mod", "go.sum"],
                Stack::Go,
                "mcr.microsoft.com/devcontainers/go:1",
                Some("go mod download"),
            ),
            (
                &["Gemfile", "Gemfile.lock"],
                Stack::Ruby,
                "mcr.microsoft.com/devcontainers/ruby:3",
                Some("bundle install"),
            ),
            (
                &["pom.xml"],
                Stack::Java,
                "mcr.microsoft.com/devcontainers/java:21",
                None,
            ),
            (
                &["build.gradle"],
                Stack::Java,
                "mcr.microsoft.com/devcontainers/java:21",
                None,
            ),
            (
                &["README.md"],
                Stack::Other,
                "mcr.microsoft.com/devcontainers/base:bookworm",
                None,
            ),
            // The first marker wins.
            (
                &["Cargo.toml", "package.json"],
                Stack::Rust,
                "mcr.microsoft.com/devcontainers/rust:1",
                None,
            ),
        ];
        for (files, stack, image, post_create) in cases {
            let (_dir, root) = project("demo", files);
            let s = starter(&root);
            assert_eq!(s.stack, *stack, "{files:?}");
            assert_eq!(s.image, *image, "{files:?}");
            assert_eq!(s.post_create.as_deref(), *post_create, "{files:?}");
            assert_eq!(s.path, root.join(".devcontainer/devcontainer.json"));
        }
    }

    /// The text parses back through the crate's own parser, naming the right image, the
    /// command, and claude-vm's customizations.
    #[test]
    fn cargo_node_and_python_starters_parse_back() {
        let cases: &[(&[&str], &str, Option<&str>)] = &[
            (
                &["Cargo.toml", "Cargo.lock"],
                "mcr.microsoft.com/devcontainers/rust:1",
                Some("cargo fetch"),
            ),
            (
                &["package.json", "package-lock.json"],
                "mcr.microsoft.com/devcontainers/javascript-node:22",
                Some("npm ci"),
            ),
            (
                &["pyproject.toml"],
                "mcr.microsoft.com/devcontainers/python:3.12",
                Some("pip install --user -e ."),
            ),
            (
                &["requirements.txt"],
                "mcr.microsoft.com/devcontainers/python:3.12",
                Some("pip install --user -r requirements.txt"),
            ),
            (&[], "mcr.microsoft.com/devcontainers/base:bookworm", None),
        ];
        for (files, image, post_create) in cases {
            let (_dir, root) = project("my \"odd\" proj", files);
            let s = starter(&root);
            assert!(s.text.starts_with("// "), "{}", s.text);
            assert!(s.text.contains("claude-vm devcontainer init"));
            let located = Located {
                project: root.clone(),
                config: s.path.clone(),
                name: None,
            };
            let dc = parse_str(&s.text, &located, &Context::default()).unwrap();
            assert_eq!(dc.source, Source::Image(image.to_string()), "{files:?}");
            assert_eq!(dc.name.as_deref(), Some("my \"odd\" proj"));
            assert_eq!(
                dc.lifecycle.post_create,
                post_create.map(|c| crate::Command::Shell(c.to_owned())),
                "{files:?}"
            );
            assert_eq!(dc.claude_vm, Some(serde_json::json!({})));
            assert!(
                dc.unknown_properties.is_empty(),
                "{:?}",
                dc.unknown_properties
            );
            assert!(dc.warning().is_none());
            assert!(dc.features.is_empty());
        }
    }
}
