//! The one path every VIP goes through, whichever way it arrives: the config file, the API
//! (`POST /v1/vips`) or lbd's state file after a restart. Each source turns what it read into
//! a [`VipInput`] and gets back a [`VipConfig`] or the same `field: reason` error; the file
//! adds `FILE:LINE: vips[N].` in front, the API answers 422 with it.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use lb_common::{Algorithm, ForwardMode};
use lb_dataplane::{MacAddr, maglev::TableSize};
use serde::{Deserialize, Serialize};

use super::{
    BackendConfig, CheckKind, HealthConfig, MAX_WEIGHT, VipConfig, parse_algorithm, parse_mode,
    parse_protocol,
};

/// What is wrong with one field. `field` is relative to the object checked (`mode`,
/// `backends[1].weight`, `health.rise`) unless the fault lies in a global setting
/// (`dataplane.backend_mtu`), which [`FieldError::under`] then leaves alone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
    /// The field names a global setting, not one of the object's own.
    pub global: bool,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            global: false,
        }
    }

    fn global(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            global: true,
            ..Self::new(field, reason)
        }
    }

    /// The same error seen from a container: `mode` under `vips[2]` is `vips[2].mode`.
    pub fn under(mut self, prefix: &str) -> Self {
        if !self.global && !prefix.is_empty() {
            self.field = format!("{prefix}.{}", self.field);
        }
        self
    }
}

/// Health-check settings as written (every key optional): the global `[health]`, a VIP's
/// `health = { ... }`, or the `health` object of `POST /v1/vips`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rise: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fall: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_weight_percent: Option<u32>,
}

/// Longest interval, timeout or slow start accepted.
const MAX_MS: u64 = 3_600_000;

impl HealthInput {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// These settings over `base`: each key given here wins (a VIP's over the global section).
    pub fn over(&self, base: &HealthInput) -> HealthInput {
        HealthInput {
            kind: self.kind.clone().or_else(|| base.kind.clone()),
            port: self.port.or(base.port),
            path: self.path.clone().or_else(|| base.path.clone()),
            expect_status: self.expect_status.or(base.expect_status),
            interval_ms: self.interval_ms.or(base.interval_ms),
            timeout_ms: self.timeout_ms.or(base.timeout_ms),
            rise: self.rise.or(base.rise),
            fall: self.fall.or(base.fall),
            slow_start_ms: self.slow_start_ms.or(base.slow_start_ms),
            unknown_weight_percent: self.unknown_weight_percent.or(base.unknown_weight_percent),
        }
    }

    pub fn check(&self) -> Result<HealthConfig, FieldError> {
        let d = HealthConfig::default();
        let kind = match self.kind.as_deref() {
            None => d.kind.clone(),
            Some("none") => CheckKind::None,
            Some("tcp") => CheckKind::Tcp,
            Some("http") => {
                let path = self.path.clone().unwrap_or_else(|| "/healthz".into());
                if !path.starts_with('/') {
                    return Err(FieldError::new(
                        "path",
                        format!("{path:?} must start with '/'"),
                    ));
                }
                let expect_status = self.expect_status.unwrap_or(200);
                if !(100..600).contains(&expect_status) {
                    return Err(FieldError::new(
                        "expect_status",
                        "an HTTP status is 100-599",
                    ));
                }
                CheckKind::Http {
                    path,
                    expect_status,
                }
            }
            Some(other) => {
                return Err(FieldError::new(
                    "kind",
                    format!("unknown check {other:?} (tcp, http, none)"),
                ));
            }
        };
        let ms = |v: Option<u64>, name: &str, def: Duration| match v {
            Some(n) if n == 0 || n > MAX_MS => Err(FieldError::new(name, "must be 1 ms to 1 hour")),
            Some(n) => Ok(Duration::from_millis(n)),
            None => Ok(def),
        };
        let interval = ms(self.interval_ms, "interval_ms", d.interval)?;
        let timeout = ms(self.timeout_ms, "timeout_ms", d.timeout)?;
        if timeout > interval {
            return Err(FieldError::new("timeout_ms", "must not exceed interval_ms"));
        }
        let count = |v: Option<u32>, name: &str, def: u32| match v {
            Some(0) | Some(101..) => Err(FieldError::new(name, "must be 1-100")),
            Some(n) => Ok(n),
            None => Ok(def),
        };
        let slow_start = match self.slow_start_ms {
            Some(n) if n > MAX_MS => {
                return Err(FieldError::new("slow_start_ms", "at most 1 hour (0: off)"));
            }
            Some(n) => Duration::from_millis(n),
            None => d.slow_start,
        };
        let unknown_weight_percent = match self.unknown_weight_percent {
            Some(p @ 101..) => {
                return Err(FieldError::new(
                    "unknown_weight_percent",
                    format!("{p} is not a percentage of the backend's weight (0-100)"),
                ));
            }
            Some(p) => p,
            None => d.unknown_weight_percent,
        };
        Ok(HealthConfig {
            kind,
            port: self.port.unwrap_or(0),
            interval,
            timeout,
            rise: count(self.rise, "rise", d.rise)?,
            fall: count(self.fall, "fall", d.fall)?,
            slow_start,
            unknown_weight_percent,
        })
    }
}

