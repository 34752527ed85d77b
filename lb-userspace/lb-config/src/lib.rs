//! The balancer's TOML configuration: parsed into types that cannot hold a wrong value, with
//! every error naming the file, the line, the field and the reason.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    ops::Range,
    path::{Path, PathBuf},
};

use lb_common::{Algorithm, ForwardMode, IPPROTO_TCP, IPPROTO_UDP};
use serde::Deserialize;
use toml::Spanned;

mod access;
mod bgp;
mod check;
mod daemon;
pub mod second_chance;
mod vrrp;

pub use access::{AccessConfig, ClientConfig, Scope, TlsConfig};
pub use bgp::{Bfd, BgpConfig, Peer as BgpPeer};
pub use check::{
    BackendInput, Conflict, DEFAULT_WEIGHT, FieldError, HealthInput, VipEnv, VipInput,
    check_against, check_weight, valid_name,
};
pub use daemon::{ApiConfig, CheckKind, HealthConfig, SweepConfig};
pub use lb_dataplane::{MacAddr, pin::AttachMode};
pub use vrrp::{Centis, VirtualAddr, VrrpConfig};

use lb_dataplane::{
    BackendSpec, BackendState, SecondChance, VipSpec,
    maglev::TableSize,
    replay::{ReplaySetup, placeholder_mac},
};

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {field}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub field: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub dataplane: DataplaneConfig,
    pub api: ApiConfig,
    pub sweep: SweepConfig,
    /// The global `[health]` as written: what every VIP's own `health` (from the file, the
    /// API or the state file) is laid over.
    pub health: HealthInput,
    pub vips: Vec<VipConfig>,
    /// VIP failover between balancers (VRRPv3), when configured.
    pub vrrp: Option<VrrpConfig>,
    /// Active-active: the VIPs announced to routers over BGP, when configured.
    pub bgp: Option<BgpConfig>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataplaneConfig {
    pub interfaces: Vec<String>,
    pub conn_table_size: u32,
    pub ipip_source_v4: Option<IpAddr>,
    pub ipip_source_v6: Option<IpAddr>,
    /// Largest encapsulated packet the backend path carries (0: unchecked). A larger `ipip`
    /// packet is answered with ICMP "fragmentation needed" / "packet too big".
    pub backend_mtu: u32,
    /// LRU flood guard: new flows per second per CPU above which `maglev`/`ip-hash` flows are
    /// not pinned in the connection table (0: off).
    pub max_new_flows_per_cpu: u32,
    pub xdp_mode: AttachMode,
    /// bpffs directory for pins (maps and the XDP link), so a restart never stops forwarding.
    pub pin_dir: PathBuf,
    /// Detach and remove the pins when lbd stops (default: keep forwarding).
    pub detach_on_exit: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipConfig {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub proto: u8,
    pub algorithm: Algorithm,
    pub mode: ForwardMode,
    pub table_size: TableSize,
    pub health: HealthConfig,
    pub backends: Vec<BackendConfig>,
    pub second_chance: SecondChance,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: IpAddr,
    pub weight: u32,
    /// Static MAC (else the control plane resolves it through the neighbour table).
    pub mac: Option<MacAddr>,
}

impl VipConfig {
    /// The data-plane view of this VIP, with MACs from `mac_of` (the resolver, or a static map).
    pub fn to_spec(&self, mac_of: impl Fn(&BackendConfig) -> [u8; 6]) -> VipSpec {
        VipSpec {
            name: self.name.clone(),
            addr: self.address,
            port: self.port,
            proto: self.proto,
            algorithm: self.algorithm,
            mode: self.mode,
            table_size: self.table_size,
            backends: self
                .backends
                .iter()
                .map(|b| BackendSpec {
                    addr: b.address,
                    mac: mac_of(b),
                    weight: b.weight,
                    state: BackendState::Active,
                })
                .collect(),
            second_chance: self.second_chance,
        }
    }
}

// ---- raw, as written in the file ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    dataplane: RawDataplane,
    #[serde(default)]
    api: daemon::RawApi,
    #[serde(default)]
    health: daemon::RawHealth,
    #[serde(default)]
    sweep: daemon::RawSweep,
    #[serde(default)]
    vips: Vec<RawVip>,
    #[serde(default)]
    vrrp: Option<vrrp::RawVrrp>,
    #[serde(default)]
    bgp: Option<bgp::RawBgp>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDataplane {
    #[serde(default)]
    interfaces: Vec<String>,
    conn_table_size: Option<Spanned<u32>>,
    ipip_source_v4: Option<Spanned<String>>,
    ipip_source_v6: Option<Spanned<String>>,
    backend_mtu: Option<Spanned<toml::Value>>,
    max_new_flows_per_cpu: Option<Spanned<toml::Value>>,
    xdp_mode: Option<Spanned<String>>,
    pin_dir: Option<String>,
    #[serde(default)]
    detach_on_exit: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVip {
    name: Spanned<String>,
    address: Spanned<String>,
    port: Option<Spanned<u16>>,
    protocol: Option<Spanned<String>>,
    algorithm: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    table_size: Option<Spanned<u32>>,
    second_chance: Option<Spanned<bool>>,
    second_chance_window_s: Option<Spanned<u32>>,
    #[serde(default)]
    health: daemon::RawHealth,
    #[serde(default)]
    backends: Vec<RawBackend>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: Spanned<String>,
    weight: Option<Spanned<u32>>,
    mac: Option<Spanned<String>>,
}

/// Where each field of one object was written (`name`, `backends[0].weight`, `health.rise`).
type Spans = BTreeMap<String, Range<usize>>;

fn value<T: Clone>(
    spans: &mut Spans,
    field: impl Into<String>,
    v: &Option<Spanned<T>>,
) -> Option<T> {
    v.as_ref().map(|s| {
        spans.insert(field.into(), s.span());
        s.get_ref().clone()
    })
}

impl RawVip {
    /// The VIP as every source gives it, and where its fields are in the file.
    fn into_input(self) -> (VipInput, Spans) {
        let mut spans = Spans::new();
        spans.insert("name".into(), self.name.span());
        spans.insert("address".into(), self.address.span());
        let (health, health_spans) = self.health.into_input();
        for (k, v) in health_spans {
            spans.insert(format!("health.{k}"), v);
        }
        let backends = self
            .backends
            .into_iter()
            .enumerate()
            .map(|(j, b)| {
                spans.insert(format!("backends[{j}].address"), b.address.span());
                BackendInput {
                    address: b.address.into_inner(),
                    weight: value(&mut spans, format!("backends[{j}].weight"), &b.weight),
                    mac: value(&mut spans, format!("backends[{j}].mac"), &b.mac),
                }
            })
            .collect();
        let input = VipInput {
            name: self.name.get_ref().clone(),
            address: self.address.get_ref().clone(),
            port: value(&mut spans, "port", &self.port).unwrap_or(0),
            protocol: value(&mut spans, "protocol", &self.protocol),
            algorithm: value(&mut spans, "algorithm", &self.algorithm),
            mode: value(&mut spans, "mode", &self.mode),
            table_size: value(&mut spans, "table_size", &self.table_size),
            second_chance: value(&mut spans, "second_chance", &self.second_chance),
            second_chance_window_s: value(
                &mut spans,
                "second_chance_window_s",
                &self.second_chance_window_s,
            ),
            health,
            backends,
        };
        (input, spans)
    }
}

/// Largest weight: keeps weight sums far from overflow in every algorithm.
pub const MAX_WEIGHT: u32 = 1_000_000;

pub(crate) struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    /// A [`FieldError`] of an object whose fields are at `spans` (in the file), found at the
    /// line of the field, else of the object's first field.
    fn field_err(
        &self,
        e: FieldError,
        prefix: &str,
        spans: &Spans,
        globals: &Spans,
    ) -> ConfigError {
        let span = if e.global {
            globals.get(&e.field)
        } else {
            spans.get(&e.field)
        }
        .or_else(|| spans.get("name"))
        .cloned()
        .unwrap_or(0..0);
        let e = e.under(prefix);
        self.err(&span, e.field, e.reason)
    }

    fn err(
        &self,
        span: &Range<usize>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.into(),
            line: self.line(span),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

pub fn parse_algorithm(s: &str) -> Result<Algorithm, String> {
    match s {
        "maglev" => Ok(Algorithm::Maglev),
        "ip-hash" => Ok(Algorithm::IpHash),
        "weighted-round-robin" | "wrr" => Ok(Algorithm::WeightedRoundRobin),
        "least-connections" | "lc" => Ok(Algorithm::LeastConnections),
        other => Err(format!(
            "unknown algorithm {other:?} (maglev, ip-hash, weighted-round-robin, least-connections)"
        )),
    }
}

pub fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Maglev => "maglev",
        Algorithm::IpHash => "ip-hash",
        Algorithm::WeightedRoundRobin => "weighted-round-robin",
        Algorithm::LeastConnections => "least-connections",
    }
}

pub fn parse_mode(s: &str) -> Result<ForwardMode, String> {
    match s {
        "dsr-l2" => Ok(ForwardMode::DsrL2),
        "ipip" => Ok(ForwardMode::Ipip),
        other => Err(format!("unknown forwarding mode {other:?} (dsr-l2, ipip)")),
    }
}

pub fn mode_name(m: ForwardMode) -> &'static str {
    match m {
        ForwardMode::DsrL2 => "dsr-l2",
        ForwardMode::Ipip => "ipip",
    }
}

