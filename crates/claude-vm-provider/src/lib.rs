//! Providers: where workspaces run.
//!
//! A provider creates, starts, stops and removes a workspace's resources (for Docker: one
//! container plus one named volume mounted at `/workspace`), copies archives into them and
//! runs commands in them. Everything richer travels over that command primitive. The
//! [`Provider`] trait is object-safe so the engine holds `Arc<dyn Provider>` and never sees
//! a provider SDK type: bollard stays inside [`docker`].

pub mod devpod;
pub mod docker;
mod error;
mod remote;
pub mod ssh;

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use claude_vm_core::{LiveState, WorkspaceId};
use futures_util::Stream;

pub use error::{ProviderError, SshFailure, UNREACHABLE_HINT, ssh_hint};

/// A bidirectional byte stream (a command's stdin and stdout).
pub trait ByteStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> ByteStream for T {}

/// A tar archive as a stream of chunks.
pub type TarStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Callback for progress of long steps (image pulls).
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);

/// Callback for the lines a long step prints (an image build). An alias, like
/// [`ProgressFn`], so that `async_trait` leaves the `&str` higher-ranked: written out in a
/// trait method, it would become one fixed lifetime no implementation could call it with.
pub type OutputFn<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// Progress of an image pull, aggregated over layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub message: String,
    pub current: u64,
    pub total: u64,
}

/// What a workspace needs from its provider at creation.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    pub id: WorkspaceId,
    pub name: String,
    pub image: String,
    /// Working directory of the container (the project folder).
    pub workdir: String,
    /// Command the container runs for its whole life (the workspace daemon).
    pub entrypoint: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Extra labels besides the ones identifying the workspace.
    pub labels: BTreeMap<String, String>,
    /// Mounts besides the workspace's own volume: named volumes (created when missing,
    /// kept when the workspace is removed: they may be shared) and, when the user allowed
    /// it, folders of the engine's host.
    pub mounts: Vec<ExtraMount>,
    /// Limits and settings asked for by the workspace itself (a devcontainer's `runArgs`),
    /// over the provider's own.
    pub resources: Resources,
}

/// One mount of [`CreateSpec::mounts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraMount {
    /// A volume name, or an absolute path of the host for a bind mount.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    pub read_only: bool,
    /// A folder of the host rather than a volume.
    pub bind: bool,
}

/// What a workspace asks of its container beyond the provider's defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// CPUs (`1.5`).
    pub cpus: Option<f64>,
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// Size of `/dev/shm` in bytes.
    pub shm_size: Option<i64>,
    /// `host:ip` entries for `/etc/hosts`.
    pub hosts: Vec<String>,
}

