//! API errors: a status code and `{"error": "...", "hint": "..."}`, the same words the CLI
//! prints.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use claude_vm_api::ErrorBody;
use claude_vm_engine::{EngineError, LinkError};

/// A failed answer: its status and its body.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody::new(error),
        }
    }

    pub fn bad_request(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error)
    }

    pub fn hint(mut self, hint: impl Into<String>) -> ApiError {
        self.body.hint = Some(hint.into());
        self
    }

    fn with_hint(status: StatusCode, error: impl std::fmt::Display, hint: Option<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                error: error.to_string(),
                hint,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(&self.body)).into_response()
    }
}

/// The daemon's own refusals (4xx) pass through; its failures and a broken link are the
/// workspace's, not this server's: 502.
fn link_status(e: &LinkError) -> StatusCode {
    match e {
        LinkError::Api { status, .. } => StatusCode::from_u16(*status)
            .ok()
            .filter(StatusCode::is_client_error)
            .unwrap_or(StatusCode::BAD_GATEWAY),
        LinkError::Provider(p) => provider_status(p),
        LinkError::Version { .. } => StatusCode::CONFLICT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Problems with what the request asks for that the caller can fix: a bad image, an agent
/// that is not installed, a clone that failed, a broken configuration.
const CONFIGURATION_HINT: &str =
    "fix what the error names (the image, the agent, the repository, config.yaml) and try again";

fn backup_status(b: &claude_vm_engine::BackupError) -> StatusCode {
    use claude_vm_engine::BackupError as B;
    match b {
        B::UnknownSnapshot { .. } => StatusCode::NOT_FOUND,
        B::Unreachable { .. } | B::Denied { .. } | B::NoBucket { .. } => StatusCode::BAD_GATEWAY,
        B::WrongPassword | B::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
        B::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
        // The workspace or the store failed under it.
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn provider_status(p: &claude_vm_provider::ProviderError) -> StatusCode {
    use claude_vm_provider::ProviderError as P;
    match p {
        P::ImageUnavailable { .. } | P::Config(_) | P::ArchMismatch { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        P::NotFound { .. } => StatusCode::CONFLICT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        use EngineError as E;
        let status = match &e {
            E::UnknownWorkspace(_) | E::UnknownChat(_) | E::UnknownProvider(_) => {
                StatusCode::NOT_FOUND
            }
            E::UnknownTarget(_) | E::InvalidInput(_) | E::AmbiguousWorkspace { .. } => {
                StatusCode::BAD_REQUEST
            }
            E::Transition { .. }
            | E::NotRunning { .. }
            | E::ProviderInUse { .. }
            | E::HostKeyChanged { .. } => StatusCode::CONFLICT,
            E::Store(claude_vm_store::StoreError::NameTaken(_)) => StatusCode::CONFLICT,
            E::Workspace { .. }
            | E::Pack(_)
            | E::Config(_)
            | E::NoAccount(_)
            | E::Untrusted { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            E::FinalBackupFailed { .. } => StatusCode::CONFLICT,
            E::Provider(p) => provider_status(p),
            E::Link(l) => link_status(l),
            E::ProviderTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            E::Ssh(_) => StatusCode::BAD_GATEWAY,
            E::NoBackups(_) | E::DeletedWithBackups { .. } => StatusCode::NOT_FOUND,
            E::Backup(b) => backup_status(b),
            E::Interrupted => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let hint = e.hint().or_else(|| {
            (status == StatusCode::UNPROCESSABLE_ENTITY).then(|| CONFIGURATION_HINT.to_owned())
        });
        ApiError::with_hint(status, e, hint)
    }
}

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> ApiError {
        let hint = match &e {
            LinkError::Provider(p) => p.hint(),
            _ => None,
        };
        ApiError::with_hint(link_status(&e), e, hint)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        // Wrong fields or types are a 400 like any other invalid body (axum says 422);
        // a missing Content-Type stays 415 and a body over the limit 413.
        let status = match &e {
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            JsonRejection::BytesRejection(_) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, format!("invalid request body: {}", e.body_text())).hint(
            "send a JSON object (Content-Type: application/json) as described in /api/openapi.json",
        )
    }
}

/// A request body that could not be read: too large (413), or broken off (400).
pub fn body_error(e: axum::Error) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large",
            )
            .hint("JSON bodies are at most 1 MiB; upload folders as a tar stream");
        }
        source = s.source();
    }
    ApiError::bad_request(format!("cannot read the request body: {e}"))
}

/// Every error answer under `/api/` is the JSON error object, whoever made it (axum's own
/// rejections and 405s are plain text otherwise).
pub async fn api_errors_as_json(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !api || status.as_u16() < 400 || is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let error = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    } else {
        text
    };
    let mut e = ApiError::new(status, error);
    if status == StatusCode::METHOD_NOT_ALLOWED {
        e = e.hint("see /api/openapi.json for the methods of each route");
    }
    let mut out = e.into_response();
    for name in [axum::http::header::ALLOW, axum::http::header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::bad_request(format!("invalid query: {}", e.body_text()))
    }
}

impl From<claude_vm_store::StoreError> for ApiError {
    fn from(e: claude_vm_store::StoreError) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
