//! The HTTP server (hyper 1) that answers model requests from a [`Script`]:
//! Anthropic Messages (`/v1/messages`) and OpenAI Responses (`/v1/responses`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::request::{RecordedRequest, SECRET_HEADERS};
use crate::responses::{self, ResponsesAnswer};
use crate::script::{Block, Rule, Script};
use crate::sse::{self, Answer};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Models listed by `GET /v1/models`.
pub const LISTED_MODELS: &[&str] = &[
    "claude-opus-5-5",
    "claude-opus-4-5",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
];

struct ScriptState {
    script: Script,
    used: Vec<u32>,
}

struct State {
    started: Instant,
    script: Mutex<ScriptState>,
    requests: Mutex<Vec<RecordedRequest>>,
    changed: Condvar,
    seq: AtomicU64,
    log: AtomicBool,
    /// When set, model requests must carry one of these credentials.
    tokens: Mutex<Option<Vec<String>>>,
}

impl State {
    fn new(script: Script) -> Self {
        let used = vec![0; script.rules.len()];
        State {
            started: Instant::now(),
            script: Mutex::new(ScriptState { script, used }),
            requests: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            seq: AtomicU64::new(0),
            log: AtomicBool::new(false),
            tokens: Mutex::new(None),
        }
    }

    /// Picks the first rule that matches and still has budget, and spends one use of it.
    fn pick(&self, body: &Value) -> Option<(usize, Rule)> {
        let mut s = self.script.lock().unwrap();
        let ScriptState { script, used } = &mut *s;
        for (i, rule) in script.rules.iter().enumerate() {
            if rule.times.is_some_and(|t| used[i] >= t) {
                continue;
            }
            if rule.matcher.matches(body) {
                used[i] += 1;
                return Some((i, rule.clone()));
            }
        }
        None
    }

    fn record(&self, mut r: RecordedRequest) {
        r.seq = self.seq.fetch_add(1, Ordering::SeqCst);
        r.at_ms = self.started.elapsed().as_millis() as u64;
        if self.log.load(Ordering::Relaxed) {
            eprintln!(
                "[scripted-model] #{} {} {} model={} -> {}{}",
                r.seq,
                r.method,
                r.path,
                r.model().unwrap_or("-"),
                r.answered,
                match (&r.matched_rule, &r.rule_name) {
                    (Some(i), Some(n)) => format!(" (rule {i} {n:?})"),
                    (Some(i), None) => format!(" (rule {i})"),
                    _ => String::new(),
                }
            );
        }
        self.requests.lock().unwrap().push(r);
        self.changed.notify_all();
    }
}

/// A running scripted model server.
///
/// The server runs on its own thread with its own Tokio runtime, so it can
/// be used from synchronous tests as well as from inside `#[tokio::test]`.
/// Dropping the handle stops the server.
pub struct ScriptedModel {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often each rule has been used so far (`GET /_testkit/script`).
#[derive(Debug, Clone, Serialize)]
struct ScriptReport<'a> {
    script: &'a Script,
    used: &'a [u32],
}

impl ScriptedModel {
    /// Starts a server on `127.0.0.1` with an ephemeral port.
    pub fn start(script: Script) -> io::Result<Self> {
        Self::bind("127.0.0.1:0", script)
    }

