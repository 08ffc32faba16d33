//! `/api/v1`: the REST + SSE API. Every route is listed once in [`API_ROUTES`] (the test
//! suite checks it against `docs/openapi.json`) and needs credentials (`auth::require_api`).

pub(crate) mod conversations;
mod exec;
mod files;
mod workspaces;

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, delete, get, post};
use axum::{Extension, Json, Router};
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

async fn whoami(Extension(p): Extension<Principal>) -> Json<serde_json::Value> {
    let v = match p {
        Principal::Token { id, name } => {
            serde_json::json!({"kind": "token", "token_id": id, "token_name": name})
        }
        Principal::Session { .. } => serde_json::json!({"kind": "session"}),
    };
    let mut v = v;
    v["version"] = claude_vm_protocol::VERSION.into();
    Json(v)
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

/// A whole, non-negative number of seconds, written `12` or `12.0`.
pub fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let v: Option<serde_json::Number> = serde::Deserialize::deserialize(d)?;
    let Some(n) = v else { return Ok(None) };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => Ok(Some(f as u64)),
        _ => Err(D::Error::custom(format!(
            "invalid number of seconds {n}: a whole number, 0 or more"
        ))),
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
            tracing::warn!(status = e.status.as_u16(), "{}", e.error);
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

    #[test]
    fn seconds_may_be_written_as_floats() {
        #[derive(serde::Deserialize)]
        struct T {
            #[serde(default, deserialize_with = "super::whole_seconds")]
            timeout: Option<u64>,
        }
        let parse = |s: &str| serde_json::from_str::<T>(s).map(|t| t.timeout);
        assert_eq!(parse(r#"{"timeout": 1561.0}"#).unwrap(), Some(1561));
        assert_eq!(parse(r#"{"timeout": 5}"#).unwrap(), Some(5));
        assert_eq!(parse(r#"{"timeout": null}"#).unwrap(), None);
        assert_eq!(parse("{}").unwrap(), None);
        for bad in [
            r#"{"timeout": -1}"#,
            r#"{"timeout": 1.5}"#,
            r#"{"timeout": "5"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
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
