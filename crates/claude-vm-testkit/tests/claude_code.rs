//! Checks against the REAL Claude Code CLI, offline, pointed at the scripted
//! model server.
//!
//! Claude Code is the one bundled with the Python package `claude-agent-sdk`
//! (`pip install claude-agent-sdk`), found through `python3`; set
//! `CLAUDE_VM_TESTKIT_CLAUDE=/path/to/claude` to use another binary. These
//! tests FAIL when neither is available: they never skip.
//!
//! Claude Code refuses `--dangerously-skip-permissions` as root, so when the
//! tests run as root they create a user (`cvmtest`), copy the binary where
//! that user can read it (site-packages may sit under a private `/root`),
//! and run Claude Code as that user through `setpriv`. Every test gets its
//! own HOME and project directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use claude_vm_testkit::{RecordedRequest, Rule, Script, ScriptedModel};
use serde_json::{Value, json};

const TEST_USER: &str = "cvmtest";
const TURN_TIMEOUT: Duration = Duration::from_secs(120);

struct Claude {
    bin: PathBuf,
    /// `Some((user, uid, gid))` when Claude Code must run as another user.
    run_as: Option<(String, u32, u32)>,
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn locate_bundled_claude() -> PathBuf {
    if let Some(p) = std::env::var_os("CLAUDE_VM_TESTKIT_CLAUDE") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "CLAUDE_VM_TESTKIT_CLAUDE={} is not a file",
            p.display()
        );
        return p;
    }
    let dir = output(Command::new("python3").args([
        "-c",
        "import claude_agent_sdk,os;print(os.path.dirname(claude_agent_sdk.__file__))",
    ]))
    .unwrap_or_else(|e| {
        panic!(
            "\n\nThe real-Claude-Code tests need the Claude Code CLI bundled with the Python \
             package claude-agent-sdk, and it is not installed.\n\
             Install it with:   pip install claude-agent-sdk\n\
             (or point CLAUDE_VM_TESTKIT_CLAUDE at a claude binary).\n\
             python3 said: {e}\n"
        )
    });
    let bin = Path::new(&dir).join("_bundled").join("claude");
    assert!(
        bin.is_file(),
        "claude-agent-sdk is installed at {dir} but has no bundled CLI at {}; \
         reinstall it with `pip install --force-reinstall claude-agent-sdk`",
        bin.display()
    );
    bin
}

/// Copies the binary to a world-readable place (once per binary version).
fn world_readable_copy(bin: &Path) -> PathBuf {
    let meta = std::fs::metadata(bin).unwrap();
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join("claude-vm-testkit");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dest = dir.join(format!("claude-{}-{mtime}", meta.len()));
    if std::fs::metadata(&dest).map(|m| m.len()).ok() != Some(meta.len()) {
        let tmp = dir.join(format!(".claude-{}.tmp", std::process::id()));
        std::fs::copy(bin, &tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &dest).unwrap();
    }
    dest
}

fn claude() -> &'static Claude {
    static CLAUDE: OnceLock<Claude> = OnceLock::new();
    CLAUDE.get_or_init(|| {
        let bin = locate_bundled_claude();
        let uid = output(Command::new("id").arg("-u")).unwrap();
        if uid != "0" {
            return Claude { bin, run_as: None };
        }
        if output(Command::new("id").args(["-u", TEST_USER])).is_err() {
            // Another test process may create it at the same time.
            let made = output(Command::new("useradd").args(["-m", "-s", "/bin/bash", TEST_USER]));
            if let Err(e) = made {
                assert!(
                    output(Command::new("id").args(["-u", TEST_USER])).is_ok(),
                    "cannot create the non-root user {TEST_USER} to run Claude Code: {e}"
                );
            }
        }
        let uid: u32 = output(Command::new("id").args(["-u", TEST_USER]))
            .unwrap()
            .parse()
            .unwrap();
        let gid: u32 = output(Command::new("id").args(["-g", TEST_USER]))
            .unwrap()
            .parse()
            .unwrap();
        output(Command::new("setpriv").arg("--version")).unwrap_or_else(|e| {
            panic!("setpriv (util-linux) is needed to run Claude Code as {TEST_USER}: {e}")
        });
        Claude {
            bin: world_readable_copy(&bin),
            run_as: Some((TEST_USER.to_string(), uid, gid)),
        }
    })
}

