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
            no_input,
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
                None if claude_vm_devpod::published(name).is_some() => "devpod".to_owned(),
                None => bail!(
                    "--type is required (known types: docker, ssh, devpod; shortcuts: digitalocean, aws, gcloud, azure, hetzner)"
                ),
            };
            let added = |view: &ProviderView| -> Result<()> {
                if *json {
                    print_json(view)?;
                } else {
                    eprintln!(
                        "{} added provider {} ({})",
                        output::paint("✓", Style::Good),
                        view.name,
                        view.kind
                    );
                }
                Ok(())
            };
            if kind == "devpod" {
                added(&add_devpod(engine, name, options, *no_check, *no_input)?)?;
                return Ok(ExitCode::SUCCESS);
            }
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
            added(&view)?;
        }
        ProviderCommand::Machines { name, json } => {
            let machines = super::runtime()?.block_on(engine.provider_machines(name))?;
            if *json {
                print_json(&machines)?;
            } else if machines.is_empty() {
                eprintln!("provider {name} has no machines");
            } else {
                let rows: Vec<Vec<String>> = machines
                    .iter()
                    .map(|m| {
                        vec![
                            m.id.clone(),
                            m.state.clone(),
                            if m.unused {
                                output::paint("none (unused)", Style::Warn)
                            } else {
                                m.workspaces.join(", ")
                            },
                            output::ago(&m.created_at),
                        ]
                    })
                    .collect();
                std::io::stdout().lock().write_all(
                    output::table(&["MACHINE", "STATE", "WORKSPACES", "CREATED"], &rows).as_bytes(),
                )?;
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
            let view = super::runtime()?.block_on(engine.provider_set_options(name, options))?;
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

/// `provider add` of a devpod provider: required options asked for on a terminal.
fn add_devpod(
    engine: &Engine,
    name: &str,
    options: &[String],
    no_check: bool,
    no_input: bool,
) -> Result<ProviderView> {
    use std::io::{BufRead, IsTerminal};
    let terminal = !no_input && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let ask = move |m: &claude_vm_engine::MissingOption| -> Option<String> {
        if !terminal {
            return None;
        }
        let mut question = m.key.clone();
        if !m.description.is_empty() {
            question.push_str(&format!(" ({})", m.description.trim()));
        }
        if !m.suggestions.is_empty() {
            question.push_str(&format!(
                " [e.g. {}]",
                m.suggestions
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        eprint!("{question}: ");
        let mut line = String::new();
        {
            let _quiet = m.secret.then(super::login::NoEcho::enable);
            std::io::stdin().lock().read_line(&mut line).ok()?;
        }
        Some(line.trim().to_owned()).filter(|v| !v.is_empty())
    };
    let note = |line: &str| eprintln!("{line}");
    let dialog = claude_vm_engine::AddDialog {
        ask: &ask,
        note: &note,
        check: !no_check,
    };
    let view = super::runtime()?.block_on(engine.devpod_add(name, options, &dialog))?;
    Ok(view)
}
