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

/// What `GET /tasks/{id}` shows in every state of a job on the Redis Streams queue, whose
/// records are written lightly (ENQUEUE leaves out the default fields, START writes no
/// consumer, COMPLETE records the success as plain fields that the reader turns into the
/// history's last record): scheduled, queued, running (with progress), failed (retry due),
/// running again, succeeded after a retry (history failed + succeeded, error cleared),
/// succeeded at once (progress 100, result), dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_state_reads_back_from_the_job_record() {
    use app::queue::{JobContext, JobError, NewJob, Registry, Schedule};

    let r = support::RedisServer::start();
    let settings = app::queue::QueueSettings {
        // A failed attempt waits 1-2 s for its retry: long enough to be seen as failed.
        backoff_base_ms: 2_000,
        backoff_max_ms: 2_000,
        ..support::fast_queue_settings()
    };
    let q = Queue::connect(&r.url(), settings).await.unwrap();
    let svc = TaskService::new(q.clone(), TaskSettings::default());
    let api = serve(app::tasks::routes(svc.clone()).into()).await;
    let http = reqwest::Client::new();
    let get = |id: String| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            let r = http.get(format!("{api}/tasks/{id}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "GET /tasks/{id}");
            r.json::<Value>().await.unwrap()
        }
    };
    let wait = |id: String, what: &'static str, cond: fn(&Value) -> bool| async move {
        let ok =
            support::wait_until_async(Duration::from_secs(60), Duration::from_millis(20), || {
                let g = get(id.clone());
                async move { cond(&g.await) }
            })
            .await;
        let v = get(id.clone()).await;
        assert!(ok, "task {id} never {what}: {v}");
        v
    };
    let enqueue = |kind: &str, input: Value, schedule: Schedule| {
        let job = NewJob::new(app::tasks::TASKS_QUEUE, kind, json!({ "input": input }))
            .schedule(schedule);
        let q = q.clone();
        async move { q.enqueue(job).await.unwrap().id }
    };

    let later = enqueue("hold", json!({}), Schedule::After(600_000)).await;
    let v = get(later.clone()).await;
    assert_eq!(v["state"], "queued", "{v}");
    assert!(v["run_at_ms"].as_u64().unwrap() > v["created_ms"].as_u64().unwrap());
    assert_eq!(
        (v["attempts"].clone(), v["progress"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(v["history"], json!([]), "{v}");
    assert_eq!(v["max_attempts"], 3, "{v}");

    // Enqueued before any worker exists: queued, nothing else recorded.
    let once = enqueue("hold", json!({}), Schedule::Now).await;
    let retried = enqueue("hold", json!({"fail_first": true}), Schedule::Now).await;
    let dead = enqueue("doomed", json!({}), Schedule::Now).await;
    for id in [&once, &retried, &dead] {
        let v = get(id.to_string()).await;
        assert_eq!(v["state"], "queued", "{v}");
        assert_eq!(v["attempts"], 0, "{v}");
        assert_eq!(v["history"], json!([]), "{v}");
        assert!(
            v.get("run_at_ms").is_none() && v.get("error").is_none(),
            "{v}"
        );
        assert_eq!(v["kind"], if id == &dead { "doomed" } else { "hold" });
    }

    let (open, gate) = tokio::sync::watch::channel(false);
    let reg = Registry::new()
        .on(app::tasks::TASKS_QUEUE, "hold", move |ctx: JobContext| {
            let mut gate = gate.clone();
            async move {
                if ctx.attempt == 1 && ctx.payload["input"]["fail_first"] == true {
                    return Err(JobError::retry("first try"));
                }
                ctx.progress(40).await.map_err(JobError::retry)?;
                let _ = gate.wait_for(|o| *o).await;
                Ok(Some(json!({"attempt": ctx.attempt})))
            }
        })
        .on(
            app::tasks::TASKS_QUEUE,
            "doomed",
            |_ctx: JobContext| async { Err(JobError::permanent("no way")) },
        );
    let pool = WorkerPool::start(q.clone(), reg).await.unwrap();

    let v = wait(once.clone(), "running at 40%", |v| {
        v["state"] == "running" && v["progress"] == 40
    })
    .await;
    assert_eq!(v["attempts"], 1, "{v}");
    assert_eq!(v["history"], json!([]), "{v}");

    let v = wait(retried.clone(), "failed", |v| v["state"] == "failed").await;
    assert_eq!(v["attempts"], 1, "{v}");
    assert_eq!(v["error"], "first try", "{v}");
    assert_eq!(v["history"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["history"][0]["outcome"], "failed", "{v}");
    assert_eq!(v["history"][0]["error"], "first try", "{v}");
    let v = wait(retried.clone(), "running again", |v| {
        v["state"] == "running" && v["attempts"] == 2 && v["progress"] == 40
    })
    .await;
    assert_eq!(v["history"].as_array().unwrap().len(), 1, "{v}");

    let v = wait(dead.clone(), "dead", |v| v["state"] == "dead").await;
    assert_eq!(v["attempts"], 1, "{v}");
    assert_eq!(v["error"], "no way", "{v}");
    assert_eq!(v["history"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["history"][0]["outcome"], "failed", "{v}");

    open.send(true).unwrap();
    for (id, attempts) in [(&once, 1), (&retried, 2)] {
        let v = wait(id.to_string(), "succeeded", |v| v["state"] == "succeeded").await;
        assert_eq!(v["attempts"], attempts, "{v}");
        assert_eq!(v["progress"], 100, "{v}");
        assert_eq!(v["result"], json!({"attempt": attempts}), "{v}");
        assert!(v.get("error").is_none(), "a success clears the error: {v}");
        let h = v["history"].as_array().unwrap();
        assert_eq!(h.len(), attempts as usize, "{v}");
        let last = &h[h.len() - 1];
        assert_eq!(last["outcome"], "succeeded", "{v}");
        assert_eq!(last["attempt"], attempts, "{v}");
        assert!(!last["consumer"].as_str().unwrap().is_empty(), "{v}");
        assert!(last["error"].is_null(), "{v}");
        let (started, finished) = (
            last["started_ms"].as_u64().unwrap(),
            last["finished_ms"].as_u64().unwrap(),
        );
        assert!(
            started >= v["created_ms"].as_u64().unwrap() && started <= finished,
            "{v}"
        );
        assert_eq!(finished, v["updated_ms"].as_u64().unwrap(), "{v}");
        if attempts == 2 {
            assert_eq!(h[0]["outcome"], "failed", "{v}");
            assert_eq!(h[0]["attempt"], 1, "{v}");
        }
    }
    // The delayed one is still waiting, untouched.
    assert_eq!(get(later).await["state"], "queued");
    pool.shutdown().await;
}
