//! The workspace daemon: state directory, Unix socket, versioned HTTP API.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use claude_vm_protocol::{Health, PROTOCOL_VERSION, VERSION};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::UnixListener;

use crate::activity::Activity;
use crate::api::{self, State};

/// Where the daemon keeps things; overridable for tests.
#[derive(Debug, Clone)]
pub struct Paths {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            socket: PathBuf::from(claude_vm_protocol::SOCKET_PATH),
            state_dir: PathBuf::from(claude_vm_protocol::STATE_DIR),
        }
    }
}

impl Paths {
    pub fn log_file(&self) -> PathBuf {
        self.state_dir.join("logs").join("daemon.log")
    }
}

/// Prepare the state directory (see [`crate::state`] for why each step is there): the
/// volume's root becomes root's (group agent, sticky, so agents can write beside the project
/// but never rename the state folder), the state folder is proven trusted or replaced, and
/// the folders the control side copied in are handed to the agent user.
pub fn prepare_dirs(paths: &Paths) -> std::io::Result<()> {
    let root = paths.state_dir.parent().map(Path::to_path_buf);
    let is_root = nix::unistd::geteuid().is_root();
    if let Some(root) = &root
        && is_root
    {
        std::fs::create_dir_all(root)?;
        crate::state::secure_root(
            root,
            nix::unistd::Gid::from_raw(crate::agent_user::get().gid),
        )?;
    }
    for aside in crate::state::ensure_state_dir(&paths.state_dir)? {
        eprintln!(
            "claude-vm daemon: {} was not a private folder of root; moved to {} and not used",
            paths.state_dir.display(),
            aside.display()
        );
    }
    crate::state::ensure_private_dir(&paths.state_dir.join("logs"))?;
    if let Some(root) = &root
        && is_root
    {
        let agent = crate::agent_user::get();
        let uid = nix::unistd::Uid::from_raw(agent.uid);
        let gid = nix::unistd::Gid::from_raw(agent.gid);
        if agent == crate::agent_user::AgentUser::DEFAULT {
            ensure_agent_user();
        }
        hand_over_trees(root, &paths.state_dir, uid, gid);
        adopt_earlier_agent_files(root, uid, gid);
        crate::home::keep_on_volume();
    }
    Ok(())
}

/// Agents (Node programs among them) expect their uid to have a name and a home: add the
/// agent user to the image's account files when the image has no user with that uid.
fn ensure_agent_user() {
    use std::io::Write as _;
    // Only inside a workspace container: never touch a host's accounts.
    if std::env::var_os("CLAUDE_VM_WORKSPACE_ID").is_none() {
        return;
    }
    let uid = claude_vm_protocol::AGENT_UID;
    if nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .is_some()
    {
        return;
    }
    let shell = if Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    let home = "/home/agent";
    let append = |file: &str, line: String| {
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(file) {
            let _ = f.write_all(line.as_bytes());
        }
    };
    append(
        "/etc/passwd",
        format!("agent:x:{uid}:{uid}:claude-vm agent:{home}:{shell}\n"),
    );
    if nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(uid))
        .ok()
        .flatten()
        .is_none()
    {
        append("/etc/group", format!("agent:x:{uid}:\n"));
    }
    if std::fs::create_dir_all(home).is_ok() {
        let _ = std::os::unix::fs::lchown(home, Some(uid), Some(uid));
    }
}

/// A workspace whose agent user changed (rebuilt with another devcontainer `remoteUser`):
/// the project and the agent's home on the volume, still the earlier agent user's, become
/// this one's (without following any symlink in them). Root's folders are left alone.
fn adopt_earlier_agent_files(root: &Path, uid: nix::unistd::Uid, gid: nix::unistd::Gid) {
    use std::os::unix::fs::MetadataExt as _;
    if std::env::var_os("CLAUDE_VM_WORKSPACE_ID").is_none() {
        return;
    }
    let project = std::env::var("CLAUDE_VM_PROJECT_DIR").ok();
    let names = [
        project
            .as_deref()
            .and_then(|p| Path::new(p).strip_prefix(root).ok()),
        Path::new(claude_vm_protocol::AGENT_HOME)
            .strip_prefix(root)
            .ok(),
    ];
    for name in names.into_iter().flatten() {
        let Some(name) = name.to_str().filter(|n| !n.is_empty() && !n.contains('/')) else {
            continue;
        };
        let Ok(meta) = std::fs::symlink_metadata(root.join(name)) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() == uid.as_raw() || meta.uid() == 0 {
            continue;
        }
        tracing::info!(
            folder = name,
            from = meta.uid(),
            to = uid.as_raw(),
            "the agent user changed; giving it the folder"
        );
        if let Err(e) = crate::state::hand_over(root, name, uid, gid) {
            tracing::warn!(
                folder = name,
                "cannot give the folder to the agent user: {e}"
            );
        }
    }
}

