//! The daemon's model of every VIP and backend: configured and dynamic state, health, admin
//! state, resolved MACs. The data-plane view (`VipSpec`) is derived from it, never stored.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use lb_api::types::{AdminState, Backend, NewVip, Vip};
pub use lb_api::types::{DrainedBy, LastCheck, Source};
use lb_config::{CheckKind, HealthConfig, MacAddr, VipConfig};
use lb_dataplane::{BackendSpec, BackendState, VipSpec, maglev::TableSize};

use super::wire;
use crate::health::{Health, Machine, ProbeResult, slow_start_weight};

/// Operator (or backend) intent, independent of health.
///
/// Deliberately not `Serialize`/`Deserialize`: the API and the state file both spell it as
/// two fields (`admin` and `drained_by`), see `backend_view` and `persist`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admin {
    Active,
    /// No new flows; existing flows go on.
    Draining(DrainedBy),
}

impl Admin {
    /// The `admin` field of the API and the state file.
    pub fn state(self) -> AdminState {
        match self {
            Admin::Active => AdminState::Active,
            Admin::Draining(_) => AdminState::Draining,
        }
    }

    /// The `drained_by` field: `None` while active.
    pub fn drained_by(self) -> Option<DrainedBy> {
        match self {
            Admin::Active => None,
            Admin::Draining(by) => Some(by),
        }
    }

    /// Back from the two fields; a drain without `drained_by` (written by an lbd from before
    /// it) reads as an operator's, the sticky reading: `lbctl backend undrain` ends it.
    pub fn from_parts(state: AdminState, by: Option<DrainedBy>) -> Self {
        match state {
            AdminState::Draining => Admin::Draining(by.unwrap_or(DrainedBy::Operator)),
            // A `drained_by` beside "active" means nothing; no lbd ever wrote one.
            AdminState::Active => Admin::Active,
        }
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Clone, Debug)]
pub struct BackendRuntime {
    /// The configured weight: the last declared one, or the operator's since then.
    pub weight: u32,
    /// The weight the registrant last declared (`POST .../backends`); a refresh declaring
    /// the same again leaves an operator's `weight` alone.
    pub declared_weight: Option<u32>,
    pub admin: Admin,
    pub source: Source,
    pub machine: Machine,
    pub last: Option<LastCheck>,
    /// Static MAC from the config.
    pub static_mac: Option<[u8; 6]>,
    /// The resolved MAC (or the static one), or why there is none.
    pub mac: Result<[u8; 6], String>,
}

impl BackendRuntime {
    pub fn new(
        weight: u32,
        source: Source,
        static_mac: Option<[u8; 6]>,
        health: &HealthConfig,
        now: Instant,
    ) -> Self {
        let machine = if health.kind == CheckKind::None {
            Machine::always_healthy(now)
        } else {
            Machine::new(health.rise, health.fall)
        };
        Self {
            weight,
            declared_weight: None,
            admin: Admin::Active,
            source,
            machine,
            last: None,
            static_mac,
            mac: static_mac.ok_or_else(|| "not resolved yet".to_string()),
        }
    }

    /// A drain by an operator wins over (and is never downgraded to) a registrant's.
    pub fn drain(&mut self, by: DrainedBy) {
        if self.admin != Admin::Draining(DrainedBy::Operator) {
            self.admin = Admin::Draining(by);
        }
    }

    pub fn undrain(&mut self) {
        self.admin = Admin::Active;
    }

    /// A registration of this (existing) backend: a heartbeat. It undoes only the
    /// registrant's own drain, and applies a declared weight only when the declaration
    /// changed (so an operator's `weight` survives refreshes). Returns what it changed.
    pub fn reregister(&mut self, declared: Option<u32>) -> Reregistered {
        let mut out = Reregistered::default();
        if self.admin == Admin::Draining(DrainedBy::Registrant) {
            self.undrain();
            out.undrained = true;
        }
        if let Some(w) = declared
            && self.declared_weight != Some(w)
        {
            self.declared_weight = Some(w);
            out.weight_applied = self.weight != w;
            self.weight = w;
        }
        out
    }

