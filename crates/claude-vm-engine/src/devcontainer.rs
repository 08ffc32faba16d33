//! `up` of a project that has a devcontainer.json: what `claude-vm-devcontainer` computes,
//! acted on. The image it names, or the one it builds (its Dockerfile, then its features
//! layered on), built through the workspace's provider and kept under a tag named by the
//! content hash of everything it is made of, so an unchanged configuration reuses it;
//! its `containerEnv`; and its lifecycle commands, run as the agent user in the project
//! folder once the project is in place.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use claude_vm_devcontainer::{self as dc, Command, DevContainer, ResolvedFeatures, Source, Step};
use claude_vm_provider::{BuildSpec, ExecSpec, Provider};
use claude_vm_store::WorkspaceRecord;

use crate::{Engine, EngineError, Reporter, Result};

/// What `up` does about a project's devcontainer.json, decided before anything is created.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub config: DevContainer,
    /// What `customizations.claude-vm` sets.
    pub customizations: Customizations,
    /// `mounts`: named volumes, and host folders when allowed.
    pub mounts: Vec<claude_vm_provider::ExtraMount>,
    /// What of `runArgs` is applied.
    pub run_args: RunArgs,
    /// Which of several configurations (`.devcontainer/<name>/`), if one of several.
    pub name: Option<String>,
    /// The user agents, commands and `ssh` run as (`remoteUser`, else `containerUser`),
    /// when it is one other than root.
    pub agent_user: Option<String>,
    /// The image the workspace runs.
    pub image: String,
    /// How that image comes to be.
    pub plan: ImagePlan,
    /// `updateRemoteUserUID`: the layer giving the user new ids, on top of the plan's image.
    pub uid_update: Option<UidUpdate>,
}

/// The agent user's ids changed in a layer of its own (`updateRemoteUserUID`).
#[derive(Debug, Clone)]
pub(crate) struct UidUpdate {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    /// The image the layer is built on (what the plan makes).
    pub base: String,
    pub rebuild: bool,
}

/// The ids `updateRemoteUserUID` (true unless the file says false, as in the spec, on
/// Linux) gives the devcontainer's user: those of the person running claude-vm (of the one
/// who ran it with `sudo`, when it runs as root), so that files of host folders mounted in
/// belong to the same person on both sides. `None` when the ids stay: the option is false,
/// the configuration names no user, the Docker engine is not this machine's (a remote
/// host's files are not this user's), or that person is root.
fn uid_update_ids(config: &DevContainer, has_user: bool, local_docker: bool) -> Option<(u32, u32)> {
    if !cfg!(target_os = "linux")
        || !local_docker
        || !has_user
        || config.update_remote_user_uid == Some(false)
    {
        return None;
    }
    let (uid, gid) = if nix::unistd::geteuid().is_root() {
        let id = |k: &str| std::env::var(k).ok()?.parse::<u32>().ok();
        (id("SUDO_UID")?, id("SUDO_GID")?)
    } else {
        (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
    };
    (uid != 0).then_some((uid, gid))
}

#[derive(Debug, Clone)]
pub(crate) enum ImagePlan {
    /// `image` with no features: used as it is (pulled when the provider can).
    Use,
    /// Built, unless an image under the tag exists already and no rebuild is asked for.
    Build {
        rebuild: bool,
        /// The plain image features are layered on (`image`), when there is no `build`.
        base_image: Option<String>,
        features: ResolvedFeatures,
    },
}

/// `customizations.claude-vm` of a devcontainer.json: what claude-vm's own configuration
/// says, per repository.
#[derive(Debug, Clone, Default)]
pub(crate) struct Customizations {
    /// `agent`: the default agent of the workspace's conversations.
    pub agent: Option<String>,
    /// `idleStop` (`30m`, `2h`, `off`): the workspace's idle-stop policy.
    pub idle_stop: Option<claude_vm_core::lifecycle::IdleStop>,
}

impl Customizations {
    fn read(v: Option<&serde_json::Value>) -> Result<Customizations> {
        let bad = |what: &str| {
            EngineError::InvalidInput(format!(
                "customizations.claude-vm.{what} in devcontainer.json"
            ))
        };
        let Some(v) = v else {
            return Ok(Customizations::default());
        };
        let Some(map) = v.as_object() else {
            return Err(EngineError::InvalidInput(
                "customizations.claude-vm in devcontainer.json is not an object: write {\"agent\": \"claude\", \"idleStop\": \"30m\"}".to_owned(),
            ));
        };
        let mut c = Customizations::default();
        for (k, v) in map {
            match (k.as_str(), v) {
                ("agent", serde_json::Value::String(a)) => {
                    crate::agents::known_kind(a)?;
                    c.agent = Some(a.clone());
                }
                ("idleStop" | "idle_stop", serde_json::Value::String(s)) => {
                    c.idle_stop = Some(
                        claude_vm_core::lifecycle::IdleStop::parse(s)
                            .map_err(|e| bad(&format!("{k} is not a duration: {e}")))?,
                    );
                }
                ("agent" | "idleStop" | "idle_stop", _) => {
                    return Err(bad(&format!("{k} must be a string")));
                }
                (other, _) => {
                    return Err(bad(&format!("{other} is unknown; known: agent, idleStop")));
                }
            }
        }
        Ok(c)
    }
}

/// The safe part of a devcontainer's `runArgs`: resource limits, environment, hosts and
/// labels. Anything else (privileges, devices, networks, mounts, the user) is left out and
/// listed, never passed to Docker.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunArgs {
    pub resources: claude_vm_provider::Resources,
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    /// What was not applied, as written.
    pub ignored: Vec<String>,
}