/// An image build (a devcontainer's `build`, or the layer adding its features).
#[derive(Debug, Clone, Default)]
pub struct BuildSpec {
    /// The tag the built image gets (`claude-vm-dc-<hash>`).
    pub tag: String,
    /// The build context as an uncompressed tar archive, the Dockerfile inside it.
    pub context: Bytes,
    /// The Dockerfile's path inside the context (`Dockerfile`, `.devcontainer/Dockerfile`).
    pub dockerfile: String,
    /// `--build-arg`s.
    pub args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--cache-from` images.
    pub cache_from: Vec<String>,
    /// Labels on the built image.
    pub labels: BTreeMap<String, String>,
}

/// A command to run inside a workspace, its output captured.
#[derive(Clone, Default)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    /// `uid[:gid]` or a user name; the image's default when `None`.
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// May carry secrets (an agent's login file): `Debug` shows the names only.
    pub env: Vec<(String, String)>,
}

impl std::fmt::Debug for ExecSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ExecSpec")
            .field("cmd", &self.cmd)
            .field("user", &self.user)
            .field("workdir", &self.workdir)
            .field("env", &env)
            .finish()
    }
}

/// The result of a captured command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A file's metadata inside a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    /// RFC 3339.
    pub mtime: Option<String>,
}

/// The machine a workspace runs on, for listings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MachineInfo {
    /// The provider's id of the machine (`cvm-1a2b3c4d5e6f`).
    pub id: String,
    /// `Running`, `Busy`, `Stopped`, `NotFound`, or why it could not be asked.
    pub state: String,
}

/// Where workspaces run. Implementations must be idempotent where noted: lifecycle calls
/// are retried after partial failures.
#[async_trait]
pub trait Provider: Send + Sync {
    /// What to do when the backend does not answer in time (the errors it returns carry
    /// their own [`ProviderError::hint`]).
    fn unreachable_hint(&self) -> String {
        UNREACHABLE_HINT.to_owned()
    }

    /// Workspace `id` was made and runs (on the provider [`Provider::place`] answered): a
    /// provider that creates machines starts watching its machine for idleness from now
    /// on (the time a workspace takes to be made is not idle time). Never fails the caller.
    async fn started(&self, _id: &WorkspaceId) {}

    /// The provider that holds workspace `id`'s resources, ready for them: a provider that
    /// creates machines makes (or picks, or starts) the workspace's machine here, telling
    /// each step to `step`, and answers the provider of that machine. `None`: this provider
    /// itself. The engine calls it before creating a workspace and before calls that name
    /// no workspace (images, builds) for one.
    async fn place(
        &self,
        id: &WorkspaceId,
        step: OutputFn<'_>,
    ) -> Result<Option<std::sync::Arc<dyn Provider>>, ProviderError> {
        let _ = (id, step);
        Ok(None)
    }

    /// The state of the machine workspace `id` runs on, as its provider last reported it
    /// (`Running`, `Stopped`, `Busy`, `NotFound`), where the provider creates machines;
    /// `None` elsewhere or when not yet known. Cheap: [`Provider::states`] fills it.
    fn machine_state(&self, id: &WorkspaceId) -> Option<MachineInfo> {
        let _ = id;
        None
    }

    /// Connect to the backend, doing any one-time setup first (for `ssh`: checking the host
    /// and installing claude-vm there, which can take a while). Cheap once connected.
    async fn connect(&self) -> Result<(), ProviderError> {
        Ok(())
    }

    /// Check the backend answers. Errors with [`ProviderError::Unreachable`] otherwise.
    async fn ping(&self) -> Result<(), ProviderError>;

    /// Whether workspaces can bind-mount folders of this machine ([`ExtraMount::bind`]):
    /// the backend's engine runs here and can read them. claude-vm then shares its binary
    /// with every workspace rather than copying it into each.
    fn mounts_local_folders(&self) -> bool {
        false
    }

    /// The backend and its version ("Docker Engine 28.2.2, linux/amd64"), for `doctor`.
    async fn describe(&self) -> Result<String, ProviderError> {
        self.ping().await.map(|()| "reachable".to_owned())
    }

    /// Whether `image` is present already (`None`: cannot tell without pulling it).
    async fn has_image(&self, _image: &str) -> Result<Option<bool>, ProviderError> {
        Ok(None)
    }

    /// Make `image` available, pulling it (with progress) when the backend can.
    async fn ensure_image(
        &self,
        image: &str,
        progress: ProgressFn<'_>,
    ) -> Result<(), ProviderError>;

    /// Build an image, each line of the build's output handed to `output` as it comes.
    /// A failed build answers [`ProviderError::BuildFailed`] with its last lines, and
    /// leaves no image under the tag.
    async fn build_image(
        &self,
        spec: &BuildSpec,
        output: OutputFn<'_>,
    ) -> Result<(), ProviderError> {
        let _ = output;
        Err(ProviderError::BuildFailed {
            tag: spec.tag.clone(),
            reason: "this provider cannot build images".to_owned(),
            tail: Vec::new(),
        })
    }

    /// Create the workspace's resources without starting it.
    async fn create(&self, spec: &CreateSpec) -> Result<(), ProviderError>;

    /// Extract a tar archive under `dest_dir` (which must exist) in the workspace; works
    /// on a stopped workspace.
    async fn upload(
        &self,
        id: &WorkspaceId,
        dest_dir: &str,
        tar: TarStream,
    ) -> Result<(), ProviderError>;

    /// Metadata of a file in the workspace, `None` if absent; works on a stopped workspace.
    async fn stat(&self, id: &WorkspaceId, path: &str) -> Result<Option<FileStat>, ProviderError>;

    /// Start; a no-op if running.
    async fn start(&self, id: &WorkspaceId) -> Result<(), ProviderError>;

    /// Start a stopped workspace and return the first line its long-lived process prints
    /// (the daemon's announcement), waiting at most `timeout`.
    async fn start_and_wait(
        &self,
        id: &WorkspaceId,
        timeout: Duration,
    ) -> Result<String, ProviderError>;

    /// When a stopped workspace stopped itself for idleness (its PID 1 exited with 0), the
    /// time it did; `None` when it runs, was stopped, failed, or is gone.
    async fn stopped_itself(
        &self,
        id: &WorkspaceId,
    ) -> Result<Option<jiff::Timestamp>, ProviderError>;

    /// Ask the workspace to stop, killing it after `grace`; a no-op if stopped.
    async fn stop(&self, id: &WorkspaceId, grace: Duration) -> Result<(), ProviderError>;

    /// Stop at once; a no-op if stopped.
    async fn kill(&self, id: &WorkspaceId) -> Result<(), ProviderError>;

    /// Remove the workspace's container only, stopping it first: its volume and every file
    /// on it stay, for a container made again from another image. A no-op if it is gone.
    async fn remove_container(&self, id: &WorkspaceId) -> Result<(), ProviderError>;

    /// Remove every resource of the workspace, data included; a no-op for what is gone.
    async fn remove(&self, id: &WorkspaceId) -> Result<(), ProviderError>;

    /// The state of every workspace this provider holds, keyed by id. Workspaces it does
    /// not know are absent from the map.
    async fn states(&self) -> Result<HashMap<WorkspaceId, LiveState>, ProviderError>;

    /// Run a command in a running workspace and capture its output.
    async fn exec(&self, id: &WorkspaceId, spec: &ExecSpec) -> Result<ExecOutput, ProviderError>;

    /// Run a command in a running workspace with its stdin and stdout joined into one byte
    /// stream (stderr is logged). The primitive every provider has; the link to the
    /// workspace daemon rides on it.
    async fn exec_stream(
        &self,
        id: &WorkspaceId,
        spec: &ExecSpec,
    ) -> Result<Box<dyn ByteStream>, ProviderError>;
}
