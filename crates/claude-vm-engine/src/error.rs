//! Engine errors: everything a use case can fail with, each with a remedy where one exists.

use claude_vm_core::workspace::TransitionError;
use claude_vm_provider::ProviderError;
use claude_vm_store::{ConfigError, HomeError, StoreError};

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Pack(#[from] crate::pack::PackError),
    #[error(transparent)]
    Link(#[from] claude_vm_link::LinkError),
    #[error("no workspace matches {0:?}")]
    UnknownWorkspace(String),
    #[error(transparent)]
    Backup(#[from] claude_vm_backup::BackupError),
    #[error("no workspace and no backup of a workspace matches {0:?}")]
    NoBackups(String),
    #[error("workspace {name} was deleted; its last backup is {snapshot} ({time})")]
    DeletedWithBackups {
        name: String,
        snapshot: String,
        time: String,
    },
    #[error("{query:?} matches several workspaces: {candidates}")]
    AmbiguousWorkspace { query: String, candidates: String },
    #[error("no workspace, folder or git URL matches {0:?}")]
    UnknownTarget(String),
    #[error("no conversation matches {0:?}")]
    UnknownChat(String),
    #[error("no provider named {0:?}")]
    UnknownProvider(String),
    #[error("{0}")]
    InvalidInput(String),
    /// A devcontainer.json's initializeCommand would run on this machine, and nobody said
    /// it may.
    #[error("{file} has an initializeCommand, which runs on this machine: {command}")]
    Untrusted { file: String, command: String },
    /// An agent kind has no usable account; the message says what to do.
    #[error("{0}")]
    NoAccount(String),
    #[error("workspace {name}: {source}")]
    Transition {
        name: String,
        source: TransitionError,
    },
    #[error("provider {name:?} still has workspaces: {workspaces}")]
    ProviderInUse { name: String, workspaces: String },
    #[error("workspace {name}: {message}")]
    Workspace { name: String, message: String },
    #[error("workspace {name}: the final backup failed ({error}), so nothing was deleted")]
    FinalBackupFailed { name: String, error: String },
    #[error("workspace {name} is not running")]
    NotRunning { name: String },
    #[error("the workspace's provider did not answer within {secs}s")]
    ProviderTimeout { secs: u64, hint: String },
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Ssh(String),
    #[error(
        "workspace {name} presents SSH host key {presented}, but {pinned} is pinned for it in {}",
        known_hosts.display()
    )]
    HostKeyChanged {
        name: String,
        pinned: String,
        presented: String,
        known_hosts: std::path::PathBuf,
    },
}

impl EngineError {
    /// A line telling the user what to do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            EngineError::Provider(p) => p.hint(),
            EngineError::Link(claude_vm_link::LinkError::Provider(p)) => p.hint(),
            EngineError::ProviderTimeout { hint, .. } => Some(hint.clone()),
            EngineError::FinalBackupFailed { name, .. } => Some(format!(
                "fix that and try again, or delete without it: `claude-vm workspace delete --force {name}`"
            )),
            EngineError::Backup(b) => b.hint(),
            EngineError::NoBackups(_) => Some(
                "`claude-vm backup list` shows the workspaces that have backups".to_owned(),
            ),
            EngineError::Untrusted { .. } => Some(
                "read it; if it is fine, run `workspace up` again with --trust (asked once per repository and command)".to_owned(),
            ),
            EngineError::DeletedWithBackups { name, .. } => Some(format!(
                "bring it back with `claude-vm workspace restore {name}`"
            )),
            EngineError::NotRunning { name } => {
                Some(format!("start it with `claude-vm workspace up {name}`"))
            }
            EngineError::UnknownWorkspace(_) => {
                Some("see your workspaces with `claude-vm workspace list`".to_owned())
            }
            EngineError::AmbiguousWorkspace { .. } => {
                Some("type more of the id, or use the workspace's name".to_owned())
            }
            EngineError::UnknownTarget(_) => Some(
                "give a workspace name or id, an existing folder, or a git URL (https://, ssh://, git@host:repo, file://)"
                    .to_owned(),
            ),
            EngineError::UnknownChat(_) => {
                Some("see conversations with `claude-vm chat list`".to_owned())
            }
            EngineError::UnknownProvider(_) => {
                Some("see configured providers with `claude-vm provider list`".to_owned())
            }
            EngineError::ProviderInUse { .. } => {
                Some("delete those workspaces first (`claude-vm workspace delete <ws>`)".to_owned())
            }
            EngineError::Transition { name, source: TransitionError::InError(_) } => Some(format!(
                "remove it with `claude-vm workspace delete {name}` and create it again"
            )),
            EngineError::Transition { source: TransitionError::BeingCreated, .. } => {
                Some("wait for `up` to finish, or interrupt it".to_owned())
            }
            EngineError::Transition { source: TransitionError::Unreachable(_), .. } => {
                Some(claude_vm_provider::UNREACHABLE_HINT.to_owned())
            }
            EngineError::HostKeyChanged { known_hosts, .. } => Some(format!(
                "the workspace's key was replaced, or something is impersonating it; if you replaced it yourself, delete its line from {}",
                known_hosts.display()
            )),
            _ => None,
        }
    }
}
