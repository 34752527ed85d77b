//! This lbd as a whole: status, every backend's health, the data plane's counters, VRRP,
//! BGP, shutdown.

use std::time::Instant;

use axum::{Json, extract::State as AxState, http::StatusCode};
use lb_api::types::{
    AttachMode, BackendStats, ErrorCode, HealthEntry, Interface, Reload, ReloadReport, Shutdown,
    ShuttingDown, Stats, Status, VipStats,
};
use lb_api::vrrp::Overview;

use super::error::{ApiError, ApiResult, OptionalJson};
use crate::{
    daemon::{State, model, reload},
    health::Health,
};

/// lbd's version, uptime, interfaces and counts.
#[utoipa::path(get, path = "/v1/status", tag = "node",
    responses((status = OK, description = "this lbd", body = Status)))]
pub async fn status(AxState(s): AxState<State>) -> Json<Status> {
    let inner = s.inner.lock().await;
    let backends = inner.vips.values().map(|v| v.backends.len()).sum::<usize>();
    let healthy = inner
        .vips
        .values()
        .flat_map(|v| v.backends.values())
        .filter(|b| b.machine.state() == Health::Healthy)
        .count();
    let interfaces = inner
        .attached
        .iter()
        .map(|a| Interface {
            iface: a.iface.clone(),
            mode: if a.mode == AttachMode::Driver.name() {
                AttachMode::Driver
            } else {
                AttachMode::Generic
            },
            adopted: a.adopted,
        })
        .collect();
    Json(Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_s: s.started.elapsed().as_secs(),
        interfaces,
        pinned: true,
        pin_dir: s.config.dataplane.pin_dir.display().to_string(),
        vips: inner.vips.len() as u64,
        backends: backends as u64,
        healthy_backends: healthy as u64,
    })
}

/// Every backend's health, admin state, last check, self-check and why it gets no new flows.
#[utoipa::path(get, path = "/v1/health", tag = "node",
    responses((status = OK, description = "one row per (VIP, backend)", body = [HealthEntry])))]
pub async fn health(AxState(s): AxState<State>) -> Json<Vec<HealthEntry>> {
    let inner = s.inner.lock().await;
    let now = Instant::now();
    let rows = inner
        .vips
        .values()
        .flat_map(|v| {
            v.backends.iter().map(move |(a, b)| {
                let view = model::backend_view(v, *a, b, now);
                HealthEntry {
                    vip: v.cfg.name.clone(),
                    address: *a,
                    health: view.health,
                    admin: view.admin,
                    drained_by: view.drained_by,
                    effective_weight: view.effective_weight,
                    last_check: view.last_check,
                    self_check: view.self_check.as_ref().map(|r| r.summary()),
                    no_new_flows: view.no_new_flows,
                }
            })
        })
        .collect();
    Json(rows)
}

/// The data plane's counters per VIP and backend, and packets per verdict (totals since
/// load: `lbctl stats --watch` turns them into rates).
#[utoipa::path(get, path = "/v1/stats", tag = "node",
    responses((status = OK, description = "counters", body = Stats)))]
pub async fn stats(AxState(s): AxState<State>) -> ApiResult<Json<Stats>> {
    let inner = s.inner.lock().await;
    let maps = inner.prog.maps();
    let mut vips = Vec::new();
    for v in inner.vips.values() {
        let Some(id) = inner.prog.vip_id(&v.cfg.name) else {
            continue;
        };
        let t = maps.vip_totals(id).map_err(ApiError::internal)?;
        let mut backends = Vec::new();
        for addr in v.backends.keys() {
            let Some(bid) = inner.prog.backend_id(&v.cfg.name, *addr) else {
                continue;
            };
            let b = maps.backend_totals(bid).map_err(ApiError::internal)?;
            backends.push(BackendStats {
                address: *addr,
                packets: b.packets,
                bytes: b.bytes,
                new_conns: b.new_conns,
                active_conns: inner.active.get(&bid).copied().unwrap_or(0),
            });
        }
        vips.push(VipStats {
            name: v.cfg.name.clone(),
            packets: t.packets,
            bytes: t.bytes,
            new_conns: t.new_conns,
            backends,
        });
    }
    let reasons = maps
        .reasons()
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(r, n)| (r.name().to_string(), n))
        .collect();
    Ok(Json(Stats {
        at_unix_ms: model::unix_ms(),
        vips,
        reasons,
    }))
}

