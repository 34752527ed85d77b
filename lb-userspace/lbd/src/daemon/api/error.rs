//! The API's one error shape (`lb_api::types::ErrorBody`) and extractors whose rejections
//! answer with it instead of axum's plain text.

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request, rejection::JsonRejection},
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use lb_api::types::{ErrorBody, ErrorCode};
use serde::de::DeserializeOwned;

use crate::daemon::ModelError;

#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, m)
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, m)
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Internal, e.to_string())
    }

    /// An axum rejection (body, path) as ours: its status decides the code.
    fn rejected(status: StatusCode, text: String) -> Self {
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            s if s.is_server_error() => ErrorCode::Internal,
            _ => ErrorCode::BadRequest,
        };
        Self::new(code, text)
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::NoVip(_) => Self::not_found(e.to_string()),
            ModelError::FamilyMismatch => Self::new(ErrorCode::Invalid, e.to_string()),
            ModelError::Program(_) => Self::internal(e),
        }
    }
}

impl ApiError {
    /// The error as the API's one shape (also an `error` event of `GET /v1/events`).
    pub fn body(self) -> ErrorBody {
        ErrorBody {
            error: self.message,
            code: self.code,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code;
        let body = self.body();
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body (`Content-Type: application/json` required): 400 for syntax and types, 413,
/// 415. Only a JSON object is a body: serde would otherwise build a struct from an array of
/// the right values in field order, accepting a body the OpenAPI document says is invalid.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        // axum's `Json` keeps deciding content type, syntax and size; the bytes are kept to
        // check the one rule it lacks.
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::rejected(e.status(), e.body_text()))?;
        let mut again = Request::new(axum::body::Body::from(body.clone()));
        *again.headers_mut() = headers;
        match Json::<T>::from_request(again, state).await {
            Ok(_) if first_byte(&body) != Some(b'{') => {
                Err(ApiError::bad_request("the body must be a JSON object"))
            }
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send Content-Type: application/json",
            )),
            Err(e) => Err(ApiError::rejected(e.status(), e.body_text())),
        }
    }
}

fn first_byte(body: &[u8]) -> Option<u8> {
    body.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// A body that may be left out (drain, shutdown, reload): empty (or JSON `null`) is `None`,
/// anything else must be the JSON object of `T`. An array is refused: serde would otherwise
/// build a struct from it field by field (and `[]` into all defaults), accepting a body the
/// OpenAPI document says is invalid.
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::rejected(e.status(), e.body_text()))?;
        match first_byte(&body) {
            None => return Ok(Self(None)),
            Some(b'{') | Some(b'n') => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the body must be a JSON object (or null, or left out)",
                ));
            }
        }
        serde_json::from_slice(&body)
            .map(Self)
            .map_err(|e| ApiError::bad_request(e.to_string()))
    }
}

/// Path parameters with a JSON 400 (e.g. a segment that is not UTF-8).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e| ApiError::rejected(e.status(), e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_api::types::{Reload, SetWeight};

    async fn optional(body: &'static str) -> Result<Option<Reload>, ApiError> {
        let req = Request::builder()
            .body(axum::body::Body::from(body))
            .expect("request");
        OptionalJson::<Reload>::from_request(req, &())
            .await
            .map(|j| j.0)
    }

    async fn required(ct: &str, body: &'static str) -> Result<SetWeight, ApiError> {
        let req = Request::builder()
            .header("content-type", ct)
            .body(axum::body::Body::from(body))
            .expect("request");
        JsonBody::<SetWeight>::from_request(req, &())
            .await
            .map(|j| j.0)
    }

    /// The same hole as the optional bodies': `[7]` was a weight of 7.
    #[tokio::test]
    async fn a_required_body_is_a_json_object() {
        let ok = required("application/json", r#" {"weight":7}"#).await;
        assert_eq!(ok.ok().map(|w| w.weight), Some(7));
        let ok = required(
            "application/merge-patch+json; charset=utf-8",
            r#"{"weight":3}"#,
        )
        .await;
        assert_eq!(ok.ok().map(|w| w.weight), Some(3));
        for bad in ["[7]", "[]", "7", "null", "", "{\"weight\":"] {
            let e = required("application/json", bad).await.expect_err(bad);
            assert_eq!(e.code, ErrorCode::BadRequest, "{bad}");
        }
        let e = required("text/plain", r#"{"weight":7}"#)
            .await
            .expect_err("text/plain");
        assert_eq!(e.code, ErrorCode::UnsupportedMediaType);
    }

    /// Found by schemathesis (seed 135413067675461666367462258426576217351): `[]` was a
    /// reload with every default.
    #[tokio::test]
    async fn an_optional_body_is_an_object_null_or_nothing() {
        assert_eq!(optional("").await.ok(), Some(None));
        assert_eq!(optional(" null ").await.ok(), Some(None));
        assert_eq!(
            optional(r#"{"dry_run":true}"#).await.ok(),
            Some(Some(Reload {
                dry_run: true,
                prune: false
            }))
        );
        for bad in ["[]", "[true, false]", "true", "3", "\"x\"", "nul"] {
            let e = optional(bad).await.expect_err(bad);
            assert_eq!(e.code, ErrorCode::BadRequest, "{bad}");
        }
    }
}
