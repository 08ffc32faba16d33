//! The self-hosted control plane: `claude-vm server`.
//!
//! One process holds an [`Engine`] (the same use cases the CLI runs) and keeps the links to
//! running workspaces open; it serves
//!
//! - `/api/v1/...`: REST + server-sent events, described by `/api/openapi.json`
//!   (`docs/openapi.json` in the repository), for the CLI in remote mode and scripts;
//! - `/`, `/w/...`, `/c/...`: server-rendered pages for phones and desktops (`web`), with
//!   a little plain JavaScript and assets embedded in the binary;
//! - `/login`, `/logout`: the only routes usable without credentials.
//!
//! Every other route needs a bearer token or a browser session ([`auth`]). Agents run in
//! the workspaces, not here: stopping or restarting the server never stops one.

mod api;
pub mod auth;
mod error;
pub mod net;
mod web;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use claude_vm_engine::{CancellationToken, Engine};
use claude_vm_store::Home;
use serde::{Deserialize, Serialize};

pub use api::API_ROUTES;
pub use auth::Auth;
pub use error::ApiError;
pub use net::{Limits, Origin};

/// The OpenAPI document of `/api/v1`, served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Shared by every request handler.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub auth: Arc<Auth>,
    /// Ends event streams when the server shuts down.
    pub shutdown: CancellationToken,
    /// The names and origins this server answers to.
    pub hosts: Arc<net::HostPolicy>,
}

/// How `claude-vm server` is reached and bounded.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// URLs the server is also reached at, through a reverse proxy
    /// (`https://cvm.example.com`): their names are accepted in `Host`, their origins in
    /// `Origin`.
    pub public_urls: Vec<Origin>,
    pub limits: Limits,
    /// How often running workspaces are checked for a due backup (default 30 s).
    pub backup_tick: Option<Duration>,
    /// How often running workspaces are looked for (to keep links warm and follow their
    /// idle timers) and held messages are retried (default 60 s).
    pub warm_tick: Option<Duration>,
}

/// A `--public-url` value: an http(s) URL with a host.
pub fn parse_public_url(url: &str) -> Result<Origin, String> {
    Origin::parse(url.trim()).ok_or_else(|| {
        format!(
            "invalid public URL {url:?}; give http(s)://HOST[:PORT], e.g. https://cvm.example.com"
        )
    })
}

/// `$CLAUDE_VM_HOME/server.json`: how `claude-vm web` finds a running server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    pub url: String,
    pub pid: u32,
    pub listen: String,
}

impl ServerInfo {
    pub fn path(home: &Home) -> PathBuf {
        home.root().join("server.json")
    }

    /// The recorded server, if its process is alive.
    pub fn running(home: &Home) -> Option<ServerInfo> {
        let text = std::fs::read_to_string(Self::path(home)).ok()?;
        let info: ServerInfo = serde_json::from_str(&text).ok()?;
        claude_vm_engine::pid_alive(Some(info.pid)).then_some(info)
    }
}

/// The whole application: API, pages, login.
pub fn app(state: AppState) -> Router {
    let api = api::router()
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_api,
        ))
        // Uploads (a project folder as a tar stream) are bounded by the route itself.
        .layer(DefaultBodyLimit::max(4 * 1024 * 1024));
    let pages = web::pages().route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_page,
    ));
    Router::new()
        .merge(api)
        .merge(pages)
        .merge(web::public())
        .fallback(web::not_found)
        .layer(middleware::from_fn(error::api_errors_as_json))
        .layer(middleware::from_fn_with_state(state.clone(), check_host))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

/// Only requests that name this server: a page served under another name (DNS rebinding)
/// must not reach the API with the browser as a proxy.
async fn check_host(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    match host {
        Some(h) if state.hosts.host_allowed(h) => next.run(req).await,
        Some(h) => ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!("this server does not answer to the name {h:?}"),
        )
        .hint(format!(
            "use one of: {}; a server reached through a proxy or under another name needs `claude-vm server --public-url <its URL>`",
            state.hosts.describe()
        ))
        .into_response(),
        None => ApiError::bad_request("the request has no Host header").into_response(),
    }
}