    /// Starts a server on the given address (`"127.0.0.1:0"` for an ephemeral port).
    pub fn bind(addr: impl ToSocketAddrs, script: Script) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(script));
        let (stop_tx, stop_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name(format!("scripted-model-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("[scripted-model] cannot use listener: {e}");
                            return;
                        }
                    };
                    tokio::select! {
                        _ = accept_loop(listener, st) => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime cancels in-flight connections.
            })?;
        Ok(ScriptedModel {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The base URL to put in `ANTHROPIC_BASE_URL`, e.g. `http://127.0.0.1:40123`
    /// (an OpenAI client's base URL is this plus `/v1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Prints one line per request to stderr when on.
    pub fn set_logging(&self, on: bool) {
        self.state.log.store(on, Ordering::Relaxed);
    }

    /// From now on, model requests (`/v1/...`) must carry one of `tokens`, as `x-api-key`
    /// or `Authorization: Bearer`; others are answered 401 as the real APIs do. Each
    /// recorded request's `x-testkit-credential` header then tells which it carried
    /// (`x-api-key:<i>`, `bearer:<i>` for `tokens[i]`, or `none`/`wrong`).
    pub fn require_tokens(&self, tokens: &[&str]) {
        *self.state.tokens.lock().unwrap() = Some(tokens.iter().map(|t| (*t).to_owned()).collect());
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Only the `POST /v1/messages` requests.
    pub fn message_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_messages)
            .collect()
    }

    /// Only the `POST /v1/responses` requests.
    pub fn responses_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_responses)
            .collect()
    }

    /// The model requests of either API (`/v1/messages` and `/v1/responses`).
    pub fn model_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_model_request)
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state.requests.lock().unwrap().clear();
    }

    /// Replaces the script and resets every rule's `times` budget.
    pub fn set_script(&self, script: Script) {
        let mut s = self.state.script.lock().unwrap();
        s.used = vec![0; script.rules.len()];
        s.script = script;
    }

    /// How many requests each rule has answered, by rule index.
    pub fn rule_hits(&self) -> Vec<u32> {
        self.state.script.lock().unwrap().used.clone()
    }

    /// Blocks until `pred` holds for the recorded requests or `timeout` passes.
    /// Returns the requests that satisfied it, or `None` on timeout.
    /// This blocks the calling thread: from async code wrap it in
    /// `tokio::task::spawn_blocking` or `block_in_place`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[RecordedRequest]) -> bool,
    ) -> Option<Vec<RecordedRequest>> {
        let deadline = Instant::now() + timeout;
        let mut reqs = self.state.requests.lock().unwrap();
        loop {
            if pred(&reqs) {
                return Some(reqs.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            reqs = self
                .state
                .changed
                .wait_timeout(reqs, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Stops the server and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        self.stop_now();
    }
}

impl std::fmt::Debug for ScriptedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedModel")
            .field("addr", &self.addr)
            .finish()
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<State>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("[scripted-model] accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(state, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    full(status, "application/json", v.to_string())
}

fn api_error(status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    json_response(status, &sse::error_body(kind, message))
}

fn with_request_id(mut r: Response<Body>) -> Response<Body> {
    let id = sse::random_id("req_");
    r.headers_mut()
        .insert("request-id", HeaderValue::from_str(&id).unwrap());
    r
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let path_only = req.uri().path().to_string();
    let credential = {
        let tokens = state.tokens.lock().unwrap();
        tokens.as_ref().map(|tokens| {
            let header = |n: &str| {
                req.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let bearer =
                header("authorization").and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned));
            let find =
                |v: &Option<String>| v.as_ref().and_then(|v| tokens.iter().position(|t| t == v));
            match (find(&header("x-api-key")), find(&bearer)) {
                (Some(i), _) => format!("x-api-key:{i}"),
                (None, Some(i)) => format!("bearer:{i}"),
                _ if header("x-api-key").is_some() || bearer.is_some() => "wrong".to_owned(),
                _ => "none".to_owned(),
            }
        })
    };
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    if let Some(c) = &credential {
        headers.insert("x-testkit-credential".to_owned(), c.clone());
    }
    for (name, value) in req.headers() {
        let name = name.as_str().to_ascii_lowercase();
        let value = if SECRET_HEADERS.contains(&name.as_str()) {
            "<redacted>".to_string()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        headers
            .entry(name)
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value)
            })
            .or_insert(value);
    }
    let raw = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &e.to_string(),
            );
        }
    };
    let body: Value = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&raw)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()))
    };

    if let Some(rest) = path_only.strip_prefix("/_testkit/") {
        return testkit_endpoint(&state, &method, rest, &body);
    }

    let mut rec = RecordedRequest {
        seq: 0,
        at_ms: 0,
        method: method.to_string(),
        path,
        headers,
        body: body.clone(),
        matched_rule: None,
        rule_name: None,
        answered: String::new(),
    };

    let messages = path_only.ends_with("/v1/messages");
    let count_tokens = path_only.ends_with("/v1/messages/count_tokens");
    let responses = path_only.ends_with("/v1/responses");
    if path_only.starts_with("/v1/")
        && credential
            .as_deref()
            .is_some_and(|c| c == "none" || c == "wrong")
    {
        rec.answered = "401".into();
        state.record(rec);
        return if responses {
            json_response(
                StatusCode::UNAUTHORIZED,
                &responses::error_body("invalid_api_key", "Incorrect API key provided."),
            )
        } else {
            api_error(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid x-api-key",
            )
        };
    }
    if method == Method::POST && responses && !body.is_object() {
        rec.answered = "400".into();
        state.record(rec);
        return json_response(
            StatusCode::BAD_REQUEST,
            &responses::error_body(
                "invalid_request_error",
                "request body must be a JSON object",
            ),
        );
    }
    if method == Method::POST && responses {
        return responses_endpoint(&state, rec, &body, raw.len()).await;
    }
    if method == Method::POST && (messages || count_tokens) && !body.is_object() {
        rec.answered = "400".into();
        state.record(rec);
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "request body must be a JSON object",
        );
    }

    if method == Method::POST && count_tokens {
        let n = sse::estimate_tokens(raw.len());
        rec.answered = "count_tokens".into();
        state.record(rec);
        return with_request_id(json_response(StatusCode::OK, &json!({"input_tokens": n})));
    }

    if method == Method::POST && messages {
        return messages_endpoint(&state, rec, &body, raw.len()).await;
    }

    if method == Method::GET && path_only.ends_with("/v1/models") {
        rec.answered = "models".into();
        state.record(rec);
        let data: Vec<Value> = LISTED_MODELS.iter().map(|m| model_object(m)).collect();
        return json_response(
            StatusCode::OK,
            &json!({
                "data": data,
                "has_more": false,
                "first_id": LISTED_MODELS.first(),
                "last_id": LISTED_MODELS.last(),
            }),
        );
    }
    if method == Method::GET
        && let Some(id) = path_only
            .rsplit_once("/v1/models/")
            .map(|(_, id)| id.to_string())
    {
        rec.answered = "model".into();
        state.record(rec);
        return json_response(StatusCode::OK, &model_object(&id));
    }
    // Claude Code's connectivity check (sent unless
    // CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC is set).
    if (method == Method::GET || method == Method::HEAD) && path_only.ends_with("/api/hello") {
        rec.answered = "hello".into();
        state.record(rec);
        return json_response(StatusCode::OK, &json!({"message": "hello"}));
    }
    if (method == Method::GET || method == Method::HEAD) && path_only == "/" {
        rec.answered = "root".into();
        state.record(rec);
        return full(StatusCode::OK, "text/plain", "scripted-model\n");
    }

    rec.answered = "404".into();
    state.record(rec);
    api_error(
        StatusCode::NOT_FOUND,
        "not_found_error",
        &format!("scripted-model does not serve {method} {path_only}"),
    )
}

