//! `/api/v1`: the REST + SSE API. Every route is listed once in [`API_ROUTES`] (the test
//! suite checks it against `docs/openapi.json`) and needs credentials (`auth::require_api`).

mod backups;
pub(crate) mod conversations;
mod exec;
mod files;
mod workspaces;

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Extension, Json, Router};
use claude_vm_api::{PrincipalKind, WhoAmI};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};

/// Every API route: method and path (axum syntax), as documented in `docs/openapi.json`.
pub const API_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/openapi.json"),
    ("GET", "/api/v1/whoami"),
    ("GET", "/api/v1/agents"),
    ("GET", "/api/v1/providers"),
    ("GET", "/api/v1/workspaces"),
    ("POST", "/api/v1/workspaces"),
    ("GET", "/api/v1/workspaces/{workspace}"),
    ("DELETE", "/api/v1/workspaces/{workspace}"),
    ("POST", "/api/v1/workspaces/{workspace}/up"),
    ("POST", "/api/v1/workspaces/{workspace}/down"),
    ("POST", "/api/v1/workspaces/{workspace}/idle-stop"),
    ("POST", "/api/v1/workspaces/{workspace}/backup"),
    ("GET", "/api/v1/backups"),
    ("POST", "/api/v1/backups/forget"),
    ("POST", "/api/v1/backups/restore"),
    ("POST", "/api/v1/backups/purge"),
    ("GET", "/api/v1/backups/export"),
    ("POST", "/api/v1/backups/import"),
    ("GET", "/api/v1/workspaces/{workspace}/diff"),
    ("GET", "/api/v1/workspaces/{workspace}/files"),
    ("GET", "/api/v1/workspaces/{workspace}/files/content"),
    ("POST", "/api/v1/workspaces/{workspace}/exec"),
    ("GET", "/api/v1/workspaces/{workspace}/conversations"),
    ("POST", "/api/v1/workspaces/{workspace}/conversations"),
    ("GET", "/api/v1/conversations"),
    ("GET", "/api/v1/conversations/{conversation}"),
    ("POST", "/api/v1/conversations/{conversation}/messages"),
    ("POST", "/api/v1/conversations/{conversation}/interrupt"),
    ("POST", "/api/v1/conversations/{conversation}/stop"),
    (
        "POST",
        "/api/v1/conversations/{conversation}/approvals/{approval}",
    ),
    ("GET", "/api/v1/conversations/{conversation}/transcript"),
    ("GET", "/api/v1/conversations/{conversation}/events"),
];

fn handler(method: &str, path: &str) -> MethodRouter<AppState> {
    use conversations as c;
    use workspaces as w;
    match (method, path) {
        ("GET", "/api/openapi.json") => get(openapi),
        ("GET", "/api/v1/whoami") => get(whoami),
        ("GET", "/api/v1/agents") => get(w::agents),
        ("GET", "/api/v1/providers") => get(w::providers),
        ("GET", "/api/v1/workspaces") => get(w::list),
        ("POST", "/api/v1/workspaces") => post(w::create),
        ("GET", "/api/v1/workspaces/{workspace}") => get(w::show),
        ("DELETE", "/api/v1/workspaces/{workspace}") => delete(w::remove),
        ("POST", "/api/v1/workspaces/{workspace}/up") => post(w::up),
        ("POST", "/api/v1/workspaces/{workspace}/down") => post(w::down),
        ("POST", "/api/v1/workspaces/{workspace}/idle-stop") => post(w::set_idle_stop),
        ("POST", "/api/v1/workspaces/{workspace}/backup") => post(w::backup),
        ("GET", "/api/v1/backups") => get(backups::list),
        ("POST", "/api/v1/backups/forget") => post(backups::forget),
        ("POST", "/api/v1/backups/restore") => post(backups::restore),
        ("POST", "/api/v1/backups/purge") => post(backups::purge),
        ("GET", "/api/v1/backups/export") => get(backups::export),
        ("POST", "/api/v1/backups/import") => post(backups::import),
        ("GET", "/api/v1/workspaces/{workspace}/diff") => get(files::diff),
        ("GET", "/api/v1/workspaces/{workspace}/files") => get(files::list),
        ("GET", "/api/v1/workspaces/{workspace}/files/content") => get(files::content),
        ("POST", "/api/v1/workspaces/{workspace}/exec") => post(exec::exec),
        ("GET", "/api/v1/workspaces/{workspace}/conversations") => get(c::list_in_workspace),
        ("POST", "/api/v1/workspaces/{workspace}/conversations") => post(c::create),
        ("GET", "/api/v1/conversations") => get(c::list),
        ("GET", "/api/v1/conversations/{conversation}") => get(c::show),
        ("POST", "/api/v1/conversations/{conversation}/messages") => post(c::send),
        ("POST", "/api/v1/conversations/{conversation}/interrupt") => post(c::interrupt),
        ("POST", "/api/v1/conversations/{conversation}/stop") => post(c::stop),
        ("POST", "/api/v1/conversations/{conversation}/approvals/{approval}") => post(c::decide),
        ("GET", "/api/v1/conversations/{conversation}/transcript") => get(c::transcript),
        ("GET", "/api/v1/conversations/{conversation}/events") => get(c::events),
        other => unreachable!("API route {other:?} has no handler"),
    }
}

