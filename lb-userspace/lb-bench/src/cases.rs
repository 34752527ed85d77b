//! The packets and VIPs every round measures.

use std::net::IpAddr;

use lb_common::names;
use lb_common::{Algorithm, ForwardMode, IPPROTO_TCP};
use lb_dataplane::maglev::TableSize;
use lb_dataplane::packet::{Frame, TCP_ACK, TCP_SYN};
use lb_dataplane::{BackendSpec, BackendState, VipSpec, XdpAction};

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn backends(prefix: &str) -> Vec<BackendSpec> {
    (11..14)
        .map(|i| {
            let addr = ip(&format!("{prefix}{i}"));
            BackendSpec {
                addr,
                mac: [2, 0xbe, 0, 0, 0, i as u8],
                weight: 1,
                state: BackendState::Active,
            }
        })
        .collect()
}

pub fn vip(name: &str, addr: &str, algorithm: Algorithm, mode: ForwardMode) -> VipSpec {
    let prefix = if addr.contains(':') {
        "fd77::"
    } else {
        "10.77.0."
    };
    VipSpec {
        name: name.into(),
        addr: ip(addr),
        port: 80,
        proto: IPPROTO_TCP,
        algorithm,
        mode,
        table_size: TableSize::DEFAULT,
        backends: backends(prefix),
        second_chance: Default::default(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The floor program, run directly.
    Floor,
    /// The balancer, run directly (the path does not modify the packet).
    Direct,
    /// The balancer through the restore harness, same flow every run.
    Hit,
    /// The balancer through the harness, a new source address every run.
    NewFlow,
    /// The backend's decap program through the harness (it strips the outer headers).
    Decap,
}

/// The capture inside the data plane while a case runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Capture {
    /// No capture (the flag every packet reads is 0).
    Off,
    /// A capture runs whose filter this packet does not pass (another VIP).
    FilteredOut,
    /// A capture runs that keeps one matching packet in 100.
    Sampled,
}

#[derive(Clone)]
pub struct Case {
    pub name: String,
    pub kind: Kind,
    /// The program measured: the balancer, or the balancer without the capture hook (the
    /// baseline of what the hook costs while off).
    pub program: &'static str,
    pub capture: Capture,
    pub vip: Option<&'static str>,
    pub packet: Vec<u8>,
    pub vary_offset: u32,
    pub expect: XdpAction,
    /// Whether `--katran` runs this case too (its VIP is the `ipip` one).
    pub katran: bool,
    /// Our flood guard at its default limit (else off: every new flow is inserted); the other
    /// balancer compared is `--katran-default` (Katran's default build, its guard on).
    pub guard: bool,
}

fn syn(dst: &str) -> Frame {
    let src = if dst.contains(':') {
        "fd00::9"
    } else {
        "10.9.0.1"
    };
    Frame::tcp(ip(src), 40000, ip(dst), 80, TCP_SYN)
}

pub fn cases() -> Vec<Case> {
    let mut out = vec![
        Case {
            name: "floor: swap MACs, XDP_TX".into(),
            kind: Kind::Floor,
            program: names::PROG_FLOOR,
            capture: Capture::Off,
            vip: None,
            packet: syn("10.77.0.100").build(),
            vary_offset: 0,
            expect: XdpAction::Tx,
            katran: false,
            guard: false,
        },
        Case {
            name: "non-VIP pass".into(),
            kind: Kind::Direct,
            program: names::PROG_BALANCER,
            capture: Capture::Off,
            vip: None,
            packet: Frame::tcp(ip("10.9.0.1"), 40000, ip("10.77.0.50"), 80, TCP_ACK).build(),
            vary_offset: 0,
            expect: XdpAction::Pass,
            katran: true,
            guard: false,
        },
    ];
    let non_vip = Case {
        name: "non-VIP pass, no capture hook".into(),
        program: names::PROG_BALANCER_UNHOOKED,
        katran: false,
        ..out[1].clone()
    };
    out.push(non_vip);
    for (name, vip_name, addr, katran) in [
        ("conn-table hit, dsr-l2", "maglev", "10.77.0.100", false),
        ("conn-table hit, ipip", "ipip", "10.77.0.104", true),
        ("conn-table hit, ipip6", "ipip6", "fd77::100", false),
    ] {
        out.push(Case {
            name: name.into(),
            kind: Kind::Hit,
            program: names::PROG_BALANCER,
            capture: Capture::Off,
            vip: Some(vip_name),
            packet: Frame::tcp(
                ip(if addr.contains(':') {
                    "fd00::9"
                } else {
                    "10.9.0.1"
                }),
                40000,
                ip(addr),
                80,
                TCP_ACK,
            )
            .build(),
            vary_offset: 0,
            expect: XdpAction::Tx,
            katran,
            guard: false,
        });
    }
    // The capture hook: the same hits without it (its cost while off, in the same rounds),
    // and with a capture running.
    for (i, name, program, capture) in [
        (
            2,
            "conn-table hit, dsr-l2, no capture hook",
            names::PROG_BALANCER_UNHOOKED,
            Capture::Off,
        ),
        (
            3,
            "conn-table hit, ipip, no capture hook",
            names::PROG_BALANCER_UNHOOKED,
            Capture::Off,
        ),
        (
            3,
            "conn-table hit, ipip, capture on, not kept",
            names::PROG_BALANCER,
            Capture::FilteredOut,
        ),
        (
            3,
            "conn-table hit, ipip, capture on, 1 in 100",
            names::PROG_BALANCER,
            Capture::Sampled,
        ),
    ] {
        let base = out
            .iter()
            .filter(|c| c.kind == Kind::Hit)
            .nth(i - 2)
            .expect("the hit cases come first")
            .clone();
        out.push(Case {
            name: name.into(),
            program,
            capture,
            katran: false,
            ..base
        });
    }
    for (name, vip_name, addr, katran) in [
        ("new flow, maglev, dsr-l2", "maglev", "10.77.0.100", false),
        ("new flow, ip-hash, dsr-l2", "iphash", "10.77.0.101", false),
        (
            "new flow, weighted-round-robin",
            "wrr",
            "10.77.0.102",
            false,
        ),
        ("new flow, least-connections", "lc", "10.77.0.103", false),
        ("new flow, maglev, ipip", "ipip", "10.77.0.104", true),
        ("new flow, maglev, ipip6", "ipip6", "fd77::100", false),
    ] {
        out.push(new_flow(name, vip_name, addr, katran, false));
    }
    out.push(new_flow(
        "new flow, ipip, flood guard on",
        "ipip",
        "10.77.0.104",
        false,
        true,
    ));
    out
}

fn new_flow(name: &str, vip_name: &'static str, addr: &str, katran: bool, guard: bool) -> Case {
    let v4_src_word = 14 + 12;
    let v6_src_word = 14 + 8 + 12;
    Case {
        name: name.into(),
        kind: Kind::NewFlow,
        program: names::PROG_BALANCER,
        capture: Capture::Off,
        vip: Some(vip_name),
        packet: syn(addr).build(),
        vary_offset: if addr.contains(':') {
            v6_src_word
        } else {
            v4_src_word
        },
        expect: XdpAction::Tx,
        katran,
        guard,
    }
}
