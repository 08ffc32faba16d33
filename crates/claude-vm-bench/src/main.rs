//! `claude-vm-bench`: wall time of claude-vm's workspace commands against the plain docker
//! commands that do the nearest equivalent, measured in the same run on the same image.
//!
//! Every sample is the wall time of a whole process (spawn to exit) of the real binaries,
//! so it includes process start-up, connecting to the engine, and everything the command
//! waits for. Ours and the baseline alternate within each iteration (and swap order every
//! iteration) so that drift in the machine's load hits both alike.

mod exec;
mod fixture;
mod report;
mod stats;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::exec::{Interrupted, Tools, run, run_cleanup, timed};
use crate::report::{Environment, OpResult, Report, Target};
use crate::stats::Summary;

const DEFAULT_IMAGE: &str = "claude-vm-test-base:bookworm-1";
/// Label on every baseline container, with the run's id as value.
const BASELINE_LABEL: &str = "dev.claude-vm-bench.run";

#[derive(Debug, Parser)]
#[command(
    name = "claude-vm-bench",
    about = "Benchmark claude-vm's workspace lifecycle against plain docker commands",
    after_help = "Measures (whole-process wall time, p50/p95, ours and baseline interleaved):\n  \
        new workspace up   vs  docker run -d --init IMG sleep infinity + docker cp DIR/. CTR:/workspace/\n  \
        workspace down     vs  docker stop CTR\n  \
        resume (up NAME)   vs  docker start CTR\n  \
        workspace list     vs  docker ps -a        (with 20 workspaces existing)\n\n\
        Build the binary under test first: cargo build --release -p claude-vm\n\
        Everything created is removed at the end, also after a failure or Ctrl-C."
)]
struct Args {
    /// Measured iterations of up, down and resume
    #[arg(long, short = 'n', default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Measured repetitions of `workspace list`
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    list_repetitions: u32,
    /// Number of workspaces that exist while `workspace list` is measured
    #[arg(long, default_value_t = 20)]
    list_workspaces: u32,
    /// Unmeasured iterations (and list repetitions) run first, to warm caches
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// The claude-vm binary [default: claude-vm next to this program, i.e. target/release]
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Image for the workspaces and the baseline containers (must be present locally)
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// The docker CLI
    #[arg(long, default_value = "docker", value_name = "PATH")]
    docker: PathBuf,
    /// Print the results as JSON instead of a table
    #[arg(long)]
    json: bool,
    /// Exit with status 1 when a target is missed
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match bench(&args) {
        Ok(report) => {
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

fn default_bin() -> Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    Ok(me.with_file_name("claude-vm"))
}

fn bench(args: &Args) -> Result<Report> {
    exec::catch_interrupts()?;
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => default_bin()?,
    };
    if !bin.is_file() {
        bail!(
            "no claude-vm binary at {}: build it with `cargo build --release -p claude-vm`, or pass --bin",
            bin.display()
        );
    }
    let bin = bin.canonicalize()?;
    let bin_bytes = bin.metadata()?.len();

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
    // `default_image` for every workspace; a JSON string is a valid YAML scalar.
    std::fs::write(
        home.path().join("config.yaml"),
        format!("default_image: {}\n", serde_json::to_string(&args.image)?),
    )?;
    fixture::small_repo(&repo)?;

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
        iterations: args.iterations as usize,
        list_repetitions: args.list_repetitions as usize,
        list_workspaces: args.list_workspaces as usize,
        warmup: args.warmup as usize,
        loadavg_start: loadavg(),
        loadavg_end: None,
    };
    eprintln!(
        "claude-vm-bench: {}: {} ({:.1} MiB), image {}, Docker {} ({}), {} CPUs",
        environment.date,
        environment.claude_vm_bin,
        bin_bytes as f64 / 1048576.0,
        environment.image,
        environment.docker_version,
        environment.storage_driver,
        environment.cpus,
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

    let (up, down, resume) = lifecycle(args, &tools, &repo, &run_id)?;
    let list = list(args, &tools, &repo)?;

    let repo_s = repo.display().to_string();
    let results = vec![
        OpResult::new(
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
        ),
        OpResult::new(
            "down",
            "workspace down",
            "claude-vm workspace down NAME -q",
            "docker stop CTR",
            Summary::of(&down.ours),
            Summary::of(&down.baseline),
            Target::None,
        ),
        OpResult::new(
            "resume",
            "resume (up on a stopped workspace)",
            "claude-vm workspace up NAME -q",
            "docker start CTR",
            Summary::of(&resume.ours),
            Summary::of(&resume.baseline),
            Target::MaxRatio { ratio: 1.2 },
        ),
        OpResult::new(
            "list",
            format!("workspace list ({} workspaces)", args.list_workspaces),
            "claude-vm workspace list",
            "docker ps -a",
            Summary::of(&list.ours),
            Summary::of(&list.baseline),
            Target::MaxP50Ms { ms: 150.0 },
        ),
    ];
    environment.loadavg_end = loadavg();
    let show = |l: Option<f64>| l.map_or("?".to_owned(), |l| format!("{l:.2}"));
    eprintln!(
        "load average (1 min): {} at the start, {} at the end",
        show(environment.loadavg_start),
        show(environment.loadavg_end)
    );
    Ok(Report::new(environment, results))
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
        eprintln!(
            "lifecycle {tag}: up {} vs {} ms, down {} vs {} ms, resume {} vs {} ms",
            ms(u.0),
            ms(u.1),
            ms(d.0),
            ms(d.1),
            ms(r.0),
            ms(r.1)
        );
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
