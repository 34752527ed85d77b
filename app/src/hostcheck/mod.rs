//! The backend's check of its own direct-server-return setup (docs/troubleshooting.md): for a
//! VIP it serves, is the VIP on a local interface, does the host keep quiet about it in ARP
//! (dsr-l2), does reverse-path filtering let decapsulated packets in, does something remove the
//! IPIP header and does the interface's MTU fit it (ipip). `app serve` runs it on start and
//! every `registration.self_check_interval_ms` and sends the report with its registrations;
//! `app check-host` prints it with the fix for each finding.

mod facts;
mod rules;

use std::fmt::Write as _;
use std::net::IpAddr;

pub use lb_api::selfcheck::{Check, Finding, Forwarding, SelfCheck, Status};

/// How the balancer forwards the VIP's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The frame is re-addressed to this host's MAC: the packet arrives for the VIP.
    DsrL2,
    /// The packet arrives inside an outer IPv4 / IPv6 header addressed to this host.
    Ipip,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "dsr-l2" => Ok(Mode::DsrL2),
            "ipip" => Ok(Mode::Ipip),
            other => Err(format!(
                "{other:?} is not a forwarding mode (dsr-l2 or ipip)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::DsrL2 => "dsr-l2",
            Mode::Ipip => "ipip",
        }
    }
}

/// What is checked: a VIP as the balancer forwards it, to this host's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub vip: IpAddr,
    pub port: u16,
    pub mode: Mode,
    /// The balancer's `backend_mtu` (`None`: it sends whatever clients send).
    pub backend_mtu: Option<u32>,
    /// This host's address as the balancer sees it (registration.address).
    pub address: IpAddr,
}

impl Target {
    /// The target lbd describes in its answer to a registration.
    pub fn from_forwarding(f: &Forwarding, address: IpAddr) -> Result<Self, String> {
        Ok(Self {
            vip: f.vip,
            port: f.port,
            mode: Mode::parse(&f.mode)?,
            backend_mtu: f.backend_mtu,
            address,
        })
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Checks this host (its network namespace) for `t`. A host that cannot be read at all is a
/// warning, not a failure: the check must never take a working backend out.
pub async fn check(t: &Target) -> SelfCheck {
    let findings = match facts::gather().await {
        Ok(f) => rules::evaluate(t, &f),
        Err(e) => vec![Finding {
            check: Check::Address,
            status: Status::Warn,
            detail: format!("cannot read the host's interfaces: {e}"),
            fix: None,
        }],
    };
    SelfCheck {
        vip: t.vip,
        mode: t.mode.name().into(),
        checked_at_unix_ms: unix_ms(),
        findings,
    }
}

/// Whether two reports say the same (their times aside).
pub fn same_findings(a: &SelfCheck, b: &SelfCheck) -> bool {
    a.vip == b.vip && a.mode == b.mode && a.findings == b.findings
}

/// The report as a table with the fix under each finding that is not ok.
pub fn render(r: &SelfCheck, address: IpAddr) -> String {
    let mut out = format!(
        "DSR setup of this host ({address}) for VIP {} ({}): {}\n",
        r.vip,
        r.mode,
        r.summary()
    );
    let width = r
        .findings
        .iter()
        .map(|f| f.check.name().len())
        .max()
        .unwrap_or(5)
        .max(5);
    let _ = writeln!(out, "{:<width$}  {:<6} DETAIL", "CHECK", "STATUS");
    for f in &r.findings {
        let _ = writeln!(
            out,
            "{:<width$}  {:<6} {}",
            f.check.name(),
            f.status.to_string(),
            f.detail
        );
        if f.status != Status::Ok
            && let Some(fix) = &f.fix
        {
            let _ = writeln!(out, "{:<width$}  {:<6} fix: {fix}", "", "");
        }
    }
    if r.failing().next().is_some() {
        out.push_str(
            "\nA failing check would black-hole traffic: lbd gives this backend no new flows \
             until it passes.\n",
        );
    }
    out
}
