//! Reading and creating `config.yaml`.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use claude_vm_core::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write config {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("invalid config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

const HEADER: &str = "\
# claude-vm configuration. Every key is optional; these are the defaults.
#
# default_provider: provider used by `workspace up` without --provider
# default_image:    image used without --image (a provider's `image` option wins)
# agents.enabled:   coding agents installed in new workspaces
# agents.defaults.agent: agent used by `new-chat` without --agent
# lifecycle.idle_stop: a workspace with nothing going on stops itself after this long
#                   (30m, 2h, off); `workspace set <ws> --idle-stop` overrides it
# lifecycle.approval_wait: how long an approval nobody answered keeps a workspace up
";

/// Write the default config if `path` does not exist (owner-only permissions). Never
/// overwrites: two processes racing here both end up with one complete file.
pub fn write_default_config(path: &Path) -> Result<(), ConfigError> {
    let body = serde_yaml_ng::to_string(&Config::default()).expect("config serializes");
    // A name no other writer (thread or process) uses.
    let tmp = path.with_extension(format!(
        "yaml.tmp.{}.{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let write_err = |e| ConfigError::Write {
        path: path.to_owned(),
        source: e,
    };
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write_err)?;
    f.write_all(HEADER.as_bytes())
        .and_then(|_| f.write_all(body.as_bytes()))
        .and_then(|_| f.sync_all())
        .map_err(write_err)?;
    // hard_link fails if the target exists: first writer wins, atomically.
    let res = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(write_err(e)),
    }
}

/// Load and validate the config at `path`; a missing file means all defaults.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source: e,
            });
        }
    };
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let config: Config = if text.trim().is_empty() {
        Config::default()
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| invalid(e.to_string()))?
    };
    config.validate().map_err(invalid)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        write_default_config(&path).unwrap();
        assert_eq!(load_config(&path).unwrap(), Config::default());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // never overwritten
        std::fs::write(&path, "default_image: alpine\n").unwrap();
        write_default_config(&path).unwrap();
        assert_eq!(load_config(&path).unwrap().default_image, "alpine");
    }

    #[test]
    fn invalid_configs_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "colour: blue\n").unwrap();
        let err = load_config(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
        std::fs::write(&path, "agents:\n  defaults:\n    agent: cursor\n").unwrap();
        let err = load_config(&path).unwrap_err().to_string();
        assert!(err.contains("not in agents.enabled"), "{err}");
        std::fs::write(&path, "").unwrap();
        assert_eq!(load_config(&path).unwrap(), Config::default());
        assert_eq!(
            load_config(&dir.path().join("missing.yaml")).unwrap(),
            Config::default()
        );
    }
}
