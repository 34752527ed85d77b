//! VIPs and their backends: list, add, delete, weight, drain. A backend service's own
//! registration is `add_backend` (and `drain` with `by: registrant`, and `del_backend`).

use std::{net::IpAddr, time::Instant};

use axum::{Extension, Json, extract::State as AxState, http::StatusCode};
use lb_api::types::{
    Backend, Deleted, Drain, DrainedBy, ErrorCode, NewBackend, NewVip, SetWeight, Vip,
};
use lb_config::{Conflict, MAX_WEIGHT};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ApiPath, ApiResult, JsonBody, OptionalJson};
use crate::auth::Principal;
use crate::daemon::{
    Registration, State,
    model::{self, Source, backend_view, vip_view},
    reconcile, runtime_from_config, sync_checkers,
};

/// The path of a VIP's endpoints.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct VipPath {
    /// The VIP's name.
    pub vip: String,
}

/// The path of one backend's endpoints.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BackendPath {
    /// The VIP's name.
    vip: String,
    /// The backend's address.
    #[param(value_type = lb_api::schema::IpAddress)]
    address: String,
}

/// Every VIP with its settings and backends.
#[utoipa::path(get, path = "/v1/vips", tag = "vips",
    responses((status = OK, description = "every VIP", body = [Vip])))]
pub async fn list_vips(AxState(s): AxState<State>) -> Json<Vec<Vip>> {
    let inner = s.inner.lock().await;
    let now = Instant::now();
    Json(inner.vips.values().map(|v| vip_view(v, now)).collect())
}

/// Adds a VIP (`source: api`): the config file's checks (422 with `field: reason`), fields left
/// out take lbd's defaults and `health` the global `[health]` under the given keys; it lives in
/// the state file.
#[utoipa::path(post, path = "/v1/vips", tag = "vips", request_body = NewVip,
    responses(
        (status = CREATED, description = "the VIP as added", body = Vip),
        (status = CONFLICT, description = "a VIP of that name, or of that address, port and protocol, exists", body = lb_api::types::ErrorBody),
        (status = UNPROCESSABLE_ENTITY, description = "`field: reason`: what the config file refuses (name, table size, ipip without an outer source, health), or the VIP limit reached", body = lb_api::types::ErrorBody),
    ))]
pub async fn add_vip(
    AxState(s): AxState<State>,
    JsonBody(new): JsonBody<NewVip>,
) -> ApiResult<(StatusCode, Json<Vip>)> {
    // The file's checks (422 with `field: reason`), health over the global `[health]`.
    let input = model::vip_input(new);
    let config = s.current();
    let cfg = input
        .check(&config.vip_env())
        .map_err(|e| ApiError::new(ErrorCode::Invalid, e.to_string()))?;
    let mut inner = s.inner.lock().await;
    lb_config::check_against(&cfg, inner.vips.values().map(|v| &v.cfg)).map_err(|c| match c {
        Conflict::Taken(e) => ApiError::new(ErrorCode::Conflict, e.to_string()),
        Conflict::Full(e) => ApiError::new(ErrorCode::Invalid, e.to_string()),
    })?;
    let name = cfg.name.clone();
    let rt = runtime_from_config(&cfg, input, Source::Api, Instant::now());
    inner.vips.insert(name.clone(), rt);
    if let Err(e) = reconcile(&s, &mut inner) {
        inner.vips.remove(&name);
        return Err(ApiError::internal(e));
    }
    sync_checkers(&s, &mut inner);
    let v = inner
        .vips
        .get(&name)
        .ok_or_else(|| ApiError::internal("VIP vanished"))?;
    Ok((StatusCode::CREATED, Json(vip_view(v, Instant::now()))))
}

/// One VIP with its backends.
#[utoipa::path(get, path = "/v1/vips/{vip}", tag = "vips",
    params(VipPath),
    responses(
        (status = OK, description = "the VIP", body = Vip),
        (status = NOT_FOUND, description = "no VIP of that name", body = lb_api::types::ErrorBody),
    ))]
pub async fn get_vip(
    AxState(s): AxState<State>,
    ApiPath(VipPath { vip }): ApiPath<VipPath>,
) -> ApiResult<Json<Vip>> {
    let inner = s.inner.lock().await;
    let v = inner.vips.get(&vip).ok_or_else(|| no_vip(&vip))?;
    Ok(Json(vip_view(v, Instant::now())))
}

/// Deletes a VIP and its backends.
#[utoipa::path(delete, path = "/v1/vips/{vip}", tag = "vips",
    params(VipPath),
    responses(
        (status = OK, description = "the name of the deleted VIP", body = Deleted),
        (status = NOT_FOUND, description = "no VIP of that name", body = lb_api::types::ErrorBody),
    ))]
