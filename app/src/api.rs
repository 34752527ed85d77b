//! What every HTTP route of the app shares: the one error shape (`{"error", "code", "field"?}`,
//! [`ErrorBody`]) with a status per code, the extractors whose rejections answer with it, and
//! the OpenAPI conventions every operation gets ([`conventions`]). The users API (`http`),
//! tasks, orders and dead letters all answer errors through [`ApiError`].
//!
//! Depends only on `queue` (for [`QueueError`]'s statuses), which depends on nothing, so any
//! module's routes may use it.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

use crate::queue::QueueError;

/// The id of the request being handled (its `x-request-id`), for the lines a route logs
/// besides its access line: errors and audit carry `request_id=` so an operator can join them
/// to the access log and to the client's header. Set per request by the HTTP middleware; `-`
/// outside a request. A task-local costs a request two thread-local swaps per poll, where an
/// `info` span per request cost a third of `/ping`'s CPU.
pub fn request_id() -> RequestId {
    RequestId(CURRENT_REQUEST.try_with(Clone::clone).ok().flatten())
}

tokio::task_local! {
    static CURRENT_REQUEST: Option<HeaderValue>;
}

/// Runs `fut` (a request's handling) with `id` as its [`request_id`].
pub async fn with_request_id<F: std::future::Future>(id: Option<HeaderValue>, fut: F) -> F::Output {
    CURRENT_REQUEST.scope(id, fut).await
}

/// Shows a request id, or `-`.
pub struct RequestId(Option<HeaderValue>);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"))
    }
}

/// `Retry-After` of a 503 (the database or the queue's storage unavailable, the request timed
/// out): a dependency down is temporary, so a client retries (with its idempotency key, for a
/// task or an order) instead of giving up or hammering.
pub const UNAVAILABLE_RETRY_AFTER_S: u64 = 1;

/// What went wrong, for a program: each code has one HTTP status and one meaning (the error
/// table of app/docs/api.md lists them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    InvalidPath,
    InvalidQuery,
    InvalidId,
    InvalidHeader,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidBody,
    RateLimited,
    Internal,
    DatabaseUnavailable,
    QueueUnavailable,
    Timeout,
}

