//! What a backup needs from inside the workspace (`/v1/backup/...`): the scan of what is
//! there and the contents of the files that changed. The repository, its password and the
//! storage credentials never come here: the control side does the rest.
//!
//! The agent's part of the volume is scanned by a child process (`claude-vm agent
//! backup-scan`) running as the agent user with a memory limit, because the walk reads
//! `.gitignore` files an agent wrote: a FIFO or a link to `/dev/zero` there can only stall
//! or exhaust that child, never the daemon. The daemon's own state folder (root-only, so
//! nothing in it is an agent's) is scanned in-process. The control side merges the two and
//! checks every line ([`claude_vm_backup::scan::Checker`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use claude_vm_backup::scan::{self, ScanOptions};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use claude_vm_protocol::api::ReadMany;
use claude_vm_protocol::frame::{self, Kind, MAX_FRAME, READ_MANY_MAX_PATHS};

use crate::api::{Body, State, error, fallible_stream_body, parse_query, read_limited};
use crate::files::Root;

/// Folders of the state folder a snapshot leaves out: the SSH host key (a restored
/// workspace is a new machine with its own) and the logs.
const STATE_EXCLUDED: &[&str] = &["ssh", "logs"];

/// Memory the scanning child may use.
const SCAN_MEMORY: u64 = 2 << 30;

/// Largest body of a `read-many` request (its paths).
const READ_MANY_BODY: u64 = 8 << 20;

/// How long the scanning child may go without listing anything before it is stopped,
/// unless the request says otherwise (`stall_secs`, 1 to [`SCAN_STALL_MAX`]).
const SCAN_STALL: Duration = Duration::from_secs(120);
const SCAN_STALL_MAX: u64 = 3600;

pub fn handles(segments: &[&str]) -> bool {
    matches!(segments, ["backup", "scan" | "read" | "read-many"])
}

pub async fn route(
    state: Arc<State>,
    req: Request<hyper::body::Incoming>,
    segments: &[&str],
) -> Response<Body> {
    let query = match parse_query(req.uri().query()) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match (req.method(), segments) {
        (&Method::GET, ["backup", "scan"]) => {
            let flag = |k: &str| matches!(query.get(k).map(String::as_str), Some("1" | "true"));
            match query.get("part").map(String::as_str) {
                Some("state") => scan_state(&state.root),
                Some("agent") => {
                    let stall = match query.get("stall_secs").map(|s| s.parse::<u64>()) {
                        None => SCAN_STALL,
                        Some(Ok(s)) if (1..=SCAN_STALL_MAX).contains(&s) => Duration::from_secs(s),
                        Some(_) => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                format!(
                                    "stall_secs must be a whole number of seconds from 1 to {SCAN_STALL_MAX}"
                                ),
                            );
                        }
                    };
                    scan_agent(&state.root, flag("include_ignored"), stall).await
                }
                _ => error(StatusCode::BAD_REQUEST, "part must be `state` or `agent`"),
            }
        }
        (&Method::GET, ["backup", "read"]) => match query.get("path") {
            Some(p) => read(&state.root, p.clone()).await,
            None => error(StatusCode::BAD_REQUEST, "missing path"),
        },
        (&Method::POST, ["backup", "read-many"]) => {
            let body = match read_limited(req.into_body(), READ_MANY_BODY).await {
                Ok(b) => b,
                Err(res) => return res,
            };
            match serde_json::from_slice::<ReadMany>(&body) {
                Ok(r) if r.paths.len() > READ_MANY_MAX_PATHS => error(
                    StatusCode::BAD_REQUEST,
                    format!("at most {READ_MANY_MAX_PATHS} paths at a time"),
                ),
                Ok(r) => read_many(&state.root, r.paths),
                Err(e) => error(StatusCode::BAD_REQUEST, format!("bad request body: {e}")),
            }
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed here", req.method()),
        ),
    }
}

fn state_dir(root: &Path) -> PathBuf {
    root.join(
        Path::new(claude_vm_protocol::STATE_DIR)
            .file_name()
            .expect("the state folder has a name"),
    )
}

