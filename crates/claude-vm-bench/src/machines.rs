//! `machine`: `workspace up` / `down` / resume on a DevPod machine provider, against the
//! same steps done by hand with that provider's own commands.
//!
//! STAND-IN: no cloud is reachable here, so the provider's "machines" are containers of the
//! local engine from the benchmark's image, with the engine's socket and the docker CLI
//! mounted in them (a VM with Docker installed, as far as claude-vm can tell). The provider's
//! binary is a shell script (checksum-verified like any provider.yaml binary): `create` starts
//! such a container, `stop`/`start`/`delete` map to `docker stop/start/rm`, `status` to
//! `docker inspect`, and `command` runs `$COMMAND` in it with `docker exec -i` (the byte
//! stream a published provider gets with ssh). Every call of the script is logged, so the
//! number of provider commands each operation runs is counted on both sides.
//!
//! By hand, per sample: `create`, `status` until Running, `command` with `docker run -d`
//! (making `/workspace`) and `command` with `docker cp - CTR:/workspace/` fed the project as
//! a tar (up); `command` with `docker stop`, then `stop` (down); `start`, `status` until
//! Running, `command` with `docker start` (resume); `delete` at the end, untimed.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::exec::{Tools, delete_workspaces_named, run, run_cleanup, timed};
use crate::fixture;
use crate::{BASELINE_LABEL, Samples, pair};

/// The provider's name in the benchmark's home.
const PROVIDER: &str = "bench-cloud";
/// Workspace names of this group start with this.
const WS_PREFIX: &str = "bench-m-";

/// The machine tool: one sub-command per `exec` entry of the provider.yaml.
const TOOL: &str = r#"#!/bin/sh
set -e
name="$MACHINE_PREFIX-$MACHINE_ID"
echo "$1" >> "$CALLS_LOG"
case "$1" in
  init) docker version >/dev/null ;;
  create)
    docker run -d --name "$name" --label "$RUN_LABEL" \
      -v /var/run/docker.sock:/var/run/docker.sock -v "$DOCKER_CLI:/usr/local/bin/docker:ro" \
      "$MACHINE_IMAGE" sh -c 'trap "exit 0" TERM; while :; do sleep 1; done' >/dev/null ;;
  delete)
    docker rm -f "$name" >/dev/null 2>&1 || true
    for c in $(docker ps -aq --filter "label=dev.claude-vm.machine=$MACHINE_ID"); do docker rm -f "$c" >/dev/null; done
    for v in $(docker volume ls -q --filter "label=dev.claude-vm.machine=$MACHINE_ID"); do docker volume rm -f "$v" >/dev/null; done ;;
  start) docker start "$name" >/dev/null ;;
  stop)
    for c in $(docker ps -q --filter "label=dev.claude-vm.machine=$MACHINE_ID"); do docker stop -t 5 "$c" >/dev/null; done
    docker stop -t 5 "$name" >/dev/null ;;
  status)
    s=$(docker inspect -f '{{.State.Status}}' "$name" 2>/dev/null) || { echo NotFound; exit 0; }
    case "$s" in running) echo Running ;; exited|created) echo Stopped ;; *) echo Busy ;; esac ;;
  command) exec docker exec -i "$name" sh -c "$COMMAND" ;;
  *) echo "unknown command $1" >&2; exit 1 ;;
esac
"#;

/// Provider commands by sub-command (`create`, `status`, ...) and how often they ran.
pub type Calls = BTreeMap<String, u32>;

pub struct MachineSamples {
    pub up: Samples,
    pub down: Samples,
    pub resume: Samples,
    /// Provider commands per operation: (ours, by hand), each `sub-command -> count`
    /// summed over the measured samples.
    pub calls: BTreeMap<&'static str, (Calls, Calls)>,
    pub measured: u32,
}

/// The provider's folder: the tool, its provider.yaml, the calls log.
struct Cloud {
    dir: PathBuf,
    tool: PathBuf,
    log: PathBuf,
    prefix: String,
    image: String,
    run_label: String,
    docker_cli: PathBuf,
}

impl Cloud {
    /// The tool run by hand with what the provider would pass it.
    fn tool(&self, op: &str, machine: &str) -> Command {
        let mut cmd = Command::new(&self.tool);
        cmd.arg(op)
            .env("MACHINE_PREFIX", &self.prefix)
            .env("MACHINE_ID", machine)
            .env("MACHINE_IMAGE", &self.image)
            .env("RUN_LABEL", &self.run_label)
            .env("DOCKER_CLI", &self.docker_cli)
            .env("CALLS_LOG", &self.log);
        cmd
    }

