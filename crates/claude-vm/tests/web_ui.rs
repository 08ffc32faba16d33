//! The web UI in a real headless Chromium at a phone's size (360×800), against a real
//! `claude-vm server`, a real Docker workspace and the real Claude Code CLI talking to the
//! test kit's scripted model. Screenshots land in `target/test-artifacts/web/`.

mod common;

use std::time::{Duration, Instant};

use claude_vm_testkit::{Script, ScriptedModel};
use common::Ctx;
use common::browser::{Browser, free_port, http};
use common::chat::{ctx_with_claude, git_project};
use common::http::Server;
use serde_json::json;

const WIDTH: u64 = 360;

/// A home whose Claude agent is the real CLI pointed at `model`.
fn ctx_with_model(model: &ScriptedModel) -> Ctx {
    ctx_with_claude(&model.url(), "sk-test-web")
}

/// Log the browser in through a fresh one-time link.
fn log_in(ctx: &Ctx, server: &Server, b: &Browser) {
    let web = ctx.run(&["web", "--json", "--no-open"]).ok().json();
    b.goto(web["login_url"].as_str().unwrap());
    assert_eq!(b.url(), server.at("/"), "login failed: {}", b.text("body"));
}

/// The sequence numbers of the events a server-sent-event body carries, in order.
fn sse_ids(body: &str) -> Vec<u64> {
    body.lines()
        .filter_map(|l| l.strip_prefix("id:"))
        .map(|v| v.trim().parse().unwrap())
        .collect()
}

#[track_caller]
fn assert_fits(b: &Browser, page: &str) {
    assert_eq!(b.viewport_width(), WIDTH, "the viewport is not phone-sized");
    let w = b.scroll_width();
    if w > WIDTH {
        b.screenshot(&format!("overflow-{page}"));
    }
    assert!(
        w <= WIDTH,
        "{page}: the page is {w} px wide at a {WIDTH} px viewport (horizontal scrolling)"
    );
}

/// The transcript's sequence numbers as the page shows them, in order.
fn page_seqs(b: &Browser) -> Vec<u64> {
    b.exec(
        "return Array.from(document.querySelectorAll('#transcript [data-seq]')).map(e => Number(e.dataset.seq));",
        json!([]),
    )
    .as_array()
    .unwrap()
    .iter()
    .map(|v| v.as_u64().unwrap())
    .collect()
}

const XSS: &str = r#"Here is markup: <script>window.__xss=1</script><img src=x onerror="window.__xss=2"> and <b>bold</b> end."#;

