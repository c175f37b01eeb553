//! Errors as JSON: `{"error": <code>, "message": <text>, "parameter": <name>}`.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// `bad_parameter`, `not_found`, `unauthorized` or `unavailable`.
    pub error: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// The query or path parameter at fault (`bad_parameter` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

/// What a handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// A query parameter that does not parse or is out of range: 400.
    BadParameter {
        /// The parameter's name.
        name: &'static str,
        /// Why.
        message: String,
    },
    /// No such resource: 404.
    NotFound(String),
    /// Missing or wrong bearer token: 401.
    Unauthorized,
    /// The database failed or cannot be reached: 503 (the cause is logged, not sent).
    Unavailable(String),
}

impl ApiError {
    /// A 400 naming `name`.
    pub fn bad(name: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadParameter {
            name,
            message: message.into(),
        }
    }
}

impl From<collections_store::StoreError> for ApiError {
    fn from(e: collections_store::StoreError) -> Self {
        ApiError::Unavailable(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::BadParameter { name, message } => (
                StatusCode::BAD_REQUEST,
                ErrorBody {
                    error: "bad_parameter",
                    message: format!("{name}: {message}"),
                    parameter: Some(name.to_owned()),
                },
            ),
            ApiError::NotFound(message) => (
                StatusCode::NOT_FOUND,
                ErrorBody {
                    error: "not_found",
                    message,
                    parameter: None,
                },
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                ErrorBody {
                    error: "unauthorized",
                    message: "a bearer token is required (Authorization: Bearer <API_TOKEN>)"
                        .to_owned(),
                    parameter: None,
                },
            ),
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %collections_runtime::telemetry::mask_pii(&cause), "request failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorBody {
                        error: "unavailable",
                        message: "the database did not answer; retry".to_owned(),
                        parameter: None,
                    },
                )
            }
        };
        (status, Json(body)).into_response()
    }
}
