//! The `app` binary end to end: `app serve --config FILE` with `APP_*` overrides, then
//! SIGTERM: drain on the control plane while still listening, finish the in-flight request,
//! stop listening, deregister, exit 0. Also: a bad config fails with the field's name.

mod support;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{delete, post};

#[derive(Clone, Default)]
struct Fake {
    /// (operation, whether the app's port accepted connections at that moment)
    events: Arc<Mutex<Vec<(String, bool)>>>,
    app_port: u16,
}

impl Fake {
    fn record(&self, op: &str) {
        let open = support::port_open(self.app_port);
        self.events.lock().unwrap().push((op.to_string(), open));
    }
}

async fn fake_server(fake: Fake) -> (u16, tokio::task::JoinHandle<()>) {
    let router = Router::new()
        .route(
            "/v1/vips/{vip}/backends",
            post(|State(f): State<Fake>| async move {
                f.record("register");
                "{}"
            }),
        )
        .route(
            "/v1/vips/{vip}/backends/{address}/drain",
            post(
                |State(f): State<Fake>, Path((_v, _a)): Path<(String, String)>| async move {
                    tokio::task::spawn_blocking(move || f.record("drain"))
                        .await
                        .unwrap();
                    "{}"
                },
            ),
        )
        .route(
            "/v1/vips/{vip}/backends/{address}",
            delete(
                |State(f): State<Fake>, Path((_v, _a)): Path<(String, String)>| async move {
                    tokio::task::spawn_blocking(move || f.record("deregister"))
                        .await
                        .unwrap();
                    "{}"
                },
            ),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (
        port,
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_finishes_deregisters_and_exits() {
    let redis = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app_port = support::free_port();
    let fake = Fake {
        app_port,
        ..Default::default()
    };
    let (cp_port, cp) = fake_server(fake.clone()).await;
    let config = dir.path().join("app.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = "127.0.0.1:1"   # overridden by APP_LISTEN below
[database]
url = "sqlite://{db}"
[redis]
url = "{redis}"
[http]
debug_routes = true
# /debug/sleep is an admin route (issue 15's app admin token)
admin_token = "{admin}"
[registration]
control_planes = ["http://127.0.0.1:{cp_port}"]
vip = "web"
address = "10.77.0.12"
token = "t"
retry_initial_ms = 50
[shutdown]
drain_delay_ms = 300
grace_ms = 30000
"#,
            db = dir.path().join("app.db").display(),
            redis = redis.url(),
            admin = support::app::ADMIN_TOKEN,
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_app"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("APP_LISTEN", format!("127.0.0.1:{app_port}"))
        .env("APP_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn app binary");
    let mut guard = support::ChildGuard::new("app", child);
    let base = format!("http://127.0.0.1:{app_port}");
    // Sends the admin token: the slow request below is an admin (debug) route.
    let c = support::app::client();
    let up = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            matches!(c.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200)
        },
    )
    .await;
    assert!(
        up,
        "app binary did not become ready (listen address from APP_LISTEN)"
    );
    let registered = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(20),
        || async {
            fake.events
                .lock()
                .unwrap()
                .iter()
                .any(|(op, _)| op == "register")
        },
    )
    .await;
    assert!(registered);

    let slow = tokio::spawn({
        let (c, base) = (c.clone(), base.clone());
        async move {
            c.get(format!("{base}/debug/sleep?ms=2000"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    // Signal only once the slow request is being handled.
    let accepted = support::wait_until_async(
        Duration::from_secs(30),
        Duration::from_millis(10),
        || async {
            let m = support::app::metrics(&c, &base).await;
            // The metrics request itself counts as one in flight.
            m.lines()
                .filter_map(|l| l.strip_prefix("app_http_in_flight "))
                .any(|v| v.trim().parse::<i64>().is_ok_and(|n| n >= 2))
        },
    )
    .await;
    assert!(accepted, "the slow request did not reach the app");
    guard.signal(libc::SIGTERM);
    assert_eq!(
        slow.await.unwrap().expect("slow request"),
        200,
        "in-flight request finished after SIGTERM"
    );
    let status = guard
        .wait_exit(Duration::from_secs(60))
        .expect("app exits after SIGTERM");
    assert!(status.success(), "exit status {status}");

    let events = fake.events.lock().unwrap().clone();
    println!("control plane saw: {events:?}");
    let ops: Vec<&str> = events.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(ops, vec!["register", "drain", "deregister"]);
    assert!(events[1].1, "at drain time the app still listens");
    assert!(
        !events[2].1,
        "at deregister time the app no longer listens (in-flight work is done)"
    );
    cp.abort();
}

#[test]
fn bad_config_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[cache]\nl1_ttl_ms = \"soon\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_app"))
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cache.l1_ttl_ms"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_app"))
        .args(["check-config"])
        .env("APP_HTTP__RATE_LIMIT__BURST", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http.rate_limit.burst"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_app"))
        .args(["check-config"])
        .env("APP_DATABASE__URL", "postgres://u@db.example:5432/app")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("postgres://u@db.example:5432/app"));
}