pub fn router() -> Router<AppState> {
    let mut r = Router::new();
    for (method, path) in API_ROUTES {
        r = r.route(path, handler(method, path));
    }
    r
}

async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        crate::OPENAPI,
    )
}

async fn whoami(Extension(p): Extension<Principal>) -> Json<WhoAmI> {
    let (kind, token_id, token_name) = match p {
        Principal::Token { id, name } => (PrincipalKind::Token, Some(id), Some(name)),
        Principal::Session { .. } => (PrincipalKind::Session, None, None),
    };
    Json(WhoAmI {
        kind,
        token_id,
        token_name,
        version: claude_vm_protocol::VERSION.to_owned(),
    })
}

/// What the engine answered (a `WorkspaceView`, a `ChatView`, ...) as the API's type of the
/// same document, its times and statuses read on the way (the tests below hold the two to
/// the same JSON). One that does not read is this server's failure, never a quietly changed
/// answer.
pub fn typed<T: DeserializeOwned>(view: &impl serde::Serialize) -> ApiResult<T> {
    serde_json::to_value(view)
        .and_then(serde_json::from_value)
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "cannot answer with the engine's {}: {e}",
                    std::any::type_name::<T>().rsplit("::").next().unwrap_or("")
                ),
            )
        })
}

/// A JSON body whose errors are API errors (400 with a message, never a bare 422).
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(ApiError::from(e)),
        }
    }
}

/// An optional JSON body: empty means the defaults.
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::to_bytes(req.into_body(), 1024 * 1024)
            .await
            .map_err(crate::error::body_error)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalJson)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// Run a use case to its end even if the client goes away: a half-done `up` or `down`
