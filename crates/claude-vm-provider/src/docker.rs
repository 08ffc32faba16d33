//! The Docker provider: one container and one named volume per workspace, driven through
//! the Docker Engine API (bollard). Works with any engine `DOCKER_HOST` or the `host` option
//! points at; the API version is negotiated, so old and new engines both work.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, ContainerUpdateBody, HostConfig, Mount,
    MountType, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, BuildImageOptionsBuilder, BuilderVersion,
    ContainerArchiveInfoOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    KillContainerOptions, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, RemoveVolumeOptionsBuilder,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::{Docker, body_full};
use claude_vm_core::provider::parse_bytes;
use claude_vm_core::{LiveState, WorkspaceId};
use futures_util::StreamExt;
use tokio::sync::OnceCell;

use crate::{
    BuildSpec, CreateSpec, ExecOutput, ExecSpec, FileStat, OutputFn, Progress, ProgressFn,
    Provider, ProviderError, TarStream,
};

/// Label present on every resource claude-vm creates.
pub const LABEL_MANAGED: &str = "dev.claude-vm.managed";
/// Label holding the workspace id.
pub const LABEL_WORKSPACE: &str = "dev.claude-vm.workspace";
/// Label holding the workspace name (informational: names can be reused after deletion).
pub const LABEL_NAME: &str = "dev.claude-vm.name";

const DEFAULT_SOCKET: &str = "unix:///var/run/docker.sock";

/// Name of the container and of the volume of a workspace.
pub fn resource_name(id: &WorkspaceId) -> String {
    format!("claude-vm-{id}")
}

/// Options of a Docker provider, parsed from its `--option`s.
#[derive(Debug, Clone, Default)]
struct Settings {
    network: Option<String>,
    nano_cpus: Option<i64>,
    memory: Option<i64>,
    credentials: Option<DockerCredentials>,
}

impl Settings {
    fn from_options(options: &BTreeMap<String, String>) -> Result<Settings, ProviderError> {
        let get = |k: &str| options.get(k).filter(|v| !v.is_empty()).cloned();
        let nano_cpus = match get("cpus") {
            Some(c) => Some(
                c.parse::<f64>()
                    .ok()
                    .filter(|n| *n > 0.0)
                    .map(|n| (n * 1e9) as i64)
                    .ok_or_else(|| ProviderError::Config(format!("invalid cpus {c:?}")))?,
            ),
            None => None,
        };
        let memory = match get("memory") {
            Some(m) => Some(
                parse_bytes(&m)
                    .ok_or_else(|| ProviderError::Config(format!("invalid memory {m:?}")))?,
            ),
            None => None,
        };
        let credentials = get("registry_password").map(|password| DockerCredentials {
            username: get("registry_user"),
            password: Some(password),
            ..Default::default()
        });
        Ok(Settings {
            network: get("network"),
            nano_cpus,
            memory,
            credentials,
        })
    }
}

/// Opens a client to the engine (not yet version-negotiated). Called on first use, and
/// again after a failure.
pub(crate) type Connect = Box<
    dyn Fn() -> futures_util::future::BoxFuture<'static, Result<Docker, ProviderError>>
        + Send
        + Sync,
>;

/// Turns the reason a connection-level failure happened into the error to show.
pub(crate) type Unreachable = Box<dyn Fn(String) -> ProviderError + Send + Sync>;

pub struct DockerProvider {
    endpoint: String,
    settings: Settings,
    connect: Connect,
    unreachable: Unreachable,
    hint: String,
    client: OnceCell<Docker>,
    /// The engine runs on this machine and can bind-mount its folders.
    local_folders: bool,
    /// Labels every workspace's container and volume get besides their own (the machine of
    /// a devpod provider).
    pub(crate) extra_labels: BTreeMap<String, String>,
}

