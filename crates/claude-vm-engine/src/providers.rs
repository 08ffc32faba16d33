//! Provider management: `provider add|list|set-options|delete`.

use std::collections::BTreeMap;

use claude_vm_core::provider::{self, ProviderKind};
use serde::Serialize;

use crate::{Engine, EngineError, Result};

/// A provider as shown to the user: secrets masked.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderView {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ProviderKind,
    /// Whether it is `default_provider` in the config.
    pub default: bool,
    /// Options with secret values replaced by `********`.
    pub options: BTreeMap<String, String>,
    pub workspaces: usize,
    pub created_at: String,
}

/// A machine of a DevPod provider, as `provider machines` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MachineView {
    pub id: String,
    /// `Running`, `Busy`, `Stopped`, `NotFound`, or `unknown (why)`.
    pub state: String,
    /// Workspaces of this home on it.
    pub workspaces: Vec<String>,
    /// No workspace of this home uses it: it costs money for nothing.
    pub unused: bool,
    pub created_at: String,
}

/// Required options of `manifest` that neither `opts`, a default nor a command fills.
/// Every upper-case option names one of the provider.yaml's options.
fn check_known_options(
    manifest: &claude_vm_devpod::Manifest,
    opts: &BTreeMap<String, String>,
) -> Result<()> {
    let unknown: Vec<&str> = opts
        .keys()
        .filter(|k| provider::is_manifest_option(k) && !manifest.options.contains_key(*k))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let known: Vec<&str> = manifest.options.keys().map(String::as_str).collect();
    Err(EngineError::InvalidInput(format!(
        "the provider.yaml of {} has no option {}; its options: {}",
        manifest.name,
        unknown.join(", "),
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    )))
}

fn missing_required(
    manifest: &claude_vm_devpod::Manifest,
    opts: &BTreeMap<String, String>,
) -> Vec<String> {
    manifest
        .options
        .iter()
        .filter(|(k, def)| {
            def.required
                && opts.get(*k).is_none_or(|v| v.is_empty())
                && def.default.as_deref().is_none_or(str::is_empty)
                && def.command.as_deref().is_none_or(str::is_empty)
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// The text of a provider.yaml and the source to keep (a local path made absolute).
async fn fetch_manifest(
    source: &str,
    note: &(dyn Fn(&str) + Send + Sync),
) -> Result<(String, String)> {
    let bad = |why: String| EngineError::InvalidInput(why);
    let parsed = claude_vm_devpod::Source::parse(source).map_err(|e| bad(e.to_string()))?;
    let url = match &parsed {
        claude_vm_devpod::Source::Local(path) => {
            let path = match path.strip_prefix("~") {
                Ok(rest) => std::env::home_dir().unwrap_or_default().join(rest),
                Err(_) => std::path::absolute(path).unwrap_or_else(|_| path.clone()),
            };
            let text = tokio::fs::read_to_string(&path).await.map_err(|e| {
                bad(format!(
                    "cannot read the provider.yaml {}: {e}",
                    path.display()
                ))
            })?;
            return Ok((text, path.display().to_string()));
        }
        other => other
            .download_url()
            .ok_or_else(|| bad(format!("{source} names no provider.yaml to fetch")))?,
    };
    note(&format!("fetching {url}"));
    let bytes =
        claude_vm_provider::devpod::download(&url, 1 << 20, std::time::Duration::from_secs(60))
            .await
            .map_err(bad)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| bad(format!("{url} is not text: not a provider.yaml")))?;
    Ok((text, source.to_owned()))
}

fn parse_options(kind: ProviderKind, pairs: &[String]) -> Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|p| {
            let (k, v) = provider::parse_key_value(p)
                .map_err(|e| EngineError::InvalidInput(e.to_string()))?;
            provider::validate_option(kind, &k, &v)
                .map_err(|e| EngineError::InvalidInput(e.to_string()))?;
            Ok((k, v))
        })
        .collect()
}

/// A required option of a DevPod provider.yaml the user has not set yet: what a terminal
/// asks for.
#[derive(Debug, Clone)]
pub struct MissingOption {
    pub key: String,
    pub description: String,
    /// A password option: read without echo, masked everywhere.
    pub secret: bool,
    pub suggestions: Vec<String>,
}

