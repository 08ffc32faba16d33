//! `claude-vm backup ...`: the snapshots in the repository, and how `restic` reaches it.

use std::process::ExitCode;

use anyhow::{Result, bail};
use claude_vm_engine::human_bytes;

use super::{print_json, runtime};
use crate::backend::Backend;
use crate::cli::BackupCommand;
use crate::output::{self, Style};

pub fn run(backend: &Backend, cmd: &BackupCommand, quiet: bool) -> Result<ExitCode> {
    let rt = runtime()?;
    match cmd {
        BackupCommand::List { workspace, json } => {
            let snaps = rt.block_on(backend.backups(workspace.as_deref()))?;
            if *json {
                print_json(&snaps)?;
                return Ok(ExitCode::SUCCESS);
            }
            if snaps.is_empty() {
                if !quiet {
                    eprintln!("no backups yet; `claude-vm workspace backup <ws>` takes one");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = snaps
                .iter()
                .rev()
                .map(|s| {
                    vec![
                        s.short_id.clone(),
                        output::ago(&s.time),
                        s.workspace_name.clone().unwrap_or_default(),
                        human_bytes(s.bytes_added),
                        format!("{}", s.files_new + s.files_changed),
                        human_bytes(s.total_bytes),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(
                    &[
                        "SNAPSHOT",
                        "TAKEN",
                        "WORKSPACE",
                        "ADDED",
                        "FILES CHANGED",
                        "SIZE"
                    ],
                    &rows
                )
            );
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Forget {
            workspace,
            keep_last,
            keep_daily,
            json,
        } => {
            let removed =
                rt.block_on(backend.forget_backups(workspace, *keep_last, *keep_daily))?;
            if *json {
                print_json(&removed)?;
            } else if !quiet {
                eprintln!(
                    "{} removed {} snapshot{} of {workspace}",
                    output::paint("✓", Style::Good),
                    removed.len(),
                    if removed.len() == 1 { "" } else { "s" }
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BackupCommand::Env => {
            let engine = match backend {
                Backend::Local(e) => e,
                Backend::Remote(r) => bail!(
                    "the backups are in the repository of the server at {}, with its password; run `claude-vm backup env` on that machine (or `claude-vm logout` for this machine's own)",
                    r.url()
                ),
            };
            let (repo, password_file) = engine.restic_repository()?;
            println!(
                "export RESTIC_REPOSITORY={}",
                claude_vm_core::posix::sh_quote_if_needed(&repo)
            );
            println!(
                "export RESTIC_PASSWORD_FILE={}",
                claude_vm_core::posix::sh_quote_if_needed(&password_file.display().to_string())
            );
            let s3 = &engine.config().backup.s3;
            if repo.starts_with("s3:") {
                // Names only: the secret itself stays in config.yaml.
                if s3.access_key_id.is_some() || s3.secret_access_key.is_some() {
                    eprintln!(
                        "{} set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to backup.s3's keys too",
                        output::paint("hint:", Style::Hint)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