impl RunArgs {
    fn read(args: &[String]) -> Result<RunArgs> {
        let bad = |arg: &str, why: &str| {
            EngineError::InvalidInput(format!("runArgs {arg:?} in devcontainer.json: {why}"))
        };
        let mut out = RunArgs::default();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            // `--flag=value` or `--flag value`.
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                _ => (arg.clone(), None),
            };
            let takes_value = matches!(
                flag.as_str(),
                "--cpus"
                    | "--memory"
                    | "-m"
                    | "--shm-size"
                    | "--env"
                    | "-e"
                    | "--add-host"
                    | "--label"
                    | "-l"
            );
            if !takes_value {
                out.ignored.push(arg.clone());
                i += 1;
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i)
                        .cloned()
                        .ok_or_else(|| bad(arg, "needs a value"))?
                }
            };
            match flag.as_str() {
                "--cpus" => {
                    let c: f64 = value
                        .parse()
                        .map_err(|_| bad(&value, "--cpus takes a number"))?;
                    if !(c > 0.0 && c <= 1024.0) {
                        return Err(bad(&value, "--cpus must be above 0"));
                    }
                    out.resources.cpus = Some(c);
                }
                "--memory" | "-m" | "--shm-size" => {
                    let n = claude_vm_core::provider::parse_bytes(&value)
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad(&value, "a size like 512m or 4g"))?;
                    if flag == "--shm-size" {
                        out.resources.shm_size = Some(n);
                    } else {
                        out.resources.memory = Some(n);
                    }
                }
                "--env" | "-e" => match value.split_once('=') {
                    Some((k, v)) if !k.is_empty() => out.env.push((k.to_owned(), v.to_owned())),
                    _ => return Err(bad(&value, "--env takes NAME=VALUE")),
                },
                "--add-host" => {
                    if value
                        .split_once(':')
                        .is_none_or(|(h, ip)| h.is_empty() || ip.is_empty())
                        || value.chars().any(char::is_whitespace)
                    {
                        return Err(bad(&value, "--add-host takes HOST:IP"));
                    }
                    out.resources.hosts.push(value);
                }
                _ => match value.split_once('=') {
                    Some((k, v)) if !k.is_empty() && !k.starts_with("dev.claude-vm.") => {
                        out.labels.insert(k.to_owned(), v.to_owned());
                    }
                    _ => {
                        return Err(bad(
                            &value,
                            "--label takes NAME=VALUE, not a dev.claude-vm. name",
                        ));
                    }
                },
            }
            i += 1;
        }
        Ok(out)
    }
}

/// The mounts `mounts` asks for: named volumes, and host folders (absolute paths) when
/// `allow_host` says so; an anonymous volume, a tmpfs or another type is refused, as is a
/// target that would hide the workspace's own volume.
fn extra_mounts(
    config: &DevContainer,
    allow_host: bool,
) -> Result<Vec<claude_vm_provider::ExtraMount>> {
    let bad =
        |why: String| EngineError::InvalidInput(format!("a mount of devcontainer.json {why}"));
    let mut out = Vec::new();
    for m in &config.mounts {
        let bind = m.kind == dc::MountKind::Bind && allow_host;
        if m.kind != dc::MountKind::Volume && !bind {
            return Err(bad(format!(
                "for {} is not a named volume; only `type=volume` mounts are supported",
                m.target
            )));
        }
        let Some(name) = &m.source else {
            return Err(bad(format!(
                "for {} names no volume (source=...)",
                m.target
            )));
        };
        let name_ok = name.len() <= 128
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if bind && !name.starts_with('/') {
            return Err(bad(format!(
                "binds {name:?}, which is not an absolute path of the host"
            )));
        }
        if !bind && !name_ok {
            return Err(bad(format!(
                "names the volume {name:?}, which is not a valid volume name"
            )));
        }
        let root = claude_vm_protocol::WORKSPACE_ROOT;
        let t = m.target.trim_end_matches('/');
        if !t.starts_with('/') || t.is_empty() || root.starts_with(&format!("{t}/")) || t == root {
            return Err(bad(format!(
                "targets {}, which must be an absolute path other than / and {root} and its parents",
                m.target
            )));
        }
        out.push(claude_vm_provider::ExtraMount {
            source: name.clone(),
            target: m.target.clone(),
            read_only: m.read_only,
            bind,
        });
    }
    Ok(out)
}

/// Say what of the configuration is read but not acted on (yet).
fn not_applied(config: &DevContainer, reporter: &dyn Reporter) {
    let mut notes = Vec::new();
    if !config.forward_ports.is_empty() {
        notes.push(
            "forwardPorts are not forwarded by themselves (`workspace list -l` shows them; reach them with `ssh -L`)".to_owned(),
        );
    }
    let r = &config.runtime;
    if r.privileged || !r.cap_add.is_empty() || !r.security_opt.is_empty() {
        notes.push(
            "privileged, capAdd and securityOpt (workspaces get no extra privileges)".to_owned(),
        );
    }
    if !notes.is_empty() {
        reporter.warn(&format!("not applied: {}", notes.join("; ")));
    }
}

