//! `server`, `web` and `token`: the control plane and its credentials.

use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use claude_vm_engine::{CancellationToken, Engine};
use claude_vm_server::{Auth, ServerInfo};
use serde::Serialize;

use super::{print_json, runtime};
use crate::cli::TokenCommand;
use crate::output::{self, Style};

/// `7878`, `:7878`, `0.0.0.0:7878`, `localhost:7878`, `[::1]:7878`.
pub fn parse_listen(listen: &str) -> Result<SocketAddr> {
    let spec = if listen.bytes().all(|b| b.is_ascii_digit()) {
        format!("127.0.0.1:{listen}")
    } else if let Some(port) = listen.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else {
        listen.to_owned()
    };
    spec.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            anyhow!("invalid --listen address {listen:?}; use HOST:PORT, e.g. 127.0.0.1:7878")
        })
}

pub fn serve(engine: Engine, listen: &str, public_urls: &[String]) -> Result<ExitCode> {
    let addr = parse_listen(listen)?;
    let options = claude_vm_server::ServeOptions {
        public_urls: public_urls
            .iter()
            .map(|u| claude_vm_server::parse_public_url(u).map_err(|e| anyhow!(e)))
            .collect::<Result<_>>()?,
        // How often running workspaces are checked for a due backup.
        backup_tick: std::env::var("CLAUDE_VM_BACKUP_CHECK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(std::time::Duration::from_secs),
        warm_tick: std::env::var("CLAUDE_VM_WARM_CHECK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(std::time::Duration::from_secs),
        ..Default::default()
    };
    let home = engine.home().clone();
    if let Some(other) = ServerInfo::running(&home) {
        bail!(
            "a server for this claude-vm home already runs at {} (pid {})",
            other.url,
            other.pid
        );
    }
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} (is another program using the port? choose one with --listen)")
        })?;
        let local = listener.local_addr()?;
        let url = format!("http://{local}");
        eprintln!("claude-vm server {} listening on {url}", claude_vm_protocol::VERSION);
        if !local.ip().is_loopback() {
            eprintln!(
                "{} reachable from the network over plain HTTP: put HTTPS in front of it (a reverse proxy such as Caddy, or `tailscale serve`)",
                output::paint("warning:", Style::Warn)
            );
        }
        if std::io::stderr().is_terminal() {
            let auth = Auth::open(&home)?;
            let code = auth.mint_login_code()?;
            eprintln!("log in from a browser (link valid 15 minutes, once): {url}/login?code={code}");
        }
        let shutdown = CancellationToken::new();
        {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("signal handler");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                eprintln!("claude-vm server: stopping (agents keep running in their workspaces)");
                shutdown.cancel();
            });
        }
        claude_vm_server::serve(Arc::new(engine), listener, shutdown, options).await?;
        Ok(ExitCode::SUCCESS)
    })
}

#[derive(Serialize)]
struct WebInfo {
    url: String,
    login_url: String,
    /// The login link works once, until then.
    login_expires_at: String,
    pid: u32,
    /// Whether this command started the server.
    started: bool,
}

