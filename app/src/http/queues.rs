//! `GET /queues`: every queue's sizes now and the jobs this instance's workers finished, in one
//! answer, for the dashboard (`/ui/`) as Sidekiq's and BullMQ's UIs show them. The sizes come
//! from the queue's storage (as `app dlq stats`); the finished jobs are the
//! `app_queue_jobs_total` series of this instance's metrics registry, read back, so the page
//! and Prometheus count the same thing. Nothing here is secret beyond what `/metrics` shows.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ApiError, ErrorBody};
use crate::queue::Queue;

/// The series whose outcomes make the jobs per second.
const JOBS_SERIES: &str = "app_queue_jobs_total";

/// What the route reads.
#[derive(Clone)]
pub struct Queues {
    queue: Queue,
    names: Arc<[String]>,
    registry: Option<prometheus::Registry>,
}

impl Queues {
    /// `names`: the queues this app's handlers serve; `registry`: where the queue metrics
    /// are registered (none: finished counts are left empty).
    pub fn new(queue: Queue, names: Vec<String>, registry: Option<prometheus::Registry>) -> Self {
        Self {
            queue,
            names: names.into(),
            registry,
        }
    }
}

/// Every queue now.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueOverview {
    pub at_unix_ms: u64,
    /// `redis` or `rabbitmq`.
    pub backend: String,
    pub queues: Vec<QueueRow>,
}

/// One queue's sizes and this instance's finished jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueRow {
    pub queue: String,
    /// Jobs in the queue: waiting for a worker plus in flight.
    pub depth: u64,
    /// Waiting for a delivery.
    pub waiting: u64,
    /// Delivered to a worker and not acknowledged yet.
    pub in_flight: u64,
    /// Delayed jobs and retries waiting for their time.
    pub retries_scheduled: u64,
    /// In the dead-letter set (browse and replay them under `/dlq/{queue}`).
    pub dead_letters: u64,
    /// Attempts this instance's workers finished since it started, by outcome
    /// (`succeeded`, `retried`, `dead`, `stale`): two answers make jobs per second.
    pub finished: BTreeMap<String, u64>,
}

/// The route and its document.
pub fn routes<S: Clone + Send + Sync + 'static>(queues: Queues) -> OpenApiRouter<S> {
    api().with_state(queues)
}

/// The route without its state: what the document is made from.
pub fn api() -> OpenApiRouter<Queues> {
    OpenApiRouter::new().routes(routes!(overview))
}

/// Every queue's depth, in-flight jobs, scheduled retries and dead letters, and the jobs this
/// instance finished.
#[utoipa::path(get, path = "/queues", tag = "queues",
    responses(
        (status = OK, description = "every queue", body = QueueOverview),
        (status = SERVICE_UNAVAILABLE, description = "`queue_unavailable`: the queue's storage did not answer", body = ErrorBody),
    ))]
async fn overview(State(q): State<Queues>) -> Result<Json<QueueOverview>, ApiError> {
    let finished = q.registry.as_ref().map(finished_jobs).unwrap_or_default();
    let mut queues = Vec::with_capacity(q.names.len());
    for name in q.names.iter() {
        let st = q.queue.stats(name).await?;
        queues.push(QueueRow {
            queue: name.clone(),
            depth: st.length,
            waiting: st.lag,
            in_flight: st.pending,
            retries_scheduled: st.delayed,
            dead_letters: st.dead,
            finished: finished.get(name).cloned().unwrap_or_default(),
        });
    }
    Ok(Json(QueueOverview {
        at_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        backend: q.queue.backend().to_string(),
        queues,
    }))
}

/// `app_queue_jobs_total` by queue and outcome.
fn finished_jobs(registry: &prometheus::Registry) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for family in registry.gather() {
        if family.name() != JOBS_SERIES {
            continue;
        }
        for m in family.get_metric() {
            let label = |n: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == n)
                    .map(|l| l.value().to_string())
            };
            if let (Some(queue), Some(outcome)) = (label("queue"), label("outcome")) {
                *out.entry(queue).or_default().entry(outcome).or_default() +=
                    m.get_counter().get_value() as u64;
            }
        }
    }
    out
}