/// The user agents run as, from `remoteUser` (else `containerUser`): `None` when neither is
/// set, or when it is root (agents never run as root; they run as uid
/// [`claude_vm_protocol::AGENT_UID`] then, which is said).
fn agent_user(config: &DevContainer, reporter: &dyn Reporter) -> Result<Option<String>> {
    let (property, user) = match (&config.remote_user, &config.container_user) {
        (Some(u), _) => ("remoteUser", u),
        (None, Some(u)) => ("containerUser", u),
        (None, None) => return Ok(None),
    };
    if !dc::is_user_name(user) {
        return Err(EngineError::InvalidInput(format!(
            "{property} {user:?} in devcontainer.json is not a user name"
        )));
    }
    if user == "root" || user == "0" {
        reporter.warn(&format!(
            "{property} is root, but agents never run as root: they, lifecycle commands and `ssh` run as the workspace's agent user (uid {})",
            claude_vm_protocol::AGENT_UID
        ));
        return Ok(None);
    }
    Ok(Some(user.clone()))
}

/// The ids of `user` in an image's `/etc/passwd` text (a name or a uid); `None` when it
/// has no such user, or it is root's.
fn passwd_ids(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || (f[0] != user && f[2] != user) {
            return None;
        }
        let (uid, gid) = (f[2].parse().ok()?, f[3].parse().ok()?);
        (uid != 0).then_some((uid, gid))
    })
}

/// Refusal for `--image` together with a devcontainer.json.
fn both(config: &Path) -> EngineError {
    EngineError::InvalidInput(format!(
        "--image and {} both say what to run: drop --image, or pass --no-devcontainer to ignore the file",
        config.display()
    ))
}

fn config_error(e: dc::Error) -> EngineError {
    let hint = e.hint();
    EngineError::InvalidInput(match hint {
        Some(h) => format!("{e}; {h}"),
        None => e.to_string(),
    })
}

impl Engine {
    /// Find and read the project's devcontainer.json (`name` picks one of several); `None`
    /// when it has none. Everything is checked here, before `up` creates anything.
    pub(crate) async fn prepare_devcontainer(
        &self,
        root: &Path,
        req: &crate::UpRequest,
        workspace_id: &str,
        project_dir: &str,
        reporter: &dyn Reporter,
    ) -> Result<Option<Prepared>> {
        let name = req.devcontainer.as_deref();
        let Some(located) = crate::off_worker(|| dc::find(root, name)).map_err(config_error)?
        else {
            if name.is_some() {
                return Err(EngineError::InvalidInput(format!(
                    "--devcontainer names a configuration, but {} has none",
                    root.display()
                )));
            }
            let starter = crate::off_worker(|| dc::starter(root));
            if let Some(marker) = starter.marker {
                reporter.step(&format!(
                    "hint: no devcontainer.json, so the default image is used; `claude-vm devcontainer init` writes one for this project ({marker}: {})",
                    starter.image
                ));
            }
            return Ok(None);
        };
        if req.image.is_some() {
            return Err(both(&located.config));
        }
        let ctx = dc::Context {
            local_env: std::env::vars().collect(),
            container_env: None,
            id_labels: BTreeMap::from([(
                "dev.claude-vm.workspace".to_owned(),
                workspace_id.to_owned(),
            )]),
            local_workspace_folder: Some(root.display().to_string()),
            default_workspace_folder: Some(project_dir.to_owned()),
        };
        let config = crate::off_worker(|| dc::load(&located, &ctx)).map_err(config_error)?;
        config.ensure_supported().map_err(config_error)?;
        reporter.step(&format!("using {}", located.config.display()));
        if let Some(w) = config.warning() {
            reporter.warn(&w);
        }
        if config.container_workspace_folder != project_dir {
            reporter.warn(&format!(
                "workspaceFolder {} is not used: the project is at {project_dir} in a claude-vm workspace",
                config.container_workspace_folder
            ));
        }
        if !req.allow_host_mounts
            && let Some(m) = config.bind_mounts().next()
        {
            return Err(EngineError::InvalidInput(format!(
                "devcontainer.json mounts a folder of the Docker host ({}), which the agent could then read and change; pass --allow-host-mounts if that is meant",
                m.source.as_deref().unwrap_or(&m.target)
            )));
        }
        if let Source::Build(b) = &config.source {
            check_build(b)?;
        }
        let cache = self.home.root().join("cache").join("features");
        let fetched = crate::oci::fetch_features(&config, &cache, reporter).await?;
        let features =
            crate::off_worker(|| dc::resolve_features(&config, &fetched)).map_err(config_error)?;
        for r in features.requests() {
            reporter.warn(&format!(
                "a feature asks for {r}, which claude-vm does not grant"
            ));
        }
        let (image, plan) = match (&config.source, features.is_empty()) {
            (Source::Image(image), true) => (image.clone(), ImagePlan::Use),
            (source, _) => {
                let base_image = match source {
                    Source::Image(i) => Some(i.clone()),
                    _ => None,
                };
                let hash =
                    crate::off_worker(|| dc::content_hash(&config, &features, &BTreeMap::new()))
                        .map_err(config_error)?;
                (
                    hash.image_tag(),
                    ImagePlan::Build {
                        rebuild: req.rebuild,
                        base_image,
                        features,
                    },
                )
            }
        };
        if let Some(command) = &config.lifecycle.initialize {
            if req.source_label.is_some() {
                reporter.warn(
                    "initializeCommand is not run: the project was uploaded, and it would run on the server",
                );
            } else {
                crate::off_worker(|| self.initialize(root, &config, command, req.trust, reporter))?;
            }
        }
        let customizations = Customizations::read(config.claude_vm.as_ref())?;
        let mounts = extra_mounts(&config, req.allow_host_mounts)?;
        let run_args = RunArgs::read(&config.run_args)?;
        if !run_args.ignored.is_empty() {
            reporter.warn(&format!(
                "runArgs not applied (only --cpus, --memory, --shm-size, --env, --add-host and --label are): {}",
                run_args.ignored.join(" ")
            ));
        }
        not_applied(&config, reporter);
        let agent_user = agent_user(&config, reporter)?;
        let local_docker = self
            .store(|s| {
                s.provider(
                    req.provider
                        .as_deref()
                        .unwrap_or(&self.config.default_provider),
                )
            })?
            .is_some_and(|r| r.kind == claude_vm_core::provider::ProviderKind::Docker);
        let (image, uid_update) = match uid_update_ids(&config, agent_user.is_some(), local_docker)
        {
            None => (image, None),
            Some((uid, gid)) => {
                // Named after what it is made of: the plan's image (for an image used
                // as it is, one of ours named by that image and the file) and the ids.
                let own = match &plan {
                    ImagePlan::Build { .. } => image.clone(),
                    ImagePlan::Use => {
                        use sha2::{Digest, Sha256};
                        let h = Sha256::digest(
                            format!("{}\0{image}", config.file.display()).as_bytes(),
                        );
                        format!("{}{}", dc::IMAGE_PREFIX, &crate::hex(&h)[..16])
                    }
                };
                let user = agent_user.clone().expect("a user is named");
                reporter.step(&format!(
                        "updateRemoteUserUID: {user} gets uid {uid} and gid {gid} (yours), in a layer of its own"
                    ));
                (
                    format!("{own}-uid{uid}-{gid}"),
                    Some(UidUpdate {
                        user,
                        uid,
                        gid,
                        base: image,
                        rebuild: req.rebuild,
                    }),
                )
            }
        };
        Ok(Some(Prepared {
            agent_user,
            uid_update,
            customizations,
            mounts,
            run_args,
            config,
            name: located.name.clone(),
            image,
            plan,
        }))
    }

