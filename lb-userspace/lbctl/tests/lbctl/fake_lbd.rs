//! A fake lbd for the lbctl tests: answers docs/api.md's endpoints from a small in-memory
//! state, on a unix socket (no auth) and on 127.0.0.1:0 (bearer token required).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

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
    vips: Mutex<Vec<Value>>,
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

pub fn web_vip() -> Value {
    json!({
        "name": "web", "address": "10.77.0.100", "port": 80, "protocol": "tcp",
        "algorithm": "maglev", "mode": "dsr-l2", "table_size": 65537,
        "backends": [
            backend("10.77.0.11", 100, "config"),
            {
                "address": "10.77.0.12", "weight": 50, "effective_weight": 0,
                "health": "unhealthy", "admin": "draining", "source": "api",
                "mac": null, "mac_error": "no ARP reply",
                "last_check": {"ok": false, "latency_ms": null, "error": "connection refused",
                               "at_unix_ms": 1_763_935_000_000u64}
            }
        ]
    })
}

fn backend(address: &str, weight: u64, source: &str) -> Value {
    let last = address.rsplit('.').next().unwrap_or("0");
    json!({
        "address": address, "weight": weight, "effective_weight": weight,
        "health": "healthy", "admin": "active", "source": source,
        "mac": format!("02:00:00:00:00:{last:0>2}"), "mac_error": null,
        "last_check": {"ok": true, "latency_ms": 0.4, "error": null, "at_unix_ms": 1_763_935_000_000u64}
    })
}

fn answer(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).expect("valid status");
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: u16, code: &str, message: &str) -> Response {
    answer(status, json!({"error": message, "code": code}))
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
            return error(401, "unauthorized", "missing or wrong bearer token");
        }
    }
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(400, "bad_request", &format!("malformed JSON: {e}")),
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
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["v1", "status"]) => answer(200, status()),
        ("GET", ["v1", "health"]) => answer(200, health(&lock(&shared.vips))),
        ("GET", ["v1", "stats"]) => answer(
            200,
            stats(shared.stats_calls.fetch_add(1, Ordering::SeqCst)),
        ),
        ("POST", ["v1", "shutdown"]) => {
            let detach = body["detach"].as_bool().unwrap_or(false);
            answer(202, json!({"shutting_down": true, "detach": detach}))
        }
        (_, ["v1", "vips", rest @ ..]) => vips(&mut lock(&shared.vips), &method, rest, body),
        _ => error(404, "not_found", &format!("no endpoint {method} {path}")),
    }
}

fn status() -> Value {
    json!({"version": "0.1.0-test", "uptime_s": 3661, "pinned": true,
           "interfaces": [{"iface": "veth-lb0", "mode": "driver", "adopted": false}],
           "vips": 1, "backends": 2, "healthy_backends": 1})
}

fn health(vips: &[Value]) -> Value {
    let mut rows = Vec::new();
    for v in vips {
        for b in v["backends"].as_array().into_iter().flatten() {
            rows.push(
                json!({"vip": v["name"], "address": b["address"], "health": b["health"],
                             "admin": b["admin"], "effective_weight": b["effective_weight"],
                             "last_check": b["last_check"]}),
            );
        }
    }
    Value::Array(rows)
}

/// Snapshot `n`: lbd's clock advances 2 s per snapshot and the counters by fixed steps, so
/// the rates are exact: web 500 packets/s, 750 kB/s, 10 new conns/s.
fn stats(n: u64) -> Value {
    let b = |address: &str, share: u64, active: u64| {
        json!({"address": address, "packets": n * share, "bytes": n * share * 1500,
               "new_conns": n * share / 50, "active_conns": active})
    };
    json!({
        "at_unix_ms": 1_763_935_000_000u64 + n * 2000,
        "vips": [{"name": "web", "packets": 10_000 + n * 1000, "bytes": n * 1_500_000,
                  "new_conns": n * 20,
                  "backends": [b("10.77.0.11", 600, 7), b("10.77.0.12", 400, 3)]}],
        "reasons": {"tx_forward": n * 1000, "drop_no_backend": n * 4}
    })
}

