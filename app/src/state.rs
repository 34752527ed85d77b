//! The state every handler shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

/// Readiness as `/readyz` reports it: false from the moment shutdown starts draining.
#[derive(Debug, Default)]
pub struct Readiness {
    draining: AtomicBool,
}

impl Readiness {
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Shared application state: one pointer, so the per-request clones axum's `State`
/// extractor makes cost one reference count (cloning the fields themselves, a metrics
/// registry of Arc'd series and a cancellation token, was several percent of `/ping`'s CPU).
/// Fields are reached through `Deref`.
///
/// Plug-in point for other modules: `server::start_with` hands this state to an extension
/// builder (`crate::wiring::extensions` for the queue, tasks and orders), which returns
/// routes with their own state and shutdown hooks in `server::Extensions`. A handle that the
/// users API itself needs would get a field in [`Shared`].
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points to.
pub struct Shared {
    pub config: Arc<Config>,
    pub instance: Arc<str>,
    pub store: Store,
    pub cache: Cache,
    pub metrics: Metrics,
    pub readiness: Arc<Readiness>,
    /// Cancelled when shutdown starts (SIGTERM): long-running work stops taking new jobs.
    pub shutdown: CancellationToken,
}