/// The state folder, scanned on the blocking pool and streamed as scan lines.
fn scan_state(root: &Path) -> Response<Body> {
    let dir = state_dir(root);
    let (tx, rx) = mpsc::channel(16);
    tokio::task::spawn_blocking(move || {
        let opts = ScanOptions {
            git_ignore: false,
            exclude: STATE_EXCLUDED.iter().map(|x| dir.join(x)).collect(),
            with_root: true,
            from_cwd: false,
        };
        let mut out = ChunkSender {
            tx: tx.clone(),
            buf: Vec::new(),
        };
        if let Err(e) = scan::scan(&dir, &opts, &mut out) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .body(fallible_stream_body(rx))
        .expect("valid response")
}

/// Bytes written on the blocking pool, sent as the response body in pieces.
struct ChunkSender {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.tx
            .blocking_send(Ok(Bytes::from(std::mem::take(&mut self.buf))))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

/// The agent's part of the volume, scanned by a child with the agent's privileges; its
/// output is passed on as it comes (the control side checks it). The child is killed if
/// the client goes away.
async fn scan_agent(root: &Path, include_ignored: bool, stall: Duration) -> Response<Body> {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot find the daemon's binary: {e}"),
            );
        }
    };
    let who = match crate::exec::identity(None) {
        Ok(w) => w,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["agent", "backup-scan", "--root"])
        .arg(root)
        .arg("--exclude")
        .arg(state_dir(root));
    if !include_ignored {
        cmd.arg("--git-ignore");
    }
    cmd.env_clear()
        .env("HOME", &who.home)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    crate::exec::run_as(&mut cmd, &who, crate::exec::Grouping::ProcessGroup);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_AS,
                SCAN_MEMORY,
                SCAN_MEMORY,
            )
            .map_err(std::io::Error::from)
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot start the scan: {e}"),
            );
        }
    };
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        // Why the scan ended early, told as its last line (the control side fails the
        // backup on it and shows why); the child is killed when this task ends.
        let stop = |why: String| {
            let mut line = b"\n".to_vec();
            serde_json::to_writer(&mut line, &scan::ScanLine::Stopped { stopped: why })
                .expect("serializable");
            line.push(b'\n');
            Ok(Bytes::from(line))
        };
        loop {
            tokio::select! {
                n = tokio::time::timeout(stall, stdout.read(&mut buf)) => match n {
                    Ok(Ok(0)) => break,
                    Ok(Ok(n)) => {
                        if tx.send(Ok(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            // The client went away: kill_on_drop ends the child.
                            return;
                        }
                    }
                    Ok(Err(e)) => {
                        let _ = tx.send(stop(format!("reading the scan failed: {e}"))).await;
                        return;
                    }
                    Err(_) => {
                        let _ = tx.send(stop(format!(
                            "it made no progress for {}s (a file it must read, such as a .gitignore, may be a FIFO or otherwise endless)",
                            stall.as_secs()
                        ))).await;
                        return;
                    }
                },
                _ = tx.closed() => return,
            }
        }
        match child.wait().await {
            Ok(s) if s.success() => {}
            Ok(s) => {
                let _ = tx
                    .send(stop(format!(
                        "it failed ({s}; a file it must read, such as a .gitignore, may be endless)"
                    )))
                    .await;
            }
            Err(e) => {
                let _ = tx.send(stop(format!("waiting for it failed: {e}"))).await;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .body(fallible_stream_body(rx))
        .expect("valid response")
}

/// One file's content, by absolute path: a regular file reached without following a
/// symlink in its last component (and intermediate ones only inside the volume).
async fn read(root: &Path, path: String) -> Response<Body> {
    let root = root.to_owned();
    let opened = tokio::task::spawn_blocking(move || {
        let r = Root::new(&root).map_err(|e| crate::files::FileError::Io {
            path: root.display().to_string(),
            source: e,
        })?;
        r.open_read_nofollow(&path)
    })
    .await;
    let (file, _) = match opened {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            let status =
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error(status, e.to_string());
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = file;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    break;
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/octet-stream")
        .body(fallible_stream_body(rx))
        .expect("valid response")
}

/// Many small files in one answer, one frame each, in the order asked: what a backup reads
/// when thousands of files changed, without a round trip per file. Each is opened as
/// `read` opens it; one larger than a frame is answered `Large` (the client reads it on
/// its own), so nothing here holds more than one frame in memory.
fn read_many(root: &Path, paths: Vec<String>) -> Response<Body> {
    let root = root.to_owned();
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let r = match Root::new(&root) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        use std::io::Write;
        let mut out = ChunkSender {
            tx,
            buf: Vec::new(),
        };
        for path in paths {
            let (kind, payload) = read_small(&r, &path);
            let sent = out
                .write_all(&frame::header(kind, payload.len()))
                .and_then(|()| out.write_all(&payload));
            if sent.is_err() {
                // The client went away.
                return;
            }
        }
        let _ = out.flush();
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-claude-vm-frames")
        .body(fallible_stream_body(rx))
        .expect("valid response")
}

/// One file of a `read-many`: its frame.
fn read_small(root: &Root, path: &str) -> (Kind, Vec<u8>) {
    use std::io::Read;
    let (file, info) = match root.open_read_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.status() == 404 => return (Kind::Missing, e.to_string().into_bytes()),
        Err(e) => return (Kind::Failed, e.to_string().into_bytes()),
    };
    if info.size > MAX_FRAME as u64 {
        return (Kind::Large, Vec::new());
    }
    let mut data = Vec::with_capacity(info.size as usize);
    // One byte more than a frame holds tells a file that grew since it was opened.
    match file.take(MAX_FRAME as u64 + 1).read_to_end(&mut data) {
        Ok(n) if n > MAX_FRAME => (Kind::Large, Vec::new()),
        Ok(_) => (Kind::File, data),
        Err(e) => (Kind::Failed, format!("{path}: {e}").into_bytes()),
    }
}
