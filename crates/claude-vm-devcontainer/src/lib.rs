//! devcontainer.json support (the containers.dev spec), as pure logic.
//!
//! This crate decides; the engine acts. It reads files (the project's configuration, its
//! features, the build context it hashes) but never talks to Docker, the network or a
//! process: the engine builds and runs what is computed here.
//!
//! The steps, in the order the engine takes them:
//! 1. [`find`] the configuration of a project (`--devcontainer NAME` picks a named one);
//! 2. [`load`] it with a [`Context`] (this machine's environment, the workspace's labels):
//!    typed [`DevContainer`], variables substituted, one [`DevContainer::warning`] for
//!    what it ignores, [`DevContainer::ensure_supported`] to refuse Docker Compose;
//! 3. [`resolve_features`]: metadata, options environments and install order;
//! 4. [`content_hash`] names the image (`claude-vm-dc-<hash>`) so an unchanged
//!    configuration reuses the image built before;
//! 5. otherwise [`features_dockerfile`] gives the Dockerfile (and build context layout)
//!    layering the features on the base image;
//! 6. once the container runs, [`DevContainer::with_container_env`] substitutes
//!    `${containerEnv:...}` and [`Lifecycle::in_container`] lists the commands to run.
//!
//! With `updateRemoteUserUID`, [`update_uid_dockerfile`] layers the id change of the
//! devcontainer's user on the image.
//!
//! [`starter`] writes a first configuration for a project that has none.

mod command;
mod config;
mod error;
pub mod features;
mod find;
mod hash;
mod jsonc;
mod mount;
mod ports;
mod starter;
mod user;
mod vars;

pub use command::{Command, Lifecycle, Step};
pub use config::{
    Build, CUSTOMIZATIONS_KEY, Compose, DevContainer, FeatureEntry, OptionValue, Runtime, Source,
    load, parse_str,
};
pub use error::{Error, VariableProblem};
pub use features::dockerfile::{
    CONTEXT_DIR, ContextFile, FeatureCopy, FeatureUsers, FeaturesBuild, features_dockerfile,
};
pub use features::metadata::{FeatureMetadata, OptionSpec, OptionType};
pub use features::options::{option_env_name, options_env};
pub use features::reference::{FeatureRef, OciRef};
pub use features::{FeatureRuntime, ResolvedFeature, ResolvedFeatures, resolve_features};
pub use find::{Located, find, names};
pub use hash::{ContentHash, IMAGE_PREFIX, content_hash};
pub use mount::{Mount, MountKind};
pub use ports::{ForwardPort, PortAttributes};
pub use starter::{Stack, Starter, starter};
pub use user::{is_user_name, update_uid_dockerfile};
pub use vars::{Context, devcontainer_id};
