//! Starting in-process `app` instances for tests, and small HTTP helpers.

use std::time::Duration;

use app::config::Config;
use app::server::RunningApp;

/// A config for tests: loopback on a free port, the given database and Redis, short cache
/// timings, rate limit off, debug routes on, no drain delay.
pub fn test_config(database_url: &str, redis_url: &str) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().expect("loopback address"),
        ..Config::default()
    };
    c.database.url = database_url.to_string();
    c.redis.url = redis_url.to_string();
    // Generous: a loaded 2-core machine must not turn slowness into cache failures.
    c.redis.command_timeout_ms = 2_000;
    c.cache.bloom_check_interval_ms = 200;
    c.http.rate_limit.enabled = false;
    c.http.debug_routes = true;
    c.http.admin_token = Some(ADMIN_TOKEN.into());
    c.shutdown.drain_delay_ms = 0;
    c
}

/// The admin token of [`test_config`]; [`client`] sends it.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A SQLite database file in `dir`.
pub fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("app.db").display())
}

/// Starts an instance in this process (its own runtime tasks, its own metrics).
pub async fn start(cfg: Config) -> RunningApp {
    app::server::start(cfg).await.expect("start app instance")
}

pub fn base(app: &RunningApp) -> String {
    format!("http://{}", app.addr)
}

/// An HTTP client that sends [`ADMIN_TOKEN`] (the admin routes need it; others ignore it).
pub fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {ADMIN_TOKEN}")).expect("header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build()
        .expect("http client")
}

/// Waits (bounded) until the shared Bloom filter of `app` is complete.
pub async fn wait_bloom_ready(app: &RunningApp) {
    let ok = super::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async { app.state.metrics.bloom_ready.get() == 1 },
    )
    .await;
    assert!(ok, "bloom filter did not become ready within 60 s");
}

/// Creates a user and returns its id.
pub async fn create_user(c: &reqwest::Client, base: &str, name: &str, email: &str) -> i64 {
    let r = c
        .post(format!("{base}/users"))
        .json(&serde_json::json!({"name": name, "email": email}))
        .send()
        .await
        .expect("POST /users");
    assert_eq!(
        r.status(),
        201,
        "create user: {}",
        r.text().await.unwrap_or_default()
    );
    let v: serde_json::Value = r.json().await.expect("user json");
    v["id"].as_i64().expect("id in created user")
}

/// GET a user's name (None on 404); any other status fails the test.
pub async fn user_name(c: &reqwest::Client, base: &str, id: i64) -> Option<String> {
    let r = c
        .get(format!("{base}/users/{id}"))
        .send()
        .await
        .expect("GET /users/{id}");
    match r.status().as_u16() {
        200 => {
            let v: serde_json::Value = r.json().await.expect("user json");
            Some(v["name"].as_str().expect("name").to_string())
        }
        404 => None,
        s => panic!(
            "GET /users/{id}: unexpected status {s}: {}",
            r.text().await.unwrap_or_default()
        ),
    }
}

/// Sends `req` and returns its JSON body (panics on a transport error or a body that is not
/// JSON).
pub async fn json_of(req: reqwest::RequestBuilder) -> serde_json::Value {
    req.send()
        .await
        .expect("send request")
        .json()
        .await
        .expect("JSON body")
}

/// The app's `/metrics` text.
pub async fn metrics(c: &reqwest::Client, base: &str) -> String {
    c.get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Waits (bounded, 60 s) until the resource at `url` (a task or an order) has `state` `want`;
/// returns it then, fails the test otherwise.
pub async fn wait_state(c: &reqwest::Client, url: &str, want: &str) -> serde_json::Value {
    let get = || json_of(c.get(url));
    let ok = super::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async { get().await["state"] == want },
    )
    .await;
    let last = get().await;
    assert!(ok, "{url} never reached {want}: {last}");
    last
}

/// Runs the `app` binary with `args` and the given environment (no `APP_CONFIG` from the
/// caller's); returns (success, stdout, stderr).
pub fn app_cli(env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .args(args)
        .env_remove("APP_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run app {args:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `app dlq ARGS` with the given environment; returns (success, stdout, stderr).
pub fn dlq_cli(env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["dlq"];
    all.extend_from_slice(args);
    app_cli(env, &all)
}

/// Invalidation messages `app` received from other instances.
pub fn invalidations_received(app: &RunningApp) -> u64 {
    app.state
        .metrics
        .invalidations
        .with_label_values(&["received"])
        .get()
}

/// Waits (bounded, 60 s) until every instance listens on the invalidation channel.
pub async fn wait_subscribed(apps: &[&RunningApp]) {
    for a in apps {
        let ok = super::wait_until_async(
            Duration::from_secs(60),
            Duration::from_millis(10),
            || async { a.state.metrics.invalidation_subscribed.get() == 1 },
        )
        .await;
        assert!(
            ok,
            "instance did not subscribe to the invalidation channel within 60 s"
        );
    }
}
