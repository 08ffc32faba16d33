//! API errors: a status code and `{"error": "...", "hint": "..."}`, the same words the CLI
//! prints.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use claude_vm_engine::{EngineError, LinkError};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error: error.into(),
            hint: None,
        }
    }

    pub fn bad_request(error: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error)
    }

    pub fn hint(mut self, hint: impl Into<String>) -> ApiError {
        self.hint = Some(hint.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(&self)).into_response()
    }
}

fn link_status(e: &LinkError) -> StatusCode {
    match e {
        LinkError::Api { status, .. } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
        }
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
            E::Transition { .. } | E::NotRunning { .. } | E::ProviderInUse { .. } => {
                StatusCode::CONFLICT
            }
            E::Store(claude_vm_store::StoreError::NameTaken(_)) => StatusCode::CONFLICT,
            E::Provider(_) => StatusCode::BAD_GATEWAY,
            E::Link(l) => link_status(l),
            E::Interrupted => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let hint = e.hint();
        ApiError {
            status,
            error: e.to_string(),
            hint,
        }
    }
}

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> ApiError {
        ApiError::new(link_status(&e), e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        ApiError::new(
            e.status(),
            format!("invalid request body: {}", e.body_text()),
        )
        .hint("send a JSON object as described in /api/openapi.json")
    }
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
