//! The use cases of claude-vm, shared by the CLI and (later) the server.
//!
//! The engine ties the domain core to the state store and the providers: it decides what to
//! do with [`claude_vm_core`], records it with [`claude_vm_store`], and carries it out through
//! [`claude_vm_provider::Provider`] trait objects. It prints nothing: progress goes through a
//! [`Reporter`], results come back as plain data ([`WorkspaceView`]) that front ends render.

mod agents;
mod backups;
mod chats;
mod devcontainer;
mod doctor;
mod error;
mod idle;
mod link;
mod notify;
mod oci;
pub mod pack;
mod providers;
mod report;
pub mod ssh;
mod workspaces;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use claude_vm_core::config::Config;
use claude_vm_provider::Provider;
use claude_vm_provider::docker::DockerProvider;
use claude_vm_store::{Home, Store};

pub use agents::{AgentView, mask};
pub use backups::BackupOutcome;
pub use backups::{
    ExportManifest, ExportOutcome, RestoreRequest, inspect_export,
    read_manifest as read_export_manifest,
};
pub use chats::{ChatView, SUPPORTED_AGENTS};
pub use claude_vm_backup::{BackupError, BackupReport, SnapshotInfo};
pub use claude_vm_link::{Events, ExecEvent, ExecInput, ExecSession, Link, LinkError};
pub use doctor::{Check, Verdict};
pub use error::{EngineError, Result};
pub use idle::{IdleStopSet, Wake};
pub use notify::TestOutcome;
pub use providers::{AddDialog, MachineView, MissingOption, ProviderView};
pub use report::{NullReporter, Reporter};
pub use tokio_util::sync::CancellationToken;
pub use workspaces::{
    DeleteOutcome, DeleteRequest, DownOutcome, DownRequest, FinalBackup, UpOutcome, UpRequest,
    WorkspaceView, human_bytes, pid_alive,
};

pub use claude_vm_provider::UNREACHABLE_HINT;

/// An opened claude-vm home: config, state database, provider connections.
pub struct Engine {
    home: Home,
    config: Config,
    store: Mutex<Store>,
    providers: Mutex<HashMap<String, Arc<dyn Provider>>>,
    /// What to do about each provider that failed to answer `list`, by name.
    hints: Mutex<HashMap<String, String>>,
    links: Mutex<HashMap<claude_vm_core::WorkspaceId, claude_vm_link::Link>>,
    /// What commands do with a stopped workspace they need.
    wake: Mutex<Wake>,
    /// The server's address, for the links in notifications.
    link_base: Mutex<Option<String>>,
    /// The idle-stop policy each workspace's daemon said it started with, until the policy
    /// is applied after that start.
    started_policy: Mutex<HashMap<String, claude_vm_protocol::api::LifecyclePolicy>>,
    /// Wakes the server's notification sender.
    notify_kick: Arc<tokio::sync::Notify>,
}

impl Engine {
    /// Open (creating on first use) the home, its config and its database. `config_path`
    /// overrides `<home>/config.yaml`.
    pub fn open(home: Home, config_path: Option<PathBuf>) -> Result<Engine> {
        home.ensure()?;
        let config_path = match config_path {
            Some(p) => p,
            None => {
                let p = home.config_path();
                claude_vm_store::write_default_config(&p)?;
                p
            }
        };
        let config = claude_vm_store::load_config(&config_path)?;
        let store = Store::open(&home.db_path())?;
        Ok(Engine {
            home,
            config,
            store: Mutex::new(store),
            providers: Mutex::new(HashMap::new()),
            hints: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            wake: Mutex::new(Wake::Start(Arc::new(NullReporter))),
            link_base: Mutex::new(None),
            started_policy: Mutex::new(HashMap::new()),
            notify_kick: Arc::new(tokio::sync::Notify::new()),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    /// Run `f` with the store. Never held across an await. SQLite may wait for another
    /// process's write (`busy_timeout`), so on a multi-threaded runtime the call moves off
    /// the async worker ([`off_worker`]).
    fn store<T>(
        &self,
        f: impl FnOnce(&Store) -> std::result::Result<T, claude_vm_store::StoreError>,
    ) -> Result<T> {
        off_worker(|| {
            let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            Ok(f(&store)?)
        })
    }

    /// Take the lock of one workspace (held until the file is dropped). The `flock` waits
    /// on the blocking pool, never on an async worker: a server serving many requests for
    /// one workspace must keep answering the others while they queue for it.
    async fn lock_workspace(&self, id: &claude_vm_core::WorkspaceId) -> Result<std::fs::File> {
        let home = self.home.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || home.lock_workspace(&id))
            .await
            .map_err(|e| {
                EngineError::InvalidInput(format!("taking the workspace lock failed: {e}"))
            })?
            .map_err(EngineError::from)
    }

    /// What the user can do about a provider that [`Engine::list`] could not reach.
    pub fn unreachable_hint(&self, provider: &str) -> String {
        if let Some(h) = self
            .hints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(provider)
        {
            return h.clone();
        }
        self.provider_client(provider)
            .map(|p| p.unreachable_hint())
            .unwrap_or_else(|_| UNREACHABLE_HINT.to_owned())
    }

    /// The provider client for a configured provider name.
    fn provider_client(&self, name: &str) -> Result<Arc<dyn Provider>> {
        if let Some(p) = self
            .providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(p.clone());
        }
        let record = self
            .store(|s| s.provider(name))?
            .ok_or_else(|| EngineError::UnknownProvider(name.to_owned()))?;
        let client: Arc<dyn Provider> = match record.kind {
            claude_vm_core::provider::ProviderKind::Docker => {
                Arc::new(DockerProvider::new(&record.options)?)
            }
            claude_vm_core::provider::ProviderKind::Ssh => Arc::new(
                claude_vm_provider::ssh::provider(&record.options, self.home.root())?,
            ),
            claude_vm_core::provider::ProviderKind::Devpod => {
                Arc::new(claude_vm_provider::devpod::DevpodProvider::new(
                    name,
                    &record.options,
                    &self.provider_folder(name),
                )?)
            }
        };
        self.providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), client.clone());
        Ok(client)
    }
}

/// Bytes (a digest) as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Run a call that may block (SQLite, file locks) without stalling the async worker it is
/// called from: on a multi-threaded runtime the worker hands its other tasks to the rest of
/// the pool for the duration ([`tokio::task::block_in_place`]); elsewhere it simply runs.
pub(crate) fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
