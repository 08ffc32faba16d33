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
    /// Containers on the Docker Engine of a remote Linux host, every byte over the user's
    /// SSH connection (the system OpenSSH client).
    Ssh,
    /// Containers on machines (cloud VMs) that a DevPod provider.yaml creates, starts, stops
    /// and deletes, or on the one host its `exec.command` reaches.
    Devpod,
}

impl ProviderKind {
    pub const ALL: &[ProviderKind] = &[
        ProviderKind::Docker,
        ProviderKind::Ssh,
        ProviderKind::Devpod,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Docker => "docker",
            ProviderKind::Ssh => "ssh",
            ProviderKind::Devpod => "devpod",
        }
    }

    /// The options this kind accepts.
    pub fn options(self) -> &'static [OptionSpec] {
        match self {
            ProviderKind::Docker => DOCKER_OPTIONS,
            ProviderKind::Ssh => SSH_OPTIONS,
            ProviderKind::Devpod => DEVPOD_OPTIONS,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown provider type {0:?}; known types: docker, ssh, devpod")]
pub struct UnknownKind(pub String);

impl FromStr for ProviderKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "docker" => Ok(ProviderKind::Docker),
            "ssh" => Ok(ProviderKind::Ssh),
            "devpod" => Ok(ProviderKind::Devpod),
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
    /// A host name, address or `ssh_config` alias: no whitespace, not starting with `-`.
    SshHost,
    /// A remote user name: no whitespace, `@` or `:`, not starting with `-`.
    SshUser,
    /// A TCP port, 1 to 65535.
    Port,
    /// A local file (`~/` allowed).
    LocalPath,
    /// An absolute path on the remote host.
    RemotePath,
    /// `true` or `false`.
    Bool,
    /// A duration: a number and a unit, `s`, `m` or `h` (`90s`, `30m`, `1h30m`).
    Duration,
}

/// One option a provider kind accepts.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub key: &'static str,
    pub help: &'static str,
    pub value: ValueKind,
    /// Secrets are masked when shown and never logged.
    pub secret: bool,
    /// A provider of this kind cannot be added (or keep existing) without it.
    pub required: bool,
}

/// Every kind's own options followed by those of the containers it runs (network, limits,
/// image, registry credentials), written once.
macro_rules! with_container_options {
    ($($own:expr),* $(,)?) => {
        &[
            $($own,)*
            OptionSpec {
                key: "network",
                help: "Docker network the workspace containers join (default: bridge)",
                value: ValueKind::Text,
                secret: false,
                required: false,
            },
            OptionSpec {
                key: "cpus",
                help: "CPU limit per workspace, e.g. 2 or 1.5",
                value: ValueKind::Cpus,
                secret: false,
                required: false,
            },
            OptionSpec {
                key: "memory",
                help: "memory limit per workspace, e.g. 4g or 512m",
                value: ValueKind::Memory,
                secret: false,
                required: false,
            },
            OptionSpec {
                key: "image",
                help: "default image for workspaces on this provider",
                value: ValueKind::Text,
                secret: false,
                required: false,
            },
            OptionSpec {
                key: "registry_user",
                help: "user name for pulling images from a private registry",
                value: ValueKind::Text,
                secret: false,
                required: false,
            },
            OptionSpec {
                key: "registry_password",
                help: "password or token for pulling images from a private registry",
                value: ValueKind::Text,
                secret: true,
                required: false,
            },
        ]
    };
}

const DOCKER_OPTIONS: &[OptionSpec] = with_container_options![OptionSpec {
    key: "host",
    help: "Docker endpoint (unix://, tcp://); default: $DOCKER_HOST, then the local socket",
    value: ValueKind::DockerHost,
    secret: false,
    required: false,
},];

const SSH_OPTIONS: &[OptionSpec] = with_container_options![
    OptionSpec {
        key: "host",
        help: "the remote host: a name, an address or a Host alias from your ssh config",
        value: ValueKind::SshHost,
        secret: false,
        required: true,
    },
    OptionSpec {
        key: "user",
        help: "user to log in as (default: your ssh config, then your local user name)",
        value: ValueKind::SshUser,
        secret: false,
        required: false,
    },
    OptionSpec {
        key: "port",
        help: "SSH port (default: your ssh config, then 22)",
        value: ValueKind::Port,
        secret: false,
        required: false,
    },
    OptionSpec {
        key: "identity",
        help: "private key file to log in with, e.g. ~/.ssh/id_ed25519 (default: ssh-agent and your ssh config)",
        value: ValueKind::LocalPath,
        secret: false,
        required: false,
    },
    OptionSpec {
        key: "known_hosts",
        help: "known_hosts file to check the host key against (default: ~/.ssh/known_hosts)",
        value: ValueKind::LocalPath,
        secret: false,
        required: false,
    },
    OptionSpec {
        key: "ssh_config",
        help: "ssh config file to use instead of ~/.ssh/config (ssh -F)",
        value: ValueKind::LocalPath,
        secret: false,
        required: false,
    },
    OptionSpec {
        key: "docker_socket",
        help: "the Docker socket on the host (default: /var/run/docker.sock)",
        value: ValueKind::RemotePath,
        secret: false,
        required: false,
    },
];