pub fn parse_protocol(s: &str) -> Result<u8, String> {
    match s {
        "tcp" => Ok(IPPROTO_TCP),
        "udp" => Ok(IPPROTO_UDP),
        other => Err(format!("unknown protocol {other:?} (tcp, udp)")),
    }
}

pub fn protocol_name(p: u8) -> &'static str {
    if p == IPPROTO_UDP { "udp" } else { "tcp" }
}

impl Config {
    /// The maps `lbctl replay` programs for this config: its settings and VIPs, and a
    /// placeholder MAC ([`placeholder_mac`]) for a backend without a static one.
    pub fn replay_setup(&self) -> ReplaySetup {
        let word = |a: Option<IpAddr>| a.map(lb_common::user::addr_words).unwrap_or_default();
        let mac_of = |b: &BackendConfig| {
            b.mac
                .map(|m| m.0)
                .unwrap_or_else(|| placeholder_mac(b.address))
        };
        ReplaySetup {
            conn_table_size: self.dataplane.conn_table_size,
            settings: lb_common::Settings {
                ipip_src_v4: word(self.dataplane.ipip_source_v4)[0],
                ipip_src_v6: word(self.dataplane.ipip_source_v6),
                backend_mtu: self.dataplane.backend_mtu,
                ..Default::default()
            },
            vips: self.vips.iter().map(|v| v.to_spec(mac_of)).collect(),
            backend_names: self
                .vips
                .iter()
                .flat_map(|v| {
                    v.backends
                        .iter()
                        .map(move |b| (mac_of(b), format!("{}/{}", v.name, b.address)))
                })
                .collect(),
        }
    }

