//! Liveness, readiness, metrics, ping, and the opt-in debug routes.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::{ApiError, ApiQuery, ErrorCode};
use crate::state::AppState;

const DB_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /ping`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Pong {
    /// Always `pong`.
    pub message: String,
}

/// `GET /healthz`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Alive {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Why not (`draining`, `database unreachable`); absent when ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// `redis` or `rabbitmq`.
    pub queue_backend: &'static str,
}

/// The cheapest route: a constant answer (the benchmark's baseline).
#[utoipa::path(get, path = "/ping", tag = "probes",
    responses((status = OK, description = "pong", body = Pong)))]
pub async fn ping() -> impl IntoResponse {
    // A constant body: the cheapest route, the benchmark's baseline.
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"message":"pong"}"#,
    )
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "probes",
    responses((status = OK, description = "alive", body = Alive)))]
pub async fn healthz() -> Json<Alive> {
    Json(Alive {
        status: "ok".into(),
    })
}

/// Readiness: false while draining or when the database does not answer. The body also
/// names the queue backend (`queue_backend`: redis or rabbitmq).
#[utoipa::path(get, path = "/readyz", tag = "probes",
    responses(
        (status = OK, description = "ready", body = Readiness),
        (status = SERVICE_UNAVAILABLE, description = "not ready, and why", body = Readiness),
    ))]
pub async fn readyz(State(st): State<AppState>) -> (StatusCode, Json<Readiness>) {
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
    let status = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Readiness {
        ready: reason.is_none(),
        reason,
        queue_backend: backend,
    };
    (status, Json(body))
}

/// Prometheus metrics of the HTTP layer, cache, database, queue and registration.
#[utoipa::path(get, path = "/metrics", tag = "probes",
    responses((status = OK, description = "the Prometheus text format",
        content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("route not found".into())
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
            ErrorCode::InvalidQuery,
            "ms must be at most 600000",
        ));
    }
    tokio::time::sleep(Duration::from_millis(q.ms)).await;
    Ok(Json(json!({"slept_ms": q.ms})))
}
