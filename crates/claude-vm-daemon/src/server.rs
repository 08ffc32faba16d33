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

/// Prepare the state directory (owned by root, on the volume) and give the volume's root to
/// the agent user so agents can write next to the project.
pub fn prepare_dirs(paths: &Paths) -> std::io::Result<()> {
    std::fs::create_dir_all(paths.state_dir.join("logs"))?;
    std::fs::set_permissions(&paths.state_dir, std::fs::Permissions::from_mode(0o700))?;
    if let Some(root) = paths.state_dir.parent()
        && nix::unistd::geteuid().is_root()
    {
        let uid = nix::unistd::Uid::from_raw(claude_vm_protocol::AGENT_UID);
        let gid = nix::unistd::Gid::from_raw(claude_vm_protocol::AGENT_UID);
        let _ = nix::unistd::chown(root, Some(uid), Some(gid));
        ensure_agent_user();
        hand_over_trees(root, &paths.state_dir.join("chown-tree"), uid, gid);
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
        let _ = nix::unistd::chown(
            home,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(uid)),
        );
    }
}

/// Files copied in by the control side arrive owned by root; the marker file lists the
/// top-level folders (one per line) to give to the agent user, once.
fn hand_over_trees(root: &Path, marker: &Path, uid: nix::unistd::Uid, gid: nix::unistd::Gid) {
    let Ok(list) = std::fs::read_to_string(marker) else {
        return;
    };
    for name in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // One plain path component: never `..`, never absolute.
        let mut comps = Path::new(name).components();
        let ok =
            matches!(comps.next(), Some(std::path::Component::Normal(_))) && comps.next().is_none();
        if !ok {
            tracing::warn!("ignoring unsafe entry {name:?} in {}", marker.display());
            continue;
        }
        chown_tree(&root.join(name), uid, gid);
    }
    let _ = std::fs::remove_file(marker);
}

fn chown_tree(path: &Path, uid: nix::unistd::Uid, gid: nix::unistd::Gid) {
    let _ = std::os::unix::fs::lchown(path, Some(uid.as_raw()), Some(gid.as_raw()));
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir()
        && let Ok(entries) = std::fs::read_dir(path)
    {
        for e in entries.flatten() {
            chown_tree(&e.path(), uid, gid);
        }
    }
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

/// Run the daemon until `shutdown` resolves. Prints one JSON line (`{"event":"ready",...}`)
/// on stdout once it accepts connections: the control side waits for it after starting the
/// container.
pub async fn serve(
    paths: Paths,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = bind(&paths.socket)?;
    let (fingerprint, _, _, _) = claude_vm_protocol::own_fingerprint()?;
    let health = Health {
        name: "claude-vm".to_owned(),
        version: VERSION.to_owned(),
        protocol: PROTOCOL_VERSION,
        fingerprint,
        pid: std::process::id(),
        started_at: jiff::Timestamp::now().to_string(),
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
    let conversations = crate::conversations::Manager::new(
        paths.state_dir.join("conversations"),
        default_dir.clone(),
        activity.clone(),
    );
    conversations.resume_all();
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
        ssh,
        default_dir,
        root: paths
            .state_dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    });

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
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
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("daemon stopping");
    let _ = std::fs::remove_file(&paths.socket);
    Ok(())
}
