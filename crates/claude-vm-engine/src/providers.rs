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

impl Engine {
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
        Ok(ProviderView {
            default: self.config.default_provider == r.name,
            options: provider::masked(r.kind, &r.options),
            kind: r.kind,
            name: r.name,
            workspaces,
            created_at: r.created_at,
        })
    }

    /// Set (or, with an empty value, remove) options of a provider.
    pub fn provider_set_options(&self, name: &str, options: &[String]) -> Result<ProviderView> {
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
        self.store(|s| s.set_provider_options(name, &opts))?;
        // Drop a cached client so the new options apply.
        self.providers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        self.provider_view(name)
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
        self.store(|s| s.delete_provider(name))?;
        Ok(())
    }
}
