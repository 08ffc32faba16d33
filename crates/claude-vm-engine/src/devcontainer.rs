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
use claude_vm_protocol::AGENT_UID;
use claude_vm_provider::{BuildSpec, ExecSpec, Provider};
use claude_vm_store::WorkspaceRecord;

use crate::{Engine, EngineError, Reporter, Result};

/// What `up` does about a project's devcontainer.json, decided before anything is created.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub config: DevContainer,
    /// Which of several configurations (`.devcontainer/<name>/`), if one of several.
    pub name: Option<String>,
    /// The image the workspace runs.
    pub image: String,
    /// How that image comes to be.
    pub plan: ImagePlan,
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
    pub(crate) fn prepare_devcontainer(
        &self,
        root: &Path,
        req: &crate::UpRequest,
        workspace_id: &str,
        project_dir: &str,
        reporter: &dyn Reporter,
    ) -> Result<Option<Prepared>> {
        let name = req.devcontainer.as_deref();
        let Some(located) = dc::find(root, name).map_err(config_error)? else {
            if name.is_some() {
                return Err(EngineError::InvalidInput(format!(
                    "--devcontainer names a configuration, but {} has none",
                    root.display()
                )));
            }
            let starter = dc::starter(root);
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
        let config = dc::load(&located, &ctx).map_err(config_error)?;
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
        if let Some(m) = config.bind_mounts().next() {
            return Err(EngineError::InvalidInput(format!(
                "devcontainer.json mounts a folder of this machine ({}); host folders are not mounted into workspaces",
                m.source.as_deref().unwrap_or(&m.target)
            )));
        }
        if let Source::Build(b) = &config.source {
            check_build(b)?;
        }
        let features = dc::resolve_features(&config, &BTreeMap::new()).map_err(config_error)?;
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
                    dc::content_hash(&config, &features, &BTreeMap::new()).map_err(config_error)?;
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
        Ok(Some(Prepared {
            config,
            name: located.name.clone(),
            image,
            plan,
        }))
    }

    /// Make the devcontainer's image exist on the provider: build what needs building
    /// (output streamed), reuse what was built before.
    pub(crate) async fn devcontainer_image(
        &self,
        provider: &dyn Provider,
        p: &Prepared,
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
        if !rebuild && provider.has_image(&p.image).await? == Some(true) {
            reporter.step(&format!("using the image built before ({})", p.image));
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
                    p.image.clone()
                } else {
                    format!("{}-base", p.image)
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
                    tag: p.image.clone(),
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
        for (step, command) in steps {
            reporter.step(&format!("running {}", step.property()));
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
                    user: Some(format!("{AGENT_UID}:{AGENT_UID}")),
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
                            reporter.step(&format!("  {line}"));
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
        let kept = Kept::of(p);
        self.store(|s| s.set_devcontainer(&w.id, &serde_json::to_string(&kept).expect("json")))?;
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

    /// For a workspace made from a devcontainer.json, which configuration it was (`Some`,
    /// holding its name when it was one of several); `None` for any other workspace.
    pub(crate) fn devcontainer_of(&self, w: &WorkspaceRecord) -> Result<Option<Option<String>>> {
        Ok(self
            .store(|s| s.devcontainer(&w.id))?
            .and_then(|json| serde_json::from_str::<Kept>(&json).ok())
            .map(|k| k.name))
    }

    /// After a workspace made from a devcontainer.json started again: its
    /// `postStartCommand`. Returns the failure, if any, for its status reason.
    pub(crate) async fn devcontainer_started(
        &self,
        provider: &dyn Provider,
        w: &WorkspaceRecord,
        reporter: &dyn Reporter,
    ) -> Option<String> {
        let kept: Kept = match self.store(|s| s.devcontainer(&w.id)) {
            Ok(Some(json)) => serde_json::from_str(&json).ok()?,
            _ => return None,
        };
        let command = kept.post_start.as_ref().and_then(command_of)?;
        let dir = format!("{}/{}", claude_vm_protocol::WORKSPACE_ROOT, w.project);
        self.run_lifecycle(
            provider,
            w,
            &[(Step::PostStart, command)],
            &kept.env(),
            &dir,
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
}

impl Kept {
    fn of(p: &Prepared) -> Kept {
        let config = &p.config;
        Kept {
            file: config.file.display().to_string(),
            name: p.name.clone(),
            post_start: config.lifecycle.post_start.as_ref().map(value_of),
            post_attach: config.lifecycle.post_attach.as_ref().map(value_of),
            remote_env: config
                .remote_env
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
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
