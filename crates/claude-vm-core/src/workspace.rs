//! Workspace status and its state machine.
//!
//! The control side caches a status per workspace; the provider knows the truth about its
//! container. [`reconcile`] combines the two (plus whether the process that was creating a
//! workspace is still alive) into what `list` shows, and [`plan`] says whether a lifecycle
//! action is allowed from a status and what it amounts to.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The status of a workspace as recorded and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// `up` is creating it (volume, container, copy); not yet usable.
    Creating,
    /// Its container runs and its daemon answered.
    Running,
    /// Stopped; `up` resumes it with its volume intact.
    Stopped,
    /// Something went wrong; the reason is recorded. `delete` cleans it up.
    Error,
    /// The provider could not be asked (unreachable, timed out). Never stored.
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Error => "error",
            Status::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown status {0:?}: expected creating, running, stopped, error or unknown")]
pub struct InvalidStatus(pub String);

impl FromStr for Status {
    type Err = InvalidStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "creating" => Status::Creating,
            "running" => Status::Running,
            "stopped" => Status::Stopped,
            "error" => Status::Error,
            "unknown" => Status::Unknown,
            _ => return Err(InvalidStatus(s.to_owned())),
        })
    }
}

/// What a provider reports about a workspace's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveState {
    Running,
    /// Created but never started, or exited.
    Stopped,
    /// The provider has no container for this workspace.
    Missing,
    /// The provider reports a broken container (e.g. Docker's `dead`), with its words.
    Broken(String),
    /// The provider could not be asked; carries the reason.
    Unreachable(String),
}

/// A status together with the reason when it is `error` or `unknown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub status: Status,
    pub reason: Option<String>,
}

impl Observed {
    fn new(status: Status) -> Self {
        Observed {
            status,
            reason: None,
        }
    }
    fn with_reason(status: Status, reason: impl Into<String>) -> Self {
        Observed {
            status,
            reason: Some(reason.into()),
        }
    }
}

/// Combine the cached status with what the provider says.
///
/// `creator_alive` tells whether the process recorded as creating the workspace still runs;
/// a workspace left in `creating` by a process that died (killed mid-`up`) is an error.
pub fn reconcile(
    cached: Status,
    cached_reason: Option<&str>,
    live: &LiveState,
    creator_alive: bool,
) -> Observed {
    match cached {
        Status::Creating if creator_alive => return Observed::new(Status::Creating),
        Status::Creating => {
            return Observed::with_reason(
                Status::Error,
                "creation was interrupted (the claude-vm process creating it exited)",
            );
        }
        Status::Error => {
            return Observed::with_reason(Status::Error, cached_reason.unwrap_or("unknown error"));
        }
        _ => {}
    }
    match live {
        // A running workspace keeps the note it was left with (a setup command that failed).
        LiveState::Running if cached == Status::Running => match cached_reason {
            Some(r) => Observed::with_reason(Status::Running, r),
            None => Observed::new(Status::Running),
        },
        LiveState::Running => Observed::new(Status::Running),
        LiveState::Stopped => Observed::new(Status::Stopped),
        LiveState::Missing => Observed::with_reason(
            Status::Error,
            "its container no longer exists (removed outside claude-vm)",
        ),
        LiveState::Broken(why) => Observed::with_reason(Status::Error, why.clone()),
        LiveState::Unreachable(why) => Observed::with_reason(Status::Unknown, why.clone()),
    }
}

/// A lifecycle action a user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Up,
    Down,
    Delete,
}

/// What an allowed action amounts to, given the current status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Start the stopped workspace.
    Start,
    /// Nothing to do: already in the wanted state (still verify it, for `up`).
    AlreadyThere,
    /// Stop the running workspace.
    Stop,
    /// Remove the workspace's resources and record.
    Remove,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransitionError {
    #[error("workspace is still being created by another claude-vm process")]
    BeingCreated,
    #[error("workspace is in error: {0}")]
    InError(String),
    #[error("the workspace's provider cannot be reached: {0}")]
    Unreachable(String),
}