/// Files copied in by the control side arrive owned by root; the marker file `chown-tree`
/// in the (trusted) state folder lists the top-level folders (one per line) to give to the
/// agent user, once.
fn hand_over_trees(root: &Path, state_dir: &Path, uid: nix::unistd::Uid, gid: nix::unistd::Gid) {
    let marker = state_dir.join("chown-tree");
    let Ok(list) = crate::state::read_private(&marker) else {
        return;
    };
    let state_name = state_dir.file_name().unwrap_or_default();
    for name in String::from_utf8_lossy(&list)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        if !crate::state::valid_handover_name(name, state_name) {
            tracing::warn!(entry = ?name, "ignoring unsafe entry in chown-tree");
            continue;
        }
        if let Err(e) = crate::state::hand_over(root, name, uid, gid) {
            tracing::warn!(entry = ?name, "cannot hand the folder to the agent user: {e}");
        }
    }
    let _ = std::fs::remove_file(&marker);
}

fn bind(socket: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a previous run (the daemon was killed) is stale: nobody listens.
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(socket)?;
    // Only root may talk to the daemon: it can run commands as anyone in the workspace, and
    // agents run as an unprivileged user.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Resolves on SIGTERM or SIGINT: how the daemon is asked to stop.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `shutdown` resolved (a stop signal).
    Asked,
    /// The workspace was idle for its policy's time: the container should stop.
    Idle,
}

/// Run the daemon until `shutdown` resolves or the workspace stops itself for idleness.
/// Prints one JSON line (`{"event":"ready",...}`) on stdout once it accepts connections: the
/// control side waits for it after starting the container.
pub async fn serve(
    paths: Paths,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<Exit> {
    let listener = bind(&paths.socket)?;
    let (fingerprint, _, _, _) = claude_vm_protocol::own_fingerprint()?;
    let health = Health {
        name: "claude-vm".to_owned(),
        version: VERSION.to_owned(),
        protocol: PROTOCOL_VERSION,
        fingerprint,
        pid: std::process::id(),
        started_at: jiff::Timestamp::now().to_string(),
        lifecycle: Some(crate::lifecycle::saved_policy(
            &paths.state_dir.join("lifecycle.json"),
        )),
    };
    let mut ready = serde_json::to_value(&health).expect("health serializes");
    ready["event"] = "ready".into();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{ready}")?;
        out.flush()?;
    }
    tracing::info!(socket = %paths.socket.display(), version = VERSION, "daemon ready");
    let activity = Arc::new(Activity::load(paths.state_dir.join("activity.json")));
    let default_dir = std::env::var("CLAUDE_VM_PROJECT_DIR")
        .ok()
        .filter(|d| Path::new(d).is_dir())
        .unwrap_or_else(|| claude_vm_protocol::WORKSPACE_ROOT.to_owned());
    let conversations = claude_vm_agents::Manager::new(
        paths.state_dir.join("conversations"),
        default_dir.clone(),
        Arc::new(crate::agents::DaemonHost {
            activity: activity.clone(),
        }),
    );
    conversations.resume_all();
    let lifecycle = crate::lifecycle::Lifecycle::load(
        paths.state_dir.join("lifecycle.json"),
        activity.clone(),
        conversations.clone(),
    );
    let idle = tokio::spawn(lifecycle.clone().run());
    let ssh_dir = crate::ssh::ssh_dir(&paths.state_dir);
    let ssh = match crate::ssh::load_or_create_host_key(&ssh_dir) {
        Ok(key) => Some(Arc::new(crate::ssh::server(
            key,
            &paths.state_dir,
            default_dir.clone(),
            activity.clone(),
        ))),
        Err(e) => {
            tracing::warn!("SSH server disabled: {e}");
            None
        }
    };
    let state = Arc::new(State {
        health,
        activity,
        conversations,
        lifecycle,
        ssh,
        default_dir,
        root: paths
            .state_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    });

    tokio::pin!(shutdown);
    tokio::pin!(idle);
    let exit = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors (EMFILE/ENFILE) and the like: the error
                        // repeats until something closes, so wait instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| api::handle(state.clone(), req));
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    // The same windows as the link's side (see claude-vm-link): 16 MiB
                    // in flight per transfer, 1 MiB frames, 4 MiB buffered per stream.
                    builder
                        .http2()
                        .initial_stream_window_size(16 << 20)
                        .initial_connection_window_size(32 << 20)
                        .max_frame_size(1 << 20)
                        .max_send_buf_size(4 << 20);
                    if let Err(e) = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!("connection ended: {e}");
                    }
                });
            }
            _ = &mut shutdown => break Exit::Asked,
            _ = &mut idle => break Exit::Idle,
        }
    };
    tracing::info!("daemon stopping");
    let _ = std::fs::remove_file(&paths.socket);
    Ok(exit)
}
