//! `claude-vm-bench`: how long claude-vm's operations take against the plain docker
//! commands that do the nearest equivalent, measured in the same run on the same image.
//!
//! Groups (run all, or pick with `--only`):
//! - `lifecycle`, `list`: whole-process wall time of `workspace up/down/up/list` against
//!   `docker run + cp`, `stop`, `start`, `ps -a`;
//! - `exec`: `exec true` over an established link, in this process, against `docker exec`;
//! - `cli-exec`: `claude-vm exec WS -- true` against `docker exec CTR true`, whole processes;
//! - `files`: 100 MB into the workspace and back (link in-process, `claude-vm cp`) against
//!   `docker cp` both ways;
//! - `chat`: latency between a client and a stand-in agent (`echo-agent`) through the
//!   daemon, against the same agent behind `docker exec -i`;
//! - `memory`: the daemon's RSS per idle conversation, and the stand-in agents' RSS;
//! - `server`: `claude-vm server` with 50 running workspaces: the list page and API
//!   (time to first byte, full answer) against `docker ps -a`, one conversation's events
//!   fanned out to 100 SSE clients against one client, the server's memory;
//! - `ssh`: `ssh WS.claude-vm true` (OpenSSH through `claude-vm ssh --stdio`) against
//!   `docker exec CTR true`, and scp of the file in and out against `docker cp`.
//! - `backup`: workspace backups of real code (Cargo's registry sources as a git
//!   repository): first, unchanged and one-file-changed backups and a full restore against
//!   the `restic` CLI on the same tree and a local repository.
//! - `devcontainer`: `workspace up` of a project with a devcontainer.json (a Dockerfile and
//!   one local feature): with its image built before, against `docker run` of that image +
//!   `docker cp`; with `--rebuild`, against a classic `docker build` of one equivalent
//!   Dockerfile (layers cached on both sides) + `docker run` + `docker cp`.
//! - `machine`: `workspace up` / `down` / resume on a DevPod machine provider (a stand-in
//!   cloud whose machines are containers) against the same steps by hand with the
//!   provider's own commands, counting the provider commands each side runs.
//!
//! Ours and the baseline alternate within each iteration (and swap order every iteration)
//! so that drift in the machine's load hits both alike.

mod backups;
mod chat;
mod devcontainers;
mod exec;
mod execs;
mod files;
mod fixture;
mod inside;
mod machines;
mod report;
mod server;
mod sshs;
mod stats;
mod wake;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

use crate::exec::{Interrupted, Tools, run, run_cleanup, timed};
use crate::inside::Inside;
use crate::report::{Environment, Memory, OpResult, Report, Target, Throughput};
use crate::stats::Summary;

const DEFAULT_IMAGE: &str = "claude-vm-test-base:bookworm-4";
/// Label on every baseline container, with the run's id as value.
const BASELINE_LABEL: &str = "dev.claude-vm-bench.run";

/// A group of measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Group {
    /// Workspace up (new), down, resume vs docker run+cp, stop, start
    Lifecycle,
    /// `workspace list` vs `docker ps -a`
    List,
    /// exec over an established link (in-process) vs `docker exec`
    Exec,
    /// `claude-vm exec` vs `docker exec`, whole processes
    CliExec,
    /// File throughput: link write/read and `claude-vm cp` vs `docker cp`
    Files,
    /// Conversation latency with a stand-in agent
    Chat,
    /// Daemon memory per idle conversation
    Memory,
    /// The server: list page/API with many workspaces, SSE fan-out, memory
    Server,
    /// OpenSSH through the ProxyCommand: ssh true and scp vs docker exec and docker cp
    Ssh,
    /// Backups and restores of real code vs the restic CLI on the same tree
    Backup,
    /// Waking a workspace that stopped itself vs docker start + the same send; the
    /// server's notification latency
    Wake,
    /// `workspace up` of a devcontainer.json project (image built before, and `--rebuild`)
    /// vs docker run + cp of the same image, and docker build + run + cp
    Devcontainer,
    /// Workspace up / down / resume on a DevPod machine provider vs the provider's own
    /// create + command + docker run + copy, stop, start done by hand
    Machine,
}