impl ErrorCode {
    pub const ALL: &'static [ErrorCode] = &[
        Self::InvalidJson,
        Self::InvalidPath,
        Self::InvalidQuery,
        Self::InvalidId,
        Self::InvalidHeader,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Conflict,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::InvalidBody,
        Self::RateLimited,
        Self::Internal,
        Self::DatabaseUnavailable,
        Self::QueueUnavailable,
        Self::Timeout,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidPath => "invalid_path",
            Self::InvalidQuery => "invalid_query",
            Self::InvalidId => "invalid_id",
            Self::InvalidHeader => "invalid_header",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::InvalidBody => "invalid_body",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::QueueUnavailable => "queue_unavailable",
            Self::Timeout => "timeout",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::InvalidJson
            | Self::InvalidPath
            | Self::InvalidQuery
            | Self::InvalidId
            | Self::InvalidHeader => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::InvalidBody => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::DatabaseUnavailable | Self::QueueUnavailable | Self::Timeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// When the app answers it.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::InvalidJson => "a body that is not JSON",
            Self::InvalidPath => "a path parameter of the wrong type",
            Self::InvalidQuery => "an unknown or malformed query parameter, or one out of range",
            Self::InvalidId => "an id that is not a positive integer",
            Self::InvalidHeader => "a header that is not valid (`Idempotency-Key` not ASCII)",
            Self::Unauthorized => {
                "an admin route without the admin bearer token, or with a wrong one"
            }
            Self::Forbidden => {
                "an admin route while admin routes are off (no `http.admin_token_file`)"
            }
            Self::NotFound => "no such user, task, order or route",
            Self::MethodNotAllowed => "the path exists, the method does not",
            Self::Conflict => "the email is taken",
            Self::PayloadTooLarge => "a body over `http.body_limit_bytes`",
            Self::UnsupportedMediaType => "a body without `Content-Type: application/json`",
            Self::InvalidBody => {
                "JSON of the wrong shape, or a value the rules refuse (`field` names it when \
                 one field is at fault)"
            }
            Self::RateLimited => "over the client's rate (`Retry-After` says when to retry)",
            Self::Internal => "a bug (a handler panicked): the process keeps serving",
            Self::DatabaseUnavailable => "the database did not answer (`Retry-After: 1`)",
            Self::QueueUnavailable => {
                "the queue's Redis (or RabbitMQ) did not answer (`Retry-After: 1`)"
            }
            Self::Timeout => {
                "the request took longer than `http.request_timeout_ms` (`Retry-After: 1`)"
            }
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// The body of every error answer of the app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    pub code: ErrorCode,
    /// The request field at fault, when one is (`invalid_body` of a validation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error answer: its code decides the status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: ErrorCode, message: String },
    /// The whole message: "user not found".
    #[error("{0}")]
    NotFound(String),
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
    #[error("queue storage unavailable")]
    QueueUnavailable,
    #[error("request timed out")]
    Timeout,
    #[error("internal error")]
    Internal,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest { code, .. } => *code,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::Unprocessable { .. } => ErrorCode::InvalidBody,
            ApiError::TooManyRequests { .. } => ErrorCode::RateLimited,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::DatabaseUnavailable => ErrorCode::DatabaseUnavailable,
            ApiError::QueueUnavailable => ErrorCode::QueueUnavailable,
            ApiError::Timeout => ErrorCode::Timeout,
            ApiError::Internal => ErrorCode::Internal,
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code().status()
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn unprocessable(message: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            field: None,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let field = match &self {
            ApiError::Unprocessable { field, .. } => field.map(str::to_string),
            _ => None,
        };
        let body = ErrorBody {
            error: self.to_string(),
            code: self.code(),
            field,
        };
        let mut resp = (self.status(), Json(body)).into_response();
        let retry_after_s = match self {
            ApiError::TooManyRequests { retry_after_s } => Some(retry_after_s),
            ApiError::DatabaseUnavailable | ApiError::QueueUnavailable | ApiError::Timeout => {
                Some(UNAVAILABLE_RETRY_AFTER_S)
            }
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

impl From<JsonRejection> for ApiError {
    /// Malformed JSON is 400; JSON of the wrong shape is 422.
    fn from(r: JsonRejection) -> Self {
        let text = r.body_text();
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ApiError::UnsupportedMediaType("expected `Content-Type: application/json`".into())
            }
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::unprocessable(text),
            _ => ApiError::bad_request(ErrorCode::InvalidJson, text),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(ErrorCode::InvalidPath, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(ErrorCode::InvalidQuery, r.body_text())
    }
}

impl From<QueueError> for ApiError {
    /// 503 only when the queue's storage did not answer (a connection or timeout error, a
    /// failover in progress); an error answer or a reply of the wrong type is a bug (500).
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Invalid(m) => ApiError::unprocessable(m),
            QueueError::Redis(ref r) if unreachable(r) => {
                tracing::warn!(error = %e, request_id = %request_id(), "queue storage unavailable in a route");
                ApiError::QueueUnavailable
            }
            QueueError::Broker(_) => {
                tracing::warn!(error = %e, request_id = %request_id(), "queue broker error in a route");
                ApiError::QueueUnavailable
            }
            other => {
                tracing::error!(error = %other, request_id = %request_id(), "queue route failed");
                ApiError::Internal
            }
        }
    }
}

/// Whether Redis could not be reached (rather than refusing or answering oddly).
fn unreachable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || e.is_unrecoverable_error()
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

impl From<redis::RedisError> for ApiError {
    fn from(e: redis::RedisError) -> Self {
        QueueError::Redis(e).into()
    }
}

/// `Json<T>` with JSON errors (400 syntax, 413 size, 415 content type, 422 shape). Only a
/// JSON object is a body: serde would otherwise build a struct from an array of the right
/// values in field order, a body the OpenAPI document calls invalid.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        // axum's `Json` keeps deciding content type, size, syntax and shape; the bytes are
        // kept to check the one rule it lacks.
        let headers = req.headers().clone();
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                _ => ApiError::bad_request(ErrorCode::InvalidJson, e.body_text()),
            })?;
        let mut again = axum::extract::Request::new(axum::body::Body::from(body.clone()));
        *again.headers_mut() = headers;
        let Json(v) = Json::<T>::from_request(again, state).await?;
        match first_json_byte(&body) {
            Some(b'{') => Ok(Self(v)),
            _ => Err(ApiError::unprocessable("the body must be a JSON object")),
        }
    }
}

/// The first byte of a JSON text that is not whitespace: `{` for an object, `n` for `null`.
/// serde builds a struct from an array too, so a route whose contract says object checks it.
pub fn first_json_byte(body: &[u8]) -> Option<u8> {
    body.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// `Path<T>` with a JSON 400.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `Query<T>` with a JSON 400.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The answer to a submitted task or order: it runs on the queue; follow it at `status_url`
/// (also the `Location` header).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub id: String,
    /// False when an earlier submission with the same idempotency key is answered.
    pub created: bool,
    pub status_url: String,
}

