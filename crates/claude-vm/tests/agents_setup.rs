//! A new user's first conversation needs no configuration: the agent installed by its
//! vendor's installer (or copied from this machine), the user's own account found and used,
//! `claude-vm doctor`, and the README's main command ending in a reply.
//!
//! Real parts: Docker, the real Claude Code CLI (PyPI `claude-agent-sdk`) against the test
//! kit's scripted model, which checks the credential each request carries. The one stand-in:
//! no vendor site can be reached here, so a local HTTP server plays Claude Code's download
//! site (`install.sh`, `latest`, `<version>/manifest.json`, `<version>/linux-x64/claude`, the
//! vendor's layout) serving the real binary. The stand-in installer follows the vendor's
//! steps (version, manifest, download, sha256 check) except the last: the vendor's ends by
//! running `claude install`, which downloads again from the vendor's own address, so the
//! stand-in places the binary where that command does (`~/.local/share/claude/versions/<v>`,
//! linked from `~/.local/bin/claude`). The same site plays Goose's GitHub release downloads
//! (`download_cli.sh` beside the release archive `goose-<arch>-unknown-linux-gnu.tar.bz2`),
//! serving a stand-in `goose` (no Goose build is at hand) that says its version.
//!
//! The npm-published agents (Gemini CLI, Qwen Code) are installed by the real `npm` of an
//! image with Debian's Node.js, against a second stand-in: a local HTTP server answering as
//! the npm registry does for those packages (the package document, then a tarball built
//! here whose `bin` is a `cli.js` that says its version).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use claude_vm_testkit::{Script, ScriptedModel};
use common::chat::{claude_binary, git_project};
use common::{Ctx, Run, dexec, test_image};
use sha2::Digest;

/// The stand-in for Claude Code's download site (see the module's documentation).
struct DownloadSite {
    port: u16,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    version: String,
}

const STAND_IN_INSTALLER: &str = r#"#!/bin/bash
# STAND-IN for https://claude.ai/install.sh (no vendor site is reachable in the tests).
set -e
BASE="@BASE@"
case "$(uname -m)" in x86_64) platform=linux-x64;; aarch64) platform=linux-arm64;; *) echo "unsupported: $(uname -m)" >&2; exit 1;; esac
version=$(curl -fsSL "$BASE/latest")
echo "Installing Claude Code $version for $platform"
manifest=$(curl -fsSL "$BASE/$version/manifest.json")
checksum=$(printf '%s' "$manifest" | sed -n "s/.*\"$platform\":{\"checksum\":\"\([0-9a-f]\{64\}\)\".*/\1/p")
[ ${#checksum} -eq 64 ] || { echo "no checksum for $platform in the manifest" >&2; exit 1; }
mkdir -p "$HOME/.claude/downloads"
bin="$HOME/.claude/downloads/claude-$version-$platform"
curl -fsSL -o "$bin" "$BASE/$version/$platform/claude"
echo "$checksum  $bin" | sha256sum -c - >/dev/null || { echo "checksum mismatch" >&2; rm -f "$bin"; exit 1; }
chmod +x "$bin"
# What `claude install` leaves:
mkdir -p "$HOME/.local/share/claude/versions" "$HOME/.local/bin"
mv "$bin" "$HOME/.local/share/claude/versions/$version"
ln -sf "$HOME/.local/share/claude/versions/$version" "$HOME/.local/bin/claude"
echo "✔ Claude Code successfully installed! Location: ~/.local/bin/claude"
"#;

/// Goose's installer on the stand-in site, where the vendor's release downloads keep it.
const GOOSE_INSTALLER: &str = "/goose/releases/download/stable/download_cli.sh";
const GOOSE_VERSION: &str = "1.13.2";

const STAND_IN_GOOSE_INSTALLER: &str = r#"#!/usr/bin/env bash
# STAND-IN for Goose's download_cli.sh (no vendor site is reachable in the tests): the
# vendor's steps on Linux (the release archive for this architecture, unpacked into
# GOOSE_BIN_DIR, then `goose configure` unless CONFIGURE=false), downloading from here.
set -eu
BASE="@BASE@"
GOOSE_BIN_DIR="${GOOSE_BIN_DIR:-$HOME/.local/bin}"
CONFIGURE="${CONFIGURE:-true}"
case "$(uname -m)" in x86_64) arch=x86_64;; aarch64|arm64) arch=aarch64;; *) echo "Error: unsupported architecture $(uname -m)" >&2; exit 1;; esac
file="goose-$arch-unknown-linux-gnu.tar.bz2"
echo "Downloading stable release: $file..."
tmp=$(mktemp -d)
curl -sLf "$BASE/$file" --output "$tmp/$file" || { echo "Error: Failed to download $BASE/$file" >&2; exit 1; }
tar -xjf "$tmp/$file" -C "$tmp"
mkdir -p "$GOOSE_BIN_DIR"
mv "$tmp/goose" "$GOOSE_BIN_DIR/goose"
chmod +x "$GOOSE_BIN_DIR/goose"
rm -rf "$tmp"
echo "Goose CLI installed to $GOOSE_BIN_DIR/goose"
if [ "$CONFIGURE" = true ]; then "$GOOSE_BIN_DIR/goose" configure; fi
"#;

/// STAND-IN for Goose's CLI: its version; any other use is noted in the agent's home (the
/// real `goose configure` waits for answers on a terminal).
const STAND_IN_GOOSE: &str = "#!/bin/sh
case \"$1\" in
  --version) echo '@VERSION@';;
  *) echo \"$*\" >> \"$HOME/.goose-stand-in-calls\"; echo 'stand-in goose: only --version' >&2; exit 2;;
esac
";

