//! The users API and every error status, against SQLite and against PostgreSQL (real
//! servers started here), plus panic recovery, request timeout and request ids.

mod support;

use serde_json::{Value, json};
use support::app as tapp;

async fn suite(base: &str) {
    let c = tapp::client();

    // ping, probes, metrics
    let r = c.get(format!("{base}/ping")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().contains_key("x-request-id"),
        "every response carries a request id"
    );
    let served_by = r.headers()["x-served-by"].to_str().unwrap().to_string();
    assert!(!served_by.is_empty(), "every response names its instance");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"message": "pong"}));
    assert_eq!(
        c.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["ready"], true);

    // a request id sent by the client is kept
    let r = c
        .get(format!("{base}/ping"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");

    // create
    let r = c
        .post(format!("{base}/users"))
        .json(&json!({"name": "Ann", "email": "Ann@Example.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let ann: Value = r.json().await.unwrap();
    let id = ann["id"].as_i64().unwrap();
    assert_eq!(loc, format!("/users/{id}"));
    assert_eq!(ann["email"], "ann@example.org");

    // read (twice: database, then cache)
    for _ in 0..2 {
        let r = c.get(format!("{base}/users/{id}")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.json::<Value>().await.unwrap(), ann);
    }

    // update (PATCH and PUT), visible at once on this instance
    let r = c
        .patch(format!("{base}/users/{id}"))
        .json(&json!({"name": "Anna"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["name"], "Anna");
    assert_eq!(tapp::user_name(&c, base, id).await.as_deref(), Some("Anna"));
    let r = c
        .put(format!("{base}/users/{id}"))
        .json(&json!({"name": "Annie", "email": "annie@example.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        tapp::user_name(&c, base, id).await.as_deref(),
        Some("Annie")
    );

    // duplicate email -> 409
    let r = c
        .post(format!("{base}/users"))
        .json(&json!({"name": "B", "email": "annie@example.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "conflict");

    // paged list
    let mut ids = vec![id];
    for i in 0..5 {
        ids.push(
            tapp::create_user(&c, base, &format!("user{i}"), &format!("u{i}@example.org")).await,
        );
    }
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    let mut pages = 0;
    loop {
        let url = match after {
            Some(a) => format!("{base}/users?limit=2&after={a}"),
            None => format!("{base}/users?limit=2"),
        };
        let page: Value = c.get(url).send().await.unwrap().json().await.unwrap();
        pages += 1;
        for u in page["items"].as_array().unwrap() {
            seen.push(u["id"].as_i64().unwrap());
        }
        match page["next_after"].as_i64() {
            Some(a) => after = Some(a),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, ids);

    // delete, then 404 everywhere
    let r = c.delete(format!("{base}/users/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(tapp::user_name(&c, base, id).await, None);
    assert_eq!(
        c.delete(format!("{base}/users/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let r = c
        .patch(format!("{base}/users/{id}"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "user not found", "code": "not_found"})
    );

    // errors: each is JSON with the right status, never a 500
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (c.get(format!("{base}/users/abc")), 400, "invalid_path"),
        (c.get(format!("{base}/users/0")), 400, "invalid_id"),
        (c.get(format!("{base}/users/99999999")), 404, "not_found"),
        (c.get(format!("{base}/users?limit=0")), 400, "invalid_query"),
        (
            c.get(format!("{base}/users?limit=abc")),
            400,
            "invalid_query",
        ),
        (c.get(format!("{base}/nope")), 404, "not_found"),
        (c.post(format!("{base}/ping")), 405, "method_not_allowed"),
        (
            c.post(format!("{base}/users"))
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "invalid_json",
        ),
        (
            c.post(format!("{base}/users"))
                .header("content-type", "text/plain")
                .body("{}"),
            415,
            "unsupported_media_type",
        ),
        (
            c.post(format!("{base}/users"))
                .json(&json!({"name": 5, "email": "a@b"})),
            422,
            "invalid_body",
        ),
        (
            c.post(format!("{base}/users")).json(&json!({"name": "x"})),
            422,
            "invalid_body",
        ),
        (
            c.post(format!("{base}/users"))
                .json(&json!({"name": "x", "email": "a@b", "admin": true})),
            422,
            "invalid_body",
        ),
        (
            c.post(format!("{base}/users"))
                .json(&json!({"name": " ", "email": "a@b"})),
            422,
            "invalid_body",
        ),
        (
            c.post(format!("{base}/users"))
                .json(&json!({"name": "x", "email": "nope"})),
            422,
            "invalid_body",
        ),
        (
            c.patch(format!("{base}/users/{}", ids[1])).json(&json!({})),
            422,
            "invalid_body",
        ),
        (
            c.post(format!("{base}/users"))
                .header("content-type", "application/json")
                .body(vec![b' '; 100 * 1024]),
            413,
            "payload_too_large",
        ),
        (c.get(format!("{base}/debug/panic")), 500, "internal"),
        (c.get(format!("{base}/debug/sleep?ms=5000")), 503, "timeout"),
    ];
    for (req, status, code) in cases {
        let r = req.send().await.unwrap();
        let url = r.url().to_string();
        assert_eq!(r.status().as_u16(), status, "{url}");
        // Timeouts and panics too: the instance and the request id are on every answer.
        for h in ["x-served-by", "x-request-id"] {
            assert!(r.headers().contains_key(h), "{url}: no {h}");
        }
        let body: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{url}: body is not JSON: {e}"));
        assert_eq!(body["code"], code, "{url}: {body}");
        assert!(body["error"].is_string(), "{url}: {body}");
    }
    // the process lived through the panic
    assert_eq!(
        c.get(format!("{base}/ping")).send().await.unwrap().status(),
        200
    );

    // metrics name the cache levels and the routes
    let m = support::app::metrics(&c, base).await;
    for series in [
        "app_cache_lookups_total",
        "app_cache_db_loads_total",
        "app_http_requests_total",
        "app_cache_breaker_state",
    ] {
        assert!(m.contains(series), "metrics lack {series}");
    }
    assert!(
        m.contains("route=\"/users/{id}\""),
        "routes are labelled by their pattern"
    );
}

fn config(db: &str, redis: &str) -> app::config::Config {
    let mut cfg = tapp::test_config(db, redis);
    cfg.http.request_timeout_ms = 1_000;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_and_errors_on_sqlite() {
    let redis = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let app = tapp::start(config(&tapp::sqlite_url(dir.path()), &redis.url())).await;
    suite(&tapp::base(&app)).await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_and_errors_on_postgres() {
    let redis = support::RedisServer::start();
    let pg = support::Postgres::start();
    let url = pg.create_database("crud");
    let app = tapp::start(config(&url, &redis.url())).await;
    suite(&tapp::base(&app)).await;
    app.stop().await.unwrap();
}

/// Redis is not there at all: every request is served from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_without_redis() {
    let dir = tempfile::tempdir().unwrap();
    let closed = format!("redis://127.0.0.1:{}/", support::free_port());
    let app = tapp::start(config(&tapp::sqlite_url(dir.path()), &closed)).await;
    let base = tapp::base(&app);
    let c = tapp::client();
    let id = tapp::create_user(&c, &base, "Solo", "solo@example.org").await;
    for _ in 0..20 {
        assert_eq!(
            tapp::user_name(&c, &base, id).await.as_deref(),
            Some("Solo")
        );
        assert_eq!(tapp::user_name(&c, &base, id + 1000).await, None);
    }
    app.stop().await.unwrap();
}