impl DockerProvider {
    /// A provider for the engine named by `options["host"]`, else `$DOCKER_HOST`, else the
    /// local socket. Connects lazily, on first use.
    pub fn new(options: &BTreeMap<String, String>) -> Result<Self, ProviderError> {
        let endpoint = options
            .get("host")
            .filter(|v| !v.is_empty())
            .cloned()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|v| !v.is_empty()))
            .unwrap_or_else(|| DEFAULT_SOCKET.to_owned());
        let connect: Connect = {
            let endpoint = endpoint.clone();
            Box::new(move || {
                let endpoint = endpoint.clone();
                Box::pin(async move {
                    let unreachable = |reason: String| ProviderError::Unreachable {
                        endpoint: endpoint.clone(),
                        reason,
                    };
                    if let Some(path) = endpoint.strip_prefix("unix://")
                        && !std::path::Path::new(path).exists()
                    {
                        return Err(unreachable(format!("socket {path} does not exist")));
                    }
                    Docker::connect_with_host(&endpoint).map_err(|e| unreachable(e.to_string()))
                })
            })
        };
        let unreachable: Unreachable = {
            let endpoint = endpoint.clone();
            Box::new(move |reason| ProviderError::Unreachable {
                endpoint: endpoint.clone(),
                reason,
            })
        };
        // This machine's engine through its socket, where a bind mount of this machine's
        // folders works: not on macOS (Docker Desktop shares only some folders) and not
        // under SELinux (the engine's containers may not read them unrelabelled).
        let local_folders = cfg!(target_os = "linux")
            && endpoint.starts_with("unix://")
            && std::fs::read_to_string("/sys/fs/selinux/enforce").map_or(true, |e| e.trim() != "1");
        let mut p = Self::with_connector(
            options,
            endpoint,
            connect,
            unreachable,
            crate::UNREACHABLE_HINT.to_owned(),
        )?;
        p.local_folders = local_folders;
        Ok(p)
    }

    /// A provider for any engine `connect` reaches: the same containers, volumes and
    /// labels whatever carries the API (a local socket, TCP, an SSH connection).
    pub(crate) fn with_connector(
        options: &BTreeMap<String, String>,
        endpoint: String,
        connect: Connect,
        unreachable: Unreachable,
        hint: String,
    ) -> Result<Self, ProviderError> {
        Ok(DockerProvider {
            endpoint,
            settings: Settings::from_options(options)?,
            connect,
            unreachable,
            hint,
            client: OnceCell::new(),
            local_folders: false,
            extra_labels: BTreeMap::new(),
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn docker(&self) -> Result<&Docker, ProviderError> {
        self.client
            .get_or_try_init(|| async {
                let docker = (self.connect)().await?;
                // Negotiation costs one round trip and makes every engine version work.
                let negotiated =
                    tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
                        .await
                        .map_err(|_| (self.unreachable)("no answer within 10s".to_owned()))?
                        .map_err(|e| (self.unreachable)(error_text(&e)))?;
                Ok(negotiated)
            })
            .await
    }

    /// Turn a bollard error into ours; connection-level failures mean the engine is down.
    fn err(&self, op: &'static str, e: BollardError) -> ProviderError {
        match e {
            BollardError::DockerResponseServerError { message, .. } => {
                ProviderError::Api { op, message }
            }
            BollardError::JsonDataError { .. }
            | BollardError::JsonSerdeError { .. }
            | BollardError::DockerStreamError { .. } => ProviderError::Api {
                op,
                message: e.to_string(),
            },
            other => (self.unreachable)(error_text(&other)),
        }
    }
}

/// The innermost message of an error chain: "connection refused" rather than "client error".
pub(crate) fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        msg = inner.to_string();
        cur = inner.source();
    }
    msg
}

/// How many of a build's last output lines a failure carries.
const BUILD_TAIL_LINES: usize = 20;

/// Output without a newline longer than this is handed on as a line of its own.
const BUILD_LINE_MAX: usize = 16 * 1024;

/// A build's output cut into lines: each handed on as it completes, the last ones kept.
struct BuildLog<'a> {
    output: OutputFn<'a>,
    pending: String,
    tail: VecDeque<String>,
}