/// must finish (or clean up) rather than be dropped mid-step.
pub async fn detached<T: Send + 'static>(
    f: impl Future<Output = ApiResult<T>> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(async move {
        let result = f.await;
        // The client may be gone: the log is where a failure is seen then.
        if let Err(e) = &result {
            tracing::warn!(status = e.status.as_u16(), "{}", e.body.error);
        }
        result
    })
    .await
    .unwrap_or_else(|e| {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request failed: {e}"),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::API_ROUTES;

    /// The engine's views and the API's types are the same documents, to the byte.
    #[test]
    fn engine_views_answer_as_the_api_types_unchanged() {
        use claude_vm_engine::{ChatView, ProviderView, UpOutcome, WorkspaceView};
        fn same<T: serde::de::DeserializeOwned + serde::Serialize>(view: &impl serde::Serialize) {
            let typed: T = super::typed(view).unwrap();
            assert_eq!(
                serde_json::to_string(&typed).unwrap(),
                serde_json::to_string(view).unwrap()
            );
        }
        let w = WorkspaceView {
            id: "0123456789ab".into(),
            name: "bold-fire-1".into(),
            status: claude_vm_core::Status::Running,
            status_reason: Some("why".into()),
            provider: "docker".into(),
            source: claude_vm_core::source::Source::Path("/home/me/p".into()),
            project: "p".into(),
            project_dir: "/workspace/p".into(),
            image: "debian".into(),
            branch: None,
            created_at: "2025-01-02T03:04:05Z".into(),
            updated_at: "2025-01-02T03:04:05Z".into(),
            last_activity: Some("2025-01-02T03:04:05.123456789Z".into()),
            last_backup: Some("2025-01-02T03:04:06Z".into()),
            backup_error: Some("cannot reach the backup repository".into()),
            idle_since: Some("2025-01-02T03:04:07Z".into()),
            ports: vec!["3000 (web)".into(), "db:5432".into()],
            machine: Some(claude_vm_provider::MachineInfo {
                id: "cvm-0123456789ab".into(),
                state: "Running".into(),
            }),
        };
        same::<claude_vm_api::Workspace>(&w);
        same::<claude_vm_api::UpOutcome>(&UpOutcome::AlreadyRunning(w.clone()));
        let c = ChatView {
            id: "c1".into(),
            workspace: "bold-fire-1".into(),
            workspace_id: "0123456789ab".into(),
            agent: "claude".into(),
            title: None,
            status: "waiting_for_approval".into(),
            status_reason: None,
            queued: 2,
            live: false,
            created_at: "2025-01-02T03:04:05.5Z".into(),
            updated_at: "2025-01-02T03:04:06Z".into(),
            agent_version: Some("2.1.330 (Claude Code)".into()),
        };
        same::<Vec<claude_vm_api::Chat>>(&vec![c.clone()]);
        let p = ProviderView {
            name: "docker".into(),
            kind: claude_vm_core::provider::ProviderKind::Docker,
            default: true,
            options: [("host".to_owned(), "unix:///x".to_owned())].into(),
            workspaces: 1,
            created_at: "2025-01-02T03:04:05Z".into(),
        };
        same::<claude_vm_api::Provider>(&p);
        let snap = claude_vm_engine::SnapshotInfo {
            id: "ab".repeat(32),
            short_id: "abababab".into(),
            time: "2025-01-02T03:04:05.123456789Z".into(),
            workspace_id: Some("0123456789ab".into()),
            workspace_name: Some("bold-fire-1".into()),
            provider: Some("docker".into()),
            source: Some("/home/me/p".into()),
            version: Some("0.1.0".into()),
            image: Some("debian".into()),
            tags: vec!["claude-vm".into()],
            bytes_added: 1,
            files_changed: 2,
            files_new: 3,
            files_unmodified: 4,
            total_bytes: 5,
            total_files: 6,
        };
        same::<Vec<claude_vm_api::Snapshot>>(&vec![snap]);
        // What does not read is an error, not another answer.
        let bad = ChatView {
            status: "napping".into(),
            ..c
        };
        let e = super::typed::<claude_vm_api::Chat>(&bad).unwrap_err();
        assert_eq!(e.status, 500);
        assert!(e.body.error.contains("Chat"), "{}", e.body.error);
    }

    /// The route table and the checked-in OpenAPI document describe the same API.
    #[test]
    fn routes_match_the_openapi_document() {
        let doc: serde_json::Value = serde_json::from_str(crate::OPENAPI).unwrap();
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, _) in item.as_object().unwrap() {
                if method != "parameters" {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut routed: Vec<(String, String)> = API_ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        documented.sort();
        routed.sort();
        assert_eq!(routed, documented, "update scripts/openapi.py and run it");
        for (m, p) in API_ROUTES {
            let _ = super::handler(m, p);
        }
    }
}
