//! The `devpod` provider end to end, with a provider.yaml written here after DevPod's
//! documented contract (options, a checksum-verified binary, `exec` init/create/delete/
//! start/stop/status/command).
//!
//! STAND-IN: no cloud can be reached from here, so the "machines" are containers of the
//! local Docker engine made from the test base image plus OpenSSH's server
//! (scripts/machine-image.sh), with the engine's socket mounted in them (what a cloud VM
//! with Docker installed looks like to claude-vm). The provider's binary is a shell script:
//! `create` makes a key for the machine and starts such a container running `sshd` that
//! lets in only that key, `stop`/`start`/`delete` map to `docker stop/start/rm`, `status`
//! to `docker inspect`, and `command` runs `$COMMAND` on it with real `ssh` to the
//! container's address, as published providers reach their VMs. Its `delete` also removes
//! what is labelled as on the machine: a deleted VM's disk goes with it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use claude_vm_testkit::{Script, ScriptedModel};
use common::chat::{Tmux, ctx_with_claude, git_project};
use common::{Ctx, test_image};
use sha2::{Digest, Sha256};

/// The machine tool: one sub-command per `exec` entry of the provider.yaml.
const TOOL: &str = r#"#!/bin/sh
set -e
name="$MACHINE_PREFIX-$MACHINE_ID"
echo "$1 ${MACHINE_ID:-}" >> "$PROVIDER_FOLDER/calls.log"
case "$1" in
  init)
    [ -n "$SECRET_TOKEN" ] || { echo "SECRET_TOKEN is empty" >&2; exit 1; }
    [ "$SECRET_TOKEN" != "wrong" ] || { echo "the token was refused by the cloud" >&2; exit 3; }
    docker version >/dev/null ;;
  create)
    [ "$MACHINE_PREFIX" != "fail" ] || { echo "quota exceeded: no more machines in region $REGION" >&2; exit 2; }
    # A key made for this machine; its sshd lets in only that key, as root.
    mkdir -p "$MACHINE_FOLDER"
    [ -f "$MACHINE_FOLDER/key" ] || ssh-keygen -q -t ed25519 -N "" -C "$name" -f "$MACHINE_FOLDER/key"
    docker run -d --name "$name" --label "dev.claude-vm.test-machine=$MACHINE_PREFIX" \
      -v /var/run/docker.sock:/var/run/docker.sock \
      -v "$MACHINE_FOLDER/key.pub:/root/.ssh/authorized_keys:ro" \
      "$MACHINE_IMAGE" /usr/sbin/sshd -D -e >/dev/null
    sleep "$CREATE_DELAY" ;;
  delete)
    docker rm -f "$name" >/dev/null 2>&1 || true
    for c in $(docker ps -aq --filter "label=dev.claude-vm.machine=$MACHINE_ID"); do docker rm -f "$c" >/dev/null; done
    for v in $(docker volume ls -q --filter "label=dev.claude-vm.machine=$MACHINE_ID"); do docker volume rm -f "$v" >/dev/null; done ;;
  start) docker start "$name" >/dev/null ;;
  stop)
    # A VM that stops stops what runs on it.
    for c in $(docker ps -q --filter "label=dev.claude-vm.machine=$MACHINE_ID"); do docker stop -t 5 "$c" >/dev/null; done
    docker stop -t 5 "$name" >/dev/null ;;
  status)
    if [ "$MACHINE_PREFIX" = "garbage" ]; then echo "I am a teapot"; exit 0; fi
    s=$(docker inspect -f '{{.State.Status}}' "$name" 2>/dev/null) || { echo NotFound; exit 0; }
    case "$s" in running) echo Running ;; exited|created) echo Stopped ;; *) echo Busy ;; esac ;;
  command)
    [ "$MACHINE_PREFIX" != "mute" ] || { sleep 1; echo "connection timed out" >&2; exit 255; }
    ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$name")
    exec ssh -q -T -i "$MACHINE_FOLDER/key" -o BatchMode=yes -o ConnectTimeout=5 \
      -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
      "root@$ip" "$COMMAND" ;;
  *) echo "unknown command $1" >&2; exit 1 ;;
esac
"#;

