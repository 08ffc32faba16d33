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
    pub(crate) async fn resume(
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
        // Once it runs, its last snapshot no longer holds all of it.
        self.store(|s| s.backup_dirty(&w.id))?;
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
                // A note it was left with (a setup command that failed) stays.
                let note = w
                    .status_reason
                    .clone()
                    .filter(|_| w.status == Status::Running);
                Ok(UpOutcome::AlreadyRunning(
                    self.now_running(w, note, reporter).await?,
                ))
            }
            Plan::Start => {
                reporter.step(&format!("starting {}", w.name));
                // The daemon's greeting carries its build; when it is not this one (an
                // upgrade happened in between), start_verified replaces it and restarts.
                self.start_verified(provider.as_ref(), &w, &bin, reporter, cancel)
                    .await?;
                let note = self
                    .devcontainer_started(provider.as_ref(), &w, reporter)
                    .await;
                Ok(UpOutcome::Resumed(
                    self.now_running(w, note, reporter).await?,
                ))
            }
            Plan::Stop | Plan::Remove => Err(ws_err("unexpected plan for up".to_owned())),
        }
    }

    /// `workspace up WS --rebuild`: the container of a workspace made from a
    /// devcontainer.json made again from the file as it is now (its image rebuilt); the
    /// volume, and every file, conversation and cache on it, stays.
    pub(crate) async fn rebuild(
        &self,
        w: WorkspaceRecord,
        req: &UpRequest,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<UpOutcome> {
        let _lock = self.lock_workspace(&w.id).await?;
        let w = self
            .store(|s| s.workspace(&w.id))?
            .ok_or_else(|| EngineError::UnknownWorkspace(w.id.to_string()))?;
        let ws_err = |message: String| EngineError::Workspace {
            name: w.name.to_string(),
            message,
        };
        let Some(name) = self.devcontainer_of(&w)? else {
            return Err(ws_err(
                "--rebuild applies to a workspace made from a devcontainer.json; this one was not"
                    .to_owned(),
            ));
        };
        let root = match &w.source {
            Source::Path(p) if !req.no_local_paths && Path::new(p).is_dir() => PathBuf::from(p),
            _ => {
                return Err(ws_err(
                    "--rebuild reads the devcontainer.json of the folder the workspace was made from, and that folder is not on this machine".to_owned(),
                ));
            }
        };
        let again = UpRequest {
            devcontainer: name,
            provider: Some(w.provider.clone()),
            rebuild: true,
            ..UpRequest::default()
        };
        let dir = project_dir(&w.project);
        let prepared = self
            .prepare_devcontainer(&root, &again, w.id.as_str(), &dir, reporter)
            .await?
            .ok_or_else(|| {
                ws_err(format!(
                    "{} has no devcontainer.json any more",
                    root.display()
                ))
            })?;
        let provider = self.provider_client(&w.provider)?;
        let placed = provider
            .place(&w.id, &|line: &str| reporter.step(line))
            .await?;
        placed
            .as_deref()
            .unwrap_or(provider.as_ref())
            .ping()
            .await?;
        tokio::select! {
            r = self.devcontainer_image(placed.as_deref().unwrap_or(provider.as_ref()), &prepared, reporter) => r?,
            _ = cancel.cancelled() => return Err(EngineError::Interrupted),
        }
        if cancel.is_cancelled() {
            return Err(EngineError::Interrupted);
        }
        reporter.step(&format!(
            "replacing the container of {}; its volume and files stay",
            w.name
        ));
        provider.stop(&w.id, Duration::from_secs(10)).await?;
        provider.remove_container(&w.id).await?;
        let replaced = async {
            let bin = self_binary()?;
            let shared = self.binary_mount(provider.as_ref(), &bin).await;
            provider
                .create(&self.container_spec(&w, &prepared.image, Some(&prepared), shared.as_ref()))
                .await?;
            self.store(|s| s.set_image(&w.id, &prepared.image))?;
            self.install_binary(provider.as_ref(), &w.id, &bin).await?;
            reporter.step("starting the workspace");
            self.start_verified(provider.as_ref(), &w, &bin, reporter, cancel)
                .await
        };
        if let Err(e) = replaced.await {
            let reason = format!(
                "its container was removed for a rebuild that then failed ({e}); its files are on its volume: `claude-vm workspace up {} --rebuild` tries again",
                w.name
            );
            self.store(|s| s.set_status(&w.id, Status::Error, Some(&reason)))?;
            return Err(e);
        }
        let w = self.store(|s| s.workspace(&w.id))?.unwrap_or(w);
        self.devcontainer_keep(provider.as_ref(), &w, &prepared, reporter)
            .await?;
        let note = self
            .devcontainer_created(provider.as_ref(), &w, &prepared, &dir, reporter)
            .await?;
        Ok(UpOutcome::Resumed(
            self.now_running(w, note, reporter).await?,
        ))
    }

    /// A workspace that runs now: recorded so (with `note` as its status reason), given
    /// its idle-stop policy, and shown.
    pub(super) async fn now_running(
        &self,
        w: WorkspaceRecord,
        note: Option<String>,
        reporter: &dyn Reporter,
    ) -> Result<WorkspaceView> {
        self.store(|s| s.set_status(&w.id, Status::Running, note.as_deref()))?;
        self.apply_idle_policy(&w, reporter).await;
        let fresh = self.store(|s| s.workspace(&w.id))?.unwrap_or(w);
        Ok(WorkspaceView::new(
            &fresh,
            &Observed {
                status: Status::Running,
                reason: note,
            },
        ))
    }

    /// `workspace down`: a final backup (a failure is reported, never stops the stop),
    /// then stop.
    pub async fn down(&self, req: &DownRequest, reporter: &dyn Reporter) -> Result<DownOutcome> {
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
        let mut backup = FinalBackup::Skipped;
        if plan == Plan::Stop && req.backup && self.config.backup.enabled {
            reporter.step(&format!("taking a final backup of {}", w.name));
            backup = match self.backup_locked(&w, true, reporter).await {
                Ok(r) if r.unchanged => FinalBackup::UpToDate {
                    snapshot: r.snapshot.id,
                },
                Ok(r) => FinalBackup::Taken {
                    snapshot: r.snapshot.id,
                },
                Err(e) => {
                    let hint = e.hint().map(|h| format!(" ({h})")).unwrap_or_default();
                    reporter.warn(&format!(
                        "the final backup failed: {e}{hint}; stopping {} anyway",
                        w.name
                    ));
                    FinalBackup::Failed {
                        error: e.to_string(),
                    }
                }
            };
        }
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
                if res.is_err() {
                    self.store(|s| s.backup_dirty(&w.id))?;
                }
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
        // Stopped by hand now, whatever stopped it before.
        self.store(|s| s.set_idle_since(&w.id, None))?;
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
        Ok(DownOutcome {
            workspace: WorkspaceView::new(&fresh, &observed),
            stopped_now,
            backup,
        })
    }

    /// `workspace delete`: a final backup (or, with `purge`, none, and every snapshot
    /// removed afterwards), then the container, the volume and the record. Without a
    /// successful final backup nothing is deleted unless `force`.
    pub async fn delete(
        &self,
        req: &DeleteRequest,
        reporter: &dyn Reporter,
    ) -> Result<DeleteOutcome> {
        let target = req.target.as_str();
        let w = self.find_workspace(target)?;
        let _lock = self.lock_workspace(&w.id).await?;
        let w = self
            .store(|s| s.workspace(&w.id))?
            .ok_or_else(|| EngineError::UnknownWorkspace(target.to_owned()))?;
        let provider = self.provider_client(&w.provider)?;
        let live = self.live_state_checked(provider.as_ref(), &w.id).await?;
        let observed = observe(&w, &live);
        workspace::plan(&observed, Action::Delete).map_err(|e| EngineError::Transition {
            name: w.name.to_string(),
            source: e,
        })?;
        let backup = if req.purge || !self.config.backup.enabled {
            FinalBackup::Skipped
        } else if !matches!(observed.status, Status::Running | Status::Stopped) {
            // Never made whole (a failed or killed `up`) or broken: nothing to start and
            // read; its earlier snapshots, if any, stay.
            reporter.warn(&format!(
                "{} is {}, so no final backup is taken",
                w.name, observed.status
            ));
            FinalBackup::Skipped
        } else {
            let b = self
                .final_backup(provider.as_ref(), &w, &live, reporter)
                .await;
            if let FinalBackup::Failed { error } = &b {
                if !req.force {
                    return Err(EngineError::FinalBackupFailed {
                        name: w.name.to_string(),
                        error: error.clone(),
                    });
                }
                reporter.warn(&format!(
                    "the final backup failed ({error}); deleting anyway (--force)"
                ));
            }
            b
        };
        self.forget_link(&w.id);
        reporter.step(&format!("deleting {} (container and volume)", w.name));
        provider.remove(&w.id).await?;
        self.store(|s| s.delete_workspace(&w.id))?;
        self.home.remove_lock(w.id.as_str());
        let purged = if req.purge {
            reporter.step(&format!("removing every backup of {}", w.name));
            let n = self.purge_backups(w.id.as_str()).await?;
            self.store(|s| s.forget_backup_state(&w.id))?;
            Some(n)
        } else {
            None
        };
        let repository = self.restic_repository().ok().map(|(r, _)| r);
        Ok(DeleteOutcome {
            workspace: WorkspaceView::new(&w, &observed),
            backup,
            purged,
            repository,
        })
    }

    /// The last backup of a workspace about to be deleted: taken now if it runs; if it is
    /// stopped and its last snapshot was taken just before it stopped, that one; else it is
    /// started to be backed up.
    async fn final_backup(
        &self,
        provider: &dyn claude_vm_provider::Provider,
        w: &WorkspaceRecord,
        live: &claude_vm_core::LiveState,
        reporter: &dyn Reporter,
    ) -> FinalBackup {
        let failed = |e: EngineError| FinalBackup::Failed {
            error: e.to_string(),
        };
        if !matches!(live, claude_vm_core::LiveState::Running) {
            match self.store(|s| s.backup_state(&w.id)) {
                Ok(Some(st)) if st.clean => {
                    if let Some(snapshot) = st.snapshot {
                        return FinalBackup::UpToDate { snapshot };
                    }
                }
                Ok(_) => {}
                Err(e) => return failed(e),
            }
            if matches!(live, claude_vm_core::LiveState::Missing) {
                return FinalBackup::Failed {
                    error: "its container no longer exists, so it cannot be backed up".to_owned(),
                };
            }
            reporter.step(&format!("starting {} to take a final backup", w.name));
            let bin = match self_binary() {
                Ok(b) => b,
                Err(e) => return failed(e),
            };
            if let Err(e) = self
                .start_verified(provider, w, &bin, reporter, &CancellationToken::new())
                .await
            {
                return failed(e);
            }
        }
        reporter.step(&format!("taking a final backup of {}", w.name));
        match self.backup_locked(w, false, reporter).await {
            Ok(r) if r.unchanged => FinalBackup::UpToDate {
                snapshot: r.snapshot.id,
            },
            Ok(r) => FinalBackup::Taken {
                snapshot: r.snapshot.id,
            },
            Err(e) => failed(e),
        }
    }
}
