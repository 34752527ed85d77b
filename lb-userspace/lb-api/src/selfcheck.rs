//! A backend's check of its own direct-server-return setup (docs/troubleshooting.md): the app
//! runs it on start and every minute for the VIP it registers for, and sends the report with
//! each registration. lbd shows it (`lbctl backend`, `lbctl health`, the API, metrics) and
//! gives no new flows to a backend with a failing finding: its setup would black-hole them.
//!
//! lbd tells the backend, in its answer to a registration, how packets will reach it
//! ([`Forwarding`]): that is what the backend checks itself against.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::IpAddress;

/// Findings one report may carry, at most.
pub const MAX_FINDINGS: usize = 32;
/// Longest text of a finding (detail or fix), in bytes.
pub const MAX_TEXT: usize = 1024;

/// What was checked.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// The VIP is an address of a local interface (else the kernel drops its packets).
    VipLocal,
    /// The backend's own address is on the interface packets arrive on.
    Address,
    /// `arp_ignore` (dsr-l2): the backend must not answer ARP for the VIP.
    ArpIgnore,
    /// `arp_announce` (dsr-l2): the backend must not announce the VIP in its ARP requests.
    ArpAnnounce,
    /// Reverse-path filtering on the interface decapsulated packets arrive on.
    RpFilter,
    /// Something removes the IPIP header (ipip): `xdp_decap` or a tunnel device.
    Decap,
    /// The interface's MTU fits the encapsulated packets (ipip).
    Mtu,
    /// A check a newer backend made that this lbd does not know.
    #[serde(other)]
    Other,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::VipLocal => "vip_local",
            Check::Address => "address",
            Check::ArpIgnore => "arp_ignore",
            Check::ArpAnnounce => "arp_announce",
            Check::RpFilter => "rp_filter",
            Check::Decap => "decap",
            Check::Mtu => "mtu",
            Check::Other => "other",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = CheckStatus)]
pub enum Status {
    Ok,
    /// Works here, but fragile or not verifiable (e.g. unreadable without privileges).
    Warn,
    /// This setup would black-hole traffic: lbd gives the backend no new flows.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Finding {
    /// What was checked: `vip_local`, `address`, `arp_ignore`, `arp_announce`, `rp_filter`,
    /// `decap`, `mtu`, or a name a newer backend knows (kept as `other`).
    #[schema(value_type = String, example = "arp_ignore")]
    pub check: Check,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to fix it (a command where there is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// A backend's report on its setup for one VIP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SelfCheck {
    /// The VIP address and forwarding mode checked against.
    #[schema(value_type = IpAddress)]
    pub vip: IpAddr,
    #[schema(max_length = 32)]
    pub mode: String,
    /// Whole milliseconds (`1.0e3` is `1000`); at most 2^53 - 1, as JSON numbers are exact.
    #[serde(deserialize_with = "crate::whole::number")]
    #[schema(maximum = 9_007_199_254_740_991_u64)]
    pub checked_at_unix_ms: u64,
    #[schema(max_items = 32)]
    pub findings: Vec<Finding>,
}

/// The largest `checked_at_unix_ms`: JSON numbers are exact up to 2^53 - 1.
pub const MAX_UNIX_MS: u64 = (1 << 53) - 1;

impl SelfCheck {
    /// The findings that would black-hole traffic.
    pub fn failing(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.status == Status::Fail)
    }

    pub fn worst(&self) -> Status {
        self.findings
            .iter()
            .map(|f| f.status)
            .max()
            .unwrap_or(Status::Ok)
    }

    /// Why the backend gets no new flows, if any finding fails.
    pub fn blocking_reason(&self) -> Option<String> {
        let failing: Vec<String> = self
            .failing()
            .map(|f| format!("{}: {}", f.check, f.detail))
            .collect();
        (!failing.is_empty()).then(|| format!("self-check failed: {}", failing.join("; ")))
    }

    /// The report's limits, as lbd enforces them on every registration.
    pub fn validate(&self) -> Result<(), String> {
        if self.findings.len() > MAX_FINDINGS {
            return Err(format!(
                "self_check.findings: {} findings, at most {MAX_FINDINGS}",
                self.findings.len()
            ));
        }
        if self.checked_at_unix_ms > MAX_UNIX_MS {
            return Err(format!(
                "self_check.checked_at_unix_ms: at most {MAX_UNIX_MS}"
            ));
        }
        if self.mode.len() > 32 {
            return Err("self_check.mode: at most 32 characters".into());
        }
        for (i, f) in self.findings.iter().enumerate() {
            if f.detail.len() > MAX_TEXT || f.fix.as_ref().is_some_and(|x| x.len() > MAX_TEXT) {
                return Err(format!(
                    "self_check.findings[{i}]: detail and fix are at most {MAX_TEXT} bytes"
                ));
            }
        }
        Ok(())
    }

    /// One line: `ok`, `2 warnings`, or the failing checks.
    pub fn summary(&self) -> String {
        let fails: Vec<&str> = self.failing().map(|f| f.check.name()).collect();
        if !fails.is_empty() {
            return format!("FAIL {}", fails.join(","));
        }
        match self
            .findings
            .iter()
            .filter(|f| f.status == Status::Warn)
            .count()
        {
            0 => "ok".into(),
            1 => "1 warning".into(),
            n => format!("{n} warnings"),
        }
    }
}

/// How the balancer will send a VIP's packets to a backend (in lbd's answer to a
/// registration): what the backend checks its setup against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Forwarding {
    #[schema(value_type = IpAddress)]
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: String,
    /// `dsr-l2` or `ipip`.
    pub mode: String,
    /// The largest packet the balancer sends towards backends (`[dataplane] backend_mtu`;
    /// larger ones are answered with ICMP "too big"); `None`: unchecked.
    #[serde(default)]
    pub backend_mtu: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(check: Check, status: Status) -> Finding {
        Finding {
            check,
            status,
            detail: format!("{check} is {status}"),
            fix: None,
        }
    }

    #[test]
    fn reports_summarise_and_block_on_failures_only() {
        let mut r = SelfCheck {
            vip: "10.77.0.100".parse().unwrap(),
            mode: "dsr-l2".into(),
            checked_at_unix_ms: 1,
            findings: vec![
                finding(Check::VipLocal, Status::Ok),
                finding(Check::ArpAnnounce, Status::Warn),
            ],
        };
        assert_eq!(r.summary(), "1 warning");
        assert_eq!(r.blocking_reason(), None);
        r.findings.push(finding(Check::ArpIgnore, Status::Fail));
        assert_eq!(r.summary(), "FAIL arp_ignore");
        assert_eq!(r.worst(), Status::Fail);
        assert!(
            r.blocking_reason()
                .unwrap()
                .contains("arp_ignore: arp_ignore is FAIL")
        );
        assert!(r.validate().is_ok());
        r.findings = vec![finding(Check::Mtu, Status::Ok); MAX_FINDINGS + 1];
        assert!(r.validate().is_err());
    }

    #[test]
    fn unknown_checks_are_read_as_other() {
        let f: Finding =
            serde_json::from_str(r#"{"check":"ecmp_weight","status":"warn","detail":"x"}"#)
                .unwrap();
        assert_eq!(f.check, Check::Other);
    }
}
