//! `lbd`, the control-plane daemon: loads and attaches the data plane (adopting pinned state
//! after a restart), keeps the maps equal to the model (config + API + health), health-checks
//! the backends, follows their MACs in the kernel's neighbour table, sweeps the connection
//! table and serves the API.

pub mod api;
mod attach_metrics;
mod bgp;
mod bgp_metrics;
pub mod capture;
mod macs;
mod metrics;
pub mod model;
mod persist;
pub mod reload;
mod sweep;
mod track;
mod vrrp_metrics;
mod wire;

pub use bgp::BgpGate;
pub use sweep::sweep_loop;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use lb_common::{Settings, names, user::addr_words};
use tokio::{
    sync::{Mutex, mpsc, watch},
    task::JoinHandle,
};
use tracing::{info, warn};

use self::model::{BackendRuntime, Source, VipRuntime};
use lb_config::{Config, VipConfig, VipInput};
use lb_dataplane::{Dataplane, LoadOptions, Programmer, pin};

use crate::{
    auth::Access,
    health::{self, Health, ProbeEvent},
    neighbours::Resolver,
};

/// Why a change to the model was refused or could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("no VIP named {0}")]
    NoVip(String),
    #[error("backend and VIP must be the same IP family")]
    FamilyMismatch,
    /// The model changed but the maps could not be made to follow.
    #[error("programming the data plane: {0:#}")]
    Program(anyhow::Error),
}

/// Everything behind the daemon's lock.
pub struct Inner {
    pub prog: Programmer,
    pub vips: BTreeMap<String, VipRuntime>,
    checkers: HashMap<(String, IpAddr), JoinHandle<()>>,
    pub attached: Vec<pin::Attached>,
    /// Active connections per backend id, from the last sweep.
    pub active: HashMap<u32, u64>,
    pub last_table_swap: Option<Duration>,
    /// What the table holds now (see `weights_moved`).
    pub programmed: Programmed,
    /// The data plane's settings map as written (a reload changes its config-given fields).
    pub settings: Settings,
    /// Tables swapped since start (a flapping backend's churn shows here).
    pub table_swaps: u64,
}

pub struct Shared {
    /// The config lbd started with: what cannot change without a restart (interfaces, pins,
    /// sockets, the state file) is read here.
    pub config: Config,
    /// The config in force: the start-up one, then each reloaded one (`reload`). Components
    /// that follow a section of it subscribe here.
    current: watch::Sender<Arc<Config>>,
    pub inner: Mutex<Inner>,
    pub started: Instant,
    probe_tx: mpsc::Sender<ProbeEvent>,
    /// Set to Some(detach) to stop the daemon.
    pub shutdown: watch::Sender<Option<bool>>,
    /// The loaded object (links are pinned and the maps are owned by `prog`; this keeps the
    /// programs' handles for the daemon's lifetime).
    dataplane: std::sync::Mutex<Option<Dataplane>>,
    /// The VRRP routers' status (one per address family) while `[vrrp]` runs.
    vrrp: std::sync::Mutex<Option<lb_vrrp::Statuses>>,
    /// The API's clients and TLS in force (replaced by a reload).
    access: std::sync::RwLock<Arc<Access>>,
    /// The file lbd was started with, for reloads.
    config_path: std::sync::Mutex<Option<std::path::PathBuf>>,
    /// The BGP announcer's status, once `[bgp]` runs (`lb_bgp`).
    pub bgp: std::sync::OnceLock<lb_bgp::Status>,
    /// Keeps the MACs of backends without a static one resolved; its address set follows the
    /// model at every `reconcile` (see `macs`).
    neighbours: Resolver,
    /// Captures inside the data plane (`POST /v1/capture`).
    pub captures: capture::Captures,
}

pub type State = Arc<Shared>;

/// A VIP from `source`, its listed backends owned by the same source.
pub(crate) fn runtime_from_config(
    v: &VipConfig,
    input: VipInput,
    source: Source,
    now: Instant,
) -> VipRuntime {
    let backends = v
        .backends
        .iter()
        .map(|b| {
            (
                b.address,
                BackendRuntime::new(b.weight, source, b.mac.map(|m| m.0), &v.health, now),
            )
        })
        .collect();
    VipRuntime {
        cfg: v.clone(),
        input,
        source,
        backends,
    }
}