/// The stand-in machines' image: the test image with OpenSSH's server
/// (scripts/machine-image.sh, run by the test command).
fn machine_image() -> String {
    let tag = std::env::var("CLAUDE_VM_TEST_MACHINE_IMAGE")
        .unwrap_or_else(|_| "claude-vm-test-machine:bookworm-4".to_owned());
    let present = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &tag])
        .output()
        .unwrap();
    assert!(
        present.status.success(),
        "the image {tag} is missing: run scripts/machine-image.sh (scripts/test-deps.sh does)"
    );
    tag
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A provider.yaml with the tool as its binary (`checksum` None: the tool's real one).
fn provider_yaml(dir: &Path, checksum: Option<&str>) -> PathBuf {
    provider_yaml_at(dir, checksum, "./machine-tool.sh")
}

/// The same, its binary at `binary` (a path relative to the provider.yaml, or a URL).
fn provider_yaml_at(dir: &Path, checksum: Option<&str>, binary: &str) -> PathBuf {
    let tool = dir.join("machine-tool.sh");
    std::fs::write(&tool, TOOL).unwrap();
    let sum = checksum.map_or_else(|| sha256(TOOL.as_bytes()), str::to_owned);
    let yaml = format!(
        r#"name: test-cloud
version: v0.1.0
description: containers playing cloud machines
icon: https://example.invalid/icon.svg
optionGroups:
  - name: Machine
    options: [MACHINE_IMAGE, REGION]
    defaultVisible: true
options:
  MACHINE_PREFIX:
    description: a name every machine starts with
    required: true
  SECRET_TOKEN:
    description: the cloud's API token
    required: true
    password: true
  REGION:
    description: where machines are made
    default: lab-1
    suggestions: [lab-1, lab-2]
  MACHINE_IMAGE:
    description: the machines' image
    default: {image}
  INACTIVITY_TIMEOUT:
    description: stop an unused machine after this long
    default: 20m
  HOST_ARCH:
    description: computed from this machine
    command: uname -m
    hidden: true
  CREATE_DELAY:
    description: seconds a create takes after the machine exists
    default: "0"
  FUTURE_THING:
    description: an option of a newer DevPod
    default: x
    someNewField: true
agent:
  path: /usr/local/bin/devpod
  inactivityTimeout: ${{INACTIVITY_TIMEOUT}}
  injectGitCredentials: "false"
  exec:
    shutdown: kill -TERM 1
binaries:
  MACHINE_TOOL:
    - os: linux
      arch: amd64
      path: {binary}
      checksum: {sum}
    - os: linux
      arch: arm64
      path: {binary}
      checksum: {sum}
exec:
  init: ${{MACHINE_TOOL}} init
  create: ${{MACHINE_TOOL}} create
  delete: ${{MACHINE_TOOL}} delete
  start: ${{MACHINE_TOOL}} start
  stop: ${{MACHINE_TOOL}} stop
  status: ${{MACHINE_TOOL}} status
  command: |-
    "${{MACHINE_TOOL}}" command
"#,
        image = machine_image()
    );
    let path = dir.join("provider.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Removes the machine containers of a prefix, whatever the test did.
struct Machines(String);

impl Machines {
    fn names(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                &format!("label=dev.claude-vm.test-machine={}", self.0),
                "--format",
                "{{.Names}} {{.State}}",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Machines {
    fn drop(&mut self) {
        for line in self.names() {
            if let Some(name) = line.split_whitespace().next() {
                let _ = Command::new("docker").args(["rm", "-f", name]).output();
            }
        }
    }
}

fn machine_state(name: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Status}}", name])
        .output()
        .unwrap();
    if !out.status.success() {
        return "gone".to_owned();
    }
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `provider add NAME --type devpod` of `yaml` with a token, `prefix` and `extra` options.
fn add_cloud(ctx: &Ctx, name: &str, yaml: &Path, prefix: &str, extra: &[&str]) -> common::Run {
    let source = format!("source={}", yaml.display());
    let prefix = format!("MACHINE_PREFIX={prefix}");
    let mut args = vec![
        "provider",
        "add",
        name,
        "--type",
        "devpod",
        "-o",
        &source,
        "-o",
        "SECRET_TOKEN=tok",
        "-o",
        &prefix,
        "--no-input",
    ];
    args.extend_from_slice(extra);
    ctx.run(&args)
}

/// `provider machines NAME --json`, trimmed.
fn machines_json(ctx: &Ctx, provider: &str) -> String {
    ctx.run(&["provider", "machines", provider, "--json"])
        .ok()
        .stdout
        .trim()
        .to_owned()
}

/// `workspace up PROJECT --provider P`, which must fail.
fn up_fails(ctx: &Ctx, project: &Path, provider: &str) -> common::Run {
    ctx.run(&[
        "workspace",
        "up",
        project.to_str().unwrap(),
        "--provider",
        provider,
    ])
    .fails()
}

/// Runs the provider's downloaded machine tool by hand, as a cloud's console would act.
fn machine_tool(
    ctx: &Ctx,
    provider: &str,
    op: &str,
    prefix: &str,
    machine: &str,
) -> std::process::Output {
    let folder = ctx.home.path().join("providers").join(provider);
    let tool = std::fs::read_dir(folder.join("binaries/MACHINE_TOOL"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("machine-tool.sh");
    Command::new(tool)
        .arg(op)
        .env("MACHINE_PREFIX", prefix)
        .env("MACHINE_ID", machine)
        .env("PROVIDER_FOLDER", &folder)
        .output()
        .unwrap()
}

fn workspace<'a>(list: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    list.iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {list:?}"))
}

#[test]
fn a_devpod_machine_provider_makes_stops_starts_and_deletes_the_machine_of_a_workspace() {
    let ctx = Ctx::new();
    let prefix = format!("t{}", std::process::id());
    let machines = Machines(prefix.clone());
    let yaml = provider_yaml(ctx.work.path(), None);
    let source = format!("source={}", yaml.display());

    // Without a terminal, the missing required option is named and nothing is kept.
    let missing = ctx
        .run(&[
            "provider",
            "add",
            "cloud",
            "--type",
            "devpod",
            "-o",
            &source,
            "-o",
            "SECRET_TOKEN=s3cret-token",
        ])
        .fails();
    assert!(
        missing.stderr.contains("MACHINE_PREFIX") && missing.stderr.contains("--option"),
        "{}",
        missing.stderr
    );
    assert!(!ctx.home.path().join("providers/cloud").exists());
    // A token the provider's init refuses: its words are shown, nothing is kept.
    let refused = ctx
        .run(&[
            "provider",
            "add",
            "cloud",
            "--type",
            "devpod",
            "-o",
            &source,
            "-o",
            "SECRET_TOKEN=wrong",
            "-o",
            &format!("MACHINE_PREFIX={prefix}"),
        ])
        .fails();
    assert!(
        refused
            .stderr
            .contains("the token was refused by the cloud"),
        "{}",
        refused.stderr
    );
    assert!(
        !ctx.run(&["provider", "list", "--json"])
            .ok()
            .stdout
            .contains("\"cloud\"")
    );
    assert!(!ctx.home.path().join("providers/cloud").exists());

    // On a terminal, provider add asks for what is missing (the design's interactive setup).
    let cmd = format!(
        "CLAUDE_VM_HOME={} NO_COLOR=1 {} provider add cloud --type devpod -o {source} -o SECRET_TOKEN=s3cret-token; echo EXIT=$?; sleep 60",
        ctx.home.path().display(),
        ctx.bin.display()
    );
    let tmux = Tmux::start("devpod-add", 200, 50, &cmd);
    tmux.wait_for(
        "MACHINE_PREFIX (a name every machine starts with)",
        Duration::from_secs(60),
    );
    tmux.send(&prefix);
    let screen = tmux.wait_for("EXIT=", Duration::from_secs(60));
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(
        screen.contains("unknown field") && screen.contains("someNewField"),
        "a newer DevPod's field is a warning: {screen}"
    );
    drop(tmux);
    let providers = ctx.run(&["provider", "list", "--json"]).ok().json();
    let cloud = providers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "cloud")
        .unwrap()
        .clone();
    assert_eq!(cloud["type"], "devpod");
    assert_eq!(cloud["options"]["SECRET_TOKEN"], "********");
    assert_eq!(cloud["options"]["MACHINE_PREFIX"], prefix.as_str());
    let shown = ctx.run(&["provider", "list", "-v"]).ok().stdout;
    assert!(!shown.contains("s3cret-token"), "{shown}");
    // The binary was fetched into the home, checksum-verified, and init ran with it.
    let calls = || {
        std::fs::read_to_string(ctx.home.path().join("providers/cloud/calls.log"))
            .unwrap_or_default()
    };
    assert!(calls().starts_with("init"), "{}", calls());

    // up: a machine is created, claude-vm reaches its Docker through exec.command.
    let project = ctx.path("proj");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("notes.txt"), "kept across machine stops\n").unwrap();
    let w = ctx.up(&[
        project.to_str().unwrap(),
        "--provider",
        "cloud",
        "--name",
        "m1",
    ]);
    let id = w["id"].as_str().unwrap().to_owned();
    let machine = format!("{prefix}-cvm-{id}");
    assert_eq!(machine_state(&machine), "running");
    let cat = ctx.run(&["exec", "m1", "--", "cat", "notes.txt"]).ok();
    assert_eq!(cat.stdout, "kept across machine stops\n");
    let list = ctx.list();
    let m1 = workspace(&list, "m1");
    assert_eq!(m1["status"], "running");
    assert_eq!(m1["machine"]["id"], format!("cvm-{id}"));
    assert_eq!(m1["machine"]["state"], "Running");
    let long = ctx.run(&["workspace", "list", "-l"]).ok().stdout;
    assert!(
        long.contains("MACHINE") && long.contains(&format!("cvm-{id} Running")),
        "{long}"
    );
    let listed = ctx
        .run(&["provider", "machines", "cloud", "--json"])
        .ok()
        .json();
    assert_eq!(listed[0]["id"], format!("cvm-{id}"));
    assert_eq!(listed[0]["state"], "Running");
    assert_eq!(listed[0]["workspaces"][0], id.as_str());

    // down stops the workspace and then its machine.
    ctx.run(&["workspace", "down", "m1", "--no-backup"]).ok();
    assert_eq!(machine_state(&machine), "exited");
    let m1 = ctx.list();
    let m1 = workspace(&m1, "m1");
    assert_eq!(m1["status"], "stopped");
    assert_eq!(m1["machine"]["state"], "Stopped");

    // up starts the machine, then the workspace, files intact.
    ctx.up(&["m1"]);
    assert_eq!(machine_state(&machine), "running");
    let cat = ctx.run(&["exec", "m1", "--", "cat", "notes.txt"]).ok();
    assert_eq!(cat.stdout, "kept across machine stops\n");

    // A machine stopped behind claude-vm's back (from the cloud's console) shows so, and
    // up starts it again.
    let stopped = machine_tool(&ctx, "cloud", "stop", &prefix, &format!("cvm-{id}"));
    assert!(stopped.status.success(), "{stopped:?}");
    assert_eq!(machine_state(&machine), "exited");
    let m1 = ctx.list();
    assert_eq!(workspace(&m1, "m1")["machine"]["state"], "Stopped");
    ctx.up(&["m1"]);
    ctx.run(&["exec", "m1", "--", "true"]).ok();

    // delete removes the workspace and the machine.
    ctx.run(&["workspace", "delete", "m1", "-y", "--force"])
        .ok();
    assert_eq!(machine_state(&machine), "gone");
    assert!(machines_json(&ctx, "cloud") == "[]");
    assert!(ctx.docker_debris().is_empty(), "{:?}", ctx.docker_debris());
    let log = calls();
    for op in [
        "create cvm-",
        "status cvm-",
        "command cvm-",
        "stop cvm-",
        "start cvm-",
        "delete cvm-",
    ] {
        assert!(log.contains(op), "{op} missing from the calls: {log}");
    }
    // A provider with machines cannot be deleted; without them it can, folder and all.
    ctx.run(&["provider", "delete", "cloud", "-y"]).ok();
    assert!(!ctx.home.path().join("providers/cloud").exists());
    assert!(machines.names().is_empty(), "{:?}", machines.names());
}

#[test]
fn devpod_machines_are_shared_with_machine_reuse_and_faults_leave_nothing_behind() {
    let ctx = Ctx::new();
    let prefix = format!("r{}", std::process::id());
    let machines = Machines(prefix.clone());
    let yaml = provider_yaml(ctx.work.path(), None);
    let add =
        |name: &str, prefix: &str, extra: &[&str]| add_cloud(&ctx, name, &yaml, prefix, extra);

    // A binary whose checksum does not match is refused and never run.
    let bad_dir = ctx.path("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let bad = provider_yaml(&bad_dir, Some(&"0".repeat(64)));
    let refused = ctx
        .run(&[
            "provider",
            "add",
            "bad",
            "--type",
            "devpod",
            "-o",
            &format!("source={}", bad.display()),
            "-o",
            "SECRET_TOKEN=tok",
            "-o",
            "MACHINE_PREFIX=x",
        ])
        .fails();
    assert!(refused.stderr.contains("sha256"), "{}", refused.stderr);
    assert!(!ctx.home.path().join("providers/bad/calls.log").exists());

    // A malformed provider.yaml is refused with where it is wrong.
    std::fs::write(ctx.path("broken.yaml"), "name: Not Valid!\nexec: [\n").unwrap();
    let broken = ctx
        .run(&[
            "provider",
            "add",
            "broken",
            "--type",
            "devpod",
            "-o",
            &format!("source={}", ctx.path("broken.yaml").display()),
        ])
        .fails();
    assert!(broken.stderr.contains("provider.yaml"), "{}", broken.stderr);

    // Two workspaces on one machine: the machine runs until the last one stops.
    add("shared", &prefix, &["-o", "machine_reuse=true"]).ok();
    let project = ctx.path("proj");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("a.txt"), "a\n").unwrap();
    ctx.up(&[
        project.to_str().unwrap(),
        "--provider",
        "shared",
        "--name",
        "s1",
    ]);
    ctx.up(&[
        project.to_str().unwrap(),
        "--provider",
        "shared",
        "--name",
        "s2",
    ]);
    let machine = format!("{prefix}-cvm-shared-shared");
    assert_eq!(machines.names().len(), 1, "{:?}", machines.names());
    ctx.run(&["workspace", "down", "s1", "--no-backup"]).ok();
    assert_eq!(machine_state(&machine), "running", "s2 still runs on it");
    ctx.run(&["exec", "s2", "--", "cat", "a.txt"]).ok();
    ctx.run(&["workspace", "down", "s2", "--no-backup"]).ok();
    assert_eq!(machine_state(&machine), "exited");
    ctx.run(&["workspace", "delete", "s1", "-y", "--force"])
        .ok();
    assert_eq!(
        machine_state(&machine),
        "exited",
        "s2 is still on it; calls: {}",
        std::fs::read_to_string(ctx.home.path().join("providers/shared/calls.log"))
            .unwrap_or_default()
    );
    ctx.run(&["workspace", "delete", "s2", "-y", "--force"])
        .ok();
    assert_eq!(machine_state(&machine), "gone");

    // create failing: its words are shown and nothing is left.
    add("failing", "fail", &[]).ok();
    let failed = up_fails(&ctx, &project, "failing");
    assert!(
        failed
            .stderr
            .contains("quota exceeded: no more machines in region lab-1"),
        "{}",
        failed.stderr
    );
    assert_eq!(machines_json(&ctx, "failing"), "[]");
    assert!(ctx.list().is_empty());

    // A status that is none of DevPod's four words: named, nothing left.
    add("garbled", "garbage", &["-o", "machine_timeout=10s"]).ok();
    let garbled = up_fails(&ctx, &project, "garbled");
    assert!(
        garbled.stderr.contains("I am a teapot"),
        "{}",
        garbled.stderr
    );
    assert!(ctx.list().is_empty());

    // An up killed while its machine is being created: the machine was recorded first, so
    // provider machines lists it with its workspace, and deleting the workspace deletes it.
    add("slow", &prefix, &["-o", "CREATE_DELAY=30"]).ok();
    let mut child = ctx
        .command(&[
            "workspace",
            "up",
            project.to_str().unwrap(),
            "--provider",
            "slow",
            "--name",
            "killed",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let slow_calls = ctx.home.path().join("providers/slow/calls.log");
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&slow_calls)
        .unwrap_or_default()
        .contains("create")
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "create never ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    child.kill().unwrap();
    child.wait().unwrap();
    let made = ctx
        .run(&["provider", "machines", "slow", "--json"])
        .ok()
        .json();
    assert_eq!(made.as_array().unwrap().len(), 1, "{made}");
    let killed_id = workspace(&ctx.list(), "killed")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(made[0]["workspaces"][0], killed_id.as_str(), "{made}");
    assert_eq!(made[0]["unused"], false, "{made}");
    let slow_machine = format!("{prefix}-{}", made[0]["id"].as_str().unwrap());
    assert_eq!(machine_state(&slow_machine), "running");
    ctx.run(&["workspace", "delete", "killed", "-y", "--force"])
        .ok();
    assert_eq!(machine_state(&slow_machine), "gone");
    assert_eq!(machines_json(&ctx, "slow"), "[]");
    assert!(ctx.list().is_empty());

    // A machine its command cannot reach: given up after machine_timeout, machine deleted.
    let leftover = Machines("mute".to_owned());
    add("mute", "mute", &["-o", "machine_timeout=5s"]).ok();
    let unreachable = up_fails(&ctx, &project, "mute");
    assert!(
        unreachable.stderr.contains("cvm-") && unreachable.stderr.contains("connection timed out"),
        "{}",
        unreachable.stderr
    );
    assert_eq!(machines_json(&ctx, "mute"), "[]");
    assert!(ctx.list().is_empty());
    assert!(leftover.names().is_empty(), "{:?}", leftover.names());
    assert!(ctx.docker_debris().is_empty(), "{:?}", ctx.docker_debris());
}

#[test]
fn a_devpod_machine_shuts_itself_down_when_no_workspace_has_run_on_it() {
    let ctx = Ctx::new();
    let prefix = format!("i{}", std::process::id());
    let machines = Machines(prefix.clone());
    let yaml = provider_yaml(ctx.work.path(), None);
    add_cloud(
        &ctx,
        "idle",
        &yaml,
        &prefix,
        &["-o", "machine_idle_stop=3s"],
    )
    .ok();
    let project = ctx.path("proj");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("f.txt"), "f\n").unwrap();
    let up = |args: &[&str]| {
        let mut full = vec!["workspace", "up", "--json"];
        full.extend_from_slice(args);
        let out = ctx
            .command(&full)
            .env("CLAUDE_VM_MACHINE_WATCH_SECS", "1")
            .output()
            .unwrap();
        common::Run::from(out).ok().json()["workspace"].clone()
    };
    let w = up(&[
        project.to_str().unwrap(),
        "--provider",
        "idle",
        "--name",
        "i1",
    ]);
    let id = w["id"].as_str().unwrap().to_owned();
    let machine = format!("{prefix}-cvm-{id}");
    // While the workspace runs, the machine stays up well past its idle time.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(machine_state(&machine), "running");
    // The workspace stops by itself (here: stopped behind claude-vm's back): the machine
    // follows after 3 s with nothing running, through the provider.yaml's agent.exec.shutdown.
    Command::new("docker")
        .args(["stop", "-t", "1", &format!("claude-vm-{id}")])
        .output()
        .unwrap();
    let start = std::time::Instant::now();
    while machine_state(&machine) == "running" {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the machine never stopped itself: {:?}",
            machines.names()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(machine_state(&machine), "exited");
    // The next up starts it again, files intact.
    up(&["i1"]);
    assert_eq!(machine_state(&machine), "running");
    assert_eq!(
        ctx.run(&["exec", "i1", "--", "cat", "f.txt"]).ok().stdout,
        "f\n"
    );
    ctx.run(&["workspace", "delete", "i1", "-y", "--force"])
        .ok();
    assert_eq!(machine_state(&machine), "gone");
}

#[test]
fn a_claude_code_conversation_on_a_devpod_machine_resumes_after_the_machine_stopped() {
    let model = ScriptedModel::start(
        Script::from_json(
            r#"[
              {"match": {"last_user_contains": "write the note"},
               "response": [{"text": "Writing it."},
                            {"tool_use": {"name": "Write", "input": {"file_path": "/workspace/proj/note.txt", "content": "written on a machine\n"}}}]},
              {"match": {"after_tool_result_contains": "note.txt"}, "response": [{"text": "The note is written."}]},
              {"match": {"last_user_contains": "what did I ask", "contains": "write the note"}, "response": [{"text": "You asked for the note."}]},
              {"match": {"last_user_contains": "what did I ask"}, "response": [{"text": "I do not remember."}]}
            ]"#,
        )
        .unwrap(),
    )
    .unwrap();
    let ctx = ctx_with_claude(&model.url(), "sk-test-devpod");
    let prefix = format!("c{}", std::process::id());
    let machines = Machines(prefix.clone());
    let yaml = provider_yaml(ctx.work.path(), None);
    // The workspace shares the network of the engine's host to reach the scripted model.
    add_cloud(&ctx, "cloud", &yaml, &prefix, &["-o", "network=host"]).ok();
    let proj = git_project(&ctx);
    let w = ctx.up(&[
        proj.to_str().unwrap(),
        "--provider",
        "cloud",
        "--name",
        "talk",
    ]);
    let id = w["id"].as_str().unwrap().to_owned();
    let machine = format!("{prefix}-cvm-{id}");
    let conv = ctx.run(&["new-chat", "talk"]).ok().stdout.trim().to_owned();
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
    assert_eq!(
        ctx.run(&["exec", "talk", "--", "cat", "note.txt"])
            .ok()
            .stdout,
        "written on a machine\n"
    );

    // down stops the machine; up starts it and the conversation goes on with its context.
    ctx.run(&["workspace", "down", "talk", "--no-backup"]).ok();
    assert_eq!(machine_state(&machine), "exited");
    ctx.up(&["talk"]);
    assert_eq!(machine_state(&machine), "running");
    assert_eq!(
        ctx.run(&["exec", "talk", "--", "cat", "note.txt"])
            .ok()
            .stdout,
        "written on a machine\n"
    );
    let again = ctx
        .run(&["chat", "send", "-c", &conv, "what did I ask you?", "--wait"])
        .ok();
    assert_eq!(
        again.stdout.trim(),
        "You asked for the note.",
        "context lost"
    );
    let log = ctx.run(&["chat", "log", "-c", &conv]).ok();
    assert!(
        log.stdout.contains("⚙ Write(/workspace/proj/note.txt)"),
        "{}",
        log.stdout
    );
    ctx.run(&["workspace", "delete", "talk", "-y", "--force"])
        .ok();
    assert_eq!(machine_state(&machine), "gone");
    assert!(machines.names().is_empty(), "{:?}", machines.names());
}

#[test]
fn a_provider_yaml_without_machines_and_a_machine_deleted_behind_claude_vms_back() {
    let ctx = Ctx::new();
    let prefix = format!("h{}", std::process::id());
    let machines = Machines(prefix.clone());

    // A non-machine provider.yaml (only exec.command): workspaces run on the host it
    // reaches, here a container of the test image with the engine's socket, reached with
    // `docker exec -i` (any command joining stdin and stdout will do).
    let host = format!("{prefix}-host");
    let started = Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            &host,
            "--label",
            &format!("dev.claude-vm.test-machine={prefix}"),
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            &test_image(),
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 1; done",
        ])
        .output()
        .unwrap();
    assert!(started.status.success(), "{started:?}");
    let yaml = ctx.path("host.yaml");
    std::fs::write(
        &yaml,
        format!(
            "name: test-host\nversion: v0.0.1\ndescription: one host reached by a command\nexec:\n  command: docker exec -i {host} sh -c \"$COMMAND\"\n"
        ),
    )
    .unwrap();
    ctx.run(&[
        "provider",
        "add",
        "hosted",
        "--type",
        "devpod",
        "-o",
        &format!("source={}", yaml.display()),
    ])
    .ok();
    let project = ctx.path("proj");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("h.txt"), "on the host\n").unwrap();
    ctx.up(&[
        project.to_str().unwrap(),
        "--provider",
        "hosted",
        "--name",
        "h1",
    ]);
    assert_eq!(
        ctx.run(&["exec", "h1", "--", "cat", "h.txt"]).ok().stdout,
        "on the host\n"
    );
    let list = ctx.list();
    assert_eq!(workspace(&list, "h1")["status"], "running");
    assert!(workspace(&list, "h1").get("machine").is_none(), "{list:?}");
    ctx.run(&["workspace", "down", "h1", "--no-backup"]).ok();
    assert_eq!(machine_state(&host), "running", "the host is not a machine");
    ctx.up(&["h1"]);
    ctx.run(&["exec", "h1", "--", "true"]).ok();
    ctx.run(&["workspace", "delete", "h1", "-y", "--force"])
        .ok();
    assert_eq!(machine_state(&host), "running");
    assert_eq!(machines_json(&ctx, "hosted"), "[]");
    assert!(ctx.docker_debris().is_empty(), "{:?}", ctx.docker_debris());

    // set-options runs exec.init again: a token it refuses is not kept.
    let machine_yaml = provider_yaml(ctx.work.path(), None);
    add_cloud(&ctx, "vanish", &machine_yaml, &prefix, &[]).ok();
    let refused = ctx
        .run(&[
            "provider",
            "set-options",
            "vanish",
            "-o",
            "SECRET_TOKEN=wrong",
        ])
        .fails();
    assert!(
        refused
            .stderr
            .contains("the token was refused by the cloud"),
        "{}",
        refused.stderr
    );
    let unknown = ctx
        .run(&["provider", "set-options", "vanish", "-o", "NO_SUCH=1"])
        .fails();
    assert!(
        unknown.stderr.contains("no option NO_SUCH"),
        "{}",
        unknown.stderr
    );
    ctx.run(&[
        "provider",
        "set-options",
        "vanish",
        "-o",
        "SECRET_TOKEN=rotated",
    ])
    .ok();
    let calls = std::fs::read_to_string(ctx.home.path().join("providers/vanish/calls.log"))
        .unwrap_or_default();
    assert_eq!(calls.matches("init").count(), 3, "{calls}");

    // A machine deleted outside claude-vm: up says so clearly; delete still cleans up.
    ctx.up(&[
        project.to_str().unwrap(),
        "--provider",
        "vanish",
        "--name",
        "v1",
    ]);
    let id = workspace(&ctx.list(), "v1")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let machine = format!("{prefix}-cvm-{id}");
    ctx.run(&["workspace", "down", "v1", "--no-backup"]).ok();
    // As from the cloud's console: the machine goes, and its disk with it.
    let deleted = machine_tool(&ctx, "vanish", "delete", &prefix, &format!("cvm-{id}"));
    assert!(deleted.status.success(), "{deleted:?}");
    assert_eq!(machine_state(&machine), "gone");
    let list = ctx.list();
    assert_eq!(workspace(&list, "v1")["machine"]["state"], "NotFound");
    let gone = ctx.run(&["workspace", "up", "v1"]).fails();
    assert!(
        gone.stderr
            .contains(&format!("machine cvm-{id} no longer exists")),
        "{}",
        gone.stderr
    );
    ctx.run(&["workspace", "delete", "v1", "-y", "--force"])
        .ok();
    assert!(ctx.list().is_empty());
    assert_eq!(machines_json(&ctx, "vanish"), "[]");
    // A machine record no workspace of this home uses (left by a home whose workspace
    // record went another way): flagged, and the provider is not deleted while it exists.
    let ghost = ctx.home.path().join("providers/vanish/machines/cvm-ghost");
    std::fs::create_dir_all(&ghost).unwrap();
    std::fs::write(
        ghost.join("machine.json"),
        r#"{"id": "cvm-ghost", "workspaces": ["0123456789ab"], "created_at": "2026-12-01T00:00:00Z"}"#,
    )
    .unwrap();
    let listed = ctx
        .run(&["provider", "machines", "vanish", "--json"])
        .ok()
        .json();
    assert_eq!(listed[0]["id"], "cvm-ghost", "{listed}");
    assert_eq!(listed[0]["unused"], true, "{listed}");
    assert_eq!(listed[0]["state"], "NotFound", "{listed}");
    let table = ctx.run(&["provider", "machines", "vanish"]).ok().stdout;
    assert!(table.contains("none (unused)"), "{table}");
    let kept = ctx.run(&["provider", "delete", "vanish", "-y"]).fails();
    assert!(
        kept.stderr.contains("still has 1 machine"),
        "{}",
        kept.stderr
    );
    std::fs::remove_dir_all(&ghost).unwrap();
    ctx.run(&["provider", "delete", "vanish", "-y"]).ok();
    drop(machines);
    assert!(ctx.docker_debris().is_empty(), "{:?}", ctx.docker_debris());
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A static HTTPS site on loopback serving `dir` (Python's http.server behind TLS), with a
/// certificate for 127.0.0.1 signed by a CA of its own (made with the openssl CLI); every
/// request is logged.
struct Https {
    child: std::process::Child,
    port: u16,
    /// The CA's certificate: what `SSL_CERT_FILE` must name to trust the site.
    ca: PathBuf,
    log: PathBuf,
}

impl Https {
    fn start(dir: &Path, tls: &Path) -> Https {
        std::fs::create_dir_all(tls).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(tls)
                .output()
                .expect("the openssl CLI (Debian's openssl package)");
            assert!(out.status.success(), "openssl {args:?}: {out:?}");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=test ca",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "site.key",
                    "-out",
                    "site.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            tls.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "site.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "site.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        let script = tls.join("serve.py");
        std::fs::write(
            &script,
            "import functools, http.server, ssl, sys\n\
             handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])\n\
             srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)\n\
             ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
             ctx.load_cert_chain(sys.argv[2], sys.argv[3])\n\
             srv.socket = ctx.wrap_socket(srv.socket, server_side=True)\n\
             print(srv.server_address[1], flush=True)\n\
             srv.serve_forever()\n",
        )
        .unwrap();
        let log = tls.join("requests.log");
        let mut child = Command::new("python3")
            .arg(&script)
            .arg(dir)
            .arg(tls.join("site.pem"))
            .arg(tls.join("site.key"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the site said {line:?}"));
        Https {
            child,
            port,
            ca: tls.join("ca.pem"),
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}/{path}", self.port)
    }

    /// How many GETs of `path` the site answered.
    fn gets(&self, path: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches(&format!("\"GET /{path} "))
            .count()
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_provider_yaml_and_its_binary_fetched_over_https_are_verified_and_fetched_once() {
    let ctx = Ctx::new();
    let prefix = format!("w{}", std::process::id());
    let machines = Machines(prefix.clone());
    let site_dir = ctx.path("site");
    std::fs::create_dir_all(&site_dir).unwrap();
    let site = Https::start(&site_dir, &ctx.path("tls"));
    provider_yaml_at(&site_dir, None, &site.url("machine-tool.sh"));
    let bad_dir = site_dir.join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    provider_yaml_at(
        &bad_dir,
        Some(&"f".repeat(64)),
        &site.url("machine-tool.sh"),
    );
    let trusted = |args: &[&str]| {
        common::Run::from(
            ctx.command(args)
                .env("SSL_CERT_FILE", &site.ca)
                .output()
                .unwrap(),
        )
    };
    let add = |name: &str, yaml: &str| {
        let source = format!("source={}", site.url(yaml));
        let prefix = format!("MACHINE_PREFIX={prefix}");
        vec![
            "provider".to_owned(),
            "add".to_owned(),
            name.to_owned(),
            "--type".to_owned(),
            "devpod".to_owned(),
            "-o".to_owned(),
            source,
            "-o".to_owned(),
            "SECRET_TOKEN=tok".to_owned(),
            "-o".to_owned(),
            prefix,
            "--no-input".to_owned(),
        ]
    };

    // A site whose certificate nothing here trusts: refused, saying why.
    let untrusted = ctx.run(&strs(&add("web", "provider.yaml"))).fails();
    assert!(
        untrusted.stderr.contains("invalid peer certificate"),
        "{}",
        untrusted.stderr
    );
    // A provider.yaml that is not there: the answer's status.
    let missing = trusted(&strs(&add("web", "nothing.yaml"))).fails();
    assert!(missing.stderr.contains("404"), "{}", missing.stderr);
    // A binary whose download does not match its checksum: refused, never run.
    let altered = trusted(&strs(&add("web", "bad/provider.yaml"))).fails();
    assert!(
        altered.stderr.contains("sha256") && altered.stderr.contains("nothing was run"),
        "{}",
        altered.stderr
    );
    assert!(!ctx.home.path().join("providers/web").exists());

    // Trusted: the provider.yaml and its binary come over HTTPS; init runs with the binary.
    trusted(&strs(&add("web", "provider.yaml"))).ok();
    let calls = || {
        std::fs::read_to_string(ctx.home.path().join("providers/web/calls.log")).unwrap_or_default()
    };
    assert!(calls().starts_with("init"), "{}", calls());
    let project = ctx.path("proj");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("w.txt"), "over https\n").unwrap();
    ctx.up(&[
        project.to_str().unwrap(),
        "--provider",
        "web",
        "--name",
        "w1",
    ]);
    assert_eq!(
        ctx.run(&["exec", "w1", "--", "cat", "w.txt"]).ok().stdout,
        "over https\n"
    );
    ctx.run(&["workspace", "delete", "w1", "-y", "--force"])
        .ok();
    assert!(machines.names().is_empty(), "{:?}", machines.names());
    // The binary was downloaded for the add and kept: one good GET (and the altered one).
    assert_eq!(
        site.gets("machine-tool.sh"),
        2,
        "{}",
        std::fs::read_to_string(&site.log).unwrap()
    );
    assert!(
        calls().contains("create cvm-") && calls().contains("delete cvm-"),
        "{}",
        calls()
    );
}
