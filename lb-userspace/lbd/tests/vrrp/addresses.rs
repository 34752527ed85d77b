//! The primary address follows the interface's addresses (rtnetlink, as keepalived): the
//! master re-addressed while running keeps its mastership and advertises from its new address
//! (IPv4 and the IPv6 link-local one), without split brain; with no address left it goes to
//! fault, sends nothing, and comes back when an address returns.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_vrrp::machine::master_down;
use tests::Host;

use super::{LB1, LB2, capture, holds, interval, lab::*};

fn host(l: &VrrpLab, name: &str) -> Host {
    l.lab.host(name).expect("host").clone()
}

fn mac_of(h: &Host) -> [u8; 6] {
    capture::parse_mac(&h.mac().expect("MAC").to_string())
}

fn ip(h: &Host, args: &[&str]) {
    h.exec(std::iter::once("ip").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("ip {args:?} on {}: {e}", h.name()));
}

/// The sources of the VRRP adverts of `family` that `mac` sent, in capture order.
fn sources(frames: &[Vec<u8>], mac: [u8; 6], v6: bool) -> Vec<IpAddr> {
    frames
        .iter()
        .filter(|f| f.get(6..12) == Some(&mac[..]))
        .filter_map(|f| capture::vrrp(f))
        .filter(|s| s.src.is_ipv6() == v6)
        .map(|s| s.src)
        .collect()
}

/// `seen` goes from `old` to `new` once and for all, with at least 3 adverts from `new`.
fn assert_switched(seen: &[IpAddr], old: IpAddr, new: IpAddr) {
    let stray: Vec<_> = seen.iter().filter(|s| **s != old && **s != new).collect();
    assert!(
        stray.is_empty(),
        "adverts from neither {old} nor {new}: {stray:?}"
    );
    let first_new = seen
        .iter()
        .position(|s| *s == new)
        .unwrap_or_else(|| panic!("no advert from {new}: {seen:?}"));
    assert!(first_new > 0, "adverts from {old} first: {seen:?}");
    assert!(
        seen[first_new..].iter().all(|s| *s == new),
        "an advert from {old} after the switch to {new}: {seen:?}"
    );
    assert!(
        seen.len() - first_new >= 3,
        "at least 3 adverts from {new}: {seen:?}"
    );
}

/// lb1 master with its VIPs, lb2 backup without, for `family`.
fn lb1_alone_holds(l: &VrrpLab, f: &Family) -> bool {
    (f.holds)(l, 0) && (f.lacks)(l, 1)
}

#[test]
fn ipv4_master_follows_re_addressing_without_split_brain() {
    let mut l = VrrpLab::new([LB1, LB2]);
    let (lb1, lb2) = (host(&l, "lb1"), host(&l, "lb2"));
    // Without it, deleting the primary address of a subnet deletes its secondaries too.
    lb1.sysctl("net.ipv4.conf.eth0.promote_secondaries", "1")
        .expect("promote_secondaries");
    l.start(0);
    l.start(1);
    l.wait_master(0, 1, BOUND);
    let old = IpAddr::V4(lb1.ipv4());
    let new = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 12));
    assert_eq!(l.vrrp(0)["primary"], old.to_string());
    let cap = capture::Capture::start(&lb2, |f| capture::vrrp(f).is_some());
    let span = master_down(LB2.priority, interval()) * 2;
    holds(&l, span, "lb1 master before", |l| lb1_alone_holds(l, &IPV4));

    // A new address, listed after the old one: the primary stays (adding never moves it).
    ip(&lb1, &["addr", "add", "10.77.0.12/24", "dev", "eth0"]);
    holds(&l, span, "primary kept while present", |l| {
        lb1_alone_holds(l, &IPV4) && l.vrrp(0)["primary"] == old.to_string()
    });

    // The old address goes: the new one (promoted) is the primary from now on.
    ip(&lb1, &["addr", "del", "10.77.0.2/24", "dev", "eth0"]);
    let t = l.wait("lb1 advertises from 10.77.0.12", BOUND, |l| {
        assert!(
            lb1_alone_holds(l, &IPV4),
            "split brain or lost VIP during the switch"
        );
        l.vrrp(0)["primary"] == new.to_string() && l.vrrp(1)["master"] == new.to_string()
    });
    println!("IPv4 re-addressing: lb2 heard lb1 from its new address after {t:?}");
    // Several master-down intervals more: lb2 keeps accepting the adverts from the new address.
    holds(&l, span * 2, "lb1 master after", |l| {
        lb1_alone_holds(l, &IPV4) && l.state(0) == "master" && l.state(1) == "backup"
    });
    let frames = cap.finish();
    let seen = sources(&frames, mac_of(&lb1), false);
    assert_switched(&seen, old, new);

    let s = l.vrrp(0);
    assert_eq!(s["state"], "master", "{s}");
    assert_eq!(s["master"], new.to_string(), "{s}");
    assert_eq!(s["counters"]["primary_changes"], 1, "{s}");
    assert!(s["address_fault"].is_null(), "{s}");
    assert_eq!(s["primary_configured"], false, "{s}");
    let b = l.vrrp(1);
    assert_eq!(
        b["counters"]["became_master"], 0,
        "lb2 never took over: {b}"
    );
    let text = l.lbctl_vrrp(0);
    assert!(text.contains("primary 10.77.0.12 (1 change)"), "{text}");
    let log = l.log(0);
    assert!(
        log.contains("primary address changed") && log.contains("10.77.0.12"),
        "lb1 logs the change:\n{log}"
    );
}