/// Start `claude-vm server` in the background, its output in `logs/server.log`.
fn start_server(engine: &Engine, listen: &str) -> Result<ServerInfo> {
    parse_listen(listen)?;
    let home = engine.home();
    let logs = home.root().join("logs");
    std::fs::create_dir_all(&logs)?;
    let log_path = logs.join("server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let exe = std::env::current_exe().context("cannot find the claude-vm binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["server", "--listen", listen])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own session: closing this terminal does not stop it.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the server")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(info) = ServerInfo::running(home)
            && info.pid == child.id()
        {
            return Ok(info);
        }
        if let Some(status) = child.try_wait()? {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            bail!("the server exited ({status}): {last}");
        }
        if Instant::now() > deadline {
            bail!(
                "the server did not start within 15 seconds; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The address a phone on the same network would use for this machine.
fn lan_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

pub fn web(engine: &Engine, listen: &str, no_open: bool, json: bool) -> Result<ExitCode> {
    let (info, started) = match ServerInfo::running(engine.home()) {
        Some(info) => (info, false),
        None => (start_server(engine, listen)?, true),
    };
    let listen_addr: SocketAddr = info.listen.parse().context("bad server.json")?;
    // A server on all interfaces is reachable by a phone at this machine's LAN address.
    let url = if listen_addr.ip().is_unspecified() {
        match lan_ip() {
            Some(ip) => format!("http://{}", SocketAddr::new(ip, listen_addr.port())),
            None => format!("http://127.0.0.1:{}", listen_addr.port()),
        }
    } else {
        info.url.clone()
    };
    let code = Auth::open(engine.home())?.mint_login_code()?;
    let login_url = format!("{url}/login?code={code}");
    let expires = jiff::Timestamp::now()
        + jiff::SignedDuration::from_secs(claude_vm_server::auth::LOGIN_CODE_TTL.as_secs() as i64);
    if json {
        print_json(&WebInfo {
            url: url.clone(),
            login_url: login_url.clone(),
            login_expires_at: expires.round(jiff::Unit::Second)?.to_string(),
            pid: info.pid,
            started,
        })?;
    } else {
        if started {
            eprintln!(
                "started the server (pid {}), log in {}",
                info.pid,
                engine.home().root().join("logs/server.log").display()
            );
        }
        eprintln!("claude-vm web UI: {url}");
        eprintln!("one-time login link (valid 15 minutes):");
        println!("{login_url}");
        if std::io::stderr().is_terminal() {
            eprintln!("{}", qr(&login_url));
            if listen_addr.ip().is_loopback() {
                eprintln!(
                    "(the server listens on this machine only; for a phone, run `claude-vm server --listen 0.0.0.0:7878` behind HTTPS)"
                );
            }
        }
    }
    if !no_open {
        open_browser(&login_url);
    }
    Ok(ExitCode::SUCCESS)
}

/// A QR code drawn with half blocks, for a phone's camera.
fn qr(text: &str) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build(),
        Err(_) => String::new(),
    }
}

/// Open a browser where there is a desktop; silently nothing elsewhere.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        "xdg-open"
    } else {
        return;
    };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

#[derive(Serialize)]
struct CreatedToken<'a> {
    #[serde(flatten)]
    record: &'a claude_vm_store::TokenRecord,
    token: &'a str,
}

