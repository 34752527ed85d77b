//! Step handlers: run the step's script, then emit the job for the state it led to. Step
//! jobs carry the idempotency key `{order}:{step}`, so a redelivered handler (which finds
//! its step already done) emits nothing new.

use std::sync::Arc;

use serde_json::json;

use super::steps;
use super::{ORDERS_QUEUE, OrderKeys, OrderSettings, OrderState};
use crate::queue::{JobContext, JobError, JobOutput, NewJob, Queue, QueueError, Registry};

const FORWARD: &[&str] = &["reserve_stock", "take_payment", "confirm"];
const COMPENSATIONS: &[&str] = &["release_stock", "cancel_order"];

/// Enqueues the step that moves an order on from `state` (nothing for a final state).
pub(super) async fn emit(
    queue: &Queue,
    settings: &OrderSettings,
    order_id: &str,
    state: OrderState,
) -> Result<(), QueueError> {
    let Some(step) = state.next_step() else {
        return Ok(());
    };
    let mut job = NewJob::new(ORDERS_QUEUE, step, json!({ "order_id": order_id }))
        .idempotency_key(format!("{order_id}:{step}"));
    if COMPENSATIONS.contains(&step) {
        job = job.max_attempts(settings.compensation_max_attempts);
    }
    queue.enqueue(job).await?;
    Ok(())
}

fn parse_state(s: &str, order_id: &str) -> Result<OrderState, JobError> {
    OrderState::parse(s).ok_or_else(|| JobError::permanent(format!("order {order_id} not found")))
}

/// Runs the script of `step`; returns the order's state afterwards.
async fn run_step(
    settings: &OrderSettings,
    ctx: &JobContext,
    step: &str,
    order_id: &str,
) -> Result<OrderState, JobError> {
    let k = OrderKeys(&ctx.queue);
    let mut conn = ctx.queue.connection();
    let Some(sku) = super::sku_of(order_id) else {
        return Err(JobError::permanent(format!("order {order_id} not found")));
    };
    let (order, history) = (k.order(order_id), k.history(order_id));
    let state: String = match step {
        "reserve_stock" => {
            steps::RESERVE_S
                .key(&order)
                .key(&history)
                .key(k.stock(sku))
                .key(k.held(sku))
                .arg(order_id)
                .invoke_async(&mut conn)
                .await?
        }
        "take_payment" => {
            // The simulated payment provider.
            let declined = rand::random::<f64>() < settings.payment_failure_rate;
            steps::PAY_S
                .key(&order)
                .key(&history)
                .key(k.payment(order_id))
                .key(k.charges(sku))
                .arg(order_id)
                .arg(if declined { "declined" } else { "approved" })
                .arg(ctx.queue.settings().retention_s)
                .invoke_async(&mut conn)
                .await?
        }
        "confirm" => {
            steps::CONFIRM_S
                .key(&order)
                .key(&history)
                .invoke_async(&mut conn)
                .await?
        }
        "release_stock" => {
            steps::RELEASE_S
                .key(&order)
                .key(&history)
                .key(k.stock(sku))
                .key(k.held(sku))
                .key(k.charges(sku))
                .arg(order_id)
                .invoke_async(&mut conn)
                .await?
        }
        "cancel_order" => {
            steps::CANCEL_S
                .key(&order)
                .key(&history)
                .invoke_async(&mut conn)
                .await?
        }
        other => return Err(JobError::permanent(format!("unknown saga step {other:?}"))),
    };
    parse_state(&state, order_id)
}

async fn handle(settings: Arc<OrderSettings>, ctx: JobContext) -> Result<JobOutput, JobError> {
    let order_id = ctx
        .payload
        .get("order_id")
        .and_then(|v| v.as_str())
        .ok_or_else(|| JobError::permanent("step payload without order_id"))?
        .to_string();
    let step = ctx.kind.clone();
    let outcome = async {
        let state = run_step(&settings, &ctx, &step, &order_id).await?;
        emit(&ctx.queue, &settings, &order_id, state).await?;
        Ok::<_, JobError>(state)
    }
    .await;
    match outcome {
        Ok(state) => Ok(Some(json!({ "order_id": order_id, "state": state }))),
        Err(e) if ctx.is_last_attempt() && FORWARD.contains(&step.as_str()) => {
            // The step failed for good: compensate what was done so far.
            let k = OrderKeys(&ctx.queue);
            let mut conn = ctx.queue.connection();
            let state: String = steps::GIVE_UP_S
                .key(k.order(&order_id))
                .key(k.history(&order_id))
                .arg(&step)
                .arg(e.to_string())
                .invoke_async(&mut conn)
                .await?;
            let state = parse_state(&state, &order_id)?;
            emit(&ctx.queue, &settings, &order_id, state).await?;
            Err(JobError::permanent(format!(
                "{step} failed for good ({e}); order compensating"
            )))
        }
        Err(e) => Err(e),
    }
}

pub(super) fn registry(settings: OrderSettings) -> Registry {
    let settings = Arc::new(settings);
    let mut reg = Registry::new();
    for step in FORWARD.iter().chain(COMPENSATIONS) {
        let s = settings.clone();
        reg = reg.on(ORDERS_QUEUE, step, move |ctx| handle(s.clone(), ctx));
    }
    reg
}
