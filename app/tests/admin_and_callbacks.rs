//! The app's admin routes need their token, and task callbacks refuse loopback, link-local
//! and the balancers' addresses (a request-forgery path), also through a name that resolves
//! to loopback.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use app::queue::{Queue, WorkerPool};
use app::tasks::{TaskService, TaskSettings};
use axum::Router;
use axum::routing::post;
use serde_json::{Value, json};
use support::app::{ADMIN_TOKEN, base, sqlite_url, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_the_admin_token() {
    let r = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(&sqlite_url(dir.path()), &r.url());
    let app = app::server::start_with(cfg.clone(), app::wiring::extensions)
        .await
        .expect("start app");
    let b = base(&app);
    let plain = reqwest::Client::new();
    let call = |m: reqwest::Method, path: &str, token: Option<&str>| {
        let put = m == reqwest::Method::PUT;
        let mut req = plain.request(m, format!("{b}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if put {
            req = req.json(&json!({"available": 5}));
        }
        req.send()
    };
    use reqwest::Method as M;
    for (m, path) in [
        (M::GET, "/dlq/tasks"),
        (M::POST, "/dlq/tasks/replay"),
        (M::DELETE, "/dlq/tasks"),
        (M::PUT, "/orders/stock/pen"),
        (M::GET, "/debug/sleep?ms=1"),
    ] {
        for token in [None, Some("wrong-token-0123456789")] {
            let r = call(m.clone(), path, token).await.unwrap();
            assert_eq!(r.status(), 401, "{m} {path} with {token:?}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "unauthorized");
        }
        let r = call(m.clone(), path, Some(ADMIN_TOKEN)).await.unwrap();
        assert!(
            r.status().is_success(),
            "{m} {path} with the token: {}",
            r.status()
        );
    }
    // Stock is read freely; users need no token.
    assert_eq!(
        call(M::GET, "/orders/stock/pen", None)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(call(M::GET, "/users", None).await.unwrap().status(), 200);
    app.stop().await.unwrap();

    // Without a configured token admin routes are off.
    let mut open = cfg;
    open.http.admin_token = None;
    let app = app::server::start_with(open, app::wiring::extensions)
        .await
        .expect("start app");
    let r = reqwest::Client::new()
        .delete(format!("{}/dlq/tasks", base(&app)))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_refuse_local_and_balancer_targets() {
    let r = support::RedisServer::start();
    let q = Queue::connect(&r.url(), support::fast_callback_queue())
        .await
        .unwrap();
    // A balancer at 10.77.0.2 (a control plane's host) and a listed network.
    let svc = TaskService::with_refused_hosts(
        q.clone(),
        TaskSettings {
            callback_secret: "s".into(),
            callback_denied: vec!["10.88.0.0/24".into()],
            ..Default::default()
        },
        &["10.77.0.2".parse().unwrap()],
    );
    let pool = WorkerPool::start(q.clone(), svc.registry().unwrap())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            axum::Router::from(app::tasks::routes(svc.clone())),
        )
        .await
        .unwrap();
    });
    // A receiver on loopback that must never be called.
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_port = hook.local_addr().unwrap().port();
    tokio::spawn(async move {
        let router = Router::new().route(
            "/hook",
            post(move || {
                h.fetch_add(1, Ordering::SeqCst);
                async { "ok" }
            }),
        );
        axum::serve(hook, router).await.unwrap();
    });
    let http = reqwest::Client::new();
    let submit = |url: String| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            let r = http
                .post(format!("{api}/tasks"))
                .json(&json!({"kind": "echo", "callback_url": url}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    for (url, why) in [
        (format!("http://127.0.0.1:{hook_port}/hook"), "loopback"),
        (format!("http://[::1]:{hook_port}/hook"), "loopback"),
        (
            "http://169.254.169.254/latest/meta-data".to_string(),
            "link-local",
        ),
        ("http://10.77.0.2:9100/v1/vips".to_string(), "balancer"),
        ("http://10.88.0.7/".to_string(), "balancer"),
    ] {
        let (status, body) = submit(url.clone()).await;
        assert_eq!(status, 422, "{url}: {body}");
        assert!(
            body["error"].as_str().unwrap_or("").contains(why),
            "{url}: {body}"
        );
    }
    // A name that resolves to loopback: accepted, refused when delivered, never retried.
    let (status, body) = submit(format!("http://localhost:{hook_port}/hook")).await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let dead =
        support::wait_until_async(Duration::from_secs(30), Duration::from_millis(100), || {
            let q = q.clone();
            async move {
                q.dlq_list("callbacks", None, 10)
                    .await
                    .map(|items| !items.is_empty())
                    .unwrap_or(false)
            }
        })
        .await;
    let items = q.dlq_list("callbacks", None, 10).await.unwrap();
    assert!(dead, "the refused delivery is a dead letter");
    let err = serde_json::to_value(&items[0]).unwrap()["error"].to_string();
    assert!(err.contains("refused") && err.contains("loopback"), "{err}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the loopback receiver was never called"
    );
    let task: Value = http
        .get(format!("{api}/tasks/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(task["state"], "succeeded", "the task itself ran: {task}");
    pool.shutdown().await;
}
