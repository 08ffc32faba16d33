//! The `devpod` provider: workspaces on machines that a DevPod provider.yaml creates,
//! starts, stops and deletes (every published DevPod machine provider: DigitalOcean, AWS,
//! Google Cloud, Azure, Hetzner...), or on the one host its `exec.command` reaches.
//!
//! The provider.yaml's commands run on this machine with its options as environment
//! variables (plus DevPod's built-in ones: `MACHINE_ID`, `MACHINE_FOLDER`, `PROVIDER_ID`...,
//! and each downloaded binary's path under its name). A machine's Docker is reached the way
//! the `ssh` provider reaches a host ([`crate::remote`]): `exec.command` with `$COMMAND` set
//! is the byte stream, claude-vm installs itself on the machine and speaks the Docker API
//! through it. Everything else is the Docker provider, unchanged.
//!
//! Machines are recorded before `create` runs (`machines/<id>/machine.json` under the
//! provider's folder, which is also the machine's `MACHINE_FOLDER`), so no machine is ever
//! made that claude-vm does not know about; a machine whose creation or first connection
//! fails is deleted again.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use claude_vm_core::{LiveState, WorkspaceId};
use claude_vm_devpod::{Binary, MachineStatus, Manifest, Scope, Script};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::process::Command;

use crate::docker::DockerProvider;
use crate::remote::{Remote, docker_over, hex, last_line};
use crate::{
    BuildSpec, ByteStream, CreateSpec, ExecOutput, ExecSpec, FileStat, MachineInfo, OutputFn,
    ProgressFn, Provider, ProviderError, TarStream,
};

/// The label naming the machine on a workspace's container and volume.
pub const LABEL_MACHINE: &str = "dev.claude-vm.machine";
/// The provider.yaml kept in the provider's folder.
pub const MANIFEST_FILE: &str = "provider.yaml";
/// How long a provider command other than `create`/`start` may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `status` may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(60);
/// The machine's idle stop unless configured.
const DEFAULT_IDLE_STOP_SECS: u64 = 30 * 60;
/// How much of a failed command's output an error carries.
const OUTPUT_TAIL: usize = 1200;

/// What a provider command answered.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// A machine claude-vm created, as recorded in its folder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MachineRecord {
    pub id: String,
    /// Ids of the workspaces on it.
    pub workspaces: Vec<String>,
    pub created_at: String,
}

/// Settings of the provider that are claude-vm's own, not the provider.yaml's.
#[derive(Debug, Clone)]
struct Settings {
    reuse: bool,
    idle_stop_secs: u64,
    timeout: Duration,
    socket: String,
}

pub struct DevpodProvider {
    name: String,
    folder: PathBuf,
    manifest: Arc<Manifest>,
    /// The provider.yaml's options as the user set them (UPPER_CASE).
    user: BTreeMap<String, String>,
    /// claude-vm's container options (network, cpus, memory, image, registry).
    container_options: BTreeMap<String, String>,
    settings: Settings,
    /// Provider-scope environment of every command, made once.
    env: tokio::sync::OnceCell<Arc<BTreeMap<String, String>>>,
    /// Each machine's environment (its `local` options worked out once, not at every
    /// status poll or command).
    machine_envs: tokio::sync::Mutex<HashMap<String, Arc<BTreeMap<String, String>>>>,
    dockers: tokio::sync::Mutex<HashMap<String, Arc<DockerProvider>>>,
    /// Machine of each workspace as [`Provider::states`] last saw it.
    seen: Mutex<HashMap<WorkspaceId, MachineInfo>>,
}

