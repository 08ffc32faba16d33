//! The crate's one error type.
//!
//! Every failure names the file and, where there is one, the property (`mounts[1]`,
//! `features["./hello"]`) it comes from, so a user can go straight to the line to fix;
//! [`Error::hint`] says what to do about it, in the words the CLI prints after `hint:`.

use std::fmt;
use std::path::PathBuf;

/// What a `${...}` in a string value got wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariableProblem {
    /// `${name}` is not a variable of the devcontainer.json format.
    Unknown,
    /// A `${` without its closing `}`.
    Unterminated,
    /// `${localEnv:}` or `${containerEnv:}`: no variable name.
    NoName,
    /// `${containerEnv:...}` where the container does not exist yet (image, build, mounts...).
    ContainerEnvTooEarly,
    /// `${containerWorkspaceFolder...}` inside `workspaceFolder` itself.
    SelfReference,
}

impl fmt::Display for VariableProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VariableProblem::Unknown => "is not a known variable",
            VariableProblem::Unterminated => "has no closing `}`",
            VariableProblem::NoName => "names no variable",
            VariableProblem::ContainerEnvTooEarly => {
                "reads the container's environment, which does not exist yet where this property is used"
            }
            VariableProblem::SelfReference => "refers to the property it is in",
        })
    }
}

/// Everything that can go wrong, each with its context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{project} has several dev container configurations ({}); pass --devcontainer NAME to pick one",
        names.join(", ")
    )]
    SeveralConfigs {
        project: PathBuf,
        names: Vec<String>,
    },
    #[error(
        "{project} has no dev container configuration named {name:?}{}",
        known_names(names)
    )]
    NoSuchConfig {
        project: PathBuf,
        name: String,
        names: Vec<String>,
    },
    #[error(
        "invalid dev container configuration name {name:?}: it must be one folder name below .devcontainer/"
    )]
    BadConfigName { name: String },
    #[error("{path}:{line}:{column}: invalid JSON: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: the file must hold one JSON object")]
    NotAnObject { path: PathBuf },
    #[error("{path}: {property} must be {expected}")]
    Type {
        path: PathBuf,
        property: String,
        expected: &'static str,
    },
    #[error("{path}: no image, build.dockerfile or dockerComposeFile says what to run")]
    NoSource { path: PathBuf },
    #[error("{path}: Docker Compose configurations are not supported yet (planned)")]
    ComposeUnsupported { path: PathBuf },
    #[error("{path}: {property}: `{variable}` {problem}")]
    Variable {
        path: PathBuf,
        property: String,
        variable: String,
        problem: VariableProblem,
    },
    #[error("{path}: {property} points outside the project: {target}")]
    OutsideProject {
        path: PathBuf,
        property: String,
        target: String,
    },
    #[error("{path}: feature {key:?}: {problem}")]
    FeatureReference {
        path: PathBuf,
        key: String,
        problem: String,
    },
    #[error("{path}: feature {key:?} is listed twice (as {other:?} too)")]
    DuplicateFeature {
        path: PathBuf,
        key: String,
        other: String,
    },
    #[error(
        "feature {key:?} is not available here: only local features (\"./folder\") can be used yet"
    )]
    FeatureNotAvailable { key: String },
    #[error("feature {key:?} has no install.sh in {folder}")]
    NoInstallScript { key: String, folder: PathBuf },
    #[error("feature {key:?} has no option {option:?}; {}", valid_options(valid))]
    UnknownOption {
        key: String,
        option: String,
        valid: Vec<String>,
    },
    #[error("feature {key:?}: option {option:?} cannot be {value}: {expected}")]
    BadOptionValue {
        key: String,
        option: String,
        value: String,
        expected: String,
    },
    #[error(
        "feature {key:?}: options {first:?} and {second:?} both become the variable {variable}"
    )]
    OptionCollision {
        key: String,
        first: String,
        second: String,
        variable: String,
    },
    #[error("overrideFeatureInstallOrder names {id:?}, which is not in features")]
    OverrideUnknown { id: String },
    #[error("feature {key:?} depends on {dependency:?}, which is not in features")]
    MissingDependency { key: String, dependency: String },
    #[error(
        "overrideFeatureInstallOrder puts {key:?} before {dependency:?}, which it depends on (dependsOn)"
    )]
    OrderConflict { key: String, dependency: String },
    #[error("features {} must each be installed after another (installsAfter/dependsOn form a cycle)", features.join(", "))]
    Cycle { features: Vec<String> },
    #[error("cannot put {what} into a Dockerfile: {value:?} {why}")]
    Dockerfile {
        what: String,
        value: String,
        why: &'static str,
    },
}

fn known_names(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (it has {})", names.join(", "))
    }
}

fn valid_options(valid: &[String]) -> String {
    if valid.is_empty() {
        "it takes no options".to_owned()
    } else {
        format!("its options are {}", valid.join(", "))
    }
}

