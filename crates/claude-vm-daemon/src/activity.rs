//! The workspace's last activity: exec sessions, file transfers, SSH sessions, event streams
//! and agent work. Kept in memory and mirrored to `/workspace/.claude-vm/activity.json`, so
//! it survives a daemon restart and a stopped workspace still tells when it was last used.
//! What is open right now (an exec, a transfer, a followed event stream) is held with a
//! [`Hold`]: the idle timer of [`crate::lifecycle`] does not run while any is held.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use claude_vm_protocol::api;

pub struct Activity {
    file: PathBuf,
    state: Mutex<api::Activity>,
    /// When the file was last written: at most once a second, so a busy agent does not
    /// rewrite it for every event (at worst a crash loses the last second).
    persisted: Mutex<Option<std::time::Instant>>,
    /// The last touch on the monotonic clock (the daemon's start counts as one).
    last: Mutex<Instant>,
    /// What is open now, by kind ("file transfer", "event stream", "ssh", "exec -d").
    holds: Mutex<BTreeMap<&'static str, usize>>,
}

/// Something open in the workspace; it counts as activity until dropped.
pub struct Hold {
    activity: Arc<Activity>,
    kind: &'static str,
}

impl Drop for Hold {
    fn drop(&mut self) {
        {
            let mut holds = self
                .activity
                .holds
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = holds.get_mut(self.kind) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    holds.remove(self.kind);
                }
            }
        }
        self.activity.touch(self.kind);
    }
}

impl Activity {
    /// Load the last recorded activity from `file` (missing or unreadable: none yet).
    pub fn load(file: PathBuf) -> Activity {
        let mut state: api::Activity = crate::state::read_private(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(api::Activity {
                last_activity: None,
                last_kind: None,
                running_execs: 0,
            });
        state.running_execs = 0;
        Activity {
            file,
            state: Mutex::new(state),
            persisted: Mutex::new(None),
            last: Mutex::new(Instant::now()),
            holds: Mutex::new(BTreeMap::new()),
        }
    }

    /// Count `kind` as open until the returned guard is dropped.
    pub fn hold(self: &Arc<Self>, kind: &'static str) -> Hold {
        *self
            .holds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_insert(0) += 1;
        self.touch(kind);
        Hold {
            activity: self.clone(),
            kind,
        }
    }

    /// What keeps the workspace busy right now: running execs and open holds, in words.
    pub fn open(&self) -> Vec<String> {
        let mut out = Vec::new();
        let execs = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .running_execs;
        if execs > 0 {
            out.push(format!("{execs} exec session(s) running"));
        }
        for (kind, n) in self.holds.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            out.push(format!("{n} {kind}(s) open"));
        }
        out
    }

    /// Time since the last touch.
    pub fn since_last(&self) -> std::time::Duration {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    pub fn snapshot(&self) -> api::Activity {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Record that something happened now.
    pub fn touch(&self, kind: &str) {
        let snapshot = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.last_activity = Some(jiff::Timestamp::now().to_string());
            s.last_kind = Some(kind.to_owned());
            s.clone()
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.persist(&snapshot);
    }

    pub fn exec_started(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .running_execs += 1;
        self.touch("exec");
    }

    pub fn exec_finished(&self) {
        {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.running_execs = s.running_execs.saturating_sub(1);
        }
        self.touch("exec");
    }

    fn persist(&self, snapshot: &api::Activity) {
        {
            let mut last = self.persisted.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        if let Ok(body) = serde_json::to_vec(snapshot) {
            // The write syncs to disk: off the async workers.
            let file = self.file.clone();
            let write = move || {
                let _ = crate::state::write_private(&file, &body);
            };
            match tokio::runtime::Handle::try_current() {
                Ok(h) => drop(h.spawn_blocking(write)),
                Err(_) => write(),
            }
        }
    }
}
