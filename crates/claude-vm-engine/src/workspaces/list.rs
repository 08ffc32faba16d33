//! `workspace list`: live status from the providers, reconciled with the index.

use std::collections::HashMap;

use claude_vm_core::workspace::LiveState;
use claude_vm_core::{Status, WorkspaceId};
use futures_util::future::join_all;

use crate::{Engine, EngineError, Result};

use super::*;

impl Engine {
    /// `workspace list -l`: [`Engine::list`] plus each running workspace's last activity,
    /// asked of the workspaces in parallel (a workspace that does not answer in time shows
    /// none).
    pub async fn list_detailed(&self) -> Result<(Vec<WorkspaceView>, Vec<(String, String)>)> {
        let (mut views, unreachable) = self.list().await?;
        self.fill_activity(&mut views).await;
        Ok((views, unreachable))
    }

    /// One workspace (id, name or unique prefix) as the detailed list shows it; only its own
    /// daemon is asked for its last activity.
    pub async fn show(&self, query: &str) -> Result<WorkspaceView> {
        let record = self.find_workspace(query)?;
        let (views, _) = self.list().await?;
        let mut view = views
            .into_iter()
            .find(|v| v.id == record.id.as_str())
            .ok_or_else(|| EngineError::UnknownWorkspace(query.to_owned()))?;
        self.fill_activity(std::slice::from_mut(&mut view)).await;
        Ok(view)
    }

    /// Ask each running workspace of `views` for its last activity, in parallel.
    pub(super) async fn fill_activity(&self, views: &mut [WorkspaceView]) {
        let asks = views.iter().map(|v| async move {
            if v.status != Status::Running {
                return None;
            }
            let ask = async {
                let (_, link) = self.link(&v.id).await.ok()?;
                link.activity().await.ok()
            };
            tokio::time::timeout(STATUS_TIMEOUT, ask)
                .await
                .ok()
                .flatten()
        });
        let answers = join_all(asks).await;
        for (v, a) in views.iter_mut().zip(answers) {
            v.last_activity = a.and_then(|a| a.last_activity);
        }
    }

    pub async fn list(&self) -> Result<(Vec<WorkspaceView>, Vec<(String, String)>)> {
        let records = self.all_workspaces()?;
        let mut names: Vec<String> = records.iter().map(|r| r.provider.clone()).collect();
        names.sort();
        names.dedup();
        let queries = names.iter().map(|name| async move {
            let states = match self.provider_client(name) {
                Ok(client) => match tokio::time::timeout(STATUS_TIMEOUT, client.states()).await {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(e)) => {
                        if let Some(hint) = e.hint() {
                            self.hints
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(name.clone(), hint);
                        }
                        Err(e.to_string())
                    }
                    Err(_) => Err(format!("no answer within {}s", STATUS_TIMEOUT.as_secs())),
                },
                Err(e) => Err(e.to_string()),
            };
            (name.clone(), states)
        });
        let results: HashMap<String, std::result::Result<HashMap<WorkspaceId, LiveState>, String>> =
            join_all(queries).await.into_iter().collect();
        let mut unreachable = Vec::new();
        for (name, res) in &results {
            if let Err(why) = res {
                unreachable.push((name.clone(), why.clone()));
            }
        }
        unreachable.sort();
        let mut views = Vec::with_capacity(records.len());
        for r in &records {
            let live = match &results[&r.provider] {
                Ok(states) => states.get(&r.id).cloned().unwrap_or(LiveState::Missing),
                Err(why) => LiveState::Unreachable(why.clone()),
            };
            let observed = observe(r, &live);
            if r.status == Status::Running && observed.status == Status::Stopped {
                self.note_stop(r).await;
            }
            let changed = observed.status != r.status
                || (observed.status == Status::Error && observed.reason != r.status_reason);
            if changed && observed.status != Status::Unknown && observed.status != Status::Creating
            {
                // Without the workspace's lock: only if nobody changed it since it was read.
                self.store(|s| {
                    s.set_status_if(
                        &r.id,
                        (r.status, r.status_reason.as_deref()),
                        observed.status,
                        observed.reason.as_deref(),
                    )
                })?;
            }
            if observed.status != Status::Running && observed.status != Status::Unknown {
                self.forget_link(&r.id);
            }
            let mut view = WorkspaceView::new(r, &observed);
            if let Some(b) = self.store(|s| s.backup_state(&r.id))? {
                view.last_backup = b.taken_at;
                view.backup_error = b.error;
            }
            if observed.status == Status::Stopped {
                view.idle_since = self.store(|s| s.idle_since(&r.id))?;
            }
            view.ports = self.devcontainer_ports(r);
            view.machine = self
                .provider_client(&r.provider)
                .ok()
                .and_then(|p| p.machine_state(&r.id));
            views.push(view);
        }
        Ok((views, unreachable))
    }
}
