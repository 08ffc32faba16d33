//! Notifications, as the user configures them: `config.yaml` `notify:` (channels, the events
//! each wants, how long turn ends are gathered into one) and the events themselves. No IO:
//! `claude-vm-notify` formats and delivers, the server decides when.

use serde::{Deserialize, Serialize};

use crate::backup::parse_interval;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A tool use waits for the user's decision.
    Approval,
    /// A turn ended; the notification carries the reply's first line.
    TurnFinished,
    /// A conversation failed.
    Failed,
    /// A workspace stopped itself for idleness.
    IdleStopped,
    /// A backup attempt failed.
    BackupFailed,
    /// `claude-vm notify test`.
    Test,
}

impl EventKind {
    pub const ALL: &[EventKind] = &[
        EventKind::Approval,
        EventKind::TurnFinished,
        EventKind::Failed,
        EventKind::IdleStopped,
        EventKind::BackupFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Approval => "approval",
            EventKind::TurnFinished => "turn_finished",
            EventKind::Failed => "failed",
            EventKind::IdleStopped => "idle_stopped",
            EventKind::BackupFailed => "backup_failed",
            EventKind::Test => "test",
        }
    }

    /// How urgent, 1 (min) to 5 (max), as ntfy counts.
    pub fn priority(self) -> u8 {
        match self {
            EventKind::Approval | EventKind::Failed | EventKind::BackupFailed => 4,
            EventKind::TurnFinished | EventKind::Test => 3,
            EventKind::IdleStopped => 2,
        }
    }
}

/// `config.yaml` `notify:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifySettings {
    pub channels: Vec<Channel>,
    /// Turn ends of one workspace within this long become one notification.
    pub coalesce: String,
    /// The server's address as a phone reaches it, for the links notifications carry
    /// (default: the server's first `--public-url`, else its listen address).
    pub link_base: Option<String>,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            channels: Vec::new(),
            coalesce: "10s".to_owned(),
            link_base: None,
        }
    }
}

/// One place notifications go.
/// (Unknown keys are refused by [`ChannelKind`], which gets every key but these two.)
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    /// A name for `notify status` (default: the type and its position, `ntfy-1`).
    #[serde(default)]
    pub name: Option<String>,
    /// Which events it gets (default: all).
    #[serde(default)]
    pub events: Vec<EventKind>,
    #[serde(flatten)]
    pub kind: ChannelKind,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("events", &self.events)
            .field("type", &self.kind.type_name())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ChannelKind {
    /// ntfy's publish API: `url` is the topic's URL (`https://ntfy.sh/my-topic`).
    Ntfy {
        url: String,
        /// An access token (`tk_...`), sent as a bearer token.
        #[serde(default)]
        token: Option<String>,
    },
    /// A JSON POST; with `secret`, signed (`X-Claude-VM-Signature: sha256=<hex HMAC>`).
    Webhook {
        url: String,
        #[serde(default)]
        secret: Option<String>,
    },
    /// A Slack incoming webhook.
    Slack { url: String },
    /// A Discord webhook.
    Discord { url: String },
    /// Mail over SMTP.
    Email {
        host: String,
        /// Default: 587 for `starttls`, 465 for `tls`, 25 for `none`.
        #[serde(default)]
        port: Option<u16>,
        #[serde(default)]
        tls: Tls,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
        from: String,
        to: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    #[default]
    Starttls,
    Tls,
    /// Plain SMTP (a relay on the same machine).
    None,
}

impl ChannelKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ChannelKind::Ntfy { .. } => "ntfy",
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Slack { .. } => "slack",
            ChannelKind::Discord { .. } => "discord",
            ChannelKind::Email { .. } => "email",
        }
    }
}

impl Channel {
    /// Its name, or `<type>-<n>` (1-based position).
    pub fn display_name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", self.kind.type_name(), index + 1))
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        kind == EventKind::Test || self.events.is_empty() || self.events.contains(&kind)
    }
}

fn check_url(key: &str, url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{key}: {url:?} is not an http(s) URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{key}: {url:?} has no host"));
    }
    Ok(())
}

