//! `forwardPorts` and `portsAttributes`: which ports of the container a user wants reached
//! from this machine, and how each is labelled and treated.

use serde_json::Value;

use crate::Error;
use crate::jsonc::{Typer, child};

/// One entry of `forwardPorts`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ForwardPort {
    /// `Some("db")` for `"db:5432"` (a port of another host the container reaches);
    /// `None` for a port of the container itself.
    pub host: Option<String>,
    pub port: u16,
}

const EXPECTED_PORT: &str = "a port number (1-65535) or a \"host:port\" string";

impl ForwardPort {
    pub(crate) fn from_json(typer: &Typer, v: &Value, property: &str) -> Result<Self, Error> {
        let port = |n: Option<u64>| n.and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0);
        match v {
            Value::Number(n) => match port(n.as_u64()) {
                Some(port) => Ok(ForwardPort { host: None, port }),
                None => typer.fail(property, EXPECTED_PORT),
            },
            Value::String(s) => {
                let parsed = s.rsplit_once(':').and_then(|(host, p)| {
                    let valid_host = !host.is_empty()
                        && host
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
                    let p = port(p.parse().ok())?;
                    valid_host.then(|| ForwardPort {
                        host: Some(host.to_owned()),
                        port: p,
                    })
                });
                match parsed {
                    Some(p) => Ok(p),
                    None => typer.fail(property, EXPECTED_PORT),
                }
            }
            _ => typer.fail(property, EXPECTED_PORT),
        }
    }
}

/// One entry of `portsAttributes` (keyed by a port, a range `"3000-3010"` or a pattern).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortAttributes {
    pub label: Option<String>,
    /// `notify`, `openBrowser`, `openBrowserOnce`, `openPreview`, `silent`, `ignore`.
    pub on_auto_forward: Option<String>,
    /// `http` or `https`.
    pub protocol: Option<String>,
    pub require_local_port: Option<bool>,
    pub elevate_if_needed: Option<bool>,
}

impl PortAttributes {
    pub(crate) fn from_json(typer: &Typer, v: &Value, property: &str) -> Result<Self, Error> {
        let map = typer.object(v, property)?;
        Ok(PortAttributes {
            label: typer.opt_string(map.get("label"), &child(property, "label"))?,
            on_auto_forward: typer
                .opt_string(map.get("onAutoForward"), &child(property, "onAutoForward"))?,
            protocol: typer.opt_string(map.get("protocol"), &child(property, "protocol"))?,
            require_local_port: typer.opt_bool(
                map.get("requireLocalPort"),
                &child(property, "requireLocalPort"),
            )?,
            elevate_if_needed: typer.opt_bool(
                map.get("elevateIfNeeded"),
                &child(property, "elevateIfNeeded"),
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    #[test]
    fn forward_port_forms() {
        let typer = Typer {
            path: Path::new("dc.json"),
        };
        let good = [
            (json!(3000), None, 3000),
            (json!("db:5432"), Some("db"), 5432),
            (json!("localhost:8080"), Some("localhost"), 8080),
            (json!("my-svc.internal:1"), Some("my-svc.internal"), 1),
        ];
        for (v, host, port) in good {
            let p = ForwardPort::from_json(&typer, &v, "forwardPorts[0]").unwrap();
            assert_eq!((p.host.as_deref(), p.port), (host, port), "{v}");
        }
        for bad in [
            json!(0),
            json!(70000),
            json!(-1),
            json!(1.5),
            json!("3000"),
            json!(":3000"),
            json!("db:"),
            json!("db:x"),
            json!("a b:1"),
            json!(true),
        ] {
            assert!(
                ForwardPort::from_json(&typer, &bad, "forwardPorts[0]").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn port_attributes() {
        let typer = Typer {
            path: Path::new("dc.json"),
        };
        let a = PortAttributes::from_json(
            &typer,
            &json!({"label": "App", "onAutoForward": "notify", "requireLocalPort": true, "other": 1}),
            "portsAttributes.3000",
        )
        .unwrap();
        assert_eq!(a.label.as_deref(), Some("App"));
        assert_eq!(a.on_auto_forward.as_deref(), Some("notify"));
        assert_eq!(a.require_local_port, Some(true));
        assert!(
            PortAttributes::from_json(&typer, &json!({"label": 1}), "portsAttributes.3000")
                .is_err()
        );
    }
}
