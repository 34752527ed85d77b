//! The HTTP API (docs/api.md): JSON in and out, JSON errors with proper status codes, bearer
//! token on TCP.

use std::{net::IpAddr, sync::Arc, time::Instant};

use axum::{
    Json, Router,
    extract::{FromRequest, Path, Request, State as AxState, rejection::JsonRejection},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    State, metrics,
    model::{self, DrainedBy, NewVip, Source, VipRuntime, backend_view, vip_view},
    reconcile, sync_checkers,
};
use lb_config::MAX_WEIGHT;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
}

impl From<super::ModelError> for ApiError {
    fn from(e: super::ModelError) -> Self {
        use super::ModelError::*;
        match e {
            NoVip(_) => Self::not_found(e.to_string()),
            FamilyMismatch => Self::bad_request(e.to_string()),
            Program(_) => Self::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.message, "code": self.code})),
        )
            .into_response()
    }
}

/// `Json` whose rejections are JSON errors too (400 for syntax and types).
pub struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(e) => Err(match e {
                JsonRejection::MissingJsonContentType(_) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "bad_request",
                    "send Content-Type: application/json",
                ),
                other => ApiError::bad_request(other.body_text()),
            }),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: State) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/vips", get(list_vips).post(add_vip))
        .route("/v1/vips/{vip}", get(get_vip).delete(del_vip))
        .route(
            "/v1/vips/{vip}/backends",
            get(list_backends).post(add_backend),
        )
        .route(
            "/v1/vips/{vip}/backends/{addr}",
            axum::routing::delete(del_backend),
        )
        .route("/v1/vips/{vip}/backends/{addr}/weight", post(set_weight))
        .route("/v1/vips/{vip}/backends/{addr}/drain", post(drain))
        .route("/v1/vips/{vip}/backends/{addr}/undrain", post(undrain))
        .route("/v1/health", get(health))
        .route("/v1/stats", get(stats))
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/vrrp", get(vrrp_status))
        .route("/v1/bgp", get(bgp_status))
        .route("/metrics", get(metrics::handler))
        .fallback(|| async { ApiError::not_found("no such endpoint (see docs/api.md)") })
        .with_state(state)
}

/// `GET /v1/vrrp`: every VRRP router's state and counters, one per address family (404
/// without `[vrrp]`).
async fn vrrp_status(AxState(s): AxState<State>) -> ApiResult<Json<Value>> {
    let status = s
        .vrrp
        .get()
        .map(|v| v.overview())
        .ok_or_else(|| ApiError::not_found("VRRP is not configured (no [vrrp] section)"))?;
    serde_json::to_value(status)
        .map(Json)
        .map_err(ApiError::internal)
}

/// `GET /v1/bgp`: sessions and announced prefixes (404 without `[bgp]`).
async fn bgp_status(AxState(s): AxState<State>) -> ApiResult<Json<lb_api::bgp::Overview>> {
    s.bgp
        .get()
        .and_then(|b| b.overview())
        .map(Json)
        .ok_or_else(|| ApiError::not_found("BGP is not configured (no [bgp] section)"))
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
                    ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "unauthorized",
                        "missing or wrong bearer token",
                    )
                    .into_response()
                }
            }
        },
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn status(AxState(s): AxState<State>) -> Json<Value> {
    let inner = s.inner.lock().await;
    let backends: usize = inner.vips.values().map(|v| v.backends.len()).sum();
    let healthy: usize = inner
        .vips
        .values()
        .flat_map(|v| v.backends.values())
        .filter(|b| b.machine.state() == crate::health::Health::Healthy)
        .count();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": s.started.elapsed().as_secs(),
        "interfaces": inner.attached,
        "pinned": true,
        "pin_dir": s.config.dataplane.pin_dir,
        "vips": inner.vips.len(),
        "backends": backends,
        "healthy_backends": healthy,
    }))
}

async fn list_vips(AxState(s): AxState<State>) -> Json<Value> {
    let inner = s.inner.lock().await;
    let now = Instant::now();
    Json(json!(
        inner
            .vips
            .values()
            .map(|v| vip_view(v, now))
            .collect::<Vec<_>>()
    ))
}