/// One backend as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendInput {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// One VIP as written, before any check. Addresses are strings so that a wrong one is a
/// `field: reason` error like any other, not a decoding failure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipInput {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u32>,
    /// docs/dataplane.md, "Second chance" (`ipip` with maglev or ip-hash only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_chance: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub second_chance_window_s: Option<u32>,
    /// Overrides of the global `[health]` (absent keys take the global values).
    #[serde(default, skip_serializing_if = "HealthInput::is_empty")]
    pub health: HealthInput,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<BackendInput>,
}

/// What a VIP is checked against besides itself: the balancer's settings.
#[derive(Clone, Copy, Debug)]
pub struct VipEnv<'a> {
    pub ipip_source_v4: bool,
    pub ipip_source_v6: bool,
    pub backend_mtu: u32,
    /// The global `[health]` as written.
    pub health: &'a HealthInput,
}

/// With an IPv6 `ipip` VIP the backend path must carry IPv6's minimum link MTU (1280, RFC
/// 8200) inside the 40-byte outer header.
pub const MIN_BACKEND_MTU_V6: u32 = 1280 + 40;

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn ip(s: &str, field: &str) -> Result<IpAddr, FieldError> {
    s.parse()
        .map_err(|_| FieldError::new(field, format!("{s:?} is not an IP address")))
}

impl VipInput {
    /// Every check a VIP gets on its own and against the balancer's settings; the checks
    /// against the other VIPs are [`check_against`].
    pub fn check(&self, env: &VipEnv) -> Result<VipConfig, FieldError> {
        if !valid_name(&self.name) {
            return Err(FieldError::new(
                "name",
                "1-64 characters of a-z, 0-9, '-', '_'",
            ));
        }
        let address = ip(&self.address, "address")?;
        let proto = parse_protocol(self.protocol.as_deref().unwrap_or("tcp"))
            .map_err(|r| FieldError::new("protocol", r))?;
        let algorithm: Algorithm = parse_algorithm(self.algorithm.as_deref().unwrap_or("maglev"))
            .map_err(|r| FieldError::new("algorithm", r))?;
        let mode: ForwardMode = parse_mode(self.mode.as_deref().unwrap_or("dsr-l2"))
            .map_err(|r| FieldError::new("mode", r))?;
        let table_size = match self.table_size {
            Some(n) => {
                TableSize::new(n).map_err(|e| FieldError::new("table_size", e.to_string()))?
            }
            None => TableSize::DEFAULT,
        };
        check_mode(&self.name, address, mode, env)?;
        let second_chance = crate::second_chance::parse(
            self.second_chance.unwrap_or(false),
            self.second_chance_window_s,
            algorithm,
            mode,
        )
        .map_err(|(field, reason)| FieldError::new(field, reason))?;
        let health = self
            .health
            .over(env.health)
            .check()
            .map_err(|e| e.under("health"))?;
        let mut backends = Vec::new();
        let mut seen = BTreeSet::new();
        for (j, b) in self.backends.iter().enumerate() {
            let backend = b
                .check(address)
                .map_err(|e| e.under(&format!("backends[{j}]")))?;
            if !seen.insert(backend.address) {
                return Err(FieldError::new(
                    format!("backends[{j}].address"),
                    format!("duplicate backend {}", backend.address),
                ));
            }
            backends.push(backend);
        }
        if algorithm == Algorithm::LeastConnections && backends.len() > lb_common::MAX_LC_BACKENDS {
            return Err(FieldError::new(
                "backends",
                format!(
                    "least-connections takes at most {} backends",
                    lb_common::MAX_LC_BACKENDS
                ),
            ));
        }
        Ok(VipConfig {
            name: self.name.clone(),
            address,
            port: self.port,
            proto,
            algorithm,
            mode,
            table_size,
            health,
            backends,
            second_chance,
        })
    }
}

