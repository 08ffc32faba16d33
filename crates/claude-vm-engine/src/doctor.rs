//! `claude-vm doctor`: is everything `workspace up` and `new-chat` need ready? Each check
//! is one verdict, one line of detail and, when it is not ok, one remedy.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::Engine;
use crate::agents::AccountState;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Ok,
    /// Worth knowing; `up` and `new-chat` work anyway.
    Warn,
    Fail,
}

/// One check of `doctor`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked ("docker", "agent claude", ...).
    pub check: String,
    pub verdict: Verdict,
    pub detail: String,
    pub remedy: Option<String>,
    /// Whether `up` + `new-chat` need it: doctor fails only when a needed check fails.
    pub needed: bool,
}

impl Check {
    pub fn new(check: impl Into<String>, verdict: Verdict, detail: impl Into<String>) -> Check {
        Check {
            check: check.into(),
            verdict,
            detail: detail.into(),
            remedy: None,
            needed: false,
        }
    }

    pub fn remedy(mut self, r: impl Into<String>) -> Check {
        self.remedy = Some(r.into());
        self
    }

    pub fn needed(mut self, needed: bool) -> Check {
        self.needed = needed;
        self
    }
}

/// Free space below which `doctor` warns, and below which it fails.
const LOW_DISK: u64 = 5 << 30;
const NO_DISK: u64 = 1 << 30;

impl Engine {
    /// Every check but the server's (which the CLI, that knows how servers run, adds).
    pub async fn doctor(&self) -> Vec<Check> {
        let mut out = Vec::new();
        self.doctor_providers(&mut out).await;
        self.doctor_agents(&mut out);
        out.push(self.doctor_ssh());
        out.push(self.doctor_backups().await);
        out.push(doctor_disk(self.home.root()));
        out
    }

    async fn doctor_providers(&self, out: &mut Vec<Check>) {
        let providers = match self.provider_list() {
            Ok(p) => p,
            Err(e) => {
                out.push(
                    Check::new("providers", Verdict::Fail, e.to_string())
                        .needed(true)
                        .remedy("check $CLAUDE_VM_HOME/state.db"),
                );
                return;
            }
        };
        let default = self.config.default_provider.clone();
        if !providers.iter().any(|p| p.name == default) {
            out.push(
                Check::new(
                    format!("provider {default}"),
                    Verdict::Fail,
                    "the default provider (default_provider in config.yaml) does not exist",
                )
                .needed(true)
                .remedy(format!(
                    "`claude-vm provider add {default} --type docker`, or set default_provider"
                )),
            );
        }
        for p in providers {
            let needed = p.name == default;
            let name = format!("provider {}", p.name);
            let client = match self.provider_client(&p.name) {
                Ok(c) => c,
                Err(e) => {
                    out.push(Check::new(name, Verdict::Fail, e.to_string()).needed(needed));
                    continue;
                }
            };
            let described = tokio::time::timeout(Duration::from_secs(15), client.describe()).await;
            let hint = client.unreachable_hint();
            match described {
                Ok(Ok(d)) => out.push(Check::new(name, Verdict::Ok, d).needed(needed)),
                Ok(Err(e)) => {
                    out.push(
                        Check::new(name, Verdict::Fail, e.to_string())
                            .needed(needed)
                            .remedy(e.hint().unwrap_or(hint)),
                    );
                    continue;
                }
                Err(_) => {
                    out.push(
                        Check::new(name, Verdict::Fail, "no answer within 15s")
                            .needed(needed)
                            .remedy(hint),
                    );
                    continue;
                }
            }
            if !needed {
                continue;
            }
            let image = p
                .options
                .get("image")
                .cloned()
                .unwrap_or_else(|| self.config.default_image.clone());
            let check = format!("image {image}");
            match tokio::time::timeout(Duration::from_secs(15), client.has_image(&image)).await {
                Ok(Ok(Some(true))) => out.push(
                    Check::new(check, Verdict::Ok, "present on the default provider").needed(true),
                ),
                Ok(Ok(Some(false))) => out.push(
                    Check::new(
                        check,
                        Verdict::Warn,
                        "not present; `workspace up` pulls it first (it needs a registry it can reach)",
                    )
                    .needed(true)
                    .remedy("on a machine that cannot pull, build one and use `up --image NAME` or set default_image"),
                ),
                Ok(Ok(None)) => out.push(
                    Check::new(check, Verdict::Ok, "the provider pulls it when needed").needed(true),
                ),
                Ok(Err(e)) => out.push(Check::new(check, Verdict::Fail, e.to_string()).needed(true)),
                Err(_) => out.push(
                    Check::new(check, Verdict::Fail, "no answer within 15s").needed(true),
                ),
            }
        }
    }

