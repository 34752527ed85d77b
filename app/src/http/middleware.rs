//! Cross-cutting middleware: request metrics, request timeout, panic recovery, request ids
//! and request logs.

use std::any::Any;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Response as HttpResponse;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::state::AppState;

/// Counts requests by method, matched route (not the raw path: bounded label values) and
/// status, and tracks requests in flight (shutdown waits for them).
pub async fn track(State(st): State<AppState>, req: Request, next: Next) -> Response {
    // Clones that allocate nothing: a standard method is an enum, a matched path an Arc.
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    st.metrics.http_in_flight.inc();
    let start = Instant::now();
    let resp = next.run(req).await;
    st.metrics.http_in_flight.dec();
    let method = method.as_str();
    st.metrics
        .http_duration
        .with_label_values(&[method, route])
        .observe(start.elapsed().as_secs_f64());
    st.metrics
        .http_requests
        .with_label_values(&[method, route, resp.status().as_str()])
        .inc();
    resp
}

/// Bounds a request's handling time; the client gets a JSON 503 (`code: timeout`).
pub async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Turns a handler panic into a JSON 500; the server keeps running.
pub fn panic_response(err: Box<dyn Any + Send + 'static>) -> HttpResponse<axum::body::Body> {
    let detail = err
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(panic = %detail, "handler panicked");
    ApiError::Internal.into_response()
}