fn model_object(id: &str) -> Value {
    json!({
        "type": "model",
        "id": id,
        "display_name": id,
        "created_at": "2025-01-01T00:00:00Z",
    })
}

fn testkit_endpoint(state: &State, method: &Method, rest: &str, body: &Value) -> Response<Body> {
    match (method.as_str(), rest) {
        ("GET", "requests") => {
            let reqs = state.requests.lock().unwrap();
            json_response(StatusCode::OK, &serde_json::to_value(&*reqs).unwrap())
        }
        ("DELETE", "requests") => {
            state.requests.lock().unwrap().clear();
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        ("GET", "script") => {
            let s = state.script.lock().unwrap();
            let report = ScriptReport {
                script: &s.script,
                used: &s.used,
            };
            json_response(StatusCode::OK, &serde_json::to_value(report).unwrap())
        }
        ("PUT" | "POST", "script") => match serde_json::from_value::<Script>(body.clone()) {
            Ok(script) => {
                let mut s = state.script.lock().unwrap();
                s.used = vec![0; script.rules.len()];
                s.script = script;
                json_response(StatusCode::OK, &json!({"ok": true}))
            }
            Err(e) => api_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &e.to_string(),
            ),
        },
        ("GET", "health") => json_response(StatusCode::OK, &json!({"ok": true})),
        _ => api_error(
            StatusCode::NOT_FOUND,
            "not_found_error",
            "unknown testkit endpoint",
        ),
    }
}

