//! Backend MACs follow the kernel's neighbour table by events, with the real lbd: a backend
//! whose NIC changes is sent to its new MAC, one that disappears from the segment is reported
//! unresolved and taken out of the table, and comes back when it returns.

use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{client_gets, counts, lab::*, maps};

const ADDR: &str = "10.77.0.12";
const NEW_MAC: [u8; 6] = [0x02, 0x77, 0x00, 0x00, 0x00, 0x42];
/// Upper bound of every wait below (never a pass/fail criterion by itself).
const WAIT: Duration = Duration::from_secs(30);

fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The log without terminal colours, so field names and values can be matched.
fn plain_log(cl: &ControlLab) -> String {
    let log = cl.lbd_log();
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequence: ESC [ ... final byte in @..~
            for d in chars.by_ref() {
                if ('@'..='~').contains(&d) && d != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// lbd's log lines saying that `ADDR`'s MAC changed to `to`, from a neighbour event.
fn mac_changes(cl: &ControlLab, to: &str) -> Vec<String> {
    plain_log(cl)
        .lines()
        .filter(|l| {
            l.contains("backend MAC changed")
                && l.contains(&format!("backend={ADDR}"))
                && l.contains(&format!("to={to}"))
                && l.contains("cause=\"neighbour event\"")
        })
        .map(str::to_string)
        .collect()
}

fn backend(cl: &ControlLab) -> Value {
    cl.backend_view("web", ADDR)
}

/// Polls `cond` every 100 ms until it holds; panics after `WAIT` with `what` and lbd's log.
fn wait_until(cl: &ControlLab, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < WAIT,
            "{what}: not within {WAIT:?}\nbackend: {}\nlbd log:\n{}",
            backend(cl),
            cl.lbd_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// New connections through the VIP all succeed and some reach be2.
fn be2_takes_traffic(cl: &ControlLab) {
    let r = client_gets(cl, 40);
    assert!(
        r.iter().all(|x| x.is_ok()) && r.iter().any(|x| x.as_deref() == Ok("be2")),
        "client through the VIP: {:?}\n{}",
        counts(&r),
        cl.lbd_log()
    );
}

#[test]
fn a_backend_mac_change_reaches_the_data_plane_by_a_neighbour_event() {
    let cl = ControlLab::new(2);
    let pins = cl.lab.bpffs().expect("bpffs").join("lb1");
    let be2 = cl.lab.host("be2").expect("be2");
    let old = be2.mac().expect("be2 MAC").0;
    assert_eq!(
        maps::backend_mac(&pins, ADDR),
        Some(old),
        "be2's slot starts with its MAC"
    );
    be2_takes_traffic(&cl);

    // The backend's NIC is replaced (new MAC); it announces itself as soon as it talks to the
    // balancer: its ARP request for lb1 updates lb1's entry, and the kernel notifies lbd.
    be2.exec([
        "ip",
        "link",
        "set",
        "dev",
        "eth0",
        "address",
        &mac_text(&NEW_MAC),
    ])
    .expect("new MAC on be2");
    be2.exec(["ip", "neigh", "flush", "dev", "eth0"])
        .expect("flush be2's neighbours");
    let lb_addr = cl.lab.host("lb1").expect("lb1").ipv4();
    be2.in_netns(move || -> std::io::Result<()> {
        UdpSocket::bind("0.0.0.0:0")?.send_to(b"hello", (lb_addr, 9))?;
        Ok(())
    })
    .expect("be2 ns")
    .expect("UDP from be2 to lb1");

    let took = wait_until(
        &cl,
        "the data plane's BACKENDS entry for be2 holds its new MAC",
        || maps::backend_mac(&pins, ADDR) == Some(NEW_MAC),
    );
    eprintln!(
        "MAC change -> data plane after {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    let lines = mac_changes(&cl, &mac_text(&NEW_MAC));
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("from={}", mac_text(&old))) && l.contains("event=changed")),
        "lbd logged the change as a neighbour event from the old MAC: {lines:#?}\n{}",
        cl.lbd_log()
    );
    // Found through the kernel's notification of lb1's updated entry, not the periodic
    // re-check (every 10 s) nor a first resolution.
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("from={}", mac_text(&old)))
                && l.contains("event=changed")
                && l.contains("trigger=\"notification\"")),
        "lbd logged the change as coming from a kernel notification: {lines:#?}\n{}",
        cl.lbd_log()
    );
    eprintln!("{}", lines.join("\n"));
    assert_eq!(backend(&cl)["mac"], mac_text(&NEW_MAC));

    // Frames for be2 now carry its new MAC: the client reaches it again through the VIP.
    cl.wait_healthy(2);
    be2_takes_traffic(&cl);
}

