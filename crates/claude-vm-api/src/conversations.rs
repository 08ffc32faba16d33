//! Conversations: listing, starting one, sending, interrupting, the transcript.

use claude_vm_protocol::api::{Conversation, ConversationStatus};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// A conversation as listed (`GET /api/v1/conversations`), with its workspace: the
/// document `chat list --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    pub id: String,
    pub workspace: String,
    pub workspace_id: String,
    pub agent: String,
    pub title: Option<String>,
    /// Live, or the last one known when the workspace is not running (see `live`).
    pub status: ConversationStatus,
    pub status_reason: Option<String>,
    pub queued: u64,
    /// Whether `status` was asked of the running workspace or is remembered.
    pub live: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The agent program's version, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
}

/// `GET /api/v1/conversations?workspace=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationQuery {
    /// Only this workspace's (id, name or unique id prefix).
    pub workspace: Option<String>,
}

/// `POST /api/v1/workspaces/{workspace}/conversations` (the body is optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    /// `claude`, `codex`, … [default: agents.defaults.agent in config.yaml]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The first message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Put every tool use to the user.
    #[serde(default)]
    pub ask: bool,
}

/// `GET /api/v1/conversations/{conversation}`: the conversation, live, with the workspace
/// it lives in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationDetail {
    #[serde(flatten)]
    pub conversation: Conversation,
    pub workspace: String,
    pub workspace_id: String,
}

/// `POST /api/v1/conversations/{conversation}/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// Not empty, nor only white space.
    pub text: String,
}

/// The answer to `POST /api/v1/conversations/{conversation}/interrupt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interrupted {
    /// `false` when no agent was running.
    pub interrupted: bool,
}

/// `GET .../transcript?after=` and `GET .../events?after=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfterQuery {
    /// Only events with a larger sequence number.
    #[serde(default)]
    pub after: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chats_read_and_write_the_same_document() {
        let wire = r#"{"id":"0123456789ab","workspace":"far","workspace_id":"ab12","agent":"claude","title":null,"status":"waiting_for_approval","status_reason":null,"queued":0,"live":true,"created_at":"2025-01-02T03:04:05.5Z","updated_at":"2025-01-02T03:04:05.123Z"}"#;
        let c: Chat = serde_json::from_str(wire).unwrap();
        assert_eq!(c.status, ConversationStatus::WaitingForApproval);
        assert_eq!(serde_json::to_string(&c).unwrap(), wire);
        let bad = wire.replace("waiting_for_approval", "napping");
        assert!(serde_json::from_str::<Chat>(&bad).is_err());
    }

    #[test]
    fn a_new_conversation_sends_only_what_is_given() {
        let b = CreateConversation {
            agent: None,
            message: Some("hi".into()),
            ask: true,
        };
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"message":"hi","ask":true}"#
        );
        assert_eq!(
            serde_json::from_str::<CreateConversation>(
                r#"{"agent":null,"message":"hi","ask":true}"#
            )
            .unwrap(),
            b
        );
    }
}
