//! Weights as the table holds them, read from the pinned maps: slow start reaches full weight
//! (its last step is written too), and a backend not yet checked gets the configured share of
//! its weight (`health.unknown_weight_percent`).

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use super::{lab::*, maps};

const SLOW_START_MS: u64 = 6000;

/// Two VIPs whose backends stay unknown for minutes (rise 100, 10 s apart; a 5 s timeout so
/// that a loaded machine does not fail a check, which would make them unhealthy): `obs` gives them
/// half their weight, `strict` (the default, 0) none.
const UNKNOWN_VIPS: &str = "\n[[vips]]\nname = \"obs\"\naddress = \"10.77.0.101\"\nport = 80\n\
    health = { interval_ms = 10000, timeout_ms = 5000, rise = 100, unknown_weight_percent = 50 }\n\
    [[vips.backends]]\naddress = \"10.77.0.11\"\nweight = 100\n\
    [[vips.backends]]\naddress = \"10.77.0.12\"\nweight = 50\n\
    [[vips]]\nname = \"strict\"\naddress = \"10.77.0.102\"\nport = 80\n\
    health = { interval_ms = 10000, timeout_ms = 5000, rise = 100 }\n\
    [[vips.backends]]\naddress = \"10.77.0.11\"\n";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn counts(cl: &ControlLab, vip: &str) -> BTreeMap<String, u32> {
    let pins = cl.lab.bpffs().expect("bpffs").join("lb1");
    maps::table_counts(&pins, ip(vip), 80, 6)
}

fn share(c: &BTreeMap<String, u32>, addr: &str) -> u32 {
    c.get(addr).copied().unwrap_or(0)
}

/// Waits (bounded) until the web VIP's table splits evenly between be1 and be2.
fn wait_even(cl: &ControlLab, what: &str) {
    let deadline = Instant::now() + Duration::from_millis(SLOW_START_MS + 10_000);
    loop {
        let c = counts(cl, &VIP.to_string());
        let (a, b) = (share(&c, "10.77.0.11"), share(&c, "10.77.0.12"));
        // Equal weights: Maglev gives each M/2 entries, give or take one.
        if a > 0 && a.abs_diff(b) <= 2 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the table never reached full weight for both backends: {c:?}\n{}\n{}",
            cl.backend_view("web", "10.77.0.12"),
            cl.lbd_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn slow_start_ends_at_full_weight_in_the_table_and_unknown_backends_get_their_share() {
    let mut cl = ControlLab::build(&LabOptions {
        backends: 2,
        health_extra: &format!("slow_start_ms = {SLOW_START_MS}\n"),
        tail: UNKNOWN_VIPS,
        ..LabOptions::default()
    });

    // Unknown backends, read from the table while they are unknown.
    let obs = counts(&cl, "10.77.0.101");
    let (a, b) = (share(&obs, "10.77.0.11"), share(&obs, "10.77.0.12"));
    assert!(
        b > 0 && (a as f64 / b as f64 - 2.0).abs() < 0.05,
        "obs: unknown backends at 50% of weights 100 and 50 hold 2:1 of the table: {obs:?}"
    );
    let view = cl.backend_view("obs", "10.77.0.12");
    assert_eq!(
        (view["health"].as_str(), view["effective_weight"].as_u64()),
        (Some("unknown"), Some(25)),
        "{view}"
    );
    assert!(
        counts(&cl, "10.77.0.102").is_empty(),
        "strict: an unknown backend gets no new flows by default"
    );

    // Both web backends became healthy at start and ramp: the ramp must end at full weight
    // in the table, not one step short.
    wait_even(&cl, "first ramp");

    // A backend that fails and recovers ramps again: small while ramping, even after.
    cl.servers[1].as_mut().expect("be2 server").stop();
    let deadline = Instant::now() + Duration::from_secs(20);
    while cl.backend_view("web", "10.77.0.12")["health"] != "unhealthy" {
        assert!(Instant::now() < deadline, "be2 never went unhealthy");
        std::thread::sleep(Duration::from_millis(100));
    }
    cl.servers[1] = Some(BackendServer::start(&cl.lab, "be2"));
    while cl.backend_view("web", "10.77.0.12")["health"] != "healthy" {
        assert!(Instant::now() < deadline, "be2 never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = counts(&cl, &VIP.to_string());
    let view = cl.backend_view("web", "10.77.0.12");
    let (a, b) = (share(&during, "10.77.0.11"), share(&during, "10.77.0.12"));
    assert!(
        b > 0 && (b as f64) < 0.8 * a as f64,
        "be2 is ramping: a small share of the table ({during:?}, {view})"
    );
    assert!(
        view["effective_weight"].as_u64() < view["weight"].as_u64(),
        "{view}"
    );
    wait_even(&cl, "second ramp");
    let view = cl.backend_view("web", "10.77.0.12");
    assert_eq!(view["effective_weight"], view["weight"], "{view}");
}