impl Group {
    fn name(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "claude-vm-bench",
    about = "Benchmark claude-vm against plain docker commands, in the same run",
    after_help = concat!(
        "Measures (ours vs the baseline, interleaved):\n",
        "  lifecycle  workspace up (new) / down / up (resume)\n",
        "             vs docker run -d --init + docker cp / docker stop / docker start\n",
        "  list       workspace list (20 workspaces) vs docker ps -a\n",
        "  exec       Link::exec([true]) until its exit, in-process, vs docker exec CTR true\n",
        "  cli-exec   claude-vm exec WS -- true vs docker exec CTR true\n",
        "  files      100 MB in and out: link write/read, claude-vm cp vs docker cp\n",
        "  chat       send -> agent stdin, agent stdout -> events(follow) with a stand-in\n",
        "             agent, vs the same agent behind docker exec -i\n",
        "  memory     daemon RSS with 0, 10, 20 idle conversations; the agents' RSS\n",
        "  server     list page and API with 50 running workspaces vs docker ps -a;\n",
        "             SSE fan-out to 100 clients vs 1 client; server RSS\n",
        "  ssh        ssh WS.claude-vm true (OpenSSH, ProxyCommand claude-vm ssh --stdio)\n",
        "             vs docker exec CTR true; scp of the file in and out vs docker cp\n",
        "  backup     workspace backup (first, unchanged, one file changed), restore\n",
        "             vs restic backup / restore of the same tree (Cargo's registry sources)\n",
        "  wake       chat send --wait to a workspace that stopped itself vs docker start of a\n",
        "             stopped container + the same send to the running workspace; turn end\n",
        "             -> webhook receiver under claude-vm server (p99)\n",
        "  devcontainer\n",
        "             workspace up of a project with a devcontainer.json (Dockerfile + one\n",
        "             local feature), image built before, vs docker run -d IMG + docker cp;\n",
        "             workspace up --rebuild vs docker build (classic, cached) of one\n",
        "             equivalent Dockerfile + docker run -d + docker cp\n",
        "  machine    workspace up / down / up on a DevPod machine provider (stand-in:\n",
        "             containers as machines) vs by hand: create + status + command\n",
        "             docker run + docker cp; command docker stop + stop; start + status\n",
        "             + command docker start; provider commands counted on both sides\n\n",
        "Build the binaries under test first:\n",
        "  cargo build --release -p claude-vm -p claude-vm-bench\n",
        "Everything created is removed at the end, also after a failure or Ctrl-C."
    )
)]
struct Args {
    /// Run only these groups (repeat, or separate with commas) [default: all]
    #[arg(long, value_enum, value_delimiter = ',', value_name = "GROUP")]
    only: Vec<Group>,
    /// Measured iterations of up, down and resume
    #[arg(long, short = 'n', default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Measured repetitions of `workspace list`
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    list_repetitions: u32,
    /// Number of workspaces that exist while `workspace list` is measured
    #[arg(long, default_value_t = 20)]
    list_workspaces: u32,
    /// Measured link execs (and as many `docker exec`s)
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    exec_samples: u32,
    /// Measured `claude-vm exec` runs (and as many `docker exec`s)
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    cli_exec_samples: u32,
    /// Size of the file moved in and out, in MB (10^6 bytes)
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    file_mb: u32,
    /// Measured round trips of the file, each way
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    file_repetitions: u32,
    /// Measured conversation messages (one at a time)
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    messages: u32,
    /// Pause after each conversation exchange, in milliseconds
    #[arg(long, default_value_t = 10, value_name = "MS")]
    message_pause: u64,
    /// Idle conversations for the memory measurement
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    idle_conversations: u32,
    /// Running workspaces while the server is measured
    #[arg(long, default_value_t = 50)]
    server_workspaces: u32,
    /// SSE clients following one conversation
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    sse_clients: u32,
    /// Measured loads of the list page and API
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    server_repetitions: u32,
    /// Messages fanned out to the SSE clients
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    fanout_messages: u32,
    /// Size of the tree the backup group backs up, at most, in MB
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    backup_mb: u64,
    /// Measured wakes of a workspace that stopped itself
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    wake_repetitions: u32,
    /// Turns whose notification latency is measured
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    notify_turns: u32,
    /// Measured `workspace up`s of the devcontainer project, and as many with `--rebuild`
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    devcontainer_repetitions: u32,
    /// Measured up / down / resume cycles on the machine provider (a new machine each)
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    machine_repetitions: u32,
    /// Measured repetitions of each backup operation
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    backup_repetitions: u32,
    /// Unmeasured rounds first, to warm caches: this many lifecycle iterations, list
    /// repetitions, file round trips and `claude-vm exec`s x3; link execs x20, messages x10
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// The claude-vm binary [default: claude-vm next to this program, i.e. target/release]
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// The stand-in agent [default: echo-agent next to this program]
    #[arg(long, value_name = "PATH")]
    agent: Option<PathBuf>,
    /// Image for the workspaces and the baseline containers (must be present locally)
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// The docker CLI
    #[arg(long, default_value = "docker", value_name = "PATH")]
    docker: PathBuf,
    /// Print the results as JSON instead of tables
    #[arg(long)]
    json: bool,
    /// Also write the JSON results (every sample, the environment) to this file
    #[arg(long, value_name = "PATH")]
    save: Option<PathBuf>,
    /// Exit with status 1 when a target is missed
    #[arg(long)]
    check: bool,
}

