//! `claude-vm server`'s API: authentication on every route, tokens, login links, sessions,
//! CSRF and rate limiting; then workspaces, files, commands and a conversation with the
//! real Claude Code CLI, all through `/api/v1`, against real Docker.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use claude_vm_testkit::{Script, ScriptedModel};
use common::chat::ctx_with_claude;
use common::http::{Client, Server, Sse, free_port};
use common::{Ctx, MANIFEST, dexec, git, local_manifest, sample_project};

fn openapi() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every (method, path) of the OpenAPI document, with its path parameters filled in.
fn documented_routes() -> Vec<(String, String)> {
    let doc = openapi();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                let concrete = path
                    .replace("{workspace}", "no-such-ws")
                    .replace("{conversation}", "nosuchconv")
                    .replace("{approval}", "nosuchapproval");
                out.push((method.to_uppercase(), concrete));
            }
        }
    }
    out
}

fn create_token(ctx: &Ctx, name: &str) -> String {
    let out = ctx.run(&["token", "create", name, "--json"]).ok();
    out.json()["token"].as_str().unwrap().to_owned()
}

/// Log in through a one-time link; returns the session cookie and the page's CSRF token.
fn browser_login(ctx: &Ctx, server: &Server) -> (String, String) {
    let web = ctx.run(&["web", "--json", "--no-open"]).ok().json();
    assert_eq!(web["started"], false, "{web}");
    let login_url = web["login_url"].as_str().unwrap();
    let path = login_url.strip_prefix(&server.url()).unwrap();
    let r = server.client().get(path);
    assert_eq!(r.status, 303, "{}", r.text());
    let set_cookie = r.header("set-cookie").unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
        assert!(set_cookie.contains(attr), "{attr} missing: {set_cookie}");
    }
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    // The link works once.
    assert_eq!(server.client().get(path).status, 401);
    let page = server.client().with("Cookie", &cookie).get("/");
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    let html = page.text();
    let csrf = html
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no csrf meta in {html}"))
        .to_owned();
    (cookie, csrf)
}

