//! The script: ordered rules that decide how each model request
//! (`POST /v1/messages` or `POST /v1/responses`) is answered.
//!
//! See the crate documentation for the JSON format.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::request;

/// A whole script: the ordered rules plus the answer for requests no rule matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Script {
    /// Rules, tried in order for every `POST /v1/messages` and `POST /v1/responses`.
    pub rules: Vec<Rule>,
    /// Blocks answered when no rule matches. `None` means `[{"text": "ok"}]`,
    /// or for a structured-output request a JSON text fitting its schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Vec<Block>>,
}

impl<'de> Deserialize<'de> for Script {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            #[serde(default)]
            rules: Vec<Rule>,
            #[serde(default)]
            fallback: Option<Vec<Block>>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Rules(Vec<Rule>),
            Full(Full),
        }
        // Parse via `Value` first so that errors in a rule are reported
        // precisely instead of as "did not match any variant".
        let v = Value::deserialize(d)?;
        let repr = if v.is_array() {
            Repr::Rules(serde_json::from_value(v).map_err(serde::de::Error::custom)?)
        } else {
            Repr::Full(serde_json::from_value(v).map_err(serde::de::Error::custom)?)
        };
        Ok(match repr {
            Repr::Rules(rules) => Script {
                rules,
                fallback: None,
            },
            Repr::Full(f) => Script {
                rules: f.rules,
                fallback: f.fallback,
            },
        })
    }
}

impl Script {
    /// An empty script: every request gets the fallback answer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a script from JSON text.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        Ok(serde_json::from_str(text)?)
    }

    /// Reads and parses a script file.
    pub fn from_file(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading script {}: {e}", path.display()))?;
        Self::from_json(&text)
            .map_err(|e| anyhow::anyhow!("parsing script {}: {e}", path.display()))
    }

    /// Appends a rule (builder style).
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Sets the fallback answer (builder style).
    pub fn fallback(mut self, blocks: Vec<Block>) -> Self {
        self.fallback = Some(blocks);
        self
    }

    /// Serializes the script to its JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("script serializes")
    }
}

/// One rule: when `matcher` matches (and `times` is not used up), answer with `response`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Optional label, copied into recorded requests that this rule answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions on the request; all given ones must hold. Absent = matches everything.
    #[serde(default, rename = "match")]
    pub matcher: Matcher,
    /// How many requests this rule may answer; `None` = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// Wait this long before answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Streaming only: wait this long between content deltas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_delay_ms: Option<u64>,
    /// Overrides the stop reason (default `tool_use` if a tool_use block is present, else `end_turn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// Content blocks of the answer.
    #[serde(default)]
    pub response: Vec<Block>,
    /// Answer with an API error instead of `response`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl Rule {
    /// A rule with the given matcher and an empty response.
    pub fn new(matcher: Matcher) -> Self {
        Rule {
            matcher,
            ..Default::default()
        }
    }
    /// Matches every request.
    pub fn any() -> Self {
        Self::new(Matcher::any())
    }
    /// Matches when `needle` occurs anywhere in the request's conversation.
    pub fn contains(needle: impl Into<String>) -> Self {
        Self::new(Matcher {
            contains: Some(needle.into()),
            ..Default::default()
        })
    }
    /// Matches when the last user message contains `needle`.
    pub fn last_user_contains(needle: impl Into<String>) -> Self {
        Self::new(Matcher {
            last_user_contains: Some(needle.into()),
            ..Default::default()
        })
    }
    /// Matches when the last user message carries a tool_result containing `needle`.
    pub fn after_tool_result_contains(needle: impl Into<String>) -> Self {
        Self::new(Matcher {
            after_tool_result_contains: Some(needle.into()),
            ..Default::default()
        })
    }
    /// Appends a text block.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.response.push(Block::Text(text.into()));
        self
    }
    /// Appends a tool_use block.
    pub fn tool_use(mut self, name: impl Into<String>, input: Value) -> Self {
        self.response.push(Block::ToolUse(ToolUse {
            name: name.into(),
            input,
            id: None,
        }));
        self
    }
    /// Limits how many requests this rule answers.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }
    /// Waits before answering.
    pub fn delay_ms(mut self, ms: u64) -> Self {
        self.delay_ms = Some(ms);
        self
    }
    /// Streaming only: waits between content deltas.
    pub fn chunk_delay_ms(mut self, ms: u64) -> Self {
        self.chunk_delay_ms = Some(ms);
        self
    }
    /// Sets the stop reason.
    pub fn stop_reason(mut self, reason: impl Into<String>) -> Self {
        self.stop_reason = Some(reason.into());
        self
    }
    /// Sets the label.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Answers with an HTTP error.
    pub fn error(
        mut self,
        status: u16,
        kind: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        self.error = Some(ApiError {
            status,
            kind: kind.into(),
            message: message.into(),
        });
        self
    }
    /// Adds a further condition: the request's model name contains `needle`.
    pub fn model_contains(mut self, needle: impl Into<String>) -> Self {
        self.matcher.model_contains = Some(needle.into());
        self
    }
    /// Sets which requests the rule considers.
    pub fn kind(mut self, kind: RequestKind) -> Self {
        self.matcher.kind = kind;
        self
    }
    /// Adds a further condition: the conversation does not contain `needle`.
    pub fn not_contains(mut self, needle: impl Into<String>) -> Self {
        self.matcher.not_contains = Some(needle.into());
        self
    }

    /// The stop reason this rule answers with.
    pub fn effective_stop_reason(&self) -> String {
        if let Some(r) = &self.stop_reason {
            return r.clone();
        }
        default_stop_reason(&self.response)
    }
}

