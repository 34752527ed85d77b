//! The VRRP interface deleted and re-created while `lbd` runs (as an operator or networkd
//! re-making a veth): the master goes to fault while it is missing (the backup takes over),
//! reopens its sockets on the new interface when it is back (both families: bound to the new
//! device, multicast membership), and preempts again.

use std::net::IpAddr;

use tests::Host;

use lb_vrrp::machine::master_down;

use super::{LB1, LB2, capture, holds, interval, lab::*};

/// No XDP tracking: the data plane's program goes with the deleted interface and is not
/// re-attached (a daemon matter, see docs/vrrp.md); this test is about the router's sockets.
const RELINK: Options = Options {
    extra: "track_dataplane = false\n",
    ..DUAL
};

fn run_ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The host's own addresses on eth0 (`ADDR/PREFIX`), without the VIPs and the link-local one
/// (the kernel makes a new one).
fn own_addresses(h: &Host) -> Vec<String> {
    let out = h
        .exec(["ip", "-o", "addr", "show", "dev", "eth0", "scope", "global"])
        .expect("ip addr");
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|x| *x == "inet" || *x == "inet6")?;
            w.next().map(str::to_string)
        })
        .filter(|a| {
            let ip: IpAddr = a
                .split('/')
                .next()
                .and_then(|x| x.parse().ok())
                .expect("address");
            ip != IpAddr::V4(VIP) && ip != IpAddr::V6(VIP6)
        })
        .collect()
}

fn counter(s: &serde_json::Value, name: &str) -> u64 {
    s["counters"][name].as_u64().unwrap_or_default()
}

#[test]
fn a_re_created_interface_gets_fresh_sockets() {
    let mut l = VrrpLab::with([LB1, LB2], RELINK);
    l.start(0);
    l.start(1);
    l.wait_master(0, 1, BOUND);
    l.wait_master6(0, 1, BOUND);
    let host = |n: &str| l.lab.host(n).expect("host").clone();
    let (lb1, lb2) = (host("lb1"), host("lb2"));
    let addrs = own_addresses(&lb1);
    assert_eq!(addrs.len(), 2, "lb1's IPv4 and IPv6 addresses: {addrs:?}");

    // eth0 goes (with the VIPs on it): lb1 in fault in both families, lb2 takes over.
    run_ip(&["-n", lb1.ns(), "link", "del", "eth0"]);
    let t = l.wait("lb1 in fault, lb2 master of both families", BOUND, |l| {
        l.state(0) == "fault"
            && l.state6(0) == "fault"
            && l.state(1) == "master"
            && l.has_vip(1)
            && l.state6(1) == "master"
            && l.has_vip6(1)
    });
    println!("lb1's eth0 deleted: lb2 master of both after {t:?}");
    for s in [l.vrrp(0), l.vrrp6(0)] {
        let why = s["address_fault"].as_str().unwrap_or_default();
        assert!(
            why.contains("interface eth0 does not exist"),
            "the reason is in the status: {s}"
        );
    }
    let log = l.log(0);
    assert!(
        log.lines()
            .any(|x| x.contains("WARN") && x.contains("the interface went away")),
        "a warning is logged:\n{log}"
    );
    let received = (
        counter(&l.vrrp(0), "adverts_received"),
        counter(&l.vrrp6(0), "adverts_received"),
    );

    // eth0 back, another veth (new index, new MAC): lb1 reopens its sockets, hears lb2, and
    // preempts it in both families.
    let cap = capture::Capture::start(&lb2, |f| capture::vrrp(f).is_some());
    l.lab
        .recreate_iface("lb1")
        .expect("re-create lb1's eth0 as the lab made it");
    assert_eq!(
        own_addresses(&lb1),
        addrs,
        "the same addresses on the new eth0"
    );
    let t = l.wait_master(0, 1, BOUND);
    l.wait_master6(0, 1, BOUND);
    println!("lb1's eth0 re-created: lb1 master again after {t:?}");
    // And stays so: its adverts keep reaching lb2.
    holds(
        &l,
        master_down(LB2.priority, interval()) * 2,
        "lb1 master of both, lb2 backup",
        |l| {
            l.state(0) == "master"
                && l.state6(0) == "master"
                && l.state(1) == "backup"
                && l.state6(1) == "backup"
        },
    );
    let frames = cap.finish();
    let mac = capture::parse_mac(&lb1.mac().expect("MAC").to_string());
    let seen: Vec<_> = frames
        .iter()
        .filter(|f| f.get(6..12) == Some(&mac[..]))
        .filter_map(|f| capture::vrrp(f))
        .collect();
    let v4 = seen
        .iter()
        .filter(|s| s.src == IpAddr::V4(lb1.ipv4()))
        .count();
    let v6 = seen.iter().filter(|s| s.src.is_ipv6()).count();
    println!("lb2 saw {v4} IPv4 and {v6} IPv6 adverts from lb1's new eth0");
    assert!(
        v4 >= 3 && v6 >= 3,
        "adverts from the new eth0 in both families: {seen:?}"
    );

    for (s, before) in [(l.vrrp(0), received.0), (l.vrrp6(0), received.1)] {
        assert_eq!(counter(&s, "socket_reopens"), 1, "{s}");
        assert!(s["address_fault"].is_null(), "{s}");
        assert!(counter(&s, "became_fault") >= 1, "{s}");
        // lb2's adverts (master while lb1 was back as backup) reached the new socket.
        assert!(
            counter(&s, "adverts_received") > before,
            "the reopened socket receives the group's adverts: {s}"
        );
    }
    assert!(
        l.log(0).contains("socket reopened"),
        "the reopening is logged:\n{}",
        l.log(0)
    );
}