#[test]
fn every_api_route_needs_credentials_and_is_documented() {
    let ctx = Ctx::new();
    let server = Server::start(&ctx);
    let routes = documented_routes();
    assert!(routes.len() >= 24, "{routes:?}");
    let anon = server.client();
    for (method, path) in &routes {
        let r = anon.request(method, path, &[("Content-Type", "application/json")], b"{}");
        assert_eq!(
            r.status,
            401,
            "{method} {path} without credentials: {}",
            r.text()
        );
        assert!(r.json()["error"].is_string(), "{method} {path}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    // A stale cookie is no credential either.
    let stale = server.client().with("Cookie", "cvm_session=forged");
    for (method, path) in routes.iter().take(5) {
        assert_eq!(stale.request(method, path, &[], b"").status, 401, "{path}");
    }
    // With a token, every documented route exists (answers with its own error, not the
    // router's "no such route").
    let token = create_token(&ctx, "routes");
    let api = server.client().bearer(&token);
    for (method, path) in &routes {
        let r = api.request(method, path, &[("Content-Type", "application/json")], b"{}");
        assert!(
            ![401, 403, 405].contains(&r.status),
            "{method} {path}: {} {}",
            r.status,
            r.text()
        );
        if r.status == 404 {
            let e = r.json()["error"].as_str().unwrap().to_owned();
            assert!(
                e.contains("no workspace matches") || e.contains("no conversation matches"),
                "{method} {path}: {e}"
            );
        }
    }
    // The served document is the checked-in one.
    assert_eq!(api.get("/api/openapi.json").expect(200), openapi());
    // Unknown API routes are a JSON 404.
    let r = api.get("/api/v1/nope");
    assert_eq!(r.status, 404);
    assert!(r.json()["hint"].as_str().unwrap().contains("openapi"));
}

#[test]
fn tokens_login_links_sessions_csrf_and_rate_limits() {
    let ctx = Ctx::new();
    let server = Server::start(&ctx);
    // Tokens: created once, listed without the secret, stored hashed, revocable.
    let token = create_token(&ctx, "laptop");
    assert!(token.starts_with("cvm_"), "{token}");
    let list = ctx.run(&["token", "list", "--json"]).ok();
    assert!(list.stdout.contains("laptop") && !list.stdout.contains(&token));
    let db = std::fs::read(ctx.home.path().join("state.db")).unwrap();
    let wal = std::fs::read(ctx.home.path().join("state.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "the token is stored in clear"
        );
    }
    let api = server.client().bearer(&token);
    let me = api.get("/api/v1/whoami").expect(200);
    assert_eq!(me["kind"], "token");
    assert_eq!(me["token_name"], "laptop");
    ctx.run(&["token", "revoke", "laptop"]).ok();
    assert_eq!(api.get("/api/v1/whoami").status, 401);
    ctx.run(&["token", "revoke", "laptop"]).fails();

    // Browser: one-time link → HttpOnly, Secure session cookie.
    let (cookie, csrf) = browser_login(&ctx, &server);
    let browser = server.client().with("Cookie", &cookie);
    assert_eq!(browser.get("/api/v1/whoami").expect(200)["kind"], "session");
    // State changes with the cookie need the CSRF token, and a same-origin Origin.
    let r = browser.post("/api/v1/workspaces/no-such-ws/down", &serde_json::json!({}));
    assert_eq!(r.status, 403, "{}", r.text());
    let with_csrf = browser.clone().with("X-CSRF-Token", &csrf);
    let r = with_csrf
        .clone()
        .with("Origin", "https://evil.example")
        .post("/api/v1/workspaces/no-such-ws/down", &serde_json::json!({}));
    assert_eq!(r.status, 403);
    let r = with_csrf.post("/api/v1/workspaces/no-such-ws/down", &serde_json::json!({}));
    assert_eq!(r.status, 404, "{}", r.text());
    // Pages without a session redirect to the login page.
    let r = server.client().get("/w/anything");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login?next=/w/anything"));
    // Logging out ends the session (the form carries the CSRF token; a wrong one is refused
    // and the session lives on).
    let r = browser.request(
        "POST",
        "/logout",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"csrf=forged",
    );
    assert_eq!(r.status, 403);
    assert_eq!(browser.get("/api/v1/whoami").status, 200);
    let r = browser.request(
        "POST",
        "/logout",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("csrf={csrf}").as_bytes(),
    );
    assert_eq!(r.status, 303);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(browser.get("/api/v1/whoami").status, 401);

    // Secrets never reach the server's log.
    let log = std::fs::read_to_string(ctx.home.path().join("server-test.log")).unwrap();
    assert!(!log.contains(&token), "{log}");

    // Repeated failed logins from one address are refused for a while, whatever they try:
    // two failures so far (the reused link, the revoked token), so eight more are allowed.
    let good = create_token(&ctx, "good");
    let mut statuses = Vec::new();
    for i in 0..10 {
        statuses.push(server.client().get(&format!("/login?code=guess{i}")).status);
    }
    assert_eq!(&statuses[..8], &[401; 8], "{statuses:?}");
    assert_eq!(&statuses[8..], &[429, 429], "{statuses:?}");
    let r = server.client().bearer("cvm_wrong").get("/api/v1/whoami");
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    // The owner is not locked out (valid_credentials_are_never_refused_by_the_limiter).
    assert_eq!(
        server.client().bearer(&good).get("/api/v1/whoami").status,
        200
    );
}

#[test]
fn web_starts_a_server_when_none_runs() {
    let ctx = Ctx::new();
    let port = common::http::free_port();
    let out = ctx
        .run(&[
            "web",
            "--json",
            "--no-open",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .ok();
    let web = out.json();
    let pid = web["pid"].as_u64().unwrap() as i32;
    let _kill = KillOnDrop(pid);
    assert_eq!(web["started"], true);
    assert_eq!(web["url"], format!("http://127.0.0.1:{port}"));
    let login = web["login_url"].as_str().unwrap();
    let path = login.strip_prefix(web["url"].as_str().unwrap()).unwrap();
    let client = Client {
        port,
        headers: Vec::new(),
    };
    assert_eq!(client.get(path).status, 303);
    // A second `web` reuses it with a fresh link; a second `server` refuses to start.
    let again = ctx.run(&["web", "--json", "--no-open"]).ok().json();
    assert_eq!(again["started"], false);
    assert_eq!(again["pid"], web["pid"]);
    assert_ne!(again["login_url"], web["login_url"]);
    let dup = ctx.run(&["server", "--listen", "127.0.0.1:0"]).fails();
    assert!(dup.stderr.contains("already runs"), "{}", dup.stderr);
    // Bad input is one clear error.
    let bad = ctx.run(&["server", "--listen", "not an address"]).fails();
    assert!(bad.stderr.contains("invalid --listen"), "{}", bad.stderr);
}

struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}

/// NDJSON lines of an exec answer.
fn exec_lines(api: &Client, ws: &str, body: serde_json::Value) -> Vec<serde_json::Value> {
    let r = api.post(&format!("/api/v1/workspaces/{ws}/exec"), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    r.text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn transcript(api: &Client, conv: &str) -> Vec<serde_json::Value> {
    api.get(&format!("/api/v1/conversations/{conv}/transcript"))
        .expect(200)
        .as_array()
        .unwrap()
        .clone()
}

fn wait_transcript(
    api: &Client,
    conv: &str,
    what: &str,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let t = transcript(api, conv);
        if pred(&t) {
            return t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}: {t:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn turn_ends(t: &[serde_json::Value]) -> usize {
    t.iter().filter(|e| e["type"] == "turn_end").count()
}

#[test]
fn workspaces_files_commands_and_a_conversation_through_the_api() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "create the greeting"},
               "response": [{"text": "Creating it."},
                            {"tool_use": {"name": "Write", "input": {"file_path": "/workspace/proj/greeting.txt", "content": "hello from the api\n"}}}]},
              {"match": {"after_tool_result_contains": "greeting.txt"}, "response": [{"text": "Created **greeting.txt**."}]},
              {"match": {"last_user_contains": "take your time"},
               "response": [{"tool_use": {"name": "Bash", "input": {"command": "sleep 4; echo slept", "description": "wait"}}}]},
              {"match": {"after_tool_result_contains": "slept"}, "response": [{"text": "Done waiting."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let ctx = ctx_with_claude(&model.url(), "sk-test-api");
    let mut server = Server::start(&ctx);
    let token = create_token(&ctx, "api");
    let api = server.client().bearer(&token);

    // Up from an uploaded folder (a tar stream).
    let proj = common::chat::git_project(&ctx);
    std::fs::create_dir_all(proj.join("src")).unwrap();
    std::fs::write(proj.join("src/main.rs"), "fn main() {}\n").unwrap();
    let tar = Command::new("tar")
        .args(["-cf", "-", "-C"])
        .arg(&proj)
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success());
    let r = api.request(
        "POST",
        "/api/v1/workspaces?project=proj&name=api-ws",
        &[("Content-Type", "application/x-tar")],
        &tar.stdout,
    );
    let up = r.expect(201);
    assert_eq!(up["action"], "created");
    assert_eq!(up["workspace"]["status"], "running");
    assert_eq!(up["workspace"]["project_dir"], "/workspace/proj");
    assert_eq!(
        up["workspace"]["source"],
        serde_json::json!({"kind": "path", "location": "(uploaded)/proj"})
    );
    // Bad create requests: a folder path, unknown fields, a hostile project name.
    let r = api.post("/api/v1/workspaces", &serde_json::json!({"target": "/etc"}));
    assert_eq!(r.status, 400);
    assert!(r.json()["hint"].as_str().unwrap().contains("tar"));
    assert_eq!(
        api.post(
            "/api/v1/workspaces",
            &serde_json::json!({"target": "x", "bogus": 1})
        )
        .status,
        400
    );
    let r = api.request(
        "POST",
        "/api/v1/workspaces?project=..",
        &[("Content-Type", "application/x-tar")],
        &tar.stdout,
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // List with live status, and one workspace.
    let list = api.get("/api/v1/workspaces").expect(200);
    let ws = list["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "api-ws")
        .unwrap()
        .clone();
    assert_eq!(ws["status"], "running");
    let id = ws["id"].as_str().unwrap().to_owned();
    assert_eq!(
        api.get(&format!("/api/v1/workspaces/{}", &id[..6]))
            .expect(200)["name"],
        "api-ws"
    );

    // Files: a listing, a file's bytes, no way out of the workspace.
    let listing = api.get("/api/v1/workspaces/api-ws/files").expect(200);
    let names: Vec<&str> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"README.md") && names.contains(&"src") && names.contains(&".git"),
        "{names:?}"
    );
    let r = api.get("/api/v1/workspaces/api-ws/files/content?path=src/main.rs");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "fn main() {}\n");
    for bad in [
        "../../etc/passwd",
        "/etc/passwd",
        "%2E%2E/%2E%2E/etc/shadow",
    ] {
        let r = api.get(&format!(
            "/api/v1/workspaces/api-ws/files/content?path={bad}"
        ));
        assert!(
            (400..500).contains(&r.status),
            "{bad}: {} {}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains("root:"), "{bad}");
    }

    // Commands: separate streams, stdin, the exit code; bytes through base64.
    let lines = exec_lines(
        &api,
        "api-ws",
        serde_json::json!({"shell": "echo out; echo err >&2; cat; exit 3", "stdin": "piped\n"}),
    );
    let text = |kind: &str| -> String {
        lines
            .iter()
            .filter(|l| l["type"] == kind)
            .map(|l| l["data"].as_str().unwrap())
            .collect()
    };
    assert_eq!(text("stdout"), "out\npiped\n");
    assert_eq!(text("stderr"), "err\n");
    assert_eq!(
        lines.last().unwrap(),
        &serde_json::json!({"type": "exit", "code": 3})
    );
    let r = api.post(
        "/api/v1/workspaces/api-ws/exec?encoding=base64",
        &serde_json::json!({"command": ["printf", "\\377\\000ok"]}),
    );
    assert!(r.text().contains("\"/wBvaw==\""), "{}", r.text());
    assert_eq!(
        api.post("/api/v1/workspaces/api-ws/exec", &serde_json::json!({}))
            .status,
        400
    );
    // Commands count as activity in the live list.
    let list = api.get("/api/v1/workspaces").expect(200);
    assert!(list["workspaces"][0]["last_activity"].is_string(), "{list}");

    // Malformed and oversized requests are clear errors, and the server stays up.
    let r = api.request(
        "POST",
        "/api/v1/workspaces/api-ws/exec",
        &[("Content-Type", "application/json")],
        b"{not json",
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("invalid request body")
    );
    let big = format!("{{\"shell\": \"{}\"}}", "x".repeat(5 * 1024 * 1024));
    let r = api.request(
        "POST",
        "/api/v1/workspaces/api-ws/exec",
        &[("Content-Type", "application/json")],
        big.as_bytes(),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(api.get("/api/v1/whoami").status, 200);

    // A conversation with the real Claude Code CLI.
    let agents = api.get("/api/v1/agents").expect(200);
    assert!(
        agents["agents"]
            .as_array()
            .unwrap()
            .contains(&"claude".into())
    );
    let conv = api
        .post(
            "/api/v1/workspaces/api-ws/conversations",
            &serde_json::json!({"agent": "claude", "message": "please create the greeting"}),
        )
        .expect(201);
    let conv_id = conv["id"].as_str().unwrap().to_owned();
    assert_eq!(conv["workspace"], "api-ws");
    // The live stream delivers the turn as it happens, with ids = seq.
    let (status, headers, reader) = server.client().bearer(&token).open(
        "GET",
        &format!("/api/v1/conversations/{conv_id}/events"),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream"))
    );
    let mut sse = Sse::new(reader);
    let mut seen = Vec::new();
    loop {
        let (id, data) = sse.next_event().expect("stream ended early");
        let e: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(id.as_deref(), Some(e["seq"].to_string().as_str()));
        seen.push(e.clone());
        if e["type"] == "turn_end" {
            break;
        }
    }
    assert_eq!(seen.last().unwrap()["result"], "Created **greeting.txt**.");
    drop(sse);
    // Resume after a dropped connection: from Last-Event-ID, nothing lost or repeated.
    let mid = seen[seen.len() / 2]["seq"].as_u64().unwrap();
    let (_, _, reader) = server.client().bearer(&token).open(
        "GET",
        &format!("/api/v1/conversations/{conv_id}/events"),
        &[("Last-Event-ID", &mid.to_string())],
        b"",
    );
    let mut sse = Sse::new(reader);
    let mut resumed = Vec::new();
    while resumed.len()
        < seen
            .iter()
            .filter(|e| e["seq"].as_u64().unwrap() > mid)
            .count()
    {
        let (_, data) = sse.next_event().unwrap();
        resumed.push(serde_json::from_str::<serde_json::Value>(&data).unwrap());
    }
    let expected: Vec<_> = seen
        .iter()
        .filter(|e| e["seq"].as_u64().unwrap() > mid)
        .cloned()
        .collect();
    assert_eq!(resumed, expected);
    drop(sse);

    // The change shows in the diff (untracked file).
    let diff = api.get("/api/v1/workspaces/api-ws/diff").expect(200);
    let files = diff["files"].as_array().unwrap();
    assert!(
        files
            .iter()
            .any(|f| f["path"] == "greeting.txt" && f["change"] == "untracked"),
        "{diff}"
    );
    assert!(
        diff["patch"]
            .as_str()
            .unwrap()
            .contains("+hello from the api")
    );
    let stat = api
        .get("/api/v1/workspaces/api-ws/diff?stat=true")
        .expect(200);
    assert_eq!(stat["patch"], "");

    // A slow turn; the server is killed in the middle of it and started again: the agent
    // goes on, and the transcript has the whole turn.
    let sent = api
        .post(
            &format!("/api/v1/conversations/{conv_id}/messages"),
            &serde_json::json!({"text": "take your time"}),
        )
        .expect(202);
    assert!(sent["seq"].as_u64().unwrap() > 0);
    wait_transcript(&api, &conv_id, "the slow tool to start", |t| {
        t.iter()
            .any(|e| e["type"] == "tool_call" && e["name"] == "Bash")
    });
    let port = server.port;
    server.kill();
    let server = Server::start_on(&ctx, port);
    let api = server.client().bearer(&token);
    let t = wait_transcript(&api, &conv_id, "the second turn to end", |t| {
        turn_ends(t) == 2
    });
    let last_turn = t.iter().rev().find(|e| e["type"] == "turn_end").unwrap();
    assert_eq!(last_turn["result"], "Done waiting.");
    let seqs: Vec<u64> = t.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let after = api
        .get(&format!(
            "/api/v1/conversations/{conv_id}/transcript?after={}",
            seqs[seqs.len() - 2]
        ))
        .expect(200);
    assert_eq!(after.as_array().unwrap().len(), 1);
    assert_eq!(after[0]["seq"], seqs[seqs.len() - 1]);

    // Conversation views, interrupt with nothing running, approvals that do not exist.
    let detail = api
        .get(&format!("/api/v1/conversations/{}", &conv_id[..8]))
        .expect(200);
    assert_eq!(detail["status"], "idle");
    assert_eq!(detail["workspace"], "api-ws");
    let all = api.get("/api/v1/conversations").expect(200);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == conv_id.as_str())
    );
    let mine = api
        .get("/api/v1/workspaces/api-ws/conversations")
        .expect(200);
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let r = api.post(
        &format!("/api/v1/conversations/{conv_id}/interrupt"),
        &serde_json::json!({}),
    );
    assert!(r.expect(200)["interrupted"].is_boolean());
    let r = api.post(
        &format!("/api/v1/conversations/{conv_id}/approvals/nope"),
        &serde_json::json!({"allow": true}),
    );
    assert!((400..500).contains(&r.status), "{}", r.text());
    assert_eq!(
        api.post(
            &format!("/api/v1/conversations/{conv_id}/messages"),
            &serde_json::json!({"text": " "})
        )
        .status,
        400
    );
    api.post(
        &format!("/api/v1/conversations/{conv_id}/stop"),
        &serde_json::json!({}),
    )
    .expect(200);
    wait_transcript(&api, &conv_id, "the stop", |t| {
        t.last()
            .is_some_and(|e| e["type"] == "status" && e["status"] == "stopped")
    });

    // Down, up (resume), delete.
    let down = api
        .post(
            "/api/v1/workspaces/api-ws/down",
            &serde_json::json!({"timeout": 5}),
        )
        .expect(200);
    assert_eq!(down["status"], "stopped");
    // Using a stopped workspace starts it first.
    let r = api.get("/api/v1/workspaces/api-ws/diff");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("greeting.txt"), "{}", r.text());
    let up = api
        .post("/api/v1/workspaces/api-ws/up", &serde_json::json!({}))
        .expect(200);
    assert_eq!(up["action"], "already_running");
    let r = api.get("/api/v1/workspaces/api-ws/files/content?path=greeting.txt");
    assert_eq!(r.text(), "hello from the api\n");
    let deleted = api.delete("/api/v1/workspaces/api-ws").expect(200);
    assert_eq!(deleted["name"], "api-ws");
    assert_eq!(api.get("/api/v1/workspaces/api-ws").status, 404);
    assert!(ctx.docker_debris().is_empty(), "{:?}", ctx.docker_debris());
}

/// A running workspace made by the local CLI from a small project; returns its id.
fn fixture_workspace(ctx: &Ctx, name: &str) -> String {
    let proj = ctx.path(name);
    sample_project(&proj);
    let ws = ctx.up(&[proj.to_str().unwrap(), "--name", name]);
    ws["id"].as_str().unwrap().to_owned()
}

/// The server reads nothing from its own disk for a client: no `file://` URL, no path,
/// and a workspace given by id prefix is resolved once (never taken for a folder of the
/// server's working directory). Missing and existing paths get the same answer.
#[test]
fn server_refuses_local_paths_as_targets() {
    let ctx = Ctx::new();
    let id = fixture_workspace(&ctx, "fixture");
    // Beside the server: a folder named like the workspace's id prefix, and a repository.
    let cwd = ctx.path("server-cwd");
    let prefix = &id[..1];
    std::fs::create_dir_all(cwd.join(prefix)).unwrap();
    std::fs::write(
        cwd.join(prefix).join("planted.txt"),
        "from the server's disk\n",
    )
    .unwrap();
    let repo = cwd.join("server-repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("server-secret.txt"), "secret\n").unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "x"]);
    let server = Server::start_with(&ctx, free_port(), &[], Some(&cwd));
    let token = create_token(&ctx, "paths");
    let api = server.client().bearer(&token);
    let debris = ctx.docker_debris();
    let targets = [
        format!("file://{}", repo.display()),
        "file:///etc".to_owned(),
        "file:///no/such/dir".to_owned(),
        "FILE:///etc".to_owned(),
        repo.display().to_string(),
        "/etc".to_owned(),
        "/no/such/dir".to_owned(),
        ".".to_owned(),
        "./server-repo".to_owned(),
        "server-repo".to_owned(),
        "no-such-folder".to_owned(),
        "~".to_owned(),
        format!("{prefix}/planted.txt"),
    ];
    let mut answers = Vec::new();
    for target in &targets {
        let r = api.post("/api/v1/workspaces", &serde_json::json!({"target": target}));
        assert_eq!(r.status, 400, "{target}: {}", r.text());
        let e = r.json();
        let quoted = serde_json::to_string(target).unwrap();
        answers.push((
            e["error"].as_str().unwrap().replace(&quoted, "TARGET"),
            e["hint"].clone(),
        ));
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "answers differ: {answers:#?}"
    );
    assert!(
        answers[0].0.contains("neither a remote git URL"),
        "{answers:?}"
    );
    // The prefix is the workspace (already running), not the planted folder.
    let r = api.post("/api/v1/workspaces", &serde_json::json!({"target": prefix}));
    let out = r.expect(200);
    assert_eq!(out["action"], "already_running", "{out}");
    assert_eq!(out["workspace"]["id"], id.as_str());
    let out = api
        .post(
            "/api/v1/workspaces",
            &serde_json::json!({"target": "fixture"}),
        )
        .expect(200);
    assert_eq!(out["workspace"]["id"], id.as_str());
    // Nothing was created: one workspace, the same containers and volumes.
    let list = api.get("/api/v1/workspaces").expect(200);
    assert_eq!(list["workspaces"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(ctx.docker_debris(), debris);
    let planted = dexec(&id, "ls /workspace");
    assert!(!planted.contains("planted") && !planted.contains("server-repo"));
}

/// After logging in, only a plain local path is followed; everything else goes to `/`,
/// and no `next` makes the server fail.
#[test]
fn login_redirects_only_to_local_paths() {
    let ctx = Ctx::new();
    let server = Server::start(&ctx);
    let (cookie, _) = browser_login(&ctx, &server);
    let browser = server.client().with("Cookie", &cookie);
    let cases = [
        ("/w/x", "/w/x"),
        ("%2Fw%2Fx%3Fa%3D1", "/w/x?a=1"),
        ("/%09/evil.example", "/"),
        ("%2F%09%2Fevil.example", "/"),
        ("//evil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("/%5C/evil.example", "/"),
        ("https://evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/%0a/evil.example", "/"),
        ("/%0d%0aSet-Cookie:%20x=1", "/"),
        ("/%0b/evil.example", "/"),
        ("/%7f/evil.example", "/"),
        ("/%00", "/"),
        ("/%E2%80%A8/evil.example", "/"),
        ("%20/evil.example", "/"),
    ];
    for (next, expected) in cases {
        let r = browser.get(&format!("/login?next={next}"));
        assert_eq!(r.status, 303, "next={next}: {}", r.text());
        assert_eq!(r.header("location"), Some(expected), "next={next}");
        // Without a session the form is shown (and carries `next`), never a 500.
        let r = server.client().get(&format!("/login?next={next}"));
        assert_eq!(r.status, 200, "next={next}: {}", r.text());
    }
    // The same on the way in: a login link and the token form.
    let web = ctx.run(&["web", "--json", "--no-open"]).ok().json();
    let path = web["login_url"]
        .as_str()
        .unwrap()
        .strip_prefix(&server.url())
        .unwrap()
        .to_owned();
    let r = server
        .client()
        .get(&format!("{path}&next=/%09/evil.example"));
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(r.header("location"), Some("/"));
    let token = create_token(&ctx, "form");
    for (next, expected) in [("%2F%09%2Fevil.example", "/"), ("%2Fw%2Fy", "/w/y")] {
        let r = server.client().request(
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!("token={token}&next={next}").as_bytes(),
        );
        assert_eq!(r.status, 303, "{}", r.text());
        assert_eq!(r.header("location"), Some(expected));
    }
}

/// Wrong credentials from one address end in 429, but the right ones always pass: the
/// owner behind the same proxy (or a guesser's address) is not locked out. Web pages count
/// wrong bearer tokens like the API.
#[test]
fn valid_credentials_are_never_refused_by_the_limiter() {
    let ctx = Ctx::new();
    let mut server = Server::start(&ctx);
    let good = create_token(&ctx, "owner");
    // One failure: browser_login tries its link twice.
    let (cookie, csrf) = browser_login(&ctx, &server);
    let bad = server.client().bearer("cvm_wrong");
    let statuses: Vec<u16> = (0..11).map(|_| bad.get("/api/v1/whoami").status).collect();
    assert_eq!(&statuses[..9], &[401; 9], "{statuses:?}");
    assert_eq!(&statuses[9..], &[429; 2], "{statuses:?}");
    // Every kind of valid credentials still works, on the API and the pages.
    let owner = server.client().bearer(&good);
    for _ in 0..3 {
        owner.get("/api/v1/whoami").expect(200);
    }
    assert_eq!(owner.get("/").status, 200);
    let browser = server.client().with("Cookie", &cookie);
    assert_eq!(browser.get("/api/v1/whoami").expect(200)["kind"], "session");
    assert_eq!(browser.get("/").status, 200);
    let r = browser
        .clone()
        .with("X-CSRF-Token", &csrf)
        .post("/api/v1/workspaces/no-such-ws/down", &serde_json::json!({}));
    assert_eq!(r.status, 404, "{}", r.text());
    let r = server.client().request(
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("token={good}").as_bytes(),
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let web = ctx.run(&["web", "--json", "--no-open"]).ok().json();
    let path = web["login_url"]
        .as_str()
        .unwrap()
        .strip_prefix(&server.url())
        .unwrap()
        .to_owned();
    assert_eq!(server.client().get(&path).status, 303);
    // Failures keep getting 429, whatever they try.
    let r = server.client().get("/login?code=guess");
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    let r = server.client().request(
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"token=cvm_guess",
    );
    assert_eq!(r.status, 429);
    assert_eq!(bad.get("/").status, 429);
    // No credentials at all is no failed attempt: the login redirect as usual.
    assert_eq!(server.client().get("/").status, 303);

    // A fresh count (the counts live in the server): wrong bearer tokens on pages count.
    server.kill();
    server.spawn();
    let statuses: Vec<u16> = (0..11)
        .map(|_| server.client().bearer("cvm_wrong").get("/w/x").status)
        .collect();
    assert_eq!(&statuses[..10], &[303; 10], "{statuses:?}");
    assert_eq!(statuses[10], 429, "{statuses:?}");
    assert_eq!(bad.get("/api/v1/whoami").status, 429);
    owner.get("/api/v1/whoami").expect(200);
}

/// Read one HTTP answer's bytes until the server closes the connection; `None` if it is
/// still open at `deadline`.
fn read_until_closed(s: &mut TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(_) => return Some(out),
        }
    }
}

/// Connections that send a byte and stall are closed after the header timeout (10 s), so
/// are kept-alive connections left idle, and while hundreds of them are open the server
/// answers everyone else at once.
#[test]
fn slow_clients_are_cut_off_and_do_not_starve_others() {
    let ctx = Ctx::new();
    let server = Server::start(&ctx);
    let token = create_token(&ctx, "slow");
    let api = server.client().bearer(&token);
    let start = Instant::now();
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
            s.write_all(b"G").unwrap();
            s
        })
        .collect();
    let mut idle = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    idle.write_all(
        format!(
            "GET /assets/app.css HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            server.port
        )
        .as_bytes(),
    )
    .unwrap();
    for _ in 0..10 {
        let t = Instant::now();
        api.get("/api/v1/whoami").expect(200);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a request took {:?} while slow clients were connected",
            t.elapsed()
        );
    }
    let deadline = start + Duration::from_secs(16);
    for (i, s) in slow.iter_mut().enumerate() {
        assert!(
            read_until_closed(s, deadline).is_some(),
            "slow connection {i} still open after {:?}",
            start.elapsed()
        );
    }
    let answer = read_until_closed(&mut idle, deadline).expect("the idle connection stays open");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    // They were closed by the timeout, not at once.
    assert!(
        start.elapsed() >= Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    api.get("/api/v1/whoami").expect(200);
}

/// `Host` must name this server (DNS rebinding), `Origin` must be this server's origin
/// (scheme, host and port), and `--public-url` adds the name a reverse proxy uses.
#[test]
fn hosts_and_origins_are_checked() {
    let ctx = Ctx::new();
    let server = Server::start_with(
        &ctx,
        free_port(),
        &["--public-url", "https://cvm.example.com"],
        None,
    );
    let port = server.port;
    let token = create_token(&ctx, "hosts");
    let api = server.client().bearer(&token);
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "cvm.example.com".to_owned(),
    ] {
        let r = api.request("GET", "/api/v1/whoami", &[("Host", &host)], b"");
        assert_eq!(r.status, 200, "{host}: {}", r.text());
    }
    for host in [
        format!("evil.example:{port}"),
        "cvm.example.com.evil.example".to_owned(),
        format!("10.1.2.3:{port}"),
    ] {
        for path in ["/api/v1/whoami", "/login", "/"] {
            let r = api.request("GET", path, &[("Host", &host)], b"");
            assert_eq!(r.status, 421, "{host} {path}: {}", r.text());
            assert!(r.json()["hint"].as_str().unwrap().contains("--public-url"));
        }
    }
    let (cookie, csrf) = browser_login(&ctx, &server);
    let browser = server
        .client()
        .with("Cookie", &cookie)
        .with("X-CSRF-Token", &csrf);
    let down = |origin: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![("Origin", origin), ("Content-Type", "application/json")];
        headers.extend_from_slice(extra);
        browser
            .request(
                "POST",
                "/api/v1/workspaces/no-such-ws/down",
                &headers,
                b"{}",
            )
            .status
    };
    let own = format!("http://127.0.0.1:{port}");
    assert_eq!(down(&own, &[]), 404);
    for foreign in [
        format!("evil://127.0.0.1:{port}"),
        format!("https://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{}", port + 1),
        "http://127.0.0.1".to_owned(),
        "null".to_owned(),
        "https://evil.example".to_owned(),
    ] {
        assert_eq!(down(&foreign, &[]), 403, "{foreign}");
    }
    // Through the proxy: its public origin.
    let proxied = [("Host", "cvm.example.com"), ("X-Forwarded-Proto", "https")];
    assert_eq!(down("https://cvm.example.com", &proxied), 404);
    assert_eq!(down("http://cvm.example.com", &proxied), 403);
    assert_eq!(
        down("https://cvm.example.com", &[("Host", "127.0.0.1:1")]),
        404
    );
    // Without --public-url that name is refused.
    drop(server);
    let plain = Server::start(&ctx);
    let r = plain.client().bearer(&token).request(
        "GET",
        "/api/v1/whoami",
        &[("Host", "cvm.example.com")],
        b"",
    );
    assert_eq!(r.status, 421);
    let bad = ctx.run(&[
        "server",
        "--public-url",
        "ftp://x",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("invalid public URL"), "{}", bad.stderr);
}

/// A folder upload whose client hangs up as soon as the body is sent still becomes the
/// workspace, with every file: the scratch copy belongs to the task that runs `up`.
#[test]
fn an_upload_survives_the_client_hanging_up() {
    let ctx = Ctx::new();
    let server = Server::start(&ctx);
    let token = create_token(&ctx, "upload");
    let api = server.client().bearer(&token);
    let proj = ctx.path("hangup-proj");
    sample_project(&proj);
    let tar = Command::new("tar")
        .args(["-cf", "-", "-C"])
        .arg(&proj)
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success());
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let head = format!(
        "POST /api/v1/workspaces?project=hangup-proj&name=hangup HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        server.port,
        tar.stdout.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&tar.stdout).unwrap();
    s.flush().unwrap();
    s.shutdown(std::net::Shutdown::Both).unwrap();
    drop(s);
    let start = Instant::now();
    let ws = loop {
        let r = api.get("/api/v1/workspaces/hangup");
        if r.status == 200 && r.json()["status"] == "running" {
            break r.json();
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the workspace never came up: {} {}",
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let id = ws["id"].as_str().unwrap();
    let inside = dexec(id, &format!("cd /workspace/hangup-proj && {MANIFEST}"));
    assert_eq!(inside, local_manifest(&proj));
    // The scratch copy is gone once `up` is done.
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("claude-vm-upload-")
                && e.path().join("hangup-proj").exists()
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Statuses the server gives are the document's: bodies too large (413), of the wrong
/// type (415), values the schema allows are accepted, configuration problems are 422 with
/// a hint, and every error under /api is the JSON error object.
#[test]
fn status_codes_and_the_document_agree() {
    let ctx = Ctx::new();
    fixture_workspace(&ctx, "codes");
    let server = Server::start(&ctx);
    let token = create_token(&ctx, "codes");
    let api = server.client().bearer(&token);
    let doc = openapi();
    let documented = |method: &str, path: &str, status: u16| {
        let ops = &doc["paths"][path][method.to_lowercase()]["responses"];
        assert!(
            ops.get(status.to_string()).is_some(),
            "{method} {path} answers {status}, which the document does not list"
        );
    };
    let check = |method: &str,
                 template: &str,
                 path: &str,
                 headers: &[(&str, &str)],
                 body: &[u8],
                 status: u16| {
        let r = api.request(method, path, headers, body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        if status >= 400 {
            assert!(
                r.json()["error"].is_string(),
                "{method} {path}: {}",
                r.text()
            );
        }
        documented(method, template, status);
        r
    };
    let json = [("Content-Type", "application/json")];
    // Over the limits (1 MiB for a JSON create, 4 MiB for other JSON bodies), small enough
    // to be sent whole before the answer.
    let over = |mib: usize| format!("{{\"target\": \"{}\"}}", "x".repeat(mib * 1024 * 1024 + 10));
    check(
        "POST",
        "/api/v1/workspaces",
        "/api/v1/workspaces",
        &json,
        over(1).as_bytes(),
        413,
    );
    let ws_exec = "/api/v1/workspaces/{workspace}/exec";
    check(
        "POST",
        ws_exec,
        "/api/v1/workspaces/codes/exec",
        &json,
        over(4).as_bytes(),
        413,
    );
    check(
        "POST",
        "/api/v1/workspaces",
        "/api/v1/workspaces",
        &[("Content-Type", "text/plain")],
        b"{}",
        415,
    );
    check(
        "POST",
        ws_exec,
        "/api/v1/workspaces/codes/exec",
        &[],
        br#"{"shell":"true"}"#,
        415,
    );
    check(
        "POST",
        ws_exec,
        "/api/v1/workspaces/codes/exec",
        &json,
        br#"{"command": 5}"#,
        400,
    );
    // Values the schema allows are accepted.
    check(
        "POST",
        "/api/v1/workspaces/{workspace}/down",
        "/api/v1/workspaces/no-such-ws/down",
        &json,
        br#"{"timeout": 1561.0}"#,
        404,
    );
    check(
        "POST",
        "/api/v1/workspaces/{workspace}/down",
        "/api/v1/workspaces/no-such-ws/down",
        &json,
        br#"{"timeout": 1.5}"#,
        400,
    );
    let tr = "/api/v1/conversations/{conversation}/transcript";
    check(
        "GET",
        tr,
        "/api/v1/conversations/nosuch/transcript?after=5",
        &[],
        b"",
        404,
    );
    check(
        "GET",
        tr,
        "/api/v1/conversations/nosuch/transcript?after=-633",
        &[],
        b"",
        400,
    );
    let send = "/api/v1/conversations/{conversation}/messages";
    check(
        "POST",
        send,
        "/api/v1/conversations/nosuch/messages",
        &json,
        br#"{"text": ""}"#,
        400,
    );
    assert_eq!(
        doc["components"]["schemas"]["Send"]["properties"]["text"]["minLength"],
        1
    );
    let content = "/api/v1/workspaces/{workspace}/files/content";
    check(
        "GET",
        content,
        "/api/v1/workspaces/codes/files/content?path=",
        &[],
        b"",
        400,
    );
    check(
        "GET",
        content,
        "/api/v1/workspaces/codes/files/content?path=.",
        &[],
        b"",
        400,
    );
    check(
        "GET",
        content,
        "/api/v1/workspaces/codes/files/content?path=README.md",
        &[],
        b"",
        200,
    );
    check(
        "GET",
        "/api/v1/workspaces/{workspace}/files",
        "/api/v1/workspaces/codes/files?path=",
        &[],
        b"",
        200,
    );
    // Axum's own refusals are JSON too.
    let r = api.get("/api/v1/workspaces/codes/exec");
    assert_eq!(r.status, 405);
    assert!(r.json()["error"].is_string());
    let r = api.get("/api/v1/workspaces/%FF/diff");
    assert!(
        (400..500).contains(&r.status) && r.json()["error"].is_string(),
        "{}",
        r.text()
    );
    // Configuration problems: a 4xx saying what to fix.
    let convs = "/api/v1/workspaces/{workspace}/conversations";
    let r = check(
        "POST",
        convs,
        "/api/v1/workspaces/codes/conversations",
        &json,
        br#"{"agent": "codex"}"#,
        422,
    );
    assert!(r.json()["hint"].is_string(), "{}", r.text());
    let r = check(
        "POST",
        "/api/v1/workspaces",
        "/api/v1/workspaces",
        &json,
        br#"{"target": "https://127.0.0.1:9/nothing.git", "name": "clone-fails"}"#,
        422,
    );
    assert!(r.json()["hint"].is_string(), "{}", r.text());
    let r = check(
        "POST",
        "/api/v1/workspaces",
        "/api/v1/workspaces",
        &json,
        br#"{"target": "https://127.0.0.1:9/nothing.git", "image": "claude-vm-no-such-image:nope"}"#,
        422,
    );
    assert!(r.json()["hint"].is_string(), "{}", r.text());
    // Failed creations leave nothing behind but the fixture.
    let list = api.get("/api/v1/workspaces").expect(200);
    assert_eq!(list["workspaces"].as_array().unwrap().len(), 1, "{list}");
}