fn link_local_of(h: &Host) -> Ipv6Addr {
    let out = h
        .exec([
            "ip", "-o", "-6", "addr", "show", "dev", "eth0", "scope", "link",
        ])
        .expect("ip addr");
    out.split_whitespace()
        .filter_map(|w| w.split_once('/').and_then(|(a, _)| a.parse().ok()))
        .find(|a: &Ipv6Addr| *a != VIP6_LL)
        .unwrap_or_else(|| panic!("no link-local address on {}: {out}", h.name()))
}

#[test]
fn ipv6_master_follows_a_new_link_local_address() {
    let mut l = VrrpLab::with([LB1, LB2], DUAL);
    let (lb1, lb2) = (host(&l, "lb1"), host(&l, "lb2"));
    l.start(0);
    l.start(1);
    l.wait_master(0, 1, BOUND);
    l.wait_master6(0, 1, BOUND);
    let old = IpAddr::V6(link_local_of(&lb1));
    assert_eq!(l.vrrp6(0)["primary"], old.to_string());
    let new_ll: Ipv6Addr = "fe80::1:2".parse().expect("address");
    let new = IpAddr::V6(new_ll);
    let cap = capture::Capture::start(&lb2, |f| capture::vrrp(f).is_some());
    let span = master_down(LB2.priority, interval()) * 2;
    let both = |l: &VrrpLab| lb1_alone_holds(l, &IPV4) && lb1_alone_holds(l, &IPV6);
    holds(&l, span, "lb1 master of both before", both);

    // As after the link is re-created: another link-local address; it is usable once
    // duplicate address detection is done, then the old one goes.
    ip(&lb1, &["-6", "addr", "add", "fe80::1:2/64", "dev", "eth0"]);
    l.wait(
        "fe80::1:2 done with duplicate address detection",
        BOUND,
        |l| {
            assert!(both(l), "split brain or lost VIP while adding");
            let out = lb1
                .exec(["ip", "-o", "-6", "addr", "show", "dev", "eth0"])
                .unwrap_or_default();
            out.lines()
                .any(|x| x.contains("fe80::1:2/64") && !x.contains("tentative"))
        },
    );
    assert_eq!(l.vrrp6(0)["primary"], old.to_string(), "kept while present");
    ip(
        &lb1,
        &["-6", "addr", "del", &format!("{old}/64"), "dev", "eth0"],
    );
    let t = l.wait("lb1 advertises from fe80::1:2", BOUND, |l| {
        assert!(both(l), "split brain or lost VIP during the switch");
        l.vrrp6(0)["primary"] == new.to_string() && l.vrrp6(1)["master"] == new.to_string()
    });
    println!("IPv6 link-local re-addressing: lb2 heard lb1 from {new} after {t:?}");
    holds(&l, span * 2, "lb1 master of both after", |l| {
        both(l) && l.state6(0) == "master" && l.state6(1) == "backup"
    });
    let frames = cap.finish();
    assert_switched(&sources(&frames, mac_of(&lb1), true), old, new);
    let s = l.vrrp6(0);
    assert_eq!(s["counters"]["primary_changes"], 1, "{s}");
    assert_eq!(l.vrrp6(1)["counters"]["became_master"], 0);
    // The IPv4 router never moved.
    assert_eq!(l.vrrp(0)["counters"]["primary_changes"], 0);
}

