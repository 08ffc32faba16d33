//! Running the measured programs (the claude-vm binary and the docker CLI) as whole processes,
//! and noticing Ctrl-C so that whatever was created can be removed.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Remember SIGINT/SIGTERM instead of dying, so the benchmark can clean up. A Ctrl-C in the
/// terminal also reaches the running child (same process group), which then stops on its own
/// (claude-vm removes a half-created workspace itself); the benchmark stops after it.
pub fn catch_interrupts() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }
            .with_context(|| format!("installing a {sig} handler"))?;
    }
    Ok(())
}

/// The error returned once the user asked the benchmark to stop.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// The programs under test and the environment they run in.
pub struct Tools {
    /// The claude-vm binary.
    pub bin: PathBuf,
    /// The docker CLI.
    pub docker: PathBuf,
    /// `$CLAUDE_VM_HOME` for every claude-vm invocation: a fresh folder per run.
    pub home: PathBuf,
}

impl Tools {
    /// `claude-vm <args>` with the benchmark's home, no logging, no colors.
    pub fn cvm<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("CLAUDE_VM_HOME", &self.home)
            .env("NO_COLOR", "1")
            .env_remove("CLAUDE_VM_CONFIG")
            .env_remove("CLAUDE_VM_LOG");
        cmd
    }

    /// `docker <args>`.
    pub fn docker<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.docker);
        cmd.args(args);
        cmd
    }
}

/// `program arg arg…`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run a command to completion and return its wall time (spawn to exit) and its stdout.
/// Fails if it exits non-zero, or if the benchmark was interrupted meanwhile.
pub fn timed(mut cmd: Command) -> Result<(Duration, String)> {
    check_interrupted()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{}`", describe(&cmd)))?;
    let elapsed = start.elapsed();
    check_interrupted()?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((elapsed, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Run a command whose timing does not matter.
pub fn run(cmd: Command) -> Result<String> {
    timed(cmd).map(|(_, out)| out)
}

/// Run a cleanup command: in its own process group (so a further Ctrl-C in the terminal does
/// not kill it), ignoring the interrupted flag. Returns stdout, or `None` on failure.
pub fn run_cleanup(mut cmd: Command) -> Option<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    match cmd.output() {
        Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Ok(out) => {
            eprintln!(
                "cleanup: `{}` failed ({}): {}",
                describe(&cmd),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
        Err(e) => {
            eprintln!("cleanup: cannot run `{}`: {e}", describe(&cmd));
            None
        }
    }
}

/// Delete, as a cleanup, every workspace of the benchmark's home whose name starts with
/// `prefix` (`--force`: without waiting for a final backup).
pub fn delete_workspaces_named(tools: &Tools, prefix: &str) {
    let Some(out) = run_cleanup(tools.cvm(["workspace", "list", "--json"])) else {
        return;
    };
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
    for w in list {
        if let Some(name) = w["name"].as_str()
            && name.starts_with(prefix)
        {
            run_cleanup(tools.cvm(["workspace", "delete", name, "-y", "-q", "--force"]));
        }
    }
}
