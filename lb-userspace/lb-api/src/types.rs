//! Requests and answers of the lbd API. lbd serves exactly these types (its OpenAPI document,
//! `GET /v1/openapi.json`, is generated from them), lbctl and the tests read them, and the
//! state file stores the ones that are the same concepts.
//!
//! Answers ignore unknown fields when read, so that a newer lbd still works with an older
//! lbctl; requests refuse them, so that a typo is an error and not a silent default.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::IpAddress;
use crate::whole;

/// Display, `FromStr` (the wire names and their aliases) and `name()` of a unit-only enum,
/// from one list of its wire names.
macro_rules! wire_names {
    ($t:ident { $($v:ident => $s:literal $(| $alias:literal)*),* $(,)? }) => {
        impl $t {
            /// Every value, in the order the API documents them.
            pub const ALL: &'static [$t] = &[$($t::$v),*];

            /// The name on the wire.
            pub fn name(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.name())
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s $(| $alias)* => Ok(Self::$v),)*
                    other => Err(format!(
                        "unknown {} {other:?} ({})",
                        stringify!($t).to_lowercase(),
                        [$($s),*].join(", ")
                    )),
                }
            }
        }
    };
}

/// Result of the last health checks of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// No verdict yet: not given new flows until `rise` successes.
    Unknown,
    Healthy,
    Unhealthy,
}
wire_names!(Health { Unknown => "unknown", Healthy => "healthy", Unhealthy => "unhealthy" });

/// Operator state of a backend: a draining backend gets no new flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    Active,
    Draining,
}
wire_names!(AdminState { Active => "active", Draining => "draining" });

/// Who drained a backend: an operator's drain sticks until `lbctl backend undrain`; the
/// registrant's own (its graceful shutdown) ends with its next registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DrainedBy {
    Operator,
    Registrant,
}
wire_names!(DrainedBy { Operator => "operator", Registrant => "registrant" });

/// Where a backend (or VIP) came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The config file.
    Config,
    /// Added through the API (`lbctl`).
    Api,
    /// Registered by the backend service itself.
    Registered,
}
wire_names!(Source { Config => "config", Api => "api", Registered => "registered" });

/// Transport protocol of a VIP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}
wire_names!(Protocol { Tcp => "tcp", Udp => "udp" });

/// How a VIP picks the backend of a new flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Maglev consistent hashing on the 5-tuple.
    #[default]
    Maglev,
    /// The Maglev table hashed on the source address only (session affinity).
    IpHash,
    /// Smooth weighted round-robin (`wrr` is read too).
    #[serde(alias = "wrr")]
    WeightedRoundRobin,
    /// Fewest active connections relative to weight (`lc` is read too).
    #[serde(alias = "lc")]
    LeastConnections,
}
wire_names!(Algorithm {
    Maglev => "maglev",
    IpHash => "ip-hash",
    WeightedRoundRobin => "weighted-round-robin" | "wrr",
    LeastConnections => "least-connections" | "lc",
});

/// How packets reach the backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Mode {
    /// Direct server return: the destination MAC is rewritten.
    #[default]
    #[serde(rename = "dsr-l2")]
    DsrL2,
    /// IP-in-IP encapsulation to the backend.
    #[serde(rename = "ipip")]
    Ipip,
}
wire_names!(Mode { DsrL2 => "dsr-l2", Ipip => "ipip" });

/// How the XDP program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native XDP in the driver.
    Driver,
    /// Generic (skb) XDP.
    Generic,
}
wire_names!(AttachMode { Driver => "driver", Generic => "generic" });

/// The last health check of a backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LastCheck {
    pub ok: bool,
    /// How long the successful check took; `null` when it failed.
    #[serde(default)]
    pub latency_ms: Option<f64>,
    /// Why the check failed; `null` when it succeeded.
    #[serde(default)]
    pub error: Option<String>,
    pub at_unix_ms: u64,
}

/// A backend of a VIP as lbd sees it now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Backend {
    #[schema(value_type = IpAddress)]
    pub address: IpAddr,
    /// Configured weight.
    pub weight: u32,
    /// The weight the registrant last declared; `null` if none did.
    #[serde(default)]
    pub declared_weight: Option<u32>,
    /// Weight the table uses now: 0 while draining, unhealthy or unresolved, lower during
    /// slow start.
    pub effective_weight: u32,
    pub health: Health,
    pub admin: AdminState,
    /// Who drained it (`null` while active).
    #[serde(default)]
    pub drained_by: Option<DrainedBy>,
    pub source: Source,
    /// The backend's MAC; `null` while the neighbour is unresolved (`mac_error` says why).
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub mac_error: Option<String>,
    /// `null` before the first check.
    #[serde(default)]
    pub last_check: Option<LastCheck>,
    /// The backend's report on its own setup (from its registrations; `None`: none sent).
    #[serde(default)]
    pub self_check: Option<crate::selfcheck::SelfCheck>,
    /// Why it gets no new flows now (`None` while it gets some).
    #[serde(default)]
    pub no_new_flows: Option<String>,
    /// In the answer to a registration: how the VIP's packets reach this backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding: Option<crate::selfcheck::Forwarding>,
}