pub async fn del_vip(
    AxState(s): AxState<State>,
    ApiPath(VipPath { vip }): ApiPath<VipPath>,
) -> ApiResult<Json<Deleted>> {
    let mut inner = s.inner.lock().await;
    let removed = inner.vips.remove(&vip).ok_or_else(|| no_vip(&vip))?;
    if let Err(e) = reconcile(&s, &mut inner) {
        inner.vips.insert(vip.clone(), removed);
        return Err(ApiError::internal(e));
    }
    sync_checkers(&s, &mut inner);
    Ok(Json(Deleted { deleted: vip }))
}

/// The backends of a VIP.
#[utoipa::path(get, path = "/v1/vips/{vip}/backends", tag = "backends",
    params(VipPath),
    responses(
        (status = OK, description = "the VIP's backends", body = [Backend]),
        (status = NOT_FOUND, description = "no VIP of that name", body = lb_api::types::ErrorBody),
    ))]
pub async fn list_backends(
    AxState(s): AxState<State>,
    ApiPath(VipPath { vip }): ApiPath<VipPath>,
) -> ApiResult<Json<Vec<Backend>>> {
    let inner = s.inner.lock().await;
    let v = inner.vips.get(&vip).ok_or_else(|| no_vip(&vip))?;
    Ok(Json(vip_view(v, Instant::now()).backends))
}

/// Adds a backend, or re-registers it: the registration call of a backend service. A
/// re-registration is a heartbeat: it keeps an operator's drain and weight (see "Re-registration,
/// drain and weight").
#[utoipa::path(post, path = "/v1/vips/{vip}/backends", tag = "backends", request_body = NewBackend,
    params(VipPath),
    responses(
        (status = CREATED, description = "a new backend (weight 100 if left out)", body = Backend),
        (status = OK, description = "an existing backend, re-registered", body = Backend),
        (status = NOT_FOUND, description = "no VIP of that name", body = lb_api::types::ErrorBody),
        (status = UNPROCESSABLE_ENTITY, description = "an address of the other IP family than the VIP's, or a self-check that breaks its limits", body = lb_api::types::ErrorBody),
    ))]
pub async fn add_backend(
    AxState(s): AxState<State>,
    ApiPath(VipPath { vip }): ApiPath<VipPath>,
    who: Option<Extension<Principal>>,
    JsonBody(b): JsonBody<NewBackend>,
) -> ApiResult<(StatusCode, Json<Backend>)> {
    if let Some(w) = b.weight {
        check_weight(w)?;
    }
    if let Some(r) = &b.self_check {
        r.validate()
            .map_err(|e| ApiError::new(ErrorCode::Invalid, e))?;
    }
    // A registrant's call registers (under the lease); an administrator's adds (never expires).
    let source = match who {
        Some(Extension(p)) if p.is_registrant() => Source::Registered,
        _ => Source::Api,
    };
    let addr = b.address;
    let reg = Registration {
        declared: b.weight,
        self_check: b.self_check,
    };
    let new = s.upsert_backend(&vip, addr, reg, source).await?;
    // The answer tells the registrant how the VIP's packets will reach it (what its
    // self-check checks against).
    let body = backend_answer(&s, &vip, addr, true).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, body))
}

/// Deletes a backend (a backend service's deregistration).
#[utoipa::path(delete, path = "/v1/vips/{vip}/backends/{address}", tag = "backends",
    params(BackendPath),
    responses(
        (status = OK, description = "the address of the deleted backend", body = Deleted),
        (status = NOT_FOUND, description = "no such VIP or backend", body = lb_api::types::ErrorBody),
    ))]
pub async fn del_backend(
    AxState(s): AxState<State>,
    ApiPath(BackendPath { vip, address: addr }): ApiPath<BackendPath>,
) -> ApiResult<Json<Deleted>> {
    let a = parse_addr(&addr)?;
    let mut inner = s.inner.lock().await;
    let v = inner.vips.get_mut(&vip).ok_or_else(|| no_vip(&vip))?;
    v.backends.remove(&a).ok_or_else(|| no_backend(&vip, a))?;
    reconcile(&s, &mut inner).map_err(ApiError::internal)?;
    sync_checkers(&s, &mut inner);
    Ok(Json(Deleted {
        deleted: a.to_string(),
    }))
}

/// Sets a backend's configured weight.
#[utoipa::path(post, path = "/v1/vips/{vip}/backends/{address}/weight", tag = "backends",
    request_body = SetWeight,
    params(BackendPath),
    responses(
        (status = OK, description = "the backend with its new weight", body = Backend),
        (status = NOT_FOUND, description = "no such VIP or backend", body = lb_api::types::ErrorBody),
    ))]
