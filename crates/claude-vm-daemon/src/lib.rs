//! The in-workspace side of claude-vm, run from the same binary as the CLI:
//!
//! - [`init`]: the container's PID 1 (`claude-vm agent init`). Reaps every orphaned child,
//!   starts the daemon and restarts it if it dies, forwards stop signals. It is tiny and has
//!   no async runtime, so it is hard to kill by accident and never loses a child's status.
//! - [`server`]: the daemon (`claude-vm agent serve`). Owns the workspace's state under
//!   `/workspace/.claude-vm/`, listens on a root-only Unix socket and answers the versioned
//!   API (`/v1/...`). It outlives every connection from the control side.
//! - [`client`]: talks to the daemon over its socket (`claude-vm agent health`).

pub mod activity;
pub mod agent_user;
pub mod agents;
pub mod api;
pub mod backup;
pub mod bridge;
pub mod client;
pub mod conv_routes;
pub mod exec;
pub mod files;
pub mod git;
pub mod home;
pub mod init;
pub mod lifecycle;
pub mod routes;
pub mod server;
pub mod ssh;
pub mod state;
