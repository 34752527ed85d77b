//! The HTTP API (docs/api.md): lb-api's types in and out, one JSON error shape
//! ([`lb_api::types::ErrorBody`]) with proper statuses, a bearer token on TCP, and the
//! OpenAPI 3.1 document generated from the handlers themselves (`GET /v1/openapi.json`).
//!
//! Adding an endpoint is one change in one place: a handler taking and returning lb-api
//! types, annotated with `#[utoipa::path(...)]` (method, path, body, answers), and its
//! `.routes(routes!(handler))` line in [`api`]. The router and the document both come from
//! that line, so they cannot disagree.

mod error;
mod node;
mod vips;

pub use error::{ApiError, ApiResult};

use std::sync::{Arc, OnceLock};

use axum::{
    Router,
    extract::Request,
    http::{HeaderMap, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use lb_api::types::{ErrorBody, ErrorCode};
use utoipa::{
    OpenApi as _,
    openapi::{
        ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder,
        path::Operation,
        security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{State, metrics};

/// Every endpoint: the router and the document are both built from this list.
fn api() -> OpenApiRouter<State> {
    OpenApiRouter::with_openapi(Base::openapi())
        .routes(routes!(node::status))
        .routes(routes!(vips::list_vips, vips::add_vip))
        .routes(routes!(vips::get_vip, vips::del_vip))
        .routes(routes!(vips::list_backends, vips::add_backend))
        .routes(routes!(vips::del_backend))
        .routes(routes!(vips::set_weight))
        .routes(routes!(vips::drain))
        .routes(routes!(vips::undrain))
        .routes(routes!(node::health))
        .routes(routes!(node::stats))
        .routes(routes!(node::vrrp))
        .routes(routes!(node::shutdown))
        .routes(routes!(metrics::handler))
        .routes(routes!(openapi_json))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "lbd API",
        description = "The control plane of the XDP load balancer: VIPs, backends, health, \
            counters, VRRP. JSON over HTTP/1.1 on a unix socket (no token: the socket's file \
            mode protects it) and, when `[api] listen` is set, on TCP with \
            `Authorization: Bearer <token>`. Every error answers `ErrorBody`. docs/api.md \
            has the prose; this document is generated from the handlers.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    tags(
        (name = "vips", description = "VIPs: a virtual address, port and protocol, balanced over backends"),
        (name = "backends", description = "A VIP's backends: registration, weight, drain"),
        (name = "node", description = "This lbd: status, health, counters, VRRP, metrics, shutdown"),
        (name = "meta", description = "This document"),
    ),
    components(schemas(ErrorBody, ErrorCode)),
)]
struct Base;

/// The OpenAPI document of this lbd: what `GET /v1/openapi.json` serves and
/// `lbd openapi` prints.
pub fn openapi() -> OpenApi {
    let mut doc = api().into_openapi();
    conventions(&mut doc);
    doc
}

/// What holds for every operation, said once: the bearer token (on TCP), and that any error
/// (401 without the token, 400 for a malformed request, 405, 413, 415, 500) is an `ErrorBody`.
fn conventions(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    doc.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
    let error = |what: &str| -> RefOr<utoipa::openapi::Response> {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
            .into()
    };
    for item in doc.paths.paths.values_mut() {
        let ops: [&mut Option<Operation>; 5] = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            let r = &mut op.responses.responses;
            r.entry("401".into())
                .or_insert_with(|| error("on TCP: no bearer token, or the wrong one"));
            r.entry("default".into())
                .or_insert_with(|| error("any other error, in the same shape"));
        }
    }
}

/// The OpenAPI document (3.1) of this API.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = OK, description = "the document", body = Object)))]
async fn openapi_json() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(|| serde_json::to_string(&openapi()).unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

/// The API's router (the unix socket's: no token).
pub fn router(state: State) -> Router {
    let (router, _) = api().split_for_parts();
    router
        // Not in the OpenAPI document yet (lb_api::bgp has no schemas): docs/bgp.md.
        .route("/v1/bgp", axum::routing::get(node::bgp))
        .fallback(|| async {
            ApiError::not_found("no such endpoint (see GET /v1/openapi.json or docs/api.md)")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this endpoint",
            )
        })
        .with_state(state)
}

/// The TCP router: every call needs `Authorization: Bearer <token>`.
pub fn tcp_router(state: State, token: String) -> Router {
    let token = Arc::new(token);
    router(state).layer(middleware::from_fn(
        move |headers: HeaderMap, req: Request, next: Next| {
            let token = token.clone();
            async move {
                let given = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "));
                if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
                    next.run(req).await
                } else {
                    ApiError::new(ErrorCode::Unauthorized, "missing or wrong bearer token")
                        .into_response()
                }
            }
        },
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
