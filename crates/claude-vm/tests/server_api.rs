//! `claude-vm server`'s API: authentication on every route, tokens, login links, sessions,
//! CSRF and rate limiting; then workspaces, files, commands and a conversation with the
//! real Claude Code CLI, all through `/api/v1`, against real Docker.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use claude_vm_testkit::{Script, ScriptedModel};
use common::Ctx;
use common::chat::ctx_with_claude;
use common::http::{Client, Server, Sse};

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
    let r = api.get("/api/v1/workspaces/api-ws/diff");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.json()["hint"].as_str().unwrap().contains("workspace up"));
    let up = api
        .post("/api/v1/workspaces/api-ws/up", &serde_json::json!({}))
        .expect(200);
    assert_eq!(up["action"], "resumed");
    let r = api.get("/api/v1/workspaces/api-ws/files/content?path=greeting.txt");
    assert_eq!(r.text(), "hello from the api\n");
    let deleted = api.delete("/api/v1/workspaces/api-ws").expect(200);
    assert_eq!(deleted["name"], "api-ws");
    assert_eq!(api.get("/api/v1/workspaces/api-ws").status, 404);
    assert!(ctx.docker_debris().is_empty(), "{:?}", ctx.docker_debris());
}