impl<'a> BuildLog<'a> {
    fn new(output: OutputFn<'a>) -> Self {
        BuildLog {
            output,
            pending: String::new(),
            tail: VecDeque::with_capacity(BUILD_TAIL_LINES),
        }
    }

    /// One `stream` message: usually one line, but a command's output can come in pieces.
    fn push(&mut self, text: &str) {
        self.pending.push_str(text);
        while let Some(end) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=end).collect();
            self.line(&line);
        }
        if self.pending.len() > BUILD_LINE_MAX {
            let line = std::mem::take(&mut self.pending);
            self.line(&line);
        }
    }

    fn line(&mut self, line: &str) {
        let line = line.trim_end();
        if line.is_empty() {
            return;
        }
        (self.output)(line);
        if self.tail.len() == BUILD_TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.to_owned());
    }

    /// The last lines, what was left without a newline included.
    fn finish(mut self) -> Vec<String> {
        let rest = std::mem::take(&mut self.pending);
        self.line(&rest);
        self.tail.into()
    }
}

/// Why a build failed, in words a user can act on.
fn build_error_reason(dockerfile: &str, message: &str) -> String {
    let message = message.trim();
    if message.contains("Cannot locate specified Dockerfile") {
        format!("the build context has no Dockerfile at {dockerfile:?} ({message})")
    } else if message.is_empty() {
        "the engine gave no reason".to_owned()
    } else {
        message.to_owned()
    }
}

/// `on-failure`: a workspace whose PID 1 fails (or is stopped by a signal when the host's
/// Docker restarts) comes back; one that stopped itself for idleness (status 0) and one
/// stopped by hand stay stopped.
fn restart_policy() -> RestartPolicy {
    RestartPolicy {
        name: Some(RestartPolicyNameEnum::ON_FAILURE),
        maximum_retry_count: None,
    }
}