#[test]
fn a_backend_gone_from_the_segment_is_unresolved_and_comes_back() {
    // Short neighbour timers on the balancer, so its kernel notices a silent backend within
    // seconds (the defaults take up to a minute); lbd's behaviour does not depend on them.
    let cl = ControlLab::with_options(
        2,
        INTERVAL_MS,
        &[
            ("net.ipv4.neigh.eth0.base_reachable_time_ms", "1000"),
            ("net.ipv4.neigh.eth0.delay_first_probe_time", "1"),
        ],
    );
    let pins = cl.lab.bpffs().expect("bpffs").join("lb1");
    let table = || maps::table_backends(&pins, VIP, 80);
    let be2_mac = cl.lab.host("be2").expect("be2").mac().expect("MAC").0;
    assert_eq!(table(), vec!["10.77.0.11".to_string(), ADDR.into()]);

    // Unplug be2: its bridge port goes down, nothing answers ARP for it any more.
    let port = cl
        .lab
        .bridge_port_of("be2")
        .expect("be2's port")
        .to_string();
    let bridge_ns = cl.lab.bridge_ns().to_string();
    let set_port = |state: &str| {
        tests::exec::run(&mut tests::exec::netns_command(
            &bridge_ns,
            ["ip", "link", "set", "dev", &port, state],
        ))
        .unwrap_or_else(|e| panic!("bridge port {port} {state}: {e}"))
    };
    set_port("down");
    let took = wait_until(&cl, "lbd reports be2's MAC unresolved", || {
        let b = backend(&cl);
        b["mac"].is_null() && b["mac_error"].as_str().is_some_and(|e| e.contains(ADDR))
    });
    eprintln!(
        "backend unplugged -> MAC unresolved after {:.0} ms: {}",
        took.as_secs_f64() * 1e3,
        backend(&cl)["mac_error"]
    );
    assert_eq!(
        table(),
        vec!["10.77.0.11".to_string()],
        "an unresolved backend is out of the table"
    );
    let lines = mac_changes(&cl, "unresolved");
    assert!(
        lines.iter().any(|l| l.contains("event=unresolvable")),
        "lbd logged the loss as a neighbour event: {lines:#?}\n{}",
        cl.lbd_log()
    );
    eprintln!("{}", lines.join("\n"));

    // Plugged back: the kernel resolves it again (lbd's health checks and periodic re-check
    // ask), the resolver reports it, and it takes traffic again.
    set_port("up");
    let took = wait_until(
        &cl,
        "be2's MAC resolved again and be2 back in the table",
        || backend(&cl)["mac"] == mac_text(&be2_mac) && table().len() == 2,
    );
    eprintln!(
        "backend plugged back -> in the table after {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    assert!(backend(&cl)["mac_error"].is_null(), "{}", backend(&cl));
    assert!(
        mac_changes(&cl, &mac_text(&be2_mac))
            .iter()
            .any(|l| l.contains("from=unresolved") && l.contains("event=resolved")),
        "lbd logged the return as a neighbour event:\n{}",
        cl.lbd_log()
    );
    cl.wait_healthy(2);
    be2_takes_traffic(&cl);
}
