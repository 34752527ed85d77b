//! The queue conformance suite (`support/conformance.rs`) on the RabbitMQ backend, with one
//! rabbitmq-server shared by every test of this binary (each test has its own prefix).

mod support;

use support::conformance::Env;

conformance_suite!(Env::rabbit());

use std::collections::HashSet;
use std::time::Duration;

use app::orders::{OrderService, OrderSettings, OrderState};
use app::queue::{QueueBackend, WorkerPool};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

/// A queue of our own bound to the saga's topic exchange: what a new consumer of the
/// order events would do. Returns the order ids of the events it got.
async fn observe(
    url: &str,
    exchange: &str,
    pattern: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("observer connects");
    let ch = conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare observer queue");
    ch.queue_bind(
        q.name().clone(),
        exchange.into(),
        pattern.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind observer queue");
    let mut consumer = ch
        .basic_consume(
            q.name().clone(),
            "observer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _keep = conn;
        while let Some(Ok(d)) = consumer.next().await {
            let _ = d.acker.ack(BasicAckOptions::default()).await;
            let body: serde_json::Value = serde_json::from_slice(&d.data).unwrap_or_default();
            let _ = tx.send(format!(
                "{}|{}",
                d.routing_key,
                body["job"].as_str().unwrap_or("")
            ));
        }
    });
    rx
}

