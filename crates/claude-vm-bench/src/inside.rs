//! Measuring through the link from inside this process: the engine, the tokio runtime that
//! drives it, and the workspaces the exec, file and conversation groups run in.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use claude_vm_engine::{Engine, Link};
use claude_vm_store::Home;

use crate::exec::{Tools, check_interrupted, run};

/// Longest wait for any one step through the link before the benchmark gives up.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The engine opened on the benchmark's home, as the CLI opens it.
pub struct Inside {
    pub rt: tokio::runtime::Runtime,
    pub engine: Engine,
}

/// A running workspace made for a group of measurements.
pub struct Ws {
    pub name: String,
    /// The Docker container (`claude-vm-<id>`), for the `docker` baselines.
    pub container: String,
    /// The project folder inside the workspace.
    pub project_dir: String,
    /// The engine's link to it, established.
    pub link: Link,
}

impl Inside {
    pub fn open(tools: &Tools) -> Result<Inside> {
        // Like the CLI's runtime.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let engine = Engine::open(Home::at(&tools.home), None)
            .context("cannot open the benchmark's claude-vm home")?;
        Ok(Inside { rt, engine })
    }

    /// Run a future to completion; fails after [`STEP_TIMEOUT`] or on Ctrl-C.
    pub fn block<T>(&self, what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
        check_interrupted()?;
        let r = self
            .rt
            .block_on(async { tokio::time::timeout(STEP_TIMEOUT, f).await })
            .map_err(|_| anyhow!("{what}: no answer within {}s", STEP_TIMEOUT.as_secs()))?
            .with_context(|| what.to_owned())?;
        check_interrupted()?;
        Ok(r)
    }

    /// Create a workspace from `repo` with the CLI (as a user would) and link to it.
    pub fn workspace(&self, tools: &Tools, repo: &Path, name: &str) -> Result<Ws> {
        let mut cmd = tools.cvm(["workspace", "up"]);
        cmd.arg(repo).args(["--name", name, "-q"]);
        run(cmd)?;
        let (record, link) = self.block(&format!("linking to workspace {name}"), async {
            Ok(self.engine.link(name).await?)
        })?;
        let container = format!("claude-vm-{}", record.id);
        let state = run(tools.docker(["inspect", "--format", "{{.State.Running}}", &container]))?;
        if state.trim() != "true" {
            bail!("the container of workspace {name} ({container}) is not running");
        }
        Ok(Ws {
            name: name.to_owned(),
            container,
            project_dir: format!("/workspace/{}", record.project),
            link,
        })
    }
}

/// CLOCK_REALTIME in nanoseconds: comparable with the stand-in agent's timestamps, since a
/// container reads the host kernel's clock.
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}
