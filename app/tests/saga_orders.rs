//! The order saga with payment failing 30% of the time, on two worker instances: every
//! order ends confirmed or cancelled, compensations ran in reverse, and stock adds up.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use app::orders::{OrderService, OrderSettings, OrderState};
use app::queue::{Queue, QueueSettings, WorkerPool};
use redis::AsyncCommands;
use serde_json::{Value, json};

const ORDERS: usize = 200;
const STOCK: i64 = 250;

fn settings() -> QueueSettings {
    QueueSettings {
        block_ms: 200,
        mover_interval_ms: 20,
        backoff_base_ms: 20,
        backoff_max_ms: 100,
        default_concurrency: 16,
        ..Default::default()
    }
}

fn order_settings() -> OrderSettings {
    OrderSettings {
        payment_failure_rate: 0.3,
        initial_stock: [("widget".to_string(), STOCK as u64)].into(),
        ..Default::default()
    }
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

fn steps(history: &[Value]) -> Vec<String> {
    history
        .iter()
        .map(|h| {
            format!(
                "{}:{}",
                h["step"].as_str().unwrap_or("?"),
                h["status"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_ends_confirmed_or_cancelled_and_stock_adds_up() {
    let r = support::RedisServer::start();
    let qa = Queue::connect(&r.url(), settings()).await.unwrap();
    let qb = Queue::connect(&r.url(), settings()).await.unwrap();
    let sa = OrderService::new(qa.clone(), order_settings()).unwrap();
    let sb = OrderService::new(qb.clone(), order_settings()).unwrap();
    sa.seed_stock().await.unwrap();
    sb.seed_stock().await.unwrap(); // a second seed changes nothing
    let a = WorkerPool::start(qa.clone(), sa.registry()).await.unwrap();
    let b = WorkerPool::start(qb.clone(), sb.registry()).await.unwrap();

    let placed = support::orders::place_widget_orders([&sa, &sb], ORDERS).await;
    support::orders::wait_all_final(&sa, &placed).await;

    let (mut confirmed, mut cancelled, mut declined, mut out_of_stock) = (0, 0, 0, 0);
    let mut confirmed_qty = 0i64;
    let mut confirmed_ids = Vec::new();
    for (id, qty) in &placed {
        let o = sa.get(id).await.unwrap().unwrap();
        let s = steps(&o.history);
        match o.state {
            OrderState::Confirmed => {
                confirmed += 1;
                confirmed_qty += qty;
                confirmed_ids.push(id.clone());
                assert_eq!(
                    s,
                    [
                        "create_order:done",
                        "reserve_stock:done",
                        "take_payment:done",
                        "confirm:done"
                    ],
                    "{id}"
                );
            }
            OrderState::Cancelled => {
                cancelled += 1;
                match o.reason.as_deref() {
                    Some("payment declined") => {
                        declined += 1;
                        // Compensations in reverse: the stock goes back, then the order.
                        assert_eq!(
                            s,
                            [
                                "create_order:done",
                                "reserve_stock:done",
                                "take_payment:failed",
                                "release_stock:compensated",
                                "cancel_order:compensated"
                            ],
                            "{id}"
                        );
                    }
                    Some("out of stock") => {
                        out_of_stock += 1;
                        assert_eq!(
                            s,
                            [
                                "create_order:done",
                                "reserve_stock:failed",
                                "cancel_order:compensated"
                            ],
                            "{id}"
                        );
                    }
                    other => panic!("order {id} cancelled for {other:?}"),
                }
            }
            other => panic!("order {id} ended {other:?}"),
        }
    }
    assert_eq!(confirmed + cancelled, ORDERS);
    assert!(declined > 0, "30% payment failures must cancel some orders");
    assert!(confirmed > 0);

    // Stock adds up exactly: what is left plus what confirmed orders hold is the start.
    let stock = sa.stock("widget").await.unwrap();
    assert_eq!(stock.held, confirmed_qty);
    assert_eq!(
        stock.available + confirmed_qty,
        STOCK,
        "{stock:?} out_of_stock={out_of_stock}"
    );
    assert!(stock.available >= 0);
    // Charges exist exactly for the confirmed orders.
    let mut conn = qa.connection();
    let charges: HashMap<String, u64> = conn
        .hgetall(app::orders::charges_key(&qa, "widget"))
        .await
        .unwrap();
    let mut charged: Vec<String> = charges.into_keys().collect();
    charged.sort();
    confirmed_ids.sort();
    assert_eq!(charged, confirmed_ids);
    // No saga step is left behind.
    let st = qa.stats("orders").await.unwrap();
    assert_eq!((st.length, st.pending, st.delayed, st.dead), (0, 0, 0, 0));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_http_api() {
    let r = support::RedisServer::start();
    let q = Queue::connect(&r.url(), settings()).await.unwrap();
    let svc = OrderService::new(
        q.clone(),
        OrderSettings {
            payment_failure_rate: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let pool = WorkerPool::start(q.clone(), svc.registry()).await.unwrap();
    let api = serve(app::orders::routes(svc.clone()).into()).await;
    let http = reqwest::Client::new();

    let r = http
        .put(format!("{api}/orders/stock/gizmo"))
        .json(&json!({"available": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let order = json!({"sku": "gizmo", "quantity": 2, "amount_cents": 500});
    let r = http
        .post(format!("{api}/orders"))
        .header("Idempotency-Key", "o-1")
        .json(&order)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let first: Value = r.json().await.unwrap();
    let again: Value = http
        .post(format!("{api}/orders"))
        .header("Idempotency-Key", "o-1")
        .json(&order)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["created"], false);
    let id = first["id"].as_str().unwrap().to_string();

    let done =
        support::wait_until_async(Duration::from_secs(60), Duration::from_millis(50), || {
            let (http, url) = (http.clone(), format!("{api}/orders/{id}"));
            async move {
                let v: Value = http.get(url).send().await.unwrap().json().await.unwrap();
                v["state"] == "confirmed"
            }
        })
        .await;
    assert!(done);
    let v: Value = http
        .get(format!("{api}/orders/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["history"].as_array().unwrap().len(), 4);
    let stock: Value = http
        .get(format!("{api}/orders/stock/gizmo"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stock, json!({"sku": "gizmo", "available": 3, "held": 2}));

    let post = |body: &'static str| {
        http.post(format!("{api}/orders"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(post("{").await.unwrap().status(), 400);
    assert_eq!(post(r#"{"sku": "gizmo"}"#).await.unwrap().status(), 422);
    assert_eq!(
        post(r#"{"sku": "gizmo", "quantity": 0, "amount_cents": 1}"#)
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        post(r#"{"sku": "bad sku", "quantity": 1, "amount_cents": 1}"#)
            .await
            .unwrap()
            .status(),
        422
    );
    let r = http
        .get(format!("{api}/orders/ffffffffffffffffffffffffffffffff"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    pool.shutdown().await;
}