/// The order saga on RabbitMQ with payment failing 30% of the time, two worker pools:
/// every order ends confirmed or cancelled, stock adds up exactly, and a consumer bound to
/// `orders.confirm` on the topic exchange sees one event per confirmed order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_on_rabbitmq_stock_adds_up() {
    const ORDERS: usize = 150;
    const STOCK: i64 = 200;
    let env = Env::rabbit();
    let mut s = env.settings();
    s.backoff_base_ms = 20;
    s.backoff_max_ms = 100;
    s.default_concurrency = 16;
    assert_eq!(s.backend, QueueBackend::Rabbitmq);
    let orders = OrderSettings {
        payment_failure_rate: 0.3,
        initial_stock: [("widget".to_string(), STOCK as u64)].into(),
        ..Default::default()
    };
    let qa = env.queue(s.clone()).await;
    let qb = env.queue(s.clone()).await;
    qa.ensure_group("orders").await.expect("declare");
    let mut confirms = observe(
        &env.rabbit_url.clone().unwrap(),
        &format!("{}.jobs", env.prefix),
        "orders.confirm",
    )
    .await;
    let sa = OrderService::new(qa.clone(), orders.clone()).unwrap();
    let sb = OrderService::new(qb.clone(), orders).unwrap();
    sa.seed_stock().await.unwrap();
    let a = WorkerPool::start(qa.clone(), sa.registry()).await.unwrap();
    let b = WorkerPool::start(qb.clone(), sb.registry()).await.unwrap();

    let wanted = support::orders::place_widget_orders([&sa, &sb], ORDERS).await;
    support::orders::wait_all_final(&sa, &wanted).await;

    let (mut confirmed, mut declined) = (HashSet::new(), 0);
    let mut confirmed_qty = 0;
    for (id, qty) in &wanted {
        let o = sa.get(id).await.unwrap().unwrap();
        match o.state {
            OrderState::Confirmed => {
                confirmed.insert(id.clone());
                confirmed_qty += qty;
            }
            OrderState::Cancelled => {
                if o.reason.as_deref() == Some("payment declined") {
                    declined += 1;
                    let last: Vec<&str> = o
                        .history
                        .iter()
                        .rev()
                        .take(2)
                        .map(|h| h["step"].as_str().unwrap_or("?"))
                        .collect();
                    assert_eq!(last, ["cancel_order", "release_stock"], "{id}");
                }
            }
            other => panic!("order {id} ended {other:?}"),
        }
    }
    assert!(declined > 0 && !confirmed.is_empty());
    let stock = sa.stock("widget").await.unwrap();
    assert_eq!(stock.held, confirmed_qty);
    assert_eq!(stock.available + confirmed_qty, STOCK, "{stock:?}");

    // The topic exchange carried one `orders.confirm` event per confirmed order.
    let mut seen = HashSet::new();
    let want = confirmed.len();
    let got_all =
        support::wait_until_async(Duration::from_secs(30), Duration::from_millis(50), || {
            while let Ok(ev) = confirms.try_recv() {
                let (key, job) = ev.split_once('|').unwrap_or_default();
                assert_eq!(key, "orders.confirm");
                seen.insert(job.to_string());
            }
            let n = seen.len();
            async move { n >= want }
        })
        .await;
    assert!(
        got_all,
        "{} confirm events for {} confirmed orders",
        seen.len(),
        confirmed.len()
    );
    let mut event_orders = HashSet::new();
    for job in &seen {
        let j = qa.get(job).await.unwrap().expect("confirm job record");
        assert_eq!(j.kind, "confirm");
        event_orders.insert(j.payload["order_id"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(event_orders, confirmed);
    let st = qa.stats("orders").await.unwrap();
    assert_eq!((st.length, st.delayed, st.dead), (0, 0, 0));
    assert!(a.shutdown().await.drained);
    assert!(b.shutdown().await.drained);
}

/// `app serve` on RabbitMQ: `/readyz` and `/metrics` name the backend, a task submitted over
/// HTTP runs on the in-process workers, a failing one is a dead letter the `app dlq` command
/// lists and replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reports_rabbitmq_and_runs_tasks() {
    use serde_json::json;
    use support::app::{base, client, json_of, metrics, sqlite_url, test_config, wait_state};
    let env = Env::rabbit();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(&sqlite_url(dir.path()), &env.redis.url());
    cfg.queue = env.settings();
    cfg.queue.backoff_base_ms = 10;
    cfg.queue.backoff_max_ms = 50;
    let app = app::server::start_with(cfg, app::wiring::extensions)
        .await
        .expect("start app with the queue on rabbitmq");
    let (c, b) = (client(), base(&app));
    let ready = json_of(c.get(format!("{b}/readyz"))).await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["queue_backend"], "rabbitmq");
    let metrics = metrics(&c, &b).await;
    assert!(
        metrics.contains(r#"app_queue_backend_info{backend="rabbitmq"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"app_queue_backend_info{backend="redis"} 0"#));

    let submit = async |body| {
        let v = json_of(c.post(format!("{b}/tasks")).json(&body)).await;
        v["id"].as_str().unwrap().to_string()
    };
    let ok = submit(json!({"kind": "echo", "input": {"hi": 1}})).await;
    let bad = submit(json!({"kind": "fail", "input": {"permanent": true}})).await;
    wait_state(&c, &format!("{b}/tasks/{ok}"), "succeeded").await;
    wait_state(&c, &format!("{b}/tasks/{bad}"), "dead").await;
    let rabbit_url = env.rabbit_url.clone().unwrap();
    let redis_url = env.redis.url();
    let cli = |args: &[&str]| {
        let (ok, out, err) = support::app::dlq_cli(
            &[
                ("APP_REDIS__URL", &redis_url),
                ("APP_QUEUE__BACKEND", "rabbitmq"),
                ("APP_QUEUE__RABBITMQ_URL", &rabbit_url),
                ("APP_QUEUE__KEY_PREFIX", &env.prefix),
            ],
            args,
        );
        assert!(ok, "{err}");
        out
    };
    let listed = cli(&["list", "--queue", "tasks"]);
    assert!(
        listed.contains(&bad) && listed.contains("1 dead letter(s)"),
        "{listed}"
    );
    let replayed = cli(&["replay", "--queue", "tasks", "--entry", &bad]);
    assert!(replayed.contains(&format!("replayed {bad}")), "{replayed}");
    // Permanent again: back in the dead letters with a fresh history mark.
    wait_state(&c, &format!("{b}/tasks/{bad}"), "dead").await;
    // Over HTTP: replay everything (the one dead letter), then purge it once dead again.
    let rep = json_of(c.post(format!("{b}/dlq/tasks/replay"))).await;
    assert_eq!(rep["replayed"], 1, "{rep}");
    wait_state(&c, &format!("{b}/tasks/{bad}"), "dead").await;
    let listed = json_of(c.get(format!("{b}/dlq/tasks"))).await;
    assert_eq!(listed["items"][0]["job_id"], bad.as_str(), "{listed}");
    let purged = json_of(c.delete(format!("{b}/dlq/tasks"))).await;
    assert_eq!(purged["purged"], 1, "{purged}");
    let report = app.stop().await.unwrap();
    assert!(report.http_finished);
}

/// `pending` on RabbitMQ is the queue's running set in Redis; an id whose job record vanished
/// without a script (a `DEL` by hand, eviction) would stay in it for ever, so `stats` drops
/// such ids: after one call only the job that still runs counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_forgets_jobs_whose_record_vanished() {
    use app::queue::{JobState, NewJob, QueueOverride};
    use redis::AsyncCommands;
    use support::conformance::stats::{expect_sizes, holder};
    let env = Env::rabbit();
    let mut s = env.settings();
    s.queues.insert(
        "conf".into(),
        QueueOverride {
            concurrency: Some(2),
            ..Default::default()
        },
    );
    let q = env.queue(s).await;
    q.ensure_group("conf").await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let e = q
            .enqueue(NewJob::new("conf", "hold", serde_json::json!({})))
            .await
            .unwrap();
        ids.push(e.id);
    }
    let pool = WorkerPool::start(q.clone(), holder()).await.unwrap();
    expect_sizes(&q, "conf", (2, 2, 0), "both jobs held").await;
    let mut c = q.connection();
    // Default settings: one partition, so both jobs' ids are in its running set.
    let running = q.keys().running(q.keys().partition(0).tag, "conf");
    let _: i64 = c.del(q.keys().job(&ids[0])).await.unwrap();
    let _: i64 = c.sadd(&running, "never-a-job").await.unwrap();
    let st = q.stats("conf").await.unwrap();
    assert_eq!((st.pending, st.length, st.lag), (1, 1, 0), "{st:?}");
    let left: Vec<String> = c.smembers(&running).await.unwrap();
    assert_eq!(left, [ids[1].clone()]);

    let _: () = c.set(q.keys().scoped("gate"), 1).await.unwrap();
    let done = support::wait_until_async(
        Duration::from_secs(90),
        Duration::from_millis(50),
        || async {
            q.get(&ids[1])
                .await
                .unwrap()
                .is_some_and(|j| j.state == JobState::Succeeded)
        },
    )
    .await;
    assert!(done, "{:?}", q.get(&ids[1]).await);
    expect_sizes(&q, "conf", (0, 0, 0), "after the held job finished").await;
    assert!(pool.shutdown().await.drained);
}