async fn get_vip(AxState(s): AxState<State>, Path(vip): Path<String>) -> ApiResult<Json<Value>> {
    let inner = s.inner.lock().await;
    let v = inner
        .vips
        .get(&vip)
        .ok_or_else(|| ApiError::not_found(format!("no VIP named {vip}")))?;
    Ok(Json(json!(vip_view(v, Instant::now()))))
}

async fn add_vip(
    AxState(s): AxState<State>,
    JsonBody(new): JsonBody<NewVip>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let default_health = s
        .config
        .vips
        .first()
        .map(|v| v.health.clone())
        .unwrap_or_default();
    let cfg = new
        .into_config(default_health)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e))?;
    let mut inner = s.inner.lock().await;
    if inner.vips.contains_key(&cfg.name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("a VIP named {} exists", cfg.name),
        ));
    }
    if inner
        .vips
        .values()
        .any(|v| (v.cfg.address, v.cfg.port, v.cfg.proto) == (cfg.address, cfg.port, cfg.proto))
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "another VIP has that address, port and protocol",
        ));
    }
    if inner.vips.len() >= lb_common::MAX_VIPS as usize {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "VIP limit reached",
        ));
    }
    let name = cfg.name.clone();
    inner.vips.insert(
        name.clone(),
        VipRuntime {
            cfg,
            source: Source::Api,
            backends: Default::default(),
        },
    );
    if let Err(e) = reconcile(&s, &mut inner) {
        inner.vips.remove(&name);
        return Err(ApiError::internal(e));
    }
    let v = inner
        .vips
        .get(&name)
        .ok_or_else(|| ApiError::internal("VIP vanished"))?;
    Ok((
        StatusCode::CREATED,
        Json(json!(vip_view(v, Instant::now()))),
    ))
}

async fn del_vip(AxState(s): AxState<State>, Path(vip): Path<String>) -> ApiResult<Json<Value>> {
    let mut inner = s.inner.lock().await;
    let removed = inner
        .vips
        .remove(&vip)
        .ok_or_else(|| ApiError::not_found(format!("no VIP named {vip}")))?;
    if let Err(e) = reconcile(&s, &mut inner) {
        inner.vips.insert(vip.clone(), removed);
        return Err(ApiError::internal(e));
    }
    sync_checkers(&s, &mut inner);
    Ok(Json(json!({"deleted": vip})))
}