/// `ipip` needs an outer source of the VIP's family, and over IPv6 room for 1280 bytes.
fn check_mode(
    name: &str,
    address: IpAddr,
    mode: ForwardMode,
    env: &VipEnv,
) -> Result<(), FieldError> {
    if mode != ForwardMode::Ipip {
        return Ok(());
    }
    let (has_source, field) = if address.is_ipv4() {
        (env.ipip_source_v4, "ipip_source_v4")
    } else {
        (env.ipip_source_v6, "ipip_source_v6")
    };
    if !has_source {
        return Err(FieldError::new(
            "mode",
            format!("ipip mode needs dataplane.{field} (the outer source address)"),
        ));
    }
    let mtu = env.backend_mtu;
    if address.is_ipv6() && mtu != 0 && mtu < MIN_BACKEND_MTU_V6 {
        return Err(FieldError::global(
            "dataplane.backend_mtu",
            format!(
                "{mtu} leaves {} bytes inside IP6IP6 for VIP {name:?}, below IPv6's minimum link MTU of 1280: at least {MIN_BACKEND_MTU_V6}, or 0",
                mtu.saturating_sub(40)
            ),
        ));
    }
    Ok(())
}

impl BackendInput {
    /// A backend of a VIP at `vip`: same family, weight in range, a real MAC if one is given.
    pub fn check(&self, vip: IpAddr) -> Result<BackendConfig, FieldError> {
        let address = ip(&self.address, "address")?;
        if address.is_ipv4() != vip.is_ipv4() {
            return Err(FieldError::new(
                "address",
                "backend and VIP must be the same IP family",
            ));
        }
        let weight = self.weight.unwrap_or(DEFAULT_WEIGHT);
        check_weight(weight).map_err(|r| FieldError::new("weight", r))?;
        let mac = self
            .mac
            .as_deref()
            .map(|m| m.parse::<MacAddr>().map_err(|r| FieldError::new("mac", r)))
            .transpose()?;
        Ok(BackendConfig {
            address,
            weight,
            mac,
        })
    }
}

/// The weight of a backend given without one.
pub const DEFAULT_WEIGHT: u32 = 100;

/// A weight any source may set (0 drains).
pub fn check_weight(w: u32) -> Result<(), String> {
    if w > MAX_WEIGHT {
        return Err(format!("at most {MAX_WEIGHT}"));
    }
    Ok(())
}

/// Why a VIP cannot join the others.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// Its name or its (address, port, protocol) is taken (the API answers 409).
    #[error("{0}")]
    Taken(FieldError),
    /// The data plane holds no more VIPs (the API answers 422).
    #[error("{0}")]
    Full(FieldError),
}

/// Checks a VIP against the VIPs already there (not including itself).
pub fn check_against<'a>(
    vip: &VipConfig,
    others: impl IntoIterator<Item = &'a VipConfig>,
) -> Result<(), Conflict> {
    let mut count = 0;
    for o in others {
        count += 1;
        if o.name == vip.name {
            return Err(Conflict::Taken(FieldError::new(
                "name",
                format!("duplicate VIP name {:?}", vip.name),
            )));
        }
        if (o.address, o.port, o.proto) == (vip.address, vip.port, vip.proto) {
            return Err(Conflict::Taken(FieldError::new(
                "address",
                format!("VIP {:?} has the same address, port and protocol", o.name),
            )));
        }
    }
    if count >= lb_common::MAX_VIPS as usize {
        return Err(Conflict::Full(FieldError::new(
            "name",
            format!("at most {} VIPs", lb_common::MAX_VIPS),
        )));
    }
    Ok(())
}