pub fn token(engine: &Engine, cmd: &TokenCommand) -> Result<ExitCode> {
    let auth = Auth::open(engine.home())?;
    match cmd {
        TokenCommand::Create { name, json } => {
            let name = match name {
                Some(n) => n.clone(),
                None => format!("token-{}", jiff::Timestamp::now().strftime("%Y%m%d-%H%M%S")),
            };
            if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                bail!("invalid token name {name:?}: 1 to 64 printable characters");
            }
            let (record, secret) = auth.create_token(&name)?;
            if *json {
                print_json(&CreatedToken {
                    record: &record,
                    token: &secret,
                })?;
            } else {
                println!("{secret}");
                eprintln!(
                    "created token {} ({}); it is shown only now: store it somewhere safe",
                    record.name, record.id
                );
            }
        }
        TokenCommand::List { json } => {
            let tokens = auth.tokens()?;
            if *json {
                print_json(&tokens)?;
            } else if tokens.is_empty() {
                eprintln!("no tokens; create one with `claude-vm token create`");
            } else {
                let rows = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.name.clone(),
                            output::ago(&t.created_at),
                            t.last_used_at
                                .as_deref()
                                .map(output::ago)
                                .unwrap_or_else(|| "never".into()),
                        ]
                    })
                    .collect::<Vec<_>>();
                print!(
                    "{}",
                    output::table(&["ID", "NAME", "CREATED", "LAST USED"], &rows)
                );
            }
        }
        TokenCommand::Revoke { token } => match auth.revoke(token)? {
            Some(t) => eprintln!("revoked token {} ({})", t.name, t.id),
            None => bail!("no token with id or name {token:?} (see `claude-vm token list`)"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// The systemd unit that runs `claude-vm server` for this home.
pub fn systemd_unit(
    exe: &str,
    home: &str,
    listen: &str,
    public_urls: &[String],
    user: bool,
) -> String {
    let quote = |s: &str| {
        if s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=,@+".contains(c))
        {
            s.to_owned()
        } else {
            format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
        }
    };
    let mut exec = format!("{} server --listen {}", quote(exe), quote(listen));
    for u in public_urls {
        exec.push_str(&format!(" --public-url {}", quote(u)));
    }
    format!(
        "[Unit]\n\
         Description=claude-vm server (web UI, API, notifications, continuous backups)\n\
         After=network-online.target docker.service\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Environment=CLAUDE_VM_HOME={home}\n\
         ExecStart={exec}\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         \n\
         [Install]\n\
         WantedBy={}\n",
        if user {
            "default.target"
        } else {
            "multi-user.target"
        },
        home = quote(home),
    )
}

/// `claude-vm server install|status`.
pub fn manage(action: &crate::cli::ServerCommand) -> Result<ExitCode> {
    use crate::cli::ServerCommand;
    let home = claude_vm_store::Home::from_env()?;
    match action {
        ServerCommand::Status { json } => {
            let info = ServerInfo::running(&home);
            if *json {
                print_json(&serde_json::json!({
                    "running": info.is_some(),
                    "pid": info.as_ref().map(|i| i.pid),
                    "url": info.as_ref().map(|i| i.url.clone()),
                }))?;
            } else {
                match &info {
                    Some(i) => println!("running (pid {}) at {}", i.pid, i.url),
                    None => println!("not running"),
                }
            }
            // As `systemctl status` does: 3 when it is not running.
            Ok(if info.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        ServerCommand::Install {
            user,
            print,
            listen,
            public_url,
        } => {
            parse_listen(listen)?;
            for u in public_url {
                claude_vm_server::parse_public_url(u).map_err(|e| anyhow!(e))?;
            }
            let exe = std::env::current_exe()
                .context("finding this claude-vm's path")?
                .display()
                .to_string();
            let unit = systemd_unit(
                &exe,
                &home.root().display().to_string(),
                listen,
                public_url,
                *user,
            );
            let systemd = std::path::Path::new("/run/systemd/system").is_dir()
                && which("systemctl").is_some();
            if *print || !systemd {
                print!("{unit}");
                if !*print {
                    let place = if *user {
                        "~/.config/systemd/user/claude-vm-server.service (then `systemctl --user enable --now claude-vm-server`)"
                    } else {
                        "/etc/systemd/system/claude-vm-server.service (then `systemctl enable --now claude-vm-server`)"
                    };
                    eprintln!(
                        "{} this machine does not run systemd, so nothing was installed. Save the unit above as {place}, or start `claude-vm server` with your init system, a process supervisor, or tmux.",
                        output::paint("note:", Style::Warn)
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            let dir = if *user {
                dirs_config()?.join("systemd/user")
            } else {
                std::path::PathBuf::from("/etc/systemd/system")
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join("claude-vm-server.service");
            claude_vm_store::write_file_atomic(&path, unit.as_bytes(), 0o644)
                .with_context(|| format!("writing {}", path.display()))?;
            let scope: &[&str] = if *user { &["--user"] } else { &[] };
            for args in [
                &["daemon-reload"][..],
                &["enable", "--now", "claude-vm-server"][..],
            ] {
                let status = std::process::Command::new("systemctl")
                    .args(scope)
                    .args(args)
                    .status()
                    .context("running systemctl")?;
                if !status.success() {
                    bail!(
                        "`systemctl {} {}` failed; the unit is in {}",
                        scope.join(" "),
                        args.join(" "),
                        path.display()
                    );
                }
            }
            eprintln!(
                "{} installed {} and started it; `claude-vm server status` tells whether it runs",
                output::paint("✓", Style::Good),
                path.display()
            );
            if *user {
                eprintln!(
                    "  to keep it running while you are logged out: `loginctl enable-linger $USER`"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(program))
        .find(|p| p.is_file())
}

fn dirs_config() -> Result<std::path::PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Ok(x.into());
    }
    let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?;
    Ok(std::path::PathBuf::from(home).join(".config"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_and_the_qr_code() {
        assert_eq!(parse_listen("7878").unwrap().to_string(), "127.0.0.1:7878");
        assert_eq!(parse_listen(":7878").unwrap().to_string(), "0.0.0.0:7878");
        assert_eq!(
            parse_listen("[::1]:9000").unwrap().to_string(),
            "[::1]:9000"
        );
        assert!(parse_listen("not an address").is_err());
        assert!(parse_listen("127.0.0.1:99999").is_err());
        let code = qr("http://127.0.0.1:7878/login?code=abc");
        let rows: Vec<&str> = code.lines().collect();
        assert!(rows.len() > 10, "{code}");
        assert!(
            rows.iter()
                .all(|r| r.chars().count() == rows[0].chars().count())
        );
        assert!(code.contains('▄') || code.contains('▀'), "{code}");
    }
}