/// Whether `action` is allowed from `observed`, and what it means.
pub fn plan(observed: &Observed, action: Action) -> Result<Plan, TransitionError> {
    let reason = || observed.reason.clone().unwrap_or_default();
    match (observed.status, action) {
        (Status::Creating, _) => Err(TransitionError::BeingCreated),
        (Status::Unknown, _) => Err(TransitionError::Unreachable(reason())),
        (Status::Error, Action::Delete) => Ok(Plan::Remove),
        (Status::Error, Action::Down) => Ok(Plan::Stop),
        (Status::Error, Action::Up) => Err(TransitionError::InError(reason())),
        (Status::Running, Action::Up) => Ok(Plan::AlreadyThere),
        (Status::Running, Action::Down) => Ok(Plan::Stop),
        (Status::Stopped, Action::Up) => Ok(Plan::Start),
        (Status::Stopped, Action::Down) => Ok(Plan::AlreadyThere),
        (_, Action::Delete) => Ok(Plan::Remove),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(cached: Status, live: LiveState, alive: bool) -> String {
        let o = reconcile(cached, Some("image not found"), &live, alive);
        match o.reason {
            Some(r) => format!("{} ({r})", o.status),
            None => o.status.to_string(),
        }
    }

    #[test]
    fn reconcile_table() {
        use LiveState as L;
        use Status as S;
        let cases = [
            // A running workspace keeps the note it was left with; other states drop it.
            (S::Running, L::Running, false, "running (image not found)"),
            (S::Running, L::Stopped, false, "stopped"),
            (S::Stopped, L::Running, false, "running"),
            (S::Stopped, L::Stopped, false, "stopped"),
            (
                S::Running,
                L::Missing,
                false,
                "error (its container no longer exists (removed outside claude-vm))",
            ),
            (S::Running, L::Broken("dead".into()), false, "error (dead)"),
            (
                S::Running,
                L::Unreachable("docker down".into()),
                false,
                "unknown (docker down)",
            ),
            (S::Creating, L::Missing, true, "creating"),
            (
                S::Creating,
                L::Stopped,
                false,
                "error (creation was interrupted (the claude-vm process creating it exited))",
            ),
            (S::Error, L::Running, false, "error (image not found)"),
        ];
        for (cached, live, alive, want) in cases {
            assert_eq!(
                obs(cached, live.clone(), alive),
                want,
                "{cached:?} {live:?}"
            );
        }
    }

    #[test]
    fn plan_table() {
        use Action as A;
        let o = |s| Observed {
            status: s,
            reason: Some("why".into()),
        };
        assert_eq!(plan(&o(Status::Stopped), A::Up), Ok(Plan::Start));
        assert_eq!(plan(&o(Status::Running), A::Up), Ok(Plan::AlreadyThere));
        assert_eq!(plan(&o(Status::Running), A::Down), Ok(Plan::Stop));
        assert_eq!(plan(&o(Status::Stopped), A::Down), Ok(Plan::AlreadyThere));
        assert_eq!(plan(&o(Status::Error), A::Delete), Ok(Plan::Remove));
        assert_eq!(plan(&o(Status::Error), A::Down), Ok(Plan::Stop));
        assert_eq!(
            plan(&o(Status::Error), A::Up),
            Err(TransitionError::InError("why".into()))
        );
        assert_eq!(
            plan(&o(Status::Creating), A::Delete),
            Err(TransitionError::BeingCreated)
        );
        assert_eq!(
            plan(&o(Status::Creating), A::Up),
            Err(TransitionError::BeingCreated)
        );
        assert_eq!(
            plan(&o(Status::Unknown), A::Down),
            Err(TransitionError::Unreachable("why".into()))
        );
        assert_eq!(plan(&o(Status::Running), A::Delete), Ok(Plan::Remove));
    }

    #[test]
    fn status_round_trips() {
        for s in [
            Status::Creating,
            Status::Running,
            Status::Stopped,
            Status::Error,
            Status::Unknown,
        ] {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
        }
        assert!("paused".parse::<Status>().is_err());
    }
}