    /// What a VIP from any source is checked against (see [`VipInput::check`]).
    pub fn vip_env(&self) -> VipEnv<'_> {
        VipEnv {
            ipip_source_v4: self.dataplane.ipip_source_v4.is_some(),
            ipip_source_v6: self.dataplane.ipip_source_v6.is_some(),
            backend_mtu: self.dataplane.backend_mtu,
            health: &self.health,
        }
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            field: "-".into(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &file)
    }

    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let ctx = Ctx { file, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            ctx.err(&span, "toml", e.message().to_string())
        })?;
        let mut globals = Spans::new();
        if let Some(s) = &raw.dataplane.backend_mtu {
            globals.insert("dataplane.backend_mtu".into(), s.span());
        }
        let dataplane = parse_dataplane(&ctx, raw.dataplane)?;
        let api = daemon::parse_api(&ctx, raw.api)?;
        let sweep = daemon::parse_sweep(&ctx, &raw.sweep)?;
        let (health, health_spans) = raw.health.into_input();
        health
            .check()
            .map_err(|e| ctx.field_err(e, "health", &health_spans, &globals))?;
        let env = VipEnv {
            ipip_source_v4: dataplane.ipip_source_v4.is_some(),
            ipip_source_v6: dataplane.ipip_source_v6.is_some(),
            backend_mtu: dataplane.backend_mtu,
            health: &health,
        };
        let mut vips: Vec<VipConfig> = Vec::new();
        for (i, v) in raw.vips.into_iter().enumerate() {
            let (input, spans) = v.into_input();
            let prefix = format!("vips[{i}]");
            let vip = input
                .check(&env)
                .map_err(|e| ctx.field_err(e, &prefix, &spans, &globals))?;
            check_against(&vip, &vips).map_err(|c| {
                let e = match c {
                    Conflict::Taken(e) | Conflict::Full(e) => e,
                };
                ctx.field_err(e, &prefix, &spans, &globals)
            })?;
            vips.push(vip);
        }
        let vrrp = match raw.vrrp {
            Some(r) => {
                let names: Vec<&str> = vips.iter().map(|v| v.name.as_str()).collect();
                Some(vrrp::parse_vrrp(&ctx, r, &names)?)
            }
            None => None,
        };
        let bgp = match raw.bgp {
            Some(r) => {
                let names: Vec<&str> = vips.iter().map(|v| v.name.as_str()).collect();
                let state_dir = api
                    .state_file
                    .parent()
                    .unwrap_or(Path::new("/var/lib/lbd"))
                    .to_path_buf();
                Some(bgp::parse_bgp(&ctx, r, &names, &state_dir)?)
            }
            None => None,
        };
        Ok(Self {
            dataplane,
            api,
            sweep,
            health,
            vips,
            vrrp,
            bgp,
        })
    }
}

