//! Unicast peers instead of multicast: two `lbd` nodes (both families) elect, fail over and
//! hand over, and a capture on lb2 shows unicast adverts only; keepalived over unicast too.

use std::net::IpAddr;

use lb_vrrp::{machine::master_down, packet::GROUP_V4, packet::GROUP_V6};

use super::{
    LB1, LB2, assert_nothing_rejected, capture, holds, interval,
    keepalived_takes_over_from_killed_lbd, lab::*, lbd_master_then_keepalived_backup,
    lbd_takes_over_from_stopped_keepalived,
};

/// Adverts in `frames` by (source, destination, priority); `lbd_sources` must send with TTL /
/// hop limit 255 (keepalived sends IPv6 unicast adverts with the default hop limit).
fn adverts(frames: &[Vec<u8>], lbd_sources: &[IpAddr]) -> Vec<(IpAddr, IpAddr, u8)> {
    frames
        .iter()
        .filter_map(|f| capture::vrrp(f))
        .filter(|s| s.msg.len() >= 8)
        .inspect(|s| {
            if lbd_sources.contains(&s.src) {
                assert_eq!(s.hops, 255, "lbd sends with TTL / hop limit 255: {s:?}");
            }
        })
        .map(|s| (s.src, s.dst, s.msg[2]))
        .collect()
}

#[test]
fn unicast_peers_elect_fail_over_and_hand_over_without_multicast() {
    let mut l = VrrpLab::with([LB1, LB2], UNICAST);
    let host = |n: &str| l.lab.host(n).expect("host").clone();
    let (lb1, lb2) = (host("lb1"), host("lb2"));
    // lb2 sees every advert: its own (outgoing) and lb1's (incoming, or flooded if multicast).
    let cap = capture::Capture::start(&lb2, |f| capture::vrrp(f).is_some());
    l.start(0);
    l.start(1);
    l.wait_master(0, 1, BOUND);
    l.wait_master6(0, 1, BOUND);
    assert_eq!(
        l.vrrp6(1)["master"],
        lb1.ipv6().to_string(),
        "global peer, global source"
    );

    l.stop(0, libc::SIGKILL);
    let t = l.wait("lb2 master of both families", BOUND, |l| {
        l.state(1) == "master" && l.has_vip(1) && l.state6(1) == "master" && l.has_vip6(1)
    });
    println!(
        "unicast, SIGKILL of the master: lb2 took over after {t:?} (3 x interval + skew = {:?})",
        master_down(90, interval())
    );
    l.start(0);
    let t = l.wait_master(0, 1, BOUND);
    l.wait_master6(0, 1, BOUND);
    println!("unicast, lb1 back: preempted after {t:?}");

    l.stop(0, libc::SIGTERM);
    let t = l.wait("lb2 master of both after lb1's SIGTERM", BOUND, |l| {
        l.state(1) == "master" && l.has_vip(1) && l.state6(1) == "master" && l.has_vip6(1)
    });
    println!("unicast, SIGTERM of the master: lb2 took over after {t:?} (priority 0 advert)");
    assert!(!l.has_vip(0) && l.lacks_vip6(0), "lb1 removed its VIPs");
    let frames = cap.finish();
    let (a1, a2) = (IpAddr::V4(lb1.ipv4()), IpAddr::V4(lb2.ipv4()));
    let (b1, b2) = (IpAddr::V6(lb1.ipv6()), IpAddr::V6(lb2.ipv6()));
    let seen = adverts(&frames, &[a1, a2, b1, b2]);
    let multicast: Vec<_> = seen.iter().filter(|(_, d, _)| d.is_multicast()).collect();
    assert!(
        multicast.is_empty(),
        "no multicast advert may be sent with unicast peers: {multicast:?}"
    );
    for (src, dst) in [(a1, a2), (a2, a1), (b1, b2), (b2, b1)] {
        let n = seen
            .iter()
            .filter(|(s, d, _)| (*s, *d) == (src, dst))
            .count();
        assert!(
            n > 0,
            "adverts {src} -> {dst} seen on lb2 ({} in all)",
            seen.len()
        );
    }
    for (src, dst) in [(a1, a2), (b1, b2)] {
        assert!(
            seen.contains(&(src, dst, 0)),
            "lb1's priority-0 goodbye {src} -> {dst} was unicast"
        );
    }
    println!(
        "capture on lb2: {} adverts, all unicast (none to {GROUP_V4} or {GROUP_V6})",
        seen.len()
    );
    let s = l.vrrp6(1);
    assert_eq!(s["counters"]["not_a_peer"], 0, "{s}");
    assert_eq!(s["counters"]["rejects"]["checksum"], 0, "{s}");
}

#[test]
fn keepalived_unicast_master_lbd_unicast_backup() {
    let mut l = VrrpLab::with([LB1, LB2], UNICAST);
    let lb2 = l.lab.host("lb2").expect("lb2").clone();
    let cap = capture::Capture::start(&lb2, |f| capture::vrrp(f).is_some());
    l.start_keepalived(0);
    l.wait("keepalived (lb1, 100) holds both VIPs", BOUND, |l| {
        l.has_vip(0) && l.has_vip6(0)
    });
    l.start(1);
    let lb1 = l.lab.host("lb1").expect("lb1").clone();
    l.wait(
        "lbd (lb2) backup of both, following keepalived",
        BOUND,
        |l| {
            l.state(1) == "backup"
                && l.vrrp(1)["master"] == lb1.ipv4().to_string()
                && l.state6(1) == "backup"
                && l.vrrp6(1)["master"] == lb1.ipv6().to_string()
        },
    );
    holds(
        &l,
        master_down(90, interval()) * 4,
        "lbd never claims the VIPs of a healthy higher unicast master",
        |l| l.state(1) == "backup" && l.state6(1) == "backup" && !l.has_vip(1) && l.lacks_vip6(1),
    );
    assert_nothing_rejected(&l, 1, "keepalived's unicast adverts all pass");
    let t = lbd_takes_over_from_stopped_keepalived(&mut l);
    println!("unicast: keepalived SIGTERM -> lbd master of both after {t:?}");
    let lbd = [IpAddr::V4(lb2.ipv4()), IpAddr::V6(lb2.ipv6())];
    let seen = adverts(&cap.finish(), &lbd);
    let multicast: Vec<_> = seen.iter().filter(|(_, d, _)| d.is_multicast()).collect();
    assert!(multicast.is_empty(), "unicast only: {multicast:?}");
    assert!(
        seen.iter().any(|(s, _, _)| *s == IpAddr::V6(lb1.ipv6())),
        "keepalived's IPv6 unicast adverts seen: {seen:?}"
    );
}

#[test]
fn lbd_unicast_master_keepalived_unicast_backup() {
    let mut l = lbd_master_then_keepalived_backup(UNICAST);
    let log = l.log(1);
    assert!(
        !log.contains("nvalid") && !log.contains("not a unicast peer"),
        "keepalived accepted every unicast lbd advert:\n{log}"
    );
    keepalived_takes_over_from_killed_lbd(&mut l);
}
