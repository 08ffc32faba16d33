//! The content hash of what a dev container image is built from, to reuse an image built
//! before (tag `claude-vm-dc-<first 16 hex digits>`) instead of building it again.
//!
//! Hashed, as length-prefixed records in a fixed order (SHA-256):
//! - a format version, bumped whenever what this crate generates changes;
//! - the build-relevant part of the configuration, normalised (JSON with sorted keys):
//!   the image, or the build's Dockerfile and context paths relative to the project, args,
//!   target and options; the features with their options environment, in install order;
//!   `overrideFeatureInstallOrder`, `containerUser`, `remoteUser` (install scripts see
//!   them), `updateRemoteUserUID`. Lifecycle commands, environments, mounts, ports and
//!   customizations are not: they change the container, not the image;
//! - for a build, the Dockerfile's bytes and every file of the context not excluded by
//!   `.dockerignore` (or BuildKit's `<Dockerfile>.dockerignore` beside the Dockerfile);
//!   (a devcontainer.json inside the context is one of its files, like any other: a
//!   Dockerfile may copy it, so only a `.dockerignore` entry takes it out);
//! - every file of each feature's folder;
//! - the caller's extra facts (e.g. the base image's id, which only Docker knows).
//!
//! A file counts by its path relative to its root, its kind (file, folder, symlink), its
//! permission bits and its content (a symlink: its target, never followed); not by times,
//! owner or inode, so touching or copying a project changes nothing. `.dockerignore`
//! patterns are read roughly as Docker does: each anchored at the context's root, `**`
//! across folders, `!` re-including, a folder's pattern covering what is below it; its
//! finer points (Go's `filepath.Match` character classes, re-including below a folder
//! that stays excluded) may differ.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::Error;
use crate::config::{DevContainer, Source};
use crate::features::ResolvedFeatures;

/// Bumped whenever the generated Dockerfile or the hashed records change meaning.
const FORMAT: &str = "claude-vm-devcontainer-image/1";

/// The prefix of the tags of images built from a dev container configuration.
pub const IMAGE_PREFIX: &str = "claude-vm-dc-";

/// A content hash (64 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentHash(String);

impl ContentHash {
    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The image name to build to and look for: `claude-vm-dc-<16 hex digits>`.
    pub fn image_tag(&self) -> String {
        format!("{IMAGE_PREFIX}{}", &self.0[..16])
    }
}

impl std::fmt::Display for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Records(Sha256);

impl Records {
    fn record(&mut self, kind: &str, bytes: &[u8]) {
        for part in [kind.as_bytes(), bytes] {
            self.0.update((part.len() as u64).to_be_bytes());
            self.0.update(part);
        }
    }
}