fn parse_ip(ctx: &Ctx, s: &Spanned<String>, field: &str) -> Result<IpAddr, ConfigError> {
    s.get_ref().parse().map_err(|_| {
        ctx.err(
            &s.span(),
            field,
            format!("{:?} is not an IP address", s.get_ref()),
        )
    })
}

fn parse_dataplane(ctx: &Ctx, d: RawDataplane) -> Result<DataplaneConfig, ConfigError> {
    let conn_table_size = match d.conn_table_size {
        Some(s) if *s.get_ref() < 1024 => {
            return Err(ctx.err(
                &s.span(),
                "dataplane.conn_table_size",
                "must be at least 1024",
            ));
        }
        Some(s) => *s.get_ref(),
        None => lb_common::CONN_TABLE_SIZE,
    };
    let v4 = d
        .ipip_source_v4
        .as_ref()
        .map(|s| parse_ip(ctx, s, "dataplane.ipip_source_v4"))
        .transpose()?;
    if let (Some(ip), Some(s)) = (v4, &d.ipip_source_v4)
        && !ip.is_ipv4()
    {
        return Err(ctx.err(
            &s.span(),
            "dataplane.ipip_source_v4",
            "must be an IPv4 address",
        ));
    }
    let v6 = d
        .ipip_source_v6
        .as_ref()
        .map(|s| parse_ip(ctx, s, "dataplane.ipip_source_v6"))
        .transpose()?;
    if let (Some(ip), Some(s)) = (v6, &d.ipip_source_v6)
        && !ip.is_ipv6()
    {
        return Err(ctx.err(
            &s.span(),
            "dataplane.ipip_source_v6",
            "must be an IPv6 address",
        ));
    }
    Ok(DataplaneConfig {
        interfaces: d.interfaces,
        conn_table_size,
        ipip_source_v4: v4,
        ipip_source_v6: v6,
        backend_mtu: daemon::parse_backend_mtu(ctx, &d.backend_mtu)?,
        max_new_flows_per_cpu: daemon::parse_flood_limit(ctx, &d.max_new_flows_per_cpu)?,
        xdp_mode: daemon::parse_attach_mode(ctx, &d.xdp_mode)?,
        pin_dir: d
            .pin_dir
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/lbd")),
        detach_on_exit: d.detach_on_exit,
    })
}