#[test]
fn a_phone_drives_a_workspace_and_a_conversation() {
    let model = ScriptedModel::start(
        Script::from_json(&format!(
            r#"[
              {{"match": {{"last_user_contains": "start the slow job"}},
               "response": [{{"text": "Writing the notes first."}},
                            {{"tool_use": {{"name": "Write", "input": {{"file_path": "/workspace/proj/notes.md", "content": "web-ui-change\n"}}}}}}]}},
              {{"match": {{"after_tool_result_contains": "notes.md"}},
               "response": [{{"tool_use": {{"name": "Bash", "input": {{"command": "sleep 5 && echo slow-done", "description": "slow job"}}}}}}]}},
              {{"match": {{"contains": "QUEUED-NOTE", "after_tool_result_contains": "slow-done"}},
               "response": [{{"text": "Slow job done. QUEUED-NOTE-ACK: got your note."}}]}},
              {{"match": {{"after_tool_result_contains": "slow-done"}}, "response": [{{"text": "Slow job done."}}]}},
              {{"match": {{"last_user_contains": "QUEUED-NOTE"}}, "response": [{{"text": "QUEUED-NOTE-ACK, after the job."}}]}},
              {{"match": {{"last_user_contains": "show me markup"}}, "response": [{{"text": {xss}}}]}}
            ]"#,
            xss = serde_json::to_string(XSS).unwrap()
        ))
        .unwrap(),
    )
    .unwrap();
    let ctx = ctx_with_model(&model);
    ctx.up(&[git_project(&ctx).to_str().unwrap(), "--name", "webui"]);
    let port = free_port();
    let mut server = Server::start_on(&ctx, port);
    let browser = Browser::start(WIDTH as u32, 800);
    let b = &browser;
    let long = Duration::from_secs(120);

    // --- Logging in: the one-time link works once.
    let web = ctx.run(&["web", "--json", "--no-open"]).ok().json();
    assert_eq!(web["started"], false, "{web}");
    let login = web["login_url"].as_str().unwrap().to_owned();
    assert!(login.starts_with(&server.at("/login?code=")), "{login}");
    b.goto(&server.at("/"));
    assert!(b.url().contains("/login"), "not redirected: {}", b.url());
    b.goto(&login);
    assert_eq!(b.url(), server.at("/"));
    b.wait_text("main", "webui", long);
    assert!(
        b.cookies()
            .iter()
            .any(|c| c["name"] == "cvm_session" && c["httpOnly"] == true),
        "{:?}",
        b.cookies()
    );
    let login_path = login.strip_prefix(&server.at("")).unwrap();
    let (status, _, body) = http(port, "GET", login_path, &[], None).unwrap();
    assert_eq!(status, 401, "the login link worked twice: {body}");
    assert!(body.contains("already used"), "{body}");

    // --- The workspace list.
    let card = "article.ws[data-ws=webui]";
    assert!(b.text(card).contains("running"), "{}", b.text(card));
    assert!(b.text("footer").contains("claude-vm "), "no version");
    assert!(b.exists("form.logout input[name=csrf]"));
    assert_fits(b, "workspaces");
    b.screenshot("1-workspaces");

    // --- The workspace, then a new conversation from its form.
    b.click(&format!("{card} a.name"));
    b.wait_text("h1", "webui", long);
    assert!(b.url().ends_with("/w/webui"), "{}", b.url());
    assert!(
        b.text("#changes").contains("No changes"),
        "{}",
        b.text("#changes")
    );
    assert_fits(b, "workspace");
    b.click("a[href='/w/webui/new']");
    b.wait_text("h1", "New conversation", long);
    assert!(b.text("#agent").contains("claude"));
    assert_fits(b, "new-conversation");
    b.type_into("#message", "please start the slow job");
    b.screenshot("2-new-conversation");
    b.click("#new-conv button[type=submit]");
    b.wait("the conversation page", long, |b| b.url().contains("/c/"));
    let conv = b.url().rsplit('/').next().unwrap().to_owned();
    // Marks this page load: a reload would lose it.
    b.exec("window.__marker = 42;", json!([]));

    // --- Live transcript; a message sent while the slow tool runs gets its answer.
    b.wait_text("#transcript", "sleep 5", long);
    assert!(b.text("#transcript").contains("Writing the notes first."));
    b.wait("a working status", long, |b| {
        b.text("#status").contains("working")
    });
    b.type_into("#text", "QUEUED-NOTE from the phone");
    b.click("#composer button[type=submit]");
    b.wait_text(
        "#transcript",
        "QUEUED-NOTE from the phone",
        Duration::from_secs(10),
    );
    b.wait_text("#transcript", "QUEUED-NOTE-ACK", long);
    b.wait("an idle status", long, |b| {
        b.text("#status").contains("idle")
    });
    assert_eq!(
        b.exec("return window.__marker;", json!([])),
        42,
        "the page reloaded"
    );
    // Tool calls and results are collapsed until opened.
    assert!(b.exists("#transcript details.tool:not([open])"));
    assert!(b.exists("#transcript details.result"));
    assert!(
        !b.exists("#transcript .ev.user .queued"),
        "a delivered message still shows queued"
    );
    assert_fits(b, "conversation");
    b.screenshot("3-conversation");

    // --- The server dies mid-stream and comes back: the page resumes without a reload,
    // and the transcript holds every event exactly once.
    server.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let server = Server::start_on(&ctx, port);
    b.type_into("#text", "now show me markup please");
    let sent = Instant::now();
    loop {
        b.click("#composer button[type=submit]");
        // The composer keeps the text until the server accepted it.
        std::thread::sleep(Duration::from_millis(500));
        if b.exec("return document.querySelector('#text').value;", json!([])) == "" {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "the message was never accepted: {}",
            b.text("#composer")
        );
    }
    b.wait_text("#transcript", "end.", long);
    b.wait("an idle status", long, |b| {
        b.text("#status").contains("idle")
    });
    assert_eq!(
        b.exec("return window.__marker;", json!([])),
        42,
        "the page reloaded"
    );
    // Model output with markup is shown as text and runs nothing.
    assert_eq!(
        b.exec("return typeof window.__xss;", json!([])),
        "undefined"
    );
    let shown = b.exec(
        "const a = document.querySelectorAll('#transcript .ev.assistant'); return a[a.length - 1].innerText;",
        json!([]),
    );
    let shown = shown.as_str().unwrap();
    for part in [
        "<script>window.__xss=1</script>",
        r#"<img src=x onerror="window.__xss=2">"#,
        "<b>bold</b>",
    ] {
        assert!(
            shown.contains(part),
            "{part:?} not shown as text in {shown:?}"
        );
    }
    assert!(
        !b.exists("#transcript .ev.assistant b, #transcript .ev.assistant img, #transcript script")
    );
    b.screenshot("4-markup-as-text");

    let transcript: Vec<u64> = common::chat::events(&ctx, &conv)
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let seqs = page_seqs(b);
    assert_eq!(seqs, transcript, "the page lost or repeated events");
    let last = *transcript.last().unwrap();

    // The stream route itself resumes after Last-Event-ID: exactly the later events.
    let from = last - 4;
    let body = b.exec_async(
        r#"const [url, from, last, done] = arguments;
        (async () => {
          const res = await fetch(url, { headers: { "Last-Event-ID": String(from) } });
          const reader = res.body.getReader();
          const dec = new TextDecoder();
          let text = "";
          while (!text.includes("id: " + last + "\n")) {
            const { value, done: end } = await reader.read();
            if (end) break;
            text += dec.decode(value, { stream: true });
          }
          reader.cancel();
          done(res.status + "\n" + text);
        })().catch((e) => done("ERR " + e));"#,
        json!([format!("/c/{conv}/stream?after=0"), from, last]),
    );
    let body = body.as_str().unwrap();
    assert!(body.starts_with("200\n"), "{body}");
    assert_eq!(
        sse_ids(body),
        (from + 1..=last).collect::<Vec<_>>(),
        "resumed stream:\n{body}"
    );
    assert!(!body.contains("<script>"), "{body}");
    // A reload shows the same transcript once.
    b.goto(&server.at(&format!("/c/{conv}")));
    b.wait_text("#transcript", "end.", long);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(page_seqs(b), transcript, "after a reload");

    // --- The workspace again: the agent's file in the changes, a command's streamed output.
    b.goto(&server.at("/w/webui"));
    b.wait_text("#changes", "notes.md", long);
    let file = "#changes details.file[data-path='notes.md']";
    assert!(b.text(file).contains("untracked"), "{}", b.text(file));
    b.click(&format!("{file} > summary"));
    b.wait_text(
        &format!("{file} pre.diff"),
        "+web-ui-change",
        Duration::from_secs(5),
    );
    assert!(b.exists(&format!("{file} pre.diff .add")));
    assert!(
        b.text("#conversations").contains("idle"),
        "{}",
        b.text("#conversations")
    );
    assert_fits(b, "workspace-with-diff");
    b.screenshot("5-diff");

    b.type_into(
        "#shell",
        "echo first-line; sleep 3; echo second-line; echo to-stderr >&2; exit 3",
    );
    b.click("#exec button[type=submit]");
    // Streamed: the first line shows while the command still runs.
    b.wait_text("#exec-out", "first-line", Duration::from_secs(20));
    assert!(
        !b.text("#exec-out").contains("second-line"),
        "not streamed: {}",
        b.text("#exec-out")
    );
    assert!(b.text("#exec-exit").contains("running"));
    b.wait_text("#exec-exit", "exit 3", Duration::from_secs(30));
    let out = b.text("#exec-out");
    assert!(
        out.contains("second-line") && out.contains("to-stderr"),
        "{out}"
    );
    assert!(b.exists("#exec-out .stderr"));
    // Output is text, never markup.
    b.exec("document.querySelector('#shell').value = '';", json!([]));
    b.type_into("#shell", "echo '<i>not-italic</i>'");
    b.click("#exec button[type=submit]");
    b.wait_text("#exec-exit", "exit 0", Duration::from_secs(20));
    assert!(b.text("#exec-out").contains("<i>not-italic</i>"));
    assert!(!b.exists("#exec-out i"));
    assert_fits(b, "workspace-with-output");
    b.exec(
        "document.querySelector('#exec-exit').scrollIntoView();",
        json!([]),
    );
    b.screenshot("6-command");

    // --- The same pages in a desktop browser.
    {
        let desk = Browser::desktop(1280, 900);
        log_in(&ctx, &server, &desk);
        for (name, path) in [
            ("desktop-workspaces", "/"),
            ("desktop-workspace", "/w/webui"),
        ] {
            desk.goto(&server.at(path));
            let (viewport, page) = (desk.viewport_width(), desk.scroll_width());
            assert!(
                viewport >= 1200 && page <= viewport,
                "{name}: {page} px wide in a {viewport} px window"
            );
            desk.screenshot(name);
        }
    }

    // --- The list shows the conversation's state; logging out ends the session.
    b.goto(&server.at("/"));
    b.wait_text(card, "idle", long);
    // Back it up from the phone: the card then says when.
    b.click(&format!("{card} button[data-post$='/backup']"));
    b.wait("the backup to show", long, |b| {
        b.text(&format!("{card} .backup")).contains("backed up")
    });
    b.screenshot("6b-backed-up");
    // Stop (after a confirmation) and start again from the list.
    b.click(&format!("{card} button[data-post$='/down']"));
    b.cmd("POST", "alert/accept", None);
    b.wait("the workspace to stop", long, |b| {
        b.exists(&format!("{card} .badge.ws-stopped"))
    });
    assert!(b.exists(&format!("{card} button[data-post$='/up']")));
    b.screenshot("7-stopped");
    b.click(&format!("{card} button[data-post$='/up']"));
    b.wait("the workspace to run again", long, |b| {
        b.exists(&format!("{card} .badge.ws-running"))
    });
    b.click("form.logout button");
    b.wait("the login page", long, |b| b.url().contains("/login"));
    b.goto(&server.at("/w/webui"));
    assert!(b.url().contains("/login"), "still logged in: {}", b.url());
    drop(server);
}