/// On every answer: only this server's own scripts and styles, no framing, no sniffing, and
/// no `Referer` (a login link's code must not leak to another site).
async fn security_headers(mut res: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

/// Serve until `shutdown` is cancelled. Writes `server.json` while running.
pub async fn serve(
    engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let home = engine.home().clone();
    let auth = Arc::new(Auth::open(&home).map_err(std::io::Error::other)?);
    let state = AppState {
        engine: engine.clone(),
        auth,
        shutdown: shutdown.clone(),
        hosts: Arc::new(net::HostPolicy::new(
            local.ip(),
            options.public_urls.clone(),
        )),
    };
    let url = format!("http://{local}");
    // Links in notifications: the first public URL (how a phone reaches this server), else
    // the listen address.
    engine.set_link_base(&match options.public_urls.first() {
        Some(o) => match o.port {
            Some(p) => format!("{}://{}:{p}", o.scheme, o.host),
            None => format!("{}://{}", o.scheme, o.host),
        },
        None => url.clone(),
    });
    let info = ServerInfo {
        url,
        pid: std::process::id(),
        listen: local.to_string(),
    };
    let info_path = ServerInfo::path(&home);
    let json = serde_json::to_string_pretty(&info).unwrap_or_default();
    claude_vm_store::write_file_atomic(&info_path, json.as_bytes(), 0o600)?;
    // Keep links to running workspaces warm, so the first page load is fast.
    let options_warm = options.warm_tick.unwrap_or(Duration::from_secs(60));
    let warm = {
        let engine = engine.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            // One follower of each running workspace's idle timer (it takes the final
            // backup before the workspace stops itself).
            let mut followers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
            // And of its conversations, for notifications.
            let mut readers: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
            loop {
                followers.retain(|_, t| !t.is_finished());
                readers.retain(|_, t| !t.is_finished());
                let listed = engine.list().await;
                if let Err(e) = &listed {
                    tracing::warn!("cannot list the workspaces: {e}");
                }
                if let Ok((views, _)) = listed {
                    for v in views
                        .iter()
                        .filter(|v| v.status == claude_vm_core::Status::Running)
                    {
                        let _ = engine.link(&v.id).await;
                        if !readers.contains_key(&v.id)
                            && !engine.config().notify.channels.is_empty()
                        {
                            let engine = engine.clone();
                            let id = v.id.clone();
                            readers.insert(
                                v.id.clone(),
                                tokio::spawn(async move {
                                    if let Err(e) = engine.follow_conversations(id.clone()).await {
                                        tracing::debug!(workspace = %id, "conversation reader ended: {e}");
                                    }
                                }),
                            );
                        }
                        if !followers.contains_key(&v.id) {
                            let engine = engine.clone();
                            let id = v.id.clone();
                            followers.insert(
                                v.id.clone(),
                                tokio::spawn(async move {
                                    if let Err(e) = engine.follow_idle(&id).await {
                                        tracing::debug!(workspace = %id, "idle follower ended: {e}");
                                    }
                                }),
                            );
                        }
                    }
                }
                // Messages held for workspaces that could not be started before.
                for ws in engine.workspaces_with_held().unwrap_or_default() {
                    if let Err(e) = engine.deliver_held(&ws).await {
                        tracing::warn!(workspace = %ws, "held messages not delivered yet: {e}");
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(options_warm) => {}
                }
            }
            for (_, t) in followers.into_iter().chain(readers) {
                t.abort();
            }
        })
    };
    // Continuous backups of every running workspace this server manages.
    let tick = options.backup_tick.unwrap_or(Duration::from_secs(30));
    let backups = {
        let engine = engine.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(tick) => {}
                }
                for r in engine.backup_round().await {
                    match r.outcome {
                        Ok(id) => {
                            tracing::info!(workspace = %r.workspace, snapshot = %id, "backed up")
                        }
                        Err(e) => tracing::warn!(workspace = %r.workspace, "backup failed: {e}"),
                    }
                }
            }
        })
    };
    // Notifications leave as soon as they are queued, and are retried from the outbox
    // (nothing to do, and no database read every second, without channels).
    let notifying = !engine.config().notify.channels.is_empty();
    let sender = {
        let engine = engine.clone();
        let stop = shutdown.clone();
        let kick = engine.notify_wakeup();
        tokio::spawn(async move {
            let mut pruned = std::time::Instant::now() - Duration::from_secs(7200);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = kick.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if !notifying {
                    continue;
                }
                engine.notify_deliver_due().await;
                if pruned.elapsed() > Duration::from_secs(3600) {
                    pruned = std::time::Instant::now();
                    engine.notify_prune();
                }
            }
        })
    };
    let result =
        net::serve_connections(listener, app(state), options.limits, shutdown.clone()).await;
    sender.abort();
    warm.abort();
    backups.abort();
    // Only remove the file if it is still ours (another server may have started since).
    if ServerInfo::running(&home).is_some_and(|i| i.pid == std::process::id()) {
        let _ = std::fs::remove_file(&info_path);
    }
    result
}
