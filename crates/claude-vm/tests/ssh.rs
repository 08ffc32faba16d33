//! The workspace's SSH server end to end: the real OpenSSH client (ssh, scp, sftp, rsync,
//! git) through the generated ssh_config, and `claude-vm ssh`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::chat::Tmux;
use common::{Ctx, Run, dexec};

/// A claude-vm home, a separate user home (`~/.ssh`), and one running workspace.
struct Env {
    ctx: Ctx,
    user_home: tempfile::TempDir,
    id: String,
    name: String,
}

impl Env {
    fn new(name: &str) -> Env {
        let ctx = Ctx::new();
        let p = ctx.path(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("hello.txt"), "hello\n").unwrap();
        common::git(&p, &["init", "-q"]);
        common::git(&p, &["add", "."]);
        common::git(&p, &["commit", "-q", "-m", "initial"]);
        let w = ctx.up(&[p.to_str().unwrap(), "--name", name]);
        let user_home = tempfile::Builder::new()
            .prefix("cvm-userhome-")
            .tempdir()
            .unwrap();
        let env = Env {
            ctx,
            user_home,
            id: w["id"].as_str().unwrap().to_owned(),
            name: name.to_owned(),
        };
        env.cvm(&["ssh-config"]).ok();
        env
    }

    fn host(&self) -> String {
        format!("{}.claude-vm", self.name)
    }

    fn config(&self) -> PathBuf {
        self.ctx.home.path().join("ssh_config")
    }

    /// claude-vm with this home and HOME.
    fn cvm(&self, args: &[&str]) -> Run {
        let out = self
            .ctx
            .command(args)
            .env("HOME", self.user_home.path())
            .output()
            .unwrap();
        run(out)
    }

    /// An OpenSSH tool (`ssh`, `scp`, `sftp`) reading only the generated config.
    fn tool(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.arg("-F")
            .arg(self.config())
            .args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=30"])
            .env("HOME", self.user_home.path())
            .env("CLAUDE_VM_HOME", self.ctx.home.path())
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null());
        c
    }

    fn ssh(&self, script: &str) -> Run {
        run(self
            .tool("ssh")
            .arg(self.host())
            .arg(script)
            .output()
            .unwrap())
    }
}

fn run(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn random_file(path: &Path, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ len as u64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 24) as u8;
    }
    std::fs::write(path, &data).unwrap();
    data
}

