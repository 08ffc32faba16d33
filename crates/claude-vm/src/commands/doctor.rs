//! `claude-vm doctor`: one verdict per thing `up` and `new-chat` need.

use std::process::ExitCode;

use anyhow::Result;
use claude_vm_engine::{Check, Engine, Verdict};
use claude_vm_server::ServerInfo;

use super::{print_json, runtime};
use crate::output::{self, Style};

pub fn run(engine: &Engine, json: bool) -> Result<ExitCode> {
    let mut checks = runtime()?.block_on(engine.doctor());
    checks.push(server_check(engine));
    let ready = !checks
        .iter()
        .any(|c| c.needed && c.verdict == Verdict::Fail);
    if json {
        print_json(&serde_json::json!({"ready": ready, "checks": checks}))?;
    } else {
        for c in &checks {
            let mark = match c.verdict {
                Verdict::Ok => output::paint_out("✓", Style::Good),
                Verdict::Warn => output::paint_out("!", Style::Warn),
                Verdict::Fail => output::paint_out("✗", Style::Error),
            };
            println!(
                "{mark} {}: {}",
                output::paint_out(&c.check, Style::Bold),
                c.detail
            );
            if let Some(r) = &c.remedy {
                println!("    → {r}");
            }
        }
        println!(
            "{}",
            if ready {
                "ready: `claude-vm workspace up` and `new-chat` have what they need"
            } else {
                "not ready: fix the ✗ lines above that `up` and `new-chat` need"
            }
        );
    }
    Ok(if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn server_check(engine: &Engine) -> Check {
    let Some(info) = ServerInfo::running(engine.home()) else {
        return Check::new(
            "server",
            Verdict::Warn,
            "not running: notifications, continuous backups and wake-on-message need it",
        )
        .remedy("`claude-vm server` (or `claude-vm server install --user` to keep it running)");
    };
    let reachable = info
        .listen
        .parse::<std::net::SocketAddr>()
        .map(|mut a| {
            if a.ip().is_unspecified() {
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(3)).is_ok()
        })
        .unwrap_or(false);
    if !reachable {
        return Check::new(
            "server",
            Verdict::Fail,
            format!("pid {} runs but {} does not answer", info.pid, info.listen),
        )
        .remedy("restart it: `claude-vm server`");
    }
    let loopback = info
        .listen
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    if info.url.starts_with("https://") || loopback {
        Check::new(
            "server",
            Verdict::Ok,
            format!(
                "running (pid {}) at {}{}",
                info.pid,
                info.url,
                if loopback && !info.url.starts_with("https://") {
                    " (this machine only)"
                } else {
                    ""
                }
            ),
        )
    } else {
        Check::new(
            "server",
            Verdict::Warn,
            format!(
                "running (pid {}) at {} over plain HTTP on {}",
                info.pid, info.url, info.listen
            ),
        )
        .remedy("put HTTPS in front (Caddy, `tailscale serve`) and pass --public-url https://…")
    }
}