impl VipConfig {
    /// This VIP as a source would write it (its health as resolved, every key given).
    pub fn to_input(&self) -> VipInput {
        VipInput {
            name: self.name.clone(),
            address: self.address.to_string(),
            port: self.port,
            protocol: Some(super::protocol_name(self.proto).into()),
            algorithm: Some(super::algorithm_name(self.algorithm).into()),
            mode: Some(super::mode_name(self.mode).into()),
            table_size: Some(self.table_size.get()),
            second_chance: match self.second_chance {
                lb_dataplane::SecondChance::Off => None,
                lb_dataplane::SecondChance::On { .. } => Some(true),
            },
            second_chance_window_s: match self.second_chance {
                lb_dataplane::SecondChance::Off => None,
                lb_dataplane::SecondChance::On { window } => {
                    Some(u32::try_from(window.as_secs()).unwrap_or(u32::MAX))
                }
            },
            health: HealthInput::default(),
            backends: self
                .backends
                .iter()
                .map(|b| BackendInput {
                    address: b.address.to_string(),
                    weight: Some(b.weight),
                    mac: b.mac.map(|m| m.to_string()),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(health: &HealthInput) -> VipEnv<'_> {
        VipEnv {
            ipip_source_v4: false,
            ipip_source_v6: true,
            backend_mtu: 0,
            health,
        }
    }

    fn vip(json: &str) -> VipInput {
        serde_json::from_str(json).expect("VIP JSON")
    }

    #[test]
    fn ipip_needs_a_source_of_the_vips_family() {
        let h = HealthInput::default();
        let e = vip(r#"{"name": "t", "address": "10.0.0.1", "mode": "ipip"}"#)
            .check(&env(&h))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "mode: ipip mode needs dataplane.ipip_source_v4 (the outer source address)"
        );
        assert!(
            vip(r#"{"name": "t", "address": "fd00::1", "mode": "ipip"}"#)
                .check(&env(&h))
                .is_ok()
        );
    }

    #[test]
    fn health_comes_from_the_global_defaults_with_the_vips_overrides() {
        let global = HealthInput {
            kind: Some("http".into()),
            fall: Some(5),
            rise: Some(4),
            ..Default::default()
        };
        let v = vip(r#"{"name": "t", "address": "10.0.0.1", "health": {"fall": 2}}"#)
            .check(&env(&global))
            .expect("valid");
        assert_eq!((v.health.rise, v.health.fall), (4, 2));
        assert!(matches!(v.health.kind, CheckKind::Http { .. }));
        let e = vip(r#"{"name": "t", "address": "10.0.0.1", "health": {"rise": 0}}"#)
            .check(&env(&global))
            .unwrap_err();
        assert_eq!(e.to_string(), "health.rise: must be 1-100");
    }

    #[test]
    fn backend_errors_name_their_index() {
        let h = HealthInput::default();
        let e = vip(r#"{"name": "t", "address": "10.0.0.1",
                       "backends": [{"address": "10.0.0.2"}, {"address": "fd00::2"}]}"#)
        .check(&env(&h))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "backends[1].address: backend and VIP must be the same IP family"
        );
        assert_eq!(
            e.clone().under("vips[3]").field,
            "vips[3].backends[1].address"
        );
    }

    #[test]
    fn the_mtu_error_stays_global() {
        let h = HealthInput::default();
        let mut e = env(&h);
        e.backend_mtu = 1300;
        let err = vip(r#"{"name": "t6", "address": "fd00::1", "mode": "ipip"}"#)
            .check(&e)
            .unwrap_err()
            .under("vips[0]");
        assert_eq!(err.field, "dataplane.backend_mtu");
    }

    #[test]
    fn conflicts() {
        let h = HealthInput::default();
        let a = vip(r#"{"name": "a", "address": "10.0.0.1", "port": 80}"#)
            .check(&env(&h))
            .unwrap();
        let b = vip(r#"{"name": "b", "address": "10.0.0.1", "port": 80}"#)
            .check(&env(&h))
            .unwrap();
        assert!(matches!(check_against(&b, [&a]), Err(Conflict::Taken(_))));
        assert!(check_against(&a, []).is_ok());
        let e = check_against(&a, [&a]).unwrap_err();
        assert_eq!(e.to_string(), "name: duplicate VIP name \"a\"");
    }

    #[test]
    fn unknown_weight_is_a_percentage() {
        let h = HealthInput {
            unknown_weight_percent: Some(101),
            ..Default::default()
        };
        assert_eq!(h.check().unwrap_err().field, "unknown_weight_percent");
        assert_eq!(
            HealthInput::default()
                .check()
                .unwrap()
                .unknown_weight_percent,
            0
        );
    }
}
