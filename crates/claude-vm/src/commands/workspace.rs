//! `claude-vm workspace ...`

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use claude_vm_core::Status;
use claude_vm_engine::{
    CancellationToken, DeleteRequest, DownRequest, EngineError, FinalBackup, RestoreRequest,
    UpOutcome, UpRequest, WorkspaceView,
};

use super::{print_json, runtime};
use crate::backend::Backend;
use crate::cli::{IdleStopSetting, StatusFilter, UpArgs, WorkspaceCommand};
use crate::output::{self, CliReporter, Style};

pub fn run(engine: &Backend, cmd: &WorkspaceCommand, quiet: bool) -> Result<ExitCode> {
    let rt = runtime()?;
    let reporter = CliReporter::new(quiet);
    match cmd {
        WorkspaceCommand::Up(args) => rt.block_on(up(engine, args, &reporter)),
        WorkspaceCommand::List { long, status, json } => {
            rt.block_on(list(engine, *long, *status, *json))
        }
        WorkspaceCommand::Set {
            workspace,
            idle_stop,
            json,
        } => {
            let value = match idle_stop {
                Some(IdleStopSetting::Own(v)) => Some(*v),
                Some(IdleStopSetting::Default) | None => None,
            };
            let set = rt.block_on(engine.set_idle_stop(workspace, value))?;
            if *json {
                print_json(&set)?;
            } else if !quiet {
                let from = if set.from_config {
                    " (lifecycle.idle_stop in config.yaml)"
                } else {
                    ""
                };
                let when = if set.applied {
                    "now"
                } else {
                    "from its next start"
                };
                let what = match set.idle_stop.as_str() {
                    "off" => "never stops itself".to_owned(),
                    d => format!("stops itself after {d} idle"),
                };
                eprintln!(
                    "{} {} {what}{from}, {when}",
                    output::paint("✓", Style::Good),
                    set.workspace
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        WorkspaceCommand::Down {
            workspace,
            force,
            timeout,
            no_backup,
            json,
        } => {
            let req = DownRequest {
                target: workspace.clone(),
                force: *force,
                grace: Duration::from_secs(*timeout),
                backup: !no_backup,
            };
            let (view, stopped, backup) = rt.block_on(engine.down(&req, &reporter))?;
            if *json {
                print_json(&view)?;
            } else if !quiet {
                let what = if stopped {
                    "stopped"
                } else {
                    "was already stopped"
                };
                let saved = match &backup {
                    Some(FinalBackup::Taken { snapshot }) => {
                        format!(" (backed up: snapshot {})", short(snapshot))
                    }
                    _ => String::new(),
                };
                eprintln!(
                    "{} {} {what}{saved}",
                    output::paint("✓", Style::Good),
                    view.name
                );
            }
            // A failed final backup was reported as it happened; the stop itself worked.
            Ok(match backup {
                Some(FinalBackup::Failed { .. }) => ExitCode::FAILURE,
                _ => ExitCode::SUCCESS,
            })
        }
        WorkspaceCommand::Delete {
            workspace,
            purge,
            force,
            yes,
            json,
        } => {
            if *purge && !exists(&rt, engine, workspace)? {
                return purge_deleted(&rt, engine, workspace, *yes, *json, quiet);
            }
            if !yes {
                let (name, id) = rt.block_on(engine.find_workspace(workspace))?;
                let q = if *purge {
                    format!(
                        "Delete workspace {name} ({id}) AND EVERY BACKUP of it? Nothing of it will be left anywhere."
                    )
                } else {
                    format!(
                        "Delete workspace {name} ({id})? Its container and volume are removed; a final backup is taken first and kept."
                    )
                };
                match output::confirm(&q) {
                    Some(true) => {}
                    Some(false) => bail!("not deleted"),
                    None => bail!("refusing to delete {name} without confirmation: pass -y/--yes"),
                }
            }
            let mut req = DeleteRequest {
                target: workspace.clone(),
                purge: *purge,
                force: *force,
            };
            let out = match rt.block_on(engine.delete(&req, &reporter)) {
                Ok(out) => out,
                Err(e) => {
                    // Without a good final backup, ask again (on a terminal) before
                    // deleting what would then be lost.
                    let Some(EngineError::FinalBackupFailed { name, error }) =
                        e.downcast_ref::<EngineError>()
                    else {
                        return Err(e);
                    };
                    let q = format!(
                        "The final backup of {name} failed ({error}). Delete it anyway, losing what changed since its last backup?"
                    );
                    if output::confirm(&q) != Some(true) {
                        return Err(e);
                    }
                    req.force = true;
                    rt.block_on(engine.delete(&req, &reporter))?
                }
            };
            if *json {
                print_json(&out)?;
            } else if !quiet {
                let view = &out.workspace;
                eprintln!(
                    "{} deleted {} ({})",
                    output::paint("✓", Style::Good),
                    view.name,
                    view.id
                );
                match (&out.purged, &out.backup) {
                    (Some(n), _) => eprintln!("  removed its {n} backup(s) as well"),
                    (
                        None,
                        FinalBackup::Taken { snapshot } | FinalBackup::UpToDate { snapshot },
                    ) => {
                        eprintln!(
                            "  its backups are kept (last: snapshot {}{}); bring it back with `claude-vm workspace restore {}`",
                            short(snapshot),
                            out.repository
                                .as_ref()
                                .map(|r| format!(", in {r}"))
                                .unwrap_or_default(),
                            view.name
                        );
                    }
                    _ => {}
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        WorkspaceCommand::Logs { workspace } => {
            let text = engine.engine("workspace logs")?.workspace_logs(workspace)?;
            if text.is_empty() && !quiet {
                eprintln!(
                    "{workspace} has no lifecycle command output (it was not made from a devcontainer.json, or its commands printed nothing)"
                );
            }
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        WorkspaceCommand::Backup { workspace, json } => {
            let out = rt.block_on(engine.backup(workspace, &reporter))?;
            if *json {
                print_json(&out)?;
            } else {
                let s = &out.report.snapshot;
                if out.report.unchanged {
                    if !quiet {
                        eprintln!(
                            "{} {} is unchanged since snapshot {} ({}); no new snapshot was needed",
                            output::paint("✓", Style::Good),
                            out.workspace,
                            s.short_id,
                            output::ago(&s.time)
                        );
                    }
                } else if !quiet {
                    eprintln!(
                        "{} backed up {}: {} new, {} changed, {} unchanged files; {} added",
                        output::paint("✓", Style::Good),
                        out.workspace,
                        s.files_new,
                        s.files_changed,
                        s.files_unmodified,
                        claude_vm_engine::human_bytes(s.bytes_added)
                    );
                }
                println!("{}", s.id);
            }
            Ok(ExitCode::SUCCESS)
        }
        WorkspaceCommand::Restore {
            workspace,
            snapshot,
            name,
            provider,
            image,
            json,
        } => {
            let req = restore_request(workspace, snapshot, name, provider, image);
            let out = rt.block_on(engine.restore(&req, &reporter, &cancel_on_signals_in(&rt)))?;
            created(&out, *json, &reporter, "restored")
        }
        WorkspaceCommand::Export {
            workspace,
            output: file,
            snapshot,
            json,
        } => {
            let out =
                rt.block_on(engine.export(workspace, snapshot.as_deref(), file, &reporter))?;
            if *json {
                print_json(&out)?;
            } else if !quiet {
                eprintln!(
                    "{} wrote {} ({}, snapshot {} of {})",
                    output::paint("✓", Style::Good),
                    out.file.display(),
                    claude_vm_engine::human_bytes(out.bytes),
                    short(&out.manifest.snapshot),
                    out.manifest
                        .workspace_name
                        .as_deref()
                        .unwrap_or("a workspace")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        WorkspaceCommand::Import {
            file,
            name,
            provider,
            image,
            json,
        } => {
            let req = restore_request("", &None, name, provider, image);
            let out =
                rt.block_on(engine.import(file, &req, &reporter, &cancel_on_signals_in(&rt)))?;
            created(&out, *json, &reporter, "imported")
        }
    }
}

/// `delete --purge` of a workspace deleted earlier: every backup of it (named by its old
/// name or id) goes.
fn purge_deleted(
    rt: &tokio::runtime::Runtime,
    engine: &Backend,
    target: &str,
    yes: bool,
    json: bool,
    quiet: bool,
) -> Result<ExitCode> {
    let snaps = rt.block_on(engine.backups(Some(target)))?;
    let Some(id) = snaps.last().and_then(|s| s.workspace_id.clone()) else {
        return Err(EngineError::NoBackups(target.to_owned()).into());
    };
    if !yes {
        let q = format!(
            "Workspace {target} was deleted; remove its {} backup(s) ({id})? Nothing of it will be left anywhere.",
            snaps.len()
        );
        match output::confirm(&q) {
            Some(true) => {}
            Some(false) => bail!("not removed"),
            None => {
                bail!(
                    "refusing to remove the backups of {target} without confirmation: pass -y/--yes"
                )
            }
        }
    }
    let (id, n) = rt.block_on(engine.purge_deleted(&id))?;
    if json {
        print_json(&serde_json::json!({"workspace": null, "workspace_id": id, "purged": n}))?;
    } else if !quiet {
        eprintln!(
            "{} removed the {n} backup(s) of deleted workspace {target} ({id})",
            output::paint("✓", Style::Good)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Does `target` name an existing workspace (here or on the server)?
fn exists(rt: &tokio::runtime::Runtime, engine: &Backend, target: &str) -> Result<bool> {
    match engine {
        Backend::Local(e) => match e.find_workspace(target) {
            Ok(_) => Ok(true),
            Err(EngineError::UnknownWorkspace(_)) => Ok(false),
            Err(e) => Err(e.into()),
        },
        Backend::Remote(_) => match rt.block_on(engine.find_workspace(target)) {
            Ok(_) => Ok(true),
            Err(e)
                if e.downcast_ref::<crate::remote::RemoteError>()
                    .is_some_and(|r| r.status == Some(404)) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        },
    }
}

fn restore_request(
    target: &str,
    snapshot: &Option<String>,
    name: &Option<String>,
    provider: &Option<String>,
    image: &Option<String>,
) -> RestoreRequest {
    RestoreRequest {
        target: target.to_owned(),
        snapshot: snapshot.clone(),
        name: name.clone(),
        provider: provider.clone(),
        image: image.clone(),
    }
}

/// [`cancel_on_signals`], whose signal handlers need the runtime.
fn cancel_on_signals_in(rt: &tokio::runtime::Runtime) -> CancellationToken {
    let _guard = rt.enter();
    cancel_on_signals()
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// Report a workspace that a restore or an import made.
fn created(out: &UpOutcome, json: bool, reporter: &CliReporter, what: &str) -> Result<ExitCode> {
    let w = out.workspace();
    if json {
        print_json(out)?;
    } else {
        use claude_vm_engine::Reporter;
        reporter.step(&format!(
            "{} {} ({}) {what}; project at {}",
            output::paint("✓", Style::Good),
            w.name,
            w.id,
            w.project_dir
        ));
        println!("{}", w.name);
    }
    Ok(ExitCode::SUCCESS)
}

/// Cancel on Ctrl-C, SIGTERM or a closed terminal, so a half-done `up` cleans up.
fn cancel_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
            _ = hup.recv() => {},
        }
        t.cancel();
    });
    token
}

async fn up(engine: &Backend, args: &UpArgs, reporter: &CliReporter) -> Result<ExitCode> {
    let req = UpRequest {
        target: args.target.clone(),
        provider: args.provider.clone(),
        image: args.image.clone(),
        branch: args.branch.clone(),
        name: args.name.clone(),
        source_label: None,
        no_local_paths: false,
        idle_stop: args.idle_stop,
        devcontainer: args.devcontainer.clone(),
        no_devcontainer: args.no_devcontainer,
        rebuild: args.rebuild,
        trust: args.trust,
        allow_host_mounts: args.allow_host_mounts,
    };
    let cancel = cancel_on_signals();
    let outcome = match engine.up(&req, reporter, &cancel).await {
        Err(e)
            if matches!(
                e.downcast_ref::<claude_vm_engine::EngineError>(),
                Some(claude_vm_engine::EngineError::Untrusted { .. })
            ) =>
        {
            // Asked once per repository and command, on a terminal.
            let q = match e.downcast_ref::<claude_vm_engine::EngineError>() {
                Some(claude_vm_engine::EngineError::Untrusted { file, command }) => format!(
                    "{file} wants to run this on this machine before the workspace is made:\n  {command}\nRun it (and trust it from now on)?"
                ),
                _ => unreachable!("matched above"),
            };
            if output::confirm(&q) != Some(true) {
                return Err(e);
            }
            let trusted = UpRequest {
                trust: true,
                ..req.clone()
            };
            engine.up(&trusted, reporter, &cancel).await?
        }
        other => other?,
    };
    let w = outcome.workspace();
    // Only a local engine has workspaces this machine's OpenSSH can reach.
    if let Backend::Local(local) = engine
        && local.ssh_config_opted_in()
        && let Err(e) = super::ssh::refresh(local, &w.id).await
    {
        eprintln!(
            "{} cannot update the SSH config for {}: {e:#}",
            output::paint("warning:", Style::Warn),
            w.name
        );
    }
    if args.json {
        print_json(&outcome)?;
    } else {
        let what = match outcome {
            UpOutcome::Created(_) => "created",
            UpOutcome::Resumed(_) => "resumed",
            UpOutcome::AlreadyRunning(_) => "already running",
        };
        use claude_vm_engine::Reporter;
        reporter.step(&format!(
            "{} {} ({}) {what}; project at {}",
            output::paint("✓", Style::Good),
            w.name,
            w.id,
            w.project_dir
        ));
        println!("{}", w.name);
    }
    Ok(ExitCode::SUCCESS)
}

fn matches(filter: StatusFilter, s: Status) -> bool {
    matches!(
        (filter, s),
        (StatusFilter::Running, Status::Running)
            | (StatusFilter::Stopped, Status::Stopped)
            | (StatusFilter::Error, Status::Error)
            | (StatusFilter::Creating, Status::Creating)
            | (StatusFilter::Unknown, Status::Unknown)
    )
}

async fn list(
    engine: &Backend,
    long: bool,
    status: Option<StatusFilter>,
    json: bool,
) -> Result<ExitCode> {
    let (views, unreachable) = engine.list(long).await?;
    let views: Vec<WorkspaceView> = views
        .into_iter()
        .filter(|v| status.is_none_or(|f| matches(f, v.status)))
        .collect();
    if json {
        print_json(&views)?;
    } else {
        print_table(&views, long)?;
    }
    for (provider, why) in &unreachable {
        eprintln!(
            "{} provider {provider} could not be reached: {why}",
            output::paint("warning:", Style::Warn)
        );
    }
    if !unreachable.is_empty() {
        let mut hints: Vec<String> = Vec::new();
        for (provider, _) in &unreachable {
            let hint = engine.unreachable_hint(provider);
            if !hints.contains(&hint) {
                hints.push(hint);
            }
        }
        for hint in hints {
            eprintln!("{} {hint}", output::paint("hint:", Style::Hint));
        }
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn status_cell(v: &WorkspaceView) -> String {
    let style = match v.status {
        Status::Running => Style::Good,
        Status::Stopped => Style::Dim,
        Status::Error => Style::Error,
        Status::Creating | Status::Unknown => Style::Warn,
    };
    let text = match (v.status, &v.idle_since) {
        (Status::Stopped, Some(since)) => claude_vm_core::lifecycle::stopped_label(
            since
                .parse::<jiff::Timestamp>()
                .ok()
                .map(|t| jiff::Timestamp::now().duration_since(t).unsigned_abs()),
        ),
        (status, _) => status.as_str().to_owned(),
    };
    output::paint_out(&text, style)
}

fn print_table(views: &[WorkspaceView], long: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if views.is_empty() {
        eprintln!("no workspaces; create one with `claude-vm workspace up <folder|git-url>`");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let mut row = vec![
                output::paint_out(&v.name, Style::Bold),
                v.id.clone(),
                status_cell(v),
                v.provider.clone(),
                v.project.clone(),
                output::ago(&v.created_at),
            ];
            if long {
                row.push(v.image.clone());
                row.push(v.branch.clone().unwrap_or_else(|| "-".into()));
                row.push(v.source.location().to_owned());
                row.push(
                    v.last_activity
                        .as_deref()
                        .map(output::ago)
                        .unwrap_or_else(|| "-".into()),
                );
                let backup = match (&v.last_backup, &v.backup_error) {
                    (_, Some(_)) => output::paint_out("failed", Style::Warn),
                    (Some(t), None) => output::ago(t),
                    (None, None) => "-".into(),
                };
                row.push(backup);
                row.push(
                    v.machine
                        .as_ref()
                        .map(|m| format!("{} {}", m.id, m.state))
                        .unwrap_or_else(|| "-".into()),
                );
                row.push(if v.ports.is_empty() {
                    "-".into()
                } else {
                    v.ports.join(", ")
                });
                row.push(v.status_reason.clone().unwrap_or_default());
            } else if let Some(r) = &v.status_reason {
                row[2] = format!("{} ({r})", row[2]);
            }
            row
        })
        .collect();
    let mut header = vec!["NAME", "ID", "STATUS", "PROVIDER", "PROJECT", "CREATED"];
    if long {
        header.extend([
            "IMAGE",
            "BRANCH",
            "SOURCE",
            "LAST ACTIVITY",
            "LAST BACKUP",
            "MACHINE",
            "PORTS",
            "REASON",
        ]);
    }
    out.write_all(output::table(&header, &rows).as_bytes())?;
    Ok(())
}