fn status_code(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Split `repo[:tag]` (leaving registry ports alone) for the pull API.
fn split_image(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

#[async_trait]
impl Provider for DockerProvider {
    fn unreachable_hint(&self) -> String {
        self.hint.clone()
    }

    fn mounts_local_folders(&self) -> bool {
        self.local_folders
    }

    async fn connect(&self) -> Result<(), ProviderError> {
        self.docker().await.map(|_| ())
    }

    async fn ping(&self) -> Result<(), ProviderError> {
        let docker = self.docker().await?;
        docker.ping().await.map_err(|e| self.err("ping", e))?;
        Ok(())
    }

    async fn describe(&self) -> Result<String, ProviderError> {
        let docker = self.docker().await?;
        let v = docker
            .version()
            .await
            .map_err(|e| self.err("asking the engine's version", e))?;
        Ok(format!(
            "Docker Engine {}, {}/{}",
            v.version.unwrap_or_else(|| "?".to_owned()),
            v.os.unwrap_or_default(),
            v.arch.unwrap_or_default()
        ))
    }

    async fn has_image(&self, image: &str) -> Result<Option<bool>, ProviderError> {
        let docker = self.docker().await?;
        match docker.inspect_image(image).await {
            Ok(_) => Ok(Some(true)),
            Err(e) if status_code(&e) == Some(404) => Ok(Some(false)),
            Err(e) => Err(self.err("inspecting the image", e)),
        }
    }

    async fn ensure_image(
        &self,
        image: &str,
        progress: ProgressFn<'_>,
    ) -> Result<(), ProviderError> {
        let docker = self.docker().await?;
        match docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => return Err(self.err("inspecting the image", e)),
        }
        let (repo, tag) = split_image(image);
        let options = CreateImageOptionsBuilder::default()
            .from_image(repo)
            .tag(tag)
            .build();
        let mut stream =
            docker.create_image(Some(options), None, self.settings.credentials.clone());
        let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
        let unavailable = |reason: String| ProviderError::ImageUnavailable {
            image: image.to_owned(),
            reason: format!("it is not present on the engine and pulling it failed: {reason}"),
        };
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(BollardError::DockerStreamError { error }) => return Err(unavailable(error)),
                Err(e) if status_code(&e).is_some() => {
                    return Err(unavailable(match e {
                        BollardError::DockerResponseServerError { message, .. } => message,
                        other => other.to_string(),
                    }));
                }
                Err(e) => return Err(self.err("pulling the image", e)),
            };
            if let Some(detail) = info.error_detail {
                return Err(unavailable(detail.message.unwrap_or_default()));
            }
            if let (Some(id), Some(d)) = (info.id.clone(), info.progress_detail) {
                let entry = layers.entry(id).or_default();
                if let Some(c) = d.current {
                    entry.0 = c.max(0) as u64;
                }
                if let Some(t) = d.total {
                    entry.1 = t.max(0) as u64;
                }
            }
            let (current, total) = layers
                .values()
                .fold((0, 0), |(c, t), (lc, lt)| (c + lc, t + lt));
            progress(Progress {
                message: format!("pulling {image}: {}", info.status.unwrap_or_default()),
                current,
                total,
            });
        }
        // A pull that "succeeded" without producing the image is still a failure.
        docker
            .inspect_image(image)
            .await
            .map_err(|e| unavailable(error_text(&e)))?;
        Ok(())
    }

    async fn build_image(
        &self,
        spec: &BuildSpec,
        output: OutputFn<'_>,
    ) -> Result<(), ProviderError> {
        let failed = |reason: String, tail: Vec<String>| ProviderError::BuildFailed {
            tag: spec.tag.clone(),
            reason,
            tail,
        };
        if spec.tag.is_empty() {
            return Err(failed("no tag to give the image".to_owned(), Vec::new()));
        }
        let docker = self.docker().await?;
        let dockerfile = if spec.dockerfile.is_empty() {
            "Dockerfile"
        } else {
            spec.dockerfile.as_str()
        };
        let args: HashMap<&str, &str> = spec
            .args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let labels: HashMap<&str, &str> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // The classic builder: it needs no session, and with `pull` unset it only reaches
        // for a registry when the base image is missing. `forcerm` removes the intermediate
        // containers of a failed build too.
        let mut options = BuildImageOptionsBuilder::default()
            .t(&spec.tag)
            .dockerfile(dockerfile)
            .buildargs(&args)
            .labels(&labels)
            .rm(true)
            .forcerm(true)
            .version(BuilderVersion::BuilderV1);
        if let Some(target) = spec.target.as_deref().filter(|t| !t.is_empty()) {
            options = options.target(target);
        }
        if !spec.cache_from.is_empty() {
            options = options.cachefrom(&spec.cache_from);
        }
        let mut stream =
            docker.build_image(options.build(), None, Some(body_full(spec.context.clone())));
        let mut log = BuildLog::new(output);
        let outcome: Result<(), String> = loop {
            match stream.next().await {
                None => break Ok(()),
                Some(Ok(info)) => {
                    if let Some(text) = info.stream {
                        log.push(&text);
                    }
                    if let Some(detail) = info.error_detail {
                        break Err(detail.message.unwrap_or_default());
                    }
                }
                Some(Err(BollardError::DockerStreamError { error })) => break Err(error),
                Some(Err(BollardError::DockerResponseServerError { message, .. })) => {
                    break Err(message);
                }
                Some(Err(
                    e @ (BollardError::JsonDataError { .. } | BollardError::JsonSerdeError { .. }),
                )) => break Err(e.to_string()),
                Some(Err(e)) => return Err(self.err("building the image", e)),
            }
        };
        drop(stream);
        let tail = log.finish();
        let reason = match outcome {
            // A build that ends without an error but produced no image still failed.
            Ok(()) => match docker.inspect_image(&spec.tag).await {
                Ok(_) => return Ok(()),
                Err(e) if status_code(&e) == Some(404) => {
                    "the build ended without producing the image".to_owned()
                }
                Err(e) => return Err(self.err("inspecting the built image", e)),
            },
            Err(message) => build_error_reason(dockerfile, &message),
        };
        self.remove_failed_image(&spec.tag).await;
        Err(failed(reason, tail))
    }

    async fn create(&self, spec: &CreateSpec) -> Result<(), ProviderError> {
        let docker = self.docker().await?;
        let name = resource_name(&spec.id);
        let mut labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(LABEL_MANAGED.to_owned(), "true".to_owned());
        labels.insert(LABEL_WORKSPACE.to_owned(), spec.id.to_string());
        labels.insert(LABEL_NAME.to_owned(), spec.name.clone());
        labels.extend(self.extra_labels.clone());
        docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(labels.clone()),
                ..Default::default()
            })
            .await
            .map_err(|e| self.err("creating the volume", e))?;
        let mut mounts = vec![Mount {
            target: Some(claude_vm_protocol::WORKSPACE_ROOT.to_owned()),
            source: Some(name.clone()),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        }];
        mounts.extend(spec.mounts.iter().map(|m| Mount {
            target: Some(m.target.clone()),
            source: Some(m.source.clone()),
            typ: Some(if m.bind {
                MountType::BIND
            } else {
                MountType::VOLUME
            }),
            read_only: Some(m.read_only),
            ..Default::default()
        }));
        let host_config = HostConfig {
            mounts: Some(mounts),
            nano_cpus: spec
                .resources
                .cpus
                .map(|c| (c * 1e9) as i64)
                .or(self.settings.nano_cpus),
            memory: spec.resources.memory.or(self.settings.memory),
            shm_size: spec.resources.shm_size,
            extra_hosts: (!spec.resources.hosts.is_empty()).then(|| spec.resources.hosts.clone()),
            network_mode: self.settings.network.clone(),
            restart_policy: Some(restart_policy()),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            hostname: Some(spec.name.clone()),
            entrypoint: Some(spec.entrypoint.clone()),
            cmd: Some(vec![]),
            working_dir: Some(spec.workdir.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            user: Some("0:0".to_owned()),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| self.err("creating the container", e))?;
        Ok(())
    }

    async fn upload(
        &self,
        id: &WorkspaceId,
        dest_dir: &str,
        tar: TarStream,
    ) -> Result<(), ProviderError> {
        let docker = self.docker().await?;
        let options = UploadToContainerOptionsBuilder::default()
            .path(dest_dir)
            .build();
        docker
            .upload_to_container(
                &resource_name(id),
                Some(options),
                bollard::body_try_stream(tar),
            )
            .await
            .map_err(|e| self.err("copying files into the workspace", e))
    }

    async fn stat(&self, id: &WorkspaceId, path: &str) -> Result<Option<FileStat>, ProviderError> {
        let docker = self.docker().await?;
        let options = ContainerArchiveInfoOptionsBuilder::default()
            .path(path)
            .build();
        match docker
            .get_container_archive_info(&resource_name(id), Some(options))
            .await
        {
            Ok(s) => Ok(Some(FileStat {
                size: s.size.max(0) as u64,
                mtime: s.modification_time,
            })),
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.err("reading file metadata", e)),
        }
    }

    async fn start(&self, id: &WorkspaceId) -> Result<(), ProviderError> {
        let docker = self.docker().await?;
        // Workspaces made before they could stop themselves had `unless-stopped`, which
        // would restart one that did: give every workspace today's policy as it starts.
        let update = ContainerUpdateBody {
            restart_policy: Some(restart_policy()),
            ..Default::default()
        };
        if let Err(e) = docker.update_container(&resource_name(id), update).await
            && status_code(&e) != Some(404)
        {
            return Err(self.err("setting the container's restart policy", e));
        }
        match docker.start_container(&resource_name(id), None).await {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(304) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Err(ProviderError::NotFound {
                id: id.to_string(),
                what: "container",
            }),
            Err(e) => Err(self.err("starting the container", e)),
        }
    }

    async fn start_and_wait(
        &self,
        id: &WorkspaceId,
        timeout: Duration,
    ) -> Result<String, ProviderError> {
        let docker = self.docker().await?;
        let name = resource_name(id);
        // Attach before starting (as `docker start -a` does) so the first line we read is
        // this run's announcement, never an old one from the logs.
        let options = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .build();
        let mut attached = docker
            .attach_container(&name, Some(options))
            .await
            .map_err(|e| match status_code(&e) {
                Some(404) => ProviderError::NotFound {
                    id: id.to_string(),
                    what: "container",
                },
                _ => self.err("attaching to the container", e),
            })?;
        self.start(id).await?;
        let read_line = async {
            let mut buf = Vec::new();
            while let Some(chunk) = attached.output.next().await {
                match chunk {
                    Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                        buf.extend_from_slice(&message);
                        if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                            return Some(String::from_utf8_lossy(&buf[..pos]).into_owned());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
            None
        };
        match tokio::time::timeout(timeout, read_line).await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => Err(ProviderError::Api {
                op: "starting the workspace daemon",
                message: format!(
                    "the container exited before its daemon started; its last output:\n{}",
                    self.logs_tail(id, 20).await
                ),
            }),
            Err(_) => Err(ProviderError::Api {
                op: "starting the workspace daemon",
                message: format!(
                    "no answer within {}s; its last output:\n{}",
                    timeout.as_secs(),
                    self.logs_tail(id, 20).await
                ),
            }),
        }
    }

    async fn stop(&self, id: &WorkspaceId, grace: Duration) -> Result<(), ProviderError> {
        let docker = self.docker().await?;
        let options = StopContainerOptionsBuilder::default()
            .t(grace.as_secs() as i32)
            .build();
        match docker
            .stop_container(&resource_name(id), Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(304) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Err(ProviderError::NotFound {
                id: id.to_string(),
                what: "container",
            }),
            Err(e) => Err(self.err("stopping the container", e)),
        }
    }

    async fn kill(&self, id: &WorkspaceId) -> Result<(), ProviderError> {
        let docker = self.docker().await?;
        match docker
            .kill_container(&resource_name(id), None::<KillContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            // 409: not running, which is what we want.
            Err(e) if status_code(&e) == Some(409) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Err(ProviderError::NotFound {
                id: id.to_string(),
                what: "container",
            }),
            Err(e) => Err(self.err("killing the container", e)),
        }
    }

    async fn remove_container(&self, id: &WorkspaceId) -> Result<(), ProviderError> {
        let docker = self.docker().await?;
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(false)
            .build();
        match docker
            .remove_container(&resource_name(id), Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.err("removing the container", e)),
        }
    }

    async fn remove(&self, id: &WorkspaceId) -> Result<(), ProviderError> {
        let docker = self.docker().await?;
        let name = resource_name(id);
        self.remove_container(id).await?;
        let options = RemoveVolumeOptionsBuilder::default().force(true).build();
        match docker.remove_volume(&name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.err("removing the volume", e)),
        }
    }

    async fn stopped_itself(
        &self,
        id: &WorkspaceId,
    ) -> Result<Option<jiff::Timestamp>, ProviderError> {
        let docker = self.docker().await?;
        let info = match docker.inspect_container(&resource_name(id), None).await {
            Ok(i) => i,
            Err(e) if status_code(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(self.err("inspecting the container", e)),
        };
        let Some(state) = info.state else {
            return Ok(None);
        };
        if state.running == Some(true) || state.exit_code != Some(0) {
            return Ok(None);
        }
        Ok(state.finished_at.and_then(|t| t.parse().ok()))
    }

    async fn states(&self) -> Result<HashMap<WorkspaceId, LiveState>, ProviderError> {
        let docker = self.docker().await?;
        let mut filters = HashMap::new();
        filters.insert("label".to_owned(), vec![format!("{LABEL_MANAGED}=true")]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.err("listing containers", e))?;
        let mut out = HashMap::new();
        for c in containers {
            let Some(id) = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_WORKSPACE))
                .and_then(|s| s.parse::<WorkspaceId>().ok())
            else {
                continue;
            };
            use ContainerSummaryStateEnum as S;
            let state = match c.state {
                Some(S::RUNNING) => LiveState::Running,
                Some(S::CREATED | S::EXITED | S::STOPPING) => LiveState::Stopped,
                Some(S::RESTARTING) => {
                    LiveState::Broken("its container keeps restarting".to_owned())
                }
                Some(S::PAUSED) => {
                    LiveState::Broken("its container is paused (`docker unpause` it)".to_owned())
                }
                Some(S::DEAD) => LiveState::Broken("its container is dead".to_owned()),
                Some(S::REMOVING) => LiveState::Broken("its container is being removed".to_owned()),
                Some(S::EMPTY) | None => LiveState::Broken(format!(
                    "unknown container state {:?}",
                    c.status.unwrap_or_default()
                )),
            };
            out.insert(id, state);
        }
        Ok(out)
    }

    async fn exec_stream(
        &self,
        id: &WorkspaceId,
        spec: &ExecSpec,
    ) -> Result<Box<dyn crate::ByteStream>, ProviderError> {
        let docker = self.docker().await?;
        let created = self
            .create_exec(id, spec, true, "connecting to the workspace")
            .await?;
        let started = docker
            .start_exec(&created.id, Some(StartExecOptions::default()))
            .await
            .map_err(|e| self.err("connecting to the workspace", e))?;
        match started {
            StartExecResults::Attached { output, input } => Ok(Box::new(ExecDuplex {
                output,
                input,
                pending: bytes::Bytes::new(),
            })),
            StartExecResults::Detached => Err(ProviderError::Api {
                op: "connecting to the workspace",
                message: "the exec session started detached".to_owned(),
            }),
        }
    }

    async fn exec(&self, id: &WorkspaceId, spec: &ExecSpec) -> Result<ExecOutput, ProviderError> {
        let docker = self.docker().await?;
        let created = self
            .create_exec(id, spec, false, "running a command in the workspace")
            .await?;
        let started = docker
            .start_exec(&created.id, Some(StartExecOptions::default()))
            .await
            .map_err(|e| self.err("running a command in the workspace", e))?;
        let mut out = ExecOutput {
            exit_code: -1,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(chunk) = output.next().await {
                match chunk.map_err(|e| self.err("reading command output", e))? {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        out.stdout.extend_from_slice(&message)
                    }
                    LogOutput::StdErr { message } => out.stderr.extend_from_slice(&message),
                    LogOutput::StdIn { .. } => {}
                }
            }
        }
        let inspected = docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| self.err("reading the command's exit code", e))?;
        out.exit_code = inspected.exit_code.unwrap_or(-1);
        Ok(out)
    }
}

