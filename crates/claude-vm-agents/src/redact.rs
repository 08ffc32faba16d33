//! Keeping an agent's secrets (the values of its configured environment) out of what the
//! daemon serves, stores and logs.

use std::collections::BTreeMap;

use claude_vm_protocol::api::EventBody;

/// What a secret is replaced with.
pub const MASK: &str = "********";

/// Whether an environment variable's name says it holds a secret.
pub fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "KEY",
        "TOKEN",
        "SECRET",
        "PASS",
        "CREDENTIAL",
        "AUTH",
        "PRIVATE",
        "COOKIE",
        "SIGNATURE",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// The secrets of one agent's environment.
///
/// Two tiers: values of variables whose names look secret ([`looks_secret`], 4 characters
/// or more) are masked in everything the agent says; any value longer than 8 characters is
/// also masked in error text (status reasons, failed tool results and turns, logs), where
/// an agent typically echoes its configuration.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret containing another is masked whole.
    secrets: Vec<String>,
    /// Other long values.
    values: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.secrets.len())
            .field("values", &self.values.len())
            .finish()
    }
}

impl Redactor {
    pub fn new(env: &BTreeMap<String, String>) -> Redactor {
        let mut secrets = Vec::new();
        let mut values = Vec::new();
        for (name, value) in env {
            if looks_secret(name) && value.chars().count() >= 4 {
                secrets.push(value.clone());
            } else if value.chars().count() > 8 {
                values.push(value.clone());
            }
        }
        let longest_first = |v: &mut Vec<String>| {
            v.sort_by_key(|s| std::cmp::Reverse(s.len()));
            v.dedup();
        };
        longest_first(&mut secrets);
        longest_first(&mut values);
        Redactor { secrets, values }
    }

    /// This redactor also masking what `other` masks (an environment replaced: what the
    /// agent saw before stays masked too).
    pub fn merged(mut self, other: Redactor) -> Redactor {
        self.secrets.extend(other.secrets);
        self.values.extend(other.values);
        for v in [&mut self.secrets, &mut self.values] {
            v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
            v.dedup();
        }
        self
    }

    fn mask(text: &str, list: &[String]) -> String {
        let mut out = text.to_owned();
        for s in list {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), MASK);
            }
        }
        out
    }

    /// `text` with secret-named values masked (for anything the agent says).
    pub fn text(&self, text: &str) -> String {
        Self::mask(text, &self.secrets)
    }

    /// `text` with every configured value that could be a secret masked (error text).
    pub fn error(&self, text: &str) -> String {
        Self::mask(&Self::mask(text, &self.secrets), &self.values)
    }

    /// An event as it may be stored and served.
    pub fn event(&self, body: EventBody) -> EventBody {
        if self.secrets.is_empty() && self.values.is_empty() {
            return body;
        }
        match body {
            EventBody::Assistant { text } => EventBody::Assistant {
                text: self.text(&text),
            },
            EventBody::ToolResult {
                id,
                output,
                is_error,
            } => EventBody::ToolResult {
                id,
                output: if is_error {
                    self.error(&output)
                } else {
                    self.text(&output)
                },
                is_error,
            },
            EventBody::TurnEnd { result, is_error } => EventBody::TurnEnd {
                result: result.map(|r| {
                    if is_error {
                        self.error(&r)
                    } else {
                        self.text(&r)
                    }
                }),
                is_error,
            },
            EventBody::Status { status, reason } => EventBody::Status {
                status,
                reason: reason.map(|r| self.error(&r)),
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_masked_by_name_and_long_values_in_errors() {
        let env: BTreeMap<String, String> = [
            ("ANTHROPIC_API_KEY", "sk-ant-12345"),
            ("GH_TOKEN", "ghp_abcd"),
            ("MODEL_URL", "http://model.internal:8080"),
            ("DEBUG", "1"),
            ("SHORT", "abc"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        let r = Redactor::new(&env);
        assert_eq!(
            r.text("key sk-ant-12345 token ghp_abcd url http://model.internal:8080 1 abc"),
            "key ******** token ******** url http://model.internal:8080 1 abc"
        );
        assert_eq!(
            r.error("failed: sk-ant-12345 at http://model.internal:8080/v1 (1)"),
            "failed: ******** at ********/v1 (1)"
        );
        let body = r.event(EventBody::Status {
            status: claude_vm_protocol::api::ConversationStatus::Failed,
            reason: Some("bad key ghp_abcd".into()),
        });
        assert!(!format!("{body:?}").contains("ghp_abcd"));
        assert!(looks_secret("OPENAI_API_KEY") && looks_secret("db_password"));
        assert!(!looks_secret("HOME") && !looks_secret("PWD"));
    }
}