impl NotifySettings {
    pub fn validate(&self) -> Result<(), String> {
        parse_interval(&self.coalesce).map_err(|e| format!("notify.coalesce: {e}"))?;
        if let Some(b) = &self.link_base {
            check_url("notify.link_base", b)?;
        }
        let mut names = std::collections::HashSet::new();
        for (i, c) in self.channels.iter().enumerate() {
            let key = format!("notify.channels[{i}]");
            if !names.insert(c.display_name(i)) {
                return Err(format!(
                    "{key}: the name {:?} is used twice",
                    c.display_name(i)
                ));
            }
            match &c.kind {
                ChannelKind::Ntfy { url, .. }
                | ChannelKind::Webhook { url, .. }
                | ChannelKind::Slack { url }
                | ChannelKind::Discord { url } => check_url(&format!("{key}.url"), url)?,
                ChannelKind::Email { host, from, to, .. } => {
                    if host.trim().is_empty() {
                        return Err(format!("{key}.host is empty"));
                    }
                    for a in std::iter::once(from).chain(to) {
                        if !a.contains('@') {
                            return Err(format!("{key}: {a:?} is not a mail address"));
                        }
                    }
                    if to.is_empty() {
                        return Err(format!("{key}.to lists no address"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// One notification, whatever channel it goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable for the event it is about: one notification per id, however often it is
    /// noticed (`<conversation>:<seq>`, `idle:<workspace>:<time>`, ...).
    pub id: String,
    pub kind: EventKind,
    pub workspace: String,
    pub conversation: Option<String>,
    pub title: String,
    pub body: String,
    /// The page to open (the conversation's, or the workspace's).
    pub link: Option<String>,
    /// RFC 3339.
    pub at: String,
}

/// The first line of an agent's reply, cut to `max` characters.
pub fn first_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut out: String = line.chars().take(max).collect();
    if line.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<NotifySettings, String> {
        let s: NotifySettings = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    #[test]
    fn channel_configs_parse_and_errors_name_the_key() {
        let s = parse(
            "channels:\n- type: ntfy\n  url: https://ntfy.sh/t\n  token: tk_x\n  events: [approval, turn_finished]\n- type: webhook\n  url: http://10.0.0.1/hook\n  secret: s\n- type: slack\n  url: https://hooks.slack.com/services/x\n- type: discord\n  name: dc\n  url: https://discord.com/api/webhooks/1/x\n- type: email\n  host: smtp.example.com\n  from: cvm@example.com\n  to: [me@example.com]\n",
        )
        .unwrap();
        assert_eq!(s.channels.len(), 5);
        assert!(s.channels[0].wants(EventKind::Approval));
        assert!(!s.channels[0].wants(EventKind::IdleStopped));
        assert!(s.channels[1].wants(EventKind::IdleStopped));
        assert_eq!(s.channels[3].display_name(3), "dc");
        assert_eq!(s.channels[4].display_name(4), "email-5");
        let bad: &[(&str, &str)] = &[
            (
                "channels:\n- type: ntfy\n  url: ntfy.sh/t\n",
                "notify.channels[0].url",
            ),
            (
                "channels:\n- type: email\n  host: h\n  from: nobody\n  to: [a@b]\n",
                "notify.channels[0]",
            ),
            (
                "channels:\n- type: email\n  host: h\n  from: a@b\n  to: []\n",
                "notify.channels[0].to",
            ),
            ("coalesce: soon\n", "notify.coalesce"),
            (
                "channels:\n- type: slack\n  url: https://a/b\n  name: x\n- type: discord\n  url: https://a/c\n  name: x\n",
                "used twice",
            ),
        ];
        for (yaml, want) in bad {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
        assert!(parse("channels:\n- type: pager\n  url: https://a/b\n").is_err());
        assert!(parse("channels:\n- type: slack\n  url: https://a/b\n  token: x\n").is_err());
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let s =
            parse("channels:\n- type: webhook\n  url: https://a/b\n  secret: hunter2\n").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn first_lines() {
        assert_eq!(
            first_line("\n  Done: tests pass.\nMore", 80),
            "Done: tests pass."
        );
        assert_eq!(first_line("abcdef", 3), "abc…");
        assert_eq!(first_line("", 3), "");
    }
}
