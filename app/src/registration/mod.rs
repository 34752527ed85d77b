//! Self-registration with the balancer's control planes (usually an active/backup pair).
//!
//! On start, one background task per control plane and VIP (a dual-stack service is one VIP
//! per family, see `extra_vips`) registers with exponential backoff
//! until it succeeds (an unreachable control plane never blocks start-up), then
//! re-registers every `refresh_ms` so a restarted control plane learns about us again.
//! A re-registration is a heartbeat: it never undoes an operator's drain (`lbctl backend
//! drain`), nor an operator's weight while we declare the same weight as before; we log a
//! warning once when we find ourselves drained (or re-weighted) by an operator, so the
//! owner of this backend sees why less traffic comes.
//! On shutdown: [`Registrar::drain`] on every control plane (marked as our own drain, which
//! our next registration undoes should we die before deregistering), then (after in-flight
//! requests finished) [`Registrar::deregister`].
//!
//! lbd's answer says how a VIP's packets reach us (mode, VIP address, backend MTU); from
//! then on the host's DSR setup for that VIP is checked (`hostcheck`) at once and every
//! `self_check_interval_ms`, and the report goes with every registration for the VIP. A
//! report whose findings changed is sent at once, so lbd stops (or resumes) new flows within
//! one check.

mod client;

use std::time::Duration;

use futures::future::join_all;
use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use client::{ControlPlane, Registered, RegistrationError};

use crate::config::{RegistrationConfig, VipMembership};
use crate::hostcheck::{self, Forwarding, SelfCheck, Status, Target};
use crate::metrics::Metrics;

pub struct Registrar {
    planes: Vec<ControlPlane>,
    /// The VIPs this backend serves, each with its address for that VIP.
    members: Vec<VipMembership>,
    /// The self-check of each member (same index).
    checks: Vec<MemberCheck>,
    /// How often the host's DSR setup is checked (`None`: never).
    self_check: Option<Duration>,
    weight: u32,
    retry_initial: Duration,
    retry_max: Duration,
    refresh: Option<Duration>,
    metrics: Metrics,
    /// Stops the register/refresh loops before draining, so a refresh cannot undrain us.
    loops: CancellationToken,
    tracker: TaskTracker,
}

