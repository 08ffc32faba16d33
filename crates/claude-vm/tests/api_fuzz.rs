//! The API against its own description: schemathesis (PyPI, installed by
//! scripts/test-deps.sh) generates requests from `docs/openapi.json` and checks every answer
//! against it, on a real server whose home holds a running workspace.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Ctx;
use common::http::Server;

/// The longest the schemathesis run may take before the test fails.
const WALL_CLOCK: Duration = Duration::from_secs(110);

/// Examples per operation: 30 in the test command, more for longer runs
/// (`CLAUDE_VM_FUZZ_EXAMPLES`, which also stretches the wall-clock bound).
fn examples() -> u64 {
    std::env::var("CLAUDE_VM_FUZZ_EXAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

fn wall_clock() -> Duration {
    WALL_CLOCK * (examples().div_ceil(30) as u32)
}

#[test]
fn the_api_keeps_to_its_openapi_document() {
    // A missing schemathesis fails the test: it is part of the suite, not optional.
    let version = Command::new("schemathesis")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run schemathesis ({e}); install it with scripts/test-deps.sh")
        });
    assert!(version.status.success(), "schemathesis --version failed");
    eprintln!("{}", String::from_utf8_lossy(&version.stdout).trim());

    let ctx = Ctx::new();
    let proj = ctx.path("fuzzed");
    common::sample_project(&proj);
    let ws = ctx.up(&[proj.to_str().unwrap(), "--name", "fuzzed"]);
    let id = ws["id"].as_str().unwrap().to_owned();
    let token = ctx.run(&["token", "create", "fuzz", "--json"]).ok().json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let server = Server::start(&ctx);

    // Workspace routes get the fixture (otherwise nearly every request would be a 404);
    // conversation routes get generated ids, so they answer 404 (the fixture has no
    // conversation: an event stream for a real one would never end).
    let config = ctx.path("schemathesis.toml");
    std::fs::write(&config, "[parameters]\nworkspace = \"fuzzed\"\n").unwrap();
    let har = ctx.path("schemathesis.har");
    let doc = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let mut child = Command::new("schemathesis")
        .arg("--config-file")
        .arg(&config)
        .args(["run", doc, "--url", &server.url()])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance",
        ])
        // Left out, as they would destroy the fixture: deleting it and stopping it.
        .args(["--exclude-operation-id", "deleteWorkspace"])
        .args(["--exclude-operation-id", "downWorkspace"])
        .args(["--max-examples", &examples().to_string(), "--seed", "20261201"])
        .args(["--generation-with-security-parameters", "false"])
        .args(["--request-timeout", "30", "--workers", "2", "--no-color"])
        .arg("--report")
        .arg("har")
        .arg("--report-har-path")
        .arg(&har)
        .current_dir(ctx.work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > wall_clock() {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let entries = std::fs::read_to_string(&har)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|h| h["log"]["entries"].as_array().cloned())
        .unwrap_or_default();
    let mut by_status = std::collections::BTreeMap::new();
    for e in &entries {
        *by_status
            .entry(e["response"]["status"].as_u64().unwrap_or(0))
            .or_insert(0u32) += 1;
    }
    eprintln!(
        "schemathesis made {} requests in {:.0?}; statuses {by_status:?}",
        entries.len(),
        start.elapsed()
    );
    let Some(status) = status else {
        panic!(
            "schemathesis did not finish within {WALL_CLOCK:?}\n{out}\n{err}\n--- server log ---\n{}",
            server.log_text()
        );
    };
    assert!(
        status.success(),
        "schemathesis found answers that disagree with docs/openapi.json:\n{out}\n{err}\n--- server log ---\n{}",
        server.log_text()
    );
    assert!(
        entries.len() >= 300,
        "too few requests: {}\n{out}",
        entries.len()
    );
    assert!(
        by_status.keys().all(|s| *s < 500),
        "server errors: {by_status:?}"
    );
    // The fixture lived through it, and so did the server.
    let list = server
        .client()
        .bearer(&token)
        .get("/api/v1/workspaces")
        .expect(200);
    let fixture = list["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("the fixture is gone: {list}"));
    assert_eq!(fixture["status"], "running", "{fixture}");
}