    /// `status` until it says Running.
    fn wait_running(&self, machine: &str) -> Result<()> {
        let start = Instant::now();
        loop {
            let s = run(self.tool("status", machine))?;
            if s.trim() == "Running" {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(120) {
                bail!("machine {machine} is still {} after 120 s", s.trim());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `command` with `COMMAND` set.
    fn command(&self, machine: &str, command: &str) -> Command {
        let mut cmd = self.tool("command", machine);
        cmd.env("COMMAND", command);
        cmd
    }

    /// The calls logged so far.
    fn calls(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// How many of each sub-command were logged after the first `from` lines.
fn count_since(cloud: &Cloud, from: usize, into: &mut Calls) {
    for c in cloud.calls().into_iter().skip(from) {
        *into.entry(c).or_default() += 1;
    }
}

/// Time `f`, counting the provider commands it ran into `into` when `measured`.
fn counted(
    cloud: &Cloud,
    measured: bool,
    into: &mut Calls,
    f: impl FnOnce() -> Result<Duration>,
) -> Result<Duration> {
    let from = cloud.calls().len();
    let t = f()?;
    if measured {
        count_since(cloud, from, into);
    }
    Ok(t)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn provider_yaml(tool_sum: &str, image: &str, run_label: &str, docker_cli: &Path) -> String {
    format!(
        r#"name: bench-cloud
version: v0.0.1
description: containers playing cloud machines, for the benchmark
options:
  MACHINE_PREFIX:
    description: a name every machine starts with
    required: true
  MACHINE_IMAGE:
    default: {image}
  RUN_LABEL:
    default: {run_label}
  DOCKER_CLI:
    default: {docker}
  CALLS_LOG:
    required: true
binaries:
  MACHINE_TOOL:
    - os: linux
      arch: amd64
      path: ./machine-tool.sh
      checksum: {tool_sum}
    - os: linux
      arch: arm64
      path: ./machine-tool.sh
      checksum: {tool_sum}
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
        docker = docker_cli.display()
    )
}

/// The project as a tar stream into `docker cp - CTR:/workspace/` on the machine.
fn copy_in(cloud: &Cloud, machine: &str, ctr: &str, project: &Path) -> Result<Duration> {
    let start = Instant::now();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(project)
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run tar")?;
    let mut cp = cloud.command(machine, &format!("docker cp - {ctr}:/workspace/"));
    let tar_out = tar.wait_with_output().context("tar failed")?;
    if !tar_out.status.success() {
        bail!("tar failed: {}", String::from_utf8_lossy(&tar_out.stderr));
    }
    let mut child = cp
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run the machine tool")?;
    // A command that fails early closes its stdin: its own words say why.
    let written = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(&tar_out.stdout);
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "docker cp on the machine failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    written.context("writing the project to docker cp on the machine")?;
    Ok(start.elapsed())
}

/// `claude-vm workspace up --json ...`, checked to be running on its machine.
fn up(tools: &Tools, args: &[&str], action: &str) -> Result<Duration> {
    let mut cmd = tools.cvm(["workspace", "up", "--json"]);
    cmd.args(args);
    let (t, out) = timed(cmd)?;
    let v: serde_json::Value = serde_json::from_str(&out)
        .with_context(|| format!("`workspace up --json` printed {out:?}"))?;
    let w = &v["workspace"];
    if v["action"] != action || w["status"] != "running" {
        bail!(
            "`workspace up {}`: {} {} ({})",
            args.join(" "),
            v["action"],
            w["status"],
            w["status_reason"]
        );
    }
    Ok(t)
}

/// Removes, when dropped, this group's workspaces (their machines with them) and every
/// container the run labelled (the by-hand machines and what ran on them).
struct Leftovers<'a> {
    tools: &'a Tools,
    label: String,
}

impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        let t = self.tools;
        delete_workspaces_named(t, WS_PREFIX);
        let filter = format!("label={}", self.label);
        if let Some(out) = run_cleanup(t.docker(["ps", "-aq", "--filter", &filter])) {
            for id in out.split_whitespace() {
                run_cleanup(t.docker(["rm", "-f", id]));
            }
        }
    }
}

pub fn machines(
    tools: &Tools,
    work: &Path,
    image: &str,
    run_id: &str,
    repetitions: usize,
    warmup: usize,
) -> Result<MachineSamples> {
    let dir = work.join("machine-cloud");
    let project_dir = work.join("machine-project");
    fs::create_dir_all(&dir)?;
    fs::create_dir_all(&project_dir)?;
    fixture::text_files(&project_dir)?;
    let tool = dir.join("machine-tool.sh");
    fs::write(&tool, TOOL)?;
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755))?;
    let docker_cli = which_docker(tools)?;
    let label = format!("{BASELINE_LABEL}={run_id}");
    let yaml = dir.join("provider.yaml");
    fs::write(
        &yaml,
        provider_yaml(&sha256_hex(TOOL.as_bytes()), image, &label, &docker_cli),
    )?;
    let cloud = Cloud {
        tool: tool.clone(),
        log: dir.join("calls.log"),
        prefix: format!("cvm-bench-{run_id}"),
        image: image.to_owned(),
        run_label: label.clone(),
        docker_cli,
        dir,
    };
    let _leftovers = Leftovers {
        tools,
        label: label.clone(),
    };
    run(tools.cvm([
        "provider",
        "add",
        PROVIDER,
        "--type",
        "devpod",
        "--no-input",
        "-o",
        &format!("source={}", yaml.display()),
        "-o",
        &format!("MACHINE_PREFIX={}", cloud.prefix),
        "-o",
        &format!("CALLS_LOG={}", cloud.log.display()),
        // The machines stay up between the steps measured here.
        "-o",
        "machine_idle_stop=0",
    ]))?;
    eprintln!(
        "machine: provider {PROVIDER} added from {}",
        cloud.dir.display()
    );

    let project_s = project_dir.to_string_lossy().into_owned();
    let mut s = MachineSamples {
        up: Samples::default(),
        down: Samples::default(),
        resume: Samples::default(),
        calls: BTreeMap::new(),
        measured: 0,
    };
    for key in ["up", "down", "resume"] {
        s.calls.insert(key, Default::default());
    }
    for i in 0..warmup + repetitions {
        let measured = i >= warmup;
        let ours_first = i % 2 == 0;
        let ws = format!("{WS_PREFIX}{i}");
        let hand = format!("hand-{i}");
        let ctr = format!("claude-vm-bench-m-{run_id}-{i}");

        let mut calls = std::mem::take(&mut s.calls);
        let (ours_calls, hand_calls) = calls.get_mut("up").expect("inserted");
        let u = pair(
            ours_first,
            || {
                counted(&cloud, measured, ours_calls, || {
                    up(
                        tools,
                        &["--provider", PROVIDER, "--name", &ws, &project_s],
                        "created",
                    )
                })
            },
            || {
                counted(&cloud, measured, hand_calls, || {
                    let start = Instant::now();
                    run(cloud.tool("create", &hand))?;
                    cloud.wait_running(&hand)?;
                    run(cloud.command(
                        &hand,
                        &format!(
                            "docker run -d --init -w /workspace --label {label} --name {ctr} {image} sleep infinity"
                        ),
                    ))?;
                    let t = start.elapsed();
                    Ok(t + copy_in(&cloud, &hand, &ctr, &project_dir)?)
                })
            },
        )?;
        let (ours_calls, hand_calls) = calls.get_mut("down").expect("inserted");
        let d = pair(
            ours_first,
            || {
                counted(&cloud, measured, ours_calls, || {
                    Ok(timed(tools.cvm(["workspace", "down", &ws, "--no-backup", "-q"]))?.0)
                })
            },
            || {
                counted(&cloud, measured, hand_calls, || {
                    let start = Instant::now();
                    run(cloud.command(&hand, &format!("docker stop -t 10 {ctr}")))?;
                    run(cloud.tool("stop", &hand))?;
                    Ok(start.elapsed())
                })
            },
        )?;
        let (ours_calls, hand_calls) = calls.get_mut("resume").expect("inserted");
        let r = pair(
            ours_first,
            || {
                counted(&cloud, measured, ours_calls, || {
                    up(tools, &[ws.as_str()], "resumed")
                })
            },
            || {
                counted(&cloud, measured, hand_calls, || {
                    let start = Instant::now();
                    run(cloud.tool("start", &hand))?;
                    cloud.wait_running(&hand)?;
                    run(cloud.command(&hand, &format!("docker start {ctr}")))?;
                    Ok(start.elapsed())
                })
            },
        )?;
        s.calls = calls;
        // Untimed: both machines go, with what ran on them.
        run(tools.cvm(["workspace", "delete", &ws, "-y", "-q", "--force"]))?;
        run(tools.docker(["rm", "-f", &ctr]))?;
        run(cloud.tool("delete", &hand))?;

        let tag = if measured {
            format!("{}/{repetitions}", i - warmup + 1)
        } else {
            format!("warm-up {}/{warmup}", i + 1)
        };
        crate::cycle_line("machine", &tag, u, d, r);
        if measured {
            s.up.push(u);
            s.down.push(d);
            s.resume.push(r);
            s.measured += 1;
        }
    }
    run(tools.cvm(["provider", "delete", PROVIDER, "-y"]))?;
    Ok(s)
}

/// The docker CLI's full path, to mount into the machines.
fn which_docker(tools: &Tools) -> Result<PathBuf> {
    let p = &tools.docker;
    if p.is_absolute() {
        return Ok(p.clone());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
        .with_context(|| format!("cannot find {} on PATH", p.display()))
}

/// `create 1, status 2.0, command 4.0` per sample, from counts summed over `n` samples.
pub fn per_sample(calls: &Calls, n: u32) -> String {
    if calls.is_empty() {
        return "none".to_owned();
    }
    let mut total = 0;
    let parts: Vec<String> = calls
        .iter()
        .map(|(k, v)| {
            total += v;
            format!("{k} {}", fmt_avg(*v, n))
        })
        .collect();
    format!("{} ({} in all)", parts.join(", "), fmt_avg(total, n))
}

fn fmt_avg(v: u32, n: u32) -> String {
    let avg = f64::from(v) / f64::from(n.max(1));
    if (avg - avg.round()).abs() < 1e-9 {
        format!("{avg:.0}")
    } else {
        format!("{avg:.1}")
    }
}