/// An enqueue the broker never confirmed (here: the producer points at a port where no broker
/// listens) fails, but the job is in Redis and in the outbox: a pool on the real broker
/// re-sends it, and it runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_enqueue_is_sent_again_from_the_outbox() {
    use app::queue::{JobState, NewJob};
    let env = Env::rabbit();
    let mut bad = env.settings();
    bad.rabbitmq_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", support::free_port());
    bad.rabbitmq_publish_timeout_ms = 500;
    let lost = app::queue::Queue::connect_lazy(&env.redis.url(), bad, None).unwrap();
    let err = lost
        .enqueue(NewJob::new(
            "tasks",
            "echo",
            serde_json::json!({"input": 7}),
        ))
        .await
        .expect_err("no broker: the enqueue cannot be confirmed");
    assert!(err.to_string().contains("rabbitmq"), "{err}");
    let q = env.queue(env.settings()).await;
    let tasks = app::tasks::TaskService::new(q.clone(), Default::default());
    // The job exists (queued) although the enqueue failed.
    let mut conn = q.connection();
    let ids: Vec<String> =
        redis::AsyncCommands::zrange(&mut conn, q.keys().outbox(q.keys().partition(0).tag), 0, -1)
            .await
            .unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(
        q.get(&ids[0]).await.unwrap().unwrap().state,
        JobState::Queued
    );
    let pool = WorkerPool::start(q.clone(), tasks.registry().unwrap())
        .await
        .unwrap();
    let done = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            q.get(&ids[0])
                .await
                .unwrap()
                .is_some_and(|j| j.state == JobState::Succeeded)
        },
    )
    .await;
    assert!(
        done,
        "the outbox never re-sent the job: {:?}",
        q.get(&ids[0]).await
    );
    let j = q.get(&ids[0]).await.unwrap().unwrap();
    assert_eq!(j.attempts, 1);
    assert_eq!(j.result, Some(serde_json::json!(7)));
    // The re-sent message can be delivered and run before its publisher confirm reaches the
    // pool that re-sent it; the job leaves the outbox once the confirm is in.
    let outbox_empty = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let left: Vec<String> = redis::AsyncCommands::zrange(
                &mut conn.clone(),
                q.keys().outbox(q.keys().partition(0).tag),
                0,
                -1,
            )
            .await
            .unwrap();
            left.is_empty()
        },
    )
    .await;
    let left: Vec<String> =
        redis::AsyncCommands::zrange(&mut conn, q.keys().outbox(q.keys().partition(0).tag), 0, -1)
            .await
            .unwrap();
    assert!(outbox_empty, "the job stayed in the outbox: {left:?}");
    assert!(pool.shutdown().await.drained);
}

/// The ids in the outbox of the queue's only partition.
async fn outbox_ids(q: &app::queue::Queue) -> Vec<String> {
    let key = q.keys().outbox(q.keys().partition(0).tag);
    redis::AsyncCommands::zrange(&mut q.connection(), key, 0, -1)
        .await
        .unwrap()
}

/// Waits (bounded) for the background CONFIRMED of the enqueues so far to empty the outbox.
async fn wait_outbox_empty(q: &app::queue::Queue, why: &str) {
    let empty = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(20),
        || async { outbox_ids(q).await.is_empty() },
    )
    .await;
    assert!(empty, "{why}: the outbox kept {:?}", outbox_ids(q).await);
}

