//! Backups, as the user configures and names them: where the repository is (`config.yaml`
//! `backup:`), how often and how much to keep, and the tags that tie a snapshot to its
//! workspace. No IO: the `claude-vm-backup` crate does the work.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Tag every claude-vm snapshot carries.
pub const TAG: &str = "claude-vm";
/// Prefixes of the tags naming a snapshot's workspace (`ws:<id>`, `name:<name>`).
pub const TAG_ID: &str = "ws:";
pub const TAG_NAME: &str = "name:";
pub const TAG_PROVIDER: &str = "provider:";
pub const TAG_VERSION: &str = "version:";
pub const TAG_IMAGE: &str = "image:";

/// `config.yaml` `backup:`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupSettings {
    /// Take backups automatically (`down`, `delete`, and continuously under `server`).
    pub enabled: bool,
    /// Where the repository is: a folder, or `s3://bucket/prefix`. Default: the
    /// `backups` folder in the claude-vm home.
    pub repository: Option<String>,
    /// The file holding the repository password. Default: `backup-password` in the home
    /// (created, owner-only, on first use).
    pub password_file: Option<PathBuf>,
    pub s3: S3Settings,
    /// Also back up files git ignores (`node_modules/`, `target/`).
    pub include_ignored: bool,
    /// How often, at most, `claude-vm server` backs up a workspace in which something
    /// changed (`15m`, `1h`, `90s`).
    pub interval: String,
    /// What `backup forget` keeps when given no `--keep-*`, and what the server keeps.
    pub keep_last: u32,
    pub keep_daily: u32,
}

impl std::fmt::Debug for BackupSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupSettings")
            .field("enabled", &self.enabled)
            .field("repository", &self.repository)
            .field("password_file", &self.password_file)
            .field("s3", &self.s3)
            .field("include_ignored", &self.include_ignored)
            .field("interval", &self.interval)
            .field("keep_last", &self.keep_last)
            .field("keep_daily", &self.keep_daily)
            .finish()
    }
}

impl Default for BackupSettings {
    fn default() -> Self {
        BackupSettings {
            enabled: true,
            repository: None,
            password_file: None,
            s3: S3Settings::default(),
            include_ignored: false,
            interval: "15m".to_owned(),
            keep_last: 20,
            keep_daily: 14,
        }
    }
}

/// How to reach an S3-compatible store. Credentials not given here come from the usual
/// AWS environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`) or profile.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    /// e.g. `https://s3.eu-central-1.amazonaws.com` or `http://127.0.0.1:8333`.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// A profile of `~/.aws/credentials`.
    pub profile: Option<String>,
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let masked = |v: &Option<String>| v.as_ref().map(|_| crate::provider::MASK);
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &masked(&self.secret_access_key))
            .field("profile", &self.profile)
            .finish()
    }
}

/// Where a repository is, parsed from `backup.repository`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Location {
    /// `None` means the default: the home's `backups` folder.
    pub fn parse(repository: Option<&str>, home: &std::path::Path) -> Result<Location, String> {
        let Some(r) = repository.map(str::trim).filter(|r| !r.is_empty()) else {
            return Ok(Location::Local(home.join("backups")));
        };
        if let Some(rest) = r.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                })
                && !bucket.starts_with(['-', '.'])
                && !bucket.ends_with(['-', '.']);
            if !valid_bucket {
                return Err(format!(
                    "backup.repository {r:?}: {bucket:?} is not a valid bucket name (3 to 63 lowercase letters, digits, dots and dashes)"
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|c| c == "." || c == "..")
                || prefix.chars().any(char::is_control)
            {
                return Err(format!(
                    "backup.repository {r:?}: the prefix may not contain `.`, `..` or control characters"
                ));
            }
            return Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if r.contains("://") || r.starts_with("s3:") {
            return Err(format!(
                "backup.repository {r:?} is neither a folder nor s3://bucket/prefix"
            ));
        }
        let path = PathBuf::from(r);
        if !path.is_absolute() {
            return Err(format!(
                "backup.repository {r:?} must be an absolute folder path or s3://bucket/prefix"
            ));
        }
        Ok(Location::Local(path))
    }

    /// How the `restic` CLI names this repository (`-r`).
    pub fn restic_name(&self, s3: &S3Settings) -> String {
        match self {
            Location::Local(p) => p.display().to_string(),
            Location::S3 { bucket, prefix } => {
                let endpoint = s3
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| "https://s3.amazonaws.com".to_owned());
                let endpoint = endpoint.trim_end_matches('/');
                if prefix.is_empty() {
                    format!("s3:{endpoint}/{bucket}")
                } else {
                    format!("s3:{endpoint}/{bucket}/{prefix}")
                }
            }
        }
    }
}