pub(crate) fn default_stop_reason(blocks: &[Block]) -> String {
    if blocks.iter().any(|b| matches!(b, Block::ToolUse(_))) {
        "tool_use".into()
    } else {
        "end_turn".into()
    }
}

/// Conditions on a request. Every field that is set must hold; none set = match all.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Matcher {
    /// Substring of the whole conversation: the text of every message of
    /// every role (including `system`-role messages inside `messages`),
    /// with tool_result contents. Not the top-level `system` prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// Negation of `contains`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_contains: Option<String>,
    /// Substring of the last `user`-role message (text and tool_result contents).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_user_contains: Option<String>,
    /// The last `user`-role message has a tool_result block whose content contains this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_tool_result_contains: Option<String>,
    /// Substring of the top-level `system` prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_contains: Option<String>,
    /// Substring of the requested model name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_contains: Option<String>,
    /// Which requests the rule considers at all (default [`RequestKind::Agent`]).
    #[serde(skip_serializing_if = "RequestKind::is_default")]
    pub kind: RequestKind,
    /// Explicit "match everything" (`{"any": true}` or the string `"any"`);
    /// still restricted by `kind`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub any: bool,
}

/// Which requests a rule considers.
///
/// Claude Code's agent loop always offers tools; its side requests (session
/// titles in interactive mode, ...) send `"tools": []` or none. Without this
/// distinction a side request that quotes the user's prompt (the title
/// request does) would match and use up a rule meant for the agent turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// Requests with a non-empty `tools` array (the default).
    #[default]
    Agent,
    /// Requests without tools.
    Side,
    /// Every request.
    All,
}

impl RequestKind {
    fn is_default(&self) -> bool {
        *self == RequestKind::Agent
    }
    /// Whether a request body is of this kind.
    pub fn accepts(&self, body: &Value) -> bool {
        match self {
            RequestKind::All => true,
            RequestKind::Agent => request::is_agent_request(body),
            RequestKind::Side => !request::is_agent_request(body),
        }
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            contains: Option<String>,
            not_contains: Option<String>,
            last_user_contains: Option<String>,
            after_tool_result_contains: Option<String>,
            system_contains: Option<String>,
            model_contains: Option<String>,
            #[serde(default)]
            kind: RequestKind,
            #[serde(default)]
            any: bool,
        }
        let v = Value::deserialize(d)?;
        match v {
            Value::String(s) if s == "any" => Ok(Matcher::any()),
            Value::Null => Ok(Matcher::any()),
            Value::Object(_) => {
                let f: Fields = serde_json::from_value(v).map_err(serde::de::Error::custom)?;
                Ok(Matcher {
                    contains: f.contains,
                    not_contains: f.not_contains,
                    last_user_contains: f.last_user_contains,
                    after_tool_result_contains: f.after_tool_result_contains,
                    system_contains: f.system_contains,
                    model_contains: f.model_contains,
                    kind: f.kind,
                    any: f.any,
                })
            }
            other => Err(serde::de::Error::custom(format!(
                "a matcher is \"any\" or an object, not {other}"
            ))),
        }
    }
}

impl Matcher {
    /// Matches every request.
    pub fn any() -> Self {
        Matcher {
            any: true,
            ..Default::default()
        }
    }

    /// Whether this matcher accepts the given request body: a `/v1/messages`
    /// body, or a `/v1/responses` body seen through [`request::normalize`].
    pub fn matches(&self, body: &Value) -> bool {
        let body = &*request::normalize(body);
        if !self.kind.accepts(body) {
            return false;
        }
        if let Some(n) = &self.contains
            && !request::conversation_text(body).contains(n.as_str())
        {
            return false;
        }
        if let Some(n) = &self.not_contains
            && request::conversation_text(body).contains(n.as_str())
        {
            return false;
        }
        if let Some(n) = &self.last_user_contains {
            match request::last_user_message(body) {
                Some(m) if request::message_text(m).contains(n.as_str()) => {}
                _ => return false,
            }
        }
        if let Some(n) = &self.after_tool_result_contains {
            let hit = request::last_user_message(body)
                .map(|m| {
                    request::tool_results(m)
                        .iter()
                        .any(|r| r.contains(n.as_str()))
                })
                .unwrap_or(false);
            if !hit {
                return false;
            }
        }
        if let Some(n) = &self.system_contains
            && !request::system_text(body).contains(n.as_str())
        {
            return false;
        }
        if let Some(n) = &self.model_contains {
            let model = body.get("model").and_then(Value::as_str).unwrap_or("");
            if !model.contains(n.as_str()) {
                return false;
            }
        }
        true
    }
}

/// One content block of a scripted answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Block {
    /// `{"text": "..."}`
    Text(String),
    /// `{"tool_use": {"name": "...", "input": {...}}}`
    ToolUse(ToolUse),
}

/// A scripted tool call.
///
/// In a Responses answer it becomes a `function_call` item (`arguments` is
/// `input` as JSON text), or a `custom_tool_call` item when `input` is a
/// string (freeform tools such as Codex's `apply_patch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolUse {
    /// Tool name as the agent knows it (Claude Code: `Write`, `Bash`, ...;
    /// Codex: `exec_command`, `apply_patch`, ...).
    pub name: String,
    /// Tool input object (a string for a freeform custom tool).
    #[serde(default = "empty_object")]
    pub input: Value,
    /// Fixed tool_use id (the `call_id` of a Responses call); generated
    /// (`toolu_...`, `call_...`) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// A scripted API error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    /// HTTP status, e.g. 529 or 400.
    pub status: u16,
    /// Anthropic error type, e.g. `overloaded_error`, `invalid_request_error`.
    #[serde(rename = "type", default = "default_error_type")]
    pub kind: String,
    /// Error message.
    #[serde(default)]
    pub message: String,
}

fn default_error_type() -> String {
    "api_error".into()
}
