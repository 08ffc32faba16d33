//! What a provider's `exec.status` printed, read the way DevPod reads it.
//!
//! The output is trimmed of surrounding white space and compared without regard to case
//! (Unicode's simple upper-casing, one character at a time, as Go's `strings.ToUpper`
//! does): `Running`, `running\n` and `  NOTFOUND ` are statuses, `Not Found` is not. The
//! output is untrusted text: an error quotes it bounded and with control characters
//! escaped, so it cannot flood or rewrite the user's terminal.

use std::fmt;

/// The state of a provider's machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MachineStatus {
    /// Up and reachable through `exec.command`.
    Running,
    /// Changing state (starting, stopping, ...): ask again later.
    Busy,
    /// Exists but is stopped: `exec.start` brings it back.
    Stopped,
    /// Does not exist: `exec.create` makes it.
    NotFound,
}

impl fmt::Display for MachineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MachineStatus::Running => "Running",
            MachineStatus::Busy => "Busy",
            MachineStatus::Stopped => "Stopped",
            MachineStatus::NotFound => "NotFound",
        })
    }
}

/// `exec.status` printed something else than a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the provider's exec.status printed \"{printed}\", but it must print one of Running, Busy, \
     Stopped or NotFound; check the provider's status command"
)]
pub struct StatusError {
    /// What was printed: trimmed, escaped, and cut to 200 characters.
    pub printed: String,
}

/// At most this many characters of the output are quoted in an error.
const QUOTED_CHARS: usize = 200;

/// Reads the output of `exec.status`.
pub fn parse_status(stdout: &str) -> Result<MachineStatus, StatusError> {
    let trimmed = stdout.trim();
    let upper: String = trimmed.chars().map(simple_uppercase).collect();
    match upper.as_str() {
        "RUNNING" => Ok(MachineStatus::Running),
        "BUSY" => Ok(MachineStatus::Busy),
        "STOPPED" => Ok(MachineStatus::Stopped),
        "NOTFOUND" => Ok(MachineStatus::NotFound),
        _ => Err(StatusError {
            printed: quote(trimmed),
        }),
    }
}

/// The upper case of `c` when it is one character (`ß` stays `ß`, `ſ` becomes `S`).
fn simple_uppercase(c: char) -> char {
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(one), None) => one,
        _ => c,
    }
}

/// `text` safe to print: control and bidirectional-formatting characters escaped,
/// quotes and backslashes escaped, cut to `QUOTED_CHARS` characters with a note of the
/// rest.
fn quote(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().take(QUOTED_CHARS) {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_invisible_format(c) => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    let total = text.chars().count();
    if total > QUOTED_CHARS {
        out.push_str(&format!("... ({} more characters)", total - QUOTED_CHARS));
    }
    out
}

/// Characters that reorder or hide text on a terminal.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_statuses() {
        use MachineStatus::*;
        let cases = [
            ("Running", Running),
            ("running\n", Running),
            ("  RUNNING \r\n", Running),
            ("Busy", Busy),
            ("busy", Busy),
            ("Stopped\n", Stopped),
            ("sToPpEd", Stopped),
            ("NotFound", NotFound),
            ("notfound", NotFound),
            ("\t\nNOTFOUND\u{a0}", NotFound),
            // Go's simple upper-casing maps the long s and the dotless i to ASCII.
            ("\u{17f}topped", Stopped),
            ("runn\u{131}ng", Running),
        ];
        for (printed, want) in cases {
            assert_eq!(parse_status(printed), Ok(want), "parse_status({printed:?})");
        }
    }

    #[test]
    fn refuses_anything_else() {
        let cases = [
            ("", ""),
            ("Not Found", "Not Found"),
            ("Running\nStopped", "Running\\nStopped"),
            ("RUNNING.", "RUNNING."),
            // A ligature upper-cases to two letters; Go keeps it, so must we.
            ("\u{fb06}opped", "\u{fb06}opped"),
            ("not\u{fb01}ound", "not\u{fb01}ound"),
            ("\x1b]0;owned\x07\x1b[2J", "\\u{1b}]0;owned\\u{7}\\u{1b}[2J"),
            (
                "say \"hi\" \\ \u{202e}txt",
                "say \\\"hi\\\" \\\\ \\u{202e}txt",
            ),
        ];
        for (printed, quoted) in cases {
            assert_eq!(
                parse_status(printed),
                Err(StatusError {
                    printed: quoted.to_string()
                }),
                "parse_status({printed:?})"
            );
        }
    }

    #[test]
    fn bounds_what_it_quotes() {
        let flood = "x".repeat(10_000);
        let err = parse_status(&flood).unwrap_err();
        assert_eq!(
            err.printed,
            format!("{}... (9800 more characters)", "x".repeat(200))
        );
        assert_eq!(
            parse_status("ok").unwrap_err().to_string(),
            "the provider's exec.status printed \"ok\", but it must print one of Running, Busy, \
             Stopped or NotFound; check the provider's status command"
        );
    }

    #[test]
    fn displays_as_devpod_spells_it() {
        let all = [
            MachineStatus::Running,
            MachineStatus::Busy,
            MachineStatus::Stopped,
            MachineStatus::NotFound,
        ];
        for status in all {
            assert_eq!(parse_status(&status.to_string()), Ok(status));
        }
        assert_eq!(MachineStatus::NotFound.to_string(), "NotFound");
    }
}
