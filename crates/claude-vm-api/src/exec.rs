//! Running a command: the request, and the answer's JSON lines.

use serde::{Deserialize, Serialize};

/// `POST /api/v1/workspaces/{workspace}/exec`: `command` or `shell`, and at most one of
/// `stdin` and `stdin_base64`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exec {
    /// The program and its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Or a shell command line, run with `sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Working directory [default: the project folder].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `NAME=VALUE` pairs.
    #[serde(default)]
    pub env: Vec<String>,
    /// User name or uid [default: the agent user].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Fed to the command's standard input, then closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// The same, base64-encoded (for bytes that are not UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_base64: Option<String>,
}

/// How output bytes travel in [`ExecLine`]'s `data`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// UTF-8, invalid bytes replaced.
    #[default]
    Text,
    /// Standard base64, every byte kept.
    Base64,
}

/// `?encoding=` of exec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecQuery {
    pub encoding: Option<Encoding>,
}

/// One line of exec's answer (`application/x-ndjson`): `started`, `stdout`/`stderr` while
/// the command runs, then `exit` or `error`; `keepalive` every 15 s while it is silent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecLine {
    /// The process started.
    Started {
        pid: u32,
    },
    /// Output, encoded as the query asked ([`Encoding`]).
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    /// The last line: the exit code (128+n for signal n).
    Exit {
        code: i32,
    },
    /// The last line: the command could not run, or the workspace went away.
    Error {
        message: String,
    },
    /// The server is still there.
    Keepalive,
    /// A kind of line this build does not know (from a newer server): skipped. Never sent.
    #[serde(other)]
    Unknown,
}

impl ExecLine {
    /// The line as sent: JSON with its keys in alphabetical order, and a newline.
    pub fn to_line(&self) -> String {
        // Keys sorted whatever order serde_json's maps keep (the build may ask for
        // insertion order): `{"data":"..","type":"stdout"}`.
        let mut s = serde_json::to_value(self)
            .map(|v| sorted(v).to_string())
            .unwrap_or_default();
        s.push('\n');
        s
    }

    /// One line of the answer (without its newline).
    pub fn parse(line: &[u8]) -> Result<ExecLine, serde_json::Error> {
        serde_json::from_slice(line)
    }
}

/// `v` with the keys of every object in alphabetical order.
fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_as_they_always_were() {
        for (line, wire) in [
            (
                ExecLine::Started { pid: 7 },
                r#"{"pid":7,"type":"started"}"#,
            ),
            (
                ExecLine::Stdout {
                    data: "aGk=".into(),
                },
                r#"{"data":"aGk=","type":"stdout"}"#,
            ),
            (
                ExecLine::Stderr { data: "x".into() },
                r#"{"data":"x","type":"stderr"}"#,
            ),
            (ExecLine::Exit { code: -1 }, r#"{"code":-1,"type":"exit"}"#),
            (
                ExecLine::Error {
                    message: "no such file".into(),
                },
                r#"{"message":"no such file","type":"error"}"#,
            ),
            (ExecLine::Keepalive, r#"{"type":"keepalive"}"#),
        ] {
            assert_eq!(line.to_line(), format!("{wire}\n"));
            assert_eq!(ExecLine::parse(wire.as_bytes()).unwrap(), line);
        }
        assert_eq!(
            ExecLine::parse(br#"{"type":"progress","percent":5}"#).unwrap(),
            ExecLine::Unknown
        );
        assert!(ExecLine::parse(br#"{"type":"exit"}"#).is_err());
    }

    #[test]
    fn requests_send_only_what_is_given() {
        let e = Exec {
            command: vec!["true".into()],
            stdin_base64: Some("".into()),
            ..Exec::default()
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"command":["true"],"env":[],"stdin_base64":""}"#
        );
        let q: ExecQuery = serde_json::from_str(r#"{"encoding":"base64"}"#).unwrap();
        assert_eq!(q.encoding, Some(Encoding::Base64));
        assert!(serde_json::from_str::<ExecQuery>(r#"{"encoding":"hex"}"#).is_err());
    }
}
