//! The `ssh` provider end to end: a real OpenSSH server (started here, on a free loopback
//! port, with its own host key and authorized keys) plays the remote host and drives the
//! local Docker engine; the real binary talks to it through the system `ssh` client.

mod common;

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use claude_vm_testkit::{Script, ScriptedModel};
use common::chat::{ctx_with_claude, git_project};
use common::{Ctx, MANIFEST, dexec, local_manifest, sample_project};

/// A throwaway OpenSSH server for root on 127.0.0.1. Its sessions see
/// `XDG_CACHE_HOME=<dir>/cache`, so what claude-vm installs on "the host" stays in the
/// test's folder. Stopped (with every process it started) when dropped.
struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[track_caller]
fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "claude-vm-test",
            "-f",
        ])
        .arg(path)
        .output()
        .expect("ssh-keygen runs (apt package openssh-client; scripts/test-deps.sh installs it)");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Sshd {
    fn start() -> Sshd {
        Self::start_with("")
    }

    /// `env` (`NAME=value ...`) is added to what sessions see.
    fn start_with(env: &str) -> Sshd {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd is missing: install openssh-server (scripts/test-deps.sh does)"
        );
        // sshd refuses to start without its privilege separation folder.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd (the tests run as root)");
        let dir = tempfile::Builder::new()
            .prefix("cvm-sshd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("user_key"));
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        std::fs::create_dir_all(d.join("cache")).unwrap();
        let port = free_port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nPidFile none\n\
                 SetEnv XDG_CACHE_HOME={d}/cache {env}\n",
                d = d.display()
            ),
        )
        .unwrap();
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {}\n", key.join(" ")),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        let mut sshd = Sshd { child, dir, port };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = sshd.child.try_wait() {
                panic!("sshd exited ({status}):\n{}", sshd.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "sshd did not listen on port {port}:\n{}",
                sshd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("sshd.log")).unwrap_or_default()
    }

    /// The `--option`s of a provider for this server.
    fn options(&self) -> Vec<String> {
        vec![
            "host=127.0.0.1".to_owned(),
            format!("port={}", self.port),
            "user=root".to_owned(),
            format!("identity={}", self.path("user_key").display()),
            format!("known_hosts={}", self.path("known_hosts").display()),
        ]
    }

    /// Where the host keeps the claude-vm binaries it was given.
    fn bin_dir(&self) -> PathBuf {
        self.path("cache/claude-vm/bin")
    }

    /// The installed binaries (not the verification markers).
    fn installed(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.bin_dir()) else {
            return Vec::new();
        };
        let mut found: Vec<PathBuf> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with("claude-vm-") && !name.ends_with(".verified")
            })
            .collect();
        found.sort();
        found
    }
}

