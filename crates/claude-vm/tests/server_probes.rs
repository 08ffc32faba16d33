//! Defects found by probing a running server, each kept fixed by the test named after it.

mod common;

use std::time::{Duration, Instant};

use common::http::Server;
use common::{Ctx, dexec};

fn token(ctx: &Ctx) -> String {
    ctx.run(&["token", "create", "t", "--json"]).ok().json()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn downloads_of_symlinks_are_whole_and_any_file_name_downloads() {
    let ctx = Ctx::new();
    let p = ctx.path("p");
    std::fs::create_dir_all(&p).unwrap();
    let w = ctx.up(&[p.to_str().unwrap(), "--name", "dl"]);
    let id = w["id"].as_str().unwrap().to_owned();
    // A 12-byte file behind an 11-byte symlink, and a name with a control character.
    dexec(
        &id,
        "cd /workspace/p && printf 'hello world\\n' > a-long-target-name && ln -s a-long-target-name l \\
         && printf 'x' > \"$(printf 'bad\\001name')\"",
    );
    let server = Server::start(&ctx);
    let api = server.client().bearer(&token(&ctx));
    let r = api.get("/api/v1/workspaces/dl/files/content?path=l");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-length"), Some("12"));
    assert_eq!(r.text(), "hello world\n");
    let r = api.get("/api/v1/workspaces/dl/files/content?path=bad%01name");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "x");
    let cd = r.header("content-disposition").unwrap();
    assert!(cd.contains("filename=\"bad_name\""), "{cd}");
    assert!(cd.contains("filename*=UTF-8''bad%01name"), "{cd}");
}

#[test]
fn concurrent_ups_and_downs_of_one_workspace_never_deadlock_the_server() {
    let ctx = Ctx::new();
    let p = ctx.path("p");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("f"), "x").unwrap();
    let w = ctx.up(&[p.to_str().unwrap(), "--name", "busy"]);
    let id = w["id"].as_str().unwrap().to_owned();
    let server = Server::start(&ctx);
    let client = server.client().bearer(&token(&ctx));

    // Eight lifecycle requests on one workspace at once (each holds its lock for seconds),
    // while lists keep coming: every list answers promptly, every lifecycle request ends.
    let started = Instant::now();
    std::thread::scope(|s| {
        let lifecycle: Vec<_> = (0..8)
            .map(|i| {
                let client = client.clone();
                let id = id.clone();
                s.spawn(move || {
                    let action = if i % 2 == 0 { "down" } else { "up" };
                    let r = client.post(
                        &format!("/api/v1/workspaces/{id}/{action}"),
                        &serde_json::json!({}),
                    );
                    (action, r.status, r.text())
                })
            })
            .collect();
        let lister = s.spawn(|| {
            let mut slowest = Duration::ZERO;
            let mut n = 0;
            while started.elapsed() < Duration::from_secs(20) {
                let t = Instant::now();
                let r = client.get("/api/v1/workspaces");
                assert_eq!(r.status, 200, "{}", r.text());
                slowest = slowest.max(t.elapsed());
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            (n, slowest)
        });
        for h in lifecycle {
            let (action, status, body) = h.join().unwrap();
            // Each either did its work or found it already done/refused it: never a 5xx.
            assert!(status < 500, "{action}: {status} {body}");
        }
        let (n, slowest) = lister.join().unwrap();
        eprintln!("{n} lists during the lifecycle requests, slowest {slowest:?}");
        assert!(
            slowest < Duration::from_secs(10),
            "a list took {slowest:?} while lifecycle requests queued"
        );
    });
    // And the server is still whole afterwards.
    let r = client.get("/api/v1/workspaces");
    assert_eq!(r.status, 200);
    let r = client.post(
        &format!("/api/v1/workspaces/{id}/up"),
        &serde_json::json!({}),
    );
    assert!(r.status < 300, "{} {}", r.status, r.text());
    let r = client.get(&format!("/api/v1/workspaces/{id}"));
    assert_eq!(r.json()["status"], "running", "{}", r.text());
}