/// A VIP with its settings and backends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Vip {
    pub name: String,
    /// Who owns it: `config` (lbd.toml) or `api` (`null` from an older lbd).
    #[serde(default)]
    pub source: Option<Source>,
    #[schema(value_type = IpAddress)]
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub algorithm: Algorithm,
    pub mode: Mode,
    /// Entries of the lookup table.
    pub table_size: u32,
    /// The health checks in force: the global `[health]` under the VIP's own keys (`null`
    /// from an older lbd).
    #[serde(default)]
    pub health: Option<VipHealth>,
    #[serde(default)]
    pub backends: Vec<Backend>,
}

/// The kind of a VIP's health check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    Tcp,
    Http,
    None,
}
wire_names!(CheckKind { Tcp => "tcp", Http => "http", None => "none" });

/// The health checks of a VIP, every setting resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VipHealth {
    pub kind: CheckKind,
    /// The HTTP check's path (`http` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The HTTP check's expected status (`http` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    /// 0: the VIP's port.
    pub port: u16,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub rise: u32,
    pub fall: u32,
    pub slow_start_ms: u64,
    pub unknown_weight_percent: u32,
}

/// A VIP's own health settings in `POST /v1/vips`: keys left out take the global `[health]`
/// (checked as the file's keys are: 422 with `health.KEY: reason`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CheckKind>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional"
    )]
    #[schema(maximum = 65535)]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional"
    )]
    #[schema(maximum = 65535)]
    pub expect_status: Option<u16>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional"
    )]
    pub interval_ms: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional"
    )]
    pub timeout_ms: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional"
    )]
    pub rise: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional"
    )]
    pub fall: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional"
    )]
    pub slow_start_ms: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional"
    )]
    #[schema(maximum = 100)]
    pub unknown_weight_percent: Option<u32>,
}

/// Body of `POST /v1/vips`: fields left out take lbd's defaults. The state file keeps the
/// VIPs added through the API in this shape too, every field set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVip {
    /// Unique name: 1-64 characters of `A-Z a-z 0-9 - _`.
    #[schema(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    #[schema(value_type = IpAddress)]
    pub address: IpAddr,
    /// Port clients connect to; 0 (the default) is every port.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional"
    )]
    #[schema(maximum = 65535)]
    pub port: Option<u16>,
    /// Default `tcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Default `maglev`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<Algorithm>,
    /// Default `dsr-l2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Entries of the lookup table: a prime (422 otherwise), 65537 by default.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional"
    )]
    #[schema(minimum = 2, maximum = 65537)]
    pub table_size: Option<u32>,
    /// Second chance (docs/dataplane.md): `ipip` with maglev or ip-hash only. Default off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_chance: Option<bool>,
    /// How long second chance remembers a flow, in seconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional"
    )]
    pub second_chance_window_s: Option<u32>,
    /// Overrides of the global `[health]`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional_object"
    )]
    pub health: Option<HealthSettings>,
}

/// Body of `POST /v1/vips/{vip}/backends`: the registration of a backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBackend {
    #[schema(value_type = IpAddress)]
    pub address: IpAddr,
    /// The declared weight (0-1000000); left out: 100 for a new backend, unchanged for an
    /// existing one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional"
    )]
    #[schema(maximum = 1_000_000)]
    pub weight: Option<u32>,
    /// The registrant's check of its own setup (the app sends one; others may not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_check: Option<crate::selfcheck::SelfCheck>,
}

/// Body of `POST .../backends/{address}/weight`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetWeight {
    #[serde(deserialize_with = "whole::number")]
    #[schema(maximum = 1_000_000)]
    pub weight: u32,
}

/// Optional body of `POST .../backends/{address}/drain`: no body is an operator's drain;
/// `{"by": "registrant"}` is the backend's own (its graceful shutdown), which its next
/// registration undoes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Drain {
    pub by: DrainedBy,
}