/// Every VRRP router's state and counters, one per address family.
#[utoipa::path(get, path = "/v1/vrrp", tag = "node",
    responses(
        (status = OK, description = "the routers", body = Overview),
        (status = NOT_FOUND, description = "no `[vrrp]` section", body = lb_api::types::ErrorBody),
    ))]
pub async fn vrrp(AxState(s): AxState<State>) -> ApiResult<Json<Overview>> {
    s.vrrp_statuses()
        .map(|v| Json(v.overview()))
        .ok_or_else(|| ApiError::not_found("VRRP is not configured (no [vrrp] section)"))
}

/// Re-reads lbd.toml (as SIGHUP does) and shows what changed; `dry_run` only shows it. A bad
/// file changes nothing (422 with `FILE:LINE: field: reason`).
#[utoipa::path(post, path = "/v1/reload", tag = "node",
    request_body(content = Option<Reload>, description = "left out: apply, prune nothing"),
    responses(
        (status = OK, description = "what changed (or would)", body = ReloadReport),
        (status = CONFLICT, description = "the file clashes with what the API added, or lbd runs without a file", body = lb_api::types::ErrorBody),
        (status = UNPROCESSABLE_ENTITY, description = "the file is invalid: `FILE:LINE: field: reason`", body = lb_api::types::ErrorBody),
    ))]
pub async fn reload(
    AxState(s): AxState<State>,
    OptionalJson(req): OptionalJson<Reload>,
) -> ApiResult<Json<ReloadReport>> {
    let req = req.unwrap_or_default();
    let opts = reload::Options {
        dry_run: req.dry_run,
        prune: req.prune,
    };
    use reload::ReloadError as E;
    match reload::reload(&s, opts).await {
        Ok(report) => Ok(Json(report.wire())),
        Err(e @ E::Config(_)) => Err(ApiError::new(ErrorCode::Invalid, e.to_string())),
        Err(e @ (E::Conflict(_) | E::NoFile)) => {
            Err(ApiError::new(ErrorCode::Conflict, e.to_string()))
        }
        Err(e @ E::Program(_)) => Err(ApiError::internal(e)),
    }
}

/// The BGP speaker, its sessions and the VIP addresses this balancer announces or withdraws
/// (docs/bgp.md).
#[utoipa::path(get, path = "/v1/bgp", tag = "node",
    responses(
        (status = OK, description = "sessions and prefixes", body = lb_api::bgp::Overview),
        (status = NOT_FOUND, description = "no `[bgp]` section", body = lb_api::types::ErrorBody),
    ))]
pub async fn bgp(AxState(s): AxState<State>) -> ApiResult<Json<lb_api::bgp::Overview>> {
    s.bgp
        .get()
        .and_then(|b| b.overview())
        .map(Json)
        .ok_or_else(|| ApiError::not_found("BGP is not configured (no [bgp] section)"))
}

/// Asks lbd to exit. With `detach: true` it also detaches the XDP program and removes its
/// pins, leaving nothing behind; otherwise the data plane keeps forwarding.
#[utoipa::path(post, path = "/v1/shutdown", tag = "node",
    request_body(content = Option<Shutdown>, description = "left out: `{\"detach\": false}`"),
    responses((status = ACCEPTED, description = "lbd exits now", body = ShuttingDown)))]
pub async fn shutdown(
    AxState(s): AxState<State>,
    OptionalJson(req): OptionalJson<Shutdown>,
) -> (StatusCode, Json<ShuttingDown>) {
    let detach = req.unwrap_or_default().detach;
    let _ = s.shutdown.send(Some(detach));
    (
        StatusCode::ACCEPTED,
        Json(ShuttingDown {
            shutting_down: true,
            detach,
        }),
    )
}