/// A pool running `side`/`count` jobs, and how many runs its handler made.
async fn counting_pool(
    q: &app::queue::Queue,
) -> (WorkerPool, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let r = runs.clone();
    let reg =
        app::queue::Registry::new().on("side", "count", move |_ctx: app::queue::JobContext| {
            let r = r.clone();
            async move {
                r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(None)
            }
        });
    (WorkerPool::start(q.clone(), reg).await.unwrap(), runs)
}

/// Waits (bounded) for job `id` to succeed.
async fn wait_succeeded(q: &app::queue::Queue, id: &str) {
    let done = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            q.get(id)
                .await
                .unwrap()
                .is_some_and(|j| j.state == app::queue::JobState::Succeeded)
        },
    )
    .await;
    assert!(done, "job {id} did not succeed: {:?}", q.get(id).await);
}

/// The crash window after a confirmed publish: a queue of its own with one job of `side`
/// enqueued (confirmed), its CONFIRMED written in the background (the outbox empties though
/// nobody waited), then the job put back in the outbox with `score`, as if the process had
/// died before that write. Returns the queue and the job id.
async fn confirmed_but_unrecorded(env: &Env, score: u64) -> (app::queue::Queue, String) {
    let q = env.queue(env.settings()).await;
    q.ensure_group("side").await.unwrap();
    let id = q
        .enqueue(app::queue::NewJob::new(
            "side",
            "count",
            serde_json::json!({}),
        ))
        .await
        .expect("a confirmed enqueue")
        .id;
    wait_outbox_empty(&q, "after a confirmed enqueue").await;
    let j = q.get(&id).await.unwrap().unwrap();
    assert_eq!(j.state, app::queue::JobState::Queued);
    let key = q.keys().outbox(q.keys().partition(0).tag);
    let _: i64 = redis::AsyncCommands::zadd(&mut q.connection(), &key, &id, score)
        .await
        .unwrap();
    (q, id)
}

/// Crash window: the broker confirmed the publish but the process died before the
/// CONFIRMED write (it goes in the background, after `enqueue` returned). The job then
/// looks unconfirmed: a pool's outbox sweeper sends its message again, so the broker holds
/// two copies of the same message; the job still runs once (the second copy finds it
/// started or done and is dropped), and its record shows one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_confirmed_write_costs_one_duplicate_at_most() {
    use app::queue::Registry;
    use std::sync::atomic::Ordering;
    let env = Env::rabbit();
    // Back in the outbox, long overdue.
    let (q, id) = confirmed_but_unrecorded(&env, 0).await;
    // A pool of another queue sweeps the partition's outbox without consuming `side`.
    let sweeper = WorkerPool::start(
        q.clone(),
        Registry::new().on("other", "noop", |_ctx: app::queue::JobContext| async {
            Ok(None)
        }),
    )
    .await
    .unwrap();
    let two_copies = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async { q.stats("side").await.is_ok_and(|s| s.lag == 2) },
    )
    .await;
    assert!(
        two_copies,
        "the sweeper did not send the job again: {:?}",
        q.stats("side").await
    );
    wait_outbox_empty(&q, "after the sweeper's confirmed re-send").await;
    let (pool, runs) = counting_pool(&q).await;
    wait_succeeded(&q, &id).await;
    // The second copy is delivered too, and dropped.
    let drained = support::wait_until_async(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            q.stats("side")
                .await
                .is_ok_and(|s| (s.lag, s.pending) == (0, 0))
        },
    )
    .await;
    assert!(drained, "{:?}", q.stats("side").await);
    let j = q.get(&id).await.unwrap().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran twice");
    assert_eq!((j.attempts, support::successes(&j)), (1, 1), "{j:?}");
    assert!(pool.shutdown().await.drained);
    assert!(sweeper.shutdown().await.drained);
}

/// Crash window: CONFIRMED never written and the message delivered before the sweeper looked
/// (the usual case on a busy queue): START takes the job out of the outbox, so nothing is
/// sent again. The outbox entry here is scored in the future, so the sweeper never touches
/// it: only START can have removed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_job_leaves_the_outbox_at_start() {
    use std::sync::atomic::Ordering;
    let env = Env::rabbit();
    // Scored in the year 2096: never due for the sweeper.
    let (q, id) = confirmed_but_unrecorded(&env, 4_000_000_000_000).await;
    let (pool, runs) = counting_pool(&q).await;
    wait_succeeded(&q, &id).await;
    assert_eq!(outbox_ids(&q).await, Vec::<String>::new());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(pool.shutdown().await.drained);
}
