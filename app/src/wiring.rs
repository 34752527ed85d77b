//! The composition root of the `app` binary: builds the queue from the configuration (its
//! transport is the one `queue.backend` names), the services on it (tasks, orders), and
//! plugs them into the server: the routes and in-process workers of `app serve`, the
//! worker-only process of `app worker` and the `app dlq` commands. The modules it wires do
//! not know each other beyond what they use (`tasks` and `orders` use `queue`); this is the
//! only module that knows them all.

use std::future::Future;

use anyhow::Context;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::orders::OrderService;
use crate::queue::cli::DlqCommand;
use crate::queue::{Queue, QueueMetrics, Registry, WorkerPool};
use crate::server::Extensions;
use crate::state::AppState;
use crate::tasks::TaskService;

/// The Redis the queue keeps its job records in: `queue.redis_url`, else `redis.url`.
fn queue_redis_url(cfg: &Config) -> &str {
    cfg.queue.redis_url.as_deref().unwrap_or(&cfg.redis.url)
}

/// The balancers' addresses (the hosts of `registration.control_planes`): no task callback
/// may go there (`tasks::target`).
async fn control_plane_hosts(cfg: &Config) -> Vec<std::net::IpAddr> {
    let mut out = Vec::new();
    for u in &cfg.registration.control_planes {
        let Ok(url) = reqwest::Url::parse(u) else {
            continue;
        };
        let Some(host) = url.host_str() else { continue };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        match tokio::net::lookup_host((host.as_str(), 0)).await {
            Ok(addrs) => out.extend(addrs.map(|a| a.ip())),
            Err(e) => {
                tracing::warn!(control_plane = %u, error = %e, "cannot resolve a control plane to refuse callbacks to it")
            }
        }
    }
    out
}

/// The queue handle and the services built on it.
#[derive(Clone)]
pub struct Work {
    pub queue: Queue,
    pub tasks: TaskService,
    pub orders: OrderService,
}

impl Work {
    /// Connects the queue (its own connections, to `queue.redis_url` or `redis.url`, and
    /// with `queue.backend = "rabbitmq"` to `queue.rabbitmq_url`).
    pub async fn connect(cfg: &Config, metrics: Option<QueueMetrics>) -> anyhow::Result<Self> {
        // Lazy: the service starts while Redis (or RabbitMQ) is down; queue routes answer 503
        // until it is back.
        let queue = Queue::connect_lazy(queue_redis_url(cfg), cfg.queue.clone(), metrics)
            .context("setting up the queue's Redis connection")?;
        let tasks = TaskService::with_refused_hosts(
            queue.clone(),
            cfg.tasks.clone(),
            &control_plane_hosts(cfg).await,
        );
        let orders = OrderService::new(queue.clone(), cfg.orders.clone())?;
        if let Err(e) = orders.seed_stock().await {
            tracing::warn!(error = %e, "orders.initial_stock not seeded (Redis unavailable?)");
        }
        Ok(Self {
            queue,
            tasks,
            orders,
        })
    }

    /// `/tasks`, `/orders`, `/dlq`, with their OpenAPI document.
    pub fn routes(&self) -> OpenApiRouter {
        OpenApiRouter::new()
            .merge(crate::tasks::routes(self.tasks.clone()))
            .merge(crate::orders::routes(self.orders.clone()))
            .merge(crate::http::dlq::routes(self.queue.clone()))
    }

    /// Handlers of every queue: tasks, callbacks, orders.
    pub fn registry(&self) -> anyhow::Result<Registry> {
        Ok(self.tasks.registry()?.merge(self.orders.registry()))
    }

    /// Starts a worker pool for every queue.
    pub async fn start_workers(&self) -> anyhow::Result<WorkerPool> {
        WorkerPool::start(self.queue.clone(), self.registry()?)
            .await
            .context("starting the worker pool")
    }
}

/// The OpenAPI document of `app serve` without a running instance (`app openapi`): the users
/// API and probes, tasks, orders and dead letters, as `GET /openapi.json` serves it.
pub fn openapi() -> OpenApi {
    let mut doc = crate::http::openapi();
    doc.merge(crate::tasks::api().into_openapi());
    doc.merge(crate::orders::api().into_openapi());
    doc.merge(crate::http::dlq::api().into_openapi());
    crate::api::conventions(&mut doc);
    doc
}

/// The extension of `app serve`: routes, plus in-process workers (unless
/// `queue.workers_in_serve = false`) that stop taking jobs as soon as shutdown starts.
pub async fn extensions(state: AppState) -> anyhow::Result<Extensions> {
    let metrics =
        QueueMetrics::register(&state.metrics.registry).context("registering the queue metrics")?;
    metrics.set_backend(state.config.queue.backend);
    let work = Work::connect(&state.config, Some(metrics)).await?;
    let mut ext = Extensions {
        routes: Some(work.routes()),
        on_shutdown: Vec::new(),
    };
    if state.config.queue.workers_in_serve {
        let pool = work.start_workers().await?;
        let shutdown = state.shutdown.clone();
        let stopped = tokio::spawn(async move {
            shutdown.cancelled().await;
            pool.shutdown().await
        });
        ext.on_shutdown.push(Box::pin(async move {
            match stopped.await {
                Ok(report) => tracing::info!(?report, "queue workers stopped"),
                Err(e) => tracing::error!(error = %e, "queue worker shutdown failed"),
            }
        }));
    }
    Ok(ext)
}

/// `app worker`: runs workers for every queue until `stop` resolves, then shuts down
/// gracefully. Fails if running jobs had to be abandoned (they are reclaimed elsewhere).
pub async fn run_worker(cfg: Config, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let work = Work::connect(&cfg, None).await?;
    let pool = work.start_workers().await?;
    tracing::info!(consumer = pool.consumer(), backend = %cfg.queue.backend, queues = ?work.registry()?.queues(), "worker running");
    stop.await;
    let report = pool.shutdown().await;
    work.queue.close().await;
    if !report.drained {
        anyhow::bail!(
            "{} running job(s) outlived queue.shutdown_grace_ms and were left for another worker",
            report.abandoned
        );
    }
    Ok(())
}

/// `app dlq ...`: one dead-letter command on the configured queue.
pub async fn run_dlq(cfg: &Config, cmd: DlqCommand) -> anyhow::Result<()> {
    let q = Queue::connect(queue_redis_url(cfg), cfg.queue.clone())
        .await
        .context("connecting to the queue")?;
    let r = crate::queue::cli::run(&q, cmd).await;
    q.close().await;
    r
}