/// Loads, adopts, programs and attaches; returns the running daemon and its probe receiver.
pub async fn start(config: Config) -> Result<(State, mpsc::Receiver<ProbeEvent>)> {
    let now = Instant::now();
    let dp_cfg = &config.dataplane;
    let pins_existed = pin::map_paths(&dp_cfg.pin_dir)
        .iter()
        .all(|(_, p)| p.exists());
    let mut dp = Dataplane::load(LoadOptions {
        conn_table_size: dp_cfg.conn_table_size,
        pin_dir: Some(dp_cfg.pin_dir.clone()),
        ..LoadOptions::default()
    })
    .context("loading the XDP object")?;
    let mut maps = dp.take_maps()?;
    let (captures, capture_runner) = match dp
        .take_capture()
        .map_err(anyhow::Error::from)
        .and_then(|m| capture::Captures::new(m).context("watching the capture ring"))
    {
        Ok((c, r)) => (c, Some(r)),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "capture is unavailable");
            (capture::Captures::unavailable(), None)
        }
    };
    let settings = live_settings(
        &Settings {
            ifaces: iface_macs(&dp_cfg.interfaces)?,
            ..Default::default()
        },
        &config,
    );
    maps.set_settings(&settings)?;
    let access = Access::load(&config.api.access)?;
    let saved = persist::load(&config.api.state_file);
    let prog = match (&saved, pins_existed) {
        (Some(s), true) => {
            info!("adopting pinned maps from a previous lbd");
            Programmer::adopt(maps, &s.programmer)
        }
        (None, true) => {
            warn!(
                "pinned maps exist but no state file: programming them afresh (existing flows may re-hash)"
            );
            Programmer::new(maps)
        }
        _ => Programmer::new(maps),
    };

    let mut vips: BTreeMap<String, VipRuntime> = config
        .vips
        .iter()
        .map(|v| {
            let rt = runtime_from_config(v, v.to_input(), Source::Config, now);
            (v.name.clone(), rt)
        })
        .collect();
    if let Some(s) = &saved {
        restore_dynamic(&config, s, &mut vips, now);
    }
    // The first MACs come from the resolver's first pass (all addresses concurrently, bounded
    // by one ARP/ND wait), before the first reconcile and before the lock exists.
    let neighbours = Resolver::new();
    macs::sync(&neighbours, &vips);
    let resolver_options = macs::options();
    let (resolver_task, mut neighbour_events) = neighbours
        .spawn(resolver_options)
        .context("starting the neighbour resolver")?;
    let first_wait = resolver_options.resolve.wait + Duration::from_secs(2);
    macs::initial(&mut vips, &neighbours, &mut neighbour_events, first_wait).await;
    let (probe_tx, probe_rx) = mpsc::channel(1024);
    let (shutdown, _) = watch::channel(None);
    let shared = Arc::new(Shared {
        config: config.clone(),
        current: watch::channel(Arc::new(config.clone())).0,
        inner: Mutex::new(Inner {
            prog,
            vips,
            checkers: HashMap::new(),
            attached: Vec::new(),
            active: HashMap::new(),
            last_table_swap: None,
            programmed: Programmed::new(),
            settings,
            table_swaps: 0,
        }),
        started: now,
        probe_tx,
        shutdown,
        dataplane: std::sync::Mutex::new(None),
        vrrp: std::sync::Mutex::new(None),
        access: std::sync::RwLock::new(Arc::new(access)),
        config_path: std::sync::Mutex::new(None),
        bgp: std::sync::OnceLock::new(),
        neighbours,
        captures,
    });
    if let Some(runner) = capture_runner {
        tokio::spawn(runner.run(shared.clone()));
    }
    tokio::spawn(macs::event_loop(
        shared.clone(),
        resolver_task,
        neighbour_events,
    ));
    {
        let mut inner = shared.inner.lock().await;
        reconcile(&shared, &mut inner).context("programming the maps")?;
        for iface in &dp_cfg.interfaces {
            let records = config
                .api
                .state_file
                .parent()
                .unwrap_or(std::path::Path::new("/var/lib/lbd"));
            let a = dp.attach_pinned(
                names::PROG_BALANCER,
                iface,
                dp_cfg.xdp_mode,
                &dp_cfg.pin_dir,
                records,
            )?;
            inner.attached.push(a);
        }
        sync_checkers(&shared, &mut inner);
    }
    if let Ok(mut slot) = shared.dataplane.lock() {
        *slot = Some(dp);
    }
    Ok((shared, probe_rx))
}

