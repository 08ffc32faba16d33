//! Property test of the daemon's request handling: thousands of random, malformed and
//! hostile requests over the real socket. Every answer must be a well-formed HTTP response
//! with a 4xx (or a 2xx for the rare valid one), never a 5xx; nothing may escape the root;
//! the daemon must keep answering.

use std::time::Duration;

use claude_vm_daemon::{client, server};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const METHODS: &[&str] = &[
    "GET", "GET", "GET", "GET", "POST", "PUT", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW",
];
const PATHS: &[&str] = &[
    "/v1/health",
    "/v1/activity",
    "/v1/exec",
    "/v1/files",
    "/v1/files/stat",
    "/v1/files/list",
    "/v1/files/read",
    "/v1/files/write",
    "/v1/files/mkdir",
    "/v1/files/rename",
    "/v1/files/archive",
    "/v1/git/diff",
    "/",
    "/v1",
    "/v2/health",
    "/v1/files/../../etc",
    "/v1//files/stat",
    "/%2e%2e/x",
];
const VALUES: &[&str] = &[
    "a.txt",
    "dir",
    "dir/inner.txt",
    "..",
    "../..",
    "../../etc/passwd",
    "/etc/passwd",
    "/",
    "",
    "%00",
    "a%00b",
    "%2e%2e%2f",
    "link-out",
    "link-out/x",
    "dir/../../x",
    "~",
    "%ff%fe",
    "%",
    "%4",
    "really-long-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];
const KEYS: &[&str] = &[
    "path",
    "from",
    "to",
    "mode",
    "parents",
    "recursive",
    "stat",
    "follow",
    "x",
];

fn random_request(rng: &mut StdRng) -> Vec<u8> {
    let method = METHODS[rng.random_range(0..METHODS.len())];
    let path = PATHS[rng.random_range(0..PATHS.len())];
    let mut query = String::new();
    for i in 0..rng.random_range(0..4) {
        if i > 0 {
            query.push('&');
        }
        query.push_str(KEYS[rng.random_range(0..KEYS.len())]);
        query.push('=');
        let v = if rng.random_bool(0.2) {
            format!("{:o}", rng.random_range(0..0o20000u32))
        } else {
            VALUES[rng.random_range(0..VALUES.len())].to_owned()
        };
        query.push_str(&v);
    }
    let body: Vec<u8> = match rng.random_range(0..5) {
        0 => Vec::new(),
        1 => (0..rng.random_range(1..4096))
            .map(|_| rng.random())
            .collect(),
        // a frame-shaped body: random kind, random length claim
        2 => {
            let mut b = vec![rng.random_range(0..12u8)];
            b.extend_from_slice(&rng.random::<u32>().to_be_bytes());
            b.extend((0..rng.random_range(0..64)).map(|_| rng.random::<u8>()));
            b
        }
        3 => {
            let mut b = vec![0u8];
            let json = br#"{"cmd":["true"],"workdir":"/nope"}"#;
            b.extend_from_slice(&(json.len() as u32).to_be_bytes());
            b.extend_from_slice(json);
            b
        }
        _ => b"not json at all".to_vec(),
    };
    let target = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let mut req = format!("{method} {target} HTTP/1.1\r\nhost: d\r\nconnection: close\r\n");
    // Sometimes lie about the length.
    let claimed = if rng.random_bool(0.1) {
        body.len() + rng.random_range(1..100)
    } else {
        body.len()
    };
    req.push_str(&format!("content-length: {claimed}\r\n\r\n"));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

async fn exchange(socket: &std::path::Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(socket)
        .await
        .expect("daemon accepts connections");
    let _ = s.write_all(request).await;
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_never_crash_the_daemon_or_escape_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("workspace");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("dir")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret"), "do not touch").unwrap();
    std::fs::write(root.join("a.txt"), "a").unwrap();
    std::fs::write(root.join("dir/inner.txt"), "inner").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link-out")).unwrap();
    let paths = server::Paths {
        socket: dir.path().join("d.sock"),
        state_dir: root.join(".claude-vm"),
    };
    server::prepare_dirs(&paths).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let p = paths.clone();
    let task = tokio::spawn(async move {
        server::serve(p, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    client::health_wait(&paths.socket, Duration::from_secs(5))
        .await
        .unwrap();

    let mut rng = StdRng::seed_from_u64(0x00c1_a0de);
    let mut statuses = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..1500 {
        let req = random_request(&mut rng);
        let answer = exchange(&paths.socket, &req).await;
        let status = answer.split(' ').nth(1).unwrap_or("none").to_owned();
        assert!(
            !status.starts_with('5'),
            "request {i} got {status}:\n{}\n---\n{answer}",
            String::from_utf8_lossy(&req)
        );
        *statuses.entry(status).or_default() += 1;
    }
    // Raw garbage, too.
    for _ in 0..200 {
        let junk: Vec<u8> = (0..rng.random_range(1..512))
            .map(|_| rng.random())
            .collect();
        let answer = exchange(&paths.socket, &junk).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{answer}"
        );
    }
    client::health(&paths.socket)
        .await
        .expect("still answering");
    assert_eq!(
        std::fs::read_to_string(outside.join("secret")).unwrap(),
        "do not touch"
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        1,
        "something was written outside the root"
    );
    // The mix exercised real handlers, not only the router's 404.
    assert!(
        statuses.get("200").copied().unwrap_or(0) > 20,
        "{statuses:?}"
    );
    assert!(
        statuses.keys().any(|s| s == "400") && statuses.keys().any(|s| s == "404"),
        "{statuses:?}"
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test]
async fn an_oversized_exec_start_frame_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let paths = server::Paths {
        socket: dir.path().join("d.sock"),
        state_dir: dir.path().join("w/.claude-vm"),
    };
    server::prepare_dirs(&paths).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let p = paths.clone();
    let task = tokio::spawn(async move {
        server::serve(p, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    client::health_wait(&paths.socket, Duration::from_secs(5))
        .await
        .unwrap();
    let mut body = vec![0u8];
    body.extend_from_slice(&(200_000u32).to_be_bytes());
    body.extend(std::iter::repeat_n(b'x', 200_000));
    let mut req = format!(
        "POST /v1/exec HTTP/1.1\r\nhost: d\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let answer = exchange(&paths.socket, &req).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    stop.send(()).unwrap();
    task.await.unwrap();
}
