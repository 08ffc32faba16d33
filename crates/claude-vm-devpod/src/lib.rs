//! DevPod's provider.yaml, understood without doing anything: so claude-vm can run its
//! workspaces on any machine provider published for DevPod (AWS, Google Cloud, Azure,
//! DigitalOcean, Hetzner, ...).
//!
//! This crate parses, validates and resolves; it never reads a file, opens a connection or
//! starts a process. Whatever must run (an option's `command`) goes through a callback the
//! caller passes in.
//!
//! The steps, in the order claude-vm takes them:
//! 1. [`Source::parse`] says where a provider comes from (a path, an https URL, a GitHub
//!    release, or a [`published`] shortcut such as `aws`); the caller fetches the text;
//! 2. [`parse`] turns the text into a typed [`Manifest`], refusing what claude-vm cannot
//!    run (proxy and daemon providers, non-Docker drivers, binaries without checksums) and
//!    turning what it does not know (fields of a newer DevPod) into warnings;
//! 3. [`Manifest::binary_for`] picks the helper binaries for this machine
//!    ([`devpod_os`], [`devpod_arch`]), which the caller downloads and verifies;
//! 4. [`resolve`] fills the options: the user's values, defaults referring to other
//!    options (`${OTHER}`, see [`expand`]) and commands, in dependency order; per-machine
//!    (`local`) options wait for [`Scope::Machine`];
//! 5. the caller runs the `exec` [`Script`]s ([`Script::argv`]) with the options in the
//!    environment, and reads `exec.status` with [`parse_status`];
//! 6. [`Agent::expanded`] fills the `agent` section (`injectGitCredentials:
//!    ${INJECT_GIT_CREDENTIALS}`), and [`parse_duration`] reads its timeouts.

mod duration;
mod expand;
mod manifest;
mod parse;
mod platform;
mod resolve;
mod source;
mod status;

pub use duration::{DurationError, parse_duration};
pub use expand::{expand, references};
pub use manifest::{
    Agent, AgentExec, Binary, Docker, EnumChoice, Exec, Manifest, OptionDef, OptionGroup, Script,
    StrBool,
};
pub use parse::{ManifestError, Parsed, parse};
pub use platform::{binary_for, devpod_arch, devpod_os};
pub use resolve::{ResolveError, Resolved, RunCommand, Scope, resolve};
pub use source::{PUBLISHED, Source, SourceError, published};
pub use status::{MachineStatus, StatusError, parse_status};
