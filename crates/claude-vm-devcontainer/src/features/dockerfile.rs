//! The Dockerfile that installs features on an image, as the reference implementation
//! builds it (written from the spec, in claude-vm's own layout):
//!
//! - `FROM` the base image, `USER root`: install scripts run as root;
//! - a file of built-in variables, `_CONTAINER_USER` and `_REMOTE_USER` (the user the
//!   container runs as, and the user tools connect as: `remoteUser`, else the container
//!   user), completed in the image with `_CONTAINER_USER_HOME` and `_REMOTE_USER_HOME`
//!   read from its `/etc/passwd` (`/root` or `/home/<user>` when it has no entry);
//! - per feature, in install order, one layer each so a change rebuilds from that feature
//!   on: its `containerEnv` as `ENV` (Docker expands `${PATH}` there, as features expect),
//!   `COPY` of its folder and of its options file, then `install.sh` run from its folder
//!   with the built-in variables and its options exported, and the copy removed;
//! - `USER` back to the image's user.
//!
//! The caller lays out the build context as [`FeaturesBuild`] says: each feature's folder
//! copied to `claude-vm-features/<nn>-<id>/` and the generated files written beside them.
//! Values reach the shell only through those files, single-quoted, never through the
//! Dockerfile's command lines.

use std::path::PathBuf;

use crate::Error;
use crate::config::DevContainer;
use crate::features::{INSTALL_SCRIPT, ResolvedFeatures};

/// The folder of the build context the features are copied into.
pub const CONTEXT_DIR: &str = "claude-vm-features";

/// Where they are in the image while installing (removed afterwards).
const IN_IMAGE: &str = "/tmp/claude-vm-features";

/// The users the install scripts are told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureUsers {
    /// `containerUser`, else the image's user, else `root`.
    pub container_user: String,
    /// `remoteUser`, else the container user.
    pub remote_user: String,
}

impl FeatureUsers {
    /// The spec's users for `config` on an image whose configured user is `image_user`.
    pub fn new(config: &DevContainer, image_user: Option<&str>) -> FeatureUsers {
        let container_user = config
            .container_user
            .clone()
            .or_else(|| image_user.filter(|u| !u.is_empty()).map(str::to_owned))
            .unwrap_or_else(|| "root".to_owned());
        let remote_user = config
            .remote_user
            .clone()
            .unwrap_or_else(|| container_user.clone());
        FeatureUsers {
            container_user,
            remote_user,
        }
    }
}

/// A feature folder to copy into the build context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureCopy {
    pub key: String,
    pub from: PathBuf,
    /// Relative to the build context, `/`-separated.
    pub to: String,
}

/// A generated file to write into the build context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextFile {
    /// Relative to the build context, `/`-separated.
    pub path: String,
    pub contents: String,
}

/// Everything a build of the features needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeaturesBuild {
    pub dockerfile: String,
    pub copies: Vec<FeatureCopy>,
    pub files: Vec<ContextFile>,
}

/// Quote for `sh`: the text between single quotes, each `'` closed, escaped and reopened.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn single_line(what: &str, value: &str) -> Result<(), Error> {
    if value.chars().any(char::is_control) {
        return Err(Error::Dockerfile {
            what: what.to_owned(),
            value: value.to_owned(),
            why: "has a line break or control character",
        });
    }
    Ok(())
}

fn word(what: &str, value: &str) -> Result<(), Error> {
    single_line(what, value)?;
    if value.is_empty() || value.chars().any(char::is_whitespace) {
        return Err(Error::Dockerfile {
            what: what.to_owned(),
            value: value.to_owned(),
            why: "must be one word",
        });
    }
    Ok(())
}

/// A comment-safe rendering of text from a feature.
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn folder_name(index: usize, id: &str) -> String {
    let id: String = id
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let id = id.trim_matches(['-', '.']);
    format!(
        "{:02}-{}",
        index + 1,
        if id.is_empty() { "feature" } else { id }
    )
}

fn env_file(vars: impl IntoIterator<Item = (String, String)>) -> String {
    vars.into_iter()
        .map(|(k, v)| format!("{k}={}\n", sh_quote(&v)))
        .collect()
}

