//! The embedded SSH server (crate `claude-vm-sshd`) wired to the daemon: what its sessions
//! run goes through [`crate::exec`] (privileges dropped before `exec(2)`) and counts as
//! activity.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use claude_vm_protocol::api::ExecRequest;
use claude_vm_sshd::{Exec, User};
use tokio::sync::mpsc;

use crate::activity::Activity;
use crate::exec::{self, Input};

pub use claude_vm_sshd::{Server, load_or_create_host_key, ssh_dir};

/// The daemon's exec machinery as the SSH server sees it.
struct DaemonExec {
    /// Where commands start (the project folder).
    default_dir: String,
    activity: Arc<Activity>,
}

impl Exec for DaemonExec {
    fn run(
        &self,
        req: ExecRequest,
        input: mpsc::Receiver<Input>,
        output: mpsc::Sender<Bytes>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(exec::run(
            req,
            self.default_dir.clone(),
            input,
            output,
            self.activity.clone(),
        ))
    }

    fn user(&self, user: Option<&str>) -> Result<User, String> {
        let who = exec::identity(user).map_err(|e| e.to_string())?;
        Ok(User {
            uid: who.uid,
            gid: who.gid,
            shell: who.shell,
        })
    }

    fn touch(&self, kind: &str) {
        self.activity.touch(kind);
    }
}

/// The SSH server for this daemon, with `host_key`, its authorized keys under `state_dir`.
pub fn server(
    host_key: claude_vm_sshd::russh::keys::PrivateKey,
    state_dir: &Path,
    default_dir: String,
    activity: Arc<Activity>,
) -> Server {
    Server::new(
        host_key,
        state_dir,
        Arc::new(DaemonExec {
            default_dir,
            activity,
        }),
    )
}