    /// The weight new flows see now.
    pub fn effective_weight(&self, health: &HealthConfig, now: Instant) -> u32 {
        if matches!(self.admin, Admin::Draining(_))
            || self.machine.state() != Health::Healthy
            || self.mac.is_err()
        {
            return 0;
        }
        match self.machine.healthy_since() {
            Some(since) => slow_start_weight(
                self.weight,
                now.saturating_duration_since(since),
                health.slow_start,
            ),
            None => self.weight,
        }
    }

    /// Failed backends (and ones we cannot address) lose their flows; draining and unknown
    /// ones keep theirs.
    pub fn state(&self) -> BackendState {
        if self.machine.state() == Health::Unhealthy || self.mac.is_err() {
            BackendState::Down
        } else {
            BackendState::Active
        }
    }

    pub fn record(&mut self, r: &ProbeResult) {
        self.last = Some(LastCheck {
            ok: r.ok,
            // The time a failed check took (a refusal, a timeout) is not a latency.
            latency_ms: r.ok.then_some(r.latency.as_secs_f64() * 1e3),
            error: r.error.clone(),
            at_unix_ms: unix_ms(),
        });
    }

    /// Whether the weight is still ramping (slow start): the table must be refreshed.
    pub fn ramping(&self, health: &HealthConfig, now: Instant) -> bool {
        self.effective_weight(health, now) != 0 && self.effective_weight(health, now) < self.weight
    }
}

/// What a re-registration changed (for the log).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reregistered {
    pub undrained: bool,
    pub weight_applied: bool,
}

#[derive(Clone, Debug)]
pub struct VipRuntime {
    pub cfg: VipConfig,
    pub source: Source,
    pub backends: BTreeMap<IpAddr, BackendRuntime>,
}

impl VipRuntime {
    /// Whether a backend can take new flows now (what VRRP tracking and BGP announcements
    /// are gated on).
    pub fn can_take_new_flows(&self, now: Instant) -> bool {
        self.backends
            .values()
            .any(|b| b.effective_weight(&self.cfg.health, now) > 0)
    }

    /// Whether a backend still waits for its first health verdict.
    pub fn awaiting_verdict(&self) -> bool {
        self.backends
            .values()
            .any(|b| b.machine.state() == Health::Unknown)
    }

    pub fn spec(&self, now: Instant) -> VipSpec {
        VipSpec {
            name: self.cfg.name.clone(),
            addr: self.cfg.address,
            port: self.cfg.port,
            proto: self.cfg.proto,
            algorithm: self.cfg.algorithm,
            mode: self.cfg.mode,
            table_size: self.cfg.table_size,
            backends: self
                .backends
                .iter()
                .map(|(addr, b)| BackendSpec {
                    addr: *addr,
                    mac: *b.mac.as_ref().unwrap_or(&[0; 6]),
                    weight: b.effective_weight(&self.cfg.health, now),
                    state: b.state(),
                })
                .collect(),
            second_chance: self.cfg.second_chance,
        }
    }

    /// The port health checks use.
    pub fn check_port(&self) -> u16 {
        if self.cfg.health.port != 0 {
            self.cfg.health.port
        } else {
            self.cfg.port
        }
    }
}

// ---- the API's views (lb-api's types) ----

pub fn backend_view(vip: &VipRuntime, addr: IpAddr, b: &BackendRuntime, now: Instant) -> Backend {
    Backend {
        address: addr,
        weight: b.weight,
        declared_weight: b.declared_weight,
        effective_weight: b.effective_weight(&vip.cfg.health, now),
        health: b.machine.state(),
        admin: b.admin.state(),
        drained_by: b.admin.drained_by(),
        source: b.source,
        mac: b.mac.as_ref().ok().map(|m| MacAddr(*m).to_string()),
        mac_error: b.mac.as_ref().err().cloned(),
        last_check: b.last.clone(),
    }
}