/// An exec session's stdin (write side) and stdout (read side) as one stream.
struct ExecDuplex {
    output:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<LogOutput, BollardError>> + Send>>,
    input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    pending: bytes::Bytes,
}

impl tokio::io::AsyncRead for ExecDuplex {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                let chunk = self.pending.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match self.output.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(std::io::Error::other(e.to_string())));
                }
                Poll::Ready(Some(Ok(LogOutput::StdOut { message })))
                | Poll::Ready(Some(Ok(LogOutput::Console { message }))) => {
                    self.pending = message;
                }
                Poll::Ready(Some(Ok(LogOutput::StdErr { message }))) => {
                    tracing::debug!("exec stderr: {}", String::from_utf8_lossy(&message).trim());
                }
                Poll::Ready(Some(Ok(LogOutput::StdIn { .. }))) => {}
            }
        }
    }
}

impl tokio::io::AsyncWrite for ExecDuplex {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.input.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.input.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.input.as_mut().poll_shutdown(cx)
    }
}

impl DockerProvider {
    /// Create (not start) an exec session for `spec`, stdin attached when asked.
    async fn create_exec(
        &self,
        id: &WorkspaceId,
        spec: &ExecSpec,
        stdin: bool,
        op: &'static str,
    ) -> Result<bollard::exec::CreateExecResults, ProviderError> {
        let docker = self.docker().await?;
        let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        docker
            .create_exec(
                &resource_name(id),
                CreateExecOptions {
                    attach_stdin: Some(stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(spec.cmd.clone()),
                    user: spec.user.clone(),
                    working_dir: spec.workdir.clone(),
                    env: Some(env),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| match status_code(&e) {
                Some(404) => ProviderError::NotFound {
                    id: id.to_string(),
                    what: "container",
                },
                Some(409) => ProviderError::Api {
                    op,
                    message: "the workspace is not running".to_owned(),
                },
                _ => self.err(op, e),
            })
    }

    /// Untag whatever image `tag` names after a failed build (the classic builder tags
    /// only on success, so this is an image an earlier build left): a failed build
    /// leaves nothing under its tag. Best effort: the build's error is what matters.
    async fn remove_failed_image(&self, tag: &str) {
        let Ok(docker) = self.docker().await else {
            return;
        };
        match docker.inspect_image(tag).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => return,
            Err(e) => {
                tracing::warn!("cannot tell whether {tag} is left after a failed build: {e}");
                return;
            }
        }
        // `force`: containers made from the image keep it, untagged.
        let options = RemoveImageOptionsBuilder::default().force(true).build();
        match docker.remove_image(tag, Some(options), None).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(404) => {}
            Err(e) => tracing::warn!("cannot remove {tag} after a failed build: {e}"),
        }
    }

