//! Async tasks over HTTP: 202 + status polling, error statuses, idempotency, and signed
//! callbacks retried until the receiver accepts one.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use app::queue::{Queue, WorkerPool};
use app::tasks::{SIGNATURE_HEADER, TaskService, TaskSettings, callback};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

const SECRET: &str = "test-secret";

#[derive(Default)]
struct Receiver {
    /// (signature valid, body) of every delivery, in arrival order.
    deliveries: Vec<(bool, Value)>,
}

/// Fails the first two deliveries with 500, accepts the rest.
async fn hook(
    State(rx): State<Arc<Mutex<Receiver>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let sig = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let valid = callback::verify(SECRET.as_bytes(), &body, sig);
    let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut rx = rx.lock().unwrap();
    rx.deliveries.push((valid, parsed));
    if !valid {
        StatusCode::UNAUTHORIZED
    } else if rx.deliveries.len() <= 2 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_api_and_signed_callbacks() {
    let r = support::RedisServer::start();
    let q = Queue::connect(&r.url(), support::fast_callback_queue())
        .await
        .unwrap();
    let svc = TaskService::new(
        q.clone(),
        TaskSettings {
            callback_secret: SECRET.into(),
            // The receiver runs on loopback here.
            callback_allow_local: true,
            ..Default::default()
        },
    );
    let pool = WorkerPool::start(q.clone(), svc.registry().unwrap())
        .await
        .unwrap();
    let api = serve(app::tasks::routes(svc.clone()).into()).await;
    let rx = Arc::new(Mutex::new(Receiver::default()));
    let hook_base = serve(
        Router::new()
            .route("/hook", post(hook))
            .with_state(rx.clone()),
    )
    .await;
    let http = reqwest::Client::new();

    // Submit: 202, Location, then poll to succeeded.
    let resp = http
        .post(format!("{api}/tasks"))
        .json(&json!({
            "kind": "sleep",
            "input": {"ms": 200, "steps": 4},
            "callback_url": format!("{hook_base}/hook"),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let body: Value = resp.json().await.unwrap();
    let id = body["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/tasks/{id}"));

    let get = |id: String| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            let r = http.get(format!("{api}/tasks/{id}")).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let ok = support::wait_until_async(Duration::from_secs(60), Duration::from_millis(50), || {
        let g = get(id.clone());
        async move { g.await.1["state"] == "succeeded" }
    })
    .await;
    assert!(ok, "task did not succeed: {:?}", get(id.clone()).await);
    let (_, view) = get(id.clone()).await;
    assert_eq!(view["progress"], 100);
    assert_eq!(view["result"], json!({"slept_ms": 200}));
    assert_eq!(view["attempts"], 1);

    // The receiver failed twice and accepted the third delivery.
    let delivered = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async { rx.lock().unwrap().deliveries.len() >= 3 },
    )
    .await;
    assert!(
        delivered,
        "callback deliveries: {}",
        rx.lock().unwrap().deliveries.len()
    );
    // Give a wrongly scheduled fourth delivery a chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let rx = rx.lock().unwrap();
        assert_eq!(rx.deliveries.len(), 3, "no delivery after the accepted one");
        for (valid, body) in &rx.deliveries {
            assert!(valid, "signature must verify");
            assert_eq!(body["task_id"], id.as_str());
            assert_eq!(body["state"], "succeeded");
        }
    }
    let notify = q
        .get(&format!("{id}.n0"))
        .await
        .unwrap()
        .expect("notify job");
    assert_eq!(notify.attempts, 3);
    assert_eq!(notify.state, app::queue::JobState::Succeeded);

    // A task that fails for good ends dead (and its callback reports it).
    let resp = http
        .post(format!("{api}/tasks"))
        .json(&json!({"kind": "fail", "max_attempts": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let dead_id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let dead =
        support::wait_until_async(Duration::from_secs(60), Duration::from_millis(50), || {
            let g = get(dead_id.clone());
            async move { g.await.1["state"] == "dead" }
        })
        .await;
    assert!(dead);
    let (_, view) = get(dead_id.clone()).await;
    assert_eq!(view["attempts"], 2);
    assert_eq!(view["error"], "requested failure");

    // Idempotency-Key: the same task comes back.
    let submit = |key: &'static str| {
        http.post(format!("{api}/tasks"))
            .header("Idempotency-Key", key)
            .json(&json!({"kind": "echo", "input": {"x": 1}}))
            .send()
    };
    let first: Value = submit("k-1").await.unwrap().json().await.unwrap();
    let second: Value = submit("k-1").await.unwrap().json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["created"], true);
    assert_eq!(second["created"], false);

    // Errors: JSON bodies with 4xx statuses.
    let status = |body: &'static str| {
        http.post(format!("{api}/tasks"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(status("{not json").await.unwrap().status(), 400);
    assert_eq!(status(r#"{"kind": 5}"#).await.unwrap().status(), 422);
    let r = status(r#"{"kind": "nope"}"#).await.unwrap();
    assert_eq!(r.status(), 422);
    let err: Value = r.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("unknown kind"));
    assert_eq!(
        status(r#"{"kind": "sleep", "input": {"ms": "x"}}"#)
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        status(r#"{"kind": "echo", "callback_url": "ftp://x"}"#)
            .await
            .unwrap()
            .status(),
        422
    );
    let (st, body) = get("0123456789abcdef".into()).await;
    assert_eq!(st, 404);
    assert!(body["error"].is_string());
    pool.shutdown().await;
}
