//! The parts of the config only the daemon uses: the API, health checks, attachment and the
//! connection-table sweep.

use lb_dataplane::pin::AttachMode;
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use lb_common::ForwardMode;

use super::{ConfigError, Ctx, DataplaneConfig, VipConfig};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    pub socket: PathBuf,
    pub listen: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
    pub state_file: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/lbd/lbd.sock"),
            listen: None,
            token_file: None,
            state_file: PathBuf::from("/var/lib/lbd/state.json"),
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
}

#[derive(Deserialize, Default, Clone)]
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
    slow_start_ms: Option<u64>,
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
/// With an IPv6 `ipip` VIP the path must carry IPv6's minimum link MTU (1280, RFC 8200)
/// inside the 40-byte outer header.
const MIN_BACKEND_MTU_V6: u32 = 1280 + 40;

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

/// An IPv6 `ipip` VIP needs room for 1280 bytes inside the tunnel.
pub(super) fn check_backend_mtu_for_ipv6(
    ctx: &Ctx,
    dataplane: &DataplaneConfig,
    span: Option<std::ops::Range<usize>>,
    vips: &[VipConfig],
) -> Result<(), ConfigError> {
    let mtu = dataplane.backend_mtu;
    if mtu == 0 || mtu >= MIN_BACKEND_MTU_V6 {
        return Ok(());
    }
    let ipv6_ipip = vips
        .iter()
        .find(|v| v.mode == ForwardMode::Ipip && v.address.is_ipv6());
    match ipv6_ipip {
        Some(v) => Err(ctx.err(
            &span.unwrap_or(0..0),
            "dataplane.backend_mtu",
            format!(
                "{mtu} leaves {} bytes inside IP6IP6 for VIP {:?}, below IPv6's minimum link MTU of 1280: at least {MIN_BACKEND_MTU_V6}, or 0",
                mtu - 40,
                v.name
            ),
        )),
        None => Ok(()),
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
    if let (Some(_), None, Some(l)) = (listen, &a.token_file, &a.listen) {
        return Err(ctx.err(
            &l.span(),
            "api.token_file",
            "a TCP listener needs a token_file (every TCP call needs the bearer token)",
        ));
    }
    Ok(ApiConfig {
        socket: a.socket.map(PathBuf::from).unwrap_or(d.socket),
        listen,
        token_file: a.token_file.map(PathBuf::from),
        state_file: a.state_file.map(PathBuf::from).unwrap_or(d.state_file),
    })
}

/// `over` fields replace `base` fields (a VIP's `health` over the global `[health]`).
pub(super) fn merge_health(base: &RawHealth, over: &RawHealth) -> RawHealth {
    RawHealth {
        kind: over.kind.clone().or_else(|| base.kind.clone()),
        port: over.port.or(base.port),
        path: over.path.clone().or_else(|| base.path.clone()),
        expect_status: over
            .expect_status
            .clone()
            .or_else(|| base.expect_status.clone()),
        interval_ms: over
            .interval_ms
            .clone()
            .or_else(|| base.interval_ms.clone()),
        timeout_ms: over.timeout_ms.clone().or_else(|| base.timeout_ms.clone()),
        rise: over.rise.clone().or_else(|| base.rise.clone()),
        fall: over.fall.clone().or_else(|| base.fall.clone()),
        slow_start_ms: over.slow_start_ms.or(base.slow_start_ms),
    }
}

pub(super) fn parse_health(
    ctx: &Ctx,
    field: &str,
    h: &RawHealth,
) -> Result<HealthConfig, ConfigError> {
    let d = HealthConfig::default();
    let f = |n: &str| format!("{field}.{n}");
    let kind = match &h.kind {
        None => d.kind.clone(),
        Some(k) => match k.get_ref().as_str() {
            "none" => CheckKind::None,
            "tcp" => CheckKind::Tcp,
            "http" => {
                let path = h.path.clone().unwrap_or_else(|| "/healthz".into());
                if !path.starts_with('/') {
                    return Err(ctx.err(
                        &k.span(),
                        f("path"),
                        format!("{path:?} must start with '/'"),
                    ));
                }
                let expect_status = match &h.expect_status {
                    Some(s) if !(100..600).contains(s.get_ref()) => {
                        return Err(ctx.err(
                            &s.span(),
                            f("expect_status"),
                            "an HTTP status is 100-599",
                        ));
                    }
                    Some(s) => *s.get_ref(),
                    None => 200,
                };
                CheckKind::Http {
                    path,
                    expect_status,
                }
            }
            other => {
                return Err(ctx.err(
                    &k.span(),
                    f("kind"),
                    format!("unknown check {other:?} (tcp, http, none)"),
                ));
            }
        },
    };
    let ms =
        |v: &Option<Spanned<u64>>, name: &str, def: Duration| -> Result<Duration, ConfigError> {
            match v {
                Some(s) if *s.get_ref() == 0 || *s.get_ref() > 3_600_000 => {
                    Err(ctx.err(&s.span(), f(name), "must be 1 ms to 1 hour"))
                }
                Some(s) => Ok(Duration::from_millis(*s.get_ref())),
                None => Ok(def),
            }
        };
    let interval = ms(&h.interval_ms, "interval_ms", d.interval)?;
    let timeout = ms(&h.timeout_ms, "timeout_ms", d.timeout)?;
    if timeout > interval
        && let Some(t) = &h.timeout_ms
    {
        return Err(ctx.err(&t.span(), f("timeout_ms"), "must not exceed interval_ms"));
    }
    let count = |v: &Option<Spanned<u32>>, name: &str, def: u32| -> Result<u32, ConfigError> {
        match v {
            Some(s) if *s.get_ref() == 0 || *s.get_ref() > 100 => {
                Err(ctx.err(&s.span(), f(name), "must be 1-100"))
            }
            Some(s) => Ok(*s.get_ref()),
            None => Ok(def),
        }
    };
    Ok(HealthConfig {
        kind,
        port: h.port.unwrap_or(0),
        interval,
        timeout,
        rise: count(&h.rise, "rise", d.rise)?,
        fall: count(&h.fall, "fall", d.fall)?,
        slow_start: h
            .slow_start_ms
            .map(Duration::from_millis)
            .unwrap_or(d.slow_start),
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
