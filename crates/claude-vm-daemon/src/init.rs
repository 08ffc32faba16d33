//! PID 1 of a workspace container: reaper and supervisor of the daemon.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Signals PID 1 handles synchronously.
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set
}

fn spawn_daemon(exe: &std::path::Path, args: &[String]) -> std::io::Result<Pid> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(exe);
    cmd.args(args);
    // The blocked mask is inherited across exec; give the daemon a clean one.
    unsafe {
        cmd.pre_exec(|| {
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn()?;
    Ok(Pid::from_raw(child.id() as i32))
}

/// Wait up to `timeout` for one of `set`; `None` when none came.
fn wait_for(set: &SigSet, timeout: Duration) -> Option<Signal> {
    let ts = nix::libc::timespec {
        tv_sec: timeout.as_secs() as nix::libc::time_t,
        tv_nsec: timeout.subsec_nanos() as nix::libc::c_long,
    };
    // SAFETY: `set` is a valid, initialised signal set and `ts` lives across the call.
    let r = unsafe { nix::libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    if r > 0 {
        Signal::try_from(r).ok()
    } else {
        None
    }
}

fn log(msg: &str) {
    eprintln!("claude-vm init: {msg}");
}

/// PID 1's status after a stop signal (`128 + SIGTERM`, as a shell reports it): non-zero,
/// so Docker's `on-failure` policy restarts the workspace when the host's Docker restarts,
/// while a `docker stop` (a manual stop) is never restarted.
fn stopped_by_signal() -> ExitCode {
    ExitCode::from(143)
}

/// Run as PID 1: start `claude-vm <daemon_args>`, restart it when it dies (with backoff),
/// reap every other child, and on SIGTERM/SIGINT stop the daemon and exit with it.
pub fn run(daemon_args: &[String]) -> ExitCode {
    let set = handled();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        log(&format!("cannot block signals: {e}"));
        return ExitCode::FAILURE;
    }
    // The path is taken once: if the binary is replaced or briefly missing later, a restart
    // still finds it where it was (`/proc/self/exe` would name a deleted file).
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            log(&format!("cannot find my own executable: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let mut backoff = Duration::from_millis(250);
    let mut started = Instant::now();
    let mut daemon = match spawn_daemon(&exe, daemon_args) {
        Ok(pid) => Some(pid),
        Err(e) => {
            log(&format!("cannot start the daemon: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let mut terminating = false;
    loop {
        let sig = if daemon.is_none() && !terminating {
            // A restart failed: no child will signal, so try again after the backoff.
            match wait_for(&set, backoff) {
                Some(s) => s,
                None => {
                    started = Instant::now();
                    match spawn_daemon(&exe, daemon_args) {
                        Ok(pid) => {
                            log("daemon restarted");
                            daemon = Some(pid);
                        }
                        Err(e) => {
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                            log(&format!(
                                "cannot restart the daemon: {e}; next try in {backoff:?}"
                            ));
                        }
                    }
                    continue;
                }
            }
        } else {
            match set.wait() {
                Ok(s) => s,
                Err(e) => {
                    log(&format!("sigwait failed: {e}"));
                    continue;
                }
            }
        };
        match sig {
            Signal::SIGCHLD => {
                let mut daemon_died = None;
                loop {
                    match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                        Ok(WaitStatus::StillAlive) | Err(_) => break,
                        Ok(status) => {
                            if status.pid() == daemon {
                                daemon_died = Some(status);
                            }
                        }
                    }
                }
                if let Some(status) = daemon_died {
                    daemon = None;
                    if terminating {
                        return stopped_by_signal();
                    }
                    if matches!(status, WaitStatus::Exited(_, code)
                        if code == i32::from(claude_vm_protocol::IDLE_STOP_EXIT))
                    {
                        // The workspace stopped itself: 0 is the one status Docker's
                        // `on-failure` policy does not restart.
                        log("the workspace was idle; stopping");
                        return ExitCode::SUCCESS;
                    }
                    log(&format!(
                        "daemon exited ({status:?}); restarting in {backoff:?}"
                    ));
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = Duration::from_millis(250);
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    started = Instant::now();
                    match spawn_daemon(&exe, daemon_args) {
                        Ok(pid) => daemon = Some(pid),
                        Err(e) => log(&format!(
                            "cannot restart the daemon: {e}; next try in {backoff:?}"
                        )),
                    }
                }
            }
            Signal::SIGHUP => {
                if let Some(pid) = daemon {
                    let _ = kill(pid, Signal::SIGHUP);
                }
            }
            _ => {
                // SIGTERM, SIGINT, SIGQUIT: stop the daemon and leave with it.
                terminating = true;
                match daemon {
                    Some(pid) => {
                        let _ = kill(pid, Signal::SIGTERM);
                    }
                    None => return stopped_by_signal(),
                }
            }
        }
    }
}
