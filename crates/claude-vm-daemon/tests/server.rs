//! The daemon's HTTP surface over its Unix socket, exercised in-process with real sockets.

use std::time::Duration;

use claude_vm_daemon::{client, server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

async fn start() -> (
    tempfile::TempDir,
    server::Paths,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let paths = server::Paths {
        socket: dir.path().join("run/d.sock"),
        state_dir: dir.path().join("state"),
    };
    server::prepare_dirs(&paths).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let p = paths.clone();
    let task = tokio::spawn(async move {
        server::serve(p, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    client::health_wait(&paths.socket, Duration::from_secs(5))
        .await
        .unwrap();
    (dir, paths, tx, task)
}

/// Send raw bytes, return the raw answer.
async fn raw(socket: &std::path::Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn health_unknown_routes_bad_methods_and_garbage() {
    let (_dir, paths, stop, task) = start().await;
    let h = client::health(&paths.socket).await.unwrap();
    assert_eq!(h.protocol, claude_vm_protocol::PROTOCOL_VERSION);
    assert_eq!(h.version, claude_vm_protocol::VERSION);

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&paths.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    let r = raw(
        &paths.socket,
        b"GET /v1/nope HTTP/1.1\r\nhost: d\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    assert!(r.contains("no such route: /v1/nope"), "{r}");
    let r = raw(
        &paths.socket,
        b"DELETE /v1/health HTTP/1.1\r\nhost: d\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    let r = raw(&paths.socket, b"\x00\x01GARBAGE\r\n\r\n").await;
    assert!(r.is_empty() || r.starts_with("HTTP/1.1 400"), "{r}");
    let r = raw(
        &paths.socket,
        b"GET /../../etc/passwd HTTP/1.1\r\nhost: d\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(
        r.starts_with("HTTP/1.1 404") || r.starts_with("HTTP/1.1 400"),
        "{r}"
    );
    // Still healthy after all that.
    client::health(&paths.socket).await.unwrap();

    stop.send(()).unwrap();
    task.await.unwrap();
    assert!(!paths.socket.exists(), "socket removed on stop");
}

#[tokio::test]
async fn a_stale_socket_from_a_killed_daemon_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/d.sock");
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    // A socket file nobody listens on, as a kill -9 leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let paths = server::Paths {
        socket: socket.clone(),
        state_dir: dir.path().join("state"),
    };
    server::prepare_dirs(&paths).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(paths, async {
        let _ = rx.await;
    }));
    client::health_wait(&socket, Duration::from_secs(5))
        .await
        .unwrap();
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[test]
fn the_chown_marker_is_consumed_and_never_escapes_the_volume() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("workspace");
    let paths = server::Paths {
        socket: dir.path().join("d.sock"),
        state_dir: root.join(".claude-vm"),
    };
    std::fs::create_dir_all(root.join("proj/sub")).unwrap();
    std::fs::create_dir_all(&paths.state_dir).unwrap();
    std::fs::write(root.join("proj/sub/f"), "x").unwrap();
    std::fs::write(
        paths.state_dir.join("chown-tree"),
        "proj\n../outside\n/etc\n",
    )
    .unwrap();
    server::prepare_dirs(&paths).unwrap();
    assert!(!paths.state_dir.join("chown-tree").exists());
    use std::os::unix::fs::MetadataExt;
    if nix_is_root() {
        assert_eq!(
            std::fs::metadata(root.join("proj/sub/f")).unwrap().uid(),
            claude_vm_protocol::AGENT_UID
        );
        assert_eq!(std::fs::metadata("/etc").unwrap().uid(), 0);
    }
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}