/// Every process descending from `root`, found through /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
            && let Some(ppid) = rest.split_whitespace().nth(1)
            && let Ok(ppid) = ppid.parse::<u32>()
        {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // The listener, then the per-connection processes it forked (which end the
        // client's master connections and the commands they ran).
        let children = descendants(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in children {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// `provider add NAME --type ssh` with the server's options and `extra` ones.
fn add_provider(ctx: &Ctx, sshd: &Sshd, name: &str, extra: &[&str]) -> common::Run {
    let mut args = vec![
        "provider".to_owned(),
        "add".to_owned(),
        name.to_owned(),
        "--type".to_owned(),
        "ssh".to_owned(),
    ];
    for o in sshd
        .options()
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
    {
        args.push("--option".to_owned());
        args.push(o.to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ctx.run(&args)
}

/// The options of `sshd` with one replaced.
fn with_option(sshd: &Sshd, key: &str, value: &str) -> Vec<String> {
    let mut opts: Vec<String> = sshd
        .options()
        .into_iter()
        .filter(|o| !o.starts_with(&format!("{key}=")))
        .collect();
    opts.push(format!("{key}={value}"));
    opts
}

fn add_with(ctx: &Ctx, name: &str, options: &[String]) -> common::Run {
    let mut args = vec!["provider", "add", name, "--type", "ssh"];
    for o in options {
        args.push("--option");
        args.push(o);
    }
    ctx.run(&args)
}

#[track_caller]
fn first_error(run: &common::Run) -> String {
    run.stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{}", run.stderr))
        .to_owned()
}

#[test]
fn a_workspace_on_an_ssh_host_lives_its_whole_life_over_ssh() {
    let sshd = Sshd::start();
    let ctx = Ctx::new();

    // Adding the provider logs in, checks the host and installs claude-vm there, verified.
    let added = add_provider(&ctx, &sshd, "box", &[]).ok();
    assert!(
        added.stderr.contains("added provider box (ssh)"),
        "{}",
        added.stderr
    );
    let installed = sshd.installed();
    assert_eq!(installed.len(), 1, "{installed:?}");
    assert_eq!(sha256(&installed[0]), sha256(&ctx.bin));
    let version = env!("CARGO_PKG_VERSION");
    let name = installed[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with(&format!("claude-vm-{version}-")), "{name}");
    let first_install = std::fs::metadata(&installed[0]).unwrap();
    let listed = ctx.run(&["provider", "list", "--json"]).ok().json();
    let box_view = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "box")
        .unwrap()
        .clone();
    assert_eq!(box_view["type"], "ssh");
    assert_eq!(box_view["options"]["port"], sshd.port.to_string());

    // up from a folder: every byte arrives, over ssh.
    let proj = ctx.path("shop");
    sample_project(&proj);
    let w = ctx.up(&[
        proj.to_str().unwrap(),
        "--provider",
        "box",
        "--name",
        "remote",
    ]);
    let id = w["id"].as_str().unwrap().to_owned();
    assert_eq!(w["status"], "running");
    assert_eq!(w["provider"], "box");
    let inside = dexec(&id, &format!("cd /workspace/shop && {MANIFEST}"));
    assert_eq!(inside, local_manifest(&proj));
    assert!(
        sshd.log().contains("Accepted publickey for root"),
        "the workspace was not made over ssh:\n{}",
        sshd.log()
    );
    let listed = ctx.list();
    assert_eq!(listed[0]["status"], "running");
    assert_eq!(listed[0]["provider"], "box");

    // The binary was not uploaded again.
    let after_up = std::fs::metadata(&installed[0]).unwrap();
    assert_eq!(
        (after_up.ino(), after_up.mtime(), after_up.mtime_nsec()),
        (
            first_install.ino(),
            first_install.mtime(),
            first_install.mtime_nsec()
        )
    );
    assert_eq!(sshd.installed().len(), 1);

    // exec propagates output and exit code; cp both ways; diff sees the changes.
    let out = ctx.run(&[
        "exec",
        "remote",
        "--",
        "sh",
        "-c",
        "echo out-$((6*7)); echo err >&2; exit 7",
    ]);
    assert_eq!(out.code, 7, "{out:?}");
    assert_eq!(out.stdout, "out-42\n");
    assert!(out.stderr.contains("err"), "{}", out.stderr);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(ctx.path("payload.bin"), &payload).unwrap();
    ctx.run(&[
        "cp",
        ctx.path("payload.bin").to_str().unwrap(),
        "remote:payload.bin",
    ])
    .ok();
    ctx.run(&[
        "exec",
        "remote",
        "--",
        "sh",
        "-c",
        "echo changed >> README.md",
    ])
    .ok();
    let back = ctx.path("back");
    std::fs::create_dir_all(&back).unwrap();
    ctx.run(&["cp", "remote:payload.bin", back.to_str().unwrap()])
        .ok();
    assert_eq!(std::fs::read(back.join("payload.bin")).unwrap(), payload);
    let diff = ctx.run(&["diff", "remote", "--stat"]).ok();
    assert!(
        diff.stdout.contains("README.md") && diff.stdout.contains("payload.bin"),
        "{}",
        diff.stdout
    );

    // down, then up resumes with every file intact.
    let before = dexec(&id, &format!("cd /workspace/shop && {MANIFEST}"));
    ctx.run(&["workspace", "down", "remote"]).ok();
    assert_eq!(ctx.list()[0]["status"], "stopped");

    // A damaged binary on the host is found by its checksum and replaced.
    let bin = &installed[0];
    let mut damaged = std::fs::read(bin).unwrap();
    damaged[1000] ^= 0xff;
    std::fs::write(bin, &damaged).unwrap();
    let again = ctx
        .run(&["workspace", "up", "remote", "--json"])
        .ok()
        .json();
    assert_eq!(again["action"], "resumed");
    assert_eq!(sha256(bin), sha256(&ctx.bin), "the damaged binary stayed");
    assert_eq!(sshd.installed().len(), 1);
    let after = dexec(&id, &format!("cd /workspace/shop && {MANIFEST}"));
    assert_eq!(before, after, "files changed across down/up");
    let inside_sum = ctx
        .run(&["exec", "remote", "--", "sha256sum", "payload.bin"])
        .ok()
        .stdout;
    assert_eq!(
        inside_sum.split_whitespace().next(),
        Some(sha256(&ctx.path("payload.bin")).as_str())
    );

    // delete leaves nothing on the Docker engine (and keeps a final backup, taken over
    // ssh), from which the workspace comes back on the same host or moves to another.
    ctx.run(&["workspace", "delete", "remote", "-y"]).ok();
    assert!(ctx.list().is_empty());
    for (name, provider) in [("back-on-box", "box"), ("moved-here", "docker")] {
        let w = ctx
            .run(&[
                "workspace",
                "restore",
                "remote",
                "--name",
                name,
                "--provider",
                provider,
                "--json",
            ])
            .ok()
            .json();
        assert_eq!(w["workspace"]["provider"], provider, "{w}");
        let restored = w["workspace"]["id"].as_str().unwrap().to_owned();
        assert_eq!(
            dexec(&restored, &format!("cd /workspace/shop && {MANIFEST}")),
            before,
            "{name}"
        );
        ctx.run(&["workspace", "delete", name, "-y", "--purge"])
            .ok();
    }
    ctx.run(&["workspace", "delete", "remote", "-y", "--purge"])
        .ok();
    assert!(ctx.list().is_empty());
    assert!(ctx.docker_debris().is_empty(), "{:?}", ctx.docker_debris());
    let left = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=dev.claude-vm.workspace={id}"),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty());
}

#[test]
fn a_conversation_with_claude_code_runs_on_an_ssh_host() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "write the note"},
               "response": [{"text": "Writing it."},
                            {"tool_use": {"name": "Write", "input": {"file_path": "/workspace/proj/note.txt", "content": "written over ssh\n"}}}]},
              {"match": {"after_tool_result_contains": "note.txt"}, "response": [{"text": "The note is written."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let sshd = Sshd::start();
    let ctx = ctx_with_claude(&model.url(), "sk-test-ssh");
    // The workspace shares the host's network to reach the scripted model on loopback.
    add_provider(&ctx, &sshd, "box", &["network=host"]).ok();
    let proj = git_project(&ctx);
    let w = ctx.up(&[
        proj.to_str().unwrap(),
        "--provider",
        "box",
        "--name",
        "talk",
    ]);
    assert_eq!(w["provider"], "box");
    let conv = ctx.run(&["new-chat", "talk"]).ok().stdout.trim().to_owned();
    assert_eq!(conv.len(), 12, "{conv}");
    let answer = ctx
        .run(&[
            "chat",
            "send",
            "-c",
            &conv,
            "please write the note",
            "--wait",
        ])
        .ok();
    assert_eq!(answer.stdout.trim(), "The note is written.");
    let id = w["id"].as_str().unwrap();
    assert_eq!(
        dexec(id, "cat /workspace/proj/note.txt"),
        "written over ssh\n"
    );
    let log = ctx.run(&["chat", "log", "-c", &conv]).ok();
    assert!(
        log.stdout.contains("⚙ Write(/workspace/proj/note.txt)"),
        "{}",
        log.stdout
    );
    let list = ctx.run(&["chat", "list", "--json"]).ok().json();
    assert_eq!(list[0]["status"], "idle", "{list:#}");
    assert!(!model.requests().is_empty());
}

#[test]
fn ssh_failures_are_one_clear_error_with_a_remedy() {
    let sshd = Sshd::start();
    let ctx = Ctx::new();
    let port = sshd.port.to_string();

    // Nothing listens on the port.
    let closed = free_port().to_string();
    let out = add_with(&ctx, "closed", &with_option(&sshd, "port", &closed)).fails();
    let err = first_error(&out);
    assert!(
        err.contains("cannot reach root@127.0.0.1:") && err.contains("Connection refused"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: check the host name and port")
            && out.stderr.contains(&format!("ssh -p {closed} -l root")),
        "{}",
        out.stderr
    );

    // A key the host does not accept.
    let stranger = sshd.path("stranger_key");
    keygen(&stranger);
    let out = add_with(
        &ctx,
        "stranger",
        &with_option(&sshd, "identity", stranger.to_str().unwrap()),
    )
    .fails();
    let err = first_error(&out);
    assert!(
        err.contains(&format!("ssh could not log in to root@127.0.0.1:{port}"))
            && err.contains("Permission denied"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("hint: claude-vm never asks for a password"),
        "{}",
        out.stderr
    );

    // A host whose key we do not know: never accepted silently.
    let empty = sshd.path("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let out = add_with(
        &ctx,
        "unknown",
        &with_option(&sshd, "known_hosts", empty.to_str().unwrap()),
    )
    .fails();
    assert!(
        first_error(&out).contains(&format!(
            "the ssh host key of root@127.0.0.1:{port} is not known"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("claude-vm never accepts host keys by itself"),
        "{}",
        out.stderr
    );
    assert_eq!(
        std::fs::read_to_string(&empty).unwrap(),
        "",
        "key was added"
    );

    // A host whose key changed.
    let impostor = sshd.path("impostor_key");
    keygen(&impostor);
    let fake = std::fs::read_to_string(sshd.path("impostor_key.pub")).unwrap();
    let fake: Vec<&str> = fake.split_whitespace().take(2).collect();
    let changed = sshd.path("changed_known_hosts");
    std::fs::write(&changed, format!("[127.0.0.1]:{port} {}\n", fake.join(" "))).unwrap();
    let out = add_with(
        &ctx,
        "changed",
        &with_option(&sshd, "known_hosts", changed.to_str().unwrap()),
    )
    .fails();
    assert!(first_error(&out).contains("has CHANGED"), "{}", out.stderr);
    assert!(out.stderr.contains("ssh-keygen -R"), "{}", out.stderr);

    // No Docker on the host.
    let out = add_provider(&ctx, &sshd, "nodocker", &["docker_socket=/nonexistent"]).fails();
    assert!(
        first_error(&out).contains(&format!(
            "no usable Docker engine on root@127.0.0.1:{port}: the socket /nonexistent does not exist"
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("docker_socket="), "{}", out.stderr);

    // A host option is required; none of the failed providers was kept.
    let out = ctx
        .run(&["provider", "add", "nohost", "--type", "ssh"])
        .fails();
    assert!(
        out.stderr
            .contains("ssh providers need the option \"host\""),
        "{}",
        out.stderr
    );
    let names: Vec<String> = ctx
        .run(&["provider", "list", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["docker"]);

    // --no-check keeps it; the first use reports the same error.
    let mut args = vec!["provider", "add", "later", "--type", "ssh", "--no-check"];
    let opts = with_option(&sshd, "port", &closed);
    for o in &opts {
        args.push("--option");
        args.push(o);
    }
    ctx.run(&args).ok();
    let proj = ctx.path("p");
    std::fs::create_dir_all(&proj).unwrap();
    let out = ctx
        .run(&[
            "workspace",
            "up",
            proj.to_str().unwrap(),
            "--provider",
            "later",
        ])
        .fails();
    assert!(
        first_error(&out).contains("Connection refused"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: check the host name and port"),
        "{}",
        out.stderr
    );
    assert!(ctx.list().is_empty(), "nothing recorded");

    // A workspace whose host goes away: list answers at once, with the ssh remedy.
    add_provider(&ctx, &sshd, "box", &[]).ok();
    ctx.up(&[
        proj.to_str().unwrap(),
        "--provider",
        "box",
        "--name",
        "gone",
    ]);
    ctx.run(&[
        "provider",
        "set-options",
        "box",
        "--option",
        &format!("port={closed}"),
    ])
    .ok();
    let start = Instant::now();
    let listed = ctx.run(&["workspace", "list", "--json"]).fails();
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(listed.json()[0]["status"], "unknown");
    assert!(
        listed.stderr.contains("provider box could not be reached")
            && listed.stderr.contains("Connection refused")
            && listed.stderr.contains("hint: check the host name and port"),
        "{}",
        listed.stderr
    );
    let down = ctx.run(&["workspace", "down", "gone"]).fails();
    assert!(
        first_error(&down).contains("cannot reach root@127.0.0.1:"),
        "{}",
        down.stderr
    );
    ctx.run(&[
        "provider",
        "set-options",
        "box",
        "--option",
        &format!("port={port}"),
    ])
    .ok();
    assert_eq!(ctx.list()[0]["status"], "running");
}

#[test]
fn a_host_of_another_architecture_is_refused() {
    // The host's `uname -m` says aarch64 (on an aarch64 machine, x86_64).
    let other = if std::env::consts::ARCH == "aarch64" {
        "x86_64"
    } else {
        "aarch64"
    };
    let fake = tempfile::Builder::new()
        .prefix("cvm-fakebin-")
        .tempdir()
        .unwrap();
    let uname = fake.path().join("uname");
    std::fs::write(&uname, format!("#!/bin/sh\necho {other}\n")).unwrap();
    std::fs::set_permissions(&uname, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sshd = Sshd::start_with(&format!(
        "PATH={}:/usr/local/bin:/usr/bin:/bin",
        fake.path().display()
    ));
    let ctx = Ctx::new();
    let out = add_provider(&ctx, &sshd, "arm", &[]).fails();
    assert!(
        first_error(&out).contains(&format!(
            "is a {other} machine, but this claude-vm is built for {}",
            std::env::consts::ARCH
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: claude-vm copies itself"),
        "{}",
        out.stderr
    );
    assert!(sshd.installed().is_empty(), "{:?}", sshd.installed());
}

#[test]
fn a_devcontainer_is_built_on_the_ssh_host_with_its_feature_and_commands() {
    let sshd = Sshd::start();
    let ctx = Ctx::new();
    add_provider(&ctx, &sshd, "box", &[]).ok();
    let nonce = format!("{:016x}", rand::random::<u64>());
    let proj = ctx.path("remote-dc");
    let write = |rel: &str, text: &str| {
        let p = proj.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("README.md", "# remote\n");
    write(
        ".devcontainer/Dockerfile",
        &format!(
            "FROM {}\nARG NONCE\nRUN echo \"built on the host $NONCE\" > /built\n",
            common::test_image()
        ),
    );
    write(
        ".devcontainer/tool/devcontainer-feature.json",
        r#"{"id": "tool", "version": "1.0.0", "options": {"flavour": {"type": "string", "default": "plain"}}}"#,
    );
    write(
        ".devcontainer/tool/install.sh",
        "#!/bin/sh\nset -e\necho \"tool $FLAVOUR\" > /tool\n",
    );
    write(
        ".devcontainer/devcontainer.json",
        &format!(
            r#"{{
    "build": {{"dockerfile": "Dockerfile", "args": {{"NONCE": "{nonce}"}}}},
    "features": {{"./tool": {{"flavour": "spicy"}}}},
    "postCreateCommand": "cat /built /tool > made.txt"
}}"#
        ),
    );
    let up = ctx
        .run(&[
            "workspace",
            "up",
            "--json",
            proj.to_str().unwrap(),
            "--provider",
            "box",
        ])
        .ok();
    let image = up.json()["workspace"]["image"].as_str().unwrap().to_owned();
    // The images are the host's (the same engine here): removed when the test ends.
    let _cleanup = scopeguard(&image);
    // The build's own output, streamed back over ssh.
    assert!(up.stderr.contains("RUN echo"), "{}", up.stderr);
    assert!(
        sshd.log().contains("Accepted publickey for root"),
        "{}",
        sshd.log()
    );
    let id = up.json()["workspace"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        dexec(&id, "cat /workspace/remote-dc/made.txt"),
        format!("built on the host {nonce}\ntool spicy\n")
    );
    // Up again: the image built before is reused.
    ctx.run(&["workspace", "delete", &id, "-y"]).ok();
    let again = ctx
        .run(&[
            "workspace",
            "up",
            proj.to_str().unwrap(),
            "--provider",
            "box",
        ])
        .ok();
    assert!(
        again.stderr.contains("using the image built before"),
        "{}",
        again.stderr
    );
}

/// Removes the image `tag` and its `-base` when dropped.
fn scopeguard(tag: &str) -> impl Drop {
    struct Rm(String);
    impl Drop for Rm {
        fn drop(&mut self) {
            for t in [self.0.clone(), format!("{}-base", self.0)] {
                let _ = Command::new("docker").args(["rmi", "-f", &t]).output();
            }
        }
    }
    Rm(tag.to_owned())
}
