//! Providers as configured by the user: a name, a kind, and options checked against the
//! kind's schema. How a provider talks to its backend lives in `claude-vm-provider`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What shows instead of a secret option's value.
pub const MASK: &str = "********";

/// The kinds of provider claude-vm knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Containers on a Docker Engine (local, or any `DOCKER_HOST`).
    Docker,
}

impl ProviderKind {
    pub const ALL: &[ProviderKind] = &[ProviderKind::Docker];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Docker => "docker",
        }
    }

    /// The options this kind accepts.
    pub fn options(self) -> &'static [OptionSpec] {
        match self {
            ProviderKind::Docker => DOCKER_OPTIONS,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown provider type {0:?}; known types: docker")]
pub struct UnknownKind(pub String);

impl FromStr for ProviderKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "docker" => Ok(ProviderKind::Docker),
            _ => Err(UnknownKind(s.to_owned())),
        }
    }
}

/// How an option's value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    Text,
    /// A Docker endpoint: `unix://`, `tcp://` or `http://`.
    DockerHost,
    /// A positive number of CPUs, fractions allowed (`1.5`).
    Cpus,
    /// A byte size with an optional `k`, `m`, `g` suffix (`512m`, `4g`).
    Memory,
}

/// One option a provider kind accepts.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub key: &'static str,
    pub help: &'static str,
    pub value: ValueKind,
    /// Secrets are masked when shown and never logged.
    pub secret: bool,
}

const DOCKER_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        key: "host",
        help: "Docker endpoint (unix://, tcp://); default: $DOCKER_HOST, then the local socket",
        value: ValueKind::DockerHost,
        secret: false,
    },
    OptionSpec {
        key: "network",
        help: "Docker network the workspace containers join (default: bridge)",
        value: ValueKind::Text,
        secret: false,
    },
    OptionSpec {
        key: "cpus",
        help: "CPU limit per workspace, e.g. 2 or 1.5",
        value: ValueKind::Cpus,
        secret: false,
    },
    OptionSpec {
        key: "memory",
        help: "memory limit per workspace, e.g. 4g or 512m",
        value: ValueKind::Memory,
        secret: false,
    },
    OptionSpec {
        key: "image",
        help: "default image for workspaces on this provider",
        value: ValueKind::Text,
        secret: false,
    },
    OptionSpec {
        key: "registry_user",
        help: "user name for pulling images from a private registry",
        value: ValueKind::Text,
        secret: false,
    },
    OptionSpec {
        key: "registry_password",
        help: "password or token for pulling images from a private registry",
        value: ValueKind::Text,
        secret: true,
    },
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    #[error("option {0:?} is not of the form key=value")]
    NotKeyValue(String),
    #[error("unknown option {key:?} for a {kind} provider; known options: {known}")]
    UnknownKey {
        key: String,
        kind: ProviderKind,
        known: String,
    },
    #[error("invalid value {value:?} for option {key:?}: {why}")]
    BadValue {
        key: String,
        value: String,
        why: &'static str,
    },
}

/// Split `key=value` (the value may itself contain `=`).
pub fn parse_key_value(s: &str) -> Result<(String, String), OptionError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(OptionError::NotKeyValue(s.to_owned())),
    }
}

/// Check one option against the kind's schema. An empty value is allowed: it removes the
/// option in `set-options`.
pub fn validate_option(kind: ProviderKind, key: &str, value: &str) -> Result<(), OptionError> {
    let Some(spec) = kind.options().iter().find(|o| o.key == key) else {
        let known = kind
            .options()
            .iter()
            .map(|o| o.key)
            .collect::<Vec<_>>()
            .join(", ");
        return Err(OptionError::UnknownKey {
            key: key.to_owned(),
            kind,
            known,
        });
    };
    if value.is_empty() {
        return Ok(());
    }
    let bad = |why| {
        Err(OptionError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
            why,
        })
    };
    match spec.value {
        ValueKind::Text => Ok(()),
        ValueKind::DockerHost => {
            if ["unix://", "tcp://", "http://"]
                .iter()
                .any(|p| value.starts_with(p))
            {
                Ok(())
            } else {
                bad("expected unix://PATH, tcp://HOST:PORT or http://HOST:PORT")
            }
        }
        ValueKind::Cpus => match value.parse::<f64>() {
            Ok(n) if n > 0.0 && n.is_finite() => Ok(()),
            _ => bad("expected a positive number of CPUs, e.g. 2 or 1.5"),
        },
        ValueKind::Memory => match parse_bytes(value) {
            Some(n) if n >= 6 * 1024 * 1024 => Ok(()),
            Some(_) => bad("Docker needs at least 6m of memory"),
            None => bad("expected a size such as 512m or 4g"),
        },
    }
}