    /// The last lines a workspace's container printed, for error messages.
    async fn logs_tail(&self, id: &WorkspaceId, lines: usize) -> String {
        let Ok(docker) = self.docker().await else {
            return String::new();
        };
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = docker.logs(&resource_name(id), Some(options));
        let mut text = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_output_is_handed_on_line_by_line_and_its_last_lines_kept() {
        let seen = std::sync::Mutex::new(Vec::new());
        let output = |line: &str| seen.lock().unwrap().push(line.to_owned());
        let mut log = BuildLog::new(&output);
        log.push("Step 1/2 : FROM base\n");
        log.push("\n");
        log.push("one\ntw");
        log.push("o\r\n");
        assert_eq!(
            *seen.lock().unwrap(),
            ["Step 1/2 : FROM base", "one", "two"]
        );
        for i in 0..30 {
            log.push(&format!("line {i}\n"));
        }
        log.push("unfinished");
        let tail = log.finish();
        assert_eq!(tail.len(), BUILD_TAIL_LINES);
        assert_eq!(tail.first().unwrap(), "line 11");
        assert_eq!(tail.last().unwrap(), "unfinished");
        assert_eq!(seen.lock().unwrap().len(), 3 + 30 + 1);
    }

    #[test]
    fn build_output_without_newlines_is_cut_when_long() {
        let seen = std::sync::Mutex::new(Vec::new());
        let output = |line: &str| seen.lock().unwrap().push(line.len());
        let mut log = BuildLog::new(&output);
        log.push(&"x".repeat(BUILD_LINE_MAX + 1));
        assert_eq!(*seen.lock().unwrap(), [BUILD_LINE_MAX + 1]);
        assert_eq!(log.finish().len(), 1);
    }

    #[test]
    fn a_missing_dockerfile_is_named_in_the_reason() {
        let reason = build_error_reason(
            "nowhere/Dockerfile",
            "Cannot locate specified Dockerfile: nowhere/Dockerfile",
        );
        assert!(
            reason.starts_with("the build context has no Dockerfile at \"nowhere/Dockerfile\"")
        );
        assert_eq!(
            build_error_reason("Dockerfile", " "),
            "the engine gave no reason"
        );
    }

    #[test]
    fn image_references_split_for_pulling() {
        assert_eq!(split_image("debian"), ("debian", "latest"));
        assert_eq!(
            split_image("debian:bookworm-slim"),
            ("debian", "bookworm-slim")
        );
        assert_eq!(
            split_image("localhost:5000/img"),
            ("localhost:5000/img", "latest")
        );
        assert_eq!(
            split_image("localhost:5000/img:1"),
            ("localhost:5000/img", "1")
        );
        assert_eq!(split_image("img@sha256:abc"), ("img@sha256:abc", ""));
    }
}