/// `base` with the fields the config gives (the outer ipip sources, the backend MTU, the
/// flood guard): written at start and by each reload.
pub(crate) fn live_settings(base: &Settings, config: &Config) -> Settings {
    let dp = &config.dataplane;
    let word = |a: Option<IpAddr>| a.map(addr_words).unwrap_or_default();
    Settings {
        ipip_src_v4: word(dp.ipip_source_v4)[0],
        ipip_src_v6: word(dp.ipip_source_v6),
        backend_mtu: dp.backend_mtu,
        max_new_flows_per_cpu: dp.max_new_flows_per_cpu,
        ..*base
    }
}

/// Index and MAC of each interface (from /sys, which `ip netns exec` mounts per namespace).
fn iface_macs(names: &[String]) -> Result<[lb_common::IfaceMac; lb_common::MAX_IFACES]> {
    anyhow::ensure!(
        names.len() <= lb_common::MAX_IFACES,
        "at most {} interfaces",
        lb_common::MAX_IFACES
    );
    let mut out = [lb_common::IfaceMac::default(); lb_common::MAX_IFACES];
    for (slot, name) in out.iter_mut().zip(names) {
        let read = |f: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{name}/{f}"))
                .with_context(|| format!("interface {name}: cannot read {f} (does it exist?)"))
        };
        slot.ifindex = read("ifindex")?
            .trim()
            .parse()
            .with_context(|| format!("interface {name}: ifindex"))?;
        let mac: lb_config::MacAddr = read("address")?
            .trim()
            .parse()
            .map_err(|e: String| anyhow::anyhow!("interface {name}: {e}"))?;
        slot.mac = mac.0;
    }
    Ok(out)
}

/// The API's VIPs and every backend's dynamic state from the state file. API VIPs go through
/// the same checks as the file's and the API's (against today's settings); one that fails them
/// is left out, with the reason in the log.
fn restore_dynamic(
    config: &Config,
    s: &persist::StateFile,
    vips: &mut BTreeMap<String, VipRuntime>,
    now: Instant,
) {
    let env = config.vip_env();
    for input in &s.api_vips {
        let checked = input
            .check(&env)
            .map_err(|e| e.to_string())
            .and_then(|cfg| {
                lb_config::check_against(&cfg, vips.values().map(|v| &v.cfg))
                    .map(|()| cfg)
                    .map_err(|c| c.to_string())
            });
        match checked {
            Ok(cfg) => {
                let rt = runtime_from_config(&cfg, input.clone(), Source::Api, now);
                vips.insert(cfg.name.clone(), rt);
            }
            Err(e) => warn!(
                path = %config.api.state_file.display(),
                vip = %input.name,
                "state file: VIP left out: {e}"
            ),
        }
    }
    for b in &s.backends {
        let Some(vip) = vips.get_mut(&b.vip) else {
            continue;
        };
        let health = vip.cfg.health.clone();
        let entry = vip
            .backends
            .entry(b.address)
            .or_insert_with(|| BackendRuntime::new(b.weight, b.source, None, &health, now));
        if b.source != Source::Config {
            entry.weight = b.weight;
        }
        entry.declared_weight = b.declared_weight;
        entry.admin = b.admin;
        entry.self_check = b.self_check.clone();
        // Carry the last verdict over so a restart does not take healthy backends out while
        // their first checks run (that would fail new connections during a hot restart).
        if b.health == Health::Healthy && entry.machine.state() != Health::Healthy {
            entry.machine = health::Machine::restored_healthy(health.rise, health.fall);
        }
    }
}

impl Shared {
    /// Loads the capture program into the data plane (once) and installs it in `maps`.
    pub fn enable_capture(&self, maps: &mut lb_dataplane::capture::CaptureMaps) -> Result<()> {
        let mut slot = self
            .dataplane
            .lock()
            .map_err(|_| anyhow::anyhow!("the data plane's lock is poisoned"))?;
        let dp = slot.as_mut().context("the data plane is not loaded yet")?;
        dp.enable_capture(maps)?;
        Ok(())
    }
}

