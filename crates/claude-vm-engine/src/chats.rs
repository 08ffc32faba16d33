//! Conversations from the control side: `new-chat`, `chat send|log|list|stop`.
//!
//! The workspace's daemon runs and records conversations; the control side provisions the
//! agent and its account ([`crate::agents`]), tells the daemon how to run it, and keeps an
//! index so a conversation id alone finds its workspace.

use claude_vm_core::Status;
use claude_vm_link::Link;
use claude_vm_protocol::api::{AgentSpec, Conversation, NewConversation, PermissionMode};
use claude_vm_store::{ConversationRecord, WorkspaceRecord};
use serde::{Deserialize, Serialize};

use crate::{Engine, EngineError, Reporter, Result};

/// Agent kinds this build can drive.
pub const SUPPORTED_AGENTS: &[&str] = &["claude", "codex", "gemini", "goose", "qwen", "acp"];

/// A conversation as `chat list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatView {
    pub id: String,
    pub workspace: String,
    pub workspace_id: String,
    pub agent: String,
    pub title: Option<String>,
    /// `starting`, `working`, `idle`, `waiting_for_approval`, `failed`, `stopped`; or the
    /// last known one when the workspace is not running.
    pub status: String,
    pub status_reason: Option<String>,
    pub queued: u64,
    /// Whether `status` is live (asked of the running workspace) or remembered.
    pub live: bool,
    pub created_at: String,
    pub updated_at: String,
    /// The agent program's version, when known (live only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
}

