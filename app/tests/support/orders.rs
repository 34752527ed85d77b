//! Placing orders on the saga and waiting for them to end, shared by the saga tests of both
//! queue backends.

use std::time::Duration;

use app::orders::{OrderRequest, OrderService};

/// Places `n` orders of 1 to 3 widgets (1000 cents each), alternating between `services`
/// (one order service per worker instance); returns each order's id and quantity, in order.
pub async fn place_widget_orders(services: [&OrderService; 2], n: usize) -> Vec<(String, i64)> {
    let mut placed = Vec::with_capacity(n);
    for i in 0..n {
        let qty = 1 + (i % 3) as u32;
        let (id, created) = services[i % 2]
            .create(
                OrderRequest {
                    sku: "widget".into(),
                    quantity: qty,
                    amount_cents: 1000 * u64::from(qty),
                },
                None,
            )
            .await
            .expect("create order");
        assert!(created, "order {id} was not new");
        placed.push((id, i64::from(qty)));
    }
    placed
}

/// Waits (bounded, 180 s) until every order of `placed` is confirmed or cancelled; fails the
/// test otherwise.
pub async fn wait_all_final(svc: &OrderService, placed: &[(String, i64)]) {
    let all_final = super::wait_until_async(
        Duration::from_secs(180),
        Duration::from_millis(200),
        || async {
            for (id, _) in placed {
                match svc.get(id).await.expect("read order") {
                    Some(o) if o.state.is_final() => {}
                    _ => return false,
                }
            }
            true
        },
    )
    .await;
    assert!(all_final, "not every order reached confirmed or cancelled");
}
