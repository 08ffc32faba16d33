//! The contract of `claude-vm server`'s `/api/v1` (described by `docs/openapi.json`): the
//! bodies and queries the server reads and answers with, which the CLI's remote backend
//! sends and reads. Both sides use these types, so a field is defined once.
//!
//! Statuses are enums and times are [`jiff::Timestamp`]s; on the wire they are the same
//! words and RFC 3339 strings as always. What the workspace daemon defines (conversations,
//! transcript events, diffs, files) is `claude_vm_protocol::api`'s and passes through the
//! server unchanged; it is re-exported here so this crate names every body of the API.

mod backups;
mod conversations;
pub use claude_vm_protocol::encode;
mod exec;
mod files;
mod workspaces;

use serde::{Deserialize, Serialize};

pub use backups::{
    BackupList, BackupsQuery, ExportQuery, Forget, Forgotten, ImportQuery, Purge, Purged, Restore,
    Snapshot,
};
pub use claude_vm_protocol::api::{
    Conversation, ConversationStatus, Decision, Diff, Event, FileInfo, PermissionMode, Sent,
};
pub use conversations::{
    AfterQuery, Chat, ConversationDetail, ConversationQuery, CreateConversation, Interrupted,
    SendMessage,
};
pub use exec::{Encoding, Exec, ExecLine, ExecQuery};
pub use files::{DiffQuery, Listing, PathQuery};
pub use workspaces::{
    Agents, BackupTaken, CreateWorkspace, DeleteQuery, Down, IdleStopPolicy, Machine, Provider,
    SetIdleStop, Unreachable, UpOutcome, UploadQuery, Workspace, WorkspaceList,
};

/// Every answer that is not 2xx: `{"error": "...", "hint": "..."}` (the daemon's error
/// body, which the server's extends with a hint, is the same type).
pub use claude_vm_protocol::api::ApiError as ErrorBody;

/// Who the credentials of a request belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// An API token (`claude-vm token create`).
    Token,
    /// A browser session.
    Session,
}

/// `GET /api/v1/whoami`: the caller, and the server's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub kind: PrincipalKind,
    /// The token's id and name, for a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_name: Option<String>,
    /// The server's claude-vm version.
    pub version: String,
}

/// A whole, non-negative number of seconds, written `12` or `12.0` (JSON does not tell
/// integers from floats, and some clients write every number as a float).
pub fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let v: Option<serde_json::Number> = Deserialize::deserialize(d)?;
    let Some(n) = v else { return Ok(None) };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(Some(f as u64)),
        _ => Err(D::Error::custom(format!(
            "invalid number of seconds {n}: a whole number, 0 or more"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_with_and_without_a_hint() {
        let e = ErrorBody {
            error: "no such workspace".into(),
            hint: Some("see `claude-vm workspace list`".into()),
        };
        let wire = serde_json::to_string(&e).unwrap();
        assert_eq!(
            wire,
            r#"{"error":"no such workspace","hint":"see `claude-vm workspace list`"}"#
        );
        assert_eq!(ErrorBody::parse(wire.as_bytes()), Some(e));
        assert_eq!(
            serde_json::to_string(&ErrorBody::new("x")).unwrap(),
            r#"{"error":"x"}"#
        );
        // The daemon's error body.
        assert_eq!(
            ErrorBody::parse(br#"{"error":"not found"}"#),
            Some(ErrorBody::new("not found"))
        );
        for not_one in [&b"<html>bad gateway</html>"[..], b"", br#"{"message":"x"}"#] {
            assert_eq!(ErrorBody::parse(not_one), None);
        }
    }

    #[test]
    fn whoami_for_a_token_and_a_session() {
        let token = WhoAmI {
            kind: PrincipalKind::Token,
            token_id: Some("t1".into()),
            token_name: Some("laptop".into()),
            version: "0.1.0".into(),
        };
        assert_eq!(
            serde_json::to_string(&token).unwrap(),
            r#"{"kind":"token","token_id":"t1","token_name":"laptop","version":"0.1.0"}"#
        );
        let session = WhoAmI {
            kind: PrincipalKind::Session,
            token_id: None,
            token_name: None,
            version: "0.1.0".into(),
        };
        let wire = serde_json::to_string(&session).unwrap();
        assert_eq!(wire, r#"{"kind":"session","version":"0.1.0"}"#);
        assert_eq!(serde_json::from_str::<WhoAmI>(&wire).unwrap(), session);
    }

    #[test]
    fn seconds_may_be_written_as_floats() {
        #[derive(Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "super::whole_seconds")]
            timeout: Option<u64>,
        }
        let parse = |s: &str| serde_json::from_str::<T>(s).map(|t| t.timeout);
        assert_eq!(parse(r#"{"timeout": 1561.0}"#).unwrap(), Some(1561));
        assert_eq!(parse(r#"{"timeout": 5}"#).unwrap(), Some(5));
        assert_eq!(parse(r#"{"timeout": null}"#).unwrap(), None);
        assert_eq!(parse("{}").unwrap(), None);
        for bad in [
            r#"{"timeout": -1}"#,
            r#"{"timeout": 1.5}"#,
            r#"{"timeout": "5"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
