//! The claude-vm binary inside a workspace: installed when it differs, and the daemon's ready handshake after start.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use claude_vm_core::WorkspaceId;
use claude_vm_protocol as protocol;
use claude_vm_provider::{ExecSpec, Provider};
use claude_vm_store::WorkspaceRecord;
use tokio_util::sync::CancellationToken;

use crate::pack::{self};
use crate::{Engine, EngineError, Reporter, Result};

use super::*;

/// How long `agent health` may take (it waits 5 s for the daemon itself).
const HEALTH_DEADLINE: Duration = Duration::from_secs(30);

impl Engine {
    /// Put `bin` in the workspace, unless it is there already (shared from this machine,
    /// [`Engine::binary_mount`], or copied in before).
    pub(super) async fn install_binary(
        &self,
        provider: &dyn Provider,
        id: &WorkspaceId,
        bin: &SelfBinary,
    ) -> Result<()> {
        if provider.mounts_local_folders() {
            // Workspaces that share it see the current one from now on.
            let _ = self.shared_binary(bin).await;
        }
        let there = provider
            .stat(id, protocol::BINARY_PATH)
            .await
            .ok()
            .flatten();
        let same = there.is_some_and(|s| {
            s.size == bin.size
                && s.mtime
                    .as_deref()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|t| t.as_second() == bin.mtime as i64)
        });
        if same {
            return Ok(());
        }
        let tar = pack::stream(None, vec![binary_extra(bin)], Arc::new(AtomicU64::new(0)));
        provider.upload(id, "/", tar).await?;
        Ok(())
    }

    /// The read-only mount of this machine's folder holding `bin` at the binary's place in
    /// a workspace, when the provider can mount this machine's folders: no copy of the binary
    /// (tens of MB) per workspace, and every workspace made so runs the current one after
    /// its next start. `None` (the binary is copied in) otherwise, or when the folder
    /// cannot be made.
    pub(super) async fn binary_mount(
        &self,
        provider: &dyn Provider,
        bin: &SelfBinary,
    ) -> Option<claude_vm_provider::ExtraMount> {
        if !provider.mounts_local_folders() {
            return None;
        }
        match self.shared_binary(bin).await {
            Ok(dir) => Some(claude_vm_provider::ExtraMount {
                source: dir.display().to_string(),
                target: protocol::BINARY_DIR.to_owned(),
                read_only: true,
                bind: true,
            }),
            Err(e) => {
                tracing::warn!("the binary is copied into the workspace: {e}");
                None
            }
        }
    }

    /// `$CLAUDE_VM_HOME/runtime/`, holding `bin` as `claude-vm` (same size and time, so the
    /// same fingerprint): replaced at once (renamed into place) when it holds another.
    async fn shared_binary(&self, bin: &SelfBinary) -> Result<std::path::PathBuf> {
        let dir = self.home.root().join("runtime");
        let (from, size, mtime) = (bin.path.clone(), bin.size, bin.mtime);
        let target = dir.clone();
        crate::off_worker(move || -> std::io::Result<()> {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let file = target.join("claude-vm");
            if let Ok(m) = std::fs::metadata(&file)
                && m.size() == size
                && m.mtime() == mtime as i64
            {
                return Ok(());
            }
            std::fs::create_dir_all(&target)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
            let part = target.join(format!(".claude-vm.{}.part", std::process::id()));
            let placed = (|| {
                std::fs::copy(&from, &part)?;
                let f = std::fs::File::options().write(true).open(&part)?;
                f.set_permissions(std::fs::Permissions::from_mode(0o755))?;
                f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(mtime))?;
                f.sync_all()?;
                std::fs::rename(&part, &file)
            })();
            if placed.is_err() {
                let _ = std::fs::remove_file(&part);
            }
            placed
        })
        .map_err(|e| {
            EngineError::InvalidInput(format!("cannot keep the binary in {}: {e}", dir.display()))
        })?;
        Ok(dir)
    }

    pub(super) async fn exec_health(
        &self,
        provider: &dyn Provider,
        id: &WorkspaceId,
    ) -> Result<protocol::Health> {
        // Bounded: a daemon that is stuck (or an exec that never returns) is an answer too,
        // and `up` replaces and restarts what does not answer.
        let spec = ExecSpec {
            cmd: vec![
                protocol::BINARY_PATH.into(),
                "agent".into(),
                "health".into(),
                "--wait".into(),
                "5".into(),
            ],
            ..Default::default()
        };
        let out = tokio::time::timeout(HEALTH_DEADLINE, provider.exec(id, &spec))
            .await
            .map_err(|_| EngineError::Workspace {
                name: id.to_string(),
                message: format!(
                    "the daemon did not answer its health check within {}s",
                    HEALTH_DEADLINE.as_secs()
                ),
            })??;
        if out.exit_code != 0 {
            return Err(EngineError::Workspace {
                name: id.to_string(),
                message: format!(
                    "daemon health check failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        serde_json::from_slice(&out.stdout).map_err(|e| EngineError::Workspace {
            name: id.to_string(),
            message: format!("daemon health check answered nonsense: {e}"),
        })
    }

    /// Start the container and wait for its daemon's greeting; replace the binary and
    /// restart once if the daemon is not this build.
    pub(super) async fn start_verified(
        &self,
        provider: &dyn Provider,
        w: &WorkspaceRecord,
        bin: &SelfBinary,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let ws_err = |message: String| EngineError::Workspace {
            name: w.name.to_string(),
            message,
        };
        for attempt in 0..2 {
            let line = tokio::select! {
                r = provider.start_and_wait(&w.id, READY_TIMEOUT) => r?,
                _ = cancel.cancelled() => return Err(EngineError::Interrupted),
            };
            let health = parse_ready(&line).map_err(ws_err)?;
            if health.protocol != protocol::PROTOCOL_VERSION && attempt == 1 {
                return Err(ws_err(format!(
                    "its daemon speaks protocol {} but this claude-vm speaks {}",
                    health.protocol,
                    protocol::PROTOCOL_VERSION
                )));
            }
            if health.fingerprint == bin.fingerprint {
                if let Some(policy) = health.lifecycle {
                    self.daemon_started_with(&w.id, policy);
                }
                return Ok(());
            }
            if attempt == 1 {
                return Err(ws_err(format!(
                    "its daemon runs build {} after replacing it with {}",
                    health.fingerprint, bin.fingerprint
                )));
            }
            let what = if health.version == protocol::VERSION {
                format!("another build of claude-vm {}", health.version)
            } else {
                format!("claude-vm {}", health.version)
            };
            reporter.step(&format!(
                "the workspace runs {what}; replacing it with this one ({})",
                protocol::VERSION
            ));
            self.install_binary(provider, &w.id, bin).await?;
            provider.stop(&w.id, Duration::from_secs(10)).await?;
        }
        unreachable!("the loop returns")
    }
}