/// The release archive Goose publishes for Linux on this architecture: `goose` at its top.
fn goose_release_archive() -> (String, Vec<u8>) {
    let name = format!("goose-{}-unknown-linux-gnu.tar.bz2", std::env::consts::ARCH);
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("goose");
    std::fs::write(&program, STAND_IN_GOOSE.replace("@VERSION@", GOOSE_VERSION)).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let archive = dir.path().join(&name);
    let out = Command::new("tar")
        .arg("-cjf")
        .arg(&archive)
        .arg("-C")
        .arg(dir.path())
        .arg("goose")
        .output()
        .expect("tar runs");
    assert!(
        out.status.success(),
        "cannot make Goose's release archive (tar with bzip2; scripts/test-deps.sh installs bzip2): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (name, std::fs::read(&archive).unwrap())
}

impl DownloadSite {
    fn start() -> DownloadSite {
        let binary = PathBuf::from(claude_binary());
        let out = Command::new(&binary).arg("--version").output().unwrap();
        let version = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        let bytes = std::fs::read(&binary).unwrap();
        let checksum: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}/claude-code-releases");
        let mut files: HashMap<String, Arc<Vec<u8>>> = HashMap::new();
        files.insert(
            "/install.sh".into(),
            Arc::new(STAND_IN_INSTALLER.replace("@BASE@", &base).into_bytes()),
        );
        files.insert(
            "/hangs.sh".into(),
            Arc::new(b"echo 'resolving...'\nexec tail -f /dev/null\n".to_vec()),
        );
        files.insert(
            "/claude-code-releases/latest".into(),
            Arc::new(version.clone().into_bytes()),
        );
        files.insert(
            format!("/claude-code-releases/{version}/manifest.json"),
            Arc::new(
                format!(
                    r#"{{"version":"{version}","buildDate":"2026-11-30T00:00:00Z","platforms":{{"linux-x64":{{"checksum":"{checksum}","size":{}}}}}}}"#,
                    bytes.len()
                )
                .into_bytes(),
            ),
        );
        files.insert(
            format!("/claude-code-releases/{version}/linux-x64/claude"),
            Arc::new(bytes),
        );
        let goose_base = format!("http://127.0.0.1:{port}/goose/releases/download/stable");
        files.insert(
            GOOSE_INSTALLER.into(),
            Arc::new(
                STAND_IN_GOOSE_INSTALLER
                    .replace("@BASE@", &goose_base)
                    .into_bytes(),
            ),
        );
        let (archive, archive_bytes) = goose_release_archive();
        files.insert(
            format!("/goose/releases/download/stable/{archive}"),
            Arc::new(archive_bytes),
        );
        let hits = serve(listener, files);
        DownloadSite {
            port,
            hits,
            version,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn binary_downloads(&self) -> usize {
        let path = format!("/claude-code-releases/{}/linux-x64/claude", self.version);
        self.hits.lock().unwrap().get(&path).copied().unwrap_or(0)
    }

    fn any_hits(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }

    fn hits_of(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// Serve `files` by path over HTTP/1.1 (404 for the rest); how often each path was asked.
fn serve(
    listener: TcpListener,
    files: HashMap<String, Arc<Vec<u8>>>,
) -> Arc<Mutex<HashMap<String, usize>>> {
    let hits = Arc::new(Mutex::new(HashMap::new()));
    let record = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let files = files.clone();
            let record = record.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                *record.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
                let _ = match files.get(&path) {
                    Some(body) => conn
                        .write_all(
                            format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .and_then(|()| conn.write_all(body)),
                    None => conn.write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    ),
                };
            });
        }
    });
    hits
}

const ENV_KEY: &str = "sk-ant-api03-from-the-environment-0001";
const LOCAL_TOKEN: &str = "sk-ant-oat01-from-the-local-login-0002";
const REVOKED_KEY: &str = "sk-ant-api03-revoked-by-now-000000003";