pub fn vip_view(v: &VipRuntime, now: Instant) -> Vip {
    Vip {
        name: v.cfg.name.clone(),
        address: v.cfg.address,
        port: v.cfg.port,
        protocol: wire::protocol(v.cfg.proto),
        algorithm: wire::algorithm(v.cfg.algorithm),
        mode: wire::mode(v.cfg.mode),
        table_size: v.cfg.table_size.get(),
        backends: v
            .backends
            .iter()
            .map(|(a, b)| backend_view(v, *a, b, now))
            .collect(),
    }
}

/// A VIP as the API accepts it (`POST /v1/vips`, the state file), validated into a config
/// entry with `health` (the global default) and lbd's defaults for what it leaves out.
pub fn vip_config(new: NewVip, health: HealthConfig) -> Result<VipConfig, String> {
    let valid_name = !new.name.is_empty()
        && new.name.len() <= 64
        && new
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_name {
        return Err("name: 1-64 characters of a-z, 0-9, '-', '_'".into());
    }
    let table_size = match new.table_size {
        Some(n) => TableSize::new(n).map_err(|e| format!("table_size: {e}"))?,
        None => TableSize::DEFAULT,
    };
    Ok(VipConfig {
        name: new.name,
        address: new.address,
        port: new.port.unwrap_or(0),
        proto: wire::ip_protocol(new.protocol.unwrap_or_default()),
        algorithm: wire::dataplane_algorithm(new.algorithm.unwrap_or_default()),
        mode: wire::forward_mode(new.mode.unwrap_or_default()),
        table_size,
        health,
        backends: Vec::new(),
        // Not in the API's VIP type yet: API-created VIPs run without it.
        second_chance: lb_dataplane::SecondChance::Off,
    })
}

/// The definition of a VIP with every field set (what the state file keeps).
pub fn vip_definition(cfg: &VipConfig) -> NewVip {
    NewVip {
        name: cfg.name.clone(),
        address: cfg.address,
        port: Some(cfg.port),
        protocol: Some(wire::protocol(cfg.proto)),
        algorithm: Some(wire::algorithm(cfg.algorithm)),
        mode: Some(wire::mode(cfg.mode)),
        table_size: Some(cfg.table_size.get()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(weight: u32) -> BackendRuntime {
        let mut b = BackendRuntime::new(
            weight,
            Source::Registered,
            None,
            &HealthConfig::default(),
            Instant::now(),
        );
        b.declared_weight = Some(weight);
        b
    }

    #[test]
    fn an_operator_drain_survives_reregistration() {
        let mut b = backend(70);
        b.drain(DrainedBy::Operator);
        assert_eq!(b.reregister(Some(70)), Reregistered::default());
        assert_eq!(b.admin, Admin::Draining(DrainedBy::Operator));
        // The registrant's own drain (its shutdown) does not downgrade an operator's.
        b.drain(DrainedBy::Registrant);
        assert_eq!(b.admin, Admin::Draining(DrainedBy::Operator));
        b.undrain();
        assert_eq!(b.admin, Admin::Active);
    }

    #[test]
    fn the_registrants_own_drain_is_undone_by_its_next_registration() {
        let mut b = backend(70);
        b.drain(DrainedBy::Registrant);
        assert!(b.reregister(Some(70)).undrained);
        assert_eq!(b.admin, Admin::Active);
        // An operator drain on top of the registrant's one sticks.
        b.drain(DrainedBy::Registrant);
        b.drain(DrainedBy::Operator);
        assert!(!b.reregister(Some(70)).undrained);
        assert_eq!(b.admin, Admin::Draining(DrainedBy::Operator));
    }

    #[test]
    fn only_a_changed_declaration_overrides_the_operators_weight() {
        let mut b = backend(70);
        b.weight = 10; // `lbctl backend weight`
        assert!(!b.reregister(Some(70)).weight_applied);
        assert!(!b.reregister(None).weight_applied);
        assert_eq!(b.weight, 10);
        assert!(b.reregister(Some(40)).weight_applied);
        assert_eq!((b.weight, b.declared_weight), (40, Some(40)));
        // No declaration on record yet (an old state file): the first one applies.
        b.declared_weight = None;
        b.weight = 5;
        assert!(b.reregister(Some(40)).weight_applied);
        assert_eq!(b.weight, 40);
    }
}
