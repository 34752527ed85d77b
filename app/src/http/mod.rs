//! The HTTP layer: the users API, the probes, the dead letters, middleware, and the
//! OpenAPI document of everything it serves (`GET /openapi.json`). Errors are `crate::api`'s
//! one shape.

mod admin;
pub mod dlq;
mod error;
mod health;
mod middleware;
pub mod queues;
mod ratelimit;
mod ui;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request, header};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use tracing::level_filters::LevelFilter;

pub use admin::AdminToken;
pub use ratelimit::{Decision, RateLimiter};
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Names the instance that answered, so a client behind the load balancer can see the spread
/// (`curl -si http://VIP/ping`), as HAProxy users do with a server-name header.
const SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "app API",
        description = "The backend service behind the balancer's VIP: users (SQLite or \
            PostgreSQL through a two-level cache), asynchronous tasks, the order saga and the \
            queue's dead letters, plus probes and metrics. Every error answers `ErrorBody`. \
            app/docs/api.md has the prose; this document is generated from the handlers.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    tags(
        (name = "users", description = "The users resource, read through the cache"),
        (name = "tasks", description = "Asynchronous tasks on the queue"),
        (name = "orders", description = "The order saga and its stock"),
        (name = "dlq", description = "Dead letters of a queue: browse, replay, purge"),
        (name = "queues", description = "Every queue's sizes and finished jobs (the dashboard's numbers)"),
        (name = "probes", description = "Liveness, readiness, metrics, ping"),
    ),
)]
struct Base;

/// The users API (rate limited when `http.rate_limit` is on).
fn users_api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(Base::openapi())
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(
            users::get_user,
            users::update_user,
            users::delete_user
        ))
}

/// Probes and metrics: never rate limited.
fn probes_api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::ping))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
}

/// The document of this module's routes (the users API and the probes); the composition
/// root adds the other modules' (`wiring::openapi`).
pub fn openapi() -> OpenApi {
    let mut doc = users_api().into_openapi();
    doc.merge(probes_api().into_openapi());
    doc
}

/// The whole application router: the users API (rate limited), the probes and metrics
/// (never rate limited), `extra` routes from other modules (merged under the same
/// middleware, rate limited like the API), the OpenAPI document of all of them at
/// `/openapi.json`, and the middleware stack. Admin routes need `admin`'s bearer token.
pub fn router_with(state: AppState, extra: OpenApiRouter, admin: AdminToken) -> Router {
    let cfg = &state.config.http;
    let mut api = users_api().with_state(state.clone()).merge(extra);
    if cfg.debug_routes {
        // Drills (panic recovery, timeouts), off by default and not in the document.
        api = api.route(
            "/debug/panic",
            get(health::debug_panic).with_state(state.clone()),
        );
        api = api.route(
            "/debug/sleep",
            get(health::debug_sleep).with_state(state.clone()),
        );
    }
    api = api.layer(axum::middleware::from_fn_with_state(admin, admin::guard));
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
    let (routes, mut doc) = api
        .merge(probes_api().with_state(state.clone()))
        .split_for_parts();
    crate::api::conventions(&mut doc);
    let doc: Arc<str> = serde_json::to_string(&doc).unwrap_or_default().into();

    // An instance name that is not a valid header value (not visible ASCII) is left out.
    let served_by = HeaderValue::from_str(&state.instance).ok();
    let routes = routes
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        doc.to_string(),
                    )
                }
            }),
        )
        .merge(ui::router())
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        .layer(DefaultBodyLimit::max(cfg.body_limit_bytes))
        .layer(CatchPanicLayer::custom(middleware::panic_response));
    // A debug span per request, for what a request logs besides its access line (errors,
    // audit), only when some target logs at `debug`: at `info` the layer does nothing
    // visible and cost /ping 8-9 % of its throughput (`cargo xtask bench app`, ablation of
    // 2026-12-08 in app/README.md).
    let routes = if LevelFilter::current() >= LevelFilter::DEBUG {
        routes.layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::debug_span!("http", method = %req.method(), uri = %req.uri(), request_id = %id)
                })
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
    } else {
        routes
    };
    // Outermost: request id, served-by header, metrics, timeout and access line in one
    // layer (three tower-http layers did the first two at 10 % of /ping's throughput).
    routes.layer(axum::middleware::from_fn_with_state(
        middleware::Track {
            app: state,
            served_by,
        },
        middleware::track,
    ))
}

/// The router without extra routes.
pub fn router(state: AppState) -> anyhow::Result<Router> {
    let admin = AdminToken::load(&state.config.http)?;
    Ok(router_with(state, OpenApiRouter::new(), admin))
}
