//! Building, running and stopping one app instance.
//!
//! Shutdown order (so no client connection breaks under direct server return):
//! drain on every control plane -> report not-ready -> keep serving for
//! `shutdown.drain_delay_ms` -> stop accepting and finish in-flight requests (bounded by
//! `shutdown.grace_ms`) -> deregister from every control plane -> extension shutdown hooks
//! (queue workers) -> background tasks (cache scheduler flushes pending deletes) -> close
//! the database pool -> exit.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::Cache;
use crate::config::Config;
use crate::http;
use crate::metrics::Metrics;
use crate::registration::Registrar;
use crate::state::{AppState, Readiness, Shared};
use crate::store::{PoolMetrics, Store};

/// What other modules (the queue, tasks, orders) add to an instance.
#[derive(Default)]
pub struct Extensions {
    /// Routes with their own state and OpenAPI document, merged under the app's middleware
    /// (request ids, logs, metrics, panic recovery, timeout, body limit, rate limit) and
    /// into the served document.
    pub routes: Option<utoipa_axum::router::OpenApiRouter>,
    /// Awaited after in-flight HTTP requests finished (each bounded by `shutdown.grace_ms`),
    /// e.g. stopping workers. Watch `AppState::shutdown` to stop taking new work earlier.
    pub on_shutdown: Vec<BoxFuture<'static, ()>>,
}

/// What happened during shutdown (logged; tests assert on it).
#[derive(Debug, Clone, Default)]
pub struct ShutdownReport {
    pub drained: usize,
    pub deregistered: usize,
    pub control_planes: usize,
    /// False when in-flight requests outlived `shutdown.grace_ms` and were cut.
    pub http_finished: bool,
}

/// A running instance.
pub struct RunningApp {
    pub addr: SocketAddr,
    pub state: AppState,
    done: JoinHandle<ShutdownReport>,
}

impl RunningApp {
    /// Starts the ordered shutdown (what SIGTERM does); returns at once.
    pub fn shutdown(&self) {
        self.state.shutdown.cancel();
    }

    /// Waits until the instance has stopped.
    pub async fn wait(self) -> anyhow::Result<ShutdownReport> {
        self.done.await.context("shutdown task panicked")
    }

    /// `shutdown` then `wait`.
    pub async fn stop(self) -> anyhow::Result<ShutdownReport> {
        self.shutdown();
        self.wait().await
    }
}

/// Connects the database and builds the shared state (no sockets, no tasks yet).
pub async fn build_state(cfg: Config) -> anyhow::Result<AppState> {
    let metrics = Metrics::new().context("creating metrics")?;
    let pool_metrics =
        PoolMetrics::register(&metrics.registry).context("registering the pool metrics")?;
    let store = Store::connect(&cfg.database, pool_metrics)
        .await
        .with_context(|| {
            format!(
                "connecting to the database ({})",
                crate::config::redact_url(&cfg.database.url)
            )
        })?;
    let instance = cfg.instance_name();
    let cache = Cache::new(&cfg.cache, &cfg.redis, &instance, metrics.clone())
        .context("creating the cache")?;
    Ok(AppState::new(Shared {
        config: Arc::new(cfg),
        instance: instance.into(),
        store,
        cache,
        metrics,
        readiness: Arc::new(Readiness::default()),
        shutdown: CancellationToken::new(),
    }))
}

/// Starts an instance with no extensions.
pub async fn start(cfg: Config) -> anyhow::Result<RunningApp> {
    start_with(cfg, |_| async { Ok(Extensions::default()) }).await
}

/// Starts an instance; `extend` gets the state and returns the extra routes and shutdown
/// hooks of other modules.
pub async fn start_with<F, Fut>(cfg: Config, extend: F) -> anyhow::Result<RunningApp>
where
    F: FnOnce(AppState) -> Fut,
    Fut: Future<Output = anyhow::Result<Extensions>>,
{
    let state = build_state(cfg).await?;
    let cfg = state.config.clone();
    let ext = extend(state.clone()).await?;
    let admin = http::AdminToken::load(&cfg.http)?;
    let router = http::router_with(state.clone(), ext.routes.unwrap_or_default(), admin);

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;

    let background = TaskTracker::new();
    let background_stop = CancellationToken::new();
    state
        .cache
        .spawn_background(state.store.clone(), &background, background_stop.clone());

    let registrar = Registrar::new(&cfg.registration, state.metrics.clone())?.map(Arc::new);
    if let Some(r) = &registrar {
        r.start();
    }

    let http_stop = CancellationToken::new();
    let server = {
        let stop = http_stop.clone();
        tokio::spawn(async move {
            let svc = router.into_make_service_with_connect_info::<SocketAddr>();
            // Answers leave at once instead of waiting for the client's ACK of the last
            // segment (Nagle); Go's net/http, HAProxy and nginx do the same.
            let listener = listener.tap_io(|tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY not set");
                }
            });
            if let Err(e) = axum::serve(listener, svc)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "http server failed");
            }
        })
    };
    state.metrics.ready.set(1);
    tracing::info!(%addr, instance = %state.instance, database = ?state.store.kind(), "app listening");

    let st = state.clone();
    let done = tokio::spawn(async move {
        st.shutdown.cancelled().await;
        shutdown_sequence(
            st,
            registrar,
            http_stop,
            server,
            ext.on_shutdown,
            background,
            background_stop,
        )
        .await
    });
    Ok(RunningApp { addr, state, done })
}

async fn shutdown_sequence(
    st: AppState,
    registrar: Option<Arc<Registrar>>,
    http_stop: CancellationToken,
    mut server: JoinHandle<()>,
    hooks: Vec<BoxFuture<'static, ()>>,
    background: TaskTracker,
    background_stop: CancellationToken,
) -> ShutdownReport {
    let sc = &st.config.shutdown;
    let cp_timeout = Duration::from_millis(sc.control_plane_timeout_ms);
    let grace = Duration::from_millis(sc.grace_ms);
    let mut report = ShutdownReport::default();
    tracing::info!("shutdown: draining on the control planes");
    if let Some(r) = &registrar {
        report.control_planes = st.config.registration.control_planes.len();
        report.drained = r.drain(cp_timeout).await;
    }
    tracing::info!("shutdown: reporting not-ready");
    st.readiness.start_draining();
    st.metrics.ready.set(0);
    tokio::time::sleep(Duration::from_millis(sc.drain_delay_ms)).await;

    tracing::info!(
        in_flight = st.metrics.http_in_flight.get(),
        "shutdown: finishing in-flight requests"
    );
    http_stop.cancel();
    report.http_finished = match tokio::time::timeout(grace, &mut server).await {
        Ok(_) => true,
        Err(_) => {
            tracing::warn!(
                grace_ms = sc.grace_ms,
                "in-flight requests outlived the grace period; closing them"
            );
            server.abort();
            false
        }
    };

    if let Some(r) = &registrar {
        tracing::info!("shutdown: deregistering from the control planes");
        report.deregistered = r.deregister(cp_timeout).await;
    }
    for hook in hooks {
        if tokio::time::timeout(grace, hook).await.is_err() {
            tracing::warn!("a shutdown hook outlived the grace period");
        }
    }
    background_stop.cancel();
    background.close();
    if tokio::time::timeout(Duration::from_secs(5), background.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop in time");
    }
    st.store.close().await;
    tracing::info!(?report, "shutdown complete");
    report
}
