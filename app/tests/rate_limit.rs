//! Per-client-IP rate limit: a client over its budget gets 429 with Retry-After; another
//! client (another loopback address) and the probes are unaffected.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use support::app as tapp;

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_budget_client_gets_429_others_unaffected() {
    let redis = support::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tapp::test_config(&tapp::sqlite_url(dir.path()), &redis.url());
    cfg.http.rate_limit.enabled = true;
    // 5 at once, then one every 10 s: 20 quick requests cannot all fit unless the machine
    // takes over 150 s for them.
    cfg.http.rate_limit.burst = 5;
    cfg.http.rate_limit.per_second = 0.1;
    let app = tapp::start(cfg).await;
    let base = tapp::base(&app);
    let greedy = client_from("127.0.0.1");
    let polite = client_from("127.0.0.2");

    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..20 {
        let r = greedy.get(format!("{base}/users/1")).send().await.unwrap();
        if r.status() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["code"], "rate_limited");
            statuses.push(429);
        } else {
            statuses.push(r.status().as_u16());
        }
    }
    println!("greedy client statuses: {statuses:?}, retry-after {retry_after:?}");
    assert_eq!(&statuses[..5], &[404; 5], "the burst is served");
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 10,
        "over budget: 429"
    );
    let ra = retry_after.expect("429 carries Retry-After");
    assert!(
        (1..=10).contains(&ra),
        "Retry-After {ra} s fits a rate of one per 10 s"
    );

    // Probes are never limited, also for the greedy client.
    for path in ["/healthz", "/readyz", "/metrics", "/ping"] {
        assert_eq!(
            greedy
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{path}"
        );
    }
    // Another client has its own budget.
    for _ in 0..5 {
        assert_eq!(
            polite
                .get(format!("{base}/users/1"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
    }
    assert!(app.state.metrics.rate_limited.get() >= 10);
    app.stop().await.unwrap();
}
