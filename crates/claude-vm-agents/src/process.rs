//! Agent processes: how they are started (the [`Host`] supplies the command, so this crate
//! knows nothing of users and privileges), how they are recorded (`agent.pid`) and how
//! they are signalled without ever hitting a process that is not the agent.

use std::path::Path;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// What the conversations need from the program that runs them (the workspace daemon).
pub trait Host: Send + Sync + 'static {
    /// A command that runs `program` with `args` as the agent user, with that user's
    /// `HOME` (and `USER`, `LOGNAME`), as the leader of its own process group (or session),
    /// so that one signal to the group reaches everything the agent starts.
    fn command(&self, program: &str, args: &[String]) -> Result<tokio::process::Command, String>;
    /// Something happened in a conversation (the workspace's last activity).
    fn active(&self) {}
    /// A conversation was created or loaded (e.g. to give it a terminal view).
    fn opened(&self, _id: &str) {}
}

/// Runs agents as the current user, each in its own process group (tests, tools).
#[derive(Debug, Default, Clone, Copy)]
pub struct Direct;

impl Host for Direct {
    fn command(&self, program: &str, args: &[String]) -> Result<tokio::process::Command, String> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args).process_group(0);
        Ok(cmd)
    }
}

/// What `/proc/<pid>/stat` tells about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pgrp: i32,
    pub session: i32,
    /// Start time in clock ticks after boot (field 22): with the pid, names one process.
    pub start: u64,
}

/// Parse a `/proc/<pid>/stat` line (the command name may hold spaces and parentheses).
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let rest = &line[line.rfind(')')? + 1..];
    // Fields after the name, from field 3 (state) on.
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// A started agent: its pid (also its process group) and its start time, when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentPid {
    pub pid: i32,
    pub start: Option<u64>,
}

impl AgentPid {
    /// The process just started as `pid`.
    pub fn of(pid: i32) -> AgentPid {
        AgentPid {
            pid,
            start: proc_stat(pid).map(|s| s.start),
        }
    }

    /// `agent.pid`: the pid and, after a space, its start time.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = match self.start {
            Some(s) => format!("{} {s}\n", self.pid),
            None => format!("{}\n", self.pid),
        };
        std::fs::write(path, text)
    }

    pub fn read(path: &Path) -> Option<AgentPid> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut words = text.split_whitespace();
        let pid = words.next()?.parse().ok()?;
        let start = words.next().and_then(|s| s.parse().ok());
        Some(AgentPid { pid, start })
    }

    /// Whether the agent recorded in `agent.pid` by an earlier daemon may still be signalled
    /// as a group: its pid is not running something else. A pid used as a process group
    /// id is never given to a new process while that group has members, so when no
    /// process has the pid, the group (if any is left) is still the agent's.
    pub fn still_ours(&self) -> bool {
        if !signallable(self.pid) {
            return false;
        }
        match (proc_stat(self.pid), self.start) {
            (None, _) => true,
            // The same process: same start time, and it still leads its group.
            (Some(s), Some(start)) => s.start == start && s.pgrp == self.pid,
            // An old record without a start time: only a group and session leader, as
            // agents were, can be it.
            (Some(s), None) => s.pgrp == self.pid && s.session == self.pid,
        }
    }

    /// Signal the agent's process group, unless its pid now names another process.
    /// False when nothing was sent.
    pub fn signal_group(&self, sig: Signal) -> bool {
        self.still_ours() && signal_group(self.pid, sig)
    }
}

/// Whether `pgid` may be signalled at all: never 0 (the caller's own group), 1 (init's)
/// or negative, and never the caller's own group.
pub fn signallable(pgid: i32) -> bool {
    pgid > 1 && pgid != nix::unistd::getpgrp().as_raw() && pgid != std::process::id() as i32
}

/// `killpg(pgid, sig)`, refusing groups [`signallable`] refuses. False when not sent.
pub fn signal_group(pgid: i32, sig: Signal) -> bool {
    signallable(pgid) && nix::sys::signal::killpg(Pid::from_raw(pgid), sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line =
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                pgrp: 4242,
                session: 4242,
                start: 987654
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        let me = proc_stat(std::process::id() as i32).unwrap();
        assert!(me.start > 0);
    }

    #[test]
    fn pid_zero_one_and_our_own_group_are_never_signalled() {
        // SIGCONT is harmless should the guard ever fail.
        for pgid in [0, 1, -1, nix::unistd::getpgrp().as_raw()] {
            assert!(!signallable(pgid), "{pgid}");
            assert!(!signal_group(pgid, Signal::SIGCONT), "{pgid}");
            assert!(
                !AgentPid {
                    pid: pgid,
                    start: None
                }
                .signal_group(Signal::SIGCONT)
            );
        }
    }

    #[test]
    fn a_reused_agent_pid_is_not_ours() {
        let mut child = std::process::Command::new("sleep");
        std::os::unix::process::CommandExt::process_group(&mut child, 0);
        let mut child = child.arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let real = AgentPid::of(pid);
        assert!(real.start.is_some());
        // Another process now has the recorded pid: its start time differs.
        let reused = AgentPid {
            pid,
            start: real.start.map(|s| s + 1),
        };
        assert!(!reused.still_ours());
        assert!(!reused.signal_group(Signal::SIGKILL));
        // An old record without a start time: sleep leads its group, not a session.
        assert!(!AgentPid { pid, start: None }.still_ours());
        assert!(
            child.try_wait().unwrap().is_none(),
            "the process was killed"
        );
        // The real one is.
        let dir = tempfile::tempdir().unwrap();
        real.write(&dir.path().join("agent.pid")).unwrap();
        let read = AgentPid::read(&dir.path().join("agent.pid")).unwrap();
        assert_eq!(read, real);
        assert!(read.signal_group(Signal::SIGKILL));
        assert!(child.wait().is_ok());
    }
}