/// Makes the maps equal to the model, the neighbour resolver's address set equal to the
/// model's backends, and saves the state file.
pub fn reconcile(shared: &Shared, inner: &mut Inner) -> Result<()> {
    macs::sync(&shared.neighbours, &inner.vips);
    let now = Instant::now();
    let specs: Vec<_> = inner.vips.values().map(|v| v.spec(now)).collect();
    let t = Instant::now();
    let report = inner.prog.apply(&specs)?;
    inner.programmed = programmed_weights(&specs);
    if report.tables_swapped > 0 {
        inner.last_table_swap = Some(t.elapsed());
        inner.table_swaps += report.tables_swapped as u64;
        tracing::debug!(?report, "maps updated");
    }
    save_state(shared, inner);
    Ok(())
}

fn save_state(shared: &Shared, inner: &Inner) {
    let state = persist::StateFile {
        programmer: inner.prog.snapshot(),
        api_vips: inner
            .vips
            .values()
            .filter(|v| v.source != Source::Config)
            .map(|v| VipInput {
                // Backends are saved with their dynamic state below.
                backends: Vec::new(),
                ..v.input.clone()
            })
            .collect(),
        backends: inner
            .vips
            .values()
            .flat_map(|v| {
                v.backends.iter().map(|(a, b)| persist::BackendState {
                    vip: v.cfg.name.clone(),
                    address: *a,
                    weight: b.weight,
                    declared_weight: b.declared_weight,
                    admin: b.admin,
                    source: b.source,
                    health: b.machine.state(),
                    self_check: b.self_check.clone(),
                })
            })
            .collect(),
    };
    if let Err(e) = persist::save(&shared.config.api.state_file, &state) {
        warn!(path = %shared.config.api.state_file.display(), error = %e, "cannot save the state file");
    }
}

/// One checker task per (VIP, backend); stale ones stop.
pub fn sync_checkers(shared: &Shared, inner: &mut Inner) {
    let mut wanted = Vec::new();
    for v in inner.vips.values() {
        if v.cfg.health.kind == lb_config::CheckKind::None {
            continue;
        }
        for addr in v.backends.keys() {
            wanted.push((
                (v.cfg.name.clone(), *addr),
                v.check_port(),
                v.cfg.health.clone(),
            ));
        }
    }
    let keys: Vec<_> = wanted.iter().map(|(k, _, _)| k.clone()).collect();
    inner.checkers.retain(|k, h| {
        let keep = keys.contains(k);
        if !keep {
            h.abort();
        }
        keep
    });
    for (key, port, cfg) in wanted {
        if let std::collections::hash_map::Entry::Vacant(slot) = inner.checkers.entry(key) {
            let (vip, addr) = slot.key().clone();
            slot.insert(health::spawn_checker(
                vip,
                addr,
                port,
                cfg,
                shared.probe_tx.clone(),
            ));
        }
    }
}

/// Applies probe results; reconciles when a backend changes state.
pub async fn health_loop(shared: State, mut rx: mpsc::Receiver<ProbeEvent>) {
    while let Some(ev) = rx.recv().await {
        let mut inner = shared.inner.lock().await;
        let Some(b) = inner
            .vips
            .get_mut(&ev.vip)
            .and_then(|v| v.backends.get_mut(&ev.addr))
        else {
            continue;
        };
        b.record(&ev.result);
        if let Some(state) = b.machine.observe(ev.result.ok, Instant::now()) {
            info!(vip = %ev.vip, backend = %ev.addr, state = state.name(), error = ?ev.result.error, "health changed");
            if let Err(e) = reconcile(&shared, &mut inner) {
                warn!(error = %e, "reconcile after a health change failed");
            }
        }
    }
}

/// The weight each (VIP, backend) was last programmed with.
pub type Programmed = BTreeMap<(String, IpAddr), u32>;

fn programmed_weights(specs: &[lb_dataplane::VipSpec]) -> Programmed {
    specs
        .iter()
        .flat_map(|v| {
            v.backends
                .iter()
                .map(|b| ((v.name.clone(), b.addr), b.weight))
        })
        .collect()
}

