//! Self-registration against a fake control plane (the lbd registration API, served by
//! this test): retries while a control plane is down or failing, the bearer token, and the
//! shutdown order drain -> not-ready -> finish in-flight -> deregister.

mod support;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, post};
use serde_json::{Value, json};
use support::app as tapp;

/// What the fake saw, with the app's state at that moment.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    op: &'static str,
    vip: String,
    address: String,
    weight: Option<u64>,
    /// The app's readiness and in-flight requests when the call arrived.
    app_draining: Option<bool>,
    app_in_flight: Option<i64>,
}

#[derive(Clone, Default)]
struct Fake {
    events: Arc<Mutex<Vec<Event>>>,
    /// Bodies of the drain calls.
    drain_bodies: Arc<Mutex<Vec<Value>>>,
    /// Registrations to refuse with 503 before accepting.
    fail_first: Arc<Mutex<u32>>,
    app: Arc<OnceLock<app::state::AppState>>,
}

const TOKEN: &str = "s3cret";

impl Fake {
    fn record(&self, op: &'static str, vip: String, address: String, weight: Option<u64>) {
        let (d, f) = match self.app.get() {
            Some(st) => (
                Some(st.readiness.is_draining()),
                Some(st.metrics.http_in_flight.get()),
            ),
            None => (None, None),
        };
        self.events.lock().unwrap().push(Event {
            op,
            vip,
            address,
            weight,
            app_draining: d,
            app_in_flight: f,
        });
    }
    fn ops(&self) -> Vec<&'static str> {
        self.events.lock().unwrap().iter().map(|e| e.op).collect()
    }
    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

fn authorized(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn unauthorized() -> (StatusCode, axum::Json<Value>) {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": "bad token", "code": "unauthorized"})),
    )
}

async fn register(
    State(f): State<Fake>,
    Path(vip): Path<String>,
    h: HeaderMap,
    body: axum::Json<Value>,
) -> (StatusCode, axum::Json<Value>) {
    if !authorized(&h) {
        return unauthorized();
    }
    {
        let mut n = f.fail_first.lock().unwrap();
        if *n > 0 {
            *n -= 1;
            f.record("refused", vip, String::new(), None);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"error": "not yet", "code": "unavailable"})),
            );
        }
    }
    let address = body["address"].as_str().unwrap_or_default().to_string();
    f.record("register", vip, address.clone(), body["weight"].as_u64());
    (
        StatusCode::OK,
        axum::Json(json!({"address": address, "weight": body["weight"]})),
    )
}

async fn drain(
    State(f): State<Fake>,
    Path((vip, address)): Path<(String, String)>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, axum::Json<Value>) {
    if !authorized(&h) {
        return unauthorized();
    }
    f.drain_bodies
        .lock()
        .unwrap()
        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    f.record("drain", vip, address.clone(), None);
    (
        StatusCode::OK,
        axum::Json(json!({"address": address, "weight": 0})),
    )
}

async fn deregister(
    State(f): State<Fake>,
    Path((vip, address)): Path<(String, String)>,
    h: HeaderMap,
) -> (StatusCode, axum::Json<Value>) {
    if !authorized(&h) {
        return unauthorized();
    }
    f.record("deregister", vip, address.clone(), None);
    (StatusCode::OK, axum::Json(json!({"address": address})))
}

/// Serves the fake on `port`; the server stops when the returned handle is aborted.
async fn serve_fake(fake: Fake, port: u16) -> tokio::task::JoinHandle<()> {
    let router = Router::new()
        .route("/v1/vips/{vip}/backends", post(register))
        .route("/v1/vips/{vip}/backends/{address}/drain", post(drain))
        .route("/v1/vips/{vip}/backends/{address}", delete(deregister))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind fake control plane");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    })
}

