//! VRRP tests: two real `lbd` nodes (and keepalived) in a network-namespace lab (root).

mod addresses;
mod capture;
mod ipv6;
mod lab;
mod refresh;
mod relink;
mod unicast;

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use lab::*;
use lb_vrrp::{
    io::VrrpSocket,
    machine::master_down,
    packet::{Addresses, Advert, Centis, GROUP_V4, ipv4_packet},
};

fn interval() -> Centis {
    Centis::new(INTERVAL_CS).expect("interval")
}

#[test]
fn election_kill_and_preemption() {
    let mut l = VrrpLab::new([LB1, LB2]);
    l.start(0);
    l.start(1);
    let t = l.wait_master(0, 1, BOUND);
    println!("election: lb1 master, lb2 backup after {t:?} from lb2's start");
    assert_eq!(l.vrrp(1)["master"], "10.77.0.2");
    let text = l.lbctl_vrrp(1);
    assert!(text.contains("backup (priority 90"), "{text}");
    assert!(text.contains("master       10.77.0.2"), "{text}");

    // The master dies without a word: lb2 must wait out the master-down interval.
    l.stop(0, libc::SIGKILL);
    let t = l.wait("lb2 master with the VIP", BOUND, |l| {
        l.state(1) == "master" && l.has_vip(1)
    });
    println!(
        "SIGKILL of the master: lb2 took the VIP after {t:?} (3 x interval + skew = {:?})",
        master_down(90, interval())
    );

    // lb1 returns (a SIGKILL left its VIP behind; lbd removes it at start) and preempts.
    l.start(0);
    let t = l.wait_master(0, 1, BOUND);
    println!("lb1 back: preempted lb2 after {t:?}");
    let s = l.vrrp(1);
    assert!(s["counters"]["became_master"].as_u64() >= Some(1), "{s}");
}

#[test]
fn clean_shutdown_hands_over_at_once_and_no_preempt_holds() {
    let lb1 = Node {
        preempt: false,
        ..LB1
    };
    let mut l = VrrpLab::new([lb1, LB2]);
    l.start(1);
    l.wait("lb2 master alone", BOUND, |l| {
        l.state(1) == "master" && l.has_vip(1)
    });
    l.start(0);
    // lb1 (100, preempt off) joins a running master of priority 90: it stays backup. Watch
    // it for several master-down intervals.
    let watch = master_down(100, interval()) * 4;
    let end = std::time::Instant::now() + watch;
    l.wait("lb1 backup", BOUND, |l| l.state(0) == "backup");
    while std::time::Instant::now() < end {
        assert_eq!(l.state(0), "backup", "preempt off: lb1 must not take over");
        assert!(!l.has_vip(0), "preempt off: lb1 must not hold the VIP");
        assert_eq!(l.state(1), "master");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(l.vrrp(0)["counters"]["adverts_received"].as_u64() > Some(0));

    // Clean stop of the master: priority 0 advert, lb1 takes over after its skew only.
    l.stop(1, libc::SIGTERM);
    let t = l.wait("lb1 master after lb2's SIGTERM", BOUND, |l| {
        l.state(0) == "master" && l.has_vip(0)
    });
    println!(
        "SIGTERM of the master: lb1 took the VIP after {t:?} (skew alone; master-down would be {:?})",
        master_down(100, interval())
    );
    assert!(!l.has_vip(1), "a cleanly stopped master removes its VIP");
}

/// Crafted adverts sent from the client namespace with our own raw socket.
fn send_from_client(l: &VrrpLab, packets: Vec<Vec<u8>>) {
    l.block_on_client(|| async move {
        let s = VrrpSocket::open_v4("eth0", false).expect("raw socket in the client");
        for p in packets {
            s.send(&p, GROUP_V4).expect("send crafted advert");
        }
    });
}

#[test]
fn malformed_adverts_are_dropped_and_counted() {
    let mut l = VrrpLab::new([LB1, LB2]);
    l.start(0);
    l.start(1);
    l.wait_master(0, 1, BOUND);
    let src = Ipv4Addr::new(10, 77, 0, 10);
    // Priority 254: were any of these accepted, lb1 would step down and lb2 would follow.
    let advert = |vrid: u8| Advert {
        vrid,
        priority: 254,
        interval: interval(),
        addresses: Addresses::V4(vec![VIP]),
    };
    let good_msg = advert(VRID).encode(IpAddr::V4(src), IpAddr::V4(GROUP_V4));
    let mut bad_sum = good_msg.clone();
    bad_sum[7] ^= 0xff;
    let mut v2 = good_msg.clone();
    v2[0] = 0x21;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("checksum", ipv4_packet(src, GROUP_V4, 255, &bad_sum)),
        ("ttl", ipv4_packet(src, GROUP_V4, 64, &good_msg)),
        ("version", ipv4_packet(src, GROUP_V4, 255, &v2)),
        ("vrid", advert(VRID + 1).encode_ipv4(src, GROUP_V4)),
        ("truncated", ipv4_packet(src, GROUP_V4, 255, &good_msg[..6])),
    ];
    for (reason, pkt) in cases {
        l.wait_rejects(&IPV4, reason, 3, || send_from_client(&l, vec![pkt; 3]));
        assert_eq!(l.state(0), "master", "after {reason}");
        assert_eq!(l.state(1), "backup", "after {reason}");
        // The backup learns the master from its next advert (one interval at most after start).
        l.wait(
            &format!("backup still follows lb1 after {reason}"),
            BOUND,
            |l| l.vrrp(1)["master"] == "10.77.0.2",
        );
    }
    // The same advert, well formed, is acted on: lb1 (100) yields to priority 254.
    send_from_client(&l, vec![advert(VRID).encode_ipv4(src, GROUP_V4)]);
    l.wait("lb1 yields to a valid higher advert", BOUND, |l| {
        l.vrrp(0)["counters"]["became_backup"].as_u64() >= Some(2)
    });
}