fn status_str(c: &Conversation) -> String {
    serde_json::to_value(c.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl ChatView {
    fn live(ws: &WorkspaceRecord, c: &Conversation) -> Self {
        ChatView {
            id: c.id.clone(),
            workspace: ws.name.to_string(),
            workspace_id: ws.id.to_string(),
            agent: c.agent.clone(),
            title: c.title.clone(),
            status: status_str(c),
            status_reason: c.status_reason.clone(),
            queued: c.queued,
            live: true,
            created_at: c.created_at.clone(),
            updated_at: c.updated_at.clone(),
            agent_version: c.agent_version.clone(),
        }
    }
}

impl Engine {
    fn remember(&self, ws: &WorkspaceRecord, c: &Conversation) -> Result<()> {
        let record = ConversationRecord {
            id: c.id.clone(),
            workspace_id: ws.id.clone(),
            agent: c.agent.clone(),
            title: c.title.clone(),
            status: status_str(c),
            created_at: c.created_at.clone(),
            updated_at: c.updated_at.clone(),
        };
        self.store(|s| s.upsert_conversation(&record))
    }

    /// After a restore: the conversations the snapshot brought are indexed, and every agent
    /// kind they use is provisioned again (agent programs live in the container, which is
    /// new). A kind that cannot be provisioned is reported, not fatal.
    pub(crate) async fn adopt_conversations(
        &self,
        workspace: &str,
        reporter: &dyn Reporter,
    ) -> Result<usize> {
        let (ws, link) = self.link(workspace).await?;
        let provider = self.provider_client(&ws.provider)?;
        let convs = link.conversations().await?;
        let mut kinds: Vec<&str> = convs.iter().map(|c| c.agent.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            if let Err(e) = self.provision(provider.as_ref(), &ws, kind, reporter).await {
                reporter.warn(&format!(
                    "the restored conversations of {kind} cannot run until it is installed: {e}"
                ));
            }
        }
        for c in &convs {
            self.remember(&ws, c)?;
        }
        Ok(convs.len())
    }

    /// `new-chat`: start a conversation in a running workspace.
    pub async fn new_chat(
        &self,
        workspace: &str,
        agent: Option<&str>,
        message: Option<String>,
        mode: PermissionMode,
        reporter: &dyn Reporter,
    ) -> Result<ChatView> {
        // The flag, else the workspace's devcontainer.json, else config.yaml.
        let kind = match agent {
            Some(a) => a.to_owned(),
            None => self
                .find_workspace(workspace)
                .ok()
                .and_then(|w| self.devcontainer_agent(&w))
                .unwrap_or_else(|| self.config.agents.defaults.agent.clone()),
        };
        crate::agents::known_kind(&kind)?;
        if !self.config.agents.enabled.contains(&kind) {
            return Err(EngineError::InvalidInput(format!(
                "agent {kind} is not in agents.enabled in config.yaml"
            )));
        }
        if !SUPPORTED_AGENTS.contains(&kind.as_str()) {
            return Err(EngineError::InvalidInput(format!(
                "agent {kind} is not supported by this version of claude-vm yet; supported: {}",
                SUPPORTED_AGENTS.join(", ")
            )));
        }
        let (ws, link) = self.link_waking(workspace).await?;
        let provider = self.provider_client(&ws.provider)?;
        // The account first: no install is worth waiting for without one.
        let account = self.account_for_chat(provider.as_ref(), &ws, &kind).await?;
        let provisioned = self
            .provision(provider.as_ref(), &ws, &kind, reporter)
            .await?;
        let settings = self.config.agents.settings(&kind);
        if let Some(a) = &account
            && let Some((rel, bytes)) = &a.file
        {
            self.write_login_file(provider.as_ref(), &ws, rel, bytes)
                .await?;
        }
        let env = self.chat_env(&kind, account.as_ref());
        let given = account
            .as_ref()
            .map(|a| crate::agents::fingerprint(&env, a));
        let spec = AgentSpec {
            kind: kind.clone(),
            program: provisioned.program,
            args: settings.args,
            env,
            turn_timeout_secs: settings.turn_timeout,
            version: provisioned.version,
        };
        let c = link
            .new_conversation(&NewConversation {
                agent: spec,
                message,
                permission_mode: mode,
                title: None,
            })
            .await?;
        self.remember(&ws, &c)?;
        if let Some(fp) = given {
            self.store(|s| s.set_conversation_account(&c.id, &fp))?;
        }
        Ok(ChatView::live(&ws, &c))
    }

    /// Find a conversation by id or unique id prefix, in the index.
    pub fn find_chat(&self, query: &str) -> Result<(ConversationRecord, WorkspaceRecord)> {
        let all = self.store(|s| s.conversations(None))?;
        let matches: Vec<&ConversationRecord> = match all.iter().find(|c| c.id == query) {
            Some(exact) => vec![exact],
            None => all
                .iter()
                .filter(|c| !query.is_empty() && c.id.starts_with(query))
                .collect(),
        };
        match matches.as_slice() {
            [one] => {
                let ws = self
                    .store(|s| s.workspace(&one.workspace_id))?
                    .ok_or_else(|| EngineError::UnknownChat(query.to_owned()))?;
                Ok(((*one).clone(), ws))
            }
            [] => Err(EngineError::UnknownChat(query.to_owned())),
            many => Err(EngineError::InvalidInput(format!(
                "{query:?} matches several conversations: {}",
                many.iter()
                    .map(|c| c.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The link to the workspace of a conversation, with its id.
    pub async fn chat_link(&self, query: &str) -> Result<(String, WorkspaceRecord, Link)> {
        let (c, ws) = self.find_chat(query)?;
        let (ws, link) = self.link_waking(ws.id.as_str()).await?;
        self.renew_account(&ws, &link, &c).await;
        Ok((c.id, ws, link))
    }

    /// `chat list`: conversations of one workspace or all, live where the workspace runs.
    pub async fn chat_list(&self, workspace: Option<&str>) -> Result<Vec<ChatView>> {
        let workspaces = match workspace {
            Some(w) => vec![self.find_workspace(w)?],
            None => self.store(|s| s.workspaces())?,
        };
        // Ask the running workspaces at once, not one after the other.
        let asks = workspaces.iter().map(|ws| async move {
            if ws.status != Status::Running {
                return None;
            }
            let (_, link) = self.link(ws.id.as_str()).await.ok()?;
            link.conversations().await.ok()
        });
        let lives = futures_util::future::join_all(asks).await;
        let mut out = Vec::new();
        for (ws, live) in workspaces.into_iter().zip(lives) {
            match live {
                Some(convs) => {
                    for c in &convs {
                        self.remember(&ws, c)?;
                        out.push(ChatView::live(&ws, c));
                    }
                }
                None => {
                    for c in self.store(|s| s.conversations(Some(&ws.id)))? {
                        out.push(ChatView {
                            id: c.id,
                            workspace: ws.name.to_string(),
                            workspace_id: ws.id.to_string(),
                            agent: c.agent,
                            title: c.title,
                            status: c.status,
                            status_reason: None,
                            queued: 0,
                            live: false,
                            created_at: c.created_at,
                            updated_at: c.updated_at,
                            agent_version: None,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}
