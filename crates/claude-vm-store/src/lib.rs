//! The control side's state, under `$CLAUDE_VM_HOME` (default `~/.claude-vm`):
//!
//! ```text
//! ~/.claude-vm/            0700
//!   state.db               SQLite (WAL): providers, workspaces, conversations, server
//!                          credentials (hashes only)
//!   config.yaml            user defaults (default provider, image, agents)
//!   locks/<id>.lock        per-workspace advisory locks held during lifecycle actions
//!   accounts/<kind>.json   agent accounts from `agents login` (0600)
//! ```
//!
//! The store is an index and a cache: the workspaces themselves are the source of truth for
//! what happens inside them. SQLite in WAL mode with a busy timeout lets concurrent CLI
//! invocations read and write without corrupting anything; uniqueness (workspace names,
//! provider names) is enforced by the schema, so two racing `up --name x` cannot both win.

mod accounts;
mod auth;
mod config;
mod db;
mod home;
mod lifecycle;
mod notify;

pub use accounts::SavedAccount;
pub use auth::TokenRecord;
pub use config::{ConfigError, load_config, write_default_config};
pub use db::{BackupState, ConversationRecord, ProviderRecord, Store, StoreError, WorkspaceRecord};
pub use home::{Home, HomeError, write_file_atomic};
pub use lifecycle::OutboxMessage;
pub use notify::{ChannelStatus, PendingNotification};
