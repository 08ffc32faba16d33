//! A new workspace: validated, recorded as `creating`, made, filled (project copy or clone), started; or cleaned up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use claude_vm_core::source::{self, Source};
use claude_vm_core::{Status, WorkspaceId, WorkspaceName};
use claude_vm_protocol as protocol;
use claude_vm_provider::{CreateSpec, ExecSpec, Provider};
use claude_vm_store::{Store, WorkspaceRecord};
use tokio_util::sync::CancellationToken;

use crate::pack::{self, Extra, ExtraContent};
use crate::{Engine, EngineError, Reporter, Result};

use super::*;

/// What fills a workspace restored from a snapshot instead of a project: the snapshot's
/// volume as one tar stream (paths under `workspace/`), its size, and a count of the bytes
/// sent so far.
pub(crate) struct RestoreFill {
    pub(crate) tar: claude_vm_provider::TarStream,
    pub(crate) total: u64,
    pub(crate) counter: Arc<AtomicU64>,
}

impl Engine {
    pub(crate) async fn create(
        &self,
        req: &UpRequest,
        source: Source,
        restore: Option<RestoreFill>,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<UpOutcome> {
        // Validate everything before creating anything.
        let provider_name = req
            .provider
            .clone()
            .unwrap_or_else(|| self.config.default_provider.clone());
        let provider_record = self
            .store(|s| s.provider(&provider_name))?
            .ok_or_else(|| EngineError::UnknownProvider(provider_name.clone()))?;
        if let Some(b) = &req.branch {
            validate_branch(b)?;
        }
        let (source, local_root) = match source {
            // A restored workspace records where its original came from; nothing is read.
            src if restore.is_some() => (src, None),
            Source::Path(p) => {
                let abs = std::fs::canonicalize(&p).map_err(|e| {
                    EngineError::InvalidInput(format!("cannot use {p:?} as a project folder: {e}"))
                })?;
                if !abs.is_dir() {
                    return Err(EngineError::InvalidInput(format!(
                        "{} is not a folder; `up` copies a whole project folder",
                        abs.display()
                    )));
                }
                if req.branch.is_some() && !abs.join(".git").exists() {
                    return Err(EngineError::InvalidInput(format!(
                        "--branch needs a git repository, and {} has no .git",
                        abs.display()
                    )));
                }
                let location = req
                    .source_label
                    .clone()
                    .unwrap_or_else(|| abs.display().to_string());
                (Source::Path(location), Some(abs))
            }
            git => (git, None),
        };
        let local_clone_source = match &source {
            _ if restore.is_some() => None,
            Source::Git(url) if url.starts_with("file://") => {
                let path = PathBuf::from(url.trim_start_matches("file://"));
                if !path.exists() {
                    return Err(EngineError::InvalidInput(format!(
                        "git repository {} does not exist",
                        path.display()
                    )));
                }
                // A work tree's repository is its .git; a bare repository is itself.
                let git_dir = if path.join(".git").is_dir() {
                    path.join(".git")
                } else {
                    path
                };
                Some(git_dir)
            }
            _ => None,
        };
        let name: WorkspaceName = match &req.name {
            Some(n) => n.parse().map_err(|e: claude_vm_core::name::InvalidName| {
                EngineError::InvalidInput(e.to_string())
            })?,
            None => self.unused_name()?,
        };
        let id = WorkspaceId::generate(&mut rand::rng());
        let project = source::project_name(source.location());
        let devcontainer = match (&local_root, req.no_devcontainer) {
            (Some(root), false) => {
                self.prepare_devcontainer(root, req, id.as_str(), &project_dir(&project), reporter)
                    .await?
            }
            _ => {
                if restore.is_none() && (req.devcontainer.is_some() || req.rebuild) {
                    return Err(EngineError::InvalidInput(
                        "--devcontainer and --rebuild apply to a project folder's devcontainer.json; this workspace is made from a git URL".to_owned(),
                    ));
                }
                None
            }
        };
        let image = match &devcontainer {
            Some(p) => p.image.clone(),
            None => req
                .image
                .clone()
                .or_else(|| provider_record.options.get("image").cloned())
                .unwrap_or_else(|| self.config.default_image.clone()),
        };
        claude_vm_core::image::check(&image)
            .map_err(|e| EngineError::InvalidInput(e.to_string()))?;
        let bin = self_binary()?;
        let now = Store::now();
        let record = WorkspaceRecord {
            id,
            name,
            provider: provider_name,
            source: source.clone(),
            project: project.clone(),
            image: image.clone(),
            branch: req.branch.clone(),
            status: Status::Creating,
            status_reason: None,
            created_at: now.clone(),
            updated_at: now,
            creator_pid: Some(std::process::id()),
        };
        // Claims the name atomically; from here on, failure must clean up.
        self.store(|s| s.insert_workspace(&record))?;
        // The flag, else the devcontainer.json's customizations.claude-vm.idleStop.
        let idle_stop = req.idle_stop.or_else(|| {
            let own = devcontainer.as_ref()?.customizations.idle_stop?;
            reporter.step(&format!(
                "idle stop: {own} (customizations.claude-vm.idleStop of devcontainer.json)"
            ));
            Some(own)
        });
        if let Some(idle) = idle_stop {
            self.store(|s| s.set_idle_stop(&record.id, Some(&idle.to_string())))?;
        }
        let _lock = self.lock_workspace(&record.id).await?;
        reporter.step(&format!(
            "creating workspace {} ({})",
            record.name, record.id
        ));
        let provider = self.provider_client(&record.provider)?;
        let touched = std::sync::atomic::AtomicBool::new(false);
        let steps = self.create_steps(
            provider.as_ref(),
            &touched,
            &record,
            local_root.as_deref(),
            local_clone_source.as_deref(),
            restore,
            devcontainer.as_ref(),
            &bin,
            reporter,
            cancel,
        );
        // Cancellation is honoured between steps and during long waits inside them, never
        // in the middle of a provider call that creates something (its result would leak).
        match steps.await {
            Ok(note) => {
                provider.started(&record.id).await;
                Ok(UpOutcome::Created(
                    self.now_running(record, note, reporter).await?,
                ))
            }
            Err(e) if !touched.load(Ordering::SeqCst) => {
                // Nothing exists on the provider yet: forgetting the record is enough.
                self.store(|s| s.delete_workspace(&record.id))?;
                self.home.remove_lock(record.id.as_str());
                Err(e)
            }
            Err(e) => {
                reporter.step(&format!("cleaning up after the failed `up`: {e}"));
                let cleanup =
                    tokio::time::timeout(Duration::from_secs(60), provider.remove(&record.id))
                        .await;
                match cleanup {
                    Ok(Ok(())) => {
                        self.store(|s| s.delete_workspace(&record.id))?;
                        self.home.remove_lock(record.id.as_str());
                    }
                    other => {
                        let why = match other {
                            Ok(Err(ce)) => ce.to_string(),
                            _ => "timed out".to_owned(),
                        };
                        let reason = format!("`up` failed ({e}) and cleaning up failed ({why})");
                        self.store(|s| s.set_status(&record.id, Status::Error, Some(&reason)))?;
                    }
                }
                Err(e)
            }
        }
    }

    /// The container of workspace `w`, running `image`, with the shared binary mounted when
    /// there is one ([`Engine::binary_mount`]).
    pub(super) fn container_spec(
        &self,
        w: &WorkspaceRecord,
        image: &str,
        devcontainer: Option<&crate::devcontainer::Prepared>,
        shared_binary: Option<&claude_vm_provider::ExtraMount>,
    ) -> CreateSpec {
        let dir = project_dir(&w.project);
        let mut labels = BTreeMap::new();
        labels.insert("dev.claude-vm.project".to_owned(), w.project.clone());
        labels.insert(
            "dev.claude-vm.home".to_owned(),
            self.home.root().display().to_string(),
        );
        let mut env = vec![
            ("CLAUDE_VM_WORKSPACE_ID".into(), w.id.to_string()),
            ("CLAUDE_VM_WORKSPACE_NAME".into(), w.name.to_string()),
            ("CLAUDE_VM_PROJECT_DIR".into(), dir.clone()),
        ];
        let mut mounts = Vec::new();
        let mut resources = claude_vm_provider::Resources::default();
        if let Some(p) = devcontainer {
            env.extend(p.config.container_env.clone());
            env.extend(p.run_args.env.clone());
            if let Some(user) = &p.agent_user {
                env.push((protocol::AGENT_USER_ENV.into(), user.clone()));
            }
            mounts = p.mounts.clone();
            resources = p.run_args.resources.clone();
            labels.extend(p.run_args.labels.clone());
        }
        mounts.extend(shared_binary.cloned());
        CreateSpec {
            id: w.id.clone(),
            name: w.name.to_string(),
            image: image.to_owned(),
            workdir: dir,
            entrypoint: vec![protocol::BINARY_PATH.into(), "agent".into(), "init".into()],
            env,
            labels,
            mounts,
            resources,
        }
    }

    pub(super) fn unused_name(&self) -> Result<WorkspaceName> {
        let taken: Vec<String> = self
            .all_workspaces()?
            .into_iter()
            .map(|w| w.name.to_string())
            .collect();
        let mut rng = rand::rng();
        loop {
            let n = WorkspaceName::generate(&mut rng);
            if !taken.iter().any(|t| t == n.as_str()) {
                return Ok(n);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn create_steps(
        &self,
        provider: &dyn Provider,
        touched: &std::sync::atomic::AtomicBool,
        w: &WorkspaceRecord,
        local_root: Option<&Path>,
        clone_source: Option<&Path>,
        restore: Option<RestoreFill>,
        devcontainer: Option<&crate::devcontainer::Prepared>,
        bin: &SelfBinary,
        reporter: &dyn Reporter,
        cancel: &CancellationToken,
    ) -> Result<Option<String>> {
        let check = || {
            if cancel.is_cancelled() {
                Err(EngineError::Interrupted)
            } else {
                Ok(())
            }
        };
        // A provider that makes machines makes (or starts) this workspace's here; the rest
        // of the steps talk to that machine.
        touched.store(true, Ordering::SeqCst);
        let placed = provider
            .place(&w.id, &|line: &str| reporter.step(line))
            .await?;
        if placed.is_none() {
            touched.store(false, Ordering::SeqCst);
        }
        let provider: &dyn Provider = placed.as_deref().unwrap_or(provider);
        check()?;
        provider.ping().await?;
        let progress = |p: claude_vm_provider::Progress| {
            if p.total > 0 {
                reporter.progress(p.current, p.total);
            } else {
                reporter.step(&p.message);
            }
        };
        match devcontainer {
            Some(p) => tokio::select! {
                r = self.devcontainer_image(provider, p, reporter) => r?,
                _ = cancel.cancelled() => return Err(EngineError::Interrupted),
            },
            None => tokio::select! {
                r = provider.ensure_image(&w.image, &progress) => r?,
                _ = cancel.cancelled() => return Err(EngineError::Interrupted),
            },
        }
        check()?;
        let dir = project_dir(&w.project);
        let shared_binary = self.binary_mount(provider, bin).await;
        let spec = self.container_spec(w, &w.image, devcontainer, shared_binary.as_ref());
        touched.store(true, Ordering::SeqCst);
        provider.create(&spec).await?;
        check()?;
        // The binary travels with the rest unless the workspace shares this machine's.
        let binary: Vec<Extra> = match shared_binary {
            Some(_) => Vec::new(),
            None => vec![binary_extra(bin)],
        };

        if let Some(fill) = restore {
            // The volume as the snapshot holds it (project, state folder with the
            // conversations, the agent's home), owners and modes included; then the binary.
            reporter.progress_start(
                &format!("restoring {} into the workspace", human_bytes(fill.total)),
                fill.total,
            );
            let upload = provider.upload(&w.id, "/", fill.tar);
            tokio::pin!(upload);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    r = &mut upload => { r?; break; }
                    _ = cancel.cancelled() => return Err(EngineError::Interrupted),
                    _ = tick.tick() => reporter.progress(fill.counter.load(Ordering::Relaxed).min(fill.total), fill.total),
                }
            }
            reporter.progress(fill.total, fill.total);
            reporter.progress_end();
            check()?;
            if !binary.is_empty() {
                let tar = pack::stream(None, binary, Arc::new(AtomicU64::new(0)));
                provider.upload(&w.id, "/", tar).await?;
            }
            check()?;
            reporter.step("starting the workspace");
            return self
                .start_verified(provider, w, bin, reporter, cancel)
                .await
                .map(|()| None);
        }

        // One archive: the binary, the state folder, and the project (or an empty folder
        // for a clone), extracted at / so it lands in the image and in the volume at once.
        let ws_root = protocol::WORKSPACE_ROOT.trim_start_matches('/');
        let mut extras = binary;
        extras.extend([
            Extra {
                path: format!("{ws_root}/").into(),
                content: ExtraContent::Dir,
                mode: 0o755,
                mtime: bin.mtime,
            },
            Extra {
                path: format!("{ws_root}/.claude-vm/").into(),
                content: ExtraContent::Dir,
                mode: 0o700,
                mtime: bin.mtime,
            },
            Extra {
                path: format!("{ws_root}/{CHOWN_MARKER}").into(),
                content: ExtraContent::Bytes(format!("{}\n", w.project).into_bytes()),
                mode: 0o600,
                mtime: bin.mtime,
            },
        ]);
        let counter = Arc::new(AtomicU64::new(0));
        let plan = match local_root {
            Some(root) => {
                reporter.step(&format!("reading {}", root.display()));
                let root = root.to_owned();
                let plan = tokio::task::spawn_blocking(move || pack::plan(&root))
                    .await
                    .map_err(|e| {
                        EngineError::InvalidInput(format!("reading the project failed: {e}"))
                    })??;
                reporter.progress_start(
                    &format!(
                        "copying {} {} ({}) into the workspace",
                        plan.files,
                        if plan.files == 1 { "file" } else { "files" },
                        human_bytes(plan.bytes)
                    ),
                    plan.bytes,
                );
                Some((plan, PathBuf::from(format!("{ws_root}/{}", w.project))))
            }
            None => {
                extras.push(Extra {
                    path: format!("{ws_root}/{}/", w.project).into(),
                    content: ExtraContent::Dir,
                    mode: 0o755,
                    mtime: bin.mtime,
                });
                if let Some(src) = clone_source {
                    reporter.step("copying the local repository for cloning");
                    let src = src.to_owned();
                    let plan = tokio::task::spawn_blocking(move || pack::plan_all(&src))
                        .await
                        .map_err(|e| {
                            EngineError::InvalidInput(format!("reading the repository failed: {e}"))
                        })??;
                    let tar = pack::stream(
                        Some((plan, PathBuf::from(CLONE_SCRATCH.trim_start_matches('/')))),
                        vec![],
                        counter.clone(),
                    );
                    provider.upload(&w.id, "/", tar).await?;
                }
                None
            }
        };
        let total = plan.as_ref().map_or(0, |(p, _)| p.bytes);
        let tar = pack::stream(plan, extras, counter.clone());
        let upload = provider.upload(&w.id, "/", tar);
        tokio::pin!(upload);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                r = &mut upload => { r?; break; }
                _ = cancel.cancelled() => return Err(EngineError::Interrupted),
                _ = tick.tick() => if total > 0 { reporter.progress(counter.load(Ordering::Relaxed), total) },
            }
        }
        if total > 0 {
            reporter.progress(total, total);
            reporter.progress_end();
        }

        check()?;
        reporter.step("starting the workspace");
        self.start_verified(provider, w, bin, reporter, cancel)
            .await?;
        if let Some(p) = devcontainer {
            self.devcontainer_keep(provider, w, p, reporter).await?;
        }

        check()?;
        if let Source::Git(url) = &w.source {
            reporter.step(&format!("cloning {url}"));
            let from = if clone_source.is_some() {
                // The scratch copy arrives owned by root, and git refuses to read a
                // repository owned by someone else.
                self.run_checked(
                    provider,
                    w,
                    &["chown", "-R", &self.agent_exec_user(w), CLONE_SCRATCH],
                    None,
                    "preparing the clone",
                )
                .await?;
                CLONE_SCRATCH.to_owned()
            } else {
                url.clone()
            };
            self.git(
                provider,
                w,
                &dir,
                &["clone", "--quiet", "--", &from, &dir],
                "cloning",
            )
            .await?;
            if clone_source.is_some() {
                self.git(
                    provider,
                    w,
                    &dir,
                    &["-C", &dir, "remote", "set-url", "origin", url],
                    "setting the remote",
                )
                .await?;
                let _ = provider
                    .exec(
                        &w.id,
                        &ExecSpec {
                            cmd: vec!["rm".into(), "-rf".into(), CLONE_SCRATCH.into()],
                            ..Default::default()
                        },
                    )
                    .await;
            }
        }
        if let Some(branch) = &w.branch {
            reporter.step(&format!("checking out branch {branch}"));
            let script = r#"set -e
b="$1"
if git rev-parse --verify --quiet "refs/heads/$b" >/dev/null; then git checkout --quiet "$b"
elif git rev-parse --verify --quiet "refs/remotes/origin/$b" >/dev/null; then git checkout --quiet -b "$b" --track "origin/$b"
else git checkout --quiet -b "$b"; fi"#;
            self.run_checked(
                provider,
                w,
                &["sh", "-c", script, "sh", branch],
                Some(&dir),
                "checking out the branch",
            )
            .await?;
        }
        match devcontainer {
            Some(p) => {
                self.devcontainer_created(provider, w, p, &dir, reporter)
                    .await
            }
            None => Ok(None),
        }
    }