/// The Dockerfile (and the context it needs) installing `features` on `base_image`, whose
/// configured user is `image_user` (`None`: root).
pub fn features_dockerfile(
    base_image: &str,
    image_user: Option<&str>,
    config: &DevContainer,
    features: &ResolvedFeatures,
) -> Result<FeaturesBuild, Error> {
    word("the base image", base_image)?;
    let users = FeatureUsers::new(config, image_user);
    word("the container user", &users.container_user)?;
    word("the remote user", &users.remote_user)?;
    let final_user = image_user.filter(|u| !u.is_empty()).unwrap_or("root");
    word("the image's user", final_user)?;

    let mut files = vec![ContextFile {
        path: format!("{CONTEXT_DIR}/builtin.env"),
        contents: env_file([
            ("_CONTAINER_USER".to_owned(), users.container_user.clone()),
            ("_REMOTE_USER".to_owned(), users.remote_user.clone()),
        ]),
    }];
    let mut copies = Vec::new();
    let default_home = |user: &str| {
        if user == "root" || user == "0" {
            "/root".to_owned()
        } else {
            format!("/home/{user}")
        }
    };

    let mut d = String::new();
    d.push_str("# Written by claude-vm: the dev container features of ");
    let file = config
        .file
        .strip_prefix(&config.project)
        .unwrap_or(&config.file);
    d.push_str(&comment(&file.display().to_string()));
    d.push_str(".\n");
    d.push_str(&format!("FROM {base_image}\n"));
    d.push_str("USER root\n");
    d.push_str(&format!(
        "COPY {CONTEXT_DIR}/builtin.env {IN_IMAGE}/builtin.env\n"
    ));
    d.push_str(&format!(
        "RUN home() {{ awk -F: -v u=\"$1\" '$1 == u || $3 == u {{ print $6; exit }}' /etc/passwd; }} \\\n \
         && c=\"$(home {cu})\" && r=\"$(home {ru})\" \\\n \
         && printf \"_CONTAINER_USER_HOME='%s'\\n_REMOTE_USER_HOME='%s'\\n\" \"${{c:-{cd}}}\" \"${{r:-{rd}}}\" >> {IN_IMAGE}/builtin.env\n",
        cu = sh_quote(&users.container_user),
        ru = sh_quote(&users.remote_user),
        cd = default_home(&users.container_user).replace(['\'', '"', '$', '`', '\\'], ""),
        rd = default_home(&users.remote_user).replace(['\'', '"', '$', '`', '\\'], ""),
    ));

    let total = features.features.len();
    for (index, feature) in features.features.iter().enumerate() {
        let name = folder_name(index, &feature.metadata.id);
        let dir = format!("{CONTEXT_DIR}/{name}");
        let env_path = format!("{CONTEXT_DIR}/{name}.env");
        copies.push(FeatureCopy {
            key: feature.key.clone(),
            from: feature.folder.clone(),
            to: dir.clone(),
        });
        files.push(ContextFile {
            path: env_path.clone(),
            contents: env_file(feature.env.clone()),
        });

        d.push_str(&format!(
            "\n# {}/{total}: {} ({}{})\n",
            index + 1,
            comment(&feature.key),
            comment(&feature.metadata.id),
            feature
                .metadata
                .version
                .as_deref()
                .map(|v| format!(" {}", comment(v)))
                .unwrap_or_default(),
        ));
        if !feature.metadata.container_env.is_empty() {
            let mut line = String::from("ENV");
            for (k, v) in &feature.metadata.container_env {
                let what = format!("containerEnv {k} of feature {:?}", feature.key);
                word(&what, k)?;
                if k.contains(['=', '"', '\\', '$']) {
                    return Err(Error::Dockerfile {
                        what,
                        value: k.clone(),
                        why: "is not a variable name",
                    });
                }
                single_line(&what, v)?;
                line.push_str(&format!(
                    " {k}=\"{}\"",
                    v.replace('\\', "\\\\").replace('"', "\\\"")
                ));
            }
            d.push_str(&line);
            d.push('\n');
        }
        let target = format!("{IN_IMAGE}/{name}");
        d.push_str(&format!("COPY {dir}/ {target}/\n"));
        d.push_str(&format!("COPY {env_path} {target}.env\n"));
        d.push_str(&format!(
            "RUN cd {target} \\\n \
             && chmod +x ./{INSTALL_SCRIPT} \\\n \
             && (set -a && . {IN_IMAGE}/builtin.env && . {target}.env && set +a && ./{INSTALL_SCRIPT}) \\\n \
             && cd / && rm -rf {target} {target}.env\n"
        ));
    }
    d.push_str(&format!("\nRUN rm -rf {IN_IMAGE}\nUSER {final_user}\n"));
    Ok(FeaturesBuild {
        dockerfile: d,
        copies,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_for_sh() {
        let cases = [
            ("plain", "'plain'"),
            ("", "''"),
            ("it's", r"'it'\''s'"),
            ("$HOME `x` \"y\"", "'$HOME `x` \"y\"'"),
            ("two\nlines", "'two\nlines'"),
        ];
        for (s, want) in cases {
            assert_eq!(sh_quote(s), want);
        }
    }

    #[test]
    fn folder_names_sort_and_are_safe() {
        assert_eq!(folder_name(0, "hello"), "01-hello");
        assert_eq!(folder_name(9, "Docker In Docker"), "10-docker-in-docker");
        assert_eq!(folder_name(1, "../../x"), "02-x");
        assert_eq!(folder_name(2, ""), "03-feature");
    }

    #[test]
    fn env_files_quote_every_value() {
        let text = env_file([
            ("VERSION".to_owned(), "3.10".to_owned()),
            ("MSG".to_owned(), "it's $fine".to_owned()),
        ]);
        assert_eq!(text, "VERSION='3.10'\nMSG='it'\\''s $fine'\n");
    }
}
