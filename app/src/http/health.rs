//! Liveness, readiness, metrics, ping, and the opt-in debug routes.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::extract::ApiQuery;
use crate::state::AppState;

const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn ping() -> impl IntoResponse {
    // A constant body: the cheapest route, the benchmark's baseline.
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"message":"pong"}"#,
    )
}

/// Liveness: the process answers.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: false while draining or when the database does not answer. The body also
/// names the queue backend (`queue_backend`: redis or rabbitmq).
pub async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    let reason = if st.readiness.is_draining() {
        Some("draining")
    } else {
        match tokio::time::timeout(DB_CHECK_TIMEOUT, st.store.ping()).await {
            Ok(Ok(())) => None,
            _ => Some("database unreachable"),
        }
    };
    st.metrics.ready.set(i64::from(reason.is_none()));
    let backend = st.config.queue.backend.as_str();
    match reason {
        None => (
            StatusCode::OK,
            Json(json!({"ready": true, "queue_backend": backend})),
        ),
        Some(r) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": r, "queue_backend": backend})),
        ),
    }
}

pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// `GET /debug/panic`: proves panic recovery (a JSON 500; the process lives).
pub async fn debug_panic() -> &'static str {
    panic!("deliberate panic from /debug/panic");
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepQuery {
    ms: u64,
}

/// `GET /debug/sleep?ms=N`: a slow request (request timeout, graceful shutdown drills).
pub async fn debug_sleep(
    ApiQuery(q): ApiQuery<SleepQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if q.ms > 600_000 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "ms must be at most 600000",
        ));
    }
    tokio::time::sleep(Duration::from_millis(q.ms)).await;
    Ok(Json(json!({"slept_ms": q.ms})))
}
