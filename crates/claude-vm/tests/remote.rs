//! Remote mode: a CLI logged in to a real `claude-vm server` (its own home), driving real
//! Docker workspaces and the real Claude Code CLI against the scripted model server.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use claude_vm_testkit::{Script, ScriptedModel};
use common::chat::{Tmux, ctx_with_claude, wait_for};
use common::http::{Server, free_port};
use common::{Ctx, MANIFEST, Run, dexec, local_manifest, sample_project};

/// A token created on the server's home.
fn token(server_side: &Ctx) -> String {
    let t = server_side
        .run(&["token", "create", "remote-test", "--json"])
        .ok()
        .json();
    t["token"].as_str().unwrap().to_owned()
}

fn run_with_stdin(ctx: &Ctx, args: &[&str], input: &[u8]) -> Run {
    let mut child = ctx
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A `chat log --follow --json` running in the background; its lines arrive on a channel.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
}

impl Follower {
    fn start(ctx: &Ctx, conv: &str) -> Follower {
        let mut child = ctx
            .command(&["chat", "log", "-c", conv, "--follow", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        Follower {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn wait_for(&mut self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
        let start = Instant::now();
        while !self.seen.iter().any(&pred) {
            let left = Duration::from_secs(120).saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(v) => self.seen.push(v),
                Err(_) => panic!("the follower never showed {what}: {:#?}", self.seen),
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_logged_in_cli_runs_workspaces_and_conversations_on_the_server() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "say hello"}, "response": [{"text": "Hello from the server side."}]},
              {"match": {"last_user_contains": "write the note"},
               "response": [{"tool_use": {"name": "Write", "input": {"file_path": "/workspace/shop/note.txt", "content": "written remotely\n"}}}]},
              {"match": {"after_tool_result_contains": "note.txt"}, "response": [{"text": "Wrote note.txt."}]},
              {"match": {"last_user_contains": "run the slow job"},
               "response": [{"tool_use": {"name": "Bash", "input": {"command": "sleep 8 && echo slow-done", "description": "slow job"}}}]},
              {"match": {"after_tool_result_contains": "slow-done"}, "response": [{"text": "The slow job finished."}]},
              {"match": {"last_user_contains": "greet the terminal"}, "response": [{"text": "Hi, remote terminal."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    // The server's home: the agent, and workspaces on the host network to reach the model.
    let server_side = ctx_with_claude(&model.url(), "sk-test");
    let client = Ctx::new();
    let mut server = Server::start(&server_side);
    let url = server.url();
    let token = token(&server_side);
    let remote_json = client.home.path().join("remote.json");

    // A wrong token is refused and nothing is saved.
    let bad = client
        .run(&["login", &url, "--token", "cvm_not-a-real-token"])
        .fails();
    assert!(
        bad.stderr.contains("refused the token") && bad.stderr.contains("hint:"),
        "{}",
        bad.stderr
    );
    assert!(!remote_json.exists());

    // The token read from stdin (no terminal), checked, saved owner-only, never printed.
    let login = run_with_stdin(&client, &["login", &url], format!("{token}\n").as_bytes()).ok();
    assert!(login.stderr.contains(&url), "{}", login.stderr);
    assert!(!login.stdout.contains(&token) && !login.stderr.contains(&token));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&remote_json)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let status = client.run(&["login", "--status"]).ok();
    assert_eq!(status.stdout.trim(), url);
    let help = client.run(&["--help"]).ok();
    assert!(help.stdout.contains(&format!("Logged in to {url}")));

    // A local folder is uploaded: the same files as a local `up` (tracked, untracked,
    // subfolders, .git, modes; not what .gitignore excludes).
    let proj = client.path("shop");
    sample_project(&proj);
    let up = client
        .run(&[
            "workspace",
            "up",
            proj.to_str().unwrap(),
            "--name",
            "far",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(up["action"], "created");
    let id = up["workspace"]["id"].as_str().unwrap().to_owned();
    assert_eq!(up["workspace"]["project_dir"], "/workspace/shop");
    let inside = dexec(&id, &format!("cd /workspace/shop && {MANIFEST}"));
    assert_eq!(inside, local_manifest(&proj));
    assert!(inside.contains("src/nested/deep.txt f"), "{inside}");
    assert!(inside.contains(".git/HEAD"), "{inside}");
    assert!(!inside.contains("debug.log"), "{inside}");

    // list --json: the same document as on the server's own CLI.
    let listed = client.run(&["workspace", "list", "--json"]).ok().json();
    let there = server_side
        .run(&["workspace", "list", "--json"])
        .ok()
        .json();
    assert_eq!(listed, there);
    assert_eq!(listed[0]["status"], "running");
    let table = client.run(&["workspace", "list", "-l"]).ok();
    assert!(table.stdout.contains("far"), "{}", table.stdout);
    let running = client
        .run(&["workspace", "list", "--status", "stopped", "--json"])
        .ok()
        .json();
    assert_eq!(running, serde_json::json!([]));

    // exec: stdin in, stdout and stderr apart, the exit code back.
    let ex = run_with_stdin(
        &client,
        &[
            "exec",
            "far",
            "--",
            "sh",
            "-c",
            "tr a-z A-Z; echo to-stderr >&2; exit 3",
        ],
        b"piped in\n",
    );
    assert_eq!(ex.code, 3, "{ex:?}");
    assert_eq!(ex.stdout, "PIPED IN\n");
    assert!(ex.stderr.contains("to-stderr") && !ex.stdout.contains("to-stderr"));
    assert_eq!(
        client.run(&["exec", "far", "--", "nonexistent-cmd"]).code,
        127
    );

    // A conversation with the real Claude Code, through the server.
    let conv = client
        .run(&["new-chat", "far", "-m", "please say hello"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert_eq!(conv.len(), 12, "{conv}");
    wait_for(&client, &conv, "the greeting", |e| e["type"] == "turn_end");
    let answer = client
        .run(&["chat", "send", "-c", &conv, "now write the note", "--wait"])
        .ok();
    assert_eq!(answer.stdout.trim(), "Wrote note.txt.");
    let log = client.run(&["chat", "log", "-c", &conv, "--json"]).ok();
    let events = json_lines(&log.stdout);
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "assistant" && e["text"] == "Hello from the server side."),
        "{events:#?}"
    );
    let there = server_side
        .run(&["chat", "log", "-c", &conv, "--json"])
        .ok();
    assert_eq!(log.stdout, there.stdout, "chat log --json differs");
    let text = client.run(&["chat", "log", "-c", &conv]).ok();
    assert!(text.stdout.contains("⚙ Write(/workspace/shop/note.txt)"));
    let chats = client.run(&["chat", "list", "--json"]).ok().json();
    assert_eq!(
        chats,
        server_side.run(&["chat", "list", "--json"]).ok().json()
    );
    assert_eq!(chats[0]["status"], "idle");

    // The agent's change shows in diff.
    let stat = client.run(&["diff", "far", "--stat"]).ok();
    assert!(
        stat.stdout.contains("note.txt") && stat.stdout.contains("untracked"),
        "{}",
        stat.stdout
    );
    let diff = client.run(&["diff", "far", "--json"]).ok().json();
    assert_eq!(diff["project_dir"], "/workspace/shop");
    assert!(
        diff["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "note.txt")
    );
    assert!(diff["patch"].as_str().unwrap().contains("written remotely"));

    // The server dies mid-turn and comes back: the agent keeps working, the follower
    // reconnects and misses nothing, and the finished turn is in the log.
    let mut follower = Follower::start(&client, &conv);
    client
        .run(&["chat", "send", "-c", &conv, "run the slow job"])
        .ok();
    follower.wait_for("the slow tool call", |e| {
        e["type"] == "tool_call" && e["name"] == "Bash"
    });
    server.kill();
    std::thread::sleep(Duration::from_secs(1));
    let down = client.run(&["chat", "list"]).fails();
    assert!(
        down.stderr.contains("cannot reach the server") && down.stderr.contains("hint:"),
        "{}",
        down.stderr
    );
    server.spawn();
    follower.wait_for("the slow job's answer", |e| {
        e["type"] == "assistant" && e["text"] == "The slow job finished."
    });
    let answer_seq = follower.seen.last().unwrap()["seq"].as_u64().unwrap();
    follower.wait_for("the end of the slow turn", |e| {
        e["type"] == "turn_end" && e["seq"].as_u64().unwrap() > answer_seq
    });
    let seqs: Vec<u64> = follower
        .seen
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.iter().enumerate().all(|(i, s)| *s == i as u64 + 1),
        "events repeated or missing: {seqs:?}"
    );
    let after = json_lines(
        &client
            .run(&["chat", "log", "-c", &conv, "--json"])
            .ok()
            .stdout,
    );
    let finished = after
        .iter()
        .position(|e| e["type"] == "assistant" && e["text"] == "The slow job finished.")
        .expect("the finished turn is in the log");
    assert!(
        after[finished..].iter().any(|e| e["type"] == "turn_end"),
        "{after:#?}"
    );
    drop(follower);

    // The interactive chat: picker, history, a typed message and its answer, commands.
    let cmd = format!(
        "CLAUDE_VM_HOME={} NO_COLOR=1 {} chat -w far; sleep 30",
        client.home.path().display(),
        client.bin.display()
    );
    let term = Tmux::start("remote-chat", 150, 40, &cmd);
    let within = Duration::from_secs(60);
    term.wait_for("The slow job finished.", within);
    term.send("please greet the terminal");
    term.wait_for("Hi, remote terminal.", within);
    term.send("/status");
    term.wait_for("Idle", within);
    term.send("/quit");
    term.wait_for("the agent keeps working", within);
    drop(term);

    // down, up (resume), delete.
    let down = client.run(&["workspace", "down", "far"]).ok();
    assert!(down.stderr.contains("far stopped"), "{}", down.stderr);
    let again = client.run(&["workspace", "down", "far"]).ok();
    assert!(again.stderr.contains("already stopped"), "{}", again.stderr);
    assert_eq!(client.list()[0]["status"], "stopped");
    let resumed = client
        .run(&["workspace", "up", "far", "--json"])
        .ok()
        .json();
    assert_eq!(resumed["action"], "resumed");
    assert_eq!(
        client
            .run(&["exec", "far", "--", "cat", "note.txt"])
            .ok()
            .stdout,
        "written remotely\n"
    );
    let refused = client.run(&["workspace", "delete", "far"]).fails();
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    let deleted = client
        .run(&["workspace", "delete", "far", "-y", "--json"])
        .ok()
        .json();
    assert_eq!(deleted["workspace"]["id"], id.as_str());
    assert_eq!(client.list(), Vec::<serde_json::Value>::new());
    assert!(server_side.docker_debris().is_empty());

    // Idle stops are the server's workspaces' own: given at `up`, set and reset.
    let nap = client.path("nap");
    std::fs::create_dir_all(&nap).unwrap();
    client
        .run(&[
            "workspace",
            "up",
            nap.to_str().unwrap(),
            "--name",
            "nap",
            "--idle-stop",
            "3s",
        ])
        .ok();
    let t = std::time::Instant::now();
    loop {
        let list = server_side
            .run(&["workspace", "list", "--json"])
            .ok()
            .json();
        let w = list
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "nap")
            .cloned()
            .unwrap();
        if w["status"] == "stopped" {
            assert!(w["idle_since"].is_string(), "{w}");
            break;
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(60), "{w}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let set = client
        .run(&["workspace", "set", "nap", "--idle-stop", "45m", "--json"])
        .ok()
        .json();
    assert_eq!(
        (&set["idle_stop"], &set["from_config"], &set["applied"]),
        (
            &serde_json::json!("45m"),
            &serde_json::json!(false),
            &serde_json::json!(false)
        ),
        "{set}"
    );
    let set = client
        .run(&[
            "workspace",
            "set",
            "nap",
            "--idle-stop",
            "default",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(set["from_config"], true, "{set}");
    let bad = client
        .run(&["workspace", "set", "nowhere", "--idle-stop", "off"])
        .fails();
    assert!(bad.stderr.contains("nowhere"), "{}", bad.stderr);

    // Commands that only work locally say so in one line.
    for args in [
        vec!["cp", "far:x", "."],
        vec!["provider", "list"],
        vec!["exec", "-t", "far", "--", "sh"],
    ] {
        let out = client.run(&args).fails();
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}", out.stderr);
        assert!(
            lines[0].starts_with("error:")
                && lines[0].contains(&format!("logged in to {url}"))
                && lines[0].contains("claude-vm logout"),
            "{}",
            out.stderr
        );
    }

    // logout: local mode again (this home has no workspaces), idempotent.
    let out = client.run(&["logout"]).ok();
    assert!(out.stderr.contains("logged out"), "{}", out.stderr);
    assert!(!remote_json.exists());
    client.run(&["logout"]).ok();
    let local = client.run(&["workspace", "list", "--json"]).ok().json();
    assert_eq!(local, serde_json::json!([]));
    client.run(&["provider", "list"]).ok();
}

#[test]
fn login_refuses_what_is_not_a_reachable_claude_vm_server() {
    let client = Ctx::new();
    let remote_json = client.home.path().join("remote.json");
    // Nobody listens.
    let port = free_port();
    let out = client
        .run(&["login", &format!("http://127.0.0.1:{port}"), "--token", "t"])
        .fails();
    assert!(
        out.stderr.contains("cannot reach the server") && out.stderr.contains("hint:"),
        "{}",
        out.stderr
    );
    // Some other web server.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in other.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\nConnection: close\r\n\r\n<html></html>",
            );
        }
    });
    let out = client
        .run(&[
            "login",
            &format!("http://127.0.0.1:{other_port}"),
            "--token",
            "t",
        ])
        .fails();
    assert!(
        out.stderr.contains("is it a claude-vm server"),
        "{}",
        out.stderr
    );
    // https needs a tunnel.
    let out = client
        .run(&["login", "https://example.com", "--token", "t"])
        .fails();
    assert!(out.stderr.contains("tunnel"), "{}", out.stderr);
    // No token at all.
    let out = client
        .command(&["login", "http://127.0.0.1:1"])
        .env_remove("CLAUDE_VM_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token given"));
    assert!(!remote_json.exists());
    let status = client.run(&["login", "--status"]).ok();
    assert!(status.stdout.is_empty() && status.stderr.contains("not logged in"));
}

#[test]
fn a_logged_in_cli_backs_up_lists_forgets_and_restores_on_the_server() {
    let server_side = Ctx::new();
    let client = Ctx::new();
    // Continuous backups out of the way: every snapshot here is one the test asked for.
    let mut server = Server::start_env(&server_side, &[("CLAUDE_VM_BACKUP_CHECK_SECS", "3600")]);
    let url = server.url();
    let token = token(&server_side);
    client.run(&["login", &url, "--token", &token]).ok();

    let proj = client.path("kept");
    sample_project(&proj);
    client
        .run(&["workspace", "up", proj.to_str().unwrap(), "--name", "kept"])
        .ok();
    let first = client
        .run(&["workspace", "backup", "kept", "--json"])
        .ok()
        .json();
    let first_id = first["snapshot"]["id"].as_str().unwrap().to_owned();
    assert_eq!(first["workspace"], "kept");
    assert!(
        first["snapshot"]["files_new"].as_u64().unwrap() > 0,
        "{first}"
    );
    client
        .run(&["exec", "kept", "--", "sh", "-c", "echo second > later.txt"])
        .ok();
    let second = client.run(&["workspace", "backup", "kept"]).ok();
    let second_id = second.stdout.trim().to_owned();
    assert_eq!(second_id.len(), 64, "{}", second.stdout);

    // The server's repository, listed from here.
    let list = client
        .run(&["backup", "list", "kept", "--json"])
        .ok()
        .json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first_id.as_str(), second_id.as_str()]);
    let table = client.run(&["backup", "list"]).ok();
    assert!(table.stdout.contains(&second_id[..8]), "{}", table.stdout);

    // The repository and its password stay on the server's machine.
    let env = client.run(&["backup", "env"]).fails();
    assert!(
        env.stderr.contains(&url) && env.stderr.contains("on that machine"),
        "{}",
        env.stderr
    );

    let forgot = client
        .run(&["backup", "forget", "kept", "--keep-last", "1", "--json"])
        .ok()
        .json();
    assert_eq!(forgot, serde_json::json!([first_id]));

    // Deleted on the server (its final backup is taken there), restored from here.
    client.run(&["workspace", "delete", "kept", "-y"]).ok();
    assert_eq!(client.list(), Vec::<serde_json::Value>::new());
    let restored = client
        .run(&["workspace", "restore", "kept", "--name", "back", "--json"])
        .ok()
        .json();
    assert_eq!(restored["workspace"]["name"], "back", "{restored}");
    assert_eq!(
        client
            .run(&["exec", "back", "--", "cat", "later.txt"])
            .ok()
            .stdout,
        "second\n"
    );
    let unknown = client
        .run(&["workspace", "restore", "kept", "--snapshot", "deadbeef"])
        .fails();
    assert!(
        unknown.stderr.contains("no snapshot deadbeef"),
        "{}",
        unknown.stderr
    );

    // Carried out as an archive and back in, both through the server.
    client.run(&["workspace", "backup", "back"]).ok();
    let archive = client.path("back.tar");
    let exported = client
        .run(&[
            "workspace",
            "export",
            "back",
            "-o",
            archive.to_str().unwrap(),
            "--json",
        ])
        .ok()
        .json();
    let size = std::fs::metadata(&archive).unwrap().len();
    assert_eq!(exported["bytes"], size, "{exported}");
    assert_eq!(exported["workspace_name"], "back", "{exported}");
    assert!(exported["entries"].as_u64().unwrap() > 3, "{exported}");
    let leftovers: Vec<_> = std::fs::read_dir(client.path(""))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let imported = client
        .run(&[
            "workspace",
            "import",
            archive.to_str().unwrap(),
            "--name",
            "again",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(imported["workspace"]["name"], "again", "{imported}");
    let again_id = imported["workspace"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        client
            .run(&["exec", "again", "--", "cat", "later.txt"])
            .ok()
            .stdout,
        "second\n"
    );
    // Not an export: refused on this side, before anything is sent.
    let junk = client.path("junk.tar");
    std::fs::write(&junk, b"not an archive").unwrap();
    let bad = client
        .run(&["workspace", "import", junk.to_str().unwrap()])
        .fails();
    assert!(
        bad.stderr.contains("not a claude-vm export"),
        "{}",
        bad.stderr
    );
    let unknown = client
        .run(&[
            "workspace",
            "export",
            "nosuch",
            "-o",
            junk.to_str().unwrap(),
        ])
        .fails();
    assert!(unknown.stderr.contains("nosuch"), "{}", unknown.stderr);
    assert_eq!(std::fs::read(&junk).unwrap(), b"not an archive");

    // --purge on the server: the workspace and every snapshot of it go.
    client.run(&["workspace", "backup", "again"]).ok();
    let purged = client
        .run(&["workspace", "delete", "again", "--purge", "-y", "--json"])
        .ok()
        .json();
    assert!(purged["purged"].as_u64().unwrap() >= 1, "{purged}");
    let of = |id: &str| -> usize {
        client
            .run(&["backup", "list", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["workspace_id"] == id)
            .count()
    };
    assert_eq!(of(&again_id), 0);

    // Deleted earlier with its backups kept, then purged by its old name.
    let back_id = restored["workspace"]["id"].as_str().unwrap().to_owned();
    client.run(&["workspace", "delete", "back", "-y"]).ok();
    assert!(of(&back_id) > 0);
    let refused = client
        .run(&["workspace", "delete", "back", "--purge"])
        .fails();
    assert!(refused.stderr.contains("-y"), "{}", refused.stderr);
    let gone = client
        .run(&["workspace", "delete", "back", "--purge", "-y", "--json"])
        .ok()
        .json();
    assert_eq!(gone["workspace_id"], back_id.as_str(), "{gone}");
    assert_eq!(of(&back_id), 0);
    server.kill();
}