    pub(super) async fn git(
        &self,
        provider: &dyn Provider,
        w: &WorkspaceRecord,
        dir: &str,
        args: &[&str],
        what: &str,
    ) -> Result<()> {
        let mut cmd = vec!["git"];
        cmd.extend_from_slice(args);
        self.run_checked(provider, w, &cmd, Some(dir), what).await
    }

    /// Run a command in the workspace; as the agent user when `agent_dir` is given (in that
    /// folder), as root otherwise. Fails with the command's stderr.
    pub(super) async fn run_checked(
        &self,
        provider: &dyn Provider,
        w: &WorkspaceRecord,
        cmd: &[&str],
        agent_dir: Option<&str>,
        what: &str,
    ) -> Result<()> {
        let spec = match agent_dir {
            Some(dir) => ExecSpec {
                cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
                user: Some(self.agent_exec_user(w)),
                workdir: Some(dir.to_owned()),
                env: vec![
                    ("GIT_TERMINAL_PROMPT".into(), "0".into()),
                    ("HOME".into(), protocol::WORKSPACE_ROOT.into()),
                ],
            },
            None => ExecSpec {
                cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
                ..Default::default()
            },
        };
        let out = provider.exec(&w.id, &spec).await?;
        let message = match out.exit_code {
            0 => return Ok(()),
            127 => format!(
                "{what} failed: {} is not installed in image {}",
                cmd[0], w.image
            ),
            _ => format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        };
        Err(EngineError::Workspace {
            name: w.name.to_string(),
            message,
        })
    }
}
