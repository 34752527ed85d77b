//! Cross-cutting middleware: request metrics, request timeout, panic recovery, request ids
//! and request logs.

use std::any::Any;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Response as HttpResponse};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{REQUEST_ID, SERVED_BY};
use crate::api::ApiError;
use crate::state::AppState;

/// What [`track`] needs: the app, and the `x-served-by` value (the instance's name, or none
/// when it is not a valid header value).
#[derive(Clone)]
pub struct Track {
    pub app: AppState,
    pub served_by: Option<HeaderValue>,
}

/// A new request id: a UUID v4, as tower-http's `MakeRequestUuid` made.
fn new_request_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let s = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static("-"))
}

/// Gives the request an id (`x-request-id`: the client's, or a new UUID) and answers with
/// it and with `x-served-by`; bounds a request's handling time (`http.request_timeout_ms`;
/// the client gets a JSON 503, `code: timeout`); counts requests by method, matched route
/// (not the raw path: bounded label values) and status; tracks requests in flight (shutdown
/// waits for them); and writes the request's access-log line: one event with its fields, at
/// `info` on target `app::access` (`APP_LOG=info,app::access=warn` turns it off), as nginx's
/// access log and Gin's `Logger()`. One event rather than a span per request: a span costs
/// the subscriber an allocation, a formatting pass and an enter/exit at every poll, which was
/// a third of `/ping`'s CPU.
pub async fn track(State(t): State<Track>, mut req: Request, next: Next) -> Response {
    let st = &t.app;
    // Clones that allocate nothing: a standard method is an enum, a matched path an Arc.
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    // Clones share the request's bytes.
    let id = match req.headers().get(&REQUEST_ID) {
        Some(v) => v.clone(),
        None => {
            let v = new_request_id();
            req.headers_mut().insert(REQUEST_ID, v.clone());
            v
        }
    };
    let uri =
        tracing::enabled!(target: "app::access", tracing::Level::INFO).then(|| req.uri().clone());
    st.metrics.http_in_flight.inc();
    let start = Instant::now();
    // The time limit here rather than in a layer of its own: one boxed service and future
    // less per request. A timed-out request is counted and logged with its 503.
    let limit = Duration::from_millis(st.config.http.request_timeout_ms);
    let handled =
        crate::api::with_request_id(Some(id.clone()), tokio::time::timeout(limit, next.run(req)));
    let mut resp = handled
        .await
        .unwrap_or_else(|_| ApiError::Timeout.into_response());
    let headers = resp.headers_mut();
    if !headers.contains_key(&REQUEST_ID) {
        headers.insert(REQUEST_ID, id.clone());
    }
    if let Some(v) = &t.served_by {
        headers.insert(SERVED_BY, v.clone());
    }
    st.metrics.http_in_flight.dec();
    let elapsed = start.elapsed();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let status = resp.status();
    let m = method.as_str();
    st.metrics
        .http_duration
        .with_label_values(&[m, route])
        .observe(elapsed.as_secs_f64());
    st.metrics
        .http_requests
        .with_label_values(&[m, route, status.as_str()])
        .inc();
    if let Some(uri) = uri {
        let id = id.to_str().unwrap_or("-");
        tracing::info!(
            target: "app::access",
            method = %m,
            uri = %uri,
            status = status.as_u16(),
            latency_us = elapsed.as_micros() as u64,
            request_id = %id,
        );
    }
    resp
}

/// Turns a handler panic into a JSON 500; the server keeps running.
pub fn panic_response(err: Box<dyn Any + Send + 'static>) -> HttpResponse<axum::body::Body> {
    let detail = err
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| err.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(panic = %detail, request_id = %crate::api::request_id(), "handler panicked");
    ApiError::Internal.into_response()
}
