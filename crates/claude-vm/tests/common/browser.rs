//! A real headless Chromium driven over WebDriver (`chromedriver`), with a tiny blocking
//! HTTP client: enough to open pages, click, type, run scripts and take screenshots.
//! Fails (never skips) when Chromium or chromedriver is missing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub use super::http::free_port;

/// One HTTP/1.1 exchange (`Connection: close`): status, headers, body.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if method != "GET" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    // Read the header, then exactly the body: servers may keep the connection open.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed before the header"));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let lower = head.to_ascii_lowercase();
    let mut rest = raw[split + 4..].to_vec();
    let length: Option<usize> = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    let chunked = lower.contains("transfer-encoding: chunked");
    loop {
        let complete = match length {
            Some(len) => rest.len() >= len,
            None if chunked => rest.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&buf[..n]);
    }
    if chunked {
        rest = dechunk(&rest);
    }
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, head, String::from_utf8_lossy(&rest).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(b.len());
        out.extend_from_slice(&b[start..end]);
        b = &b[(end + 2).min(b.len())..];
    }
    out
}

/// Where screenshots go: `target/test-artifacts/web/`.
pub fn artifacts_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts/web");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A chromedriver process and one browser session, both ended on drop.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Headless Chromium with a phone-sized window (`width`×`height` CSS pixels).
    pub fn start(width: u32, height: u32) -> Browser {
        Browser::launch(width, height, true, false)
    }

    /// A phone-sized one whose user already allowed the site's notifications.
    pub fn notifying(width: u32, height: u32) -> Browser {
        Browser::launch(width, height, true, true)
    }

    /// Headless Chromium as a desktop browser (no touch, no phone emulation).
    pub fn desktop(width: u32, height: u32) -> Browser {
        Browser::launch(width, height, false, false)
    }

    fn launch(width: u32, height: u32, phone: bool, notifications: bool) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run chromedriver ({e}); install chromium and chromium-driver (scripts/test-deps.sh does)")
            });
        let profile = tempfile::Builder::new()
            .prefix("cvm-chrome-")
            .tempdir()
            .unwrap();
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let start = Instant::now();
        while http(port, "GET", "/status", &[], None).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--hide-scrollbars", "--no-first-run", "--disable-extensions",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", b._profile.path().display()),
                ],
                // A real phone viewport: headless windows have a minimum width above 360.
                "mobileEmulation": {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2, "touch": true}},
            },
        }}});
        if notifications {
            caps["capabilities"]["alwaysMatch"]["goog:chromeOptions"]["prefs"] =
                json!({"profile.default_content_setting_values.notifications": 1});
        }
        if !phone {
            caps["capabilities"]["alwaysMatch"]["goog:chromeOptions"]
                .as_object_mut()
                .unwrap()
                .remove("mobileEmulation");
        }
        let v = b.raw("POST", "/session", Some(caps));
        b.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {v}"))
            .to_owned();
        b.cmd(
            "POST",
            "timeouts",
            Some(json!({"script": 60_000, "pageLoad": 120_000})),
        );
        b
    }

    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let (status, _, text) = http(self.port, method, path, &[], body.as_deref())
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(
            status == 200,
            "WebDriver {method} {path} answered {status}: {text}"
        );
        v
    }

    /// A session command; returns its `value`.
    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.or_else(|| (method == "POST").then(|| json!({})));
        self.raw(method, &format!("/session/{}/{path}", self.session), body)["value"].take()
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "url", None)
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Run a script in the page (`arguments` = `args`); returns its result.
    pub fn exec(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Run a script that calls `arguments[arguments.length - 1]` with its result.
    pub fn exec_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "execute/async",
            Some(json!({ "script": script, "args": args })),
        )
    }

    fn elements(&self, css: &str) -> Vec<String> {
        let v = self.cmd(
            "POST",
            "elements",
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn exists(&self, css: &str) -> bool {
        !self.elements(css).is_empty()
    }

    fn element(&self, css: &str) -> String {
        self.elements(css)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element {css:?} on {}", self.url()))
    }

    /// Scroll into view and click, like a finger would.
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.cmd("POST", &format!("element/{id}/click"), None);
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.cmd(
            "POST",
            &format!("element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// The rendered text of the first match (`innerText`: what a user sees).
    pub fn text(&self, css: &str) -> String {
        self.exec(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
            json!([css]),
        )
        .as_str()
        .unwrap_or("")
        .to_owned()
    }

    /// Wait until `pred` holds; panics with `what` and the page text after `within`.
    pub fn wait(&self, what: &str, within: Duration, pred: impl Fn(&Browser) -> bool) {
        let start = Instant::now();
        loop {
            if pred(self) {
                return;
            }
            if start.elapsed() > within {
                self.screenshot("timeout");
                panic!(
                    "timed out waiting for {what} on {}; the page shows:\n{}",
                    self.url(),
                    self.text("body")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Wait until the text of `css` contains `needle`.
    pub fn wait_text(&self, css: &str, needle: &str, within: Duration) {
        self.wait(&format!("{needle:?} in {css}"), within, |b| {
            b.text(css).contains(needle)
        });
    }

    /// The viewport's width in CSS pixels.
    pub fn viewport_width(&self) -> u64 {
        self.exec("return window.innerWidth;", json!([]))
            .as_u64()
            .unwrap_or(0)
    }

    /// Save a PNG of the viewport under `target/test-artifacts/web/<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine as _;
        let v = self.cmd("GET", "screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .unwrap_or_default();
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The page's width in CSS pixels: more than the viewport means horizontal scrolling.
    pub fn scroll_width(&self) -> u64 {
        self.exec(
            "return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth);",
            json!([]),
        )
        .as_u64()
        .unwrap_or(u64::MAX)
    }

    pub fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "cookie", None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = http(
                self.port,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