/// One VIP's self-check state.
struct MemberCheck {
    /// The latest report (sent with every registration for the VIP).
    report: watch::Sender<Option<SelfCheck>>,
    /// How lbd forwards the VIP's packets to us, from its latest answer.
    forwarding: watch::Sender<Option<Forwarding>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistrarError {
    #[error("registration.token_file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] RegistrationError),
}

impl Registrar {
    /// `None` when no control plane is configured.
    pub fn new(cfg: &RegistrationConfig, metrics: Metrics) -> Result<Option<Self>, RegistrarError> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let token = read_token(cfg)?;
        let timeout = Duration::from_millis(cfg.request_timeout_ms.max(1));
        let planes = cfg
            .control_planes
            .iter()
            .map(|u| ControlPlane::new(u, &token, timeout))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Self {
            planes,
            members: cfg.memberships(),
            checks: cfg
                .memberships()
                .iter()
                .map(|_| MemberCheck {
                    report: watch::channel(None).0,
                    forwarding: watch::channel(None).0,
                })
                .collect(),
            self_check: (cfg.self_check_interval_ms > 0)
                .then(|| Duration::from_millis(cfg.self_check_interval_ms)),
            weight: cfg.weight,
            retry_initial: Duration::from_millis(cfg.retry_initial_ms.max(1)),
            retry_max: Duration::from_millis(cfg.retry_max_ms.max(cfg.retry_initial_ms).max(1)),
            refresh: (cfg.refresh_ms > 0).then(|| Duration::from_millis(cfg.refresh_ms)),
            metrics,
            loops: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }))
    }

    fn count(&self, op: &str, ok: bool) {
        self.metrics
            .registration_calls
            .with_label_values(&[op, if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Starts the background register loops (returns at once).
    pub fn start(self: &std::sync::Arc<Self>) {
        for i in 0..self.planes.len() {
            for m in 0..self.members.len() {
                let me = self.clone();
                self.tracker
                    .spawn(async move { me.register_loop(i, m).await });
            }
        }
        if self.self_check.is_some() {
            for m in 0..self.members.len() {
                let me = self.clone();
                self.tracker.spawn(async move { me.check_loop(m).await });
            }
        }
    }

    /// Checks the host whenever lbd's forwarding facts change and every interval; publishes
    /// the report (the register loops send it, at once when its findings changed).
    async fn check_loop(&self, m: usize) {
        let Some(every) = self.self_check else {
            return;
        };
        let vip = &self.members[m].vip;
        let Ok(address) = self.members[m].address.parse() else {
            return;
        };
        let mut facts = self.checks[m].forwarding.subscribe();
        loop {
            let known = facts.borrow_and_update().clone();
            if let Some(f) = known {
                match Target::from_forwarding(&f, address) {
                    Ok(t) => self.publish(m, hostcheck::check(&t).await),
                    Err(e) => {
                        tracing::warn!(%vip, error = %e, "cannot check this host's setup for the VIP")
                    }
                }
            }
            tokio::select! {
                _ = self.loops.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
                r = facts.changed() => if r.is_err() { return },
            }
        }
    }

    /// Logs what changed and makes `r` the report the registrations carry.
    fn publish(&self, m: usize, r: SelfCheck) {
        let vip = &self.members[m].vip;
        for f in &r.findings {
            let level = match f.status {
                Status::Ok => 0,
                Status::Warn => 1,
                Status::Fail => 2,
            };
            self.metrics
                .self_check
                .with_label_values(&[f.check.name()])
                .set(level);
        }
        self.checks[m].report.send_if_modified(|cur| {
            let changed = !cur
                .as_ref()
                .is_some_and(|c| hostcheck::same_findings(c, &r));
            if changed {
                for f in r.findings.iter().filter(|f| f.status != Status::Ok) {
                    let fix = f.fix.as_deref().unwrap_or("-");
                    if f.status == Status::Fail {
                        tracing::error!(%vip, check = %f.check, detail = %f.detail, fix, "self-check fails: the balancer gives this backend no new flows");
                    } else {
                        tracing::warn!(%vip, check = %f.check, detail = %f.detail, fix, "self-check warning");
                    }
                }
                if r.failing().next().is_none()
                    && cur.as_ref().is_some_and(|c| c.failing().next().is_some())
                {
                    tracing::info!(%vip, "self-check passes again");
                }
            }
            *cur = Some(r);
            changed
        });
    }

    async fn register_loop(&self, i: usize, m: usize) {
        let cp = &self.planes[i];
        let VipMembership { vip, address } = &self.members[m];
        let mut delay = self.retry_initial;
        let mut registered = false;
        let mut seen = Overrides::default();
        let mut reports = self.checks[m].report.subscribe();
        loop {
            let report = reports.borrow_and_update().clone();
            match cp
                .register(vip, address, self.weight, report.as_ref())
                .await
            {
                Ok(answer) => {
                    self.count("register", true);
                    if !registered {
                        tracing::info!(control_plane = cp.url(), %vip, %address, "registered");
                    }
                    registered = true;
                    seen.observe(&answer, self.weight, cp.url(), vip, address);
                    if let Some(f) = answer.forwarding {
                        self.checks[m].forwarding.send_if_modified(|cur| {
                            let changed = cur.as_ref() != Some(&f);
                            *cur = Some(f);
                            changed
                        });
                    }
                    delay = self.retry_initial;
                }
                Err(e) => {
                    self.count("register", false);
                    tracing::warn!(control_plane = cp.url(), %vip, error = %e, retry_in_ms = delay.as_millis() as u64, "registration failed; retrying");
                }
            }
            let wait = if registered {
                match (self.refresh, self.self_check) {
                    (Some(r), _) => Some(r),
                    // No refresh: only new findings make us register again.
                    (None, Some(_)) => None,
                    (None, None) => return,
                }
            } else {
                // Full jitter keeps many backends from retrying in step.
                let d = delay.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
                delay = (delay * 2).min(self.retry_max);
                Some(d)
            };
            tokio::select! {
                _ = self.loops.cancelled() => return,
                _ = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
                // New findings go to lbd at once (it stops or resumes new flows on them).
                r = reports.changed(), if registered => if r.is_err() { return },
            }
        }
    }

    /// Stops the register loops and waits for them (an in-flight call is abandoned).
    async fn stop_loops(&self) {
        self.loops.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Drains on every control plane at once, each call bounded by `timeout`. Returns how
    /// many control planes acknowledged for every VIP.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.stop_loops().await;
        self.on_every_plane("drain", timeout, |cp, vip, address| {
            Box::pin(cp.drain(vip, address))
        })
        .await
    }

    /// Deregisters from every control plane at once, each call bounded by `timeout`.
    pub async fn deregister(&self, timeout: Duration) -> usize {
        self.stop_loops().await;
        self.on_every_plane("deregister", timeout, |cp, vip, address| {
            Box::pin(cp.deregister(vip, address))
        })
        .await
    }

    /// Runs `call` for every VIP on every control plane at once; returns the number of control
    /// planes where every call succeeded.
    async fn on_every_plane<'a, F>(&'a self, op: &'static str, timeout: Duration, call: F) -> usize
    where
        F: Fn(&'a ControlPlane, &'a str, &'a str) -> CallFuture<'a>,
    {
        let call = &call;
        let planes = self.planes.iter().map(|cp| async move {
            let calls = self.members.iter().map(|m| async move {
                let r = tokio::time::timeout(timeout, call(cp, &m.vip, &m.address)).await;
                let ok = matches!(r, Ok(Ok(())));
                self.count(op, ok);
                let (vip, address) = (&m.vip, &m.address);
                match r {
                    Ok(Ok(())) => tracing::info!(control_plane = cp.url(), %vip, %address, "{op} done"),
                    Ok(Err(e)) => {
                        tracing::warn!(control_plane = cp.url(), %vip, %address, error = %e, "{op} failed")
                    }
                    Err(_) => tracing::warn!(control_plane = cp.url(), %vip, %address, "{op} timed out"),
                }
                ok
            });
            join_all(calls).await.into_iter().all(|ok| ok)
        });
        join_all(planes).await.into_iter().filter(|ok| *ok).count()
    }
}

/// The bearer token: the file's first line when a file is named, else the inline token.
fn read_token(cfg: &RegistrationConfig) -> Result<String, RegistrarError> {
    Ok(match &cfg.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|source| RegistrarError::TokenFile {
                path: path.clone(),
                source,
            })?
            .trim()
            .to_string(),
        None => cfg.token.clone().unwrap_or_default(),
    })
}

/// The VIP of `cfg` as its first reachable control plane describes it (`app check-host`).
pub async fn vip_facts(cfg: &RegistrationConfig) -> Result<lb_api::types::Vip, RegistrarError> {
    let token = read_token(cfg)?;
    let timeout = Duration::from_millis(cfg.request_timeout_ms.max(1));
    let mut last = None;
    for url in &cfg.control_planes {
        match ControlPlane::new(url, &token, timeout)?.vip(&cfg.vip).await {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .map(RegistrarError::Client)
        .unwrap_or_else(|| RegistrarError::Client(RegistrationError::BadUrl("none".into()))))
}

type CallFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), RegistrationError>> + Send + 'a>>;

/// What an operator overrode on one control plane, so each change is logged once (not on
/// every refresh).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Overrides {
    drained: bool,
    /// The operator's weight when it differs from ours.
    weight: Option<u32>,
}