/// Optional body of `POST /v1/shutdown`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {
    /// Also detach the XDP program and remove its pins, leaving nothing behind.
    #[serde(default)]
    pub detach: bool,
}

/// Answer of `POST /v1/shutdown`: lbd exits right after sending it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ShuttingDown {
    pub shutting_down: bool,
    pub detach: bool,
}

/// Answer of the DELETE calls: the VIP's name or the backend's address.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    pub deleted: String,
}

/// What went wrong, for a program: each code has one HTTP status and one meaning (the error
/// table of docs/api.md lists them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    Invalid,
    /// Too many captures at once.
    Busy,
    Internal,
    /// The data plane cannot do it (capture without its program).
    Unavailable,
}
wire_names!(ErrorCode {
    BadRequest => "bad_request",
    Unauthorized => "unauthorized",
    Forbidden => "forbidden",
    NotFound => "not_found",
    MethodNotAllowed => "method_not_allowed",
    Conflict => "conflict",
    PayloadTooLarge => "payload_too_large",
    UnsupportedMediaType => "unsupported_media_type",
    Invalid => "invalid",
    Busy => "busy",
    Internal => "internal",
    Unavailable => "unavailable",
});

impl ErrorCode {
    /// The HTTP status lbd answers this code with.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::Invalid => 422,
            Self::Busy => 429,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }

    /// When lbd answers it.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::BadRequest => {
                "malformed JSON, wrong types, a value outside the schema's range, an invalid address"
            }
            Self::Unauthorized => "a TCP request without a known client's token or certificate",
            Self::Forbidden => "a call outside the client's scope (read-only, registrant)",
            Self::NotFound => "unknown VIP, backend or endpoint",
            Self::MethodNotAllowed => "the path exists, the method does not",
            Self::Conflict => "a VIP name or (address, port, protocol) that already exists",
            Self::PayloadTooLarge => "a body larger than lbd accepts",
            Self::UnsupportedMediaType => "a body without `Content-Type: application/json`",
            Self::Invalid => {
                "well-formed but not acceptable, as `field: reason`: the config file's checks and \
                 words (a table size that is not prime, `ipip` without an outer source, a \
                 health key out of range), a backend of the other IP family than its VIP's, the \
                 VIP limit, a capture filter naming no reason, or a reload's \
                 `FILE:LINE: field: reason`"
            }
            Self::Busy => "as many captures run as lbd allows at once",
            Self::Internal => "a map update failed (the message says which)",
            Self::Unavailable => "the data plane has no capture program (the message says why)",
        }
    }
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// What went wrong, for a program.
    pub code: ErrorCode,
}

/// An interface the XDP program is attached to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Interface {
    pub iface: String,
    pub mode: AttachMode,
    /// This lbd took over a pinned link after a restart.
    #[serde(default)]
    pub adopted: bool,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    pub version: String,
    pub uptime_s: u64,
    pub interfaces: Vec<Interface>,
    /// The maps and links are pinned (they outlive lbd).
    pub pinned: bool,
    #[serde(default)]
    pub pin_dir: String,
    pub vips: u64,
    pub backends: u64,
    pub healthy_backends: u64,
}

/// One row of `GET /v1/health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthEntry {
    pub vip: String,
    #[schema(value_type = IpAddress)]
    pub address: IpAddr,
    pub health: Health,
    pub admin: AdminState,
    /// Who drained it (`null` while active).
    #[serde(default)]
    pub drained_by: Option<DrainedBy>,
    pub effective_weight: u32,
    #[serde(default)]
    pub last_check: Option<LastCheck>,
    /// The backend's self-check summary (`ok`, `1 warning`, `FAIL arp_ignore`); `None`: it
    /// sends none.
    #[serde(default)]
    pub self_check: Option<String>,
    /// Why it gets no new flows now.
    #[serde(default)]
    pub no_new_flows: Option<String>,
}

