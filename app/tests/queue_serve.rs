//! The queue inside `app serve` (routes under the app's middleware, in-process workers,
//! metrics) and the `app dlq` command line.

mod support;

use serde_json::{Value, json};
use support::app::{base, client, json_of, metrics, sqlite_url, test_config, wait_state};

fn dlq_cli(redis_url: &str, args: &[&str]) -> (bool, String, String) {
    support::app::dlq_cli(&[("APP_REDIS__URL", redis_url)], args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_tasks_orders_and_dead_letters() {
    let r = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(&sqlite_url(dir.path()), &r.url());
    cfg.queue.block_ms = 200;
    cfg.queue.backoff_base_ms = 10;
    cfg.queue.backoff_max_ms = 50;
    cfg.orders.payment_failure_rate = 0.0;
    cfg.orders.initial_stock.insert("pen".into(), 10);
    let app = app::server::start_with(cfg, app::wiring::extensions)
        .await
        .expect("start app with the queue");
    let (c, b) = (client(), base(&app));

    // A task through the app's router.
    let v = json_of(
        c.post(format!("{b}/tasks"))
            .json(&json!({"kind": "echo", "input": {"hello": "world"}})),
    )
    .await;
    let id = v["id"].as_str().unwrap().to_string();
    let t = wait_state(&c, &format!("{b}/tasks/{id}"), "succeeded").await;
    assert_eq!(t["result"], json!({"hello": "world"}));

    // An order through the saga, with the configured initial stock.
    let v = json_of(
        c.post(format!("{b}/orders"))
            .json(&json!({"sku": "pen", "quantity": 3, "amount_cents": 300})),
    )
    .await;
    let oid = v["id"].as_str().unwrap().to_string();
    wait_state(&c, &format!("{b}/orders/{oid}"), "confirmed").await;
    let stock = json_of(c.get(format!("{b}/orders/stock/pen"))).await;
    assert_eq!(stock["available"], 7);

    // Dead letters over HTTP: list, replay, purge.
    let dead = |c: reqwest::Client| {
        let b = b.clone();
        async move {
            let v = json_of(
                c.post(format!("{b}/tasks"))
                    .json(&json!({"kind": "fail", "max_attempts": 1})),
            )
            .await;
            let id = v["id"].as_str().unwrap().to_string();
            wait_state(&c, &format!("{b}/tasks/{id}"), "dead").await;
            id
        }
    };
    let d1 = dead(c.clone()).await;
    let list = json_of(c.get(format!("{b}/dlq/tasks"))).await;
    assert_eq!(list["items"][0]["job_id"], d1.as_str());
    assert_eq!(list["items"][0]["error"], "requested failure");
    let rep = json_of(c.post(format!("{b}/dlq/tasks/replay"))).await;
    assert_eq!(rep["replayed"], 1);
    wait_state(&c, &format!("{b}/tasks/{d1}"), "dead").await; // it fails again
    let purged = json_of(c.delete(format!("{b}/dlq/tasks"))).await;
    assert_eq!(purged["purged"], 1);
    let bad = c
        .post(format!("{b}/dlq/tasks/replay"))
        .header("content-type", "application/json")
        .body(r#"{"entries": "x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    // An array is not the object the contract names: serde read `[null]` as "replay all".
    for array in ["[null]", r#"[["x"]]"#] {
        let bad = c
            .post(format!("{b}/dlq/tasks/replay"))
            .header("content-type", "application/json")
            .body(array)
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 422, "{array}");
    }
    assert_eq!(
        c.get(format!("{b}/dlq/no%20such"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // The command line against the same Redis.
    let d2 = dead(c.clone()).await;
    let (ok, out, err) = dlq_cli(&r.url(), &["list", "--queue", "tasks"]);
    assert!(ok, "{err}");
    assert!(out.contains(&d2), "{out}");
    let (ok, out, _) = dlq_cli(&r.url(), &["list", "--queue", "tasks", "--json"]);
    assert!(ok);
    let items: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(items[0]["job_id"], d2.as_str());
    let (ok, out, err) = dlq_cli(&r.url(), &["replay", "--queue", "tasks", "--all"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("replayed {d2}")), "{out}");
    wait_state(&c, &format!("{b}/tasks/{d2}"), "dead").await;
    let (ok, _, err) = dlq_cli(&r.url(), &["purge", "--queue", "tasks"]);
    assert!(
        !ok && err.contains("--yes"),
        "purge without --yes must refuse: {err}"
    );
    let (ok, out, _) = dlq_cli(&r.url(), &["purge", "--queue", "tasks", "--yes"]);
    assert!(ok && out.contains("1 dead letter(s) purged"), "{out}");

    // Queue metrics are in the app's /metrics.
    let metrics = metrics(&c, &b).await;
    for name in [
        "app_queue_jobs_total",
        "app_queue_processing_seconds",
        "app_queue_dead_letters_total",
        "app_queue_enqueued_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    let report = app.stop().await.unwrap();
    assert!(report.http_finished);
}