/// A HOME and a project directory, owned by the user Claude Code runs as.
struct Sandbox {
    home: tempfile::TempDir,
    project: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let s = Sandbox {
            home: tempfile::Builder::new()
                .prefix("cvm-home-")
                .tempdir()
                .unwrap(),
            project: tempfile::Builder::new()
                .prefix("cvm-project-")
                .tempdir()
                .unwrap(),
        };
        if let Some((_, uid, gid)) = &claude().run_as {
            for d in [s.home.path(), s.project.path()] {
                std::os::unix::fs::chown(d, Some(*uid), Some(*gid)).unwrap();
            }
        }
        s
    }

    fn command(&self, server: &ScriptedModel, args: &[&str]) -> Command {
        let c = claude();
        let mut cmd = match &c.run_as {
            Some((user, _, _)) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={user}"))
                    .arg(format!("--regid={user}"))
                    .arg("--init-groups")
                    .arg("--")
                    .arg(&c.bin);
                cmd
            }
            None => Command::new(&c.bin),
        };
        cmd.args(args)
            .current_dir(self.project.path())
            .env_clear()
            .env("HOME", self.home.path())
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("ANTHROPIC_BASE_URL", server.url())
            .env("ANTHROPIC_API_KEY", "test")
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
        if let Some((user, _, _)) = &c.run_as {
            cmd.env("USER", user);
        }
        cmd
    }

    fn spawn(&self, server: &ScriptedModel, args: &[&str], interactive_stdin: bool) -> Session {
        let mut cmd = self.command(server, args);
        cmd.stdin(if interactive_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let (tx, rx) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = err_pipe.read_to_string(&mut buf);
            sink.lock().unwrap().push_str(&buf);
        });
        Session {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            stderr,
            transcript: Vec::new(),
        }
    }
}

/// A running Claude Code process speaking stream-json on stdout.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    transcript: Vec<Value>,
}