pub async fn set_weight(
    AxState(s): AxState<State>,
    ApiPath(BackendPath { vip, address: addr }): ApiPath<BackendPath>,
    JsonBody(w): JsonBody<SetWeight>,
) -> ApiResult<Json<Backend>> {
    check_weight(w.weight)?;
    with_backend(&s, &vip, &addr, |b| b.weight = w.weight).await
}

/// Drains a backend: no new flows, existing flows go on. No body is an operator's drain
/// (it sticks until undrain); `{"by": "registrant"}` is the backend's own, at its shutdown.
#[utoipa::path(post, path = "/v1/vips/{vip}/backends/{address}/drain", tag = "backends",
    request_body(content = Option<Drain>, description = "left out: an operator's drain"),
    params(BackendPath),
    responses(
        (status = OK, description = "the drained backend", body = Backend),
        (status = NOT_FOUND, description = "no such VIP or backend", body = lb_api::types::ErrorBody),
    ))]
pub async fn drain(
    AxState(s): AxState<State>,
    ApiPath(BackendPath { vip, address: addr }): ApiPath<BackendPath>,
    who: Option<Extension<Principal>>,
    OptionalJson(body): OptionalJson<Drain>,
) -> ApiResult<Json<Backend>> {
    // A registrant's drain is always its own (its next registration undoes it).
    let by = if who.is_some_and(|Extension(p)| p.is_registrant()) {
        DrainedBy::Registrant
    } else {
        body.map_or(DrainedBy::Operator, |d| d.by)
    };
    with_backend(&s, &vip, &addr, |b| b.drain(by)).await
}

/// Ends any drain of a backend.
#[utoipa::path(post, path = "/v1/vips/{vip}/backends/{address}/undrain", tag = "backends",
    params(BackendPath),
    responses(
        (status = OK, description = "the backend, active again", body = Backend),
        (status = NOT_FOUND, description = "no such VIP or backend", body = lb_api::types::ErrorBody),
    ))]
pub async fn undrain(
    AxState(s): AxState<State>,
    ApiPath(BackendPath { vip, address: addr }): ApiPath<BackendPath>,
) -> ApiResult<Json<Backend>> {
    with_backend(&s, &vip, &addr, |b| b.undrain()).await
}

fn no_vip(vip: &str) -> ApiError {
    ApiError::not_found(format!("no VIP named {vip}"))
}

fn no_backend(vip: &str, addr: IpAddr) -> ApiError {
    ApiError::not_found(format!("{addr} is not a backend of VIP {vip}"))
}

fn check_weight(w: u32) -> ApiResult<()> {
    if w > MAX_WEIGHT {
        return Err(ApiError::bad_request(format!(
            "weight must be 0-{MAX_WEIGHT}"
        )));
    }
    Ok(())
}

fn parse_addr(a: &str) -> ApiResult<IpAddr> {
    a.parse()
        .map_err(|_| ApiError::bad_request(format!("{a:?} is not an IP address")))
}

async fn backend_json(s: &State, vip: &str, addr: IpAddr) -> ApiResult<Json<Backend>> {
    backend_answer(s, vip, addr, false).await
}

/// The backend's view; `forwarding`: with how the VIP's packets reach it (for registrants).
async fn backend_answer(
    s: &State,
    vip: &str,
    addr: IpAddr,
    forwarding: bool,
) -> ApiResult<Json<Backend>> {
    let inner = s.inner.lock().await;
    let v = inner.vips.get(vip).ok_or_else(|| no_vip(vip))?;
    let b = v.backends.get(&addr).ok_or_else(|| no_backend(vip, addr))?;
    let mut view = backend_view(v, addr, b, Instant::now());
    if forwarding {
        // The config in force: `backend_mtu` is applied live by a reload, and a registrant
        // told the start-up value would judge its MTU against a limit no longer in force.
        let backend_mtu = s.subscribe_config().borrow().dataplane.backend_mtu;
        view.forwarding = Some(model::forwarding(v, backend_mtu));
    }
    Ok(Json(view))
}

/// Runs `f` on one backend, then reconciles.
async fn with_backend(
    s: &State,
    vip: &str,
    addr: &str,
    f: impl FnOnce(&mut model::BackendRuntime),
) -> ApiResult<Json<Backend>> {
    let addr = parse_addr(addr)?;
    {
        let mut inner = s.inner.lock().await;
        let v = inner.vips.get_mut(vip).ok_or_else(|| no_vip(vip))?;
        let b = v
            .backends
            .get_mut(&addr)
            .ok_or_else(|| no_backend(vip, addr))?;
        f(b);
        reconcile(s, &mut inner).map_err(ApiError::internal)?;
    }
    backend_json(s, vip, addr).await
}