    fn doctor_agents(&self, out: &mut Vec<Check>) {
        let default = &self.config.agents.defaults.agent;
        for kind in &self.config.agents.enabled {
            let needed = kind == default;
            let settings = self.config.agents.settings(kind);
            let name = format!("agent {kind}");
            let install = crate::agents::install_route(kind, &settings);
            let account = self.account(kind);
            let check = match (install, account) {
                (Err((detail, remedy)), _) => {
                    Check::new(name, Verdict::Fail, detail).remedy(remedy)
                }
                (Ok(how), AccountState::Ready(a)) => Check::new(
                    name,
                    Verdict::Ok,
                    format!(
                        "{how}; account from {}{}",
                        a.source,
                        a.masked.map(|m| format!(" ({m})")).unwrap_or_default()
                    ),
                ),
                (Ok(how), AccountState::NotNeeded) => Check::new(name, Verdict::Ok, how),
                (Ok(how), AccountState::Missing { what, remedy }) => {
                    Check::new(name, Verdict::Fail, format!("{how}; {what}")).remedy(remedy)
                }
                (Ok(how), AccountState::Broken(why)) => {
                    Check::new(name, Verdict::Fail, format!("{how}; {why}"))
                        .remedy(format!("`claude-vm agents login {kind}`"))
                }
            };
            // A kind nobody starts by default is worth a warning, not a failure.
            let check = if !needed && check.verdict == Verdict::Fail {
                Check {
                    verdict: Verdict::Warn,
                    ..check
                }
            } else {
                check
            };
            out.push(check.needed(needed));
        }
    }

    fn doctor_ssh(&self) -> Check {
        let ours = self.ssh_config_path();
        let user = std::env::var_os("HOME").map(|h| Path::new(&h).join(".ssh/config"));
        let included = user
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .is_some_and(|t| crate::ssh::add_include(&t, &ours).is_none());
        match (ours.exists(), included) {
            (true, true) => Check::new(
                "ssh config",
                Verdict::Ok,
                "`ssh <workspace>.claude-vm` works (~/.ssh/config includes it)",
            ),
            (true, false) => Check::new(
                "ssh config",
                Verdict::Warn,
                format!(
                    "{} exists but ~/.ssh/config does not include it",
                    ours.display()
                ),
            )
            .remedy("`claude-vm ssh-config --install`"),
            _ => Check::new(
                "ssh config",
                Verdict::Warn,
                "not set up: `claude-vm ssh` works, `ssh <workspace>.claude-vm` does not",
            )
            .remedy("`claude-vm ssh-config --install`"),
        }
    }

    async fn doctor_backups(&self) -> Check {
        let b = &self.config.backup;
        if !b.enabled {
            return Check::new("backups", Verdict::Warn, "off (backup.enabled: false)")
                .remedy("set backup.enabled: true in config.yaml");
        }
        let location = match claude_vm_core::backup::Location::parse(
            b.repository.as_deref(),
            self.home.root(),
        ) {
            Ok(l) => l,
            Err(e) => {
                return Check::new("backups", Verdict::Fail, format!("backup.repository: {e}"))
                    .remedy("fix backup.repository in config.yaml");
            }
        };
        let name = location.restic_name(&b.s3);
        if let claude_vm_core::backup::Location::Local(dir) = &location
            && dir.exists()
            && !dir.is_dir()
        {
            return Check::new(
                "backups",
                Verdict::Fail,
                format!("{name} is not a folder, so no repository can be made there"),
            )
            .remedy("point backup.repository at a folder (or remove the file)");
        }
        if let claude_vm_core::backup::Location::Local(dir) = &location
            && !dir.join("config").exists()
        {
            return Check::new(
                "backups",
                Verdict::Ok,
                format!("{name}: not created yet (the first backup creates it)"),
            );
        }
        match tokio::time::timeout(
            Duration::from_secs(30),
            self.with_repo(None, |_repo| Ok(())),
        )
        .await
        {
            Ok(Ok(())) => Check::new("backups", Verdict::Ok, format!("{name}: opens")),
            Ok(Err(e)) => Check::new("backups", Verdict::Fail, format!("{name}: {e}"))
                .remedy("check backup: in config.yaml (repository, s3 credentials, password_file)"),
            Err(_) => Check::new(
                "backups",
                Verdict::Fail,
                format!("{name}: no answer within 30s (or another backup holds it)"),
            )
            .remedy("check the repository's address and that it answers"),
        }
    }
}

fn doctor_disk(home: &Path) -> Check {
    match nix::sys::statvfs::statvfs(home) {
        Ok(s) => {
            let free = s.blocks_available().saturating_mul(s.fragment_size());
            let shown = format!(
                "{:.1} GiB free where {} is",
                free as f64 / (1u64 << 30) as f64,
                home.display()
            );
            let verdict = if free < NO_DISK {
                Verdict::Fail
            } else if free < LOW_DISK {
                Verdict::Warn
            } else {
                Verdict::Ok
            };
            let c = Check::new("disk", verdict, shown);
            if verdict == Verdict::Ok {
                c
            } else {
                c.remedy("free some space (`docker system df` shows what Docker keeps)")
            }
        }
        Err(e) => Check::new("disk", Verdict::Warn, format!("cannot tell: {e}")),
    }
}