/// `15m`, `1h`, `90s`, `2h30m`, or plain seconds.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(format!("invalid interval {s:?}: use e.g. 15m, 1h or 90s")),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid interval {s:?}: use e.g. 15m, 1h or 90s"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        num.clear();
    }
    if !num.is_empty() || total == 0 {
        return Err(format!(
            "invalid interval {s:?}: use e.g. 15m, 1h or 90s (and more than zero)"
        ));
    }
    Ok(Duration::from_secs(total))
}

impl BackupSettings {
    pub fn validate(&self, home: &std::path::Path) -> Result<(), String> {
        Location::parse(self.repository.as_deref(), home)?;
        parse_interval(&self.interval).map_err(|e| format!("backup.interval: {e}"))?;
        if let Some(e) = &self.s3.endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(format!(
                "backup.s3.endpoint {e:?} must start with http:// or https://"
            ));
        }
        if self.keep_last == 0 && self.keep_daily == 0 {
            return Err(
                "backup.keep_last and backup.keep_daily are both 0: that would keep nothing"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// Backups closer together than this are never taken automatically.
pub const MIN_GAP_SECS: i64 = 60;

/// What the server knows of a running workspace when it decides whether to back it up
/// (unix seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moment {
    pub now: i64,
    /// The last attempt (successful or not); `None`: never tried.
    pub last_attempt: Option<i64>,
    /// The last successful backup.
    pub last_backup: Option<i64>,
    /// The last activity inside (agent work, exec, file writes).
    pub last_change: Option<i64>,
    /// The last time an agent turn ended.
    pub turn_ended: Option<i64>,
}

/// Whether a continuous backup is due: never more often than [`MIN_GAP_SECS`]; a
/// workspace never backed up is; otherwise only when something changed since the last
/// backup, at once after an agent turn ended, else once `interval` has passed.
pub fn due(m: &Moment, interval: std::time::Duration) -> bool {
    if m.last_attempt.is_some_and(|a| m.now - a < MIN_GAP_SECS) {
        return false;
    }
    let Some(last) = m.last_backup else {
        return true;
    };
    // Times are whole seconds: a change in the second of the backup may have followed it.
    let changed =
        m.last_change.is_some_and(|c| c >= last) || m.turn_ended.is_some_and(|t| t >= last);
    if !changed {
        return false;
    }
    if m.turn_ended.is_some_and(|t| t >= last) {
        return true;
    }
    let since = m.last_attempt.map_or(last, |a| a.max(last));
    m.now - since >= interval.as_secs() as i64
}

/// The tags of a snapshot of workspace `id` named `name`.
/// (A tag may not hold a comma: restic separates tags with them.)
pub fn tags(id: &str, name: &str, provider: &str, image: &str, version: &str) -> Vec<String> {
    let mut t = vec![
        TAG.to_owned(),
        format!("{TAG_ID}{id}"),
        format!("{TAG_NAME}{name}"),
        format!("{TAG_PROVIDER}{provider}"),
        format!("{TAG_VERSION}{version}"),
    ];
    if !image.contains(',') {
        t.push(format!("{TAG_IMAGE}{image}"));
    }
    t
}

/// The value of the tag with `prefix` among `tags`.
pub fn tag_value<'a>(tags: impl IntoIterator<Item = &'a str>, prefix: &str) -> Option<&'a str> {
    tags.into_iter().find_map(|t| t.strip_prefix(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn locations() {
        let home = Path::new("/h");
        assert_eq!(
            Location::parse(None, home).unwrap(),
            Location::Local("/h/backups".into())
        );
        assert_eq!(
            Location::parse(Some("s3://my-bucket/a/b/"), home).unwrap(),
            Location::S3 {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            Location::parse(Some("s3://bkt"), home).unwrap(),
            Location::S3 {
                bucket: "bkt".into(),
                prefix: "".into()
            }
        );
        for bad in [
            "s3://B/x",
            "s3://ab",
            "s3://bucket/../x",
            "relative/dir",
            "sftp://host/x",
            "s3:host/bucket",
        ] {
            assert!(Location::parse(Some(bad), home).is_err(), "{bad}");
        }
        assert_eq!(
            Location::S3 {
                bucket: "b1".into(),
                prefix: "p".into()
            }
            .restic_name(&S3Settings {
                endpoint: Some("http://127.0.0.1:9000/".into()),
                ..Default::default()
            }),
            "s3:http://127.0.0.1:9000/b1/p"
        );
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_interval("2h30m").unwrap(), Duration::from_secs(9000));
        assert_eq!(parse_interval("90").unwrap(), Duration::from_secs(90));
        for bad in ["", "0m", "m", "15x", "1h5"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_masked_in_debug() {
        let s = S3Settings {
            secret_access_key: Some("hunter2-very-secret".into()),
            ..Default::default()
        };
        let shown = format!(
            "{:?}",
            BackupSettings {
                s3: s,
                ..Default::default()
            }
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn when_continuous_backups_are_due() {
        let i = Duration::from_secs(900);
        let at = |now, attempt, backup, change, turn| Moment {
            now,
            last_attempt: attempt,
            last_backup: backup,
            last_change: change,
            turn_ended: turn,
        };
        // (moment, due?, why)
        let cases = [
            (at(1000, None, None, None, None), true, "never backed up"),
            (
                at(1000, Some(990), None, None, None),
                false,
                "tried 10 s ago",
            ),
            (
                at(5000, Some(1000), Some(1000), Some(900), None),
                false,
                "nothing changed",
            ),
            (
                at(1100, Some(1000), Some(1000), Some(1050), None),
                false,
                "changed, interval not over",
            ),
            (
                at(1900, Some(1000), Some(1000), Some(1050), None),
                true,
                "changed, interval over",
            ),
            (
                at(1100, Some(1000), Some(1000), Some(1050), Some(1080)),
                true,
                "a turn ended",
            ),
            (
                at(1030, Some(1000), Some(1000), Some(1050), Some(1020)),
                false,
                "a turn ended, but 30 s ago was the last",
            ),
            (
                at(1900, Some(1800), Some(1000), Some(1050), None),
                false,
                "failed 100 s ago: wait the interval",
            ),
            (
                at(2800, Some(1800), Some(1000), Some(1050), None),
                true,
                "failed an interval ago: retry",
            ),
        ];
        for (m, want, why) in cases {
            assert_eq!(due(&m, i), want, "{why}: {m:?}");
        }
    }

    #[test]
    fn tags_round_trip() {
        let t = tags("ws123", "brave-otter", "docker", "debian:bookworm", "0.1.0");
        let refs = t.iter().map(String::as_str);
        assert_eq!(tag_value(refs.clone(), TAG_ID), Some("ws123"));
        assert_eq!(tag_value(refs.clone(), TAG_NAME), Some("brave-otter"));
        assert_eq!(tag_value(refs, TAG_IMAGE), Some("debian:bookworm"));
    }
}
