//! `claude-vm provider ...`

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Result, bail};
use claude_vm_core::provider::ProviderKind;
use claude_vm_engine::{Engine, ProviderView};

use super::print_json;
use crate::cli::ProviderCommand;
use crate::output::{self, Style};

pub fn run(engine: &Engine, cmd: &ProviderCommand) -> Result<ExitCode> {
    match cmd {
        ProviderCommand::Add {
            name,
            kind,
            options,
            no_check,
            json,
        } => {
            let kind = match kind {
                Some(k) => k.clone(),
                None if name
                    .parse::<claude_vm_core::provider::ProviderKind>()
                    .is_ok() =>
                {
                    name.clone()
                }
                None => bail!("--type is required (known types: docker, ssh)"),
            };
            let view = engine.provider_add(name, &kind, options)?;
            // A remote provider is checked before it is kept: a typo in the host, a missing
            // key or a host without Docker shows now, not at the first `up`.
            if view.kind == ProviderKind::Ssh && !no_check {
                eprintln!(
                    "checking {name}: logging in, checking the host, installing claude-vm there"
                );
                let checked = super::runtime()?.block_on(engine.provider_check(name));
                if let Err(e) = checked {
                    engine.provider_delete(name)?;
                    return Err(anyhow::Error::new(e).context(format!(
                        "provider {name} not added (pass --no-check to add it anyway)"
                    )));
                }
            }
            if *json {
                print_json(&view)?;
            } else {
                eprintln!(
                    "{} added provider {} ({})",
                    output::paint("✓", Style::Good),
                    view.name,
                    view.kind
                );
            }
        }
        ProviderCommand::List { verbose, json } => {
            let views = engine.provider_list()?;
            if *json {
                print_json(&views)?;
            } else {
                print_table(&views, *verbose)?;
            }
        }
        ProviderCommand::SetOptions {
            name,
            options,
            json,
        } => {
            let view = engine.provider_set_options(name, options)?;
            if *json {
                print_json(&view)?;
            } else {
                eprintln!(
                    "{} updated provider {}",
                    output::paint("✓", Style::Good),
                    view.name
                );
            }
        }
        ProviderCommand::Delete { name, yes } => {
            if !yes {
                match output::confirm(&format!("Delete provider {name}?")) {
                    Some(true) => {}
                    Some(false) => bail!("not deleted"),
                    None => bail!(
                        "refusing to delete provider {name} without confirmation: pass -y/--yes"
                    ),
                }
            }
            engine.provider_delete(name)?;
            eprintln!(
                "{} deleted provider {name}",
                output::paint("✓", Style::Good)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(views: &[ProviderView], verbose: bool) -> Result<()> {
    let mut header = vec!["NAME", "TYPE", "DEFAULT", "WORKSPACES"];
    if verbose {
        header.push("OPTIONS");
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            let mut row = vec![
                v.name.clone(),
                v.kind.to_string(),
                if v.default {
                    "yes".into()
                } else {
                    String::new()
                },
                v.workspaces.to_string(),
            ];
            if verbose {
                let opts = v
                    .options
                    .iter()
                    .map(|(k, val)| format!("{k}={val}"))
                    .collect::<Vec<_>>();
                row.push(if opts.is_empty() {
                    "-".into()
                } else {
                    opts.join(" ")
                });
            }
            row
        })
        .collect();
    std::io::stdout()
        .lock()
        .write_all(output::table(&header, &rows).as_bytes())?;
    Ok(())
}
