//! `wake`: a workspace that stopped itself for idleness, woken by `chat send --wait`, against
//! `docker start` of a stopped container plus the same `chat send --wait` to the running
//! workspace; and the notification latency of `claude-vm server`, from a turn's end (the
//! event's time) to a webhook receiver on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::exec::{Tools, check_interrupted, run, timed};

#[derive(Default)]
pub struct WakeSamples {
    /// `chat send --wait` to a workspace that stopped itself.
    pub ours: Vec<Duration>,
    /// `docker start` of a stopped container, plus `chat send --wait` to the running one.
    pub baseline: Vec<Duration>,
    /// Turn end → webhook received, milliseconds.
    pub notify_ms: Vec<f64>,
}

fn container_running(tools: &Tools, ctr: &str) -> Result<bool> {
    Ok(run(tools.docker(["inspect", "-f", "{{.State.Running}}", ctr]))?.trim() == "true")
}

fn wait_stopped(tools: &Tools, ctr: &str) -> Result<()> {
    let t = Instant::now();
    while container_running(tools, ctr)? {
        check_interrupted()?;
        if t.elapsed() > Duration::from_secs(120) {
            bail!("{ctr} did not stop itself within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Each webhook body's `at` (the event's time) and when it arrived.
type Arrivals = Arc<Mutex<Vec<(String, jiff::Timestamp)>>>;

/// Receives webhook posts, recording [`Arrivals`].
fn receiver() -> Result<(u16, Arrivals)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let record = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let record = record.clone();
            std::thread::spawn(move || {
                let Ok(clone) = conn.try_clone() else { return };
                let mut reader = BufReader::new(clone);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let arrived = jiff::Timestamp::now();
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                        && let Some(at) = v["at"].as_str()
                    {
                        record.lock().unwrap().push((at.to_owned(), arrived));
                    }
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                }
            });
        }
    });
    Ok((port, got))
}

pub fn wake(
    tools: &Tools,
    repo: &Path,
    image: &str,
    label: &str,
    reps: usize,
    turns: usize,
) -> Result<WakeSamples> {
    let mut s = WakeSamples::default();
    // A webhook channel for the notification latency (one turn end per message: a second
    // within `coalesce` would be gathered).
    let (port, got) = receiver()?;
    let config = tools.home.join("config.yaml");
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(&format!(
        "notify:\n  coalesce: 1s\n  channels:\n  - {{type: webhook, url: 'http://127.0.0.1:{port}/hook', events: [turn_finished]}}\n"
    ));
    std::fs::write(&config, text)?;

    let mut up = tools.cvm(["workspace", "up"]);
    up.arg(repo)
        .args(["--name", "bench-wake", "--idle-stop", "2s", "-q"]);
    run(up)?;
    let list: serde_json::Value =
        serde_json::from_str(&run(tools.cvm(["workspace", "list", "--json"]))?)?;
    let id = list
        .as_array()
        .and_then(|a| a.iter().find(|w| w["name"] == "bench-wake"))
        .and_then(|w| w["id"].as_str())
        .context("bench-wake is not listed")?
        .to_owned();
    let ctr = format!("claude-vm-{id}");
    let conv = run(tools.cvm(["new-chat", "bench-wake"]))?
        .trim()
        .to_owned();
    let send = |n: usize| {
        timed(tools.cvm([
            "chat",
            "send",
            "-c",
            &conv,
            &format!("wake-{n}"),
            "--wait",
            "-q",
        ]))
        .map(|(t, _)| t)
    };
    send(0)?;
    let base = format!("claude-vm-bench-wake-{}", std::process::id());
    run(tools.docker([
        "create", "--init", "--label", label, "--name", &base, image, "sleep", "infinity",
    ]))?;

    for i in 0..reps {
        wait_stopped(tools, &ctr)?;
        let ours = send(i + 1)?;
        let (start, _) = timed(tools.docker(["start", &base]))?;
        let running_send = send(i + 1)?;
        run(tools.docker(["stop", "-t", "1", &base]))?;
        eprintln!(
            "wake {}/{reps}: {:.0} ms vs docker start {:.0} ms + send {:.0} ms",
            i + 1,
            ours.as_secs_f64() * 1e3,
            start.as_secs_f64() * 1e3,
            running_send.as_secs_f64() * 1e3
        );
        s.ours.push(ours);
        s.baseline.push(start + running_send);
    }

    // Notification latency: the server follows the conversation; each turn's end reaches
    // the receiver. Keep the workspace up meanwhile.
    run(tools.cvm(["workspace", "set", "bench-wake", "--idle-stop", "off"]))?;
    let log = std::fs::File::create(tools.home.join("bench-server.log"))?;
    let server_port = {
        let l = TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let mut server = tools
        .cvm(["server", "--listen", &format!("127.0.0.1:{server_port}")])
        .env("CLAUDE_VM_WARM_CHECK_SECS", "1")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting claude-vm server")?;
    let result = (|| {
        // The server finds the conversation within a few seconds.
        std::thread::sleep(Duration::from_secs(8));
        for i in 0..turns {
            check_interrupted()?;
            let before = got.lock().unwrap().len();
            send(1000 + i)?;
            let t = Instant::now();
            while got.lock().unwrap().len() == before {
                if t.elapsed() > Duration::from_secs(30) {
                    bail!("no notification within 30 s of turn {i}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Past the coalescing window, so the next turn end is sent alone.
            std::thread::sleep(Duration::from_millis(1200));
        }
        Ok(())
    })();
    let _ = server.kill();
    let _ = server.wait();
    result?;
    for (at, arrived) in got.lock().unwrap().iter() {
        let at: jiff::Timestamp = at.parse()?;
        s.notify_ms
            .push(arrived.duration_since(at).as_secs_f64() * 1e3);
    }
    let _ = run(tools.docker(["rm", "-f", &base]));
    Ok(s)
}