/// Whether some backend's weight now differs from what the table was last built with: a
/// slow-start ramp moved on, or ended (the step to full weight must be written too).
fn weights_moved(inner: &Inner, now: Instant) -> bool {
    inner.vips.values().any(|v| {
        v.backends.iter().any(|(addr, b)| {
            let key = (v.cfg.name.clone(), *addr);
            inner.programmed.get(&key) != Some(&b.effective_weight(&v.cfg.health, now))
        })
    })
}

/// Every second: slow-start ramps (the table follows each ramping backend's weight, up to and
/// including its last step) and registration leases. MACs are not polled here:
/// `macs::event_loop` applies the neighbour resolver's events as they come.
pub async fn tick_loop(shared: State) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let lease = shared.current().api.access.registration_lease;
        let mut inner = shared.inner.lock().await;
        let now = Instant::now();
        let expired = lease
            .map(|l| expire_leases(&mut inner, now, l))
            .unwrap_or(0);
        if (expired > 0 || weights_moved(&inner, now))
            && let Err(e) = reconcile(&shared, &mut inner)
        {
            warn!(error = %e, "periodic reconcile failed");
        }
        if expired > 0 {
            sync_checkers(&shared, &mut inner);
        }
    }
}

/// Removes registered backends whose last registration is older than `lease`; returns how
/// many.
fn expire_leases(inner: &mut Inner, now: Instant, lease: Duration) -> usize {
    let mut gone = 0;
    for v in inner.vips.values_mut() {
        let vip = v.cfg.name.clone();
        v.backends.retain(|addr, b| {
            let expired = b
                .lease
                .is_some_and(|at| now.saturating_duration_since(at) > lease);
            if expired {
                info!(%vip, backend = %addr, lease_s = lease.as_secs(), "registration lease expired: backend removed");
                crate::audit::internal(
                    "lease",
                    &format!("removed {vip}/{addr}: not registered again within {} s", lease.as_secs()),
                    true,
                );
                gone += 1;
            }
            !expired
        });
    }
    gone
}

impl Shared {
    /// The config in force (the last one loaded or reloaded).
    pub fn current(&self) -> Arc<Config> {
        self.current.borrow().clone()
    }

    /// Puts a reloaded config in force: followers of `subscribe_config` apply their sections.
    pub(crate) fn publish_config(&self, c: Arc<Config>) {
        self.current.send_replace(c);
    }

