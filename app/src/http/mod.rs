//! The HTTP layer: routes, middleware and JSON errors.

mod error;
mod extract;
mod health;
mod middleware;
mod ratelimit;
mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use error::{ApiError, UNAVAILABLE_RETRY_AFTER_S};
pub use extract::{ApiJson, ApiPath, ApiQuery};
pub use ratelimit::{Decision, RateLimiter};

use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Names the instance that answered, so a client behind the load balancer can see the spread
/// (`curl -si http://VIP/ping`), as HAProxy users do with a server-name header.
const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

/// The whole application router: the users API (rate limited), the probes and metrics
/// (never rate limited), `extra` routes from other modules (merged under the same
/// middleware, rate limited like the API), and the middleware stack.
pub fn router_with(state: AppState, extra: Router) -> Router {
    let cfg = &state.config.http;
    let mut api = Router::new()
        .route("/users", get(users::list_users).post(users::create_user))
        .route(
            "/users/{id}",
            get(users::get_user)
                .put(users::update_user)
                .patch(users::update_user)
                .delete(users::delete_user),
        );
    if cfg.debug_routes {
        api = api
            .route("/debug/panic", get(health::debug_panic))
            .route("/debug/sleep", get(health::debug_sleep));
    }
    let mut api = api.with_state(state.clone()).merge(extra);
    // One limiter per router: the buckets of one instance.
    if cfg.rate_limit.enabled {
        let limit = ratelimit::Limit {
            limiter: Arc::new(RateLimiter::new(&cfg.rate_limit)),
            refused: state.metrics.rate_limited.clone(),
        };
        api = api.layer(axum::middleware::from_fn_with_state(
            limit,
            ratelimit::limit,
        ));
    }

    let probes = Router::new()
        .route("/ping", get(health::ping))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .with_state(state.clone());

    let timeout = Duration::from_millis(cfg.request_timeout_ms);
    // An instance name that is not a valid header value (not visible ASCII) is left out.
    let served_by = HeaderValue::from_str(&state.instance).ok();
    Router::new()
        .merge(api)
        .merge(probes)
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        .layer(DefaultBodyLimit::max(cfg.body_limit_bytes))
        .layer(axum::middleware::from_fn_with_state(timeout, middleware::timeout))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(SetResponseHeaderLayer::overriding(SERVED_BY, served_by))
        .layer(axum::middleware::from_fn_with_state(state, middleware::track))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("http", method = %req.method(), uri = %req.uri(), request_id = %id)
        })
        .on_response(DefaultOnResponse::new().level(Level::INFO)))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The router without extra routes.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}
