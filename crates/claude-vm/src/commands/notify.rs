//! `claude-vm notify ...`: how the server's notification channels fare, and a test message.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use claude_vm_engine::Engine;

use super::{print_json, runtime};
use crate::cli::NotifyCommand;
use crate::output::{self, Style};

pub fn run(engine: &Engine, cmd: &NotifyCommand) -> Result<ExitCode> {
    if engine.config().notify.channels.is_empty() {
        eprintln!(
            "no notification channels: add some under `notify: channels:` in config.yaml (see the README)"
        );
    }
    match cmd {
        NotifyCommand::Status { json } => {
            let status = engine.notify_status()?;
            if *json {
                print_json(&status)?;
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = status
                .iter()
                .map(|c| {
                    vec![
                        output::paint_out(&c.channel, Style::Bold),
                        c.delivered.to_string(),
                        c.pending.to_string(),
                        if c.failed > 0 {
                            output::paint_out(&c.failed.to_string(), Style::Error)
                        } else {
                            "0".to_owned()
                        },
                        c.last_delivered_at
                            .as_deref()
                            .map(output::ago)
                            .unwrap_or_else(|| "-".into()),
                        c.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            if !rows.is_empty() {
                std::io::stdout().lock().write_all(
                    output::table(
                        &[
                            "CHANNEL",
                            "DELIVERED",
                            "WAITING",
                            "GIVEN UP",
                            "LAST SENT",
                            "LAST ERROR",
                        ],
                        &rows,
                    )
                    .as_bytes(),
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        NotifyCommand::Test { json } => {
            let outcomes = runtime()?.block_on(engine.notify_test());
            if *json {
                print_json(&outcomes)?;
            } else {
                for o in &outcomes {
                    match &o.error {
                        None => eprintln!(
                            "{} {} ({}): sent",
                            output::paint("✓", Style::Good),
                            o.channel,
                            o.kind
                        ),
                        Some(e) => eprintln!(
                            "{} {} ({}): {e}",
                            output::paint("✗", Style::Error),
                            o.channel,
                            o.kind
                        ),
                    }
                }
            }
            Ok(if outcomes.iter().any(|o| o.error.is_some()) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
