//! Test kit for claude-vm: a **scripted model server**.
//!
//! [`ScriptedModel`] is an HTTP server that speaks enough of the Anthropic
//! Messages API for the real Claude Code CLI, pointed at it with
//! `ANTHROPIC_BASE_URL`, to run whole agent turns offline: streamed text,
//! tool calls, tool results, resumed sessions. It speaks enough of the OpenAI
//! Responses API for the real Codex CLI too (see [OpenAI Responses
//! API](#openai-responses-api-codex)). Every answer comes from a [`Script`],
//! and every request is recorded for the test to inspect.
//!
//! ```no_run
//! use claude_vm_testkit::{Rule, Script, ScriptedModel};
//! use serde_json::json;
//!
//! let server = ScriptedModel::start(
//!     Script::new()
//!         .rule(Rule::last_user_contains("make the file").times(1)
//!             .text("Writing it.")
//!             .tool_use("Write", json!({"file_path": "/w/hello.txt", "content": "hi\n"})))
//!         .rule(Rule::after_tool_result_contains("hello.txt").text("Done.")),
//! ).unwrap();
//! // run: ANTHROPIC_BASE_URL={server.url()} ANTHROPIC_API_KEY=test claude -p ...
//! let seen = server.message_requests();
//! # let _ = seen;
//! ```
//!
//! The same server is available as a binary, for tests that start it from
//! outside Rust: `scripted-model --listen 127.0.0.1:0 --script FILE` prints
//! its base URL (`http://127.0.0.1:PORT`) as the first line on stdout, logs
//! one line per request on stderr (`--quiet` to silence) and runs until
//! SIGINT/SIGTERM.
//!
//! # Script format
//!
//! A script is JSON: either an object `{"rules": [...], "fallback": [...]}`
//! or just the array of rules.
//!
//! ```json
//! {
//!   "rules": [
//!     {
//!       "name": "write-file",
//!       "match": {"last_user_contains": "make the file"},
//!       "times": 1,
//!       "response": [
//!         {"text": "Writing it."},
//!         {"tool_use": {"name": "Write",
//!                       "input": {"file_path": "/work/hello.txt", "content": "hi\n"}}}
//!       ]
//!     },
//!     {
//!       "match": {"after_tool_result_contains": "hello.txt"},
//!       "delay_ms": 200,
//!       "response": [{"text": "Done."}]
//!     },
//!     {"match": {"contains": "STOP NOW"}, "response": [{"text": "Stopping."}]},
//!     {"match": "any", "response": [{"text": "I have nothing scripted for that."}]}
//!   ],
//!   "fallback": [{"text": "ok"}]
//! }
//! ```
//!
//! Each `POST /v1/messages` (and `POST /v1/responses`) is answered by the **first** rule whose `match`
//! holds and whose `times` budget is not used up (each answered request
//! uses one). Requests no rule takes get the `fallback` blocks (default
//! `[{"text": "ok"}]`; without a custom fallback, a request that asks for
//! structured JSON output via `output_config.format` gets a JSON value that
//! fits its schema instead, as Claude Code's session-title request does).
//!
//! Rule fields:
//!
//! | field | meaning |
//! | --- | --- |
//! | `match` | conditions, see below; absent or `"any"` = every agent request |
//! | `response` | content blocks: `{"text": "..."}`, `{"tool_use": {"name": "...", "input": {...}, "id": "toolu_..."?}}` (ids are generated as `toolu_01...` when absent) |
//! | `times` | how many requests the rule may answer; absent = unlimited |
//! | `delay_ms` | wait before answering |
//! | `chunk_delay_ms` | streaming only: wait between content deltas |
//! | `stop_reason` | default `tool_use` when a tool_use block is present, else `end_turn` |
//! | `error` | `{"status": 529, "type": "overloaded_error", "message": "..."}`: answer with that API error instead (note Claude Code retries 429/5xx/529) |
//! | `name` | label copied into the recorded request (`rule_name`) |
//!
//! `match` is an object; **all** conditions given must hold:
//!
//! | condition | holds when |
//! | --- | --- |
//! | `contains` | the substring occurs in the whole conversation: the text of every message of every role, tool_result contents, and `system`-role messages inside `messages` (where Claude Code puts a message the user sent mid-turn, see below). Not the top-level `system` prompt, not tool definitions. |
//! | `not_contains` | the substring occurs nowhere in that same text |
//! | `last_user_contains` | the substring occurs in the last `user`-role message (its text blocks and tool_result contents) |
//! | `after_tool_result_contains` | the last `user`-role message carries a `tool_result` block whose content contains the substring |
//! | `system_contains` | the substring occurs in the top-level `system` prompt |
//! | `model_contains` | the substring occurs in the requested `model` |
//! | `kind` | `"agent"` (default): only requests with a non-empty `tools` array; `"side"`: only requests without tools; `"all"` |
//! | `any` | `true`: no further condition (same as `{}` or `"any"`) |
//!
//! About `kind`: Claude Code's agent loop always sends its tools; its side
//! requests do not (interactive mode names the session with a tool-less
//! request that quotes the user's prompt). Restricting rules to agent
//! requests by default keeps such a request from using up a rule meant for
//! the turn; unmatched side requests get the fallback.
//!
//! # HTTP endpoints
//!
//! * `POST /v1/messages` (any prefix, any query; Claude Code sends
//!   `/v1/messages?beta=true`): scripted answer, as Server-Sent Events when
//!   the body has `"stream": true` (`message_start`, `ping`,
//!   `content_block_start`, `content_block_delta` with `text_delta` /
//!   `input_json_delta`, `content_block_stop`, `message_delta` with
//!   `stop_reason` and `usage`, `message_stop`), else one JSON message.
//! * `POST /v1/responses` (any prefix): the OpenAI Responses API, see below.
//! * `POST /v1/messages/count_tokens`: `{"input_tokens": N}` (bytes / 4).
//! * `GET /v1/models`, `GET /v1/models/{id}`: a small model list.
//! * `HEAD|GET /api/hello`: 200 (Claude Code's connectivity check).
//! * anything else: 404 with an Anthropic-style error body.
//! * `GET /_testkit/requests`: the recorded requests as a JSON array of
//!   [`RecordedRequest`]; `DELETE` forgets them.
//! * `GET /_testkit/script`: the script and how often each rule was used;
//!   `PUT /_testkit/script` replaces it (budgets reset).
//! * `GET /_testkit/health`.
//!
//! Every request except `/_testkit/...` is recorded (method, path with
//! query, headers with `x-api-key`/`authorization`/cookies redacted, JSON
//! body, matched rule) as soon as it arrives, before any `delay_ms`.
//!
//! # What Claude Code sends (2.1.330, bundled with claude-agent-sdk 0.2.187)
//!
//! * With `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1` only
//!   `POST /v1/messages?beta=true` (streaming); without it also
//!   `HEAD /api/hello` first. Interactive mode additionally sends a
//!   tool-less session-title request with structured output.
//! * A user message typed while a tool runs arrives in the **next request
//!   of the same turn**, after the `tool_result` message, as a
//!   `system`-role message: `"The user sent a new message while you were
//!   working:\n<text>\n\n..."`. Hence `contains` searches every role.
//! * Tool results come back as a `user` message with
//!   `{"type": "tool_result", "tool_use_id": "toolu_...", "content": "..."}`.
//!
//! # OpenAI Responses API (Codex)
//!
//! `POST /v1/responses` is answered from the same script. Matching reads the
//! request through [`request::normalize`], which turns a Responses body into
//! the Messages shape the matchers know: `instructions` and `developer`-role
//! input messages are the `system` prompt; `user` / `assistant` messages are
//! messages; `function_call` / `custom_tool_call` items are `tool_use` blocks
//! and `function_call_output` / `custom_tool_call_output` items `tool_result`
//! blocks, so `after_tool_result_contains` holds right after a call and
//! `contains` sees the user's messages, the answers and the tool outputs;
//! tools offered in `tools` or inside an input item make an agent request.
//!
//! The answer: a `text` block becomes a `message` output item with one
//! `output_text` part; a `tool_use` block a `function_call` item (`call_id` =
//! its `id`, or `call_...`; `arguments` = its input as JSON text), or a
//! `custom_tool_call` item when its input is a string (Codex's freeform
//! `apply_patch`). Streamed (`"stream": true`) as OpenAI sends it:
//! `response.created`, `response.in_progress`, per item
//! `response.output_item.added`, the content events
//! (`response.content_part.added`, `response.output_text.delta`...,
//! `response.output_text.done`, `response.content_part.done`, or
//! `response.function_call_arguments.delta`... / `.done`, or
//! `response.custom_tool_call_input.delta`... / `.done`),
//! `response.output_item.done`, and `response.completed` with `usage`; each
//! event carries `type` and `sequence_number`. A rule whose `stop_reason` is
//! `max_tokens` answers `response.incomplete`. Errors use OpenAI's body
//! `{"error": {"message", "type", "param", "code"}}`; a structured-output
//! request (`text.format` of type `json_schema`) falls back to JSON fitting
//! its schema. [`responses::assemble_response`] reads a stream back.
//!
//! # What Codex sends (0.163.0, PyPI `openai-codex-cli-bin`)
//!
//! * Only `POST {base_url}/responses`, streaming, with `Authorization:
//!   Bearer <key>`, when given a custom provider:
//!   `-c model_provider="testkit" -c 'model_providers.testkit={name="testkit",
//!   base_url="http://127.0.0.1:PORT/v1", env_key="OPENAI_API_KEY",
//!   wire_api="responses"}'`. No `/v1/models`. (`OPENAI_BASE_URL` is not
//!   read; the built-in provider with `openai_base_url` first tries a
//!   WebSocket `GET /v1/responses`, which this server does not serve, and
//!   sends no key from `OPENAI_API_KEY`.)
//! * With `-m gpt-5.5` (a model in its bundled catalog) the tools are plain
//!   top-level ones: `exec_command` (`{"cmd": "..."}`; an escalation asks with
//!   `"sandbox_permissions": "require_escalated"`), the freeform
//!   `apply_patch`, `write_stdin`, ... Newer default models get a JavaScript
//!   "code mode" tool instead, and unknown model names a warning.
//! * The input holds developer messages (instructions, permissions, skills),
//!   a user `<environment_context>` message, then the conversation. Tool
//!   output comes back as `function_call_output` prefixed with a header
//!   (`Chunk ID: ...\nProcess exited with code 0\n...Output:\n`). A message
//!   the user sends mid-turn follows the latest tool output as a `user`
//!   message; an interrupted turn leaves a `<turn_aborted>` user message.

pub mod request;
pub mod responses;
pub mod script;
pub mod server;
pub mod sse;

pub use request::RecordedRequest;
pub use script::{ApiError, Block, Matcher, RequestKind, Rule, Script, ToolUse};
pub use server::ScriptedModel;
