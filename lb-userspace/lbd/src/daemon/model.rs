//! The daemon's model of every VIP and backend: configured and dynamic state, health, admin
//! state, resolved MACs. The data-plane view (`VipSpec`) is derived from it, never stored.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use lb_api::selfcheck::{Forwarding, SelfCheck};
use lb_api::types::{self as api, AdminState, Backend, NewVip, Vip, VipHealth};
pub use lb_api::types::{DrainedBy, LastCheck, Source};
use lb_config::{
    self as config, CheckKind, HealthConfig, HealthInput, MacAddr, VipConfig, VipInput,
};
use lb_dataplane::{BackendSpec, BackendState, VipSpec};

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
    /// A registered backend's last registration: it is removed when that is older than the
    /// registration lease. `None` for every other source (they never expire).
    pub lease: Option<Instant>,
    /// The registrant's last report on its own setup (each registration replaces it; a
    /// failing finding means no new flows).
    pub self_check: Option<SelfCheck>,
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
            lease: (source == Source::Registered).then_some(now),
            self_check: None,
        }
    }

    /// Whether the registrant's own check says its setup would black-hole new flows.
    pub fn self_check_blocks(&self) -> bool {
        self.self_check
            .as_ref()
            .is_some_and(|r| r.failing().next().is_some())
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
    pub fn reregister(
        &mut self,
        declared: Option<u32>,
        self_check: Option<SelfCheck>,
    ) -> Reregistered {
        let mut out = Reregistered::default();
        let blocked = self.self_check_blocks();
        out.self_check_changed = self.self_check != self_check;
        self.self_check = self_check;
        out.unblocked = blocked && !self.self_check_blocks();
        out.blocked = !blocked && self.self_check_blocks();
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

    /// The weight new flows see now: none while draining, unhealthy or unaddressable; the
    /// configured share while unknown (`unknown_weight_percent`); during slow start a ramp
    /// from that share to the full weight.
    pub fn effective_weight(&self, health: &HealthConfig, now: Instant) -> u32 {
        if matches!(self.admin, Admin::Draining(_)) || self.mac.is_err() || self.self_check_blocks()
        {
            return 0;
        }
        let unknown = unknown_weight(self.weight, health.unknown_weight_percent);
        match self.machine.state() {
            Health::Unhealthy => 0,
            Health::Unknown => unknown,
            Health::Healthy => match self.machine.healthy_since() {
                Some(since) => slow_start_weight(
                    self.weight,
                    now.saturating_duration_since(since),
                    health.slow_start,
                )
                .max(unknown),
                None => self.weight,
            },
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
}

/// `percent` of `weight`, rounded up (a positive share never rounds to no flows at all).
pub fn unknown_weight(weight: u32, percent: u32) -> u32 {
    (u64::from(weight) * u64::from(percent.min(100))).div_ceil(100) as u32
}

/// What a re-registration changed (for the log).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reregistered {
    pub undrained: bool,
    pub weight_applied: bool,
    /// The report differs from the last one (saved; shown).
    pub self_check_changed: bool,
    /// A failing finding appeared: no new flows from now on.
    pub blocked: bool,
    /// The last failing finding went: new flows again.
    pub unblocked: bool,
}

#[derive(Clone, Debug)]
pub struct VipRuntime {
    pub cfg: VipConfig,
    /// The VIP as its source wrote it (for API VIPs: what the state file keeps, re-checked
    /// at every restart and reload against the settings of the day).
    pub input: VipInput,
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
        self_check: b.self_check.clone(),
        no_new_flows: no_new_flows(vip, b, now),
        forwarding: None,
    }
}

/// How the VIP's packets reach its backends (the answer to a registration).
pub fn forwarding(vip: &VipRuntime, backend_mtu: u32) -> Forwarding {
    Forwarding {
        vip: vip.cfg.address,
        port: vip.cfg.port,
        protocol: config::protocol_name(vip.cfg.proto).into(),
        mode: config::mode_name(vip.cfg.mode).into(),
        backend_mtu: (backend_mtu != 0).then_some(backend_mtu),
    }
}

/// Why a backend gets no new flows now (`None` when it gets some).
pub fn no_new_flows(vip: &VipRuntime, b: &BackendRuntime, now: Instant) -> Option<String> {
    if let Admin::Draining(by) = b.admin {
        return Some(match by {
            DrainedBy::Operator => "drained by an operator".into(),
            DrainedBy::Registrant => "drained by itself (shutting down)".into(),
        });
    }
    match b.machine.state() {
        // An unknown backend gets the `unknown_weight_percent` share (none by default).
        Health::Unknown if unknown_weight(b.weight, vip.cfg.health.unknown_weight_percent) == 0 => {
            return Some("health not known yet (checks have not passed)".into());
        }
        Health::Healthy | Health::Unknown => {}
        Health::Unhealthy => {
            let why = b
                .last
                .as_ref()
                .and_then(|c| c.error.clone())
                .unwrap_or_else(|| "checks fail".into());
            return Some(format!("unhealthy: {why}"));
        }
    }
    if let Err(e) = &b.mac {
        return Some(format!("MAC unresolved: {e}"));
    }
    if let Some(why) = b.self_check.as_ref().and_then(|r| r.blocking_reason()) {
        return Some(why);
    }
    if b.effective_weight(&vip.cfg.health, now) == 0 {
        return Some("weight 0".into());
    }
    None
}

pub fn vip_view(v: &VipRuntime, now: Instant) -> Vip {
    Vip {
        name: v.cfg.name.clone(),
        source: Some(v.source),
        address: v.cfg.address,
        port: v.cfg.port,
        protocol: wire::protocol(v.cfg.proto),
        algorithm: wire::algorithm(v.cfg.algorithm),
        mode: wire::mode(v.cfg.mode),
        table_size: v.cfg.table_size.get(),
        health: Some(health_view(&v.cfg.health)),
        backends: v
            .backends
            .iter()
            .map(|(a, b)| backend_view(v, *a, b, now))
            .collect(),
    }
}

/// The health checks in force, as the API shows them.
pub fn health_view(h: &HealthConfig) -> VipHealth {
    let (kind, path, expect_status) = match &h.kind {
        CheckKind::None => (api::CheckKind::None, None, None),
        CheckKind::Tcp => (api::CheckKind::Tcp, None, None),
        CheckKind::Http {
            path,
            expect_status,
        } => (
            api::CheckKind::Http,
            Some(path.clone()),
            Some(*expect_status),
        ),
    };
    VipHealth {
        kind,
        path,
        expect_status,
        port: h.port,
        interval_ms: h.interval.as_millis() as u64,
        timeout_ms: h.timeout.as_millis() as u64,
        rise: h.rise,
        fall: h.fall,
        slow_start_ms: h.slow_start.as_millis() as u64,
        unknown_weight_percent: h.unknown_weight_percent,
    }
}

/// lb-api's `NewVip` (`POST /v1/vips`) as the one VIP check path takes it: the file, the API
/// and the state file all go through [`VipInput::check`].
pub fn vip_input(new: NewVip) -> VipInput {
    let h = new.health.unwrap_or_default();
    VipInput {
        name: new.name,
        address: new.address.to_string(),
        port: new.port.unwrap_or(0),
        protocol: new.protocol.map(|p| p.name().to_string()),
        algorithm: new.algorithm.map(|a| a.name().to_string()),
        mode: new.mode.map(|m| m.name().to_string()),
        table_size: new.table_size,
        second_chance: new.second_chance,
        second_chance_window_s: new.second_chance_window_s,
        health: HealthInput {
            kind: h.kind.map(|k| k.name().to_string()),
            port: h.port,
            path: h.path,
            expect_status: h.expect_status,
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            rise: h.rise,
            fall: h.fall,
            slow_start_ms: h.slow_start_ms,
            unknown_weight_percent: h.unknown_weight_percent,
        },
        backends: Vec::new(),
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
        assert_eq!(b.reregister(Some(70), None), Reregistered::default());
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
        assert!(b.reregister(Some(70), None).undrained);
        assert_eq!(b.admin, Admin::Active);
        // An operator drain on top of the registrant's one sticks.
        b.drain(DrainedBy::Registrant);
        b.drain(DrainedBy::Operator);
        assert!(!b.reregister(Some(70), None).undrained);
        assert_eq!(b.admin, Admin::Draining(DrainedBy::Operator));
    }

    #[test]
    fn only_a_changed_declaration_overrides_the_operators_weight() {
        let mut b = backend(70);
        b.weight = 10; // `lbctl backend weight`
        assert!(!b.reregister(Some(70), None).weight_applied);
        assert!(!b.reregister(None, None).weight_applied);
        assert_eq!(b.weight, 10);
        assert!(b.reregister(Some(40), None).weight_applied);
        assert_eq!((b.weight, b.declared_weight), (40, Some(40)));
        // No declaration on record yet (an old state file): the first one applies.
        b.declared_weight = None;
        b.weight = 5;
        assert!(b.reregister(Some(40), None).weight_applied);
        assert_eq!(b.weight, 40);
    }
}

#[cfg(test)]
mod weight_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_unknown_backend_gets_its_configured_share() {
        let now = Instant::now();
        let mut h = HealthConfig::default();
        let mut b = BackendRuntime::new(100, Source::Api, Some([2; 6]), &h, now);
        assert_eq!(b.machine.state(), Health::Unknown);
        assert_eq!(b.effective_weight(&h, now), 0, "by default none");
        h.unknown_weight_percent = 50;
        assert_eq!(b.effective_weight(&h, now), 50);
        h.unknown_weight_percent = 1;
        b.weight = 7;
        assert_eq!(b.effective_weight(&h, now), 1, "rounded up");
        // Healthy with slow start: the ramp starts from the unknown share, not from 1.
        h.unknown_weight_percent = 50;
        h.slow_start = Duration::from_secs(10);
        b.weight = 100;
        b.machine.observe(true, now);
        b.machine.observe(true, now);
        assert_eq!(b.effective_weight(&h, now), 50);
        assert_eq!(b.effective_weight(&h, now + Duration::from_secs(8)), 80);
        assert_eq!(b.effective_weight(&h, now + Duration::from_secs(10)), 100);
    }

    /// `no_new_flows` (issue 20) agrees with the unknown share (issue 15): an unchecked
    /// backend is reported as getting no flows only while its share is none.
    #[test]
    fn no_new_flows_follows_the_unknown_share() {
        let now = Instant::now();
        let input = VipInput {
            name: "web".into(),
            address: "10.0.0.1".into(),
            port: 80,
            ..Default::default()
        };
        let env = |health| lb_config::VipEnv {
            ipip_source_v4: false,
            ipip_source_v6: false,
            backend_mtu: 0,
            health,
        };
        let mut vip = VipRuntime {
            cfg: input
                .check(&env(&HealthInput::default()))
                .expect("valid VIP"),
            input: input.clone(),
            source: Source::Api,
            backends: BTreeMap::new(),
        };
        let b = BackendRuntime::new(100, Source::Api, Some([2; 6]), &vip.cfg.health, now);
        assert_eq!(
            no_new_flows(&vip, &b, now).as_deref(),
            Some("health not known yet (checks have not passed)")
        );
        vip.cfg.health.unknown_weight_percent = 50;
        assert_eq!(no_new_flows(&vip, &b, now), None);
    }
}