impl Error {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::SeveralConfigs { names, .. } => {
                format!("pass --devcontainer with one of: {}", names.join(", "))
            }
            Error::NoSuchConfig { names, .. } if names.is_empty() => {
                "create .devcontainer/NAME/devcontainer.json, or leave --devcontainer out".to_owned()
            }
            Error::NoSuchConfig { names, .. } => {
                format!("pass --devcontainer with one of: {}", names.join(", "))
            }
            Error::BadConfigName { .. } => {
                "give the name of a folder holding .devcontainer/NAME/devcontainer.json".to_owned()
            }
            Error::Syntax { .. } => {
                "fix the file at that line and column (comments and trailing commas are allowed)"
                    .to_owned()
            }
            Error::NotAnObject { .. } => "the file must start with `{` and end with `}`".to_owned(),
            Error::Type { path, .. } if path.ends_with("devcontainer-feature.json") => {
                "see https://containers.dev/implementors/features/ for the property's forms"
                    .to_owned()
            }
            Error::Type { .. } => {
                "see https://containers.dev/implementors/json_reference/ for the property's forms"
                    .to_owned()
            }
            Error::NoSource { .. } => {
                "add \"image\": \"mcr.microsoft.com/devcontainers/base:bookworm\", or a \"build\" with a \"dockerfile\"".to_owned()
            }
            Error::ComposeUnsupported { .. } => {
                "use \"image\" or \"build\" for now, or run without --devcontainer".to_owned()
            }
            Error::Variable { problem, .. } => match problem {
                VariableProblem::ContainerEnvTooEarly => {
                    "use ${localEnv:NAME} there, or set the value in remoteEnv or a lifecycle command"
                        .to_owned()
                }
                VariableProblem::SelfReference => {
                    "write the folder out, e.g. /workspaces/${localWorkspaceFolderBasename}"
                        .to_owned()
                }
                _ => "the variables are ${localEnv:NAME}, ${localEnv:NAME:default}, ${containerEnv:NAME}, ${localWorkspaceFolder}, ${localWorkspaceFolderBasename}, ${containerWorkspaceFolder}, ${containerWorkspaceFolderBasename} and ${devcontainerId}".to_owned(),
            },
            Error::OutsideProject { .. } => {
                "keep Dockerfiles, build contexts and local features inside the project folder"
                    .to_owned()
            }
            Error::FeatureReference { .. } => {
                "reference features as ./folder (next to devcontainer.json) or as ghcr.io/OWNER/REPO/NAME:VERSION".to_owned()
            }
            Error::DuplicateFeature { .. } => "keep one of the two entries in features".to_owned(),
            Error::FeatureNotAvailable { .. } => {
                "copy the feature's folder next to devcontainer.json and reference it as \"./folder\""
                    .to_owned()
            }
            Error::NoInstallScript { .. } => {
                "a feature's folder needs devcontainer-feature.json and install.sh".to_owned()
            }
            Error::UnknownOption { .. } | Error::BadOptionValue { .. } => {
                "fix the feature's options in devcontainer.json (a plain string value sets the option \"version\")".to_owned()
            }
            Error::OptionCollision { .. } => {
                "rename one of the options in the feature's devcontainer-feature.json".to_owned()
            }
            Error::OverrideUnknown { .. } => {
                "list features without their version (ghcr.io/OWNER/REPO/NAME, ./folder)"
                    .to_owned()
            }
            Error::MissingDependency { .. } => {
                "add the dependency to features yourself: claude-vm does not install dependencies of features".to_owned()
            }
            Error::OrderConflict { .. } => {
                "list the dependency first in overrideFeatureInstallOrder".to_owned()
            }
            Error::Cycle { .. } => {
                "list these features in overrideFeatureInstallOrder to choose their order"
                    .to_owned()
            }
            Error::Dockerfile { .. } => {
                "use a single-line value without control characters".to_owned()
            }
            Error::Io { .. } => return None,
        })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_without_a_period_and_most_have_a_hint() {
        let samples = [
            Error::SeveralConfigs {
                project: "/p".into(),
                names: vec!["a".into(), "b".into()],
            },
            Error::UnknownOption {
                key: "./hello".into(),
                option: "colour".into(),
                valid: vec!["color".into()],
            },
            Error::Cycle {
                features: vec!["./a".into(), "./b".into()],
            },
            Error::ComposeUnsupported {
                path: "/p/.devcontainer/devcontainer.json".into(),
            },
        ];
        for e in samples {
            let text = e.to_string();
            assert!(!text.ends_with('.'), "{text}");
            let first = text.chars().next().unwrap();
            assert!(!first.is_uppercase(), "{text}");
            assert!(e.hint().is_some(), "{text}");
        }
    }

    #[test]
    fn several_configs_names_them_and_the_flag() {
        let e = Error::SeveralConfigs {
            project: "/p".into(),
            names: vec!["go".into(), "rust".into()],
        };
        assert_eq!(
            e.to_string(),
            "/p has several dev container configurations (go, rust); pass --devcontainer NAME to pick one"
        );
    }
}
