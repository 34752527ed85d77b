//! The HTTP API (docs/api.md): lb-api's types in and out, one JSON error shape
//! ([`lb_api::types::ErrorBody`]) with proper statuses, a bearer token on TCP, and the
//! OpenAPI 3.1 document generated from the handlers themselves (`GET /v1/openapi.json`).
//!
//! Adding an endpoint is one change in one place: a handler taking and returning lb-api
//! types, annotated with `#[utoipa::path(...)]` (method, path, body, answers), and its
//! `.routes(routes!(handler))` line in [`api`]. The router and the document both come from
//! that line, so they cannot disagree.

mod diag;
mod error;
mod events;
mod node;
mod vips;

pub use error::{ApiError, ApiResult};

use std::sync::OnceLock;

use axum::{
    Router,
    extract::Request,
    http::header,
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
use crate::auth;

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
        .routes(routes!(diag::trace))
        .routes(routes!(diag::capture))
        .routes(routes!(node::health))
        .routes(routes!(node::stats))
        .routes(routes!(node::vrrp))
        .routes(routes!(events::events))
        .routes(routes!(node::reload))
        .routes(routes!(node::bgp))
        .routes(routes!(node::shutdown))
        .routes(routes!(metrics::handler))
        .routes(routes!(openapi_json))
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "lbd API",
        description = "The control plane of the XDP load balancer: VIPs, backends, health, \
            counters, VRRP, BGP, packet capture and flow traces. JSON over HTTP/1.1 on a unix socket \
            (no token: the socket's file mode protects it) and, when `[api] listen` is set, on \
            TCP (TLS with `[api.tls]`) with `Authorization: Bearer <token>` of a client of \
            `[[api.clients]]`, scoped `admin`, `read-only` or `registrant` (403 outside its \
            scope; capture needs `admin`, a trace is read-only). Every error answers \
            `ErrorBody`. docs/api.md \
            has the prose; this document is generated from the handlers.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    tags(
        (name = "vips", description = "VIPs: a virtual address, port and protocol, balanced over backends"),
        (name = "backends", description = "A VIP's backends: registration, weight, drain"),
        (name = "diagnostics", description = "Capture packets inside the data plane (admin scope); trace a flow"),
        (name = "node", description = "This lbd: status, health, counters, VRRP, BGP, metrics, reload, shutdown"),
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
            r.entry("401".into()).or_insert_with(|| {
                error("on TCP: no known client's bearer token (or certificate)")
            });
            r.entry("403".into())
                .or_insert_with(|| error("outside the client's scope (read-only, registrant)"));
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

/// The API's router, for both listeners: [`auth::guard`] tells the unix socket's
/// administrator from TCP clients (token or certificate) and checks each call's scope. The
/// dashboard's static files are merged in after the guard: they carry no data.
pub fn router(state: State) -> Router {
    let (router, _) = api().split_for_parts();
    router
        .fallback(|| async {
            ApiError::not_found("no such endpoint (see GET /v1/openapi.json or docs/api.md)")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this endpoint",
            )
        })
        .layer(middleware::from_fn({
            let state = state.clone();
            move |req: Request, next: Next| {
                let access = state.access();
                auth::guard(access, req, next)
            }
        }))
        .with_state(state)
        .merge(crate::dashboard::router())
}

#[cfg(test)]
mod tests;