    /// The API's clients and TLS in force.
    pub fn access(&self) -> Arc<Access> {
        match self.access.read() {
            Ok(a) => a.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub(crate) fn set_access(&self, a: Access) {
        match self.access.write() {
            Ok(mut slot) => *slot = Arc::new(a),
            Err(p) => *p.into_inner() = Arc::new(a),
        }
    }

    pub fn config_path(&self) -> Option<std::path::PathBuf> {
        self.config_path.lock().ok().and_then(|p| p.clone())
    }

    pub fn set_config_path(&self, path: std::path::PathBuf) {
        if let Ok(mut p) = self.config_path.lock() {
            *p = Some(path);
        }
    }

    /// The VRRP routers' status while `[vrrp]` runs.
    pub fn vrrp_statuses(&self) -> Option<lb_vrrp::Statuses> {
        self.vrrp.lock().ok().and_then(|v| v.clone())
    }

    pub fn set_vrrp_statuses(&self, s: Option<lb_vrrp::Statuses>) {
        if let Ok(mut v) = self.vrrp.lock() {
            *v = s;
        }
    }

    /// Follows the config in force: a receiver sees every reload.
    pub fn subscribe_config(&self) -> watch::Receiver<Arc<Config>> {
        self.current.subscribe()
    }

    /// Adds a backend, or takes a re-registration of an existing one as a heartbeat (see
    /// `BackendRuntime::reregister`); returns whether it was new.
    ///
    /// A new backend starts with the resolver's answer for its address when there is one
    /// (another VIP has it); otherwise with one resolution made without holding the lock (up
    /// to one ARP/ND wait), so it is usable as soon as it is added. Later changes come as
    /// neighbour events.
    pub async fn upsert_backend(
        self: &Arc<Self>,
        vip: &str,
        addr: IpAddr,
        reg: Registration,
        source: Source,
    ) -> Result<bool, ModelError> {
        let mut resolved: Option<Result<[u8; 6], String>> = None;
        loop {
            if let Some(new) = self
                .upsert_locked(vip, addr, &reg, source, &mut resolved)
                .await?
            {
                return Ok(new);
            }
            // Without the lock; the model may change meanwhile, so the next try decides again.
            resolved = Some(macs::mac_of(crate::neighbours::resolve(addr).await));
        }
    }

    /// The part of `upsert_backend` under the lock; `None` when a new backend needs a MAC
    /// resolved first.
    async fn upsert_locked(
        self: &Arc<Self>,
        vip: &str,
        addr: IpAddr,
        reg: &Registration,
        source: Source,
        resolved: &mut Option<Result<[u8; 6], String>>,
    ) -> Result<Option<bool>, ModelError> {
        let declared = reg.declared;
        let mut inner = self.inner.lock().await;
        let now = Instant::now();
        let v = inner
            .vips
            .get_mut(vip)
            .ok_or_else(|| ModelError::NoVip(vip.to_string()))?;
        if addr.is_ipv4() != v.cfg.address.is_ipv4() {
            return Err(ModelError::FamilyMismatch);
        }
        let health = v.cfg.health.clone();
        let new = match v.backends.get_mut(&addr) {
            Some(b) => {
                if b.source == Source::Registered {
                    b.lease = Some(now);
                }
                let (before, declared_before) = (b.weight, b.declared_weight);
                // The file owns the weight of a backend it lists: a registration (or an
                // add through the API, as a registrant holding the admin token makes) is only
                // a heartbeat, else each balancer would take the declared weight at its first
                // heartbeat after a start or reload, and the balancers would build different
                // tables (docs/bgp.md, "Why the tables agree"). `weight` still changes it.
                let declared = if b.source == Source::Config {
                    None
                } else {
                    declared
                };
                let changed = b.reregister(declared, reg.self_check.clone());
                if changed.undrained {
                    info!(%vip, backend = %addr, "re-registered after its own drain: active again");
                }
                if changed.weight_applied {
                    info!(%vip, backend = %addr, from = before, to = b.weight, "re-registered with a new declared weight");
                }
                if changed.blocked {
                    let why = b.self_check.as_ref().and_then(|r| r.blocking_reason());
                    warn!(%vip, backend = %addr, reason = why.as_deref().unwrap_or(""), "the backend's self-check fails: no new flows");
                }
                if changed.unblocked {
                    info!(%vip, backend = %addr, "the backend's self-check passes again: new flows resume");
                }
                if !changed.undrained
                    && !changed.weight_applied
                    && !changed.blocked
                    && !changed.unblocked
                    && b.declared_weight == declared_before
                {
                    if changed.self_check_changed {
                        // New findings, same verdict: shown and saved, no table change.
                        save_state(self, &inner);
                    }
                    // A heartbeat: nothing changed, nothing to program.
                    return Ok(Some(false));
                }
                false
            }
            None => {
                // The resolver's answer is the latest; any later change comes as an event,
                // applied after this lock is released.
                let Some(mac) = self
                    .neighbours
                    .current(addr)
                    .map(macs::mac_of)
                    .or_else(|| resolved.take())
                else {
                    return Ok(None);
                };
                if let Err(e) = &mac {
                    warn!(%vip, backend = %addr, error = %e, "backend MAC unresolved: not used until it resolves");
                }
                let mut b = BackendRuntime::new(
                    declared.unwrap_or(lb_config::DEFAULT_WEIGHT),
                    source,
                    None,
                    &health,
                    now,
                );
                b.declared_weight = declared;
                b.mac = mac;
                b.self_check = reg.self_check.clone();
                if let Some(why) = b.self_check.as_ref().and_then(|r| r.blocking_reason()) {
                    warn!(%vip, backend = %addr, reason = %why, "the backend's self-check fails: no new flows");
                }
                v.backends.insert(addr, b);
                true
            }
        };
        if new {
            sync_checkers(self, &mut inner);
        }
        // Also starts following the new backend's address (`macs::sync`).
        reconcile(self, &mut inner).map_err(ModelError::Program)?;
        Ok(Some(new))
    }
}

/// What a registration declares beside the address.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    pub declared: Option<u32>,
    pub self_check: Option<lb_api::selfcheck::SelfCheck>,
}