#[test]
fn approvals_interrupts_and_attention_marks_from_the_phone() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "write the approved file"},
               "response": [{"tool_use": {"name": "Write", "input": {"file_path": "/workspace/proj/approved.txt", "content": "yes\n"}}}]},
              {"match": {"after_tool_result_contains": "approved.txt"}, "response": [{"text": "Wrote it after your approval."}]},
              {"match": {"last_user_contains": "write the forbidden file"},
               "response": [{"tool_use": {"name": "Write", "input": {"file_path": "/workspace/proj/forbidden.txt", "content": "no\n"}}}]},
              {"match": {"contains": "forbidden.txt", "not_contains": "think for a long time"}, "response": [{"text": "Left it alone."}]},
              {"match": {"last_user_contains": "think for a long time"}, "delay_ms": 30000, "response": [{"text": "Finally done thinking."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let ctx = ctx_with_model(&model);
    let w = ctx.up(&[git_project(&ctx).to_str().unwrap(), "--name", "asks"]);
    let id = w["id"].as_str().unwrap().to_owned();
    let server = Server::start(&ctx);
    let browser = Browser::start(WIDTH as u32, 800);
    let b = &browser;
    let long = Duration::from_secs(120);
    log_in(&ctx, &server, b);

    // "Ask before each tool use" from the form.
    b.goto(&server.at("/w/asks/new"));
    b.wait_text("h1", "New conversation", long);
    b.click("#ask");
    b.type_into("#message", "please write the approved file");
    b.click("#new-conv button[type=submit]");
    b.wait("the conversation page", long, |b| b.url().contains("/c/"));
    let conv_url = b.url();
    assert!(b.text("main").contains("asks before tool use"));

    // A pending approval stands out on the list.
    b.wait("an approval request", long, |b| {
        b.exists("#transcript .ev.approval button[data-approve]")
    });
    b.wait_text("#status", "needs approval", long);
    assert_fits(b, "approval");
    b.screenshot("8-approval");
    b.goto(&server.at("/"));
    assert!(
        b.exists("article.ws[data-ws=asks] .badge.cs-waiting_for_approval.attn"),
        "{}",
        b.text("main")
    );
    assert!(
        b.text("article.ws[data-ws=asks]")
            .contains("needs approval")
    );

    // Allow: the tool runs.
    b.goto(&conv_url);
    b.click("#transcript .ev.approval button[data-allow=true]");
    b.wait_text("#transcript", "Wrote it after your approval.", long);
    assert!(b.text("#transcript .ev.approval").contains("Allowed"));
    assert!(!b.exists("#transcript button[data-approve]"));
    assert_eq!(
        common::dexec(&id, "cat /workspace/proj/approved.txt"),
        "yes\n"
    );

    // Deny: the tool never runs.
    b.type_into("#text", "now write the forbidden file");
    b.click("#composer button[type=submit]");
    b.wait("a second approval request", long, |b| {
        b.exists("#transcript .ev.approval button[data-approve]")
    });
    b.click("#transcript .ev.approval button[data-allow=false]");
    b.wait("the denial", long, |b| {
        b.text("#transcript").contains("Denied")
    });
    b.wait("an idle status", long, |b| {
        b.text("#status").contains("idle")
    });
    assert_eq!(
        common::dexec(
            &id,
            "test -e /workspace/proj/forbidden.txt && echo yes || echo no"
        )
        .trim(),
        "no"
    );

    // Interrupt a slow turn; the conversation goes on.
    b.type_into("#text", "think for a long time");
    b.click("#composer button[type=submit]");
    b.wait_text("#status", "working", long);
    let t = Instant::now();
    b.click("#interrupt");
    b.wait(
        "the interrupted turn to end",
        Duration::from_secs(20),
        |b| b.text("#status").contains("idle"),
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(!b.text("#transcript").contains("Finally done thinking."));

    // A reply this browser has not shown is marked on the list, until it is seen.
    b.exec("localStorage.clear();", json!([]));
    b.goto(&server.at("/"));
    let badge = "article.ws[data-ws=asks] .badge[data-conv]";
    b.wait_text(badge, "new reply", Duration::from_secs(10));
    b.screenshot("9-new-reply");
    b.goto(&conv_url);
    b.wait_text("#status", "idle", long);
    b.goto(&server.at("/"));
    b.wait_text(badge, "idle", Duration::from_secs(10));
    assert!(!b.text(badge).contains("new reply"));
}

#[test]
fn the_web_ui_installs_as_a_phone_app_and_notifies_while_open() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "write the note"},
               "response": [{"tool_use": {"name": "Write", "input": {"file_path": "/workspace/proj/note.txt", "content": "n\n"}}}]},
              {"match": {"last_user_contains": "wake up"}, "response": [{"text": "Awake now."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let ctx = ctx_with_model(&model);
    ctx.up(&[git_project(&ctx).to_str().unwrap(), "--name", "app"]);
    let server = Server::start(&ctx);

    // The manifest and its icons are served to anyone (browsers fetch them without cookies).
    let anon = server.client();
    let r = anon.get("/manifest.webmanifest");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/manifest+json"));
    let m = r.json();
    assert_eq!(
        (m["display"].as_str(), m["start_url"].as_str()),
        (Some("standalone"), Some("/"))
    );
    for icon in m["icons"].as_array().unwrap() {
        let src = icon["src"].as_str().unwrap();
        let r = anon.get(src);
        assert_eq!(r.status, 200, "{src}");
        if let Some(size) = icon["sizes"]
            .as_str()
            .unwrap()
            .split('x')
            .next()
            .and_then(|s| s.parse::<u32>().ok())
        {
            assert_eq!(&r.body[..8], b"\x89PNG\r\n\x1a\n", "{src}");
            assert_eq!(
                u32::from_be_bytes(r.body[16..20].try_into().unwrap()),
                size,
                "{src}"
            );
        }
    }

    // With notifications allowed, a new approval raises one and counts on the title.
    let browser = Browser::notifying(WIDTH as u32, 800);
    let b = &browser;
    log_in(&ctx, &server, b);
    assert!(b.exists("link[rel=manifest]") && b.exists("link[rel=apple-touch-icon]"));
    assert_eq!(
        b.exec("return Notification.permission;", json!([])),
        "granted"
    );
    assert!(!b.exists("#notify-on"), "nothing to ask once allowed");
    assert_fits(b, "app");
    b.exec(
        "window.__notes = []; window.Notification = function (t, o) { window.__notes.push([t, (o || {}).tag]); return { close() {} }; }; window.Notification.permission = 'granted';",
        json!([]),
    );
    let conv = ctx
        .run(&["new-chat", "app", "--ask", "-m", "please write the note"])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let long = Duration::from_secs(60);
    b.wait("the approval's notification", long, |b| {
        b.exec("return window.__notes.length;", json!([])).as_u64() == Some(1)
    });
    let notes = b.exec("return window.__notes;", json!([]));
    assert_eq!(notes[0][0], "app: approval needed", "{notes}");
    assert_eq!(notes[0][1], conv.as_str());
    assert!(
        b.exec("return document.title;", json!([]))
            .as_str()
            .unwrap()
            .starts_with("(1) ")
    );
    // The next refreshes tell nothing new.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(b.exec("return window.__notes.length;", json!([])), 1);

    // A workspace stopped under an open conversation page takes the message sent from it:
    // the server keeps it, starts the workspace, delivers it, and the page shows the answer.
    let talk = ctx.run(&["new-chat", "app"]).ok().stdout.trim().to_owned();
    b.goto(&server.at(&format!("/c/{talk}")));
    b.wait_text("#status", "idle", long);
    ctx.run(&["workspace", "down", "app"]).ok();
    b.type_into("#text", "please wake up");
    b.click("#composer button[type=submit]");
    b.wait_text("#transcript", "Awake now.", Duration::from_secs(90));
    assert_eq!(ctx.list()[0]["status"], "running");
    let shown = b.text("#transcript");
    assert_eq!(shown.matches("please wake up").count(), 1, "{shown}");

    // Without the permission, one tap asks for it.
    let plain = Browser::start(WIDTH as u32, 800);
    log_in(&ctx, &server, &plain);
    let perm = plain.exec("return Notification.permission;", json!([]));
    assert_eq!(perm, "default");
    assert!(plain.exists("#notify-on"), "{}", plain.text("header"));
    assert_fits(&plain, "notify-button");
    plain.screenshot("10-notify-button");
}