fn reg_config(cfg: &mut app::config::Config, planes: Vec<String>) {
    let r = &mut cfg.registration;
    r.control_planes = planes;
    r.vip = "web".into();
    r.address = "10.77.0.11".into();
    r.weight = 70;
    r.token = Some(TOKEN.into());
    r.retry_initial_ms = 50;
    r.retry_max_ms = 300;
    r.refresh_ms = 0;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_retries_and_shuts_down_in_order() {
    let redis = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (fake1, fake2) = (Fake::default(), Fake::default());
    *fake1.fail_first.lock().unwrap() = 2;
    let (p1, p2) = (support::free_port(), support::free_port());
    let s1 = serve_fake(fake1.clone(), p1).await;
    // The second control plane is down at start.
    let mut cfg = tapp::test_config(&tapp::sqlite_url(dir.path()), &redis.url());
    reg_config(
        &mut cfg,
        vec![
            format!("http://127.0.0.1:{p1}"),
            format!("http://127.0.0.1:{p2}/"),
        ],
    );
    cfg.shutdown.drain_delay_ms = 200;
    let app = tapp::start(cfg).await;
    fake1.app.set(app.state.clone()).ok();
    fake2.app.set(app.state.clone()).ok();
    let base = tapp::base(&app);
    let c = tapp::client();
    // Start-up did not wait for the control planes.
    assert_eq!(
        c.get(format!("{base}/ping")).send().await.unwrap().status(),
        200
    );

    let registered = |f: &Fake| f.ops().contains(&"register");
    assert!(
        support::wait_until_async(
            Duration::from_secs(60),
            Duration::from_millis(20),
            || async { registered(&fake1) }
        )
        .await
    );
    assert_eq!(
        &fake1.ops()[..3],
        &["refused", "refused", "register"],
        "retried after 503s"
    );
    let e = fake1.events()[2].clone();
    assert_eq!(
        (e.vip.as_str(), e.address.as_str(), e.weight),
        ("web", "10.77.0.11", Some(70))
    );

    let s2 = serve_fake(fake2.clone(), p2).await;
    assert!(
        support::wait_until_async(
            Duration::from_secs(60),
            Duration::from_millis(20),
            || async { registered(&fake2) }
        )
        .await,
        "the second control plane was registered with once it came up"
    );

    // A slow request is in flight when shutdown starts.
    let slow = tokio::spawn({
        let (c, base) = (c.clone(), base.clone());
        async move {
            c.get(format!("{base}/debug/sleep?ms=1500"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    assert!(
        support::wait_until_async(
            Duration::from_secs(30),
            Duration::from_millis(5),
            || async { app.state.metrics.http_in_flight.get() >= 1 }
        )
        .await
    );
    let state = app.state.clone();
    let report = app.stop().await.unwrap();
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the in-flight request finished"
    );
    println!("{report:?}");
    assert!(report.http_finished);
    assert_eq!(
        (report.control_planes, report.drained, report.deregistered),
        (2, 2, 2)
    );

    for f in [&fake1, &fake2] {
        let ev = f.events();
        let ops: Vec<_> = ev
            .iter()
            .map(|e| e.op)
            .filter(|o| *o != "refused")
            .collect();
        assert_eq!(ops, vec!["register", "drain", "deregister"]);
        let drain = ev.iter().find(|e| e.op == "drain").unwrap();
        let dereg = ev.iter().find(|e| e.op == "deregister").unwrap();
        assert_eq!(drain.address, "10.77.0.11");
        assert_eq!(
            *f.drain_bodies.lock().unwrap(),
            vec![json!({"by": "registrant"})],
            "the app's own drain says so (its next registration may undo it, unlike an operator's)"
        );
        // drain happens first, while the app still reports ready and serves the slow request
        assert_eq!(drain.app_draining, Some(false));
        assert!(drain.app_in_flight.unwrap() >= 1);
        // deregister comes after not-ready and after every in-flight request finished
        assert_eq!(dereg.app_draining, Some(true));
        assert_eq!(dereg.app_in_flight, Some(0));
    }
    assert!(state.readiness.is_draining());
    s1.abort();
    s2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_control_plane_blocks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let redis = support::RedisServer::start();
    let mut cfg = tapp::test_config(&tapp::sqlite_url(dir.path()), &redis.url());
    reg_config(
        &mut cfg,
        vec![format!("http://127.0.0.1:{}", support::free_port())],
    );
    cfg.registration.request_timeout_ms = 500;
    cfg.shutdown.control_plane_timeout_ms = 500;
    let app = tapp::start(cfg).await;
    let c = tapp::client();
    assert_eq!(
        c.get(format!("{}/readyz", tapp::base(&app)))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let errors = || {
        app.state
            .metrics
            .registration_calls
            .with_label_values(&["register", "error"])
            .get()
    };
    assert!(
        support::wait_until_async(
            Duration::from_secs(30),
            Duration::from_millis(20),
            || async { errors() >= 3 }
        )
        .await,
        "registration is retried in the background"
    );
    let report = app.stop().await.unwrap();
    assert_eq!((report.drained, report.deregistered), (0, 0));
    assert!(report.http_finished);
}

/// A fake control plane, and an app config registering with it (SQLite and Redis of the
/// test's own, kept alive by the first two values).
async fn one_control_plane() -> (
    tempfile::TempDir,
    support::RedisServer,
    Fake,
    tokio::task::JoinHandle<()>,
    app::config::Config,
) {
    let dir = tempfile::tempdir().unwrap();
    let redis = support::RedisServer::start();
    let fake = Fake::default();
    let port = support::free_port();
    let server = serve_fake(fake.clone(), port).await;
    let mut cfg = tapp::test_config(&tapp::sqlite_url(dir.path()), &redis.url());
    reg_config(&mut cfg, vec![format!("http://127.0.0.1:{port}")]);
    (dir, redis, fake, server, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_an_error_not_a_registration() {
    let (_dir, _redis, fake, server, mut cfg) = one_control_plane().await;
    cfg.registration.token = Some("wrong".into());
    let app = tapp::start(cfg).await;
    let errors = || {
        app.state
            .metrics
            .registration_calls
            .with_label_values(&["register", "error"])
            .get()
    };
    assert!(
        support::wait_until_async(
            Duration::from_secs(30),
            Duration::from_millis(20),
            || async { errors() >= 2 }
        )
        .await
    );
    assert!(
        fake.ops().is_empty(),
        "nothing was registered with a wrong token"
    );
    app.stop().await.unwrap();
    server.abort();
}

/// A dual-stack backend: registered with the IPv4 VIP by its IPv4 address and with the IPv6
/// VIP by its IPv6 address, and both drained and deregistered at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_vips_are_registered_drained_and_deregistered_too() {
    let (_dir, _redis, fake, server, mut cfg) = one_control_plane().await;
    cfg.registration.extra_vips = vec![app::config::VipMembership {
        vip: "web-v6".into(),
        address: "fd77::11".into(),
    }];
    cfg.shutdown.drain_delay_ms = 0;
    let app = tapp::start(cfg).await;
    let both = |op: &str| {
        let mut seen: Vec<(String, String)> = fake
            .events()
            .into_iter()
            .filter(|e| e.op == op)
            .map(|e| (e.vip, e.address))
            .collect();
        seen.sort();
        seen
    };
    let want = vec![
        ("web".to_string(), "10.77.0.11".to_string()),
        ("web-v6".to_string(), "fd77::11".to_string()),
    ];
    assert!(
        support::wait_until_async(
            Duration::from_secs(30),
            Duration::from_millis(20),
            || async { both("register") == want }
        )
        .await,
        "registered with both VIPs: {:?}",
        fake.events()
    );
    let report = app.stop().await.unwrap();
    assert_eq!(
        (report.control_planes, report.drained, report.deregistered),
        (1, 1, 1),
        "the control plane acknowledged both VIPs"
    );
    assert_eq!(both("drain"), want);
    assert_eq!(both("deregister"), want);
    server.abort();
}