/// Parse `512m`, `4g`, `1024k`, `100000` (bytes).
pub fn parse_bytes(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (digits, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1i64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = digits.parse().ok()?;
    if !(n.is_finite() && n > 0.0) {
        return None;
    }
    let bytes = n * mult as f64;
    (bytes < i64::MAX as f64).then_some(bytes as i64)
}

/// Whether an option holds a secret. Known options say so in their spec; for anything else
/// the key's words decide (token, password, secret, key, credential).
pub fn is_secret(kind: ProviderKind, key: &str) -> bool {
    if let Some(spec) = kind.options().iter().find(|o| o.key == key) {
        return spec.secret;
    }
    key.to_ascii_lowercase().split(['_', '-', '.']).any(|w| {
        matches!(
            w,
            "token"
                | "password"
                | "passwd"
                | "secret"
                | "key"
                | "apikey"
                | "credential"
                | "credentials"
        )
    })
}

/// A copy of `options` fit to show: secrets replaced by [`MASK`].
pub fn masked(kind: ProviderKind, options: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    options
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret(kind, k) {
                MASK.to_owned()
            } else {
                v.clone()
            };
            (k.clone(), shown)
        })
        .collect()
}

/// Provider names: lowercase letters, digits, `-` and `_`, starting with a letter or digit.
pub fn validate_provider_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid provider name {name:?}: use up to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_option_validation() {
        let k = ProviderKind::Docker;
        assert!(validate_option(k, "host", "unix:///var/run/docker.sock").is_ok());
        assert!(validate_option(k, "host", "tcp://10.0.0.1:2375").is_ok());
        assert!(validate_option(k, "host", "/var/run/docker.sock").is_err());
        assert!(validate_option(k, "cpus", "1.5").is_ok());
        assert!(validate_option(k, "cpus", "0").is_err());
        assert!(validate_option(k, "cpus", "many").is_err());
        assert!(validate_option(k, "memory", "4g").is_ok());
        assert!(validate_option(k, "memory", "512M").is_ok());
        assert!(validate_option(k, "memory", "1k").is_err());
        assert!(validate_option(k, "memory", "lots").is_err());
        assert!(validate_option(k, "network", "").is_ok());
        let err = validate_option(k, "colour", "blue").unwrap_err();
        assert!(
            err.to_string().contains("known options: host, network"),
            "{err}"
        );
    }

    #[test]
    fn key_value_parsing() {
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
        assert_eq!(parse_key_value("a=").unwrap(), ("a".into(), "".into()));
        assert!(parse_key_value("=b").is_err());
        assert!(parse_key_value("ab").is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("512m"), Some(512 << 20));
        assert_eq!(parse_bytes("4g"), Some(4 << 30));
        assert_eq!(parse_bytes("4GB"), Some(4 << 30));
        assert_eq!(parse_bytes("1.5g"), Some(3 << 29));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("-1g"), None);
        assert_eq!(parse_bytes("g"), None);
        assert_eq!(parse_bytes(""), None);
    }

    #[test]
    fn secrets_are_masked() {
        let k = ProviderKind::Docker;
        let opts: BTreeMap<String, String> = [
            ("registry_password", "hunter2"),
            ("registry_user", "me"),
            ("api_token", "t0k"),
            ("ssh-key", "k"),
            ("monkey", "banana"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let m = masked(k, &opts);
        assert_eq!(m["registry_password"], MASK);
        assert_eq!(m["api_token"], MASK);
        assert_eq!(m["ssh-key"], MASK);
        assert_eq!(m["registry_user"], "me");
        assert_eq!(m["monkey"], "banana");
    }

    #[test]
    fn provider_names() {
        assert!(validate_provider_name("docker").is_ok());
        assert!(validate_provider_name("my_box-2").is_ok());
        assert!(validate_provider_name("").is_err());
        assert!(validate_provider_name("-x").is_err());
        assert!(validate_provider_name("Box").is_err());
        assert!(validate_provider_name("a b").is_err());
    }
}