/// Watches for `span` that `cond` keeps holding (a bounded "never happens" check).
fn holds(l: &VrrpLab, span: Duration, what: &str, cond: impl Fn(&VrrpLab) -> bool) {
    let end = std::time::Instant::now() + span;
    while std::time::Instant::now() < end {
        assert!(
            cond(l),
            "{what} stopped holding\n--- lb1 log\n{}\n--- lb2 log\n{}",
            l.log(0),
            l.log(1)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn keepalived_master_lbd_backup() {
    // Dual stack: keepalived runs two vrrp_instances (IPv4, IPv6) with VRID 51, lbd one
    // [vrrp] section owning both families.
    let mut l = VrrpLab::with([LB1, LB2], DUAL);
    l.start_keepalived(0);
    l.wait("keepalived (lb1, 100) holds both VIPs", BOUND, |l| {
        l.has_vip(0) && l.has_vip6(0)
    });
    l.start(1);
    l.wait(
        "lbd (lb2) backup of both families following keepalived",
        BOUND,
        |l| {
            l.state(1) == "backup"
                && l.vrrp(1)["master"] == "10.77.0.2"
                && l.state6(1) == "backup"
                && !l.vrrp6(1)["master"].is_null()
        },
    );
    holds(
        &l,
        master_down(90, interval()) * 4,
        "lbd never claims the VIPs of a healthy higher master",
        |l| {
            l.state(1) == "backup"
                && !l.has_vip(1)
                && l.has_vip(0)
                && l.state6(1) == "backup"
                && l.lacks_vip6(1)
                && l.has_vip6(0)
        },
    );
    assert_nothing_rejected(&l, 1, "keepalived's adverts pass all our checks");
    let t = lbd_takes_over_from_stopped_keepalived(&mut l);
    println!("keepalived SIGTERM -> lbd master of both families after {t:?}");
    assert!(!l.has_vip(0), "keepalived removed its VIP on stop");
}

/// Asserts that neither of node `i`'s routers (IPv4, IPv6) dropped any packet.
fn assert_nothing_rejected(l: &VrrpLab, i: usize, what: &str) {
    for s in [l.vrrp(i), l.vrrp6(i)] {
        let rejected: u64 = s["counters"]["rejects"]
            .as_object()
            .expect("rejects by reason")
            .values()
            .filter_map(|v| v.as_u64())
            .sum();
        assert_eq!(rejected, 0, "{what}: {s}");
    }
}

/// lbd (lb1, 100) master of both families, then keepalived on lb2 (with `opts`): keepalived
/// enters BACKUP for both instances and never claims the VIPs of the healthy higher master.
fn lbd_master_then_keepalived_backup(opts: Options) -> VrrpLab {
    let mode = if opts.unicast { "unicast " } else { "" };
    let mut l = VrrpLab::with([LB1, LB2], opts);
    l.start(0);
    l.wait(
        &format!("lbd (lb1, 100) {mode}master of both families"),
        BOUND,
        |l| l.state(0) == "master" && l.has_vip(0) && l.state6(0) == "master" && l.has_vip6(0),
    );
    l.start_keepalived(1);
    l.wait(
        "keepalived (lb2) enters BACKUP for both instances",
        BOUND,
        |l| {
            let log = l.log(1);
            log.contains("(VI_4) Entering BACKUP STATE")
                && log.contains("(VI_6) Entering BACKUP STATE")
        },
    );
    holds(
        &l,
        master_down(90, interval()) * 4,
        &format!("keepalived never claims the VIPs of a healthy higher {mode}master"),
        |l| !l.has_vip(1) && l.state(0) == "master" && l.lacks_vip6(1) && l.state6(0) == "master",
    );
    l
}

/// lbd on lb1 dies without a word: keepalived on lb2 takes both families' VIPs.
fn keepalived_takes_over_from_killed_lbd(l: &mut VrrpLab) {
    l.stop(0, libc::SIGKILL);
    let t = l.wait("keepalived takes both VIPs after lbd dies", BOUND, |l| {
        l.has_vip(1) && l.has_vip6(1)
    });
    println!(
        "{}lbd SIGKILL -> keepalived holds both VIPs after {t:?} (3 x interval + skew = {:?})",
        if l.opts.unicast { "unicast: " } else { "" },
        master_down(90, interval())
    );
}

/// keepalived on lb1 is stopped cleanly: lbd on lb2 takes both families' VIPs.
fn lbd_takes_over_from_stopped_keepalived(l: &mut VrrpLab) -> Duration {
    l.stop_keepalived(0, libc::SIGTERM);
    l.wait(
        "lbd takes both VIPs from the stopped keepalived",
        BOUND,
        |l| l.state(1) == "master" && l.has_vip(1) && l.state6(1) == "master" && l.has_vip6(1),
    )
}

#[test]
fn lbd_master_keepalived_backup() {
    let mut l = lbd_master_then_keepalived_backup(DUAL);
    let log = l.log(1);
    assert!(
        !log.contains("Invalid") && !log.contains("invalid"),
        "keepalived accepted every lbd advert:\n{log}"
    );
    // A keepalived backup is silent; nothing it sends may be dropped as malformed either.
    assert_nothing_rejected(&l, 0, "lbd dropped something keepalived sent");
    keepalived_takes_over_from_killed_lbd(&mut l);
}

#[test]
fn tracking_a_vip_without_healthy_backends_gives_up_mastership() {
    let lb1 = Node { track: true, ..LB1 };
    let mut l = VrrpLab::new([lb1, LB2]);
    l.start(0);
    l.start(1);
    // Nothing listens on be1:80 yet: lb1 (100) cannot serve "web", so lb2 (90) is master.
    l.wait("lb1 in fault, lb2 master", BOUND, |l| {
        l.state(0) == "fault" && !l.has_vip(0) && l.state(1) == "master" && l.has_vip(1)
    });
    let be1 = l.lab.host("be1").expect("be1");
    let listener = be1
        .in_netns(|| std::net::TcpListener::bind("0.0.0.0:80"))
        .expect("be1 ns")
        .expect("listen on be1:80");
    let t = l.wait_master(0, 1, BOUND);
    println!("backend healthy: lb1 left the fault state and preempted after {t:?}");
    drop(listener);
    let t = l.wait("lb1 fault again, lb2 master", BOUND, |l| {
        l.state(0) == "fault" && !l.has_vip(0) && l.state(1) == "master" && l.has_vip(1)
    });
    println!("backend down: lb2 master after {t:?} (priority-0 advert from lb1)");
    let s = l.vrrp(0);
    assert!(s["counters"]["became_fault"].as_u64() >= Some(2), "{s}");
    assert_eq!(s["fault"], true, "{s}");
}

/// One HTTP request to the VIP on a new connection.
fn get_vip() -> bool {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from((VIP, 80));
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n").is_err() {
        return false;
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    resp.starts_with(b"HTTP/1.1 200")
}

#[test]
fn client_requests_resume_through_the_backup_when_the_master_dies() {
    let mut l = VrrpLab::new([LB1, LB2]);
    l.start(0);
    l.start(1);
    l.wait_master(0, 1, BOUND);
    let _server = l.serve();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    // Bounded load: at most 60 s or 100 000 requests, whichever comes first.
    let client = l
        .lab
        .host("client")
        .expect("client")
        .spawn_thread(move || {
            let t0 = std::time::Instant::now();
            let mut ok = Vec::new();
            let mut n = 0u32;
            while !flag.load(std::sync::atomic::Ordering::Relaxed)
                && t0.elapsed() < Duration::from_secs(60)
                && n < 100_000
            {
                n += 1;
                if get_vip() {
                    ok.push(std::time::Instant::now());
                } else {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            ok
        })
        .expect("client thread");
    std::thread::sleep(Duration::from_secs(1));
    // The master node dies: lbd killed and its link gone.
    let killed = std::time::Instant::now();
    l.fail(0);
    l.wait("lb2 master with the VIP", BOUND, |l| {
        l.state(1) == "master" && l.has_vip(1)
    });
    let took_over = killed.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ok = client.join().expect("client thread");
    assert!(
        ok.iter().any(|t| *t < killed),
        "requests through lb1 worked before the failure"
    );
    assert!(
        ok.iter().any(|t| *t > killed),
        "requests resumed through lb2 ({} before the kill)\n--- lb2 log\n{}",
        ok.len(),
        l.log(1)
    );
    let gap = ok.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    // Why the gap can be far below the master-down interval: once lb1's port is down the
    // bridge floods frames still addressed to lb1's MAC, and lb2's XDP program forwards VIP
    // traffic whatever the destination MAC. Reported, not judged.
    println!(
        "client: {} successful requests, longest gap {gap:?}; lb2 master {took_over:?} after the \
         kill (master-down interval {:?})",
        ok.len(),
        master_down(90, interval())
    );
}
