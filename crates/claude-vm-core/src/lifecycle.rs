//! When a workspace stops itself: `config.yaml` `lifecycle:`, a workspace's own
//! `--idle-stop`, and how an idle stop is shown. No IO: the daemon keeps the timer.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backup::parse_interval;

/// `config.yaml` `lifecycle:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleSettings {
    /// Stop a workspace after this long with nothing going on in it (no turn, no queued
    /// message, no young approval, no exec, SSH session, transfer or followed stream, no
    /// `exec -d` process): `30m`, `2h`, or `off`.
    pub idle_stop: String,
    /// A conversation waiting for an approval keeps its workspace up this long.
    pub approval_wait: String,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        LifecycleSettings {
            idle_stop: "30m".to_owned(),
            approval_wait: "24h".to_owned(),
        }
    }
}

impl LifecycleSettings {
    pub fn validate(&self) -> Result<(), String> {
        IdleStop::parse(&self.idle_stop).map_err(|e| format!("lifecycle.idle_stop: {e}"))?;
        parse_interval(&self.approval_wait).map_err(|e| format!("lifecycle.approval_wait: {e}"))?;
        Ok(())
    }

    /// The policy of a workspace: its own setting if it has one, else this default.
    pub fn policy(&self, own: Option<IdleStop>) -> Result<Policy, String> {
        let idle_stop = match own {
            Some(s) => s,
            None => {
                IdleStop::parse(&self.idle_stop).map_err(|e| format!("lifecycle.idle_stop: {e}"))?
            }
        };
        let approval_wait = parse_interval(&self.approval_wait)
            .map_err(|e| format!("lifecycle.approval_wait: {e}"))?;
        Ok(Policy {
            idle_stop,
            approval_wait,
        })
    }
}

/// Whether and when a workspace stops itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleStop {
    Off,
    After(Duration),
}

impl IdleStop {
    /// `off` (or `never`), or a duration (`10m`, `1h30m`, `90s`, plain seconds).
    pub fn parse(s: &str) -> Result<IdleStop, String> {
        match s.trim() {
            "off" | "never" | "false" => Ok(IdleStop::Off),
            other => match parse_interval(other) {
                Ok(d) if !d.is_zero() => Ok(IdleStop::After(d)),
                _ => Err(format!(
                    "invalid idle stop {s:?}: use off or a duration such as 30m, 2h or 90s"
                )),
            },
        }
    }

    pub fn duration(&self) -> Option<Duration> {
        match self {
            IdleStop::Off => None,
            IdleStop::After(d) => Some(*d),
        }
    }
}

impl std::fmt::Display for IdleStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdleStop::Off => f.write_str("off"),
            IdleStop::After(d) => f.write_str(&short_duration(*d)),
        }
    }
}

/// A workspace's lifecycle policy, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub idle_stop: IdleStop,
    pub approval_wait: Duration,
}

/// `45s`, `31m`, `2h5m`, `3d4h`: the two largest units.
pub fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    let parts: Vec<String> = [(days, "d"), (hours, "h"), (mins, "m"), (secs, "s")]
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.concat()
    }
}

/// How `workspace list` shows a stopped workspace: `stopped (idle 31m)` when it stopped
/// itself, its last activity `idle_for` ago.
pub fn stopped_label(idle_for: Option<Duration>) -> String {
    match idle_for {
        Some(d) => format!("stopped (idle {})", idle_duration(d)),
        None => "stopped".to_owned(),
    }
}

/// Like [`short_duration`], but never finer than minutes once past one.
pub fn idle_duration(d: Duration) -> String {
    if d.as_secs() >= 60 {
        short_duration(Duration::from_secs(d.as_secs() / 60 * 60))
    } else {
        short_duration(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_stop_values() {
        let table: &[(&str, Result<IdleStop, ()>)] = &[
            ("off", Ok(IdleStop::Off)),
            ("never", Ok(IdleStop::Off)),
            ("30m", Ok(IdleStop::After(Duration::from_secs(1800)))),
            ("1h30m", Ok(IdleStop::After(Duration::from_secs(5400)))),
            ("5", Ok(IdleStop::After(Duration::from_secs(5)))),
            ("", Err(())),
            ("0", Err(())),
            ("10x", Err(())),
            ("-5m", Err(())),
            ("m", Err(())),
        ];
        for (text, want) in table {
            assert_eq!(IdleStop::parse(text).map_err(|_| ()), *want, "{text:?}");
        }
        assert_eq!(
            IdleStop::After(Duration::from_secs(5400)).to_string(),
            "1h30m"
        );
        assert_eq!(IdleStop::Off.to_string(), "off");
    }

    #[test]
    fn settings_errors_name_the_key() {
        let bad = LifecycleSettings {
            idle_stop: "soon".to_owned(),
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("lifecycle.idle_stop:")
        );
        let bad = LifecycleSettings {
            approval_wait: "forever".to_owned(),
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .starts_with("lifecycle.approval_wait:")
        );
        let p = LifecycleSettings::default().policy(None).unwrap();
        assert_eq!(p.idle_stop, IdleStop::After(Duration::from_secs(1800)));
        assert_eq!(p.approval_wait, Duration::from_secs(86400));
        let own = LifecycleSettings::default()
            .policy(Some(IdleStop::Off))
            .unwrap();
        assert_eq!(own.idle_stop, IdleStop::Off);
    }

    #[test]
    fn labels() {
        assert_eq!(short_duration(Duration::from_secs(45)), "45s");
        assert_eq!(short_duration(Duration::from_secs(31 * 60 + 5)), "31m5s");
        assert_eq!(short_duration(Duration::from_secs(7500)), "2h5m");
        assert_eq!(
            short_duration(Duration::from_secs(3 * 86400 + 3600 * 4 + 7)),
            "3d4h"
        );
        assert_eq!(short_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(
            stopped_label(Some(Duration::from_secs(31 * 60 + 5))),
            "stopped (idle 31m)"
        );
        assert_eq!(
            stopped_label(Some(Duration::from_secs(20))),
            "stopped (idle 20s)"
        );
        assert_eq!(stopped_label(None), "stopped");
    }
}