fn vips(vips: &mut Vec<Value>, method: &Method, rest: &[&str], body: Value) -> Response {
    let find = |vips: &[Value], name: &str| vips.iter().position(|v| v["name"] == name);
    match (method.as_str(), rest) {
        ("GET", []) => answer(200, Value::Array(vips.clone())),
        ("POST", []) => {
            let (Some(name), Some(address)) = (body["name"].as_str(), body["address"].as_str())
            else {
                return error(400, "bad_request", "name and address are required");
            };
            if find(vips, name).is_some() {
                return error(409, "conflict", &format!("VIP {name} already exists"));
            }
            let get = |k: &str, default: Value| body.get(k).cloned().unwrap_or(default);
            let vip = json!({"name": name, "address": address, "port": get("port", json!(0)),
                             "protocol": get("protocol", json!("tcp")),
                             "algorithm": get("algorithm", json!("maglev")),
                             "mode": get("mode", json!("dsr-l2")),
                             "table_size": get("table_size", json!(65537)), "backends": []});
            vips.push(vip.clone());
            answer(201, vip)
        }
        (m, [name, tail @ ..]) => {
            let Some(i) = find(vips, name) else {
                return error(404, "not_found", &format!("unknown VIP {name}"));
            };
            match (m, tail) {
                ("GET", []) => answer(200, vips[i].clone()),
                ("DELETE", []) => {
                    vips.remove(i);
                    answer(200, json!({"deleted": name}))
                }
                _ => backends(&mut vips[i], m, tail, body),
            }
        }
        _ => error(404, "not_found", "no such endpoint"),
    }
}

fn backends(vip: &mut Value, method: &str, rest: &[&str], body: Value) -> Response {
    let name = vip["name"].as_str().unwrap_or_default().to_string();
    let Some(list) = vip["backends"].as_array_mut() else {
        return error(500, "internal", "fake state broken");
    };
    let weight_ok = |w: &Value| w.as_u64().is_some_and(|w| w <= 1_000_000);
    match (method, rest) {
        ("GET", ["backends"]) => answer(200, Value::Array(list.clone())),
        ("POST", ["backends"]) => {
            let Some(address) = body["address"].as_str() else {
                return error(400, "bad_request", "address is required");
            };
            let weight = body.get("weight").cloned().unwrap_or(json!(100));
            if !weight_ok(&weight) {
                return error(400, "bad_request", "weight must be 0-1000000");
            }
            let fresh = backend(address, weight.as_u64().unwrap_or(100), "api");
            match list.iter().position(|b| b["address"] == address) {
                Some(i) => {
                    list[i] = fresh.clone();
                    answer(200, fresh)
                }
                None => {
                    list.push(fresh.clone());
                    answer(201, fresh)
                }
            }
        }
        (_, ["backends", address, action @ ..]) => {
            let Some(i) = list.iter().position(|b| b["address"] == *address) else {
                let msg = format!("backend {address} is not a backend of VIP {name}");
                return error(404, "not_found", &msg);
            };
            let b = &mut list[i];
            match (method, action) {
                ("DELETE", []) => {
                    list.remove(i);
                    return answer(200, json!({"deleted": address}));
                }
                ("POST", ["weight"]) if weight_ok(&body["weight"]) => {
                    b["weight"] = body["weight"].clone();
                    b["effective_weight"] = body["weight"].clone();
                }
                ("POST", ["weight"]) => {
                    return error(400, "bad_request", "weight must be 0-1000000");
                }
                ("POST", ["drain"]) => {
                    b["admin"] = json!("draining");
                    b["effective_weight"] = json!(0);
                }
                ("POST", ["undrain"]) => {
                    b["admin"] = json!("active");
                    b["effective_weight"] = b["weight"].clone();
                }
                _ => return error(404, "not_found", "no such endpoint"),
            }
            answer(200, b.clone())
        }
        _ => error(404, "not_found", "no such endpoint"),
    }
}