impl Args {
    fn runs(&self, g: Group) -> bool {
        self.only.is_empty() || self.only.contains(&g)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match bench(&args) {
        Ok(report) => {
            if let Some(path) = &args.save {
                let saved = serde_json::to_vec_pretty(&report)
                    .map_err(std::io::Error::other)
                    .and_then(|json| std::fs::write(path, json));
                if let Err(e) = saved {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", report.table());
            }
            if args.check && !report.pass {
                eprintln!("claude-vm-bench: some targets were missed");
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("claude-vm-bench: interrupted; everything it created was removed");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("claude-vm-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Removes every workspace of the benchmark's home and every baseline container of this run
/// when dropped (on success, error, Ctrl-C or panic).
struct Cleanup<'a> {
    tools: &'a Tools,
    run_id: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        eprintln!("cleaning up");
        let t = self.tools;
        if let Some(out) = run_cleanup(t.cvm(["workspace", "list", "--json"])) {
            match serde_json::from_str::<Vec<serde_json::Value>>(&out) {
                Ok(list) => {
                    for w in list {
                        let Some(id) = w.get("id").and_then(|v| v.as_str()) else {
                            continue;
                        };
                        if run_cleanup(t.cvm(["workspace", "delete", id, "-y", "-q"])).is_none() {
                            // Fall back to the resources' names (see the docker provider).
                            let name = format!("claude-vm-{id}");
                            run_cleanup(t.docker(["rm", "-f", &name]));
                            run_cleanup(t.docker(["volume", "rm", "-f", &name]));
                        }
                    }
                }
                Err(e) => eprintln!("cleanup: cannot read the workspace list: {e}"),
            }
        }
        let filter = format!("label={BASELINE_LABEL}={}", self.run_id);
        if let Some(out) = run_cleanup(t.docker(["ps", "-aq", "--filter", &filter])) {
            let ids: Vec<&str> = out.split_whitespace().collect();
            if !ids.is_empty() {
                let mut cmd = t.docker(["rm", "-f"]);
                cmd.args(&ids);
                run_cleanup(cmd);
            }
        }
    }
}

/// Samples of ours and of the baseline for one operation.
#[derive(Default)]
struct Samples {
    ours: Vec<Duration>,
    baseline: Vec<Duration>,
}

impl Samples {
    fn push(&mut self, (ours, baseline): (Duration, Duration)) {
        self.ours.push(ours);
        self.baseline.push(baseline);
    }
}

/// Run ours and the baseline one after the other, ours first when `ours_first`.
fn pair(
    ours_first: bool,
    ours: impl FnOnce() -> Result<Duration>,
    baseline: impl FnOnce() -> Result<Duration>,
) -> Result<(Duration, Duration)> {
    if ours_first {
        let o = ours()?;
        Ok((o, baseline()?))
    } else {
        let b = baseline()?;
        Ok((ours()?, b))
    }
}

/// The progress line of one up / down / resume cycle: ours vs the baseline for each.
fn cycle_line(
    group: &str,
    tag: &str,
    u: (Duration, Duration),
    d: (Duration, Duration),
    r: (Duration, Duration),
) {
    eprintln!(
        "{group} {tag}: up {} vs {} ms, down {} vs {} ms, resume {} vs {} ms",
        ms(u.0),
        ms(u.1),
        ms(d.0),
        ms(d.1),
        ms(r.0),
        ms(r.1)
    );
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

/// The 1-minute load average (Linux).
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A program next to this one (both are built into target/release).
fn sibling(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    Ok(me.with_file_name(name))
}

fn bench(args: &Args) -> Result<Report> {
    exec::catch_interrupts()?;
    let started = Instant::now();
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => sibling("claude-vm")?,
    };
    if !bin.is_file() {
        bail!(
            "no claude-vm binary at {}: build it with `cargo build --release -p claude-vm`, or pass --bin",
            bin.display()
        );
    }
    let bin = bin.canonicalize()?;
    let bin_bytes = bin.metadata()?.len();
    let conversations = args.runs(Group::Chat)
        || args.runs(Group::Memory)
        || args.runs(Group::Server)
        || args.runs(Group::Wake);
    let agent = if conversations {
        let agent = match &args.agent {
            Some(a) => a.clone(),
            None => sibling("echo-agent")?,
        };
        if !agent.is_file() {
            bail!(
                "no stand-in agent at {}: build it with `cargo build --release -p claude-vm-bench`, or pass --agent",
                agent.display()
            );
        }
        Some(agent.canonicalize()?)
    } else {
        None
    };

    let home = tempfile::Builder::new()
        .prefix("claude-vm-bench-home.")
        .tempdir()?;
    let repo_dir = tempfile::Builder::new()
        .prefix("claude-vm-bench-repo.")
        .tempdir()?;
    // A project folder named like a project, not like a temp dir.
    let repo = repo_dir.path().join("bench-project");
    std::fs::create_dir(&repo)?;
    let tools = Tools {
        bin,
        docker: args.docker.clone(),
        home: home.path().to_owned(),
    };

    let info = run(tools.docker([
        "info",
        "--format",
        "{{.ServerVersion}}|{{.Driver}}|{{.KernelVersion}}|{{.NCPU}}",
    ]))
    .context("cannot talk to the Docker engine")?;
    let info: Vec<&str> = info.trim().split('|').collect();
    if run(tools.docker(["image", "inspect", "--format", "{{.Id}}", &args.image])).is_err() {
        bail!(
            "image {} is not present on the engine (for the default one, run scripts/base-image.sh)",
            args.image
        );
    }
    // `default_image` for every workspace, and the stand-in agent as `claude`; a JSON
    // string is a valid YAML scalar.
    let mut config = format!("default_image: {}\n", serde_json::to_string(&args.image)?);
    if let Some(agent) = &agent {
        config.push_str(&format!(
            "agents:\n  claude:\n    binary: {}\n    turn_timeout: 600\n    env:\n      ANTHROPIC_API_KEY: stand-in\n",
            serde_json::to_string(&agent.display().to_string())?
        ));
    }
    std::fs::write(home.path().join("config.yaml"), config)?;
    fixture::small_repo(&repo)?;

    let groups: Vec<Group> = Group::value_variants()
        .iter()
        .copied()
        .filter(|g| args.runs(*g))
        .collect();
    let warmup = args.warmup as usize;
    let mut environment = Environment {
        date: jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M UTC")
            .to_string(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        docker_version: info.first().unwrap_or(&"?").to_string(),
        storage_driver: info.get(1).unwrap_or(&"?").to_string(),
        kernel: info.get(2).unwrap_or(&"?").to_string(),
        image: args.image.clone(),
        claude_vm_bin: tools.bin.display().to_string(),
        claude_vm_bin_bytes: bin_bytes,
        groups: groups.iter().map(|g| g.name()).collect(),
        iterations: args.iterations as usize,
        list_repetitions: args.list_repetitions as usize,
        list_workspaces: args.list_workspaces as usize,
        warmup,
        exec_samples: args.exec_samples as usize,
        cli_exec_samples: args.cli_exec_samples as usize,
        file_bytes: u64::from(args.file_mb) * 1_000_000,
        file_repetitions: args.file_repetitions as usize,
        messages: args.messages as usize,
        idle_conversations: args.idle_conversations as usize,
        loadavg_start: loadavg(),
        loadavg_end: None,
        duration_s: 0.0,
    };
    eprintln!(
        "claude-vm-bench: {}: {} ({:.1} MiB), image {}, Docker {} ({}), {} CPUs; groups: {}",
        environment.date,
        environment.claude_vm_bin,
        bin_bytes as f64 / 1048576.0,
        environment.image,
        environment.docker_version,
        environment.storage_driver,
        environment.cpus,
        environment.groups.join(", "),
    );

    let run_id = format!(
        "{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 0xffff_ffff)
    );
    let _cleanup = Cleanup {
        tools: &tools,
        run_id: run_id.clone(),
    };

    let mut results = Vec::new();
    let mut throughput = Vec::new();
    let mut memory = None;
    let repo_s = repo.display().to_string();

    if args.runs(Group::Lifecycle) {
        let (up, down, resume) = lifecycle(args, &tools, &repo, &run_id)?;
        results.push(OpResult::new(
            "up",
            format!("new workspace up ({} files + .git)", fixture::FILES + 1),
            format!("claude-vm workspace up {repo_s} --name NAME -q"),
            format!(
                "docker run -d --init {} sleep infinity + docker cp {repo_s}/. CTR:/workspace/",
                args.image
            ),
            Summary::of(&up.ours),
            Summary::of(&up.baseline),
            Target::MaxRatio { ratio: 1.5 },
        ));
        results.push(OpResult::new(
            "down",
            "workspace down",
            "claude-vm workspace down NAME -q",
            "docker stop CTR",
            Summary::of(&down.ours),
            Summary::of(&down.baseline),
            Target::None,
        ));
        results.push(OpResult::new(
            "resume",
            "resume (up on a stopped workspace)",
            "claude-vm workspace up NAME -q",
            "docker start CTR",
            Summary::of(&resume.ours),
            Summary::of(&resume.baseline),
            Target::MaxRatio { ratio: 1.2 },
        ));
    }
    if args.runs(Group::List) {
        let list = list(args, &tools, &repo)?;
        results.push(OpResult::new(
            "list",
            format!("workspace list ({} workspaces)", args.list_workspaces),
            "claude-vm workspace list",
            "docker ps -a",
            Summary::of(&list.ours),
            Summary::of(&list.baseline),
            Target::MaxP50Ms { ms: 150.0 },
        ));
    }

    let linked = [
        Group::Exec,
        Group::CliExec,
        Group::Files,
        Group::Chat,
        Group::Ssh,
    ];
    let inside = if linked.iter().any(|g| args.runs(*g)) || args.runs(Group::Memory) {
        Some(Inside::open(&tools)?)
    } else {
        None
    };
    if let Some(inside) = &inside
        && linked.iter().any(|g| args.runs(*g))
    {
        // One running workspace for these groups, linked to from this process.
        let ws = inside.workspace(&tools, &repo, "bench-io")?;
        eprintln!("workspace bench-io is up ({})", ws.container);
        if args.runs(Group::Exec) {
            let (s, noop) =
                execs::link_exec(inside, &tools, &ws, args.exec_samples as usize, 20 * warmup)?;
            results.push(OpResult::new(
                "exec_link",
                "exec `true` over an established link (in-process)",
                "Link::exec([\"true\"]) until the exit event",
                "docker exec CTR true",
                Summary::of(&s.ours),
                Summary::of(&s.baseline),
                Target::MaxP50Ms { ms: 10.0 },
            ));
            results.push(OpResult::alone(
                "link_noop",
                "a request that does nothing, same link",
                "Link::activity() (GET /v1/activity)",
                Summary::of(&noop),
            ));
        }
        if args.runs(Group::CliExec) {
            let s = execs::cli_exec(&tools, &ws, args.cli_exec_samples as usize, 3 * warmup)?;
            results.push(OpResult::new(
                "exec_cli",
                "claude-vm exec WS -- true",
                "claude-vm exec NAME -- true",
                "docker exec CTR true",
                Summary::of(&s.ours),
                Summary::of(&s.baseline),
                Target::MaxRatio { ratio: 1.2 },
            ));
        }
        if args.runs(Group::Files) {
            let bytes = environment.file_bytes;
            let s = files::throughput(
                inside,
                &tools,
                &ws,
                bytes as usize,
                args.file_repetitions as usize,
                warmup,
            )?;
            let mb = args.file_mb;
            let rows = [
                (
                    "file_in_link",
                    format!("{mb} MB in: link write (in-process)"),
                    "Link::write(PATH, full(bytes))",
                    "docker cp FILE CTR:PATH",
                    &s.link_in,
                    &s.docker_in,
                ),
                (
                    "file_in_cli",
                    format!("{mb} MB in: claude-vm cp"),
                    "claude-vm cp FILE NAME:PATH",
                    "docker cp FILE CTR:PATH",
                    &s.cli_in,
                    &s.docker_in,
                ),
                (
                    "file_out_link",
                    format!("{mb} MB out: link read (in-process)"),
                    "Link::read(PATH) into memory",
                    "docker cp CTR:PATH FILE",
                    &s.link_out,
                    &s.docker_out,
                ),
                (
                    "file_out_cli",
                    format!("{mb} MB out: claude-vm cp"),
                    "claude-vm cp NAME:PATH FILE",
                    "docker cp CTR:PATH FILE",
                    &s.cli_out,
                    &s.docker_out,
                ),
            ];
            for (key, op, ours, base, o, b) in rows {
                throughput.push(Throughput::new(
                    key,
                    op,
                    ours,
                    base,
                    bytes,
                    Summary::of(o),
                    Summary::of(b),
                ));
            }
        }
        if args.runs(Group::Chat) {
            let agent_name = agent_file_name(agent.as_deref())?;
            let s = chat::latency(
                inside,
                &tools,
                &ws,
                &agent_name,
                args.messages as usize,
                10 * warmup,
                Duration::from_millis(args.message_pause),
            )?;
            let pipe = "docker exec -i CTR echo-agent (stdin/stdout pipe)".to_owned();
            let target = Target::MaxP99Ms { ms: 20.0 };
            results.push(OpResult::latency(
                "chat_send_to_agent",
                "send -> agent reads the message",
                "Link::send_message until the agent's read()",
                Summary::of_ms(s.send_to_agent),
                Some((pipe.clone(), Summary::of_ms(s.base_send_to_agent))),
                target,
            ));
            results.push(OpResult::latency(
                "chat_agent_to_follower",
                "agent writes its answer -> follower has it",
                "agent's write() until Link::events(follow) yields the assistant event",
                Summary::of_ms(s.agent_to_follower),
                Some((pipe.clone(), Summary::of_ms(s.base_agent_to_follower))),
                target,
            ));
            results.push(OpResult::latency(
                "chat_round_trip",
                "send -> answer at the follower",
                "Link::send_message until the follower has the assistant event",
                Summary::of_ms(s.round_trip),
                Some((pipe, Summary::of_ms(s.base_round_trip))),
                Target::None,
            ));
            results.push(OpResult::latency(
                "chat_send_ack",
                "send_message acknowledged (on disk)",
                "Link::send_message until its answer",
                Summary::of_ms(s.send_ack),
                None,
                Target::None,
            ));
        }
        if args.runs(Group::Ssh) {
            let ssh = sshs::Ssh::setup(&tools, &ws)?;
            let s = sshs::round_trip(
                &tools,
                &ssh,
                &ws,
                args.cli_exec_samples as usize,
                3 * warmup,
            )?;
            results.push(OpResult::new(
                "ssh_true",
                "ssh WS.claude-vm true (OpenSSH via claude-vm ssh --stdio)",
                "ssh -F $CLAUDE_VM_HOME/ssh_config NAME.claude-vm true",
                "docker exec CTR true",
                Summary::of(&s.ours),
                Summary::of(&s.baseline),
                Target::None,
            ));
            let bytes = environment.file_bytes;
            let c = sshs::copies(
                &tools,
                &ssh,
                &ws,
                bytes as usize,
                args.file_repetitions as usize,
                warmup,
            )?;
            let mb = args.file_mb;
            throughput.push(Throughput::new(
                "scp_in",
                format!("{mb} MB in: scp"),
                "scp FILE NAME.claude-vm:PATH",
                "docker cp FILE CTR:PATH",
                bytes,
                Summary::of(&c.scp_in.ours),
                Summary::of(&c.scp_in.baseline),
            ));
            throughput.push(Throughput::new(
                "scp_out",
                format!("{mb} MB out: scp"),
                "scp NAME.claude-vm:PATH FILE",
                "docker cp CTR:PATH FILE",
                bytes,
                Summary::of(&c.scp_out.ours),
                Summary::of(&c.scp_out.baseline),
            ));
        }
    }
    if let Some(inside) = &inside
        && args.runs(Group::Memory)
    {
        // A fresh workspace: nothing but the link has touched its daemon yet.
        let ws = inside.workspace(&tools, &repo, "bench-mem")?;
        let points = chat::memory(
            inside,
            &tools,
            &ws,
            args.idle_conversations as usize,
            Duration::from_secs(1),
        )?;
        memory = Some(Memory::new(points));
    }

    if args.runs(Group::Wake) {
        let label = format!("{BASELINE_LABEL}={run_id}");
        let w = wake::wake(
            &tools,
            &repo,
            &args.image,
            &label,
            args.wake_repetitions as usize,
            args.notify_turns as usize,
        )?;
        results.push(OpResult::new(
            "wake",
            "chat send --wait to a workspace that stopped itself (wake, then the turn)",
            "claude-vm chat send -c CONV MSG --wait",
            "docker start CTR + claude-vm chat send -c CONV MSG --wait (running)",
            Summary::of(&w.ours),
            Summary::of(&w.baseline),
            Target::MaxRatio { ratio: 1.3 },
        ));
        results.push(OpResult::latency(
            "notify_latency",
            "turn end -> webhook receiver (claude-vm server)",
            "the turn_end event's time until the receiver has the POST",
            Summary::of_ms(w.notify_ms),
            None,
            Target::MaxP99Ms { ms: 1000.0 },
        ));
    }
    if args.runs(Group::Devcontainer) {
        let d = devcontainers::devcontainer(
            &tools,
            repo_dir.path(),
            &args.image,
            &run_id,
            args.devcontainer_repetitions as usize,
            warmup,
        )?;
        let files = fixture::TEXT_FILES;
        results.push(OpResult::new(
            "devcontainer_up",
            format!("up, devcontainer image built before ({files} files + .devcontainer)"),
            format!(
                "claude-vm workspace up --json --name NAME FOLDER (FOLDER/.devcontainer: a Dockerfile FROM {} and one local feature; its image {} built by an untimed first up)",
                args.image, d.image
            ),
            format!(
                "docker run -d --init {} sleep infinity + docker cp FOLDER/. CTR:/workspace/ (sum of both)",
                d.image
            ),
            Summary::of(&d.up.ours),
            Summary::of(&d.up.baseline),
            Target::MaxRatio { ratio: 1.5 },
        ));
        results.push(OpResult::new(
            "devcontainer_rebuild",
            format!("up --rebuild, Dockerfile + 1 local feature, layers cached ({files} files)"),
            "claude-vm workspace up --json --rebuild --name NAME FOLDER (docker build of the Dockerfile, then of the generated features Dockerfile, both classic and with every layer cached; then the workspace is created)",
            format!(
                "DOCKER_BUILDKIT=0 docker build -q -t IMG CTX (FROM {}, the same RUN, COPY of the feature's folder, RUN its install.sh; every layer cached) + docker run -d --init IMG sleep infinity + docker cp FOLDER/. CTR:/workspace/ (sum of the three)",
                args.image
            ),
            Summary::of(&d.rebuild.ours),
            Summary::of(&d.rebuild.baseline),
            Target::MaxRatio { ratio: 1.2 },
        ));
    }
    if args.runs(Group::Machine) {
        let m = machines::machines(
            &tools,
            repo_dir.path(),
            &args.image,
            &run_id,
            args.machine_repetitions as usize,
            warmup,
        )?;
        let files = fixture::TEXT_FILES;
        let calls = |key: &str| {
            let (ours, hand) = &m.calls[key];
            format!(
                "provider commands per run: ours {}; by hand {}",
                machines::per_sample(ours, m.measured),
                machines::per_sample(hand, m.measured)
            )
        };
        for key in ["up", "down", "resume"] {
            eprintln!("machine {key}: {}", calls(key));
        }
        results.push(OpResult::new(
            "machine_up",
            format!("up on a new machine ({files} files; {})", calls("up")),
            "claude-vm workspace up --json --provider P --name NAME FOLDER (devpod provider: create, status until Running, claude-vm installed on the machine through exec.command, the workspace made there)",
            format!(
                "by hand: TOOL create + TOOL status until Running + TOOL command 'docker run -d --init -w /workspace {} sleep infinity' + tar c FOLDER | TOOL command 'docker cp - CTR:/workspace/'",
                args.image
            ),
            Summary::of(&m.up.ours),
            Summary::of(&m.up.baseline),
            Target::MaxRatio { ratio: 1.3 },
        ));
        results.push(OpResult::new(
            "machine_down",
            format!("down, then its machine ({})", calls("down")),
            "claude-vm workspace down NAME --no-backup -q",
            "by hand: TOOL command 'docker stop CTR' + TOOL stop",
            Summary::of(&m.down.ours),
            Summary::of(&m.down.baseline),
            Target::None,
        ));
        results.push(OpResult::new(
            "machine_resume",
            format!(
                "up of a stopped one: machine, then workspace ({})",
                calls("resume")
            ),
            "claude-vm workspace up --json NAME",
            "by hand: TOOL start + TOOL status until Running + TOOL command 'docker start CTR'",
            Summary::of(&m.resume.ours),
            Summary::of(&m.resume.baseline),
            Target::MaxRatio { ratio: 1.3 },
        ));
    }
    if args.runs(Group::Backup) {
        let b = backups::backups(&tools, args.backup_mb, args.backup_repetitions as usize)?;
        let size = format!(
            "{:.0} MB, {} files",
            b.tree_bytes as f64 / 1e6,
            b.tree_files
        );
        results.push(OpResult::new(
            "backup_first",
            format!("first backup of a workspace ({size})"),
            "claude-vm workspace backup NAME",
            "restic backup DIR (new local repository)",
            Summary::of(&b.first.ours),
            Summary::of(&b.first.baseline),
            Target::MaxRatio { ratio: 1.5 },
        ));
        results.push(OpResult::new(
            "backup_unchanged",
            format!("backup, nothing changed ({size})"),
            "claude-vm workspace backup NAME",
            "restic backup DIR",
            Summary::of(&b.unchanged.ours),
            Summary::of(&b.unchanged.baseline),
            Target::MaxP50Ms { ms: 2000.0 },
        ));
        results.push(OpResult::new(
            "backup_one_file",
            format!(
                "backup, one {:.0} MB file new (added: ours {:.2} MB, restic {:.2} MB; target < 2x the file)",
                b.changed_file_bytes as f64 / 1e6,
                b.ours_added as f64 / 1e6,
                b.baseline_added as f64 / 1e6
            ),
            "claude-vm workspace backup NAME",
            "restic backup DIR",
            Summary::of(&b.one_file.ours),
            Summary::of(&b.one_file.baseline),
            Target::None,
        ));
        results.push(OpResult::new(
            "restore",
            format!("full restore ({size})"),
            "claude-vm workspace restore NAME --name NEW (a new workspace)",
            "restic restore latest --target DIR",
            Summary::of(&b.restore.ours),
            Summary::of(&b.restore.baseline),
            Target::MaxRatio { ratio: 1.5 },
        ));
        if b.ours_added >= 2 * b.changed_file_bytes {
            eprintln!(
                "backup: a one-file change added {} bytes, over twice the file's {}",
                b.ours_added, b.changed_file_bytes
            );
        }
    }

    let mut server_memory = None;
    if args.runs(Group::Server) {
        let s = server::server(
            &tools,
            &repo,
            args.server_workspaces as usize,
            args.sse_clients as usize,
            args.server_repetitions as usize,
            args.fanout_messages as usize,
        )?;
        let n = args.server_workspaces;
        let lists = [
            (
                "server_page_ttfb",
                "workspace list page, first byte",
                "GET / (HTTP/1.0, bearer token)",
                &s.page_ttfb,
                200.0,
            ),
            (
                "server_page_full",
                "workspace list page, whole page",
                "GET / until the connection closes",
                &s.page_full,
                250.0,
            ),
            (
                "server_api_list",
                "GET /api/v1/workspaces",
                "GET /api/v1/workspaces until the connection closes",
                &s.api_full,
                250.0,
            ),
        ];
        for (key, op, ours, samples, ms) in lists {
            results.push(OpResult::new(
                key,
                format!("{op} ({n} running)"),
                ours,
                "docker ps -a",
                Summary::of(samples),
                Summary::of(&s.docker_ps),
                Target::MaxP50Ms { ms },
            ));
        }
        results.push(OpResult::latency(
            "server_sse_fanout",
            format!(
                "send -> the user event at each of {} SSE clients",
                args.sse_clients
            ),
            "POST /messages until each client's EventSource stream has it",
            Summary::of_ms(s.fanout_many),
            Some((
                "the same, one SSE client".to_owned(),
                Summary::of_ms(s.fanout_one),
            )),
            Target::MaxP99Ms { ms: 100.0 },
        ));
        server_memory = Some(s.memory);
    }

    environment.loadavg_end = loadavg();
    environment.duration_s = started.elapsed().as_secs_f64();
    let show = |l: Option<f64>| l.map_or("?".to_owned(), |l| format!("{l:.2}"));
    eprintln!(
        "load average (1 min): {} at the start, {} at the end; {:.0} s in all",
        show(environment.loadavg_start),
        show(environment.loadavg_end),
        environment.duration_s,
    );
    let mut report = Report::new(environment, results, throughput, memory);
    report.server_memory = server_memory;
    Ok(report)
}

/// The file name the stand-in agent has inside workspaces.
fn agent_file_name(agent: Option<&Path>) -> Result<String> {
    agent
        .and_then(|a| a.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .context("no stand-in agent")
}

/// Create, stop, resume (and, untimed, delete) a workspace and a baseline container per
/// iteration.
fn lifecycle(
    args: &Args,
    tools: &Tools,
    repo: &Path,
    run_id: &str,
) -> Result<(Samples, Samples, Samples)> {
    let (mut up, mut down, mut resume) =
        (Samples::default(), Samples::default(), Samples::default());
    let warmup = args.warmup as usize;
    let total = warmup + args.iterations as usize;
    let label = format!("{BASELINE_LABEL}={run_id}");
    for i in 0..total {
        let measured = i >= warmup;
        let ours_first = i % 2 == 0;
        let ws = format!("bench-{i}");
        let ctr = format!("claude-vm-bench-{run_id}-{i}");

        let ours_up = || {
            let mut cmd = tools.cvm(["workspace", "up"]);
            cmd.arg(repo).args(["--name", &ws, "-q"]);
            let (t, out) = timed(cmd)?;
            if out.trim() != ws {
                bail!("`workspace up` printed {out:?}, expected the name {ws:?}");
            }
            Ok(t)
        };
        let base_up = || {
            let (t1, _) = timed(tools.docker([
                "run",
                "-d",
                "--init",
                "--label",
                &label,
                "--name",
                &ctr,
                &args.image,
                "sleep",
                "infinity",
            ]))?;
            let mut src = repo.as_os_str().to_owned();
            src.push("/.");
            let mut cp = tools.docker(["cp"]);
            cp.arg(src).arg(format!("{ctr}:/workspace/"));
            let (t2, _) = timed(cp)?;
            Ok(t1 + t2)
        };
        let u = pair(ours_first, ours_up, base_up)?;
        let d = pair(
            ours_first,
            || Ok(timed(tools.cvm(["workspace", "down", &ws, "-q"]))?.0),
            || Ok(timed(tools.docker(["stop", &ctr]))?.0),
        )?;
        let r = pair(
            ours_first,
            || Ok(timed(tools.cvm(["workspace", "up", &ws, "-q"]))?.0),
            || Ok(timed(tools.docker(["start", &ctr]))?.0),
        )?;
        let tag = if measured {
            format!("{}/{}", i - warmup + 1, args.iterations)
        } else {
            format!("warm-up {}/{}", i + 1, warmup)
        };
        cycle_line("lifecycle", &tag, u, d, r);
        run(tools.cvm(["workspace", "delete", &ws, "-y", "-q"]))?;
        run(tools.docker(["rm", "-f", &ctr]))?;
        if measured {
            up.push(u);
            down.push(d);
            resume.push(r);
        }
    }
    Ok((up, down, resume))
}

/// Create `list_workspaces` stopped workspaces, then time `workspace list` against
/// `docker ps -a`.
fn list(args: &Args, tools: &Tools, repo: &Path) -> Result<Samples> {
    let n = args.list_workspaces as usize;
    let tty = std::io::stderr().is_terminal();
    for k in 0..n {
        let ws = format!("listed-{k}");
        let mut cmd = tools.cvm(["workspace", "up"]);
        cmd.arg(repo).args(["--name", &ws, "-q"]);
        run(cmd)?;
        run(tools.cvm(["workspace", "down", &ws, "-q"]))?;
        let done = k + 1;
        if tty {
            eprint!("\rcreated {done}/{n} stopped workspaces for `workspace list`");
        } else if done == n || done % 5 == 0 {
            eprintln!("created {done}/{n} stopped workspaces for `workspace list`");
        }
    }
    if tty && n > 0 {
        eprintln!();
    }
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&run(tools.cvm(["workspace", "list", "--json"]))?)
            .context("`workspace list --json` printed something else than a JSON array")?;
    if listed.len() != n {
        bail!(
            "`workspace list` shows {} workspaces, expected {n}",
            listed.len()
        );
    }

    let mut samples = Samples::default();
    let warmup = args.warmup as usize;
    let total = warmup + args.list_repetitions as usize;
    for i in 0..total {
        let s = pair(
            i % 2 == 0,
            || Ok(timed(tools.cvm(["workspace", "list"]))?.0),
            || Ok(timed(tools.docker(["ps", "-a"]))?.0),
        )?;
        if i >= warmup {
            samples.push(s);
        }
    }
    let summary = Summary::of(&samples.ours);
    eprintln!(
        "list: {} repetitions, ours p50 {:.1} ms",
        args.list_repetitions, summary.p50_ms
    );
    Ok(samples)
}
