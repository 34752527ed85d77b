//! Periodic announcements while master (keepalived's `garp_master_refresh`): the master keeps
//! sending gratuitous ARPs and unsolicited neighbour advertisements for its VIPs long after
//! the bursts of becoming master; the backup sends none.

use std::net::{Ipv4Addr, Ipv6Addr};

use tests::Host;

use super::{LB1, LB2, capture, lab::*};

/// Refresh every second, one announcement per VIP; no second burst, so that every
/// announcement after the first burst is a refresh.
const REFRESH: Options = Options {
    extra: "garp_master_delay_s = 0\ngarp_master_refresh_s = 1\ngarp_master_refresh_repeat = 1\n",
    ..DUAL
};

/// The IPv4 address a gratuitous ARP (sender = target) announces, and its Ethernet source.
fn gratuitous_arp(frame: &[u8]) -> Option<([u8; 6], Ipv4Addr)> {
    if frame.get(12..14)? != [0x08, 0x06] {
        return None;
    }
    let sender: [u8; 4] = frame.get(28..32)?.try_into().ok()?;
    let target: [u8; 4] = frame.get(38..42)?.try_into().ok()?;
    let mac: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    (sender == target).then_some((mac, Ipv4Addr::from(sender)))
}

fn announcement(frame: &[u8]) -> bool {
    gratuitous_arp(frame).is_some() || capture::neighbour_advert(frame).is_some()
}

fn mac_of(h: &Host) -> [u8; 6] {
    capture::parse_mac(&h.mac().expect("MAC").to_string())
}

fn counter(s: &serde_json::Value, name: &str) -> u64 {
    s["counters"][name].as_u64().unwrap_or_default()
}

#[test]
fn the_master_refreshes_its_announcements_the_backup_does_not() {
    let mut l = VrrpLab::with([LB1, LB2], REFRESH);
    l.start(0);
    l.start(1);
    l.wait_master(0, 1, BOUND);
    l.wait_master6(0, 1, BOUND);
    let host = |n: &str| l.lab.host(n).expect("host").clone();
    let (client, lb1, lb2) = (host("client"), host("lb1"), host("lb2"));
    let (m1, m2) = (mac_of(&lb1), mac_of(&lb2));

    // From here on, the bursts of becoming master are over: whatever comes is a refresh.
    let cap = capture::Capture::start(&client, announcement);
    let (a4, a6) = (l.vrrp(0), l.vrrp6(0));
    let (b4, b6) = (l.vrrp(1), l.vrrp6(1));
    let (garp0, na0) = (counter(&a4, "garp_sent"), counter(&a6, "na_sent"));
    // Three refreshes counted: one ARP for the IPv4 VIP, one NA per IPv6 VIP (two) each time.
    let t = l.wait("lb1 refreshes its announcements three times", BOUND, |l| {
        assert_eq!(l.state(0), "master");
        assert_eq!(l.state6(0), "master");
        counter(&l.vrrp(0), "garp_sent") >= garp0 + 3 && counter(&l.vrrp6(0), "na_sent") >= na0 + 6
    });
    println!("three refreshes counted on lb1 after {t:?} (garp_master_refresh_s = 1)");
    let frames = cap.finish();

    let garps: Vec<_> = frames.iter().filter_map(|f| gratuitous_arp(f)).collect();
    let nas: Vec<_> = frames
        .iter()
        .filter_map(|f| capture::neighbour_advert(f))
        .collect();
    let from_lb1_v4 = garps
        .iter()
        .filter(|(m, ip)| *m == m1 && *ip == VIP)
        .count();
    let from_lb1_v6 = |target: Ipv6Addr| {
        nas.iter()
            .filter(|n| n.eth_src == m1 && n.target == target && n.tlla == Some(m1))
            .count()
    };
    println!(
        "client saw from lb1: {from_lb1_v4} gratuitous ARPs for {VIP}, {} NAs for {VIP6}, {} for {VIP6_LL}",
        from_lb1_v6(VIP6),
        from_lb1_v6(VIP6_LL)
    );
    assert!(
        from_lb1_v4 >= 2,
        "at least 2 refreshed gratuitous ARPs for {VIP} from lb1: {garps:?}"
    );
    assert!(
        from_lb1_v6(VIP6) >= 2 && from_lb1_v6(VIP6_LL) >= 2,
        "at least 2 refreshed neighbour advertisements per IPv6 VIP from lb1: {nas:?}"
    );
    let stray_v4: Vec<_> = garps.iter().filter(|(m, _)| *m == m2).collect();
    let stray_v6: Vec<_> = nas.iter().filter(|n| n.eth_src == m2).collect();
    assert!(
        stray_v4.is_empty() && stray_v6.is_empty(),
        "the backup announced: {stray_v4:?} {stray_v6:?}"
    );
    assert_eq!(
        (
            counter(&l.vrrp(1), "garp_sent"),
            counter(&l.vrrp6(1), "na_sent")
        ),
        (counter(&b4, "garp_sent"), counter(&b6, "na_sent")),
        "the backup's counters did not move"
    );
}