impl Session {
    fn send_user(&mut self, text: &str) {
        let line = json!({"type": "user", "message": {"role": "user", "content": text}});
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn diagnostics(&self) -> String {
        let lines: Vec<String> = self
            .transcript
            .iter()
            .map(|v| {
                let s = v.to_string();
                if s.chars().count() > 600 {
                    format!("{}...", s.chars().take(600).collect::<String>())
                } else {
                    s
                }
            })
            .collect();
        format!(
            "stdout so far:\n{}\nstderr:\n{}",
            lines.join("\n"),
            self.stderr.lock().unwrap()
        )
    }

    /// Reads stream-json lines until the next `result` line.
    fn until_result(&mut self) -> Value {
        let deadline = Instant::now() + TURN_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("non-JSON line from Claude Code ({e}): {line}"));
                    self.transcript.push(v.clone());
                    if v["type"] == "result" {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no result line within {TURN_TIMEOUT:?}\n{}",
                        self.diagnostics()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    std::thread::sleep(Duration::from_millis(100));
                    panic!(
                        "Claude Code exited ({status}) before a result line\n{}",
                        self.diagnostics()
                    )
                }
            }
        }
    }

    /// Closes stdin and waits for a clean exit.
    fn finish(mut self) {
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "Claude Code exited with {status}\n{}",
                    self.diagnostics()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Claude Code did not exit after stdin closed\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The `assistant` lines seen so far.
    fn assistant_blocks(&self) -> Vec<Value> {
        self.transcript
            .iter()
            .filter(|v| v["type"] == "assistant")
            .flat_map(|v| {
                v["message"]["content"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn assert_success(result: &Value, text: &str, session: &Session) {
    assert_eq!(
        result["is_error"],
        false,
        "{result}\n{}",
        session.diagnostics()
    );
    assert_eq!(result["subtype"], "success", "{result}");
    assert_eq!(
        result["result"],
        text,
        "{result}\n{}",
        session.diagnostics()
    );
    assert!(
        result["session_id"].as_str().is_some_and(|s| !s.is_empty()),
        "{result}"
    );
}

fn describe(reqs: &[RecordedRequest]) -> String {
    reqs.iter()
        .map(|r| {
            format!(
                "#{} {} {} model={:?} -> {} rule={:?}",
                r.seq,
                r.method,
                r.path,
                r.model(),
                r.answered,
                r.rule_name
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every request must have been a Messages call that a rule answered.
fn assert_all_scripted(server: &ScriptedModel) {
    let reqs = server.requests();
    assert!(
        reqs.iter()
            .all(|r| r.is_messages() && r.matched_rule.is_some()),
        "unexpected requests:\n{}",
        describe(&reqs)
    );
}

#[test]
fn print_mode_returns_scripted_text() {
    let server = ScriptedModel::start(
        Script::new().rule(
            Rule::last_user_contains("say hi")
                .named("hi")
                .text("Hi from the scripted model!"),
        ),
    )
    .unwrap();
    let sandbox = Sandbox::new();
    let mut s = sandbox.spawn(
        &server,
        &[
            "-p",
            "say hi",
            "--output-format",
            "stream-json",
            "--verbose",
        ],
        false,
    );
    let result = s.until_result();
    assert_success(&result, "Hi from the scripted model!", &s);
    s.finish();

    assert_all_scripted(&server);
    let reqs = server.message_requests();
    assert_eq!(reqs.len(), 1, "{}", describe(&reqs));
    let r = &reqs[0];
    assert_eq!(r.path, "/v1/messages?beta=true");
    assert!(r.is_stream() && r.is_agent());
    assert_eq!(r.header("x-api-key"), Some("<redacted>"));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert!(
        r.header("user-agent")
            .is_some_and(|u| u.starts_with("claude-cli/")),
        "{:?}",
        r.headers
    );
    assert_eq!(
        r.header("x-claude-code-session-id"),
        result["session_id"].as_str()
    );
    assert!(
        r.model().is_some_and(|m| m.starts_with("claude-")),
        "{:?}",
        r.model()
    );
}

#[test]
fn write_tool_call_writes_the_file() {
    let sandbox = Sandbox::new();
    let target = sandbox.project.path().join("hello.txt");
    let content = "hello from the scripted model\nsecond line\n";
    let server = ScriptedModel::start(
        Script::new()
            .rule(
                Rule::last_user_contains("make the file")
                    .named("write")
                    .times(1)
                    .text("Writing the file.")
                    .tool_use(
                        "Write",
                        json!({"file_path": target.to_str().unwrap(), "content": content}),
                    ),
            )
            .rule(
                Rule::after_tool_result_contains("hello.txt")
                    .named("done")
                    .text("The file is written."),
            ),
    )
    .unwrap();
    let mut s = sandbox.spawn(
        &server,
        &[
            "-p",
            "please make the file",
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
        ],
        false,
    );
    let result = s.until_result();
    assert_success(&result, "The file is written.", &s);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), content);

    // The tool_use id Claude Code saw is the one its tool_result answers.
    let tool_use = s
        .assistant_blocks()
        .into_iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap_or_else(|| panic!("no tool_use in the transcript\n{}", s.diagnostics()));
    assert_eq!(tool_use["name"], "Write");
    let id = tool_use["id"].as_str().unwrap();
    assert!(id.starts_with("toolu_"));
    s.finish();

    assert_all_scripted(&server);
    let reqs = server.message_requests();
    let names: Vec<_> = reqs.iter().map(|r| r.rule_name.clone().unwrap()).collect();
    assert_eq!(names, ["write", "done"]);
    let last_user = reqs[1]
        .messages()
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .unwrap()
        .clone();
    let result_block = last_user["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_result")
        .unwrap_or_else(|| panic!("no tool_result in {last_user}"));
    assert_eq!(result_block["tool_use_id"], id);
    // The assistant turn is replayed with the tool call before it.
    let assistant = reqs[1]
        .messages()
        .iter()
        .rev()
        .find(|m| m["role"] == "assistant")
        .unwrap();
    assert!(assistant.to_string().contains(id), "{assistant}");
}

fn stream_json_args() -> Vec<&'static str> {
    vec![
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--dangerously-skip-permissions",
    ]
}

#[test]
fn stream_json_two_turns_then_resume() {
    let server = ScriptedModel::start(
        Script::new()
            .rule(
                Rule::last_user_contains("first question")
                    .named("one")
                    .text("answer one"),
            )
            .rule(
                Rule::last_user_contains("second question")
                    .named("two")
                    .text("answer two"),
            )
            .rule(
                Rule::last_user_contains("third question")
                    .named("three")
                    .text("answer three"),
            ),
    )
    .unwrap();
    let sandbox = Sandbox::new();

    let mut s = sandbox.spawn(&server, &stream_json_args(), true);
    s.send_user("first question");
    let r1 = s.until_result();
    assert_success(&r1, "answer one", &s);
    s.send_user("second question");
    let r2 = s.until_result();
    assert_success(&r2, "answer two", &s);
    let session_id = r2["session_id"].as_str().unwrap().to_string();
    assert_eq!(r1["session_id"], session_id, "one session across turns");
    s.finish();

    let mut args = stream_json_args();
    args.extend(["--resume", &session_id]);
    let mut s = sandbox.spawn(&server, &args, true);
    s.send_user("third question");
    let r3 = s.until_result();
    assert_success(&r3, "answer three", &s);
    s.finish();

    assert_all_scripted(&server);
    let reqs = server.message_requests();
    let names: Vec<_> = reqs.iter().map(|r| r.rule_name.clone().unwrap()).collect();
    assert_eq!(names, ["one", "two", "three"]);
    // The resumed process sent the earlier history.
    let history = reqs[2].conversation_text();
    for said in [
        "first question",
        "answer one",
        "second question",
        "answer two",
        "third question",
    ] {
        assert!(
            history.contains(said),
            "{said:?} missing from the resumed request:\n{history}"
        );
    }
    let roles: Vec<&str> = reqs[2]
        .messages()
        .iter()
        .filter_map(|m| m["role"].as_str())
        .filter(|r| *r != "system")
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
}

#[test]
fn message_sent_during_a_slow_tool_reaches_the_model_in_the_same_turn() {
    let server = ScriptedModel::start(
        Script::new()
            .rule(
                Rule::last_user_contains("run the slow command")
                    .named("slow")
                    .times(1)
                    .tool_use(
                        "Bash",
                        json!({"command": "sleep 3; echo slept-ok", "description": "Sleep a bit"}),
                    ),
            )
            .rule(
                Rule::contains("INTERJECTION-7731")
                    .named("interjection")
                    .text("saw the interjection"),
            )
            .rule(
                Rule::after_tool_result_contains("slept-ok")
                    .named("no-interjection")
                    .text("slow done"),
            ),
    )
    .unwrap();
    let sandbox = Sandbox::new();
    let mut s = sandbox.spawn(&server, &stream_json_args(), true);
    s.send_user("run the slow command");
    // Once the tool call has been handed out, the tool is about to run.
    server
        .wait_for(TURN_TIMEOUT, |r| {
            r.iter().any(|r| r.rule_name.as_deref() == Some("slow"))
        })
        .unwrap_or_else(|| {
            panic!(
                "Claude Code never asked for the first answer\n{}",
                s.diagnostics()
            )
        });
    std::thread::sleep(Duration::from_millis(800));
    s.send_user("INTERJECTION-7731 please also tidy up");
    let result = s.until_result();
    assert_success(&result, "saw the interjection", &s);
    s.finish();

    assert_all_scripted(&server);
    let reqs = server.message_requests();
    let names: Vec<_> = reqs.iter().map(|r| r.rule_name.clone().unwrap()).collect();
    assert_eq!(names, ["slow", "interjection"], "{}", describe(&reqs));
    // Same turn: the request carrying the interjection also carries the tool result.
    let r = &reqs[1];
    let last_user = claude_vm_testkit::request::last_user_message(&r.body).unwrap();
    assert!(
        claude_vm_testkit::request::tool_results(last_user)
            .iter()
            .any(|t| t.contains("slept-ok")),
        "{last_user}"
    );
    // Claude Code 2.1.x appends it as a system-role message after the tool result.
    let carrier = r
        .messages()
        .iter()
        .find(|m| claude_vm_testkit::request::message_text(m).contains("INTERJECTION-7731"))
        .unwrap();
    eprintln!("mid-turn message arrived as: {carrier}");
}