/// `GET /v1/stats`: counters are totals since the data plane was loaded (`lbctl stats
/// --watch` turns them into rates).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    pub at_unix_ms: u64,
    pub vips: Vec<VipStats>,
    /// Packets by the data plane's verdict (`tx_forward`, `drop_no_backend`, ...).
    #[serde(default)]
    pub reasons: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VipStats {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
    pub new_conns: u64,
    #[serde(default)]
    pub backends: Vec<BackendStats>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackendStats {
    #[schema(value_type = IpAddress)]
    pub address: IpAddr,
    pub packets: u64,
    pub bytes: u64,
    pub new_conns: u64,
    /// Entries in the connection table now.
    pub active_conns: u64,
}

/// One event of `GET /v1/events` (the dashboard's live feed): everything the dashboard shows,
/// taken at once every second. Counters are totals, as in [`Stats`]: the reader turns two
/// snapshots into rates.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    pub at_unix_ms: u64,
    pub status: Status,
    pub vips: Vec<Vip>,
    pub stats: Stats,
    /// Per VIP: the lookup tables this lbd has written (each rewrite flips to a new one;
    /// 0: adopted from the previous lbd and not rewritten since).
    pub table_generations: BTreeMap<String, u64>,
    /// This node's VRRP routers; `null` without a `[vrrp]` section.
    #[serde(default)]
    pub vrrp: Option<crate::vrrp::Overview>,
    /// This node's BGP speaker, sessions and prefixes; `null` without a `[bgp]` section.
    #[serde(default)]
    pub bgp: Option<crate::bgp::Overview>,
}

/// Body of `POST /v1/reload` (optional: left out, a reload that applies and prunes nothing).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reload {
    /// Only show what would change.
    #[serde(default)]
    pub dry_run: bool,
    /// Also remove what the API or registrations added that the file does not list.
    #[serde(default)]
    pub prune: bool,
}

/// Answer of `POST /v1/reload`: what changed (or would change with `dry_run`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReloadReport {
    pub file: String,
    pub dry_run: bool,
    pub changes: Vec<ReloadChange>,
    /// Settings that changed but take effect only when lbd restarts.
    #[serde(default)]
    pub needs_restart: Vec<String>,
    pub applied: bool,
}

/// One change of a reload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReloadChange {
    /// `vips`, `backends`, `health`, `dataplane`, `api`, `sweep`, `vrrp`, ...
    pub section: String,
    pub change: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_aliases_are_read() {
        for a in Algorithm::ALL {
            assert_eq!(a.name().parse::<Algorithm>(), Ok(*a));
            let json = serde_json::to_string(a).expect("serialise");
            assert_eq!(json, format!("\"{a}\""));
        }
        assert_eq!("wrr".parse(), Ok(Algorithm::WeightedRoundRobin));
        let lc: Algorithm = serde_json::from_str("\"lc\"").expect("alias");
        assert_eq!(lc, Algorithm::LeastConnections);
        assert_eq!(
            "rr".parse::<Algorithm>().unwrap_err(),
            "unknown algorithm \"rr\" (maglev, ip-hash, weighted-round-robin, least-connections)"
        );
        assert_eq!(serde_json::to_string(&Mode::DsrL2).unwrap(), "\"dsr-l2\"");
        assert_eq!(
            serde_json::to_string(&ErrorCode::UnsupportedMediaType).unwrap(),
            "\"unsupported_media_type\""
        );
    }

    #[test]
    fn integers_may_be_written_as_whole_floats() {
        let w: SetWeight = serde_json::from_str(r#"{"weight": 244.0}"#).expect("whole float");
        assert_eq!(w.weight, 244);
        for bad in [
            r#"{"weight": 2.5}"#,
            r#"{"weight": -1}"#,
            r#"{"weight": 5e10}"#,
        ] {
            assert!(serde_json::from_str::<SetWeight>(bad).is_err(), "{bad}");
        }
        let b: NewBackend =
            serde_json::from_str(r#"{"address": "::1", "weight": null}"#).expect("null weight");
        assert_eq!(b.weight, None);
        let v: NewVip =
            serde_json::from_str(r#"{"name": "a", "address": "::1", "port": 80.0}"#).expect("port");
        assert_eq!((v.port, v.table_size), (Some(80), None));
        assert!(
            serde_json::from_str::<NewVip>(r#"{"name": "a", "address": "::1", "port": 65536}"#)
                .is_err()
        );
    }

    #[test]
    fn requests_refuse_unknown_fields_and_answers_ignore_them() {
        let e = serde_json::from_str::<NewBackend>(r#"{"address": "10.0.0.1", "wieght": 5}"#)
            .unwrap_err();
        assert!(e.to_string().contains("wieght"), "{e}");
        let d: Deleted = serde_json::from_str(r#"{"deleted": "web", "more": 1}"#).expect("read");
        assert_eq!(d.deleted, "web");
        let v = r#"{"name": "a", "address": "::1", "health": []}"#;
        assert!(
            serde_json::from_str::<NewVip>(v).is_err(),
            "health is an object"
        );
        let v = r#"{"name": "a", "address": "::1", "health": {"rise": 3}}"#;
        let v: NewVip = serde_json::from_str(v).expect("health object");
        assert_eq!(v.health.and_then(|h| h.rise), Some(3));
    }
}
