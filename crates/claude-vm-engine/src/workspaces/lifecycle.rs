//! Resume, `down` and `delete` of an existing workspace, each under its lock.

use std::time::Duration;

use claude_vm_core::Status;
use claude_vm_core::workspace::{self, Action, Observed, Plan};
use claude_vm_provider::ProviderError;
use claude_vm_store::WorkspaceRecord;
use tokio_util::sync::CancellationToken;

use crate::{Engine, EngineError, Reporter, Result};

use super::*;

impl Engine {
    pub(super) async fn resume(
        &self,
        w: WorkspaceRecord,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<UpOutcome> {
        let _lock = self.lock_workspace(&w.id).await?;
        // Re-read under the lock: another process may have changed it meanwhile.
        let w = self
            .store(|s| s.workspace(&w.id))?
            .ok_or_else(|| EngineError::UnknownWorkspace(w.id.to_string()))?;
        let provider = self.provider_client(&w.provider)?;
        let observed = observe(
            &w,
            &self.live_state_checked(provider.as_ref(), &w.id).await?,
        );
        let plan = workspace::plan(&observed, Action::Up).map_err(|e| EngineError::Transition {
            name: w.name.to_string(),
            source: e,
        })?;
        let bin = self_binary()?;
        let ws_err = |message: String| EngineError::Workspace {
            name: w.name.to_string(),
            message,
        };
        match plan {
            Plan::AlreadyThere => {
                reporter.step(&format!(
                    "{} is already running; checking its daemon",
                    w.name
                ));
                let health = self.exec_health(provider.as_ref(), &w.id).await;
                match health {
                    Ok(h) if h.fingerprint == bin.fingerprint => {}
                    other => {
                        let why = match other {
                            Ok(h) => format!("it runs claude-vm {} ({})", h.version, h.fingerprint),
                            Err(e) => format!("its daemon did not answer ({e})"),
                        };
                        reporter.step(&format!(
                            "{why}; installing this claude-vm and restarting it"
                        ));
                        self.install_binary(provider.as_ref(), &w.id, &bin).await?;
                        provider.stop(&w.id, Duration::from_secs(10)).await?;
                        self.start_verified(provider.as_ref(), &w, &bin, reporter, cancel)
                            .await?;
                    }
                }
                self.store(|s| s.set_status(&w.id, Status::Running, None))?;
                let fresh = self.store(|s| s.workspace(&w.id))?.unwrap_or(w);
                Ok(UpOutcome::AlreadyRunning(WorkspaceView::new(
                    &fresh,
                    &Observed {
                        status: Status::Running,
                        reason: None,
                    },
                )))
            }
            Plan::Start => {
                reporter.step(&format!("starting {}", w.name));
                // The daemon's greeting carries its build; when it is not this one (an
                // upgrade happened in between), start_verified replaces it and restarts.
                self.start_verified(provider.as_ref(), &w, &bin, reporter, cancel)
                    .await?;
                self.store(|s| s.set_status(&w.id, Status::Running, None))?;
                let fresh = self.store(|s| s.workspace(&w.id))?.unwrap_or(w);
                Ok(UpOutcome::Resumed(WorkspaceView::new(
                    &fresh,
                    &Observed {
                        status: Status::Running,
                        reason: None,
                    },
                )))
            }
            Plan::Stop | Plan::Remove => Err(ws_err("unexpected plan for up".to_owned())),
        }
    }

    /// `workspace down`.
    pub async fn down(
        &self,
        req: &DownRequest,
        reporter: &dyn Reporter,
    ) -> Result<(WorkspaceView, bool)> {
        let w = self.find_workspace(&req.target)?;
        let _lock = self.lock_workspace(&w.id).await?;
        let w = self
            .store(|s| s.workspace(&w.id))?
            .ok_or_else(|| EngineError::UnknownWorkspace(req.target.clone()))?;
        let provider = self.provider_client(&w.provider)?;
        let observed = observe(
            &w,
            &self.live_state_checked(provider.as_ref(), &w.id).await?,
        );
        let plan =
            workspace::plan(&observed, Action::Down).map_err(|e| EngineError::Transition {
                name: w.name.to_string(),
                source: e,
            })?;
        self.forget_link(&w.id);
        let stopped_now = match plan {
            Plan::AlreadyThere => false,
            _ => {
                reporter.step(&format!("stopping {}", w.name));
                let res = if req.force {
                    provider.kill(&w.id).await
                } else {
                    provider.stop(&w.id, req.grace).await
                };
                match res {
                    Ok(()) => {}
                    Err(ProviderError::NotFound { .. }) => {
                        return Err(EngineError::Workspace {
                            name: w.name.to_string(),
                            message: "its container no longer exists; nothing to stop (delete the workspace to clean up)".to_owned(),
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
                true
            }
        };
        let observed = if observed.status == Status::Error {
            observed
        } else {
            self.store(|s| s.set_status(&w.id, Status::Stopped, None))?;
            Observed {
                status: Status::Stopped,
                reason: None,
            }
        };
        let fresh = self.store(|s| s.workspace(&w.id))?.unwrap_or(w);
        Ok((WorkspaceView::new(&fresh, &observed), stopped_now))
    }

    /// `workspace delete`: remove the container and the volume, then the record.
    pub async fn delete(&self, target: &str, reporter: &dyn Reporter) -> Result<WorkspaceView> {
        let w = self.find_workspace(target)?;
        let _lock = self.lock_workspace(&w.id).await?;
        let w = self
            .store(|s| s.workspace(&w.id))?
            .ok_or_else(|| EngineError::UnknownWorkspace(target.to_owned()))?;
        let provider = self.provider_client(&w.provider)?;
        let observed = observe(
            &w,
            &self.live_state_checked(provider.as_ref(), &w.id).await?,
        );
        workspace::plan(&observed, Action::Delete).map_err(|e| EngineError::Transition {
            name: w.name.to_string(),
            source: e,
        })?;
        self.forget_link(&w.id);
        reporter.step(&format!("deleting {} (container and volume)", w.name));
        provider.remove(&w.id).await?;
        self.store(|s| s.delete_workspace(&w.id))?;
        self.home.remove_lock(w.id.as_str());
        Ok(WorkspaceView::new(&w, &observed))
    }
}
