//! The IPv6 virtual router: election and failover of the IPv6 VIPs beside the IPv4 ones, the
//! new master's unsolicited neighbour advertisement, and malformed IPv6 adverts.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use lb_vrrp::{
    io6::{VrrpSocket6, addresses_v6, is_link_local},
    machine::master_down,
    packet::{Addresses, Advert, GROUP_V6},
};

use super::{LB1, LB2, capture, interval, lab::*};

fn mac_of(l: &VrrpLab, name: &str) -> [u8; 6] {
    let m = l.lab.host(name).expect("host").mac().expect("MAC");
    capture::parse_mac(&m.to_string())
}

/// The client's neighbour entry for VIP6 (`ip -6 neigh`), as text.
fn client_neighbour(l: &VrrpLab) -> String {
    l.lab
        .host("client")
        .expect("client")
        .exec([
            "ip",
            "-6",
            "neigh",
            "show",
            &VIP6.to_string(),
            "dev",
            "eth0",
        ])
        .unwrap_or_default()
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn ipv6_election_failover_and_unsolicited_neighbour_advert() {
    let mut l = VrrpLab::with([LB1, LB2], DUAL);
    l.start(0);
    l.start(1);
    let t = l.wait_master6(0, 1, BOUND);
    l.wait_master(0, 1, BOUND);
    println!("IPv6 election: lb1 master, lb2 backup after {t:?}");
    let s = l.vrrp6(1);
    let master: Ipv6Addr = s["master"].as_str().expect("master").parse().expect("IPv6");
    assert!(
        is_link_local(master) && master != VIP6_LL,
        "the IPv6 adverts come from lb1's own link-local address: {s}"
    );
    assert_eq!(s["counters"]["rejects"]["checksum"], 0, "{s}");
    // The master's own connections to the segment (health checks, API calls) do not go out
    // from VIP6 (a /128 would win source selection by longest prefix): backends holding the
    // VIP on lo for direct server return would answer themselves.
    let peer = l.lab.host("client").expect("client").ipv6().to_string();
    let route = l
        .lab
        .host("lb1")
        .expect("lb1")
        .exec(["ip", "-6", "route", "get", &peer])
        .expect("ip -6 route get on lb1");
    assert!(
        !route.contains(&format!("src {VIP6} ")),
        "lb1 would send to {peer} from the VIP: {route}"
    );

    // Both instances in `lbctl vrrp` and in the metrics.
    let text = l.lbctl_vrrp(1);
    assert!(text.contains("IPv4, vrid 51 on eth0"), "{text}");
    assert!(text.contains("IPv6, vrid 51 on eth0"), "{text}");
    assert_eq!(text.matches("backup (priority 90").count(), 2, "{text}");
    let metrics = l.get(0, "/metrics");
    assert!(
        metrics.contains("lbd_vrrp_state{vrid=\"51\",interface=\"eth0\",family=\"ipv6\"} 2"),
        "{metrics}"
    );

    // The client learns VIP6 -> lb1's MAC the ordinary way (neighbour solicitation; nothing
    // listens on :80, lb1's kernel answers with a reset).
    let lb1_mac = mac_of(&l, "lb1");
    let lb2_mac = mac_of(&l, "lb2");
    let client = l.lab.host("client").expect("client");
    let _ = client
        .in_netns(|| {
            std::net::TcpStream::connect_timeout(
                &SocketAddr::from((VIP6, 80)),
                Duration::from_secs(2),
            )
        })
        .expect("client ns");
    let n = client_neighbour(&l);
    assert!(n.contains(&fmt_mac(lb1_mac)), "client: VIP6 at lb1: {n:?}");

    let cap = capture::Capture::start(client, |f| capture::neighbour_advert(f).is_some());
    // lb1 dies: lbd killed and its link gone.
    let killed = std::time::Instant::now();
    l.fail(0);
    l.wait("lb2 IPv6 master with the IPv6 VIPs", BOUND, |l| {
        l.state6(1) == "master" && l.has_vip6(1)
    });
    let took = killed.elapsed();
    l.wait("lb2 IPv4 master too", BOUND, |l| {
        l.state(1) == "master" && l.has_vip(1)
    });
    let bound = master_down(90, interval());
    println!(
        "SIGKILL of the master: lb2 held the IPv6 VIPs after {took:?} (3 x interval + skew = {bound:?})"
    );
    // The RFC bound with generous slack for a loaded CI machine (the `ip` calls and polling
    // add to it): a backup that waited for anything but the master-down timer would miss it.
    assert!(
        took <= bound + Duration::from_secs(5),
        "lb2 took the IPv6 VIPs {took:?} after the kill; master-down is {bound:?}"
    );
    // The unsolicited NA moves the client's existing entry to lb2 without any traffic.
    l.wait(
        "the client's neighbour entry for VIP6 names lb2",
        BOUND,
        |l| client_neighbour(l).contains(&fmt_mac(lb2_mac)),
    );
    let nas: Vec<capture::Na> = cap
        .finish()
        .iter()
        .filter_map(|f| capture::neighbour_advert(f))
        .filter(|na| na.eth_src == lb2_mac && na.target == VIP6)
        .collect();
    println!("neighbour advertisements from lb2 for {VIP6}: {nas:?}");
    let na = nas.first().expect("lb2 sent an unsolicited NA for VIP6");
    assert_eq!(na.dst, lb_vrrp::io6::ALL_NODES);
    assert_eq!(na.hops, 255);
    assert_eq!(na.flags & 0x20, 0x20, "override flag");
    assert_eq!(na.flags & 0x40, 0, "not solicited");
    assert_eq!(na.tlla, Some(lb2_mac), "target link-layer address option");
    // One burst of garp_repeat (default 5) NAs per VIP, as keepalived's garp_master_repeat.
    assert!(nas.len() >= 5, "a burst of 5 NAs, saw {}", nas.len());
    let s = l.vrrp6(1);
    assert!(s["counters"]["na_sent"].as_u64() >= Some(5), "{s}");
}

/// Crafted IPv6 adverts sent from the client namespace: `(hop limit, message)`.
fn send_from_client(l: &VrrpLab, packets: Vec<(u8, Vec<u8>)>) {
    l.block_on_client(|| async move {
        let src = client_link_local();
        let s = VrrpSocket6::open("eth0", false).expect("raw IPv6 socket in the client");
        for (hops, p) in packets {
            s.set_hop_limit(hops).expect("hop limit");
            s.send(&p, src, GROUP_V6).expect("send crafted advert");
        }
    });
}

fn client_link_local() -> Ipv6Addr {
    addresses_v6("eth0")
        .expect("client addresses")
        .into_iter()
        .find(|a| is_link_local(*a))
        .expect("client link-local address")
}

#[test]
fn malformed_ipv6_adverts_are_dropped_and_counted() {
    let mut l = VrrpLab::with([LB1, LB2], DUAL);
    l.start(0);
    l.start(1);
    l.wait_master6(0, 1, BOUND);
    let src = l
        .lab
        .host("client")
        .expect("client")
        .in_netns(client_link_local)
        .expect("client ns");
    let lb1_ll = l.vrrp6(1)["master"].clone();
    // Priority 254: were any of these accepted, lb1 would step down and lb2 would follow.
    let advert = |vrid: u8| Advert {
        vrid,
        priority: 254,
        interval: interval(),
        addresses: Addresses::V6(vec![VIP6_LL, VIP6]),
    };
    let good = advert(VRID).encode(IpAddr::V6(src), IpAddr::V6(GROUP_V6));
    let mut bad_sum = good.clone();
    bad_sum[7] ^= 0xff;
    let mut v2 = good.clone();
    v2[0] = 0x21;
    let cases: Vec<(&str, u8, Vec<u8>)> = vec![
        ("checksum", 255, bad_sum),
        ("ttl", 64, good.clone()),
        ("version", 255, v2),
        (
            "vrid",
            255,
            advert(VRID + 1).encode(IpAddr::V6(src), IpAddr::V6(GROUP_V6)),
        ),
        ("truncated", 255, good[..6].to_vec()),
    ];
    for (reason, hops, msg) in cases {
        l.wait_rejects(&IPV6, reason, 3, || {
            send_from_client(&l, vec![(hops, msg); 3])
        });
        assert_eq!(l.state6(0), "master", "after {reason}");
        assert_eq!(l.state6(1), "backup", "after {reason}");
        assert_eq!(l.vrrp6(1)["master"], lb1_ll, "after {reason}");
        // The IPv4 router never saw any of it.
        assert_eq!(
            l.vrrp(0)["counters"]["rejects"][reason],
            0,
            "after {reason}"
        );
    }
    // The same advert, well formed, is acted on: lb1 (100) yields to priority 254.
    send_from_client(&l, vec![(255, good)]);
    l.wait("lb1 yields to a valid higher IPv6 advert", BOUND, |l| {
        l.vrrp6(0)["counters"]["became_backup"].as_u64() >= Some(2)
    });
    assert_eq!(
        l.state(0),
        "master",
        "the IPv4 router is a separate instance"
    );
}
