//! The domain core of claude-vm.
//!
//! Everything here is pure: no Docker, no HTTP, no SQL, no filesystem. The other crates
//! (store, providers, engine, CLI) translate the outside world into these types and ask the
//! core what follows: which name to give a workspace, which workspace a user meant, what
//! status a workspace has given what the provider reports, whether an option is a secret.

pub mod agent;
pub mod backup;
pub mod config;
pub mod id;
pub mod image;
pub mod lifecycle;
pub mod name;
pub mod notify;
pub mod posix;
pub mod provider;
pub mod resolve;
pub mod source;
pub mod workspace;

pub use id::WorkspaceId;
pub use name::WorkspaceName;
pub use workspace::{LiveState, Status};