fn relative(path: &Path, project: &Path) -> String {
    path.strip_prefix(project)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The normalised, build-relevant part of the configuration.
fn normalised(config: &DevContainer, features: &ResolvedFeatures) -> Value {
    let source = match &config.source {
        Source::Image(image) => json!({ "image": image }),
        Source::Build(build) => json!({
            "build": {
                "dockerfile": relative(&build.dockerfile, &config.project),
                "context": relative(&build.context, &config.project),
                "args": build.args,
                "target": build.target,
                "options": build.options,
            }
        }),
        Source::Compose(compose) => json!({ "compose": compose.files }),
    };
    let features: Vec<Value> = features
        .features
        .iter()
        .map(|f| json!({ "key": f.key, "id": f.reference.id(), "env": f.env }))
        .collect();
    json!({
        "source": source,
        "features": features,
        "overrideFeatureInstallOrder": config.override_feature_install_order,
        "containerUser": config.container_user,
        "remoteUser": config.remote_user,
        "updateRemoteUserUID": config.update_remote_user_uid,
    })
}

/// Canonical JSON: object keys sorted at every level, whatever map serde_json uses.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, String> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            let fields: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// The hash of everything the image of `config` with `features` is built from, plus
/// `extra` facts the caller knows (sorted by key).
pub fn content_hash(
    config: &DevContainer,
    features: &ResolvedFeatures,
    extra: &BTreeMap<String, String>,
) -> Result<ContentHash, Error> {
    let mut r = Records(Sha256::new());
    r.record("format", FORMAT.as_bytes());
    r.record(
        "config",
        canonical(&normalised(config, features)).as_bytes(),
    );
    if let Source::Build(build) = &config.source {
        let dockerfile =
            std::fs::read(&build.dockerfile).map_err(|e| Error::io(&build.dockerfile, e))?;
        r.record("dockerfile", &dockerfile);
        let ignore = dockerignore(&build.context, &build.dockerfile)?;
        r.record("context", b"");
        tree(&mut r, &build.context, ignore.as_ref())?;
    }
    for feature in &features.features {
        r.record("feature", feature.key.as_bytes());
        tree(&mut r, &feature.folder, None)?;
    }
    for (k, v) in extra {
        r.record("extra", k.as_bytes());
        r.record("value", v.as_bytes());
    }
    let digest = r.0.finalize();
    Ok(ContentHash(
        digest.iter().map(|b| format!("{b:02x}")).collect(),
    ))
}

/// The matcher of the context's `.dockerignore` (`<Dockerfile>.dockerignore` first).
fn dockerignore(context: &Path, dockerfile: &Path) -> Result<Option<Gitignore>, Error> {
    let beside = PathBuf::from(format!("{}.dockerignore", dockerfile.display()));
    let text = [beside, context.join(".dockerignore")]
        .into_iter()
        .find_map(|path| std::fs::read_to_string(&path).ok().map(|t| (path, t)));
    let Some((path, text)) = text else {
        return Ok(None);
    };
    let mut builder = GitignoreBuilder::new(context);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (negated, pattern) = match line.strip_prefix('!') {
            Some(p) => (true, p.trim()),
            None => (false, line),
        };
        let pattern = pattern.trim_start_matches("./").trim_start_matches('/');
        let pattern = pattern.trim_end_matches('/');
        if pattern.is_empty() {
            continue;
        }
        let anchored = format!("{}/{pattern}", if negated { "!" } else { "" });
        // A pattern the matcher cannot read is skipped: the hash then covers more, never less.
        let _ = builder.add_line(Some(path.clone()), &anchored);
    }
    Ok(builder.build().ok())
}

/// Hash every entry below `root`, sorted by path, skipping what `ignore` excludes.
fn tree(r: &mut Records, root: &Path, ignore: Option<&Gitignore>) -> Result<(), Error> {
    let mut entries = Vec::new();
    collect(root, root, ignore, &mut entries)?;
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, path, kind) in entries {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
        r.record("path", rel.as_bytes());
        r.record("kind", kind.as_bytes());
        r.record("mode", &mode(&meta).to_be_bytes());
        match kind {
            "file" => {
                let mut file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = file.read(&mut buf).map_err(|e| Error::io(&path, e))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                r.record("content", &h.finalize());
            }
            "symlink" => {
                let target = std::fs::read_link(&path).map_err(|e| Error::io(&path, e))?;
                r.record("target", target.to_string_lossy().as_bytes());
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(unix)]
fn mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode(meta: &std::fs::Metadata) -> u32 {
    u32::from(meta.permissions().readonly())
}

type Entry = (String, PathBuf, &'static str);

fn collect(
    root: &Path,
    dir: &Path,
    ignore: Option<&Gitignore>,
    out: &mut Vec<Entry>,
) -> Result<(), Error> {
    let read = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in read {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| Error::io(&path, e))?;
        let kind = if file_type.is_symlink() {
            "symlink"
        } else if file_type.is_dir() {
            "dir"
        } else if file_type.is_file() {
            "file"
        } else {
            continue; // sockets, FIFOs, devices: never part of an image build
        };
        let excluded = ignore.is_some_and(|g| {
            g.matched_path_or_any_parents(&path, kind == "dir")
                .is_ignore()
        });
        if kind == "dir" {
            // Go below an excluded folder only when a `!` pattern may re-include something.
            let descend = !excluded || ignore.is_some_and(|g| g.num_whitelists() > 0);
            if !excluded {
                out.push((relative(&path, root), path.clone(), kind));
            }
            if descend {
                collect(root, &path, ignore, out)?;
            }
        } else if !excluded {
            out.push((relative(&path, root), path, kind));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