async fn list_backends(
    AxState(s): AxState<State>,
    Path(vip): Path<String>,
) -> ApiResult<Json<Value>> {
    let inner = s.inner.lock().await;
    let v = inner
        .vips
        .get(&vip)
        .ok_or_else(|| ApiError::not_found(format!("no VIP named {vip}")))?;
    Ok(Json(json!(vip_view(v, Instant::now()).backends)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBackend {
    address: IpAddr,
    /// The declared weight; left out: 100 for a new backend, unchanged for an existing one.
    #[serde(default)]
    weight: Option<u32>,
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

async fn backend_json(s: &State, vip: &str, addr: IpAddr) -> ApiResult<Json<Value>> {
    let inner = s.inner.lock().await;
    let v = inner
        .vips
        .get(vip)
        .ok_or_else(|| ApiError::not_found(format!("no VIP named {vip}")))?;
    let b = v
        .backends
        .get(&addr)
        .ok_or_else(|| ApiError::not_found(format!("{addr} is not a backend of VIP {vip}")))?;
    Ok(Json(json!(backend_view(v, addr, b, Instant::now()))))
}

async fn add_backend(
    AxState(s): AxState<State>,
    Path(vip): Path<String>,
    JsonBody(b): JsonBody<NewBackend>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if let Some(w) = b.weight {
        check_weight(w)?;
    }
    let new = s
        .upsert_backend(&vip, b.address, b.weight, Source::Registered)
        .await?;
    let body = backend_json(&s, &vip, b.address).await?;
    Ok((
        if new {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        body,
    ))
}

/// Runs `f` on one backend, then reconciles.
async fn with_backend(
    s: &State,
    vip: &str,
    addr: &str,
    f: impl FnOnce(&mut model::BackendRuntime),
) -> ApiResult<Json<Value>> {
    let addr = parse_addr(addr)?;
    {
        let mut inner = s.inner.lock().await;
        let v = inner
            .vips
            .get_mut(vip)
            .ok_or_else(|| ApiError::not_found(format!("no VIP named {vip}")))?;
        let b = v
            .backends
            .get_mut(&addr)
            .ok_or_else(|| ApiError::not_found(format!("{addr} is not a backend of VIP {vip}")))?;
        f(b);
        reconcile(s, &mut inner).map_err(ApiError::internal)?;
    }
    backend_json(s, vip, addr).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Weight {
    weight: u32,
}

async fn set_weight(
    AxState(s): AxState<State>,
    Path((vip, addr)): Path<(String, String)>,
    JsonBody(w): JsonBody<Weight>,
) -> ApiResult<Json<Value>> {
    check_weight(w.weight)?;
    with_backend(&s, &vip, &addr, |b| b.weight = w.weight).await
}

/// Optional body of the drain call: `{"by": "registrant"}` marks the backend's own drain
/// (its graceful shutdown), which its next registration undoes; no body is an operator's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Drain {
    by: DrainedBy,
}

async fn drain(
    AxState(s): AxState<State>,
    Path((vip, addr)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let by = if body.iter().all(u8::is_ascii_whitespace) {
        DrainedBy::Operator
    } else {
        serde_json::from_slice::<Drain>(&body)
            .map_err(|e| ApiError::bad_request(e.to_string()))?
            .by
    };
    with_backend(&s, &vip, &addr, |b| b.drain(by)).await
}

async fn undrain(
    AxState(s): AxState<State>,
    Path((vip, addr)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    with_backend(&s, &vip, &addr, |b| b.undrain()).await
}

async fn del_backend(
    AxState(s): AxState<State>,
    Path((vip, addr)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let a = parse_addr(&addr)?;
    let mut inner = s.inner.lock().await;
    let v = inner
        .vips
        .get_mut(&vip)
        .ok_or_else(|| ApiError::not_found(format!("no VIP named {vip}")))?;
    v.backends
        .remove(&a)
        .ok_or_else(|| ApiError::not_found(format!("{a} is not a backend of VIP {vip}")))?;
    reconcile(&s, &mut inner).map_err(ApiError::internal)?;
    sync_checkers(&s, &mut inner);
    Ok(Json(json!({"deleted": a})))
}

async fn health(AxState(s): AxState<State>) -> Json<Value> {
    let inner = s.inner.lock().await;
    let now = Instant::now();
    let rows: Vec<Value> = inner
        .vips
        .values()
        .flat_map(|v| {
            v.backends.iter().map(move |(a, b)| {
                let view = backend_view(v, *a, b, now);
                json!({"vip": v.cfg.name, "address": a, "health": view.health, "admin": view.admin,
                       "drained_by": view.drained_by, "effective_weight": view.effective_weight, "last_check": view.last_check})
            })
        })
        .collect();
    Json(json!(rows))
}

async fn stats(AxState(s): AxState<State>) -> ApiResult<Json<Value>> {
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
            backends.push(json!({"address": addr, "packets": b.packets, "bytes": b.bytes, "new_conns": b.new_conns,
                                 "active_conns": inner.active.get(&bid).copied().unwrap_or(0)}));
        }
        vips.push(json!({"name": v.cfg.name, "packets": t.packets, "bytes": t.bytes, "new_conns": t.new_conns, "backends": backends}));
    }
    let reasons: serde_json::Map<String, Value> = maps
        .reasons()
        .map_err(ApiError::internal)?
        .into_iter()
        .map(|(r, n)| (r.name().to_string(), json!(n)))
        .collect();
    Ok(Json(
        json!({"at_unix_ms": model::unix_ms(), "vips": vips, "reasons": reasons}),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Shutdown {
    #[serde(default)]
    detach: bool,
}

async fn shutdown(
    AxState(s): AxState<State>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: Shutdown = if body.iter().all(u8::is_ascii_whitespace) {
        Shutdown::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    let _ = s.shutdown.send(Some(req.detach));
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"shutting_down": true, "detach": req.detach})),
    ))
}