#[test]
fn no_address_left_means_fault_and_silence_until_one_returns() {
    let mut l = VrrpLab::new([LB1, LB2]);
    let (lb1, lb2) = (host(&l, "lb1"), host(&l, "lb2"));
    l.start(0);
    l.start(1);
    l.wait_master(0, 1, BOUND);
    let addr = IpAddr::V4(lb1.ipv4());

    // lb1's only address (besides the VIP it holds) goes.
    ip(&lb1, &["addr", "del", "10.77.0.2/24", "dev", "eth0"]);
    let t = l.wait("lb1 in fault, lb2 master with the VIP", BOUND, |l| {
        l.state(0) == "fault" && !l.has_vip(0) && l.state(1) == "master" && l.has_vip(1)
    });
    println!("no IPv4 address left on the master: lb2 held the VIP after {t:?}");
    let s = l.vrrp(0);
    let why = s["address_fault"].as_str().unwrap_or_default().to_string();
    assert!(
        why.contains("no IPv4 address on eth0"),
        "the reason is in the status: {s}"
    );
    assert!(
        l.log(0).contains("no usable primary address"),
        "and in the log:\n{}",
        l.log(0)
    );
    assert!(l.lbctl_vrrp(0).contains(&format!("yes: {why}")));

    // In fault lb1 sends nothing at all: not from the gone address, not from the VIP.
    let sent = |l: &VrrpLab| l.vrrp(0)["counters"]["adverts_sent"].as_u64();
    let before = sent(&l);
    let cap = capture::Capture::start(&lb2, |f| capture::vrrp(f).is_some());
    holds(
        &l,
        master_down(LB2.priority, interval()) * 2,
        "lb1 silent in fault",
        |l| l.state(0) == "fault" && !l.has_vip(0) && l.has_vip(1),
    );
    let quiet = sources(&cap.finish(), mac_of(&lb1), false);
    assert!(quiet.is_empty(), "lb1 sent adverts in fault: {quiet:?}");
    assert_eq!(sent(&l), before, "no advert counted in fault");

    // The address returns: lb1 leaves the fault, starts as backup and preempts.
    let cap = capture::Capture::start(&lb2, |f| capture::vrrp(f).is_some());
    ip(&lb1, &["addr", "add", "10.77.0.2/24", "dev", "eth0"]);
    let t = l.wait_master(0, 1, BOUND);
    println!("address back: lb1 master again after {t:?}");
    let s = l.vrrp(0);
    assert!(s["address_fault"].is_null(), "{s}");
    assert_eq!(s["primary"], addr.to_string(), "{s}");
    assert!(s["counters"]["became_fault"].as_u64() >= Some(1), "{s}");
    holds(&l, interval().duration() * 4, "lb1 master", |l| {
        lb1_alone_holds(l, &IPV4)
    });
    let back = sources(&cap.finish(), mac_of(&lb1), false);
    assert!(
        !back.is_empty() && back.iter().all(|s| *s == addr),
        "lb1's adverts come from {addr} again: {back:?}"
    );
}

#[test]
fn a_configured_source_that_disappears_is_reported_not_replaced() {
    let opts = Options {
        source: true,
        ..Options::default()
    };
    let mut l = VrrpLab::with([LB1, LB2], opts);
    let lb1 = host(&l, "lb1");
    lb1.sysctl("net.ipv4.conf.eth0.promote_secondaries", "1")
        .expect("promote_secondaries");
    l.start(0);
    l.start(1);
    l.wait_master(0, 1, BOUND);
    let addr = lb1.ipv4().to_string();
    assert_eq!(l.vrrp(0)["primary_configured"], true);
    assert!(
        l.lbctl_vrrp(0)
            .contains(&format!("primary {addr} (configured)"))
    );

    // Another address is there, but the configured one goes: lb1 does not switch to it; it
    // reports the missing source and leaves mastership (see docs/vrrp.md for why).
    ip(&lb1, &["addr", "add", "10.77.0.12/24", "dev", "eth0"]);
    ip(&lb1, &["addr", "del", "10.77.0.2/24", "dev", "eth0"]);
    l.wait("lb1 in fault, lb2 master with the VIP", BOUND, |l| {
        l.state(0) == "fault" && !l.has_vip(0) && l.state(1) == "master" && l.has_vip(1)
    });
    let s = l.vrrp(0);
    assert_eq!(s["primary"], addr, "never replaced: {s}");
    let why = s["address_fault"].as_str().unwrap_or_default();
    assert!(
        why.contains("configured source 10.77.0.2"),
        "the reason names the address: {s}"
    );
    assert_eq!(s["counters"]["primary_changes"], 0, "{s}");
    let log = l.log(0);
    assert!(
        log.lines()
            .any(|x| x.contains("WARN") && x.contains("configured source 10.77.0.2")),
        "a warning is logged:\n{log}"
    );

    ip(&lb1, &["addr", "add", "10.77.0.2/24", "dev", "eth0"]);
    l.wait_master(0, 1, BOUND);
    assert!(l.vrrp(0)["address_fault"].is_null());
}