const DEVPOD_OPTIONS: &[OptionSpec] = with_container_options![
    OptionSpec {
        key: "source",
        help: "where the provider.yaml is: a file, an https URL, or a GitHub repository (owner/name[@version]) whose releases carry it",
        value: ValueKind::Text,
        secret: false,
        required: true,
    },
    OptionSpec {
        key: "machine_reuse",
        help: "true: workspaces share one machine; false (default): one machine per workspace",
        value: ValueKind::Bool,
        secret: false,
        required: false,
    },
    OptionSpec {
        key: "machine_idle_stop",
        help: "a machine shuts itself down when no workspace has run on it this long (default: the provider.yaml's agent.inactivityTimeout, else 30m; 0 never)",
        value: ValueKind::Duration,
        secret: false,
        required: false,
    },
    OptionSpec {
        key: "machine_timeout",
        help: "how long a machine may take to be created or started and answer (default: 10m)",
        value: ValueKind::Duration,
        secret: false,
        required: false,
    },
    OptionSpec {
        key: "docker_socket",
        help: "the Docker socket on the machines (default: /var/run/docker.sock)",
        value: ValueKind::RemotePath,
        secret: false,
        required: false,
    },
];

/// Whether `key` names an option of a DevPod provider.yaml (`DIGITALOCEAN_TOKEN`, `REGION`):
/// upper-case letters, digits and `_`, as provider.yaml requires. Checked against the
/// provider.yaml itself when the provider is added.
pub fn is_manifest_option(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Parse `90s`, `30m`, `1h30m`, `0` (a sequence of numbers with the units `s`, `m`, `h`).
pub fn parse_duration_secs(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().ok()?;
        digits.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        any = true;
    }
    (digits.is_empty() && any).then_some(total)
}

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
    #[error("{kind} providers need the option {key:?} (--option {key}=...)")]
    Missing {
        key: &'static str,
        kind: ProviderKind,
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
    if kind == ProviderKind::Devpod && is_manifest_option(key) {
        return if value.chars().any(|c| c.is_control() && c != '\n') {
            Err(OptionError::BadValue {
                key: key.to_owned(),
                value: value.to_owned(),
                why: "control characters are not allowed",
            })
        } else {
            Ok(())
        };
    }
    let Some(spec) = kind.options().iter().find(|o| o.key == key) else {
        let known = kind
            .options()
            .iter()
            .map(|o| o.key)
            .collect::<Vec<_>>()
            .join(", ");
        let known = if kind == ProviderKind::Devpod {
            format!("{known}, and the provider.yaml's own options (UPPER_CASE names)")
        } else {
            known
        };
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
        // Values that end up as arguments of `ssh` must never read as one of its flags.
        ValueKind::SshHost => {
            if value.starts_with('-') || value.chars().any(|c| c.is_whitespace() || c == '@') {
                bad(
                    "expected a host name, address or ssh config alias (the user goes in the user option)",
                )
            } else {
                Ok(())
            }
        }
        ValueKind::SshUser => {
            if value.starts_with('-')
                || value
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | ':'))
            {
                bad("expected a user name")
            } else {
                Ok(())
            }
        }
        ValueKind::Port => match value.parse::<u16>() {
            Ok(n) if n > 0 => Ok(()),
            _ => bad("expected a port number from 1 to 65535"),
        },
        ValueKind::LocalPath => {
            if value.chars().any(char::is_control) {
                bad("expected a file path")
            } else {
                Ok(())
            }
        }
        ValueKind::RemotePath => {
            if !value.starts_with('/') || value.chars().any(char::is_control) {
                bad("expected an absolute path on the host, e.g. /var/run/docker.sock")
            } else {
                Ok(())
            }
        }
        ValueKind::Bool => match value {
            "true" | "false" => Ok(()),
            _ => bad("expected true or false"),
        },
        ValueKind::Duration => match parse_duration_secs(value) {
            Some(_) => Ok(()),
            None => bad("expected a duration such as 90s, 30m or 1h30m (0: never)"),
        },
    }
}

