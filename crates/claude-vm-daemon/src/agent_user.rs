//! Who the agent user is in this workspace. Agents, `exec` without a user, `ssh` as
//! `agent` and files the API creates all run as, or belong to, this one user:
//!
//! - the devcontainer.json's `remoteUser` (or `containerUser`), when the control side
//!   named one at create (`CLAUDE_VM_AGENT_USER`) and the image has that user with a uid
//!   other than 0 — agents never run as root;
//! - else uid [`claude_vm_protocol::AGENT_UID`] (the image's user of that uid, or `agent`,
//!   which [`crate::server`] adds to the image's account files when it has none).
//!
//! Resolved once per daemon start, from the image's account files (root's to change, never
//! the agent's).

use std::sync::OnceLock;

/// The variable the control side sets on the container to name the agent user.
pub use claude_vm_protocol::AGENT_USER_ENV as ENV;

/// The agent user's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentUser {
    pub uid: u32,
    pub gid: u32,
}

impl AgentUser {
    /// The default agent user: uid and gid [`claude_vm_protocol::AGENT_UID`].
    pub const DEFAULT: AgentUser = AgentUser {
        uid: claude_vm_protocol::AGENT_UID,
        gid: claude_vm_protocol::AGENT_UID,
    };
}

/// The agent user of this workspace (see the module's documentation).
pub fn get() -> AgentUser {
    static AGENT: OnceLock<AgentUser> = OnceLock::new();
    *AGENT.get_or_init(|| resolve(std::env::var(ENV).ok().as_deref()))
}

/// The user named `name` when it may be the agent user, else the default.
pub fn resolve(name: Option<&str>) -> AgentUser {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return AgentUser::DEFAULT;
    };
    let found = match name.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(name),
    };
    match found.ok().flatten() {
        Some(u) if u.uid.is_root() => {
            tracing::warn!(
                user = name,
                "the named agent user is root; agents run as uid {} instead",
                claude_vm_protocol::AGENT_UID
            );
            AgentUser::DEFAULT
        }
        Some(u) => AgentUser {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        },
        None => {
            tracing::warn!(
                user = name,
                "the named agent user does not exist in the image; agents run as uid {} instead",
                claude_vm_protocol::AGENT_UID
            );
            AgentUser::DEFAULT
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_unknown_and_empty_names_give_the_default_user() {
        assert_eq!(resolve(None), AgentUser::DEFAULT);
        assert_eq!(resolve(Some("")), AgentUser::DEFAULT);
        assert_eq!(resolve(Some("root")), AgentUser::DEFAULT);
        assert_eq!(resolve(Some("0")), AgentUser::DEFAULT);
        assert_eq!(
            resolve(Some("no-such-user-of-claude-vm")),
            AgentUser::DEFAULT
        );
    }

    #[test]
    fn an_existing_user_is_taken_with_its_own_ids() {
        // `nobody` exists on every Linux this runs on (uid 65534).
        let Some(u) = nix::unistd::User::from_name("nobody").ok().flatten() else {
            panic!("this system has no `nobody` user");
        };
        assert_eq!(
            resolve(Some("nobody")),
            AgentUser {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw()
            }
        );
    }
}
