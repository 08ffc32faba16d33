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
mod web;

use std::net::SocketAddr;
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

/// The OpenAPI document of `/api/v1`, served at `/api/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Shared by every request handler.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub auth: Arc<Auth>,
    /// Ends event streams when the server shuts down.
    pub shutdown: CancellationToken,
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
        .layer(middleware::map_response(security_headers))
        .with_state(state)
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
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let home = engine.home().clone();
    let auth = Arc::new(Auth::open(&home).map_err(std::io::Error::other)?);
    let state = AppState {
        engine: engine.clone(),
        auth,
        shutdown: shutdown.clone(),
    };
    let url = format!("http://{local}");
    let info = ServerInfo {
        url,
        pid: std::process::id(),
        listen: local.to_string(),
    };
    let info_path = ServerInfo::path(&home);
    let json = serde_json::to_string_pretty(&info).unwrap_or_default();
    claude_vm_store::write_file_atomic(&info_path, json.as_bytes(), 0o600)?;
    // Keep links to running workspaces warm, so the first page load is fast.
    let warm = {
        let engine = engine.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                if let Ok((views, _)) = engine.list().await {
                    for v in views
                        .iter()
                        .filter(|v| v.status == claude_vm_core::Status::Running)
                    {
                        let _ = engine.link(&v.id).await;
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
            }
        })
    };
    let result = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown({
        let s = shutdown.clone();
        async move { s.cancelled().await }
    })
    .await;
    warm.abort();
    // Only remove the file if it is still ours (another server may have started since).
    if ServerInfo::running(&home).is_some_and(|i| i.pid == std::process::id()) {
        let _ = std::fs::remove_file(&info_path);
    }
    result
}