/// How `provider add` of a DevPod provider talks to the user.
pub struct AddDialog<'a> {
    /// Asks for one missing option (`None`: it cannot be asked, e.g. no terminal).
    pub ask: &'a (dyn Fn(&MissingOption) -> Option<String> + Send + Sync),
    /// Shows a step or a warning.
    pub note: &'a (dyn Fn(&str) + Send + Sync),
    /// Run the provider.yaml's `init` (and so check the options) before keeping it.
    pub check: bool,
}

impl Engine {
    /// Where a provider's own files live: a DevPod provider's provider.yaml, binaries and
    /// machine records (its `PROVIDER_FOLDER`).
    pub fn provider_folder(&self, name: &str) -> std::path::PathBuf {
        self.home.root().join("providers").join(name)
    }

    /// Add a DevPod provider: fetch its provider.yaml (a file, an https URL or a GitHub
    /// release), check it, ask for its required options that are not set, download its
    /// binaries (checksum-verified) and run its `init`; kept only when all of that worked.
    pub async fn devpod_add(
        &self,
        name: &str,
        options: &[String],
        dialog: &AddDialog<'_>,
    ) -> Result<ProviderView> {
        provider::validate_provider_name(name).map_err(EngineError::InvalidInput)?;
        if self.store(|s| s.provider(name))?.is_some() {
            return Err(EngineError::InvalidInput(format!(
                "a provider named {name} exists already (`claude-vm provider delete {name}` first, or choose another name)"
            )));
        }
        let kind = ProviderKind::Devpod;
        let mut opts: BTreeMap<String, String> = parse_options(kind, options)?
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        if !opts.contains_key("source")
            && let Some(repo) = claude_vm_devpod::published(name)
        {
            opts.insert("source".to_owned(), repo.to_owned());
        }
        let source = opts.get("source").cloned().ok_or_else(|| {
            EngineError::InvalidInput(
                "a devpod provider needs --option source=PATH|URL|owner/repo (its provider.yaml)"
                    .to_owned(),
            )
        })?;
        let (text, kept_source) = fetch_manifest(&source, dialog.note).await?;
        opts.insert("source".to_owned(), kept_source);
        let parsed = claude_vm_devpod::parse(&text).map_err(|e| {
            EngineError::InvalidInput(format!("the provider.yaml from {source}: {e}"))
        })?;
        for w in &parsed.warnings {
            (dialog.note)(&format!("warning: provider.yaml: {w}"));
        }
        let manifest = parsed.manifest;
        check_known_options(&manifest, &opts)?;
        let folder = self.provider_folder(name);
        let write = {
            let folder = folder.clone();
            let text = text.clone();
            move || -> std::io::Result<()> {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&folder)?;
                std::fs::write(folder.join(claude_vm_provider::devpod::MANIFEST_FILE), text)
            }
        };
        tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| EngineError::InvalidInput(e.to_string()))?
            .map_err(|e| {
                EngineError::InvalidInput(format!("cannot write to {}: {e}", folder.display()))
            })?;
        let added = async {
            // Required options still empty: asked for on a terminal, else named.
            let missing = missing_required(&manifest, &opts);
            let mut unasked = Vec::new();
            for key in missing {
                let def = &manifest.options[&key];
                let m = MissingOption {
                    key: key.clone(),
                    description: def.description.clone().unwrap_or_default(),
                    secret: def.password,
                    suggestions: def.suggestions.clone(),
                };
                match (dialog.ask)(&m).filter(|v| !v.is_empty()) {
                    Some(v) => {
                        provider::validate_option(kind, &key, &v)
                            .map_err(|e| EngineError::InvalidInput(e.to_string()))?;
                        opts.insert(key, v);
                    }
                    None => unasked.push(key),
                }
            }
            if !unasked.is_empty() {
                return Err(EngineError::InvalidInput(format!(
                    "the provider.yaml of {} needs the options {}: pass them with --option KEY=VALUE (or run `claude-vm provider add` on a terminal to be asked)",
                    manifest.name,
                    unasked.join(", ")
                )));
            }
            let p = claude_vm_provider::devpod::DevpodProvider::new(name, &opts, &folder)?;
            if !manifest.binaries.is_empty() {
                (dialog.note)("downloading its binaries (checksum-verified)");
            }
            p.env().await?;
            if dialog.check && manifest.exec.init.is_some() {
                (dialog.note)("running its init command");
                p.init().await?;
            }
            Ok::<(), EngineError>(())
        };
        if let Err(e) = added.await {
            let _ = std::fs::remove_dir_all(&folder);
            return Err(e);
        }
        self.store(|s| s.add_provider(name, kind, &opts))?;
        self.provider_view(name)
    }

    /// The machines a DevPod provider made for this home, each with its state and the
    /// workspaces on it that this home still knows.
    pub async fn provider_machines(&self, name: &str) -> Result<Vec<MachineView>> {
        let record = self
            .store(|s| s.provider(name))?
            .ok_or_else(|| EngineError::UnknownProvider(name.to_owned()))?;
        if record.kind != ProviderKind::Devpod {
            return Err(EngineError::InvalidInput(format!(
                "{name} is a {} provider: only devpod providers make machines",
                record.kind
            )));
        }
        let p = claude_vm_provider::devpod::DevpodProvider::new(
            name,
            &record.options,
            &self.provider_folder(name),
        )?;
        let known: Vec<String> = self
            .all_workspaces()?
            .into_iter()
            .map(|w| w.id.to_string())
            .collect();
        Ok(p.machine_statuses()
            .await?
            .into_iter()
            .map(|(m, state)| {
                let workspaces: Vec<String> = m
                    .workspaces
                    .iter()
                    .filter(|w| known.contains(w))
                    .cloned()
                    .collect();
                MachineView {
                    unused: workspaces.is_empty(),
                    id: m.id,
                    state,
                    workspaces,
                    created_at: m.created_at,
                }
            })
            .collect())
    }

    pub fn provider_add(&self, name: &str, kind: &str, options: &[String]) -> Result<ProviderView> {
        provider::validate_provider_name(name).map_err(EngineError::InvalidInput)?;
        let kind: ProviderKind = kind
            .parse()
            .map_err(|e: provider::UnknownKind| EngineError::InvalidInput(e.to_string()))?;
        let opts: BTreeMap<String, String> = parse_options(kind, options)?
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        provider::check_required(kind, &opts)
            .map_err(|e| EngineError::InvalidInput(e.to_string()))?;
        self.store(|s| s.add_provider(name, kind, &opts))?;
        self.provider_view(name)
    }

    pub fn provider_list(&self) -> Result<Vec<ProviderView>> {
        let records = self.store(|s| s.providers())?;
        records
            .iter()
            .map(|r| self.provider_view(&r.name))
            .collect()
    }

    fn provider_view(&self, name: &str) -> Result<ProviderView> {
        let r = self
            .store(|s| s.provider(name))?
            .ok_or_else(|| EngineError::UnknownProvider(name.to_owned()))?;
        let workspaces = self.store(|s| s.workspaces_on_provider(name))?.len();
        let mut options = provider::masked(r.kind, &r.options);
        if r.kind == ProviderKind::Devpod {
            // The provider.yaml says which of its options are passwords.
            let secret: Vec<String> = claude_vm_provider::devpod::DevpodProvider::new(
                &r.name,
                &r.options,
                &self.provider_folder(&r.name),
            )
            .map(|p| {
                p.manifest()
                    .options
                    .iter()
                    .filter(|(_, d)| d.password)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
            for (k, v) in options.iter_mut() {
                if secret.contains(k) {
                    *v = provider::MASK.to_owned();
                }
            }
        }
        Ok(ProviderView {
            default: self.config.default_provider == r.name,
            options,
            kind: r.kind,
            name: r.name,
            workspaces,
            created_at: r.created_at,
        })
    }

    /// Set (or, with an empty value, remove) options of a provider.
    pub async fn provider_set_options(
        &self,
        name: &str,
        options: &[String],
    ) -> Result<ProviderView> {
        if options.is_empty() {
            return Err(EngineError::InvalidInput(
                "nothing to set: pass at least one --option key=value (an empty value removes the option)".to_owned(),
            ));
        }
        let record = self
            .store(|s| s.provider(name))?
            .ok_or_else(|| EngineError::UnknownProvider(name.to_owned()))?;
        let mut opts = record.options.clone();
        for (k, v) in parse_options(record.kind, options)? {
            if v.is_empty() {
                opts.remove(&k);
            } else {
                opts.insert(k, v);
            }
        }
        provider::check_required(record.kind, &opts)
            .map_err(|e| EngineError::InvalidInput(e.to_string()))?;
        if record.kind == ProviderKind::Devpod {
            self.devpod_check_options(name, &record.options, &opts)
                .await?;
        }
        self.store(|s| s.set_provider_options(name, &opts))?;
        // Drop a cached client so the new options apply.
        self.providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.provider_view(name)
    }

    /// New options of a DevPod provider are checked as `provider add` checks them: known to
    /// its provider.yaml, required ones given, ones it does not mark `mutable` unchanged
    /// (but for secrets) while machines made with them exist, its binaries fetched and its `exec.init` passing. Nothing is kept
    /// when a check fails.
    async fn devpod_check_options(
        &self,
        name: &str,
        old: &BTreeMap<String, String>,
        new: &BTreeMap<String, String>,
    ) -> Result<()> {
        let folder = self.provider_folder(name);
        let p = claude_vm_provider::devpod::DevpodProvider::new(name, new, &folder)?;
        let manifest = p.manifest();
        check_known_options(manifest, new)?;
        let missing = missing_required(manifest, new);
        if !missing.is_empty() {
            return Err(EngineError::InvalidInput(format!(
                "the provider.yaml of {} needs the options {}",
                manifest.name,
                missing.join(", ")
            )));
        }
        let changed: Vec<&str> = manifest
            .options
            .iter()
            // A secret (a token) may be rotated: machines are not made from it.
            .filter(|(k, def)| !def.mutable && !def.password && old.get(*k) != new.get(*k))
            .map(|(k, _)| k.as_str())
            .collect();
        if !changed.is_empty() {
            let machines = p.machines().await?;
            if !machines.is_empty() {
                return Err(EngineError::InvalidInput(format!(
                    "{} cannot change while {} machine(s) made with it exist (the provider.yaml does not mark it mutable): delete their workspaces first (`claude-vm provider machines {name}`)",
                    changed.join(", "),
                    machines.len()
                )));
            }
        }
        p.env().await?;
        if manifest.exec.init.is_some() {
            p.init().await?;
        }
        Ok(())
    }

    /// Connect to a provider and check it answers (for `ssh`: log in, check the host's
    /// architecture and Docker, install claude-vm there).
    pub async fn provider_check(&self, name: &str) -> Result<()> {
        let client = self.provider_client(name)?;
        client.connect().await?;
        client.ping().await?;
        Ok(())
    }

    pub fn provider_delete(&self, name: &str) -> Result<()> {
        if self.store(|s| s.provider(name))?.is_none() {
            return Err(EngineError::UnknownProvider(name.to_owned()));
        }
        let used = self.store(|s| s.workspaces_on_provider(name))?;
        if !used.is_empty() {
            return Err(EngineError::ProviderInUse {
                name: name.to_owned(),
                workspaces: used.join(", "),
            });
        }
        let folder = self.provider_folder(name);
        let machines = folder.join("machines");
        let left = std::fs::read_dir(&machines)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .count()
            })
            .unwrap_or(0);
        if left > 0 {
            return Err(EngineError::InvalidInput(format!(
                "provider {name} still has {left} machine(s) it made: `claude-vm provider machines {name}` lists them; delete their workspaces first"
            )));
        }
        self.store(|s| s.delete_provider(name))?;
        match std::fs::remove_dir_all(&folder) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!("could not remove {}: {e}", folder.display());
            }
            _ => {}
        }
        Ok(())
    }
}