#[test]
fn openssh_exec_copies_git_and_forwarding() {
    let env = Env::new("sshw");
    // the host key was pinned over the link, for the name and the id
    let known = std::fs::read_to_string(env.ctx.home.path().join("known_hosts")).unwrap();
    assert!(
        known.starts_with(&format!("sshw.claude-vm,{}.claude-vm ssh-ed25519 ", env.id)),
        "{known}"
    );
    // no --install: nothing outside the claude-vm home
    assert!(!env.user_home.path().join(".ssh").exists());

    // exec: output, stderr, exit code, user and folder
    let r = env.ssh("echo out; echo err >&2; id -un; pwd; exit 3");
    assert_eq!(r.code, 3, "{r:?}");
    assert_eq!(r.stdout, "out\nagent\n/workspace/sshw\n");
    assert!(r.stderr.contains("err"), "{r:?}");
    // by id too, and as root
    let r = run(env
        .tool("ssh")
        .args(["-l", "root", &format!("{}.claude-vm", env.id), "id -u"])
        .output()
        .unwrap())
    .ok();
    assert_eq!(r.stdout, "0\n");
    // stdin reaches the command and EOF ends it
    let mut child = env
        .tool("ssh")
        .arg(env.host())
        .arg("wc -c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&vec![b'x'; 300_000]).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "300000");

    // scp both ways, byte-exact, and a directory with -r
    let work = env.ctx.work.path();
    let data = random_file(&work.join("big.bin"), 4 * 1024 * 1024 + 17);
    let dest = format!("{}:big.bin", env.host());
    run(env
        .tool("scp")
        .arg(work.join("big.bin"))
        .arg(&dest)
        .output()
        .unwrap())
    .ok();
    run(env
        .tool("scp")
        .arg(&dest)
        .arg(work.join("back.bin"))
        .output()
        .unwrap())
    .ok();
    assert!(std::fs::read(work.join("back.bin")).unwrap() == data);
    let sums = dexec(&env.id, "sha256sum /workspace/sshw/big.bin");
    assert!(sums.starts_with(&sha256(&work.join("big.bin"))), "{sums}");
    std::fs::create_dir_all(work.join("tree/sub")).unwrap();
    std::fs::write(work.join("tree/sub/f.txt"), "in a tree\n").unwrap();
    std::fs::write(work.join("tree/top.txt"), "top\n").unwrap();
    run(env
        .tool("scp")
        .arg("-r")
        .arg(work.join("tree"))
        .arg(format!("{}:/workspace/sshw/", env.host()))
        .output()
        .unwrap())
    .ok();
    assert_eq!(
        dexec(
            &env.id,
            "cat /workspace/sshw/tree/sub/f.txt /workspace/sshw/tree/top.txt; stat -c %U /workspace/sshw/tree/top.txt"
        ),
        "in a tree\ntop\nagent\n"
    );

    // sftp: put, get, ls, mkdir, rename, rm
    let batch = work.join("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir up\nput {} up/s.bin\nrename up/s.bin up/t.bin\nget up/t.bin {}\nls -l up\nrm up/t.bin\nrmdir up\n",
            work.join("big.bin").display(),
            work.join("sftp.bin").display()
        ),
    )
    .unwrap();
    let r = run(env
        .tool("sftp")
        .arg("-b")
        .arg(&batch)
        .arg(env.host())
        .output()
        .unwrap())
    .ok();
    assert!(r.stdout.contains("t.bin"), "{r:?}");
    assert!(std::fs::read(work.join("sftp.bin")).unwrap() == data);
    assert_eq!(
        dexec(
            &env.id,
            "test -e /workspace/sshw/up && echo still there || echo gone"
        ),
        "gone\n"
    );

    // rsync over ssh
    let rsh = format!("ssh -F {} -o BatchMode=yes", env.config().display());
    let out = Command::new("rsync")
        .args(["-a", "-e", &rsh])
        .arg(format!("{}/", work.join("tree").display()))
        .arg(format!("{}:synced/", env.host()))
        .env("HOME", env.user_home.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        dexec(&env.id, "cat /workspace/sshw/synced/sub/f.txt"),
        "in a tree\n"
    );

    // git fetch of a commit made in the workspace
    env.ssh("git -c user.email=a@b -c user.name=A commit -q --allow-empty -m 'made in the workspace' && git rev-parse HEAD")
        .ok();
    let head = env.ssh("git rev-parse HEAD").ok().stdout.trim().to_owned();
    let local = env.ctx.path("sshw");
    let out = Command::new("git")
        .arg("-C")
        .arg(&local)
        .args([
            "fetch",
            "-q",
            &format!("{}:/workspace/sshw", env.host()),
            "HEAD",
        ])
        .env("GIT_SSH_COMMAND", &rsh)
        .env("HOME", env.user_home.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fetched = Command::new("git")
        .arg("-C")
        .arg(&local)
        .args(["log", "-1", "--format=%H %s", "FETCH_HEAD"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&fetched.stdout).trim(),
        format!("{head} made in the workspace")
    );

    // -L: a server started in the workspace, reached from here
    env.ssh("mkdir -p /tmp/www && echo served-from-the-workspace > /tmp/www/index.html && (cd /tmp/www && setsid python3 -m http.server 18931 </dev/null >/dev/null 2>&1 &)")
        .ok();
    let port = free_port();
    let mut tunnel = env
        .tool("ssh")
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-L"])
        .arg(format!("127.0.0.1:{port}:127.0.0.1:18931"))
        .arg(env.host())
        .spawn()
        .unwrap();
    let body = (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            http_get(port).filter(|b| b.contains("served"))
        })
        .unwrap_or_default();
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    assert!(body.contains("served-from-the-workspace"), "{body:?}");

    // agent forwarding: ssh -A with a test agent; ssh-add -l inside lists its key
    let agent_dir = tempfile::tempdir().unwrap();
    let sock = agent_dir.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..50 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let key = agent_dir.path().join("k");
    assert!(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "forwarded-test-key",
                "-f"
            ])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("ssh-add")
            .arg("-q")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &sock)
            .status()
            .unwrap()
            .success()
    );
    let r = run(env
        .tool("ssh")
        .arg("-A")
        .arg(env.host())
        .arg("ssh-add -l; stat -c '%U %a' \"$SSH_AUTH_SOCK\"")
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap());
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("forwarded-test-key"), "{r:?}");
    assert!(r.stdout.contains("agent 600"), "{r:?}");
    // without -A there is no agent
    let r = env.ssh("echo \"[$SSH_AUTH_SOCK]\"").ok();
    assert_eq!(r.stdout, "[]\n");
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn interactive_sessions_openssh_and_claude_vm_ssh() {
    let env = Env::new("sshi");
    let vars = format!(
        "env HOME={} CLAUDE_VM_HOME={} NO_COLOR=1",
        env.user_home.path().display(),
        env.ctx.home.path().display()
    );
    // ssh -t under tmux: type, see the output, resize, exit with a code
    let tmux = Tmux::start(
        "ssh-t",
        100,
        30,
        &format!(
            "{vars} ssh -F {} -t {} ; echo ssh-exit=$?; sleep 60",
            env.config().display(),
            env.host()
        ),
    );
    tmux.wait_for("$", Duration::from_secs(30));
    tmux.send("echo $((6*7))-answer; stty size; tty");
    // `tty` prints last: once its answer shows, the others have too.
    let screen = tmux.wait_for("/dev/pts/", Duration::from_secs(20));
    assert!(screen.contains("42-answer"), "{screen}");
    assert!(
        screen.contains("30 100") || screen.contains("29 100"),
        "{screen}"
    );
    assert!(screen.contains("/dev/pts/"), "{screen}");
    tmux.run(&["resize-window", "-t", &tmux.name, "-x", "120", "-y", "40"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux.send("clear; stty size | sed 's/ /x/'");
    let screen = tmux.wait_for("x120", Duration::from_secs(20));
    assert!(
        screen.contains("40x120") || screen.contains("39x120"),
        "{screen}"
    );
    tmux.send("exit 4");
    tmux.wait_for("ssh-exit=4", Duration::from_secs(20));
    drop(tmux);

    // claude-vm ssh: a shell with a terminal under tmux
    let tmux = Tmux::start(
        "cvm-ssh",
        90,
        25,
        &format!(
            "{vars} {} ssh {} ; echo cvm-exit=$?; sleep 60",
            env.ctx.bin.display(),
            env.name
        ),
    );
    tmux.wait_for("$", Duration::from_secs(30));
    tmux.send("echo $((7*6))-from-cvm; id -un | sed 's/^/user=/'");
    let screen = tmux.wait_for("user=agent", Duration::from_secs(20));
    assert!(screen.contains("42-from-cvm"), "{screen}");
    tmux.run(&["resize-window", "-t", &tmux.name, "-x", "110", "-y", "33"]);
    std::thread::sleep(Duration::from_millis(500));
    tmux.send("clear; stty size | sed 's/ /x/'");
    let screen = tmux.wait_for("x110", Duration::from_secs(20));
    assert!(
        screen.contains("33x110") || screen.contains("32x110"),
        "{screen}"
    );
    tmux.send("exit 6");
    tmux.wait_for("cvm-exit=6", Duration::from_secs(20));
    drop(tmux);

    // claude-vm ssh with a command: output, stderr, exit code; as root; by host name
    let r = env.cvm(&[
        "ssh", "sshi", "--", "echo", "hi;", "echo", "oops", ">&2;", "exit", "9",
    ]);
    assert_eq!((r.code, r.stdout.as_str()), (9, "hi\n"), "{r:?}");
    assert!(r.stderr.contains("oops"), "{r:?}");
    let r = env
        .cvm(&["ssh", "--user", "root", "sshi.claude-vm", "--", "id", "-u"])
        .ok();
    assert_eq!(r.stdout, "0\n");
    let r = env
        .cvm(&["ssh", "--user", "nobody-here", "sshi", "--", "true"])
        .fails();
    assert!(r.stderr.contains("refused user"), "{r:?}");

    // a stopped workspace: with --no-start a clear error with the way out; without, it is
    // started first, for `claude-vm ssh` and for OpenSSH (through `ssh --stdio`) alike
    env.cvm(&["workspace", "down", "sshi"]).ok();
    let r = env
        .cvm(&["--no-start", "ssh", "sshi", "--", "true"])
        .fails();
    assert!(r.stderr.contains("not running"), "{r:?}");
    assert!(r.stderr.contains("claude-vm workspace up sshi"), "{r:?}");
    let r = env.ssh("echo woke").ok();
    assert_eq!(r.stdout, "woke\n");
    env.cvm(&["workspace", "down", "sshi"]).ok();
    let r = env.cvm(&["ssh", "sshi", "--", "echo", "woke"]).ok();
    assert_eq!(r.stdout, "woke\n");
    assert!(r.stderr.contains("sshi is stopped; starting it"), "{r:?}");
}

#[test]
fn keys_are_checked_both_ways_and_install_is_idempotent() {
    let env = Env::new("sshk");
    env.ssh("true").ok();

    // a key nobody authorised is refused
    let wrong = env.ctx.work.path().join("wrong");
    assert!(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&wrong)
            .status()
            .unwrap()
            .success()
    );
    let generated = std::fs::read_to_string(env.config()).unwrap();
    let only_wrong: String = generated
        .lines()
        .filter(|l| !l.trim_start().starts_with("IdentityFile"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        + &format!(
            "    IdentityFile {}\n    IdentitiesOnly yes\n",
            wrong.display()
        );
    let wrong_cfg = env.ctx.work.path().join("wrong_config");
    std::fs::write(&wrong_cfg, only_wrong).unwrap();
    let r = run(Command::new("ssh")
        .arg("-F")
        .arg(&wrong_cfg)
        .args(["-o", "BatchMode=yes", &env.host(), "true"])
        .env("HOME", env.user_home.path())
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap())
    .fails();
    assert!(r.stderr.contains("Permission denied"), "{r:?}");
    // keys in ~/.ssh/*.pub are accepted (pushed on the next connection)
    std::fs::create_dir_all(env.user_home.path().join(".ssh")).unwrap();
    std::fs::copy(
        wrong.with_extension("pub"),
        env.user_home.path().join(".ssh/mine.pub"),
    )
    .unwrap();
    env.ssh("true").ok();
    run(Command::new("ssh")
        .arg("-F")
        .arg(&wrong_cfg)
        .args(["-o", "BatchMode=yes", &env.host(), "true"])
        .env("HOME", env.user_home.path())
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap())
    .ok();

    // the host key survives a restart of the workspace
    let known = std::fs::read_to_string(env.ctx.home.path().join("known_hosts")).unwrap();
    env.cvm(&["workspace", "down", "sshk"]).ok();
    env.cvm(&["workspace", "up", "sshk"]).ok();
    env.ssh("true").ok();
    assert_eq!(
        std::fs::read_to_string(env.ctx.home.path().join("known_hosts")).unwrap(),
        known
    );
    assert_eq!(
        dexec(
            &env.id,
            "stat -c '%U %a' /workspace/.claude-vm/ssh /workspace/.claude-vm/ssh/host_ed25519_key"
        ),
        "root 700\nroot 600\n"
    );

    // a replaced host key is refused by OpenSSH and by claude-vm ssh, and not re-pinned
    dexec(
        &env.id,
        "rm /workspace/.claude-vm/ssh/host_ed25519_key && kill $(pgrep -f '^/opt/claude-vm/bin/claude-vm agent serve')",
    );
    std::thread::sleep(Duration::from_secs(2));
    let r = env.ssh("echo should-not-run").fails();
    assert!(
        r.stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || r.stderr.contains("Host key verification failed"),
        "{r:?}"
    );
    assert!(!r.stdout.contains("should-not-run"));
    let r = env
        .cvm(&["ssh", "sshk", "--", "echo", "should-not-run"])
        .fails();
    assert!(r.stderr.contains("presents SSH host key"), "{r:?}");
    assert!(r.stderr.contains("hint:"), "{r:?}");
    assert!(!r.stdout.contains("should-not-run"));
    assert_eq!(
        std::fs::read_to_string(env.ctx.home.path().join("known_hosts")).unwrap(),
        known
    );

    // ssh-config --install: one Include line at the top, file 0600, idempotent
    let user_cfg = env.user_home.path().join(".ssh/config");
    assert!(!user_cfg.exists());
    let r = env.cvm(&["ssh-config", "--install", "--json"]).ok();
    assert_eq!(r.json()["include_added"], true, "{r:?}");
    let r = env.cvm(&["ssh-config", "--install", "--json"]).ok();
    assert_eq!(r.json()["include_added"], false, "{r:?}");
    let text = std::fs::read_to_string(&user_cfg).unwrap();
    assert_eq!(text.matches("Include ").count(), 1, "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&user_cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // an existing config keeps its content below the Include
    std::fs::write(&user_cfg, "Host other\n    User me\n").unwrap();
    env.cvm(&["ssh-config", "--install"]).ok();
    let text = std::fs::read_to_string(&user_cfg).unwrap();
    let first = text
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap();
    assert!(first.starts_with("Include "), "{text}");
    assert!(text.ends_with("Host other\n    User me\n"), "{text}");
    // --print shows the block and never suggests turning host key checking off
    let r = env.cvm(&["ssh-config", "--print"]).ok();
    assert!(r.stdout.contains("Host *.claude-vm"));
    assert!(r.stdout.contains("StrictHostKeyChecking yes"));
}

#[test]
fn misbehaving_clients_do_not_hurt_the_daemon() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::new("sshr");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let engine =
            claude_vm_engine::Engine::open(claude_vm_store::Home::at(env.ctx.home.path()), None)
                .unwrap();
        let (_, link) = engine.link("sshr").await.unwrap();
        // garbage after a valid banner: the server closes the connection
        let mut s = link.ssh_stream().await.unwrap();
        s.write_all(b"SSH-2.0-Fuzz_1.0\r\n").await.unwrap();
        let _ = s.write_all(&[0xffu8; 200_000]).await;
        let mut sink = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut sink)).await;
        assert!(ended.is_ok(), "the server kept a garbage connection open");
        // connections abandoned mid-handshake, many at once
        let mut open = Vec::new();
        for _ in 0..30 {
            let mut s = link.ssh_stream().await.unwrap();
            s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await.unwrap();
            open.push(s);
        }
        drop(open);
        // the link and the daemon still answer
        link.activity().await.unwrap();
    });
    assert_eq!(env.ssh("echo alive").ok().stdout, "alive\n");

    // a client killed mid-command: its command is killed too
    let mut child = env
        .tool("ssh")
        .arg(env.host())
        .arg("sleep 4242")
        .spawn()
        .unwrap();
    let started = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        dexec(&env.id, "pgrep -x sleep -a | grep -c 4242 || true").trim() != "0"
    });
    assert!(started, "the command never started");
    child.kill().unwrap();
    let _ = child.wait();
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        dexec(&env.id, "pgrep -x sleep -a | grep -c 4242 || true").trim() == "0"
    });
    assert!(gone, "the command outlived its client");
    assert_eq!(env.ssh("echo still-alive").ok().stdout, "still-alive\n");
}