impl Overrides {
    /// Returns whether anything changed (and was logged).
    fn observe(
        &mut self,
        answer: &Registered,
        declared: u32,
        control_plane: &str,
        vip: &str,
        address: &str,
    ) -> bool {
        let now = Overrides {
            drained: answer.operator_drained(),
            weight: answer.weight.filter(|w| *w != declared),
        };
        if now == *self {
            return false;
        }
        if now.drained != self.drained {
            if now.drained {
                tracing::warn!(
                    control_plane,
                    vip,
                    address,
                    "drained by an operator: no new connections come to this backend until `lbctl backend undrain {vip} {address}`"
                );
            } else {
                tracing::info!(
                    control_plane,
                    vip,
                    address,
                    "no longer drained by an operator"
                );
            }
        }
        if now.weight != self.weight {
            match now.weight {
                Some(w) => {
                    tracing::warn!(
                        control_plane,
                        vip,
                        address,
                        operator_weight = w,
                        declared_weight = declared,
                        "an operator set this backend's weight; it stays until the operator changes it or this backend declares a different weight"
                    )
                }
                None => {
                    tracing::info!(
                        control_plane,
                        vip,
                        address,
                        weight = declared,
                        "weight back to the declared one"
                    )
                }
            }
        }
        *self = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_is_reported_once_per_change() {
        let answer = |admin: &str, by: Option<&str>, weight: u32| Registered {
            admin: Some(admin.into()),
            drained_by: by.map(Into::into),
            weight: Some(weight),
            forwarding: None,
        };
        let mut seen = Overrides::default();
        let obs = |s: &mut Overrides, a: &Registered| s.observe(a, 70, "cp", "web", "10.77.0.11");
        assert!(!obs(&mut seen, &answer("active", None, 70)));
        assert!(obs(&mut seen, &answer("draining", Some("operator"), 70)));
        assert!(
            !obs(&mut seen, &answer("draining", Some("operator"), 70)),
            "a refresh that finds the same drain says nothing"
        );
        assert!(obs(&mut seen, &answer("draining", Some("operator"), 10)));
        assert_eq!(seen.weight, Some(10));
        assert!(obs(&mut seen, &answer("active", None, 70)));
        assert_eq!(seen, Overrides::default());
        // An answer without the fields (an older lbd) is no override.
        assert!(!obs(&mut seen, &Registered::default()));
    }
}
