//! Requests and answers of the lbd API, field for field as docs/api.md describes them.
//! Unknown fields are ignored so that a newer lbd still works with an older lbctl.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Result of the last health check of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Unknown,
    Healthy,
    Unhealthy,
}

/// Operator state of a backend: a draining backend gets no new flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    Active,
    Draining,
}

/// Who drained a backend: an operator's drain sticks until `lbctl backend undrain`; the
/// registrant's own (its graceful shutdown) ends with its next registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainedBy {
    Operator,
    Registrant,
}

/// Where a backend came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Config,
    Api,
    Registered,
}

macro_rules! display_as_serde_name {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(match self { $(Self::$v => $s),* })
            }
        }
    };
}
display_as_serde_name!(Health { Unknown => "unknown", Healthy => "healthy", Unhealthy => "unhealthy" });
display_as_serde_name!(AdminState { Active => "active", Draining => "draining" });
display_as_serde_name!(DrainedBy { Operator => "operator", Registrant => "registrant" });
display_as_serde_name!(Source { Config => "config", Api => "api", Registered => "registered" });

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastCheck {
    pub ok: bool,
    #[serde(default)]
    pub latency_ms: Option<f64>,
    #[serde(default)]
    pub error: Option<String>,
    pub at_unix_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    pub address: IpAddr,
    /// Configured weight.
    pub weight: u32,
    /// The weight the registrant last declared; `None` if none did (or an older lbd).
    #[serde(default)]
    pub declared_weight: Option<u32>,
    /// Weight the table uses now: 0 while draining or unhealthy, lower during slow start.
    pub effective_weight: u32,
    pub health: Health,
    pub admin: AdminState,
    /// Who drained it (`None` while active, or from an older lbd).
    #[serde(default)]
    pub drained_by: Option<DrainedBy>,
    pub source: Source,
    /// `None` while the neighbour is unresolved; `mac_error` says why.
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub mac_error: Option<String>,
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vip {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub algorithm: String,
    pub mode: String,
    pub table_size: u32,
    #[serde(default)]
    pub backends: Vec<Backend>,
}

/// Body of `POST /v1/vips`: fields left out take lbd's defaults.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NewVip {
    pub name: String,
    pub address: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u32>,
}

/// Body of `POST /v1/vips/{vip}/backends`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBackend {
    pub address: IpAddr,
    /// The declared weight; left out: 100 for a new backend, unchanged for an existing one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The registrant's check of its own setup (the app sends one; others may not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_check: Option<crate::selfcheck::SelfCheck>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct WeightBody {
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct ShutdownBody {
    pub detach: bool,
}

/// Answer of the DELETE calls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    pub deleted: String,
}

/// Error body of every non-2xx answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub error: String,
    pub code: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    /// lbd itself has sent this as `iface`; both spellings are read.
    #[serde(alias = "iface")]
    pub name: String,
    /// `driver` or `generic`.
    pub mode: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub uptime_s: f64,
    pub interfaces: Vec<Interface>,
    pub pinned: bool,
    pub vips: u64,
    pub backends: u64,
    pub healthy_backends: u64,
}

/// One row of `GET /v1/health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthEntry {
    pub vip: String,
    pub address: IpAddr,
    pub health: Health,
    pub admin: AdminState,
    /// Who drained it (`None` while active, or from an older lbd).
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

/// `GET /v1/stats`: counters are totals since the data plane was loaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub at_unix_ms: u64,
    pub vips: Vec<VipStats>,
    #[serde(default)]
    pub reasons: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipStats {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
    pub new_conns: u64,
    #[serde(default)]
    pub backends: Vec<BackendStats>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStats {
    pub address: IpAddr,
    pub packets: u64,
    pub bytes: u64,
    pub new_conns: u64,
    pub active_conns: u64,
}
