//! `claude-vm devcontainer init`: a starter devcontainer.json for a project without one.

use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};

use super::print_json;
use crate::cli::DevcontainerCommand;
use crate::output::{self, Style};

pub fn run(cmd: &DevcontainerCommand) -> Result<ExitCode> {
    match cmd {
        DevcontainerCommand::Init { path, force, json } => {
            let project = path.clone().unwrap_or_else(|| ".".into());
            let project = std::fs::canonicalize(&project)
                .with_context(|| format!("cannot use {} as a project folder", project.display()))?;
            if !project.is_dir() {
                bail!("{} is not a folder", project.display());
            }
            if let Some(found) = claude_vm_devcontainer::find(&project, None)
                .ok()
                .flatten()
                .filter(|_| !force)
            {
                bail!(
                    "{} has a devcontainer configuration already ({}); edit it, or pass --force to replace .devcontainer/devcontainer.json",
                    project.display(),
                    found.config.display()
                );
            }
            let starter = claude_vm_devcontainer::starter(&project);
            let dir = starter.path.parent().expect("a file in .devcontainer");
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            std::fs::write(&starter.path, &starter.text)
                .with_context(|| format!("cannot write {}", starter.path.display()))?;
            if *json {
                print_json(&serde_json::json!({
                    "path": starter.path,
                    "stack": format!("{:?}", starter.stack).to_lowercase(),
                    "marker": starter.marker,
                    "image": starter.image,
                    "post_create": starter.post_create,
                }))?;
            } else {
                eprintln!(
                    "{} wrote {} ({}{})",
                    output::paint("✓", Style::Good),
                    starter.path.display(),
                    starter.image,
                    starter
                        .marker
                        .map(|m| format!(", for its {m}"))
                        .unwrap_or_default()
                );
                eprintln!(
                    "  edit it to taste; `claude-vm workspace up {}` builds the workspace from it",
                    project.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
