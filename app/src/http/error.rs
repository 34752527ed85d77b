//! JSON errors: `{"error": "<message>", "code": "<machine code>"}` with a fitting status.
//! Bad input is a 4xx, never a 500.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::{FieldError, StoreError};

/// `Retry-After` of a 503 (database or a dependency unavailable, request timed out).
/// Defined by the queue, which stands alone, so both error types answer alike.
pub use crate::queue::UNAVAILABLE_RETRY_AFTER_S;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{message}")]
    Unprocessable {
        field: Option<&'static str>,
        message: String,
    },
    #[error("too many requests")]
    TooManyRequests { retry_after_s: u64 },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("database unavailable")]
    DatabaseUnavailable,
    #[error("request timed out")]
    Timeout,
    #[error("internal error")]
    Internal,
}

#[derive(Serialize)]
struct Body<'a> {
    error: String,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::DatabaseUnavailable | ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Unprocessable { .. } => "invalid_body",
            ApiError::TooManyRequests { .. } => "rate_limited",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::DatabaseUnavailable => "database_unavailable",
            ApiError::Timeout => "timeout",
            ApiError::Internal => "internal",
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let field = match &self {
            ApiError::Unprocessable { field, .. } => *field,
            _ => None,
        };
        let body = Body {
            error: self.to_string(),
            code: self.code(),
            field,
        };
        let mut resp = (self.status(), Json(body)).into_response();
        // A 503 is temporary by definition: say when to come back, so a client retries
        // instead of giving up (or hammering).
        let retry_after_s = match self {
            ApiError::TooManyRequests { retry_after_s } => Some(retry_after_s),
            ApiError::DatabaseUnavailable | ApiError::Timeout => Some(UNAVAILABLE_RETRY_AFTER_S),
            _ => None,
        };
        if let Some(s) = retry_after_s
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Unprocessable {
            field: Some(e.field),
            message: format!("{}: {}", e.field, e.reason),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::Conflict(m.to_string()),
            other => {
                tracing::error!(error = %other, "database call failed");
                ApiError::DatabaseUnavailable
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let text = r.body_text();
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ApiError::UnsupportedMediaType("expected `Content-Type: application/json`".into())
            }
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable {
                field: None,
                message: text,
            },
            _ => ApiError::bad_request("invalid_json", text),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request("invalid_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", r.body_text())
    }
}
