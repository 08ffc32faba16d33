//! Dev container features: references, metadata, options, install order, and the
//! Dockerfile that layers them on an image.
//!
//! [`resolve_features`] turns a configuration's `features` into [`ResolvedFeatures`]: each
//! feature's folder and metadata, its options environment, in install order, with what
//! the features ask of the container at run time (privileged, capabilities, entry points,
//! mounts) gathered for the engine to apply or refuse. Local features are read from the
//! project; any other kind (OCI, tarball) only from a folder the caller fetched it into,
//! since this crate does no network.

pub mod dockerfile;
pub mod metadata;
pub mod options;
pub(crate) mod order;
pub mod reference;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::Error;
use crate::config::DevContainer;
use crate::mount::Mount;
use metadata::FeatureMetadata;
use reference::FeatureRef;

/// The name of a feature's install script.
pub const INSTALL_SCRIPT: &str = "install.sh";

/// One feature, ready to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedFeature {
    /// The key in `features`.
    pub key: String,
    pub reference: FeatureRef,
    /// The folder holding devcontainer-feature.json and install.sh.
    pub folder: PathBuf,
    /// Its metadata, `${devcontainerId}` substituted in `entrypoint` and `mounts`.
    pub metadata: FeatureMetadata,
    /// The options environment ([`options::options_env`]).
    pub env: BTreeMap<String, String>,
}

/// What the features, together, ask of the container at run time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureRuntime {
    pub privileged: bool,
    pub init: bool,
    /// Sorted, without duplicates.
    pub cap_add: Vec<String>,
    /// Sorted, without duplicates.
    pub security_opt: Vec<String>,
    /// Entry point scripts, in install order.
    pub entrypoints: Vec<String>,
    /// Mounts, in install order.
    pub mounts: Vec<Mount>,
}

/// The features of a configuration, in install order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedFeatures {
    pub features: Vec<ResolvedFeature>,
    pub runtime: FeatureRuntime,
}

impl ResolvedFeatures {
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// One line per thing a feature asks of the container that needs the engine's
    /// decision (privileges, capabilities, entry points, mounts, dependencies), e.g.
    /// `feature "./dind" asks for a privileged container`.
    pub fn requests(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for f in &self.features {
            let m = &f.metadata;
            let key = &f.key;
            if m.privileged {
                lines.push(format!("feature {key:?} asks for a privileged container"));
            }
            if m.init {
                lines.push(format!("feature {key:?} asks for an init process (--init)"));
            }
            if !m.cap_add.is_empty() {
                lines.push(format!(
                    "feature {key:?} asks for capabilities {}",
                    m.cap_add.join(", ")
                ));
            }
            if !m.security_opt.is_empty() {
                lines.push(format!(
                    "feature {key:?} asks for security options {}",
                    m.security_opt.join(", ")
                ));
            }
            if let Some(entrypoint) = &m.entrypoint {
                lines.push(format!(
                    "feature {key:?} asks to run {entrypoint} when the container starts"
                ));
            }
            for mount in &m.mounts {
                lines.push(format!("feature {key:?} asks to mount {}", mount.target));
            }
        }
        lines
    }
}

fn devcontainer_id_in(s: &str, id: &str) -> String {
    s.replace("${devcontainerId}", id)
}

/// Resolve the configuration's features: read each one's metadata, compute its options
/// environment and the install order.
///
/// `fetched` maps the keys of non-local features to the folders the caller fetched them
/// into (empty while claude-vm fetches none: such features are then an error).
pub fn resolve_features(
    config: &DevContainer,
    fetched: &BTreeMap<String, PathBuf>,
) -> Result<ResolvedFeatures, Error> {
    let mut features = Vec::with_capacity(config.features.len());
    for entry in &config.features {
        let folder = match (&entry.folder, fetched.get(&entry.key)) {
            (Some(folder), _) | (None, Some(folder)) => folder.clone(),
            (None, None) => {
                return Err(Error::FeatureNotAvailable {
                    key: entry.key.clone(),
                });
            }
        };
        let mut metadata = FeatureMetadata::read(&folder)?;
        if !folder.join(INSTALL_SCRIPT).is_file() {
            return Err(Error::NoInstallScript {
                key: entry.key.clone(),
                folder,
            });
        }
        let env = options::options_env(&entry.key, &metadata, &entry.options)?;
        let id = &config.devcontainer_id;
        metadata.entrypoint = metadata.entrypoint.map(|e| devcontainer_id_in(&e, id));
        for mount in &mut metadata.mounts {
            mount.source = mount.source.as_deref().map(|s| devcontainer_id_in(s, id));
            mount.target = devcontainer_id_in(&mount.target, id);
        }
        features.push(ResolvedFeature {
            key: entry.key.clone(),
            reference: entry.reference.clone(),
            folder,
            metadata,
            env,
        });
    }

    let nodes: Vec<order::Node> = features
        .iter()
        .map(|f| order::Node {
            key: f.key.clone(),
            id: f.reference.id(),
            local_id: matches!(f.reference, FeatureRef::Local(_)).then(|| f.metadata.id.clone()),
            after: f.metadata.installs_after.clone(),
            depends: f.metadata.depends_on.keys().cloned().collect(),
        })
        .collect();
    let order = order::install_order(&nodes, &config.override_feature_install_order)?;
    let mut slots: Vec<Option<ResolvedFeature>> = features.into_iter().map(Some).collect();
    let features: Vec<ResolvedFeature> =
        order.into_iter().filter_map(|i| slots[i].take()).collect();

    let mut runtime = FeatureRuntime::default();
    for f in &features {
        let m = &f.metadata;
        runtime.privileged |= m.privileged;
        runtime.init |= m.init;
        runtime.cap_add.extend(m.cap_add.iter().cloned());
        runtime.security_opt.extend(m.security_opt.iter().cloned());
        runtime.entrypoints.extend(m.entrypoint.iter().cloned());
        runtime.mounts.extend(m.mounts.iter().cloned());
    }
    for list in [&mut runtime.cap_add, &mut runtime.security_opt] {
        list.sort();
        list.dedup();
    }
    Ok(ResolvedFeatures { features, runtime })
}

#[cfg(test)]
mod tests;
