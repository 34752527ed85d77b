//! JSON errors of the queue, task and order routes.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::QueueError;

/// `Retry-After` of a 503: how long a client waits before sending the request again.
pub const UNAVAILABLE_RETRY_AFTER_S: u64 = 1;

/// An HTTP error answered as `{"error": "...", "status": N}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, what)
    }

    pub fn unprocessable(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, msg)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "status": self.status.as_u16() });
        let mut resp = (self.status, Json(body)).into_response();
        // Queue storage down is temporary: tell the client when to send the request again
        // (with its idempotency key, so a retry never runs a job twice).
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(UNAVAILABLE_RETRY_AFTER_S),
            );
        }
        resp
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Invalid(m) => ApiError::unprocessable(m),
            QueueError::Redis(e) => {
                tracing::warn!(error = %e, "redis error in queue route");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue storage unavailable")
            }
            other => {
                tracing::error!(error = %other, "queue route failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
            }
        }
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        QueueError::Redis(e).into()
    }
}

impl From<JsonRejection> for ApiError {
    /// Malformed JSON is 400; well-formed JSON of the wrong shape is 422.
    fn from(r: JsonRejection) -> Self {
        let status = match &r {
            JsonRejection::JsonDataError(_) => StatusCode::UNPROCESSABLE_ENTITY,
            JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, r.body_text())
    }
}

/// The `Idempotency-Key` request header, if present and valid text.
pub fn idempotency_header(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_string()))
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "Idempotency-Key must be ASCII")),
    }
}
