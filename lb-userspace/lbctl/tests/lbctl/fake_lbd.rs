//! A fake lbd for the lbctl tests: answers docs/api.md's endpoints from a small in-memory
//! state, on a unix socket (no auth) and on 127.0.0.1:0 (bearer token required). Its
//! requests and answers are lb-api's types, the ones the real lbd serves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use lb_api::types::{
    AdminState, Algorithm, AttachMode, Backend, BackendStats, Deleted, DrainedBy, ErrorBody,
    ErrorCode, Health, HealthEntry, Interface, LastCheck, Mode, NewBackend, NewVip, Protocol,
    SetWeight, Shutdown, ShuttingDown, Source, Stats, Status, Vip, VipStats,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub const TOKEN: &str = "s3cret-token";

/// A request that changed (or tried to change) something: every method but GET.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    /// `null` when the request had no body.
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    vips: Mutex<Vec<Vip>>,
    log: Mutex<Vec<Logged>>,
    stats_calls: AtomicU64,
}

#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    token: Option<&'static str>,
    broken: bool,
}

pub struct FakeLbd {
    pub socket: PathBuf,
    pub tcp: SocketAddr,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl FakeLbd {
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A server that answers with HTML and 502s instead of the API's JSON.
    pub fn start_broken() -> Self {
        Self::start_with(true)
    }

    fn start_with(broken: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("lbd.sock");
        let shared = Arc::new(Shared::default());
        *lock(&shared.vips) = vec![web_vip()];
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let ctx = |token| Ctx {
            shared: shared.clone(),
            token,
            broken,
        };
        let (unix_app, tcp_app) = (router(ctx(None)), router(ctx(Some(TOKEN))));
        let tcp = rt.block_on(async {
            let unix = tokio::net::UnixListener::bind(&socket).expect("bind unix socket");
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0");
            let addr = tcp.local_addr().expect("local addr");
            tokio::spawn(async move { axum::serve(unix, unix_app).await });
            tokio::spawn(async move { axum::serve(tcp, tcp_app).await });
            addr
        });
        Self {
            socket,
            tcp,
            shared,
            rt: Some(rt),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.tcp)
    }

    pub fn requests(&self) -> Vec<Logged> {
        lock(&self.shared.log).clone()
    }

    pub fn stats_calls(&self) -> u64 {
        self.shared.stats_calls.load(Ordering::SeqCst)
    }
}

impl Drop for FakeLbd {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn router(ctx: Ctx) -> Router {
    Router::new().fallback(handle).with_state(ctx)
}

const AT_UNIX_MS: u64 = 1_763_935_000_000;

pub fn web_vip() -> Vip {
    Vip {
        name: "web".into(),
        source: Some(Source::Config),
        address: ip("10.77.0.100"),
        port: 80,
        protocol: Protocol::Tcp,
        algorithm: Algorithm::Maglev,
        mode: Mode::DsrL2,
        table_size: 65537,
        health: None,
        backends: vec![
            backend("10.77.0.11", 100, Source::Config),
            Backend {
                weight: 50,
                effective_weight: 0,
                health: Health::Unhealthy,
                admin: AdminState::Draining,
                drained_by: Some(DrainedBy::Operator),
                mac: None,
                mac_error: Some("no ARP reply".into()),
                last_check: Some(LastCheck {
                    ok: false,
                    latency_ms: None,
                    error: Some("connection refused".into()),
                    at_unix_ms: AT_UNIX_MS,
                }),
                ..backend("10.77.0.12", 50, Source::Api)
            },
        ],
    }
}

fn ip(a: &str) -> std::net::IpAddr {
    a.parse().expect("an address literal")
}

fn backend(address: &str, weight: u32, source: Source) -> Backend {
    let last = address.rsplit('.').next().unwrap_or("0");
    Backend {
        address: ip(address),
        weight,
        declared_weight: None,
        effective_weight: weight,
        health: Health::Healthy,
        admin: AdminState::Active,
        drained_by: None,
        source,
        mac: Some(format!("02:00:00:00:00:{last:0>2}")),
        mac_error: None,
        last_check: Some(LastCheck {
            ok: true,
            latency_ms: Some(0.4),
            error: None,
            at_unix_ms: AT_UNIX_MS,
        }),
        self_check: None,
        no_new_flows: None,
        forwarding: None,
    }
}

fn answer(status: u16, body: impl Serialize) -> Response {
    let status = StatusCode::from_u16(status).expect("valid status");
    let body = serde_json::to_string(&body).expect("an lb-api type serialises");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An error answer: lbd's status and `ErrorBody`.
struct Refused(u16, ErrorBody);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        answer(self.0, self.1)
    }
}

type Answer = Result<Response, Refused>;

fn error(status: u16, code: ErrorCode, message: &str) -> Refused {
    let body = ErrorBody {
        error: message.to_string(),
        code,
    };
    Refused(status, body)
}

/// The request's body as lb-api request type `T` (`null` for no body), or lbd's 400.
fn parse<T: DeserializeOwned>(body: &Value) -> Result<T, Refused> {
    T::deserialize(body).map_err(|e| error(400, ErrorCode::BadRequest, &e.to_string()))
}

async fn handle(
    State(ctx): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if ctx.broken {
        return match uri.path() {
            "/v1/status" => (StatusCode::OK, "<html>oops</html>").into_response(),
            _ => (StatusCode::BAD_GATEWAY, "Bad Gateway").into_response(),
        };
    }
    if let Some(token) = ctx.token {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if auth != Some(format!("Bearer {token}").as_str()) {
            let msg = "missing or wrong bearer token";
            return error(401, ErrorCode::Unauthorized, msg).into_response();
        }
    }
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                let msg = format!("malformed JSON: {e}");
                return error(400, ErrorCode::BadRequest, &msg).into_response();
            }
        }
    };
    let path = uri.path().to_string();
    if method != Method::GET {
        lock(&ctx.shared.log).push(Logged {
            method: method.to_string(),
            path: path.clone(),
            body: body.clone(),
        });
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let shared = &ctx.shared;
    let result = match (method.as_str(), segs.as_slice()) {
        ("GET", ["v1", "status"]) => Ok(answer(200, status())),
        ("GET", ["v1", "health"]) => Ok(answer(200, health(&lock(&shared.vips)))),
        ("GET", ["v1", "stats"]) => Ok(answer(
            200,
            stats(shared.stats_calls.fetch_add(1, Ordering::SeqCst)),
        )),
        ("POST", ["v1", "shutdown"]) => parse::<Option<Shutdown>>(&body).map(|s| {
            let detach = s.unwrap_or_default().detach;
            answer(
                202,
                ShuttingDown {
                    shutting_down: true,
                    detach,
                },
            )
        }),
        (_, ["v1", "vips", rest @ ..]) => vips(&mut lock(&shared.vips), &method, rest, &body),
        _ => Err(error(
            404,
            ErrorCode::NotFound,
            &format!("no endpoint {method} {path}"),
        )),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn status() -> Status {
    Status {
        version: "0.1.0-test".into(),
        uptime_s: 3661,
        interfaces: vec![Interface {
            iface: "veth-lb0".into(),
            mode: AttachMode::Driver,
            adopted: false,
        }],
        pinned: true,
        pin_dir: "/sys/fs/bpf/lb".into(),
        vips: 1,
        backends: 2,
        healthy_backends: 1,
    }
}

fn health(vips: &[Vip]) -> Vec<HealthEntry> {
    vips.iter()
        .flat_map(|v| {
            v.backends.iter().map(|b| HealthEntry {
                vip: v.name.clone(),
                address: b.address,
                health: b.health,
                admin: b.admin,
                drained_by: b.drained_by,
                effective_weight: b.effective_weight,
                last_check: b.last_check.clone(),
                self_check: b.self_check.as_ref().map(|r| r.summary()),
                no_new_flows: b.no_new_flows.clone(),
            })
        })
        .collect()
}

/// Snapshot `n`: lbd's clock advances 2 s per snapshot and the counters by fixed steps, so
/// the rates are exact: web 500 packets/s, 750 kB/s, 10 new conns/s.
fn stats(n: u64) -> Stats {
    let b = |address: &str, share: u64, active: u64| BackendStats {
        address: ip(address),
        packets: n * share,
        bytes: n * share * 1500,
        new_conns: n * share / 50,
        active_conns: active,
    };
    Stats {
        at_unix_ms: AT_UNIX_MS + n * 2000,
        vips: vec![VipStats {
            name: "web".into(),
            packets: 10_000 + n * 1000,
            bytes: n * 1_500_000,
            new_conns: n * 20,
            backends: vec![b("10.77.0.11", 600, 7), b("10.77.0.12", 400, 3)],
        }],
        reasons: [("tx_forward", n * 1000), ("drop_no_backend", n * 4)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

fn vips(vips: &mut Vec<Vip>, method: &Method, rest: &[&str], body: &Value) -> Answer {
    let find = |vips: &[Vip], name: &str| vips.iter().position(|v| v.name == name);
    match (method.as_str(), rest) {
        ("GET", []) => Ok(answer(200, &*vips)),
        ("POST", []) => {
            let new: NewVip = parse(body)?;
            if find(vips, &new.name).is_some() {
                let msg = format!("VIP {} already exists", new.name);
                return Err(error(409, ErrorCode::Conflict, &msg));
            }
            let vip = Vip {
                name: new.name,
                source: Some(Source::Api),
                address: new.address,
                port: new.port.unwrap_or(0),
                protocol: new.protocol.unwrap_or_default(),
                algorithm: new.algorithm.unwrap_or_default(),
                mode: new.mode.unwrap_or_default(),
                table_size: new.table_size.unwrap_or(65537),
                health: None,
                backends: Vec::new(),
            };
            vips.push(vip.clone());
            Ok(answer(201, vip))
        }
        (m, [name, tail @ ..]) => {
            let Some(i) = find(vips, name) else {
                let msg = format!("unknown VIP {name}");
                return Err(error(404, ErrorCode::NotFound, &msg));
            };
            match (m, tail) {
                ("GET", []) => Ok(answer(200, &vips[i])),
                ("DELETE", []) => {
                    vips.remove(i);
                    Ok(answer(
                        200,
                        Deleted {
                            deleted: name.to_string(),
                        },
                    ))
                }
                _ => backends(&mut vips[i], m, tail, body),
            }
        }
        _ => Err(error(404, ErrorCode::NotFound, "no such endpoint")),
    }
}

fn check_weight(w: u32) -> Result<u32, Refused> {
    if w <= 1_000_000 {
        Ok(w)
    } else {
        Err(error(
            400,
            ErrorCode::BadRequest,
            "weight must be 0-1000000",
        ))
    }
}

fn backends(vip: &mut Vip, method: &str, rest: &[&str], body: &Value) -> Answer {
    let list = &mut vip.backends;
    match (method, rest) {
        ("GET", ["backends"]) => Ok(answer(200, &*list)),
        ("POST", ["backends"]) => {
            let new: NewBackend = parse(body)?;
            let weight = check_weight(new.weight.unwrap_or(100))?;
            let fresh = Backend {
                declared_weight: new.weight,
                ..backend(&new.address.to_string(), weight, Source::Api)
            };
            match list.iter().position(|b| b.address == new.address) {
                Some(i) => {
                    list[i] = fresh.clone();
                    Ok(answer(200, fresh))
                }
                None => {
                    list.push(fresh.clone());
                    Ok(answer(201, fresh))
                }
            }
        }
        (_, ["backends", address, action @ ..]) => {
            let Some(i) = list.iter().position(|b| b.address.to_string() == *address) else {
                let msg = format!("backend {address} is not a backend of VIP {}", vip.name);
                return Err(error(404, ErrorCode::NotFound, &msg));
            };
            let b = &mut list[i];
            match (method, action) {
                ("DELETE", []) => {
                    list.remove(i);
                    let deleted = address.to_string();
                    return Ok(answer(200, Deleted { deleted }));
                }
                ("POST", ["weight"]) => {
                    let w: SetWeight = parse(body)?;
                    b.weight = check_weight(w.weight)?;
                    b.effective_weight = b.weight;
                }
                ("POST", ["drain"]) => {
                    b.admin = AdminState::Draining;
                    b.drained_by = Some(DrainedBy::Operator);
                    b.effective_weight = 0;
                }
                ("POST", ["undrain"]) => {
                    b.admin = AdminState::Active;
                    b.drained_by = None;
                    b.effective_weight = b.weight;
                }
                _ => return Err(error(404, ErrorCode::NotFound, "no such endpoint")),
            }
            Ok(answer(200, b.clone()))
        }
        _ => Err(error(404, ErrorCode::NotFound, "no such endpoint")),
    }
}