    /// Run `initializeCommand` on this machine in the project folder, once it is trusted:
    /// by `--trust` (remembered for this file and command) or remembered from before.
    /// A failure fails `up` (nothing exists yet).
    fn initialize(
        &self,
        root: &Path,
        config: &DevContainer,
        command: &Command,
        trust: bool,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        let shown = match command {
            Command::Shell(s) => s.clone(),
            Command::Exec(v) => v.join(" "),
            Command::Parallel(named) => named
                .iter()
                .map(|(k, c)| format!("{k}: {}", argv(c).join(" ")))
                .collect::<Vec<_>>()
                .join("; "),
        };
        let file = config.file.display().to_string();
        let digest = {
            use sha2::{Digest, Sha256};
            let h = Sha256::digest(format!("{file}\0{shown}").as_bytes());
            crate::hex(&h)
        };
        let trusted_file = self.home.root().join("trusted-initialize-commands");
        let known = std::fs::read_to_string(&trusted_file).unwrap_or_default();
        if !known.lines().any(|l| l == digest) {
            if !trust {
                return Err(EngineError::Untrusted {
                    file,
                    command: shown,
                });
            }
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&trusted_file)
                .map_err(|e| {
                    EngineError::InvalidInput(format!(
                        "cannot write {}: {e}",
                        trusted_file.display()
                    ))
                })?;
            let _ = writeln!(f, "{digest}");
        }
        reporter.step(&format!(
            "running initializeCommand on this machine: {shown}"
        ));
        let runs: Vec<Vec<String>> = match command {
            Command::Parallel(named) => named.values().map(argv).collect(),
            one => vec![argv(one)],
        };
        for cmd in runs {
            let out = std::process::Command::new(&cmd[0])
                .args(&cmd[1..])
                .current_dir(root)
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| {
                    EngineError::InvalidInput(format!(
                        "initializeCommand cannot run ({}): {e}",
                        cmd.join(" ")
                    ))
                })?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            for line in text.lines() {
                reporter.step(&format!("  {line}"));
            }
            if !out.status.success() {
                let tail: Vec<&str> = text.lines().rev().take(10).collect();
                return Err(EngineError::InvalidInput(format!(
                    "initializeCommand failed ({}){}; fix it in {file}",
                    out.status,
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ": {}",
                            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                        )
                    }
                )));
            }
        }
        Ok(())
    }

    /// Make the devcontainer's image exist on the provider: build what needs building
    /// (output streamed), reuse what was built before.
    pub(crate) async fn devcontainer_image(
        &self,
        provider: &dyn Provider,
        p: &Prepared,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        let Some(u) = &p.uid_update else {
            return self
                .devcontainer_plan_image(provider, p, &p.image, reporter)
                .await;
        };
        if !u.rebuild && provider.has_image(&p.image).await? == Some(true) {
            reporter.step(&format!("using the image built before ({})", p.image));
            return Ok(());
        }
        match &p.plan {
            ImagePlan::Use => {
                let progress = |pr: claude_vm_provider::Progress| {
                    if pr.total > 0 {
                        reporter.progress(pr.current, pr.total);
                    } else {
                        reporter.step(&pr.message);
                    }
                };
                provider.ensure_image(&u.base, &progress).await?;
            }
            ImagePlan::Build { .. } => {
                self.devcontainer_plan_image(provider, p, &u.base, reporter)
                    .await?;
            }
        }
        let dockerfile =
            dc::update_uid_dockerfile(&u.base, &u.user, u.uid, u.gid).map_err(config_error)?;
        let mut tar = tar::Builder::new(Vec::new());
        append_bytes(&mut tar, "Dockerfile", dockerfile.as_bytes())?;
        let context = Bytes::from(tar.into_inner().map_err(|e| {
            EngineError::InvalidInput(format!("cannot pack the user's layer: {e}"))
        })?);
        let output = |line: &str| reporter.step(line);
        provider
            .build_image(
                &BuildSpec {
                    tag: p.image.clone(),
                    context,
                    dockerfile: "Dockerfile".to_owned(),
                    labels: BTreeMap::from([
                        (
                            "dev.claude-vm.devcontainer".to_owned(),
                            p.config.file.display().to_string(),
                        ),
                        ("dev.claude-vm.base".to_owned(), u.base.clone()),
                    ]),
                    ..BuildSpec::default()
                },
                &output,
            )
            .await?;
        Ok(())
    }

    /// The image the plan of `p` makes, tagged `image`: built (or reused when built before).
    async fn devcontainer_plan_image(
        &self,
        provider: &dyn Provider,
        p: &Prepared,
        image: &str,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        let ImagePlan::Build {
            rebuild,
            base_image,
            features,
        } = &p.plan
        else {
            return Ok(());
        };
        if !rebuild && provider.has_image(image).await? == Some(true) {
            reporter.step(&format!("using the image built before ({image})"));
            return Ok(());
        }
        let output = |line: &str| reporter.step(line);
        let mut labels = BTreeMap::from([(
            "dev.claude-vm.devcontainer".to_owned(),
            p.config.file.display().to_string(),
        )]);
        let base = match (&p.config.source, base_image) {
            (Source::Build(build), _) => {
                let tag = if features.is_empty() {
                    image.to_owned()
                } else {
                    format!("{image}-base")
                };
                reporter.step(&format!(
                    "building {} (docker build)",
                    build.dockerfile.display()
                ));
                let (context, dockerfile) = crate::off_worker(|| dockerfile_context(build))?;
                provider
                    .build_image(
                        &BuildSpec {
                            tag: tag.clone(),
                            context,
                            dockerfile,
                            args: p_args(p),
                            target: match &p.config.source {
                                Source::Build(b) => b.target.clone(),
                                _ => None,
                            },
                            cache_from: match &p.config.source {
                                Source::Build(b) => b.cache_from.clone(),
                                _ => Vec::new(),
                            },
                            labels: labels.clone(),
                        },
                        &output,
                    )
                    .await?;
                tag
            }
            (_, Some(image)) => {
                let progress = |pr: claude_vm_provider::Progress| {
                    if pr.total > 0 {
                        reporter.progress(pr.current, pr.total);
                    } else {
                        reporter.step(&pr.message);
                    }
                };
                provider.ensure_image(image, &progress).await?;
                image.clone()
            }
            _ => unreachable!("a build plan has a Dockerfile or a base image"),
        };
        if features.is_empty() {
            return Ok(());
        }
        reporter.step(&format!(
            "installing {} feature{}: {}",
            features.features.len(),
            if features.features.len() == 1 {
                ""
            } else {
                "s"
            },
            features
                .features
                .iter()
                .map(|f| f.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let layer =
            dc::features_dockerfile(&base, None, &p.config, features).map_err(config_error)?;
        let context = crate::off_worker(|| features_context(&layer))?;
        labels.insert("dev.claude-vm.base".to_owned(), base);
        provider
            .build_image(
                &BuildSpec {
                    tag: image.to_owned(),
                    context,
                    dockerfile: "Dockerfile".to_owned(),
                    labels,
                    ..BuildSpec::default()
                },
                &output,
            )
            .await?;
        Ok(())
    }

    /// Run lifecycle commands one step after another (in the spec's order), as the agent
    /// user in the project folder, their output shown. A failing command does not fail
    /// `up`; the steps after it are skipped, and the failure is returned for the
    /// workspace's status reason.
    pub(crate) async fn run_lifecycle(
        &self,
        provider: &dyn Provider,
        w: &WorkspaceRecord,
        steps: &[(Step, Command)],
        env: &[(String, String)],
        project_dir: &str,
        reporter: &dyn Reporter,
    ) -> Option<String> {
        let log = self.devcontainer_log(&w.id);
        let user = self.agent_exec_user(w);
        for (step, command) in steps {
            // Shown as they come; written to the log once per step.
            let mut logged = vec![format!("running {}", step.property())];
            reporter.step(&logged[0]);
            let runs: Vec<(Option<&str>, Vec<String>)> = match command {
                Command::Parallel(named) => named
                    .iter()
                    .map(|(n, c)| (Some(n.as_str()), argv(c)))
                    .collect(),
                one => vec![(None, argv(one))],
            };
            let specs: Vec<ExecSpec> = runs
                .iter()
                .map(|(_, cmd)| ExecSpec {
                    cmd: cmd.clone(),
                    user: Some(user.clone()),
                    workdir: Some(project_dir.to_owned()),
                    env: env.to_vec(),
                })
                .collect();
            let execs = specs.iter().map(|spec| provider.exec(&w.id, spec));
            let outs = futures_util::future::join_all(execs).await;
            let mut failed = None;
            for ((label, _), out) in runs.iter().zip(outs) {
                let what = match label {
                    Some(l) => format!("{} ({l})", step.property()),
                    None => step.property().to_owned(),
                };
                match out {
                    Ok(out) => {
                        for line in String::from_utf8_lossy(&out.stdout)
                            .lines()
                            .chain(String::from_utf8_lossy(&out.stderr).lines())
                        {
                            let line = format!("  {line}");
                            reporter.step(&line);
                            logged.push(line);
                        }
                        if out.exit_code != 0 && failed.is_none() {
                            failed = Some(format!("{what} failed with status {}", out.exit_code));
                        }
                    }
                    Err(e) => {
                        if failed.is_none() {
                            failed = Some(format!("{what} could not run: {e}"));
                        }
                    }
                }
            }
            if let Some(f) = &failed {
                logged.push(format!("{f}; the steps after it were not run"));
            }
            log.append(&logged);
            if let Some(f) = failed {
                reporter.warn(&format!(
                    "{f}; the workspace runs without the steps after it"
                ));
                return Some(f);
            }
        }
        None
    }

    /// After `up` created a workspace from a devcontainer.json: its creation steps
    /// (`onCreateCommand`, `updateContentCommand`, `postCreateCommand`, then
    /// `postStartCommand`), and what later starts need kept in the index.
    pub(crate) async fn devcontainer_created(
        &self,
        provider: &dyn Provider,
        w: &WorkspaceRecord,
        p: &Prepared,
        project_dir: &str,
        reporter: &dyn Reporter,
    ) -> Result<Option<String>> {
        let kept = Kept::of(p, None);
        let steps: Vec<(Step, Command)> = p
            .config
            .lifecycle
            .in_container()
            .filter(|(step, _)| *step != Step::PostAttach)
            .map(|(step, c)| (step, c.clone()))
            .collect();
        Ok(self
            .run_lifecycle(provider, w, &steps, &kept.env(), project_dir, reporter)
            .await)
    }

    /// Once the container of a workspace made from `p` runs, before anything runs in it as
    /// the agent: what later steps and starts need kept in the index, the agent user's ids
    /// among it (read from the image's `/etc/passwd`).
    pub(crate) async fn devcontainer_keep(
        &self,
        provider: &dyn Provider,
        w: &WorkspaceRecord,
        p: &Prepared,
        reporter: &dyn Reporter,
    ) -> Result<()> {
        let mut ids = None;
        if let Some(user) = &p.agent_user {
            let out = provider
                .exec(
                    &w.id,
                    &ExecSpec {
                        cmd: vec!["cat".into(), "/etc/passwd".into()],
                        ..Default::default()
                    },
                )
                .await?;
            ids = passwd_ids(&String::from_utf8_lossy(&out.stdout), user);
            match ids {
                Some((uid, gid)) => reporter.step(&format!(
                    "agents, lifecycle commands and ssh run as {user} (uid {uid}, gid {gid})"
                )),
                None => reporter.warn(&format!(
                    "the image has no user {user}: agents, lifecycle commands and ssh run as the workspace's agent user (uid {})",
                    claude_vm_protocol::AGENT_UID
                )),
            }
        }
        let kept = Kept::of(p, ids);
        self.store(|s| s.set_devcontainer(&w.id, &serde_json::to_string(&kept).expect("json")))?;
        Ok(())
    }

    /// Who runs as the agent in `w`, as an exec's user (`uid:gid`): the devcontainer's
    /// user when it has one, else uid [`claude_vm_protocol::AGENT_UID`].
    pub(crate) fn agent_exec_user(&self, w: &WorkspaceRecord) -> String {
        let (uid, gid) = self
            .kept(w)
            .ok()
            .flatten()
            .and_then(|k| k.agent_ids)
            .unwrap_or((claude_vm_protocol::AGENT_UID, claude_vm_protocol::AGENT_UID));
        format!("{uid}:{gid}")
    }

    /// For a workspace made from a devcontainer.json, which configuration it was (`Some`,
    /// holding its name when it was one of several); `None` for any other workspace.
    pub(crate) fn devcontainer_of(&self, w: &WorkspaceRecord) -> Result<Option<Option<String>>> {
        Ok(self.kept(w)?.map(|k| k.name))
    }

    /// What the index keeps of a workspace's devcontainer.json (`None`: not made from one,
    /// or what was kept cannot be read).
    fn kept(&self, w: &WorkspaceRecord) -> Result<Option<Kept>> {
        Ok(self
            .store(|s| s.devcontainer(&w.id))?
            .and_then(|json| serde_json::from_str::<Kept>(&json).ok()))
    }

    /// Run the kept command `pick` chooses (`postStartCommand`, `postAttachCommand`) as
    /// `step`; its failure, if any.
    async fn run_kept(
        &self,
        provider: &dyn Provider,
        w: &WorkspaceRecord,
        step: Step,
        pick: fn(&Kept) -> Option<&serde_json::Value>,
        reporter: &dyn Reporter,
    ) -> Option<String> {
        let kept = self.kept(w).ok()??;
        let command = pick(&kept).and_then(command_of)?;
        self.run_lifecycle(
            provider,
            w,
            &[(step, command)],
            &kept.env(),
            &crate::workspaces::project_dir(&w.project),
            reporter,
        )
        .await
    }

    /// Where the output of a workspace's lifecycle commands is kept (`workspace logs`).
    pub(crate) fn devcontainer_log(&self, id: &claude_vm_core::WorkspaceId) -> Log {
        Log(self
            .home
            .root()
            .join("logs")
            .join(format!("{id}-devcontainer.log")))
    }

    /// `claude-vm workspace logs WS`: the output of its devcontainer.json's lifecycle
    /// commands, every run of them, oldest first.
    pub fn workspace_logs(&self, workspace: &str) -> Result<String> {
        let w = self.find_workspace(workspace)?;
        let path = self.devcontainer_log(&w.id).0;
        match crate::off_worker(|| std::fs::read_to_string(&path)) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(EngineError::InvalidInput(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Before someone attaches to a workspace made from a devcontainer.json (`ssh`,
    /// `exec -t`): its `postAttachCommand`. A failure is reported, never fatal.
    pub async fn devcontainer_attach(&self, workspace: &str, reporter: &dyn Reporter) {
        let Ok(w) = self.find_workspace(workspace) else {
            return;
        };
        let Ok(provider) = self.provider_client(&w.provider) else {
            return;
        };
        self.run_kept(
            provider.as_ref(),
            &w,
            Step::PostAttach,
            |k| k.post_attach.as_ref(),
            reporter,
        )
        .await;
    }

    /// The ports a workspace's devcontainer.json forwards, as `list` shows them.
    pub(crate) fn devcontainer_ports(&self, w: &WorkspaceRecord) -> Vec<String> {
        self.kept(w)
            .ok()
            .flatten()
            .map(|k| k.ports)
            .unwrap_or_default()
    }

    /// The agent a workspace's devcontainer.json names (`customizations.claude-vm.agent`).
    pub(crate) fn devcontainer_agent(&self, w: &WorkspaceRecord) -> Option<String> {
        self.kept(w).ok()??.agent
    }

    /// After a workspace made from a devcontainer.json started again: its
    /// `postStartCommand`. Returns the failure, if any, for its status reason.
    pub(crate) async fn devcontainer_started(
        &self,
        provider: &dyn Provider,
        w: &WorkspaceRecord,
        reporter: &dyn Reporter,
    ) -> Option<String> {
        self.run_kept(
            provider,
            w,
            Step::PostStart,
            |k| k.post_start.as_ref(),
            reporter,
        )
        .await
    }
}

/// What a workspace keeps of its devcontainer.json for later starts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Kept {
    file: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    post_start: Option<serde_json::Value>,
    #[serde(default)]
    post_attach: Option<serde_json::Value>,
    #[serde(default)]
    remote_env: BTreeMap<String, String>,
    /// `customizations.claude-vm.agent`: the agent of its conversations by default.
    #[serde(default)]
    agent: Option<String>,
    /// `forwardPorts` with their `portsAttributes` labels, as `list` shows them.
    #[serde(default)]
    ports: Vec<String>,
    /// The agent user's uid and gid, when it is the devcontainer's user.
    #[serde(default)]
    agent_ids: Option<(u32, u32)>,
}

/// An append-only log file on the control side; writing it never fails the caller.
pub(crate) struct Log(std::path::PathBuf);

impl Log {
    pub(crate) fn append(&self, lines: &[String]) {
        use std::io::Write as _;
        let write = || -> std::io::Result<()> {
            if let Some(dir) = self.0.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.0)?;
            let ts = jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .map_err(std::io::Error::other)?;
            let text: String = lines.iter().map(|l| format!("{ts} {l}\n")).collect();
            f.write_all(text.as_bytes())
        };
        if let Err(e) = crate::off_worker(write) {
            tracing::debug!("cannot write {}: {e}", self.0.display());
        }
    }
}

impl Kept {
    fn of(p: &Prepared, agent_ids: Option<(u32, u32)>) -> Kept {
        let config = &p.config;
        Kept {
            agent_ids,
            file: config.file.display().to_string(),
            name: p.name.clone(),
            post_start: config.lifecycle.post_start.as_ref().map(value_of),
            post_attach: config.lifecycle.post_attach.as_ref().map(value_of),
            remote_env: config
                .remote_env
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
                .collect(),
            agent: p.customizations.agent.clone(),
            ports: config
                .forward_ports
                .iter()
                .map(|f| {
                    let name = match &f.host {
                        Some(h) => format!("{h}:{}", f.port),
                        None => f.port.to_string(),
                    };
                    match config
                        .ports_attributes
                        .get(&name)
                        .and_then(|a| a.label.as_deref())
                    {
                        Some(label) => format!("{name} ({label})"),
                        None => name,
                    }
                })
                .collect(),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        self.remote_env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A lifecycle command as devcontainer.json writes it.
fn value_of(c: &Command) -> serde_json::Value {
    match c {
        Command::Shell(s) => serde_json::Value::String(s.clone()),
        Command::Exec(v) => serde_json::json!(v),
        Command::Parallel(named) => serde_json::Value::Object(
            named
                .iter()
                .map(|(k, c)| (k.clone(), value_of(c)))
                .collect(),
        ),
    }
}

/// The command [`value_of`] wrote.
fn command_of(v: &serde_json::Value) -> Option<Command> {
    match v {
        serde_json::Value::String(s) => Some(Command::Shell(s.clone())),
        serde_json::Value::Array(items) => Some(Command::Exec(
            items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()?,
        )),
        serde_json::Value::Object(map) => Some(Command::Parallel(
            map.iter()
                .map(|(k, v)| Some((k.clone(), command_of(v)?)))
                .collect::<Option<BTreeMap<_, _>>>()?,
        )),
        _ => None,
    }
}

fn p_args(p: &Prepared) -> BTreeMap<String, String> {
    match &p.config.source {
        Source::Build(b) => b.args.clone(),
        _ => BTreeMap::new(),
    }
}

/// A command as the program and its arguments: a string through `sh -c`, an array as it is.
fn argv(c: &Command) -> Vec<String> {
    match c {
        Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        Command::Exec(v) => v.clone(),
        // The parser refuses an object of named commands inside another.
        Command::Parallel(named) => named.values().next().map(argv).unwrap_or_default(),
    }
}

/// The Dockerfile and the context a `build` names exist.
fn check_build(build: &dc::Build) -> Result<()> {
    if !build.dockerfile.is_file() {
        return Err(EngineError::InvalidInput(format!(
            "the Dockerfile {} does not exist; fix `build.dockerfile` in devcontainer.json",
            build.dockerfile.display()
        )));
    }
    if !build.context.is_dir() {
        return Err(EngineError::InvalidInput(format!(
            "the build context {} is not a folder; fix `build.context` in devcontainer.json",
            build.context.display()
        )));
    }
    Ok(())
}

/// The build context of a devcontainer's `build` as a tar, honouring the context's
/// `.dockerignore`, and the Dockerfile's path in it (added under a name of its own when it
/// lies outside the context).
fn dockerfile_context(build: &dc::Build) -> Result<(Bytes, String)> {
    let io = |what: &str, e: std::io::Error| {
        EngineError::InvalidInput(format!("cannot read the build context ({what}): {e}"))
    };
    check_build(build)?;
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    let walk = ignore::WalkBuilder::new(&build.context)
        .standard_filters(false)
        .add_custom_ignore_filename(".dockerignore")
        .build();
    for entry in walk {
        let entry = entry.map_err(|e| io("walking", std::io::Error::other(e)))?;
        let path = entry.path();
        let Ok(rel) = path.strip_prefix(&build.context) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        tar.append_path_with_name(path, rel)
            .map_err(|e| io(&rel.display().to_string(), e))?;
    }
    let dockerfile = match build.dockerfile.strip_prefix(&build.context) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => {
            let name = ".claude-vm.Dockerfile".to_owned();
            let bytes = std::fs::read(&build.dockerfile).map_err(|e| io("the Dockerfile", e))?;
            append_bytes(&mut tar, &name, &bytes)?;
            name
        }
    };
    let bytes = tar.into_inner().map_err(|e| io("packing", e))?;
    Ok((Bytes::from(bytes), dockerfile))
}

/// The build context of the layer installing the features: the generated Dockerfile, each
/// feature's folder, and the files the generator asks for.
fn features_context(layer: &dc::FeaturesBuild) -> Result<Bytes> {
    let io = |what: &str, e: std::io::Error| {
        EngineError::InvalidInput(format!("cannot pack the features ({what}): {e}"))
    };
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    append_bytes(&mut tar, "Dockerfile", layer.dockerfile.as_bytes())?;
    for copy in &layer.copies {
        tar.append_dir_all(&copy.to, &copy.from)
            .map_err(|e| io(&copy.key, e))?;
    }
    for file in &layer.files {
        append_bytes(&mut tar, &file.path, file.contents.as_bytes())?;
    }
    let bytes = tar.into_inner().map_err(|e| io("packing", e))?;
    Ok(Bytes::from(bytes))
}

fn append_bytes(tar: &mut tar::Builder<Vec<u8>>, name: &str, bytes: &[u8]) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, name, bytes)
        .map_err(|e| EngineError::InvalidInput(format!("cannot pack {name}: {e}")))
}
