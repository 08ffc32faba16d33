//! Finding a project's devcontainer.json.
//!
//! The spec's places, in its order: `.devcontainer/devcontainer.json`, then
//! `.devcontainer.json`, then `.devcontainer/<name>/devcontainer.json` (one level down, one
//! configuration per folder). The first two win over named ones; named ones are picked by
//! name (`--devcontainer NAME`), and when there are several and no name was given the
//! choice is the user's, never ours.

use std::path::{Path, PathBuf};

use crate::Error;

/// A configuration file found in a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The project folder (the local workspace folder).
    pub project: PathBuf,
    /// The devcontainer.json itself.
    pub config: PathBuf,
    /// `Some` for `.devcontainer/<name>/devcontainer.json`.
    pub name: Option<String>,
}

impl Located {
    /// The folder relative paths of the file are resolved against (the file's folder).
    pub fn folder(&self) -> &Path {
        self.config.parent().unwrap_or(&self.project)
    }
}

const FILE: &str = "devcontainer.json";

/// Find the configuration of `project`, or the one called `name`.
///
/// `Ok(None)`: the project has no configuration (and no name was asked for).
pub fn find(project: &Path, name: Option<&str>) -> Result<Option<Located>, Error> {
    let located = |config: PathBuf, name: Option<String>| Located {
        project: project.to_path_buf(),
        config,
        name,
    };
    if let Some(name) = name {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\']) {
            return Err(Error::BadConfigName {
                name: name.to_owned(),
            });
        }
        let config = project.join(".devcontainer").join(name).join(FILE);
        if is_file(&config) {
            return Ok(Some(located(config, Some(name.to_owned()))));
        }
        return Err(Error::NoSuchConfig {
            project: project.to_path_buf(),
            name: name.to_owned(),
            names: names(project)?,
        });
    }
    for config in [
        project.join(".devcontainer").join(FILE),
        project.join(".devcontainer.json"),
    ] {
        if is_file(&config) {
            return Ok(Some(located(config, None)));
        }
    }
    let mut found = names(project)?;
    match found.len() {
        0 => Ok(None),
        1 => {
            let name = found.remove(0);
            let config = project.join(".devcontainer").join(&name).join(FILE);
            Ok(Some(located(config, Some(name))))
        }
        _ => Err(Error::SeveralConfigs {
            project: project.to_path_buf(),
            names: found,
        }),
    }
}

/// The names of the project's named configurations (`.devcontainer/<name>/devcontainer.json`),
/// sorted.
pub fn names(project: &Path) -> Result<Vec<String>, Error> {
    let dir = project.join(".devcontainer");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if is_file(&entry.path().join(FILE)) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn is_file(path: &Path) -> bool {
    path.metadata().map(|m| m.is_file()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "{}").unwrap();
        }
        dir
    }

    /// (files in the project, name asked, the file found relative to the project, its name)
    #[test]
    fn finds_the_spec_places_in_the_spec_order() {
        type Case = (
            &'static [&'static str],
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
        );
        let cases: &[Case] = &[
            (&[], None, None, None),
            (&["README.md"], None, None, None),
            (
                &[".devcontainer/devcontainer.json"],
                None,
                Some(".devcontainer/devcontainer.json"),
                None,
            ),
            (
                &[".devcontainer.json"],
                None,
                Some(".devcontainer.json"),
                None,
            ),
            (
                &[".devcontainer/devcontainer.json", ".devcontainer.json"],
                None,
                Some(".devcontainer/devcontainer.json"),
                None,
            ),
            (
                &[".devcontainer/rust/devcontainer.json"],
                None,
                Some(".devcontainer/rust/devcontainer.json"),
                Some("rust"),
            ),
            (
                &[
                    ".devcontainer/devcontainer.json",
                    ".devcontainer/rust/devcontainer.json",
                    ".devcontainer/go/devcontainer.json",
                ],
                None,
                Some(".devcontainer/devcontainer.json"),
                None,
            ),
            (
                &[
                    ".devcontainer.json",
                    ".devcontainer/rust/devcontainer.json",
                    ".devcontainer/go/devcontainer.json",
                ],
                Some("go"),
                Some(".devcontainer/go/devcontainer.json"),
                Some("go"),
            ),
            (
                // A folder without a devcontainer.json is not a configuration.
                &[
                    ".devcontainer/rust/devcontainer.json",
                    ".devcontainer/scripts/setup.sh",
                ],
                None,
                Some(".devcontainer/rust/devcontainer.json"),
                Some("rust"),
            ),
        ];
        for (files, name, want, want_name) in cases {
            let dir = project(files);
            let got = find(dir.path(), *name).unwrap();
            let got_rel = got.as_ref().map(|l| {
                l.config
                    .strip_prefix(dir.path())
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned()
            });
            assert_eq!(got_rel.as_deref(), *want, "files {files:?}, name {name:?}");
            assert_eq!(
                got.as_ref().and_then(|l| l.name.as_deref()),
                *want_name,
                "files {files:?}"
            );
            if let Some(l) = got {
                assert_eq!(l.project, dir.path());
                assert_eq!(l.folder(), l.config.parent().unwrap());
            }
        }
    }

    #[test]
    fn several_named_configurations_need_a_name() {
        let dir = project(&[
            ".devcontainer/rust/devcontainer.json",
            ".devcontainer/go/devcontainer.json",
        ]);
        let e = find(dir.path(), None).unwrap_err();
        assert!(
            matches!(&e, Error::SeveralConfigs { names, .. } if names == &["go", "rust"]),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(text.contains("go, rust"), "{text}");
        assert!(text.contains("--devcontainer NAME"), "{text}");
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let dir = project(&[".devcontainer/rust/devcontainer.json"]);
        let e = find(dir.path(), Some("python")).unwrap_err();
        assert!(
            matches!(&e, Error::NoSuchConfig { name, names, .. } if name == "python" && names == &["rust"]),
            "{e:?}"
        );
        assert!(e.to_string().contains("(it has rust)"), "{e}");
    }

    #[test]
    fn a_name_must_be_one_folder() {
        let dir = project(&[".devcontainer/rust/devcontainer.json"]);
        for bad in ["", ".", "..", "../rust", "a/b"] {
            assert!(
                matches!(
                    find(dir.path(), Some(bad)),
                    Err(Error::BadConfigName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_are_sorted_and_empty_without_a_folder() {
        let dir = project(&[
            ".devcontainer/b/devcontainer.json",
            ".devcontainer/a/devcontainer.json",
        ]);
        assert_eq!(names(dir.path()).unwrap(), ["a", "b"]);
        let empty = project(&[]);
        assert!(names(empty.path()).unwrap().is_empty());
    }
}