impl DevpodProvider {
    /// The provider `name` whose provider.yaml and state live in `folder`
    /// (`$CLAUDE_VM_HOME/providers/<name>`).
    pub fn new(
        name: &str,
        options: &BTreeMap<String, String>,
        folder: &Path,
    ) -> Result<Self, ProviderError> {
        let text = std::fs::read_to_string(folder.join(MANIFEST_FILE)).map_err(|e| {
            ProviderError::Config(format!(
                "cannot read the provider.yaml of {name} in {}: {e}; add the provider again with `claude-vm provider add {name} --type devpod --option source=...`",
                folder.display()
            ))
        })?;
        let parsed = claude_vm_devpod::parse(&text)
            .map_err(|e| ProviderError::Config(format!("the provider.yaml of {name}: {e}")))?;
        let get = |k: &str| options.get(k).filter(|v| !v.is_empty());
        let idle_stop_secs = match get("machine_idle_stop") {
            Some(v) => claude_vm_core::provider::parse_duration_secs(v)
                .ok_or_else(|| ProviderError::Config(format!("invalid machine_idle_stop {v:?}")))?,
            None => parsed
                .manifest
                .agent
                .inactivity_timeout
                .as_deref()
                .map(|t| claude_vm_devpod::expand(t, &|k| options.get(k).cloned()))
                .filter(|t| !t.trim().is_empty())
                .and_then(|t| claude_vm_devpod::parse_duration(&t).ok())
                .map_or(DEFAULT_IDLE_STOP_SECS, |d| d.as_secs()),
        };
        let timeout = match get("machine_timeout") {
            Some(v) => Duration::from_secs(
                claude_vm_core::provider::parse_duration_secs(v)
                    .filter(|s| *s > 0)
                    .ok_or_else(|| {
                        ProviderError::Config(format!("invalid machine_timeout {v:?}"))
                    })?,
            ),
            None => Duration::from_secs(600),
        };
        let settings = Settings {
            reuse: get("machine_reuse").is_some_and(|v| v == "true"),
            idle_stop_secs,
            timeout,
            socket: get("docker_socket")
                .cloned()
                .unwrap_or_else(|| crate::ssh::DEFAULT_DOCKER_SOCKET.to_owned()),
        };
        let (user, container_options) = options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .partition(|(k, _)| claude_vm_core::provider::is_manifest_option(k));
        Ok(DevpodProvider {
            name: name.to_owned(),
            folder: folder.to_owned(),
            manifest: Arc::new(parsed.manifest),
            user,
            container_options,
            settings,
            env: tokio::sync::OnceCell::new(),
            machine_envs: tokio::sync::Mutex::new(HashMap::new()),
            dockers: tokio::sync::Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn is_machine_provider(&self) -> bool {
        self.manifest.is_machine_provider()
    }

    fn machines_dir(&self) -> PathBuf {
        self.folder.join("machines")
    }

    fn error(&self, what: impl Into<String>, reason: impl Into<String>) -> ProviderError {
        ProviderError::Machine {
            provider: self.name.clone(),
            what: what.into(),
            reason: reason.into(),
            hint: None,
        }
    }

    /// DevPod's built-in variables of the provider.
    fn builtins(&self) -> BTreeMap<String, String> {
        let mut b = BTreeMap::new();
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        b.insert("DEVPOD".to_owned(), exe);
        b.insert(
            "DEVPOD_OS".to_owned(),
            claude_vm_devpod::devpod_os().to_owned(),
        );
        b.insert(
            "DEVPOD_ARCH".to_owned(),
            claude_vm_devpod::devpod_arch().to_owned(),
        );
        b.insert("PROVIDER_ID".to_owned(), self.name.clone());
        b.insert("PROVIDER_CONTEXT".to_owned(), "default".to_owned());
        b.insert(
            "PROVIDER_FOLDER".to_owned(),
            self.folder.display().to_string(),
        );
        b
    }

    /// The environment of the provider's commands: built-ins, binaries, then its options
    /// resolved (defaults, `command` options). Made once per process.
    pub async fn env(&self) -> Result<Arc<BTreeMap<String, String>>, ProviderError> {
        self.env
            .get_or_try_init(|| async {
                let mut env = self.builtins();
                env.extend(self.binaries().await?);
                let resolved = self.resolve(env.clone(), Scope::Provider).await?;
                env.extend(resolved);
                Ok(Arc::new(env))
            })
            .await
            .cloned()
    }

    /// The options of `scope` resolved over `env`; required ones still empty are an error.
    async fn resolve(
        &self,
        env: BTreeMap<String, String>,
        scope: Scope,
    ) -> Result<BTreeMap<String, String>, ProviderError> {
        let manifest = self.manifest.clone();
        // Per machine, the provider's values stand: only the machine's own are worked out.
        let mut user = self.user.clone();
        if scope == Scope::Machine {
            for (k, v) in &env {
                if manifest.options.contains_key(k) {
                    user.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        let folder = self.folder.clone();
        let name = self.name.clone();
        let resolved = tokio::task::spawn_blocking(move || {
            let mut run = |command: &str, vars: &BTreeMap<String, String>| {
                run_option_command(command, vars, &folder)
            };
            claude_vm_devpod::resolve(&manifest, &user, &env, scope, &mut run)
        })
        .await
        .map_err(|e| self.error("resolving its options", e.to_string()))?
        .map_err(|e| self.error("resolving its options", e.to_string()))?;
        if let Some(first) = resolved.missing.first() {
            let names: Vec<&str> = resolved.missing.iter().map(|m| m.as_str()).collect();
            return Err(ProviderError::Machine {
                provider: name.clone(),
                what: "checking its options".to_owned(),
                reason: format!("required options are not set: {}", names.join(", ")),
                hint: Some(format!(
                    "set them with `claude-vm provider set-options {name} --option {first}=...`"
                )),
            });
        }
        Ok(resolved.values)
    }

    /// Each binary of the provider.yaml for this machine's OS and architecture: downloaded
    /// once per checksum into the provider's folder, verified, and named by its variable.
    pub async fn binaries(&self) -> Result<BTreeMap<String, String>, ProviderError> {
        let mut out = BTreeMap::new();
        let (os, arch) = (
            claude_vm_devpod::devpod_os(),
            claude_vm_devpod::devpod_arch(),
        );
        for (var, list) in &self.manifest.binaries {
            let binary = claude_vm_devpod::binary_for(list, os, arch).ok_or_else(|| {
                self.error(
                    format!("choosing its binary {var}"),
                    format!("the provider.yaml has none for {os}/{arch}"),
                )
            })?;
            let path = self.ensure_binary(var, binary).await?;
            out.insert(var.clone(), path.display().to_string());
        }
        Ok(out)
    }

    async fn ensure_binary(&self, var: &str, b: &Binary) -> Result<PathBuf, ProviderError> {
        let what = format!("getting its binary {var} from {}", b.path);
        let checksum = b.checksum.as_deref().unwrap_or("").to_ascii_lowercase();
        let dir = self
            .folder
            .join("binaries")
            .join(var)
            .join(if checksum.is_empty() {
                "unverified".to_owned()
            } else {
                checksum.chars().take(16).collect()
            });
        let file_name = b
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                let from = b.archive_path.as_deref().unwrap_or(&b.path);
                from.rsplit('/').next().map(str::to_owned)
            })
            .filter(|n| !n.is_empty() && n != "." && n != "..")
            .unwrap_or_else(|| var.to_ascii_lowercase());
        let dest = dir.join(&file_name);
        if !checksum.is_empty() && tokio::fs::metadata(&dest).await.is_ok_and(|m| m.is_file()) {
            return Ok(dest);
        }
        let bytes: Vec<u8> = if is_url(&b.path) {
            download(&b.path, MAX_BINARY_BYTES, Duration::from_secs(600))
                .await
                .map_err(|e| self.error(what.clone(), e))?
        } else {
            let path = self.local_path(&b.path);
            tokio::fs::read(&path)
                .await
                .map_err(|e| self.error(what.clone(), format!("{}: {e}", path.display())))?
        };
        // Hashing, unpacking and writing tens of MB: off the async workers.
        let (name, inner) = (b.path.clone(), b.archive_path.clone());
        let (dir2, dest2) = (dir.clone(), dest.clone());
        let placed = tokio::task::spawn_blocking(move || -> Result<(), Placing> {
            if !checksum.is_empty() {
                let got = hex(&Sha256::digest(&bytes));
                if got != checksum {
                    return Err(Placing::Checksum { got, checksum });
                }
            }
            let content = match inner.as_deref().filter(|p| !p.is_empty()) {
                Some(inner) => extract(&bytes, &name, inner).map_err(Placing::Other)?,
                None => bytes,
            };
            write_executable(&dir2, &dest2, &content).map_err(|e| Placing::Other(e.to_string()))
        })
        .await
        .map_err(|e| self.error(what.clone(), e.to_string()))?;
        match placed {
            Ok(()) => Ok(dest),
            Err(Placing::Checksum { got, checksum }) => Err(ProviderError::Machine {
                provider: self.name.clone(),
                what,
                reason: format!(
                    "its sha256 is {got}, but the provider.yaml says {checksum}; nothing was run"
                ),
                hint: Some(
                    "the download was altered or the provider.yaml is wrong: check its source"
                        .to_owned(),
                ),
            }),
            Err(Placing::Other(e)) => Err(self.error(what, e)),
        }
    }

    /// A local path of the provider.yaml, relative to the folder its source was in.
    fn local_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            return p.to_owned();
        }
        let base = self
            .container_options
            .get("source")
            .map(PathBuf::from)
            .and_then(|s| s.parent().map(Path::to_owned))
            .unwrap_or_else(|| self.folder.clone());
        base.join(p)
    }

    /// Run `script` (one of the provider.yaml's commands) with `env` and `extra` set.
    async fn run(
        &self,
        what: &str,
        script: &Script,
        env: &BTreeMap<String, String>,
        extra: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Ran, ProviderError> {
        let argv = script.argv();
        let Some((program, args)) = argv.split_first() else {
            return Err(self.error(what, "the command is empty"));
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env)
            .envs(extra.iter().copied())
            .current_dir(&self.folder)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| self.error(what, format!("cannot start {program:?}: {e}")))?;
        let out = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                self.error(
                    what,
                    format!("no answer within {}s; it was stopped", timeout.as_secs()),
                )
            })?
            .map_err(|e| self.error(what, e.to_string()))?;
        Ok(Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Run a command that must succeed; its failure carries what it printed.
    async fn run_ok(
        &self,
        what: &str,
        script: &Script,
        env: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<Ran, ProviderError> {
        let ran = self.run(what, script, env, &[], timeout).await?;
        if ran.code == Some(0) {
            return Ok(ran);
        }
        let code = ran
            .code
            .map_or("a signal".to_owned(), |c| format!("exit code {c}"));
        Err(self.error(
            what,
            format!("it failed ({code}): {}", tail(&ran.stderr, &ran.stdout)),
        ))
    }

    /// `exec.init`: checks the options (`provider add`, `set-options`). Its output on
    /// failure.
    pub async fn init(&self) -> Result<(), ProviderError> {
        let env = self.env().await?;
        if let Some(init) = &self.manifest.exec.init {
            self.run_ok("running its init command", init, &env, COMMAND_TIMEOUT)
                .await?;
        }
        Ok(())
    }

    /// The environment of `machine`'s commands: the provider's, DevPod's machine
    /// variables, and the options resolved per machine (`local: true`).
    async fn machine_env(
        &self,
        machine: &str,
    ) -> Result<Arc<BTreeMap<String, String>>, ProviderError> {
        if let Some(env) = self.machine_envs.lock().await.get(machine) {
            return Ok(env.clone());
        }
        let mut env = (*self.env().await?).clone();
        let folder = self.machines_dir().join(machine);
        env.insert("MACHINE_ID".to_owned(), machine.to_owned());
        env.insert("MACHINE_FOLDER".to_owned(), folder.display().to_string());
        env.insert("MACHINE_CONTEXT".to_owned(), "default".to_owned());
        env.insert("MACHINE_PROVIDER".to_owned(), self.name.clone());
        let local = self.resolve(env.clone(), Scope::Machine).await?;
        env.extend(local);
        let env = Arc::new(env);
        self.machine_envs
            .lock()
            .await
            .insert(machine.to_owned(), env.clone());
        Ok(env)
    }

    /// The machine's status; a provider.yaml without `status` is taken to mean Running.
    async fn status(&self, machine: &str) -> Result<MachineStatus, ProviderError> {
        let Some(status) = &self.manifest.exec.status else {
            return Ok(MachineStatus::Running);
        };
        let env = self.machine_env(machine).await?;
        let what = format!("asking the status of machine {machine}");
        let ran = self.run_ok(&what, status, &env, STATUS_TIMEOUT).await?;
        claude_vm_devpod::parse_status(&ran.stdout).map_err(|e| self.error(what, e.to_string()))
    }

    /// Wait until the machine says Running (Busy and NotFound right after a create or
    /// start are waited out), at most the provider's machine timeout.
    async fn wait_running(&self, machine: &str) -> Result<(), ProviderError> {
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        loop {
            let status = self.status(machine).await?;
            if status == MachineStatus::Running {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.error(
                    format!("waiting for machine {machine}"),
                    format!(
                        "it is still {status:?} after {}s (machine_timeout)",
                        self.settings.timeout.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Start the machine when it is stopped; an error when it is gone.
    async fn ensure_running(&self, machine: &str, step: OutputFn<'_>) -> Result<(), ProviderError> {
        match self.status(machine).await? {
            MachineStatus::Running => return Ok(()),
            MachineStatus::Busy => {}
            MachineStatus::NotFound => {
                return Err(ProviderError::Machine {
                    provider: self.name.clone(),
                    what: format!("starting machine {machine}"),
                    reason: "the provider says it does not exist (was it deleted outside claude-vm?)"
                        .to_owned(),
                    hint: Some(
                        "`claude-vm workspace delete <ws> --force` forgets the workspace (its backups stay: `claude-vm workspace restore <ws> --provider P` brings it back elsewhere)"
                            .to_owned(),
                    ),
                });
            }
            MachineStatus::Stopped => {
                let Some(start) = &self.manifest.exec.start else {
                    return Err(self.error(
                        format!("starting machine {machine}"),
                        "it is stopped and the provider.yaml has no exec.start",
                    ));
                };
                step(&format!("starting machine {machine}"));
                let env = self.machine_env(machine).await?;
                self.run_ok(
                    &format!("starting machine {machine}"),
                    start,
                    &env,
                    self.settings.timeout,
                )
                .await?;
            }
        }
        self.wait_running(machine).await
    }

    /// The Docker provider of `machine`, reached through `exec.command`.
    async fn docker(&self, machine: &str) -> Result<Arc<DockerProvider>, ProviderError> {
        let mut dockers = self.dockers.lock().await;
        if let Some(d) = dockers.get(machine) {
            return Ok(d.clone());
        }
        let env = if self.is_machine_provider() {
            self.machine_env(machine).await?
        } else {
            self.env().await?
        };
        let argv = self.manifest.exec.command.argv();
        let remote: Arc<dyn Remote> = Arc::new(MachineRemote {
            provider: self.name.clone(),
            machine: machine.to_owned(),
            argv,
            env,
            socket: self.settings.socket.clone(),
            dir: self.folder.clone(),
        });
        let mut d = docker_over(remote, &self.container_options)?;
        if self.is_machine_provider() {
            d.extra_labels
                .insert(LABEL_MACHINE.to_owned(), machine.to_owned());
        }
        let d = Arc::new(d);
        dockers.insert(machine.to_owned(), d.clone());
        Ok(d)
    }

    /// Connect to the machine's Docker, retrying while its command does not answer yet
    /// (a VM's sshd comes up after the VM says Running).
    async fn connect_machine(&self, machine: &str) -> Result<Arc<DockerProvider>, ProviderError> {
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let mut last: Option<ProviderError> = None;
        loop {
            let docker = self.docker(machine).await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let tried =
                tokio::time::timeout(left.max(Duration::from_secs(1)), docker.connect()).await;
            match tried {
                Ok(Ok(())) => return Ok(docker),
                Ok(Err(e)) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!("machine {machine} does not answer yet: {e}");
                    last = Some(e);
                    // A fresh client: the failed one keeps its error.
                    self.dockers.lock().await.remove(machine);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    let mut reason = format!(
                        "no answer within {}s (machine_timeout)",
                        self.settings.timeout.as_secs()
                    );
                    if let Some(e) = last {
                        reason.push_str(&format!("; the last attempt said: {e}"));
                    }
                    return Err(self.error(
                        format!("reaching machine {machine} through exec.command"),
                        reason,
                    ));
                }
            }
        }
    }

    /// Every machine this provider has made for this home.
    pub async fn machines(&self) -> Result<Vec<MachineRecord>, ProviderError> {
        let dir = self.machines_dir();
        tokio::task::spawn_blocking(move || read_records(&dir))
            .await
            .map_err(|e| ProviderError::Config(e.to_string()))?
            .map_err(|e| ProviderError::Config(format!("reading the machine records: {e}")))
    }

    /// Every machine with its status, for `provider machines`.
    pub async fn machine_statuses(&self) -> Result<Vec<(MachineRecord, String)>, ProviderError> {
        let records = self.machines().await?;
        let asked = futures_util::future::join_all(records.iter().map(|r| async {
            match tokio::time::timeout(STATUS_TIMEOUT, self.status(&r.id)).await {
                Ok(Ok(s)) => format!("{s:?}"),
                Ok(Err(e)) => format!("unknown ({e})"),
                Err(_) => "unknown (no answer)".to_owned(),
            }
        }))
        .await;
        Ok(records.into_iter().zip(asked).collect())
    }

    /// Change the records under the machines lock.
    async fn with_records<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<MachineRecord>) -> T + Send + 'static,
    ) -> Result<T, ProviderError> {
        let dir = self.machines_dir();
        tokio::task::spawn_blocking(move || -> std::io::Result<T> {
            std::fs::create_dir_all(&dir)?;
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(".lock"))?;
            lock.lock()?;
            let mut records = read_records(&dir)?;
            let before = records.clone();
            let out = f(&mut records);
            for r in &records {
                if !before.contains(r) {
                    write_record(&dir, r)?;
                }
            }
            for gone in before
                .iter()
                .filter(|b| !records.iter().any(|r| r.id == b.id))
            {
                let folder = dir.join(&gone.id);
                match std::fs::remove_dir_all(&folder) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| ProviderError::Config(e.to_string()))?
        .map_err(|e| ProviderError::Config(format!("updating the machine records: {e}")))
    }

    /// The machine workspace `id` is on.
    async fn machine_of(&self, id: &WorkspaceId) -> Result<String, ProviderError> {
        if !self.is_machine_provider() {
            return Ok(HOST.to_owned());
        }
        let id_s = id.to_string();
        self.machines()
            .await?
            .into_iter()
            .find(|r| r.workspaces.contains(&id_s))
            .map(|r| r.id)
            .ok_or(ProviderError::NotFound {
                id: id.to_string(),
                what: "machine",
            })
    }

    /// The Docker provider of the running machine of `id`, started when stopped.
    async fn running_docker(&self, id: &WorkspaceId) -> Result<Arc<DockerProvider>, ProviderError> {
        let machine = self.machine_of(id).await?;
        if self.is_machine_provider() {
            self.ensure_running(&machine, &|l| tracing::info!("{l}"))
                .await?;
        }
        self.docker(&machine).await
    }

    /// Stop `machine` when no workspace but `except` runs on it.
    async fn stop_machine_if_unused(
        &self,
        machine: &str,
        except: &WorkspaceId,
    ) -> Result<(), ProviderError> {
        let Some(stop) = &self.manifest.exec.stop else {
            return Ok(());
        };
        let except = except.to_string();
        let others: Vec<String> = self
            .machines()
            .await?
            .iter()
            .find(|r| r.id == machine)
            .map(|r| {
                r.workspaces
                    .iter()
                    .filter(|w| **w != except)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !others.is_empty() {
            let states = self.docker(machine).await?.states().await?;
            let busy = states
                .iter()
                .any(|(w, s)| others.contains(&w.to_string()) && *s == LiveState::Running);
            if busy {
                return Ok(());
            }
        }
        let env = self.machine_env(machine).await?;
        self.run_ok(
            &format!("stopping machine {machine}"),
            stop,
            &env,
            self.settings.timeout,
        )
        .await?;
        self.dockers.lock().await.remove(machine);
        Ok(())
    }

    /// Delete a machine (its record goes once the provider's delete succeeded).
    async fn delete_machine(&self, machine: &str) -> Result<(), ProviderError> {
        if let Some(delete) = &self.manifest.exec.delete {
            let env = self.machine_env(machine).await?;
            self.run_ok(
                &format!("deleting machine {machine}"),
                delete,
                &env,
                self.settings.timeout,
            )
            .await?;
        }
        self.dockers.lock().await.remove(machine);
        let m = machine.to_owned();
        self.with_records(move |rs| rs.retain(|r| r.id != m)).await
    }

    fn machine_id_for(&self, id: &WorkspaceId) -> String {
        if self.settings.reuse {
            let name: String = self
                .name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .take(40)
                .collect();
            format!("cvm-{name}-shared")
        } else {
            format!("cvm-{id}")
        }
    }
}

/// The one "machine" of a provider.yaml without `create`: the host `command` reaches.
const HOST: &str = "host";

#[async_trait]
impl Provider for DevpodProvider {
    fn unreachable_hint(&self) -> String {
        format!(
            "check the machines with `claude-vm provider machines {}` and the provider's options with `claude-vm provider list -l`",
            self.name
        )
    }

    async fn connect(&self) -> Result<(), ProviderError> {
        self.env().await.map(|_| ())
    }

    async fn ping(&self) -> Result<(), ProviderError> {
        self.env().await.map(|_| ())
    }

    async fn describe(&self) -> Result<String, ProviderError> {
        self.env().await?;
        let kind = if self.is_machine_provider() {
            "machines"
        } else {
            "one host"
        };
        Ok(format!(
            "DevPod provider {} {} ({kind})",
            self.manifest.name,
            self.manifest.version.as_deref().unwrap_or("")
        ))
    }

    async fn place(
        &self,
        id: &WorkspaceId,
        step: OutputFn<'_>,
    ) -> Result<Option<Arc<dyn Provider>>, ProviderError> {
        self.env().await?;
        if !self.is_machine_provider() {
            let d: Arc<dyn Provider> = self.connect_machine(HOST).await?;
            return Ok(Some(d));
        }
        let id_s = id.to_string();
        let wanted = self.machine_id_for(id);
        let now = jiff::Timestamp::now().to_string();
        // (machine, made now, joined now): a rebuild finds its workspace on its machine.
        let (machine, fresh, joined) = self
            .with_records(move |rs| {
                if let Some(r) = rs.iter().find(|r| r.workspaces.contains(&id_s)) {
                    return (r.id.clone(), false, false);
                }
                if let Some(r) = rs.iter_mut().find(|r| r.id == wanted) {
                    r.workspaces.push(id_s);
                    return (r.id.clone(), false, true);
                }
                rs.push(MachineRecord {
                    id: wanted.clone(),
                    workspaces: vec![id_s],
                    created_at: now,
                });
                (wanted, true, true)
            })
            .await?;
        let made = async {
            if fresh {
                step(&format!(
                    "creating machine {machine} ({} {})",
                    self.manifest.name,
                    self.manifest.version.as_deref().unwrap_or("")
                ));
                let env = self.machine_env(&machine).await?;
                let create = self.manifest.exec.create.as_ref().ok_or_else(|| {
                    self.error("creating a machine", "the provider.yaml has no exec.create")
                })?;
                self.run_ok(
                    &format!("creating machine {machine}"),
                    create,
                    &env,
                    self.settings.timeout,
                )
                .await?;
                step(&format!("waiting for machine {machine}"));
                self.wait_running(&machine).await?;
            } else {
                self.ensure_running(&machine, step).await?;
            }
            step(&format!("connecting to machine {machine}"));
            let docker = self.connect_machine(&machine).await?;
            Ok::<_, ProviderError>(docker)
        };
        match made.await {
            Ok(d) => Ok(Some(d as Arc<dyn Provider>)),
            Err(e) if fresh => {
                step(&format!("deleting machine {machine} again: {e}"));
                if let Err(de) = self.delete_machine(&machine).await {
                    return Err(self.error(
                        format!("creating machine {machine}"),
                        format!("{e}; deleting it again failed too ({de}): `claude-vm provider machines {}` lists it", self.name),
                    ));
                }
                Err(e)
            }
            Err(e) if joined => {
                // It never ran on the shared machine: the machine's record forgets it.
                let id_s = id.to_string();
                let _ = self
                    .with_records(move |rs| {
                        for r in rs.iter_mut() {
                            r.workspaces.retain(|w| *w != id_s);
                        }
                    })
                    .await;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn machine_state(&self, id: &WorkspaceId) -> Option<MachineInfo> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    async fn has_image(&self, _image: &str) -> Result<Option<bool>, ProviderError> {
        Ok(None)
    }

    async fn ensure_image(
        &self,
        _image: &str,
        _progress: ProgressFn<'_>,
    ) -> Result<(), ProviderError> {
        Err(ProviderError::Config(
            "images are made ready on a workspace's machine (Provider::place)".to_owned(),
        ))
    }

    async fn build_image(
        &self,
        spec: &BuildSpec,
        _output: OutputFn<'_>,
    ) -> Result<(), ProviderError> {
        Err(ProviderError::BuildFailed {
            tag: spec.tag.clone(),
            reason: "images are built on a workspace's machine (Provider::place)".to_owned(),
            tail: Vec::new(),
        })
    }

    async fn create(&self, spec: &CreateSpec) -> Result<(), ProviderError> {
        let machine = self.machine_of(&spec.id).await?;
        self.docker(&machine).await?.create(spec).await
    }

    async fn upload(
        &self,
        id: &WorkspaceId,
        dest_dir: &str,
        tar: TarStream,
    ) -> Result<(), ProviderError> {
        self.running_docker(id)
            .await?
            .upload(id, dest_dir, tar)
            .await
    }

    async fn stat(&self, id: &WorkspaceId, path: &str) -> Result<Option<FileStat>, ProviderError> {
        self.running_docker(id).await?.stat(id, path).await
    }

    async fn start(&self, id: &WorkspaceId) -> Result<(), ProviderError> {
        let docker = self.running_docker(id).await?;
        docker.start(id).await?;
        self.started(id).await;
        Ok(())
    }

    async fn started(&self, id: &WorkspaceId) {
        match self.machine_of(id).await {
            Ok(machine) => self.start_idle_watch(&machine).await,
            Err(e) => tracing::warn!("no idle watcher for workspace {id}: {e}"),
        }
    }

    async fn start_and_wait(
        &self,
        id: &WorkspaceId,
        timeout: Duration,
    ) -> Result<String, ProviderError> {
        let machine = self.machine_of(id).await?;
        if self.is_machine_provider() {
            self.ensure_running(&machine, &|l| tracing::info!("{l}"))
                .await?;
        }
        let docker = self.connect_machine(&machine).await?;
        let ready = docker.start_and_wait(id, timeout).await?;
        // Only once a workspace runs there: a watcher started before would count the time
        // the workspace takes to be made as idle time.
        self.start_idle_watch(&machine).await;
        Ok(ready)
    }

    async fn stopped_itself(
        &self,
        id: &WorkspaceId,
    ) -> Result<Option<jiff::Timestamp>, ProviderError> {
        let machine = self.machine_of(id).await?;
        if self.status(&machine).await? != MachineStatus::Running {
            return Ok(None);
        }
        self.docker(&machine).await?.stopped_itself(id).await
    }

    async fn stop(&self, id: &WorkspaceId, grace: Duration) -> Result<(), ProviderError> {
        let machine = match self.machine_of(id).await {
            Ok(m) => m,
            Err(ProviderError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !self.is_machine_provider() {
            return self.docker(&machine).await?.stop(id, grace).await;
        }
        if self.status(&machine).await? != MachineStatus::Running {
            return Ok(());
        }
        self.docker(&machine).await?.stop(id, grace).await?;
        self.stop_machine_if_unused(&machine, id).await
    }

    async fn kill(&self, id: &WorkspaceId) -> Result<(), ProviderError> {
        let machine = self.machine_of(id).await?;
        if self.status(&machine).await? != MachineStatus::Running {
            return Ok(());
        }
        self.docker(&machine).await?.kill(id).await
    }

    async fn remove_container(&self, id: &WorkspaceId) -> Result<(), ProviderError> {
        self.running_docker(id).await?.remove_container(id).await
    }

    async fn remove(&self, id: &WorkspaceId) -> Result<(), ProviderError> {
        let machine = match self.machine_of(id).await {
            Ok(m) => m,
            Err(ProviderError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if !self.is_machine_provider() {
            return self.docker(&machine).await?.remove(id).await;
        }
        let id_s = id.to_string();
        let forget = {
            let id_s = id_s.clone();
            move |rs: &mut Vec<MachineRecord>| {
                for r in rs.iter_mut() {
                    r.workspaces.retain(|w| *w != id_s);
                }
            }
        };
        let status = self.status(&machine).await?;
        let records = self.machines().await?;
        let last = records
            .iter()
            .find(|r| r.id == machine)
            .is_none_or(|r| r.workspaces.iter().all(|w| *w == id_s));
        match status {
            MachineStatus::NotFound => {
                self.with_records(move |rs| {
                    forget(rs);
                    rs.retain(|r| !(r.id == machine && r.workspaces.is_empty()));
                })
                .await
            }
            _ if last => {
                // Its container and volume go first where the machine runs; deleting the
                // machine takes its disk with everything on it.
                if status == MachineStatus::Running
                    && let Err(e) = self.docker(&machine).await?.remove(id).await
                {
                    tracing::warn!("removing the container on machine {machine} failed: {e}");
                }
                self.delete_machine(&machine).await
            }
            _ => {
                self.ensure_running(&machine, &|l| tracing::info!("{l}"))
                    .await?;
                self.docker(&machine).await?.remove(id).await?;
                self.with_records(forget).await?;
                // A machine runs only while a workspace runs on it (this one may have been
                // started for its final backup, or the machine only to remove it).
                self.stop_machine_if_unused(&machine, id).await
            }
        }
    }

    async fn states(&self) -> Result<HashMap<WorkspaceId, LiveState>, ProviderError> {
        let records = if self.is_machine_provider() {
            self.machines().await?
        } else {
            let docker = self.docker(HOST).await?;
            return docker.states().await;
        };
        let asked = futures_util::future::join_all(records.iter().map(|r| async move {
            let mut out: Vec<(WorkspaceId, LiveState, MachineInfo)> = Vec::new();
            let status = match tokio::time::timeout(STATUS_TIMEOUT, self.status(&r.id)).await {
                Ok(s) => s,
                Err(_) => Err(self.error(format!("asking machine {}", r.id), "no answer")),
            };
            let ids: Vec<WorkspaceId> =
                r.workspaces.iter().filter_map(|w| w.parse().ok()).collect();
            let info = |state: String| MachineInfo {
                id: r.id.clone(),
                state,
            };
            match status {
                Ok(MachineStatus::Running) => {
                    let live = match self.docker(&r.id).await {
                        Ok(d) => d.states().await,
                        Err(e) => Err(e),
                    };
                    match live {
                        Ok(map) => {
                            for w in ids {
                                let s = map.get(&w).cloned().unwrap_or(LiveState::Missing);
                                out.push((w, s, info("Running".to_owned())));
                            }
                        }
                        Err(e) => {
                            for w in ids {
                                out.push((
                                    w,
                                    LiveState::Unreachable(e.to_string()),
                                    info("Running".to_owned()),
                                ));
                            }
                        }
                    }
                }
                Ok(MachineStatus::Stopped) => {
                    for w in ids {
                        out.push((w, LiveState::Stopped, info("Stopped".to_owned())));
                    }
                }
                Ok(MachineStatus::Busy) => {
                    for w in ids {
                        out.push((
                            w,
                            LiveState::Unreachable(format!("machine {} is busy", r.id)),
                            info("Busy".to_owned()),
                        ));
                    }
                }
                Ok(MachineStatus::NotFound) => {
                    for w in ids {
                        out.push((
                            w,
                            LiveState::Broken(format!(
                                "its machine {} no longer exists (deleted outside claude-vm)",
                                r.id
                            )),
                            info("NotFound".to_owned()),
                        ));
                    }
                }
                Err(e) => {
                    for w in ids {
                        out.push((
                            w,
                            LiveState::Unreachable(e.to_string()),
                            info("unknown".to_owned()),
                        ));
                    }
                }
            }
            out
        }))
        .await;
        let mut states = HashMap::new();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for (w, s, m) in asked.into_iter().flatten() {
            seen.insert(w.clone(), m);
            states.insert(w, s);
        }
        Ok(states)
    }

    async fn exec(&self, id: &WorkspaceId, spec: &ExecSpec) -> Result<ExecOutput, ProviderError> {
        let machine = self.machine_of(id).await?;
        self.docker(&machine).await?.exec(id, spec).await
    }

    async fn exec_stream(
        &self,
        id: &WorkspaceId,
        spec: &ExecSpec,
    ) -> Result<Box<dyn ByteStream>, ProviderError> {
        let machine = self.machine_of(id).await?;
        self.docker(&machine).await?.exec_stream(id, spec).await
    }
}

impl DevpodProvider {
    /// Make sure the machine shuts itself down when no workspace has run on it for the
    /// idle-stop time: a watcher on the machine (`claude-vm agent machine-watch`, one per
    /// machine), that runs the provider.yaml's `agent.exec.shutdown` with the provider's
    /// options (else `shutdown -h now`). A failure to start it is logged, not fatal: the
    /// workspace works, the machine just does not stop by itself.
    async fn start_idle_watch(&self, machine: &str) {
        if !self.is_machine_provider() || self.settings.idle_stop_secs == 0 {
            return;
        }
        if let Err(e) = self.try_idle_watch(machine).await {
            tracing::warn!("machine {machine} will not stop by itself when idle: {e}");
        }
    }

    async fn try_idle_watch(&self, machine: &str) -> Result<(), ProviderError> {
        let env = self.machine_env(machine).await?;
        let remote = MachineRemote {
            provider: self.name.clone(),
            machine: machine.to_owned(),
            argv: self.manifest.exec.command.argv(),
            env: env.clone(),
            socket: self.settings.socket.clone(),
            dir: self.folder.clone(),
        };
        let remote: &dyn Remote = &remote;
        let binary = remote.prepare().await?;
        // The options the shutdown command may use, then the command itself.
        let mut script = String::from("#!/bin/sh\n");
        for (k, v) in self.user.iter().chain(env.iter()) {
            if claude_vm_core::provider::is_manifest_option(k) && !k.starts_with("DEVPOD") {
                script.push_str(&format!(
                    "export {k}={}\n",
                    claude_vm_core::posix::sh_quote(v)
                ));
            }
        }
        let shutdown = self
            .manifest
            .agent
            .exec
            .shutdown
            .as_ref()
            .filter(|_| self.manifest.agent.binaries.is_empty())
            .map(|s| s.argv())
            .unwrap_or_else(|| vec!["sh".into(), "-c".into(), "shutdown -h now".into()]);
        let line: Vec<String> = shutdown
            .iter()
            .map(|a| claude_vm_core::posix::sh_quote(a))
            .collect();
        script.push_str(&line.join(" "));
        script.push('\n');
        let every = std::env::var("CLAUDE_VM_MACHINE_WATCH_SECS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|v| (1..=3600).contains(v))
            .unwrap_or(60);
        let folder = self.machines_dir().join(machine);
        let input = folder.join(".shutdown.sh");
        let write = {
            let (input, script) = (input.clone(), script.clone());
            move || -> std::io::Result<()> {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::create_dir_all(input.parent().unwrap_or(Path::new(".")))?;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .mode(0o600)
                    .open(&input)?;
                f.write_all(script.as_bytes())
            }
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| self.error("starting the idle watcher", e.to_string()))?
            .map_err(|e| self.error("starting the idle watcher", e.to_string()))?;
        let started = remote
            .run_script(
                WATCH_SCRIPT,
                &[
                    &binary,
                    machine,
                    &self.settings.idle_stop_secs.to_string(),
                    &every.to_string(),
                    &self.settings.socket,
                ],
                Some(&input),
            )
            .await;
        let _ = std::fs::remove_file(&input);
        let (code, _, stderr) = started?;
        if code != 0 {
            return Err(self.error("starting the idle watcher", last_line(&stderr)));
        }
        Ok(())
    }
}

/// Keeps the shutdown script (stdin) owner-only on the machine and starts the watcher in
/// the background, detached from the command's session. Args: binary, machine id, idle
/// seconds, check interval, Docker socket.
const WATCH_SCRIPT: &str = r#"set -e
d="${XDG_CACHE_HOME:-$HOME/.cache}/claude-vm/machine"
umask 077
mkdir -p "$d"
chmod 700 "$d"
cat > "$d/shutdown.sh"
chmod 700 "$d/shutdown.sh"
if command -v setsid >/dev/null 2>&1; then s=setsid; else s=; fi
nohup $s "$1" agent machine-watch --machine "$2" --idle "$3" --every "$4" --socket "$5" --script "$d/shutdown.sh" >/dev/null 2>&1 </dev/null &
"#;

/// What `claude-vm agent machine-watch` is told.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub machine: String,
    pub idle: Duration,
    pub every: Duration,
    pub socket: PathBuf,
    /// Run with `sh` once the machine has been idle long enough.
    pub script: PathBuf,
}

/// The watcher on a machine: one per machine (a lock beside the script); counts the time
/// no workspace container of the machine runs, and when it reaches `idle` runs the shutdown
/// script and ends. Docker errors count as "something runs": a machine is never stopped
/// because it could not be asked.
pub async fn watch_machine(o: WatchOptions) -> Result<(), ProviderError> {
    let lock_path = o.script.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| ProviderError::Config(format!("{}: {e}", lock_path.display())))?;
    if lock.try_lock().is_err() {
        return Ok(());
    }
    let docker = bollard::Docker::connect_with_unix(
        &o.socket.display().to_string(),
        30,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(|e| ProviderError::Config(e.to_string()))?;
    let filter = format!("{LABEL_MACHINE}={}", o.machine);
    let mut idle_since = tokio::time::Instant::now();
    loop {
        let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .filters(&HashMap::from([
                ("label".to_owned(), vec![filter.clone()]),
                ("status".to_owned(), vec!["running".to_owned()]),
            ]))
            .build();
        let busy = match docker.list_containers(Some(options)).await {
            Ok(list) => !list.is_empty(),
            Err(e) => {
                tracing::debug!("asking Docker failed: {e}");
                true
            }
        };
        if busy {
            idle_since = tokio::time::Instant::now();
        } else if idle_since.elapsed() >= o.idle {
            let status = tokio::process::Command::new("sh")
                .arg(&o.script)
                .status()
                .await;
            tracing::info!(
                "idle for {}s: ran the shutdown script ({status:?})",
                o.idle.as_secs()
            );
            return Ok(());
        }
        tokio::time::sleep(o.every).await;
    }
}

/// A machine's `exec.command` as the transport to its Docker.
struct MachineRemote {
    provider: String,
    machine: String,
    argv: Vec<String>,
    env: Arc<BTreeMap<String, String>>,
    socket: String,
    dir: PathBuf,
}

impl Remote for MachineRemote {
    fn command(&self, remote: &str) -> Command {
        let (program, args) = self
            .argv
            .split_first()
            .map_or(("false", &[][..]), |(p, a)| (p.as_str(), a));
        let mut c = Command::new(program);
        c.args(args)
            .envs(self.env.iter())
            .env("COMMAND", remote)
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    fn destination(&self) -> String {
        if self.machine == HOST {
            format!("the host of provider {}", self.provider)
        } else {
            format!("machine {} of provider {}", self.machine, self.provider)
        }
    }

    fn user_for_messages(&self) -> String {
        "the user the provider's command logs in as".to_owned()
    }

    fn socket(&self) -> &str {
        &self.socket
    }

    fn failure(&self, reason: String) -> ProviderError {
        ProviderError::Machine {
            provider: self.provider.clone(),
            what: format!("reaching {} through its exec.command", self.destination()),
            reason,
            hint: Some(self.hint()),
        }
    }

    fn transport_error(&self, _code: i32, _stderr: &str) -> Option<ProviderError> {
        None
    }

    fn lost(&self, stderr: &str, reason: String) -> ProviderError {
        if stderr.trim().is_empty() {
            self.failure(format!(
                "lost the connection to its Docker engine: {reason}"
            ))
        } else {
            self.failure(last_line(stderr))
        }
    }

    fn hint(&self) -> String {
        format!(
            "is the machine up? `claude-vm provider machines {}` shows its state; the provider.yaml's exec.command must run $COMMAND there",
            self.provider
        )
    }

    fn endpoint(&self) -> String {
        format!("devpod://{}/{}{}", self.provider, self.machine, self.socket)
    }
}

/// Run an option's `command` with the options resolved so far; its stdout is the value.
fn run_option_command(
    command: &str,
    vars: &BTreeMap<String, String>,
    dir: &Path,
) -> Result<String, String> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(vars)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{command}` failed: {}",
            tail(
                &String::from_utf8_lossy(&out.stderr),
                &String::from_utf8_lossy(&out.stdout)
            )
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_url(p: &str) -> bool {
    p.starts_with("https://") || p.starts_with("http://")
}

/// The end of what a failed command printed (stderr, else stdout), one line per line,
/// control characters escaped: provider commands' output is not ours to trust.
fn tail(stderr: &str, stdout: &str) -> String {
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let text = text.trim();
    if text.is_empty() {
        return "(it printed nothing)".to_owned();
    }
    let start = text
        .char_indices()
        .rev()
        .nth(OUTPUT_TAIL)
        .map_or(0, |(i, _)| i);
    text[start..]
        .chars()
        .map(|c| match c {
            '\n' => " | ".to_owned(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// The file `inner` of the archive `bytes` (`.tar`, `.tar.gz`/`.tgz`).
fn extract(bytes: &[u8], name: &str, inner: &str) -> Result<Vec<u8>, String> {
    let inner = inner.trim_start_matches("./");
    let gz =
        name.ends_with(".tgz") || name.ends_with(".tar.gz") || bytes.starts_with(&[0x1f, 0x8b]);
    if name.ends_with(".zip") {
        return Err(
            "zip archives are not supported; use the provider's .tar.gz or plain binary".to_owned(),
        );
    }
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let path = entry
            .path()
            .map_err(|e| e.to_string())?
            .display()
            .to_string();
        if path.trim_start_matches("./") == inner {
            // Unpacked, it is held to the download's limit too.
            let mut out = Vec::new();
            (&mut entry)
                .take(MAX_BINARY_BYTES + 1)
                .read_to_end(&mut out)
                .map_err(|e| e.to_string())?;
            if out.len() as u64 > MAX_BINARY_BYTES {
                return Err(format!(
                    "{inner} in the archive is larger than {} MiB",
                    MAX_BINARY_BYTES >> 20
                ));
            }
            return Ok(out);
        }
    }
    Err(format!("the archive has no {inner}"))
}

/// Why a downloaded binary was not put in place.
enum Placing {
    Checksum { got: String, checksum: String },
    Other(String),
}

/// A provider's binary is at most this large (DevPod's published ones are tens of MB).
const MAX_BINARY_BYTES: u64 = 1 << 30;

/// GET `url` over HTTPS (or HTTP), at most `limit` bytes in `timeout`; the error says what
/// went wrong in words ("invalid peer certificate: UnknownIssuer", "404 Not Found").
pub async fn download(url: &str, limit: u64, timeout: Duration) -> Result<Vec<u8>, String> {
    let fail = |e: reqwest::Error| {
        if e.is_timeout() {
            format!("no answer from {url} within {}s", timeout.as_secs())
        } else {
            format!(
                "cannot fetch {url}: {}",
                crate::docker::error_text(&e.without_url())
            )
        }
    };
    let mut resp = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(fail)?
        .get(url)
        .send()
        .await
        .map_err(fail)?;
    if !resp.status().is_success() {
        return Err(format!("fetching {url} answered {}", resp.status()));
    }
    let too_large = || format!("{url} is larger than {} MiB", limit >> 20);
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(fail)? {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Write an executable file atomically (a temporary file in the same folder, then a rename).
fn write_executable(dir: &Path, dest: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let mut f = atomic_write_file::AtomicWriteFile::open(dest)?;
    f.write_all(content)?;
    f.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o755))?;
    f.commit()
}

fn read_records(dir: &Path) -> std::io::Result<Vec<MachineRecord>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let path = entry.path().join("machine.json");
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<MachineRecord>(&bytes) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!("ignoring {}: {e}", path.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

fn write_record(dir: &Path, r: &MachineRecord) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::DirBuilderExt;
    let folder = dir.join(&r.id);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&folder)?;
    let mut f = atomic_write_file::AtomicWriteFile::open(folder.join("machine.json"))?;
    f.write_all(&serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?)?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, name, *body).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_binary_is_taken_out_of_its_tar_gz_or_tar_and_a_zip_is_refused() {
        let tar = tar_of(&[
            ("README", b"read me"),
            ("bin/tool", b"#!/bin/sh\necho hi\n"),
        ]);
        let tgz = gz(&tar);
        assert_eq!(
            extract(
                &tgz,
                "https://e.invalid/tool_linux_amd64.tar.gz",
                "./bin/tool"
            )
            .unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        // Gzip is known by its magic bytes too, whatever the name says.
        assert_eq!(
            extract(&tgz, "tool.bin", "bin/tool").unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(extract(&tar, "tool.tar", "README").unwrap(), b"read me");
        let missing = extract(&tgz, "t.tgz", "bin/other").unwrap_err();
        assert!(missing.contains("no bin/other"), "{missing}");
        let zip = extract(b"PK\x03\x04", "tool.zip", "tool").unwrap_err();
        assert!(zip.contains("zip archives are not supported"), "{zip}");
        let garbage = extract(&[0x1f, 0x8b, 1, 2, 3], "t.tgz", "tool");
        assert!(garbage.is_err());
    }
}