impl Accepted {
    /// The 202 answer for job `id`, to be followed under `collection` (`/tasks`).
    pub fn response(collection: &str, id: String, created: bool) -> Response {
        let body = Self {
            status_url: format!("{collection}/{id}"),
            id,
            created,
        };
        let location = [(header::LOCATION, body.status_url.clone())];
        (StatusCode::ACCEPTED, location, Json(body)).into_response()
    }
}

/// The `Idempotency-Key` request header, if present and valid text.
pub fn idempotency_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.to_string())).map_err(|_| {
            ApiError::bad_request(ErrorCode::InvalidHeader, "Idempotency-Key must be ASCII")
        }),
    }
}

/// The security scheme of the admin routes in the document.
pub const ADMIN_SCHEME: &str = "admin_token";

/// Whether a request goes to an admin route: everything that changes state beyond users
/// (dead letters, stock changes) and the debug routes. The guard enforces it and the document
/// says it, from this one list.
pub fn is_admin(method: &axum::http::Method, path: &str) -> bool {
    path == "/dlq"
        || path.starts_with("/dlq/")
        || path.starts_with("/debug/")
        || (path.starts_with("/orders/stock/") && method != axum::http::Method::GET)
}

/// What holds for every operation, said once in the document: any error not listed is an
/// `ErrorBody` (`default`): 400 for a malformed request, 405, 413, 415, 429 when rate
/// limited, 500, 503 when the database or the queue does not answer or the request times
/// out.
pub fn conventions(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert("ErrorBody".into(), ErrorBody::schema());
    components
        .schemas
        .insert("ErrorCode".into(), ErrorCode::schema());
    // Every error answer is an `ErrorBody`; only the description differs.
    let error_body = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    let error = error_body("any other error, in the one shape");
    components.security_schemes.insert(
        ADMIN_SCHEME.into(),
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)).into(),
    );
    use axum::http::Method;
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::PATCH, &mut item.patch),
            (Method::DELETE, &mut item.delete),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            op.responses
                .responses
                .entry("default".into())
                .or_insert_with(|| error.clone().into());
            if is_admin(&method, path) {
                op.security = Some(vec![SecurityRequirement::new(
                    ADMIN_SCHEME,
                    Vec::<String>::new(),
                )]);
                op.responses.responses.insert(
                    "401".into(),
                    error_body("`unauthorized`: no admin bearer token, or a wrong one").into(),
                );
                op.responses.responses.insert(
                    "403".into(),
                    error_body("`forbidden`: admin routes are off on this instance").into(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_their_names_and_statuses() {
        for c in ErrorCode::ALL {
            let json = serde_json::to_value(c).expect("serialise");
            assert_eq!(json, c.name(), "{c:?}");
            assert!(c.status().is_client_error() || c.status().is_server_error());
        }
        let e = ApiError::Unprocessable {
            field: Some("email"),
            message: "email: not an address".into(),
        };
        assert_eq!(
            (e.status().as_u16(), e.code().name()),
            (422, "invalid_body")
        );
    }

    async fn body(ct: &str, body: &'static str) -> Result<serde_json::Value, (u16, &'static str)> {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Two {
            name: String,
            n: u32,
        }
        let req = axum::extract::Request::builder()
            .header("content-type", ct)
            .body(axum::body::Body::from(body))
            .expect("request");
        match ApiJson::<Two>::from_request(req, &()).await {
            Ok(ApiJson(t)) => Ok(serde_json::json!({"name": t.name, "n": t.n})),
            Err(e) => Err((e.status().as_u16(), e.code().name())),
        }
    }

    /// serde builds a struct from an array of its fields in order: `["a", 1]` must not be
    /// accepted where the contract says object.
    #[tokio::test]
    async fn a_json_body_is_an_object() {
        let ok = body("application/json", r#" {"name":"a","n":1}"#).await;
        assert_eq!(ok, Ok(serde_json::json!({"name": "a", "n": 1})));
        assert_eq!(
            body("application/json", r#"["a",1]"#).await,
            Err((422, "invalid_body"))
        );
        assert_eq!(
            body("application/json", r#"{"name":"a"}"#).await,
            Err((422, "invalid_body"))
        );
        assert_eq!(
            body("application/json", r#"{"name":"#).await,
            Err((400, "invalid_json"))
        );
        assert_eq!(
            body("text/plain", r#"{"name":"a","n":1}"#).await,
            Err((415, "unsupported_media_type"))
        );
    }
}
