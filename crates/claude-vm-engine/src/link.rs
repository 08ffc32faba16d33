//! Reaching inside running workspaces: open (and cache) the link to a workspace's daemon.

use claude_vm_core::{LiveState, Status};
use claude_vm_link::Link;
use claude_vm_store::WorkspaceRecord;

use crate::{Engine, EngineError, Result};

impl Engine {
    /// Drop the cached link to a workspace that stopped or went away.
    pub(crate) fn forget_link(&self, id: &claude_vm_core::WorkspaceId) {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// The link to a running workspace named by id, name or prefix. A cached link whose
    /// connection closed (the workspace may have stopped, by itself or from another
    /// process) is used again only once the provider says the workspace runs.
    pub async fn link(&self, target: &str) -> Result<(WorkspaceRecord, Link)> {
        let w = self.find_workspace(target)?;
        let cached = self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&w.id)
            .cloned();
        if let Some(link) = &cached
            && link.is_open().await
        {
            return Ok((w, link.clone()));
        }
        let provider = self.provider_client(&w.provider)?;
        match self.live_state_checked(provider.as_ref(), &w.id).await? {
            LiveState::Running if w.status != Status::Creating => {}
            _ => {
                self.forget_link(&w.id);
                return Err(EngineError::NotRunning {
                    name: w.name.to_string(),
                });
            }
        }
        if let Some(link) = cached {
            return Ok((w, link));
        }
        let link = Link::connect(provider, w.id.clone()).await?;
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(w.id.clone(), link.clone());
        Ok((w, link))
    }
}