/// Picks the rule that answers `body` (or builds the fallback one), notes
/// the choice in `rec` and records it; then waits the rule's `delay_ms`.
async fn choose(state: &State, mut rec: RecordedRequest, body: &Value) -> Rule {
    let picked = state.pick(body);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let (rule, fallback) = match picked {
        Some((i, rule)) => {
            rec.matched_rule = Some(i);
            rec.rule_name = rule.name.clone();
            (rule, false)
        }
        None => {
            let custom = state.script.lock().unwrap().script.fallback.clone();
            let blocks = custom.unwrap_or_else(|| match structured_output_schema(body) {
                // e.g. the session-title request: answer JSON that fits the schema.
                Some(schema) => vec![Block::Text(schema_instance(schema).to_string())],
                None => vec![Block::Text("ok".into())],
            });
            (
                Rule {
                    response: blocks,
                    ..Default::default()
                },
                true,
            )
        }
    };
    rec.answered = match (&rule.error, stream, fallback) {
        (Some(e), _, _) => e.status.to_string(),
        (None, true, false) => "stream".into(),
        (None, false, false) => "json".into(),
        (None, true, true) => "stream (fallback)".into(),
        (None, false, true) => "json (fallback)".into(),
    };
    state.record(rec);

    if let Some(ms) = rule.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    rule
}

async fn messages_endpoint(
    state: &State,
    rec: RecordedRequest,
    body: &Value,
    body_len: usize,
) -> Response<Body> {
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("claude-scripted")
        .to_string();
    let rule = choose(state, rec, body).await;

    if let Some(e) = &rule.error {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return with_request_id(api_error(status, &e.kind, &e.message));
    }

    let answer = Answer::new(
        &model,
        &rule.response,
        rule.effective_stop_reason(),
        sse::estimate_tokens(body_len),
    );
    if !stream {
        return with_request_id(json_response(StatusCode::OK, &answer.to_message()));
    }

    let chunk_delay = rule.chunk_delay_ms.map(Duration::from_millis);
    with_request_id(event_stream(answer.to_events(), chunk_delay, |name| {
        name == "content_block_delta"
    }))
}

async fn responses_endpoint(
    state: &State,
    rec: RecordedRequest,
    body: &Value,
    body_len: usize,
) -> Response<Body> {
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-scripted")
        .to_string();
    let rule = choose(state, rec, body).await;

    if let Some(e) = &rule.error {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return with_request_id(json_response(
            status,
            &responses::error_body(&e.kind, &e.message),
        ));
    }

    let answer = ResponsesAnswer::new(
        &model,
        &rule.response,
        &rule.effective_stop_reason(),
        sse::estimate_tokens(body_len),
    );
    if !stream {
        return with_request_id(json_response(StatusCode::OK, &answer.to_response()));
    }
    let chunk_delay = rule.chunk_delay_ms.map(Duration::from_millis);
    with_request_id(event_stream(answer.to_events(), chunk_delay, |name| {
        name.ends_with(".delta")
    }))
}

/// A `text/event-stream` response sending `events`, waiting `chunk_delay`
/// after each event for which `is_delta` holds.
fn event_stream(
    events: Vec<(String, Value)>,
    chunk_delay: Option<Duration>,
    is_delta: fn(&str) -> bool,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        for (name, data) in events {
            let delta = is_delta(&name);
            if tx
                .send(Bytes::from(sse::frame(&name, &data)))
                .await
                .is_err()
            {
                return;
            }
            if delta && let Some(d) = chunk_delay {
                tokio::time::sleep(d).await;
            }
        }
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    let mut r = Response::new(StreamBody::new(frames).boxed_unsync());
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The JSON schema of a structured-output request (`output_config.format`
/// of type `json_schema` in Messages, `text.format` in Responses), if any.
fn structured_output_schema(body: &Value) -> Option<&Value> {
    let format = body
        .get("output_config")
        .or_else(|| body.get("text"))?
        .get("format")?;
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return None;
    }
    format.get("schema")
}

/// A small value that satisfies a (simple) JSON schema.
pub fn schema_instance(schema: &Value) -> Value {
    if let Some(c) = schema.get("const") {
        return c.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(key)
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return schema_instance(first);
        }
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts.first().and_then(Value::as_str).unwrap_or("string"),
        _ if schema.get("properties").is_some() => "object",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut out = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    out.insert(k.clone(), schema_instance(v));
                }
            }
            Value::Object(out)
        }
        "array" => json!([]),
        "integer" | "number" => json!(0),
        "boolean" => json!(false),
        "null" => Value::Null,
        _ => json!("Scripted session"),
    }
}