/// Check that every option the kind requires is set (and not empty).
pub fn check_required(
    kind: ProviderKind,
    options: &BTreeMap<String, String>,
) -> Result<(), OptionError> {
    match kind
        .options()
        .iter()
        .find(|o| o.required && options.get(o.key).is_none_or(|v| v.is_empty()))
    {
        Some(o) => Err(OptionError::Missing { key: o.key, kind }),
        None => Ok(()),
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
    fn durations_and_devpod_options_are_checked() {
        for (text, secs) in [
            ("0", Some(0)),
            ("90s", Some(90)),
            ("30m", Some(1800)),
            ("1h30m", Some(5400)),
            ("2h", Some(7200)),
        ] {
            assert_eq!(parse_duration_secs(text), secs, "{text}");
        }
        for bad in ["", "30", "m", "1x", "-5m", "1h30", "1.5h"] {
            assert_eq!(parse_duration_secs(bad), None, "{bad}");
        }
        let kind = ProviderKind::Devpod;
        assert!(validate_option(kind, "source", "./provider.yaml").is_ok());
        assert!(validate_option(kind, "DIGITALOCEAN_TOKEN", "dop_v1_x").is_ok());
        assert!(validate_option(kind, "REGION", "bad\u{1}value").is_err());
        assert!(validate_option(kind, "machine_reuse", "yes").is_err());
        assert!(validate_option(kind, "machine_idle_stop", "10m").is_ok());
        assert!(validate_option(kind, "machine_idle_stop", "soon").is_err());
        let unknown = validate_option(kind, "Region", "x")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("UPPER_CASE"), "{unknown}");
        assert_eq!("devpod".parse::<ProviderKind>(), Ok(ProviderKind::Devpod));
        assert!(check_required(kind, &BTreeMap::new()).is_err());
    }

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
    fn ssh_option_validation() {
        let k = ProviderKind::Ssh;
        let table: &[(&str, &str, bool)] = &[
            ("host", "build.example.com", true),
            ("host", "10.0.0.5", true),
            ("host", "::1", true),
            ("host", "my-alias", true),
            ("host", "-oProxyCommand=evil", false),
            ("host", "me@box", false),
            ("host", "two words", false),
            ("user", "deploy", true),
            ("user", "-l", false),
            ("user", "a b", false),
            ("user", "me@x", false),
            ("port", "22", true),
            ("port", "2222", true),
            ("port", "0", false),
            ("port", "65536", false),
            ("port", "ssh", false),
            ("identity", "~/.ssh/id_ed25519", true),
            ("identity", "bad\nname", false),
            ("identity", "with space/id_rsa", true),
            ("known_hosts", "/tmp/kh", true),
            ("ssh_config", "/dev/null", true),
            ("docker_socket", "/run/user/1000/docker.sock", true),
            ("docker_socket", "docker.sock", false),
            ("cpus", "2", true),
            ("cpus", "-1", false),
            ("memory", "2g", true),
            ("network", "host", true),
            ("image", "debian:bookworm", true),
            ("registry_password", "pw", true),
            // Docker-only: the engine is always the host's own socket.
            ("host_socket", "x", false),
        ];
        for (key, value, ok) in table {
            assert_eq!(
                validate_option(k, key, value).is_ok(),
                *ok,
                "{key}={value:?}: {:?}",
                validate_option(k, key, value)
            );
        }
        let err = validate_option(k, "colour", "blue").unwrap_err();
        assert!(
            err.to_string().contains("known options: host, user, port"),
            "{err}"
        );
        assert!(is_secret(k, "registry_password"));
        assert!(!is_secret(k, "identity"), "a key's path is not a secret");
    }

    #[test]
    fn required_options() {
        let opts = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let ssh = ProviderKind::Ssh;
        assert!(check_required(ssh, &opts(&[("host", "h")])).is_ok());
        let err = check_required(ssh, &opts(&[("user", "u")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ssh providers need the option \"host\" (--option host=...)"
        );
        assert!(check_required(ssh, &opts(&[("host", "")])).is_err());
        assert!(check_required(ProviderKind::Docker, &opts(&[])).is_ok());
    }

    #[test]
    fn kinds_parse_and_print() {
        for k in ProviderKind::ALL {
            assert_eq!(k.as_str().parse::<ProviderKind>().unwrap(), *k);
        }
        assert_eq!(
            "fly".parse::<ProviderKind>().unwrap_err().to_string(),
            "unknown provider type \"fly\"; known types: docker, ssh, devpod"
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
