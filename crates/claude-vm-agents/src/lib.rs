//! Coding agents' conversations, independent of the daemon that serves them:
//!
//! - [`adapter`]: the [`Adapter`](adapter::Adapter) trait (how to start an agent kind,
//!   deliver a message, interrupt, answer an approval, understand its output) and Claude
//!   Code's stream-json; [`codex`]: Codex's app-server JSON-RPC; [`acp`]: the Agent Client
//!   Protocol (Gemini CLI, Goose, Qwen Code, any ACP agent).
//! - [`transcript`]: the append-only transcript store (repaired on open, appends
//!   acknowledged only once durable).
//! - [`manager`]: the conversations, one actor task each, and their agent processes.
//! - [`process`]: the [`Host`] the daemon supplies (how an agent is started as the agent
//!   user, where activity is reported), pid records and safe signalling.
//! - [`lines`]: bounded line reading of agent output; [`redact`]: masking the agent's
//!   configured secrets in what is served, stored and logged.

pub mod acp;
pub mod adapter;
pub mod codex;
pub mod lines;
pub mod manager;
pub mod process;
pub mod redact;
pub mod transcript;

pub use manager::{ConvError, Handle, Manager, read_transcript};
pub use process::{Direct, Host};
