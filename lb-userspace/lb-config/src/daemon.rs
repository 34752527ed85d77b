//! The parts of the config only the daemon uses: the API, health checks, attachment and the
//! connection-table sweep.

use lb_dataplane::pin::AttachMode;
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::{
    ConfigError, Ctx, HealthInput, Spans,
    access::{self, AccessConfig},
    value,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    pub socket: PathBuf,
    pub listen: Option<SocketAddr>,
    pub state_file: PathBuf,
    /// TLS, clients and leases of the TCP listener (`token_file` is one admin client).
    pub access: AccessConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/lbd/lbd.sock"),
            listen: None,
            state_file: PathBuf::from("/var/lib/lbd/state.json"),
            access: AccessConfig::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// No checks: backends are healthy as soon as they are listed.
    None,
    Tcp,
    Http {
        path: String,
        expect_status: u16,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    pub kind: CheckKind,
    /// Port to check; 0 means the VIP's port.
    pub port: u16,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that make a backend healthy.
    pub rise: u32,
    /// Consecutive failures that make it unhealthy.
    pub fall: u32,
    /// A recovered backend's weight ramps from 0 to full over this period.
    pub slow_start: Duration,
    /// The share of its weight (percent) a backend gets while it is still unknown (added,
    /// not yet checked `rise` times): design seed 2.4's "observation" weight. 0, the default,
    /// gives an unchecked backend no new flows.
    pub unknown_weight_percent: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            kind: CheckKind::Tcp,
            port: 0,
            interval: Duration::from_millis(1000),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
            slow_start: Duration::ZERO,
            unknown_weight_percent: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepConfig {
    pub interval: Duration,
    pub tcp_idle: Duration,
    pub udp_idle: Duration,
    /// How long a flow that saw FIN or RST stays in the table.
    pub closing_idle: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            tcp_idle: Duration::from_secs(300),
            udp_idle: Duration::from_secs(30),
            closing_idle: Duration::from_secs(10),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    socket: Option<String>,
    listen: Option<Spanned<String>>,
    token_file: Option<String>,
    state_file: Option<String>,
    tls: Option<access::RawTls>,
    #[serde(default)]
    clients: Vec<access::RawClient>,
    registration_lease_s: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    kind: Option<Spanned<String>>,
    port: Option<u16>,
    path: Option<String>,
    expect_status: Option<Spanned<u16>>,
    interval_ms: Option<Spanned<u64>>,
    timeout_ms: Option<Spanned<u64>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
    slow_start_ms: Option<Spanned<u64>>,
    unknown_weight_percent: Option<Spanned<u32>>,
}

impl RawHealth {
    /// The settings as every source gives them, and where each key is in the file.
    pub(super) fn into_input(self) -> (HealthInput, Spans) {
        let mut spans = Spans::new();
        let port = self.port;
        let path = self.path.clone();
        let input = HealthInput {
            kind: value(&mut spans, "kind", &self.kind),
            port,
            path,
            expect_status: value(&mut spans, "expect_status", &self.expect_status),
            interval_ms: value(&mut spans, "interval_ms", &self.interval_ms),
            timeout_ms: value(&mut spans, "timeout_ms", &self.timeout_ms),
            rise: value(&mut spans, "rise", &self.rise),
            fall: value(&mut spans, "fall", &self.fall),
            slow_start_ms: value(&mut spans, "slow_start_ms", &self.slow_start_ms),
            unknown_weight_percent: value(
                &mut spans,
                "unknown_weight_percent",
                &self.unknown_weight_percent,
            ),
        };
        // A bad path is reported at the line of `kind`, as before.
        if let Some(k) = spans.get("kind").cloned() {
            spans.insert("path".into(), k);
        }
        (input, spans)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSweep {
    interval_ms: Option<Spanned<u64>>,
    tcp_idle_s: Option<u64>,
    udp_idle_s: Option<u64>,
    closing_idle_s: Option<u64>,
}

/// Above this a per-CPU limit means nothing (no CPU creates that many flows per second): a
/// typo, or an attempt to turn the guard off, which is written 0.
const MAX_FLOOD_LIMIT: i64 = 100_000_000;

/// `dataplane.max_new_flows_per_cpu`: the LRU flood guard's limit, default Katran's 125,000
/// new flows per second per CPU; 0 turns the guard off.
pub(super) fn parse_flood_limit(
    ctx: &Ctx,
    v: &Option<Spanned<toml::Value>>,
) -> Result<u32, ConfigError> {
    const FIELD: &str = "dataplane.max_new_flows_per_cpu";
    let Some(s) = v else {
        return Ok(lb_common::DEFAULT_MAX_NEW_FLOWS_PER_CPU);
    };
    match s.get_ref() {
        toml::Value::Integer(n @ 0..=MAX_FLOOD_LIMIT) => Ok(*n as u32),
        toml::Value::Integer(n) => Err(ctx.err(
            &s.span(),
            FIELD,
            format!(
                "{n} is out of range: new flows per second per CPU, 1 to {MAX_FLOOD_LIMIT} (0 turns the flood guard off)"
            ),
        )),
        other => Err(ctx.err(
            &s.span(),
            FIELD,
            format!(
                "{other} is not a whole number of new flows per second per CPU (0 turns the flood guard off)"
            ),
        )),
    }
}

/// The smallest backend MTU accepted: IPv4's "every host accepts 576 bytes" (RFC 791). Less
/// is no real path, and the data plane's ICMP answer quotes 84 bytes of the packet.
const MIN_BACKEND_MTU: i64 = 576;
pub(super) fn parse_backend_mtu(
    ctx: &Ctx,
    v: &Option<Spanned<toml::Value>>,
) -> Result<u32, ConfigError> {
    const FIELD: &str = "dataplane.backend_mtu";
    let Some(s) = v else {
        return Ok(0);
    };
    match s.get_ref() {
        toml::Value::Integer(0) => Ok(0),
        toml::Value::Integer(n @ MIN_BACKEND_MTU..=65535) => Ok(*n as u32),
        toml::Value::Integer(n) => Err(ctx.err(
            &s.span(),
            FIELD,
            format!(
                "{n} is out of range: bytes of the largest packet the backend path carries, {MIN_BACKEND_MTU} to 65535 (0: unchecked)"
            ),
        )),
        other => Err(ctx.err(
            &s.span(),
            FIELD,
            format!("{other} is not a whole number of bytes (0: unchecked)"),
        )),
    }
}

pub(super) fn parse_attach_mode(
    ctx: &Ctx,
    s: &Option<Spanned<String>>,
) -> Result<AttachMode, ConfigError> {
    match s {
        None => Ok(AttachMode::Auto),
        Some(s) => match s.get_ref().as_str() {
            "driver" => Ok(AttachMode::Driver),
            "generic" => Ok(AttachMode::Generic),
            "auto" => Ok(AttachMode::Auto),
            other => Err(ctx.err(
                &s.span(),
                "dataplane.xdp_mode",
                format!("unknown mode {other:?} (driver, generic, auto)"),
            )),
        },
    }
}

pub(super) fn parse_api(ctx: &Ctx, a: RawApi) -> Result<ApiConfig, ConfigError> {
    let d = ApiConfig::default();
    let listen = a
        .listen
        .as_ref()
        .map(|l| {
            l.get_ref().parse::<SocketAddr>().map_err(|_| {
                ctx.err(
                    &l.span(),
                    "api.listen",
                    format!("{:?} is not ADDRESS:PORT", l.get_ref()),
                )
            })
        })
        .transpose()?;
    let access = access::parse_access(
        ctx,
        a.listen.as_ref(),
        a.token_file.as_deref(),
        a.tls,
        a.clients,
        a.registration_lease_s.as_ref(),
    )?;
    Ok(ApiConfig {
        socket: a.socket.map(PathBuf::from).unwrap_or(d.socket),
        listen,
        state_file: a.state_file.map(PathBuf::from).unwrap_or(d.state_file),
        access,
    })
}

pub(super) fn parse_sweep(ctx: &Ctx, s: &RawSweep) -> Result<SweepConfig, ConfigError> {
    let d = SweepConfig::default();
    let interval = match &s.interval_ms {
        Some(v) if *v.get_ref() < 10 => {
            return Err(ctx.err(&v.span(), "sweep.interval_ms", "must be at least 10"));
        }
        Some(v) => Duration::from_millis(*v.get_ref()),
        None => d.interval,
    };
    Ok(SweepConfig {
        interval,
        tcp_idle: s.tcp_idle_s.map(Duration::from_secs).unwrap_or(d.tcp_idle),
        udp_idle: s.udp_idle_s.map(Duration::from_secs).unwrap_or(d.udp_idle),
        closing_idle: s
            .closing_idle_s
            .map(Duration::from_secs)
            .unwrap_or(d.closing_idle),
    })
}