/// A user's machine: an empty home directory, a PATH, an environment.
struct Machine {
    home: tempfile::TempDir,
    path_dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Machine {
    fn new() -> Machine {
        Machine {
            home: tempfile::tempdir().unwrap(),
            path_dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    /// `claude-vm ARGS` as this user runs it, with `stdin`.
    fn run(&self, ctx: &Ctx, args: &[&str], stdin: &str) -> Run {
        let mut c = ctx.command(args);
        let path = format!(
            "{}:{}",
            self.path_dir.path().display(),
            std::env::var("PATH").unwrap()
        );
        c.env("HOME", self.home.path()).env("PATH", path);
        for k in [
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_BASE_URL",
            "ANTHROPIC_AUTH_TOKEN",
            "CLAUDE_CODE_OAUTH_TOKEN",
            "OPENAI_API_KEY",
            "GEMINI_API_KEY",
        ] {
            c.env_remove(k);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn set_env(&mut self, k: &str, v: &str) {
        self.env.retain(|(n, _)| n != k);
        self.env.push((k.to_owned(), v.to_owned()));
    }

    fn unset_env(&mut self, k: &str) {
        self.env.retain(|(n, _)| n != k);
    }

    /// Put a program named `name` on this machine's PATH.
    fn on_path(&self, name: &str, target: &Path) {
        std::os::unix::fs::symlink(target, self.path_dir.path().join(name)).unwrap();
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.home.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// A home configured only where the test says: the test image, workspaces on the host
/// network (to reach the loopback servers), Claude Code pointed at the scripted model (no
/// account: that is found), its telemetry off.
fn home(model: &str, extra_claude: &str) -> Ctx {
    common::chat::ctx_with_agents(&claude_yaml(model, extra_claude))
}

/// The lines under `agents:` for [`home`].
fn claude_yaml(model: &str, extra_claude: &str) -> String {
    format!(
        "  claude:\n    env:\n      ANTHROPIC_BASE_URL: {model}\n      DISABLE_TELEMETRY: '1'\n      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1'\n{extra_claude}"
    )
}

fn write_config(ctx: &Ctx, model: &str, extra_claude: &str) {
    std::fs::write(
        ctx.home.path().join("config.yaml"),
        format!(
            "default_image: {}\nagents:\n{}",
            test_image(),
            claude_yaml(model, extra_claude)
        ),
    )
    .unwrap();
}

fn model() -> ScriptedModel {
    let m = ScriptedModel::start(
        Script::from_json(
            r#"[{"match": {"last_user_contains": "hello"}, "response": [{"text": "Hello from the installed agent."}]}]"#,
        )
        .unwrap(),
    )
    .unwrap();
    m.require_tokens(&[ENV_KEY, LOCAL_TOKEN]);
    m
}

/// The credential the model saw on its last `/v1/messages` request.
fn last_credential(model: &ScriptedModel) -> String {
    model
        .message_requests()
        .last()
        .map(|r| r.headers["x-testkit-credential"].clone())
        .unwrap_or_default()
}

fn agents_list(m: &Machine, ctx: &Ctx) -> serde_json::Value {
    agents_list_kind(m, ctx, "claude")
}

fn agents_list_kind(m: &Machine, ctx: &Ctx, kind: &str) -> serde_json::Value {
    let v = m.run(ctx, &["agents", "list", "--json"], "").ok().json();
    v.as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == kind)
        .unwrap()
        .clone()
}

#[test]
fn claude_is_installed_by_its_vendor_installer_and_uses_the_account_this_machine_has() {
    let site = DownloadSite::start();
    let model = model();
    let ctx = home(
        &model.url(),
        &format!("    installer_url: {}\n", site.url("/install.sh")),
    );
    let mut m = Machine::new();
    // A macOS build of claude on the PATH (a Mach-O header): never copied in.
    let mac = m.home.path().join("claude-macos");
    let mut macho = vec![0xcf, 0xfa, 0xed, 0xfe, 0x07, 0x00, 0x00, 0x01];
    macho.resize(4096, 0);
    std::fs::write(&mac, macho).unwrap();
    std::fs::set_permissions(&mac, std::fs::Permissions::from_mode(0o755)).unwrap();
    m.on_path("claude", &mac);

    // Nothing anywhere: new-chat says in one line what is missing, before installing.
    let p = git_project(&ctx);
    m.run(
        &ctx,
        &["workspace", "up", p.to_str().unwrap(), "--name", "first"],
        "",
    )
    .ok();
    let none = m
        .run(&ctx, &["new-chat", "first", "-m", "hello", "--wait"], "")
        .fails();
    let lines: Vec<&str> = none.stderr.trim().lines().collect();
    assert_eq!(
        lines,
        [
            "error: no Claude account: run `claude-vm agents login claude` (or set ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN)"
        ],
        "{}",
        none.stderr
    );
    assert_eq!(
        site.any_hits(),
        0,
        "nothing was installed without an account"
    );
    assert_eq!(agents_list(&m, &ctx)["ready"], false);

    // The environment's key is found and used.
    m.set_env("ANTHROPIC_API_KEY", ENV_KEY);
    let listed = agents_list(&m, &ctx);
    assert_eq!(listed["ready"], true, "{listed}");
    assert_eq!(listed["account_source"], "environment (ANTHROPIC_API_KEY)");
    assert_eq!(listed["account"], "sk-ant…0001");
    let first = m
        .run(
            &ctx,
            &["new-chat", "first", "-m", "please say hello", "--wait"],
            "",
        )
        .ok();
    assert_eq!(
        first.stdout.trim(),
        "Hello from the installed agent.",
        "{}",
        first.stderr
    );
    for shown in [
        "is a macOS program and cannot run in a Linux workspace",
        "installing claude in the workspace with Claude Code's native installer",
        &format!("Installing Claude Code {} for linux-x64", site.version),
        "Claude Code successfully installed",
    ] {
        assert!(
            first.stderr.contains(shown),
            "{shown:?} not in\n{}",
            first.stderr
        );
    }
    assert_eq!(last_credential(&model), "x-api-key:0");
    assert_eq!(site.binary_downloads(), 1);
    assert!(!first.stderr.contains(ENV_KEY) && !first.stdout.contains(ENV_KEY));
    // Its version is shown.
    let long = m.run(&ctx, &["chat", "list", "-l"], "").ok();
    assert!(long.stdout.contains("VERSION"), "{}", long.stdout);
    assert!(
        long.stdout
            .contains(&format!("{} (Claude Code)", site.version)),
        "{}",
        long.stdout
    );

    // Installed once: on the volume, it outlives the container's stop and start.
    m.run(&ctx, &["workspace", "down", "first"], "").ok();
    m.run(&ctx, &["workspace", "up", "first"], "").ok();
    let again = m
        .run(
            &ctx,
            &["new-chat", "first", "-m", "hello again", "--wait"],
            "",
        )
        .ok();
    assert_eq!(again.stdout.trim(), "Hello from the installed agent.");
    assert!(
        !again.stderr.contains("installing claude"),
        "{}",
        again.stderr
    );
    assert_eq!(site.binary_downloads(), 1);

    // The user's own Claude Code login on this machine, when the environment has no key.
    m.unset_env("ANTHROPIC_API_KEY");
    let expires = jiff::Timestamp::now().as_millisecond() + 3_600_000;
    m.write(
        ".claude/.credentials.json",
        &format!(
            r#"{{"claudeAiOauth":{{"accessToken":"{LOCAL_TOKEN}","refreshToken":"sk-ant-ort01-stays-here","expiresAt":{expires},"scopes":["user:inference"],"subscriptionType":"max"}}}}"#
        ),
    );
    assert_eq!(
        agents_list(&m, &ctx)["account_source"],
        "~/.claude/.credentials.json"
    );
    let local = m
        .run(
            &ctx,
            &["new-chat", "first", "-m", "hello, subscriber", "--wait"],
            "",
        )
        .ok();
    assert_eq!(
        local.stdout.trim(),
        "Hello from the installed agent.",
        "{}",
        local.stderr
    );
    assert_eq!(last_credential(&model), "bearer:1");

    // Expired or malformed, it is refused with the reason, in one line.
    let past = jiff::Timestamp::now().as_millisecond() - 7_200_000;
    m.write(
        ".claude/.credentials.json",
        &format!(r#"{{"claudeAiOauth":{{"accessToken":"{LOCAL_TOKEN}","expiresAt":{past}}}}}"#),
    );
    let expired = m
        .run(&ctx, &["new-chat", "first", "-m", "hello"], "")
        .fails();
    assert!(
        expired.stderr.contains("its token expired 2h ago"),
        "{}",
        expired.stderr
    );
    m.write(".claude/.credentials.json", "{\"claudeAiOauth\": ");
    let bad = m
        .run(&ctx, &["new-chat", "first", "-m", "hello"], "")
        .fails();
    assert!(bad.stderr.contains("is not valid JSON"), "{}", bad.stderr);
    assert_eq!(bad.stderr.trim().lines().count(), 1, "{}", bad.stderr);

    // `agents login`: saved owner-only, beats the rest; a revoked key fails the turn with
    // what to do, and the conversation is kept.
    let saved = m
        .run(
            &ctx,
            &["agents", "login", "claude", "--with-api-key"],
            &format!("{REVOKED_KEY}\n"),
        )
        .ok();
    assert!(
        saved.stderr.contains("saved by `claude-vm agents login`"),
        "{}",
        saved.stderr
    );
    assert!(!saved.stderr.contains(REVOKED_KEY));
    let file = ctx.home.path().join("accounts/claude.json");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let revoked = m
        .run(&ctx, &["new-chat", "first", "-m", "hello", "--wait"], "")
        .fails();
    assert!(
        revoked
            .stdout
            .contains("log in again: `claude-vm agents login claude`"),
        "stdout: {}\nstderr: {}",
        revoked.stdout,
        revoked.stderr
    );
    assert_eq!(last_credential(&model), "wrong");
    let listed = m.run(&ctx, &["chat", "list", "--json"], "").ok().json();
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed:#}");
    // Logged in again, the same conversation takes the new account at its next message:
    // its agent restarts with it, resuming its session, and answers.
    let refused = listed
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|c| c["created_at"].as_str().unwrap_or("").to_owned())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let relogged = m
        .run(
            &ctx,
            &["agents", "login", "claude", "--with-api-key"],
            &format!("{ENV_KEY}\n"),
        )
        .ok();
    assert!(
        relogged.stderr.contains("take it with their next message"),
        "{}",
        relogged.stderr
    );
    let renewed = m
        .run(
            &ctx,
            &["chat", "send", "-c", &refused, "--wait", "hello, once more"],
            "",
        )
        .ok();
    assert!(
        renewed.stdout.contains("Hello from the installed agent."),
        "stdout: {}\nstderr: {}",
        renewed.stdout,
        renewed.stderr
    );
    assert_eq!(last_credential(&model), "x-api-key:0");
    let history = m
        .run(&ctx, &["chat", "log", "-c", &refused, "--json"], "")
        .ok();
    assert!(
        history.stdout.contains("hello, once more") && history.stdout.contains("log in again"),
        "the conversation kept its failed turn and went on: {}",
        history.stdout
    );
    assert!(!history.stdout.contains(ENV_KEY) && !history.stdout.contains(REVOKED_KEY));
    m.run(&ctx, &["agents", "logout", "claude"], "").ok();
    assert!(!file.exists());
    m.set_env("ANTHROPIC_API_KEY", ENV_KEY);
    m.run(
        &ctx,
        &["agents", "login", "claude", "--with-oauth-token"],
        &format!("{LOCAL_TOKEN}\n"),
    )
    .ok();
    assert_eq!(agents_list(&m, &ctx)["account_kind"], "oauth_token");
    m.run(&ctx, &["agents", "logout", "claude"], "").ok();

    // A Linux claude on this machine's PATH is copied in: nothing is downloaded.
    let linux = Machine {
        env: m.env.clone(),
        ..Machine::new()
    };
    linux.on_path("claude", Path::new(&claude_binary()));
    let p2 = ctx.path("proj2");
    std::fs::create_dir_all(&p2).unwrap();
    linux
        .run(
            &ctx,
            &["workspace", "up", p2.to_str().unwrap(), "--name", "laptop"],
            "",
        )
        .ok();
    let hits = site.any_hits();
    let copied = linux
        .run(&ctx, &["new-chat", "laptop", "-m", "hello", "--wait"], "")
        .ok();
    assert_eq!(copied.stdout.trim(), "Hello from the installed agent.");
    assert!(copied.stderr.contains("copying"), "{}", copied.stderr);
    assert_eq!(site.any_hits(), hits, "nothing was downloaded");

    // An installer that fails, or hangs (stopped at install_timeout), says so with the
    // remedy; nothing is left half-done that the next attempt trips on.
    let p3 = ctx.path("proj3");
    std::fs::create_dir_all(&p3).unwrap();
    m.run(
        &ctx,
        &["workspace", "up", p3.to_str().unwrap(), "--name", "bare"],
        "",
    )
    .ok();
    let bare = Machine {
        env: m.env.clone(),
        ..Machine::new()
    };
    write_config(
        &ctx,
        &model.url(),
        &format!("    installer_url: {}\n", site.url("/gone.sh")),
    );
    let gone = bare
        .run(&ctx, &["new-chat", "bare", "-m", "hello"], "")
        .fails();
    assert!(
        gone.stderr
            .contains("installing claude with Claude Code's native installer failed (exit 22)"),
        "{}",
        gone.stderr
    );
    assert!(gone.stderr.contains("404"), "{}", gone.stderr);
    assert!(
        gone.stderr.contains("agents.claude.binary"),
        "{}",
        gone.stderr
    );
    write_config(
        &ctx,
        &model.url(),
        &format!(
            "    installer_url: {}\n    install_timeout: 3\n",
            site.url("/hangs.sh")
        ),
    );
    let t = std::time::Instant::now();
    let hung = bare
        .run(&ctx, &["new-chat", "bare", "-m", "hello"], "")
        .fails();
    assert!(
        hung.stderr.contains("took longer than 3s and was stopped"),
        "{}",
        hung.stderr
    );
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    write_config(
        &ctx,
        &model.url(),
        &format!("    installer_url: {}\n", site.url("/install.sh")),
    );
    let mended = bare
        .run(&ctx, &["new-chat", "bare", "-m", "hello", "--wait"], "")
        .ok();
    assert_eq!(mended.stdout.trim(), "Hello from the installed agent.");

    // A kind that is not enabled is refused by name.
    std::fs::write(
        ctx.home.path().join("config.yaml"),
        format!(
            "default_image: {}\nagents:\n  enabled: [claude]\n",
            test_image()
        ),
    )
    .unwrap();
    let off = m
        .run(&ctx, &["new-chat", "bare", "--agent", "codex"], "")
        .fails();
    assert!(
        off.stderr.contains("agent codex is not in agents.enabled"),
        "{}",
        off.stderr
    );
}

#[test]
fn agents_login_reuses_this_machines_own_login_and_refuses_a_broken_one() {
    let ctx = Ctx::new();
    let m = Machine::new();
    // No flag, a local login present: it is the one saved (by its path, read each time).
    let expires = jiff::Timestamp::now().as_millisecond() + 3_600_000;
    m.write(
        ".claude/.credentials.json",
        &format!(r#"{{"claudeAiOauth":{{"accessToken":"{LOCAL_TOKEN}","expiresAt":{expires}}}}}"#),
    );
    let out = m
        .run(&ctx, &["agents", "login", "claude", "--json"], "")
        .ok();
    assert!(
        out.stderr.contains("using your own claude login"),
        "{}",
        out.stderr
    );
    let v = out.json();
    assert_eq!(v["account_kind"], "local_login", "{v}");
    assert!(
        v["account_source"]
            .as_str()
            .unwrap()
            .starts_with("saved by `claude-vm agents login` from ~/.claude/.credentials.json"),
        "{v}"
    );
    assert!(!out.stdout.contains(LOCAL_TOKEN));
    let saved = std::fs::read_to_string(ctx.home.path().join("accounts/claude.json")).unwrap();
    assert!(
        !saved.contains(LOCAL_TOKEN),
        "only the path is kept: {saved}"
    );
    // The file is read again: broken later, the saved login says so.
    m.write(".claude/.credentials.json", "{oops");
    let listed = agents_list(&m, &ctx);
    assert_eq!(listed["ready"], false);
    assert!(
        listed["problem"]
            .as_str()
            .unwrap()
            .contains("is not valid JSON"),
        "{listed}"
    );
    // `--from-local` refuses a broken file, and a kind without that kind of account.
    let bad = m
        .run(&ctx, &["agents", "login", "claude", "--from-local"], "")
        .fails();
    assert!(bad.stderr.contains("is not valid JSON"), "{}", bad.stderr);
    let gemini = m
        .run(&ctx, &["agents", "login", "gemini", "--from-local"], "")
        .fails();
    assert!(
        gemini
            .stderr
            .contains("gemini cannot use that kind of account; it takes: api_key"),
        "{}",
        gemini.stderr
    );
    // Piped without a flag: a key is told from an OAuth token by its prefix.
    let piped = Machine::new();
    let v = piped
        .run(
            &ctx,
            &["agents", "login", "claude", "--json"],
            &format!("{LOCAL_TOKEN}\n"),
        )
        .ok()
        .json();
    assert_eq!(v["account_kind"], "oauth_token", "{v}");
    let v = piped
        .run(
            &ctx,
            &["agents", "login", "claude", "--json"],
            &format!("{ENV_KEY}\n"),
        )
        .ok()
        .json();
    assert_eq!(v["account_kind"], "api_key", "{v}");
    let mode = std::fs::metadata(ctx.home.path().join("accounts/claude.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

fn check<'a>(doctor: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {doctor:#}"))
}

#[test]
fn doctor_says_what_is_ready_and_what_to_do_about_the_rest() {
    let ctx = Ctx::new();
    let mut m = Machine::new();
    m.set_env("ANTHROPIC_API_KEY", ENV_KEY);

    // Everything `up` and `new-chat` need is here: exit 0.
    let run = m.run(&ctx, &["doctor", "--json"], "");
    let d = run.json();
    assert_eq!(
        (run.code, &d["ready"]),
        (0, &serde_json::json!(true)),
        "{d:#}"
    );
    let docker = check(&d, "provider docker");
    assert_eq!(docker["verdict"], "ok");
    assert!(
        docker["detail"]
            .as_str()
            .unwrap()
            .starts_with("Docker Engine "),
        "{docker}"
    );
    assert_eq!(
        check(&d, &format!("image {}", test_image()))["verdict"],
        "ok"
    );
    let claude = check(&d, "agent claude");
    assert_eq!(claude["verdict"], "ok", "{claude}");
    assert!(
        claude["detail"]
            .as_str()
            .unwrap()
            .contains("environment (ANTHROPIC_API_KEY) (sk-ant…0001)"),
        "{claude}"
    );
    assert!(!d.to_string().contains(ENV_KEY));
    assert_eq!(check(&d, "server")["verdict"], "warn");
    assert_eq!(check(&d, "ssh config")["verdict"], "warn");
    assert_eq!(
        check(&d, "ssh config")["remedy"],
        "`claude-vm ssh-config --install`"
    );
    assert_eq!(check(&d, "disk")["verdict"], "ok");
    assert_eq!(check(&d, "backups")["verdict"], "ok");
    // The same as lines, each with its remedy.
    let text = m.run(&ctx, &["doctor"], "").ok();
    assert!(
        text.stdout.contains("✓ provider docker: Docker Engine"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("! server: not running"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("    → `claude-vm ssh-config --install`"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.trim_end().ends_with("have what they need"),
        "{}",
        text.stdout
    );

    // A server, and the SSH config: both ok.
    let server = common::http::Server::start(&ctx);
    m.run(&ctx, &["ssh-config", "--install"], "").ok();
    let d = m.run(&ctx, &["doctor", "--json"], "").ok().json();
    let s = check(&d, "server");
    assert_eq!(s["verdict"], "ok", "{s}");
    assert!(
        s["detail"]
            .as_str()
            .unwrap()
            .contains("(this machine only)"),
        "{s}"
    );
    assert_eq!(check(&d, "ssh config")["verdict"], "ok");
    drop(server);

    // No account for the default agent: not ready, and the remedy says how.
    m.unset_env("ANTHROPIC_API_KEY");
    let run = m.run(&ctx, &["doctor", "--json"], "");
    let d = run.json();
    assert_eq!(run.code, 1, "{d:#}");
    let claude = check(&d, "agent claude");
    assert_eq!(claude["verdict"], "fail");
    assert!(
        claude["remedy"]
            .as_str()
            .unwrap()
            .contains("claude-vm agents login claude"),
        "{claude}"
    );
    // Another enabled kind without an account is only a warning.
    assert_eq!(check(&d, "agent codex")["verdict"], "warn");
    m.set_env("ANTHROPIC_API_KEY", ENV_KEY);

    // A backup repository that cannot be opened fails its check (up and new-chat work on).
    let not_a_repo = ctx.home.path().join("not-a-repository");
    std::fs::write(&not_a_repo, "x").unwrap();
    let cfg = ctx.home.path().join("config.yaml");
    let base = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!("{base}backup:\n  repository: {}\n", not_a_repo.display()),
    )
    .unwrap();
    let run = m.run(&ctx, &["doctor", "--json"], "");
    assert_eq!(run.code, 0);
    assert_eq!(
        check(&run.json(), "backups")["verdict"],
        "fail",
        "{}",
        run.stdout
    );

    // An image that is not there is a warning (up pulls it); an unreachable default
    // provider fails.
    m.run(
        &ctx,
        &[
            "provider",
            "add",
            "far",
            "--type",
            "docker",
            "--option",
            "host=tcp://127.0.0.1:9",
        ],
        "",
    )
    .ok();
    std::fs::write(
        &cfg,
        "default_provider: far\ndefault_image: claude-vm-test-absent:none\n",
    )
    .unwrap();
    let run = m.run(&ctx, &["doctor", "--json"], "");
    let d = run.json();
    assert_eq!(run.code, 1, "{d:#}");
    let far = check(&d, "provider far");
    assert_eq!(far["verdict"], "fail", "{far}");
    assert!(far["remedy"].is_string(), "{far}");
    std::fs::write(&cfg, "default_image: claude-vm-test-absent:none\n").unwrap();
    let d = m.run(&ctx, &["doctor", "--json"], "").json();
    assert_eq!(
        check(&d, "image claude-vm-test-absent:none")["verdict"],
        "warn",
        "{d:#}"
    );
    assert_eq!(check(&d, "provider far")["verdict"], "fail");
    assert_eq!(
        d["ready"], true,
        "a provider nobody uses by default does not block"
    );
}

#[test]
fn the_readme_main_command_on_a_fresh_home_ends_in_a_reply_or_one_line_saying_what_is_missing() {
    // Workspaces here are on Docker's default network: the model listens on every
    // address and is reached through the bridge's gateway.
    // (Some engines name no gateway: it is then the subnet's first address.)
    let out = Command::new("docker")
        .args([
            "network",
            "inspect",
            "bridge",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}} {{(index .IPAM.Config 0).Subnet}}",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let gw = match text.split_whitespace().collect::<Vec<_>>()[..] {
        [gw, _] => gw.to_owned(),
        [subnet] => {
            let net = subnet.split('/').next().unwrap();
            let (head, _) = net.rsplit_once('.').unwrap();
            format!("{head}.1")
        }
        _ => panic!("no address for Docker's bridge network: {text:?}"),
    };
    let model = ScriptedModel::bind(
        "0.0.0.0:0",
        Script::from_json(
            r#"[{"match": {"last_user_contains": "hello"}, "response": [{"text": "Hello from the installed agent."}]}]"#,
        )
        .unwrap(),
    )
    .unwrap();
    model.require_tokens(&[ENV_KEY]);
    let url = format!("http://{gw}:{}", model.addr().port());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/quickstart.sh");
    let quickstart = |ctx: &Ctx, m: &Machine, project: &Path| -> Run {
        let mut c = Command::new(&script);
        c.arg(project)
            .env("CLAUDE_VM_HOME", ctx.home.path())
            .env("CLAUDE_VM_BIN", &ctx.bin)
            .env("CLAUDE_VM_FIRST_MESSAGE", "say hello")
            .env("HOME", m.home.path())
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    m.path_dir.path().display(),
                    std::env::var("PATH").unwrap()
                ),
            )
            .env("NO_COLOR", "1")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("CLAUDE_CODE_OAUTH_TOKEN")
            .stdin(Stdio::null());
        for (k, v) in &m.env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    };

    // A Linux laptop with Claude Code installed and its key in the environment.
    let ctx = Ctx::new();
    std::fs::remove_file(ctx.home.path().join("config.yaml")).unwrap();
    let mut m = Machine::new();
    m.on_path("claude", Path::new(&claude_binary()));
    m.set_env("ANTHROPIC_API_KEY", ENV_KEY);
    m.set_env("ANTHROPIC_BASE_URL", &url);
    let p = git_project(&ctx);
    let out = quickstart(&ctx, &m, &p);
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(
        out.stdout.trim(),
        "Hello from the installed agent.",
        "{}",
        out.stderr
    );
    assert_eq!(last_credential(&model), "x-api-key:0");

    // No account anywhere: a running workspace, and exactly one line saying what to do.
    let ctx = Ctx::new();
    std::fs::remove_file(ctx.home.path().join("config.yaml")).unwrap();
    let mut m = Machine::new();
    m.on_path("claude", Path::new(&claude_binary()));
    m.set_env("ANTHROPIC_BASE_URL", &url);
    let p = git_project(&ctx);
    let out = quickstart(&ctx, &m, &p);
    assert_ne!(out.code, 0);
    assert_eq!(out.stdout.trim(), "", "{}", out.stdout);
    assert_eq!(
        out.stderr.trim().lines().last().unwrap(),
        "error: no Claude account: run `claude-vm agents login claude` (or set ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN)",
        "{}",
        out.stderr
    );
    let list = ctx.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "running", "{list:?}");
}

#[test]
fn codex_uses_the_key_of_the_environment_or_of_its_own_login_file() {
    const ENV: &str = "sk-proj-codex-from-the-environment-01";
    const FILE: &str = "sk-proj-codex-from-its-auth-json-0002";
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[{"match": {"last_user_contains": "hello"}, "response": [{"text": "Hello from Codex."}]}]"#,
        )
        .unwrap(),
    )
    .unwrap();
    model.require_tokens(&[ENV, FILE]);
    // The suite's Codex configuration, without the key it gives.
    let s = common::scenario::Scenario::new(common::scenario::Agent::Codex, &model);
    let cfg = s.ctx.home.path().join("config.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let (head, _) = text.split_once("    env:\n      OPENAI_API_KEY:").unwrap();
    std::fs::write(&cfg, head).unwrap();
    let id = s.workspace("cx");
    let credential = || {
        model
            .responses_requests()
            .last()
            .map(|r| r.headers["x-testkit-credential"].clone())
            .unwrap_or_default()
    };

    let mut m = Machine::new();
    m.set_env("OPENAI_API_KEY", ENV);
    let out = m
        .run(&s.ctx, &["new-chat", "cx", "-m", "hello", "--wait"], "")
        .ok();
    assert_eq!(out.stdout.trim(), "Hello from Codex.", "{}", out.stderr);
    assert_eq!(credential(), "bearer:0");

    // `codex login --with-api-key` leaves the key in ~/.codex/auth.json.
    m.unset_env("OPENAI_API_KEY");
    m.write(
        ".codex/auth.json",
        &format!(r#"{{"OPENAI_API_KEY": "{FILE}", "tokens": null, "last_refresh": null}}"#),
    );
    assert_eq!(
        agents_list_kind(&m, &s.ctx, "codex")["account_source"],
        "~/.codex/auth.json"
    );
    let out = m
        .run(&s.ctx, &["new-chat", "cx", "-m", "hello", "--wait"], "")
        .ok();
    assert_eq!(out.stdout.trim(), "Hello from Codex.", "{}", out.stderr);
    assert_eq!(credential(), "bearer:1");

    // A ChatGPT login is Codex's own file: it reaches the agent's home, owner-only.
    let chatgpt = r#"{"OPENAI_API_KEY": null, "tokens": {"id_token": "eyJ.i.d", "access_token": "eyJ.a.t", "refresh_token": "rt-1", "account_id": "acct-1"}, "last_refresh": "2026-12-01T00:00:00Z"}"#;
    m.write(".codex/auth.json", chatgpt);
    m.run(&s.ctx, &["new-chat", "cx", "--agent", "codex"], "")
        .ok();
    assert_eq!(
        common::dexec(&id, "stat -c '%u %a' /workspace/.home/.codex/auth.json"),
        "1000 600\n"
    );
    assert_eq!(
        common::dexec(&id, "cat /workspace/.home/.codex/auth.json"),
        chatgpt
    );
}

#[test]
fn codex_is_installed_from_its_release_binary_and_npm_only_kinds_say_what_they_need() {
    // STAND-IN for Codex's GitHub release downloads: the real (static, musl) Codex binary
    // from PyPI, packed as its release asset `codex-<arch>-unknown-linux-musl.tar.gz`.
    let codex = PathBuf::from(common::scenario::codex_binary());
    let arch = std::env::consts::ARCH;
    let asset = format!("codex-{arch}-unknown-linux-musl");
    let pack = tempfile::tempdir().unwrap();
    std::fs::copy(&codex, pack.path().join(&asset)).unwrap();
    let tgz = pack.path().join("asset.tar.gz");
    let status = Command::new("tar")
        .args([
            "-czf",
            tgz.to_str().unwrap(),
            "-C",
            pack.path().to_str().unwrap(),
            &asset,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = serve(
        listener,
        HashMap::from([(
            format!("/releases/{asset}.tar.gz"),
            Arc::new(std::fs::read(&tgz).unwrap()),
        )]),
    );
    const KEY: &str = "sk-proj-codex-installed-by-release-01";
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[{"match": {"last_user_contains": "hello"}, "response": [{"text": "Hello from the installed Codex."}]}]"#,
        )
        .unwrap(),
    )
    .unwrap();
    model.require_tokens(&[KEY]);
    // The suite's Codex configuration without its binary or key, and with the stand-in.
    let s = common::scenario::Scenario::new(common::scenario::Agent::Codex, &model);
    let cfg = s.ctx.home.path().join("config.yaml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let (head, _) = text.split_once("    env:\n      OPENAI_API_KEY:").unwrap();
    let head: String = head
        .lines()
        .filter(|l| !l.trim_start().starts_with("binary:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        &cfg,
        format!("{head}    installer_url: http://127.0.0.1:{port}/releases\n"),
    )
    .unwrap();
    s.workspace("cx");
    let mut m = Machine::new();
    m.set_env("OPENAI_API_KEY", KEY);
    let out = m
        .run(&s.ctx, &["new-chat", "cx", "-m", "hello", "--wait"], "")
        .ok();
    assert_eq!(
        out.stdout.trim(),
        "Hello from the installed Codex.",
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "installing codex in the workspace with Codex's npm package or release binary"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(hits.lock().unwrap().values().sum::<usize>(), 1);
    let long = m.run(&s.ctx, &["chat", "list", "-l"], "").ok();
    assert!(long.stdout.contains("codex-cli"), "{}", long.stdout);

    // Gemini CLI installs with npm: an image without Node says so, with the remedy.
    m.set_env("GEMINI_API_KEY", "AIza-test-key-for-gemini-000000001");
    let gemini = m
        .run(&s.ctx, &["new-chat", "cx", "--agent", "gemini"], "")
        .fails();
    assert!(
        gemini.stderr.contains(
            "@google/gemini-cli installs with npm, and the workspace image has no Node.js (npm)"
        ),
        "{}",
        gemini.stderr
    );
    assert!(
        gemini.stderr.contains("agents.gemini.binary"),
        "{}",
        gemini.stderr
    );
}

/// The test image with Debian's Node.js and npm (the npm-published agents install with the
/// image's own npm) and bzip2 (Goose's release archives are bzip2'd tarballs): built once
/// from the test image, on the host network to reach Debian's mirror, and kept by its tag.
fn node_image() -> String {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let base = test_image();
    let tag = format!("{base}-node-1");
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return tag;
    }
    let present = |image: &str| {
        Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .expect("docker runs")
            .status
            .success()
    };
    if !present(&tag) {
        assert!(
            present(&base),
            "test image {base} is missing; build it with scripts/test-deps.sh"
        );
        let mut build = Command::new("docker")
            .args(["build", "--network", "host", "-t", &tag, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker runs");
        build
            .stdin
            .take()
            .unwrap()
            .write_all(
                format!(
                    "FROM {base}\nRUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs npm bzip2 && rm -rf /var/lib/apt/lists/*\n"
                )
                .as_bytes(),
            )
            .unwrap();
        let out = build.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        assert!(
            out.status.success(),
            "cannot build {tag} (Node.js and npm from Debian's mirror):\n{}\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    *built = true;
    tag
}

/// STAND-IN for the npm registry (no registry can be reached in the tests): for each of
/// its packages, what the registry answers. `GET /<name>` (a scoped name asked for as
/// `/@scope%2fname`) is the package document naming the latest version and its tarball,
/// with the tarball's integrity; the tarball is `package/package.json` with the agent's
/// `bin` and a `cli.js` that, like the real CLI's entry point, prints the version for
/// `--version`. Anything else is 404, as for a package the registry does not have.
struct NpmRegistry {
    port: u16,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

/// An npm package of an agent: its name, its program's name, its version.
struct NpmPackage {
    name: &'static str,
    bin: &'static str,
    version: &'static str,
}

const GEMINI_CLI: NpmPackage = NpmPackage {
    name: "@google/gemini-cli",
    bin: "gemini",
    version: "0.42.1",
};
const QWEN_CODE: NpmPackage = NpmPackage {
    name: "@qwen-code/qwen-code",
    bin: "qwen",
    version: "0.13.2",
};

impl NpmPackage {
    /// Where npm asks for its package document.
    fn document_path(&self) -> String {
        format!("/{}", self.name.replace('/', "%2f"))
    }

    /// Where the registry keeps its tarball (`/<name>/-/<unscoped name>-<version>.tgz`).
    fn tarball_path(&self) -> String {
        let unscoped = self.name.rsplit('/').next().unwrap();
        format!("/{}/-/{unscoped}-{}.tgz", self.name, self.version)
    }

    /// The package's tarball, as `npm pack` lays it out.
    fn tarball(&self) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("package");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(
            pkg.join("package.json"),
            serde_json::json!({
                "name": self.name,
                "version": self.version,
                "bin": {self.bin: "cli.js"},
                "license": "Apache-2.0",
            })
            .to_string(),
        )
        .unwrap();
        std::fs::write(
            pkg.join("cli.js"),
            format!(
                "#!/usr/bin/env node\n// STAND-IN for {}'s entry point: it says its version.\nif (process.argv.includes('--version')) {{\n  console.log('{}');\n  process.exit(0);\n}}\nconsole.error('stand-in {}: only --version');\nprocess.exit(2);\n",
                self.name, self.version, self.bin
            ),
        )
        .unwrap();
        let tgz = dir.path().join("package.tgz");
        let out = Command::new("tar")
            .arg("-czf")
            .arg(&tgz)
            .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
            .arg(dir.path())
            .arg("package")
            .output()
            .expect("tar runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read(tgz).unwrap()
    }
}

impl NpmRegistry {
    fn start(packages: &[&NpmPackage]) -> NpmRegistry {
        use base64::Engine as _;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut files: HashMap<String, Arc<Vec<u8>>> = HashMap::new();
        for p in packages {
            let tarball = p.tarball();
            let integrity = format!(
                "sha512-{}",
                base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(&tarball))
            );
            let document = serde_json::json!({
                "name": p.name,
                "dist-tags": {"latest": p.version},
                "versions": {
                    p.version: {
                        "name": p.name,
                        "version": p.version,
                        "bin": {p.bin: "cli.js"},
                        "dist": {
                            "tarball": format!("http://127.0.0.1:{port}{}", p.tarball_path()),
                            "integrity": integrity,
                        },
                    },
                },
            });
            files.insert(
                p.document_path(),
                Arc::new(document.to_string().into_bytes()),
            );
            files.insert(p.tarball_path(), Arc::new(tarball));
        }
        NpmRegistry {
            port,
            hits: serve(listener, files),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn hits_of(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

const GEMINI_KEY: &str = "AIza-gemini-key-from-the-environment-01";
const QWEN_KEY: &str = "sk-qwen-key-from-the-environment-0002";

/// The id of the workspace named `name`.
fn workspace_id(ctx: &Ctx, name: &str) -> String {
    ctx.list()
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no workspace {name}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The version `chat list -l` shows for the newest conversation of `kind`, checked against
/// `chat list --json`.
fn shown_version(m: &Machine, ctx: &Ctx, kind: &str) -> String {
    let listed = m.run(ctx, &["chat", "list", "--json"], "").ok().json();
    let newest = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["agent"] == kind)
        .max_by_key(|c| c["created_at"].as_str().unwrap_or("").to_owned())
        .unwrap_or_else(|| panic!("no {kind} conversation in {listed:#}"))
        .clone();
    let version = newest["agent_version"].as_str().unwrap_or("-").to_owned();
    let long = m.run(ctx, &["chat", "list", "-l"], "").ok();
    let id = newest["id"].as_str().unwrap();
    let row = long
        .stdout
        .lines()
        .find(|l| l.starts_with(id))
        .unwrap_or_else(|| panic!("no row for {id} in\n{}", long.stdout));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(long.stdout.contains("VERSION"), "{}", long.stdout);
    assert_eq!(cells[2], kind, "{row}");
    assert_eq!(cells[3], version, "{row}");
    version
}

#[test]
fn gemini_and_qwen_are_installed_by_the_images_npm_as_the_agent_into_its_home_on_the_volume() {
    let image = node_image();
    let registry = NpmRegistry::start(&[&GEMINI_CLI, &QWEN_CODE]);
    let ctx = common::chat::ctx_with_agents(&format!(
        "  gemini:\n    installer_url: {0}\n  qwen:\n    installer_url: {0}\n",
        registry.url()
    ));
    let mut m = Machine::new();
    m.set_env("GEMINI_API_KEY", GEMINI_KEY);
    m.set_env("OPENAI_API_KEY", QWEN_KEY);
    let p = git_project(&ctx);
    m.run(
        &ctx,
        &[
            "workspace",
            "up",
            p.to_str().unwrap(),
            "--name",
            "node",
            "--image",
            &image,
        ],
        "",
    )
    .ok();
    let id = workspace_id(&ctx, "node");
    let listed = agents_list_kind(&m, &ctx, "gemini");
    assert_eq!(listed["ready"], true, "{listed}");
    assert_eq!(
        listed["install"],
        "the workspace's own, this machine's, or installed by Gemini CLI's npm package"
    );

    for (kind, pkg, what) in [
        ("gemini", &GEMINI_CLI, "Gemini CLI's npm package"),
        ("qwen", &QWEN_CODE, "Qwen Code's npm package"),
    ] {
        let out = m.run(&ctx, &["new-chat", "node", "--agent", kind], "").ok();
        // Progress: the install, then npm's own lines as they come.
        for shown in [
            format!("installing {kind} in the workspace with {what}"),
            "added 1 package".to_owned(),
        ] {
            assert!(
                out.stderr.contains(&shown),
                "{shown:?} not in\n{}",
                out.stderr
            );
        }
        assert_eq!(registry.hits_of(&pkg.tarball_path()), 1, "{kind}");
        assert!(registry.hits_of(&pkg.document_path()) >= 1, "{kind}");
        // npm ran as the agent, into the agent's home on the volume; nothing system-wide.
        let at = format!("/workspace/.home/.local/lib/node_modules/{}", pkg.name);
        assert_eq!(
            dexec(
                &id,
                &format!("stat -c '%u:%g' {at}/cli.js {at}/package.json")
            ),
            "1000:1000\n1000:1000\n",
            "{kind}"
        );
        assert_eq!(
            dexec(&id, &format!("readlink /workspace/.home/.local/bin/{kind}")).trim(),
            format!("../lib/node_modules/{}/cli.js", pkg.name)
        );
        assert_eq!(
            dexec(
                &id,
                &format!(
                    "ls /usr/local/lib/node_modules /usr/lib/node_modules | grep -c '^{}$' || true",
                    pkg.name.split('/').next().unwrap()
                )
            )
            .trim(),
            "0",
            "{kind} landed outside the agent's home"
        );
        assert_eq!(shown_version(&m, &ctx, kind), pkg.version);
    }

    // Installed once: the agent's home is on the volume, so a stopped and started
    // workspace finds it there and asks the registry nothing.
    m.run(&ctx, &["workspace", "down", "node"], "").ok();
    m.run(&ctx, &["workspace", "up", "node"], "").ok();
    let again = m
        .run(&ctx, &["new-chat", "node", "--agent", "gemini"], "")
        .ok();
    assert!(
        !again.stderr.contains("installing gemini"),
        "{}",
        again.stderr
    );
    assert_eq!(registry.hits_of(&GEMINI_CLI.tarball_path()), 1);
    assert_eq!(shown_version(&m, &ctx, "gemini"), GEMINI_CLI.version);
}

#[test]
fn an_npm_install_the_registry_refuses_shows_npms_error_and_the_remedy_and_the_workspace_carries_on()
 {
    let image = node_image();
    // A registry without the package: every request is 404.
    let empty = NpmRegistry::start(&[]);
    let agents = |url: &str| format!("  gemini:\n    installer_url: {url}\n");
    let ctx = common::chat::ctx_with_agents(&agents(&empty.url()));
    let mut m = Machine::new();
    m.set_env("GEMINI_API_KEY", GEMINI_KEY);
    let p = git_project(&ctx);
    m.run(
        &ctx,
        &[
            "workspace",
            "up",
            p.to_str().unwrap(),
            "--name",
            "refused",
            "--image",
            &image,
        ],
        "",
    )
    .ok();
    let id = workspace_id(&ctx, "refused");

    let t = std::time::Instant::now();
    let refused = m
        .run(&ctx, &["new-chat", "refused", "--agent", "gemini"], "")
        .fails();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(60), "{took:?}");
    // npm's own error, in the progress as npm printed it; then the failure with the remedy.
    let npm_error = format!(
        "npm ERR! 404 Not Found - GET {}{}",
        empty.url().trim_end_matches('/'),
        GEMINI_CLI.document_path()
    );
    assert!(
        refused.stderr.lines().any(|l| l.ends_with(&npm_error)),
        "{npm_error:?} not in\n{}",
        refused.stderr
    );
    // The one-line failure carries the cause (npm's closing lines about its log are left out).
    let last = refused.stderr.trim_end().lines().last().unwrap();
    for shown in [
        "error: workspace refused: installing gemini with Gemini CLI's npm package failed (exit 1): npm ERR!",
        "404",
        "set agents.gemini.binary",
    ] {
        assert!(last.contains(shown), "{shown:?} not in\n{}", refused.stderr);
    }
    assert!(empty.hits_of(&GEMINI_CLI.document_path()) >= 1);
    // Nothing half-installed, no conversation, and the workspace works on.
    assert_eq!(
        dexec(
            &id,
            "test -e /workspace/.home/.local/bin/gemini && echo there || echo none"
        ),
        "none\n"
    );
    let listed = m.run(&ctx, &["chat", "list", "--json"], "").ok().json();
    assert_eq!(listed, serde_json::json!([]));
    assert_eq!(
        m.run(&ctx, &["exec", "refused", "--", "echo", "still here"], "")
            .ok()
            .stdout,
        "still here\n"
    );
    assert_eq!(ctx.list()[0]["status"], "running");

    // The registry that has it: the next attempt installs it.
    let registry = NpmRegistry::start(&[&GEMINI_CLI]);
    std::fs::write(
        ctx.home.path().join("config.yaml"),
        format!(
            "default_image: {}\nagents:\n{}",
            test_image(),
            agents(&registry.url())
        ),
    )
    .unwrap();
    let mended = m
        .run(&ctx, &["new-chat", "refused", "--agent", "gemini"], "")
        .ok();
    assert!(
        mended.stderr.contains("added 1 package"),
        "{}",
        mended.stderr
    );
    assert_eq!(shown_version(&m, &ctx, "gemini"), GEMINI_CLI.version);
}

#[test]
fn goose_is_installed_by_its_vendor_installer_into_the_agents_home_without_configuring() {
    let image = node_image();
    let site = DownloadSite::start();
    let ctx = common::chat::ctx_with_agents(&format!(
        "  goose:\n    installer_url: {}\n",
        site.url(GOOSE_INSTALLER)
    ));
    let mut m = Machine::new();
    m.set_env("ANTHROPIC_API_KEY", ENV_KEY);
    let p = git_project(&ctx);
    m.run(
        &ctx,
        &[
            "workspace",
            "up",
            p.to_str().unwrap(),
            "--name",
            "geese",
            "--image",
            &image,
        ],
        "",
    )
    .ok();
    let id = workspace_id(&ctx, "geese");
    let listed = agents_list_kind(&m, &ctx, "goose");
    assert_eq!(listed["ready"], true, "{listed}");
    assert_eq!(
        listed["install"],
        "the workspace's own, this machine's, or installed by Goose's installer"
    );

    let out = m
        .run(&ctx, &["new-chat", "geese", "--agent", "goose"], "")
        .ok();
    let archive = format!("goose-{}-unknown-linux-gnu.tar.bz2", std::env::consts::ARCH);
    for shown in [
        "installing goose in the workspace with Goose's installer".to_owned(),
        format!("Downloading stable release: {archive}"),
        "Goose CLI installed to /workspace/.home/.local/bin/goose".to_owned(),
    ] {
        assert!(
            out.stderr.contains(&shown),
            "{shown:?} not in\n{}",
            out.stderr
        );
    }
    assert_eq!(site.hits_of(GOOSE_INSTALLER), 1);
    assert_eq!(
        site.hits_of(&format!("/goose/releases/download/stable/{archive}")),
        1
    );
    // As the agent, where the installer was told (GOOSE_BIN_DIR); not configured (a real
    // `goose configure` would wait for answers); the downloaded installer cleaned away.
    assert_eq!(
        dexec(&id, "stat -c '%u:%g %a' /workspace/.home/.local/bin/goose"),
        "1000:1000 755\n"
    );
    assert_eq!(
        dexec(
            &id,
            "cat /workspace/.home/.goose-stand-in-calls 2>/dev/null; ls -A /workspace/.home | grep -c claude-vm-install || true"
        ),
        "0\n"
    );
    assert_eq!(shown_version(&m, &ctx, "goose"), GOOSE_VERSION);
}
