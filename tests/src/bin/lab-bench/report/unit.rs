//! Unit tests of the report: medians, pairing, verdicts, formatting.

use super::format::fmt_int;
use super::*;

fn wrk(requests: u64, cpu_us_per_req: f64) -> WrkResult {
    WrkResult {
        requests,
        duration_us: 1_000_000,
        p50_us: 1000.0,
        p99_us: 5000.0,
        err_connect: 0,
        err_read: 0,
        err_write: 0,
        err_status: 0,
        err_timeout: 0,
        cpu_busy_us: cpu_us_per_req * requests as f64,
        lab_busy_us: cpu_us_per_req * requests as f64 / 2.0,
    }
}

fn results() -> Results {
    // Two rounds; round 2 is slower for everybody (a noisy neighbour), pairing cancels it.
    let runs = |a: (u64, f64), b: (u64, f64)| vec![wrk(a.0, a.1), wrk(b.0, b.1)];
    let mut http = Vec::new();
    for mode in ConnMode::ALL {
        for (option, r) in [
            (Opt::Direct, runs((1000, 50.0), (500, 100.0))),
            (Opt::Xdp, runs((960, 52.0), (480, 102.0))),
            (Opt::Nginx, runs((500, 70.0), (250, 120.0))),
            (Opt::Haproxy, runs((600, 65.0), (300, 115.0))),
        ] {
            http.push(HttpRuns {
                option,
                mode,
                runs: r,
            });
        }
    }
    let udp = |sent, received| UdpResult {
        sent,
        received,
        send_secs: 1.0,
        cpu_busy_us: 1000.0,
        lab_busy_us: 500.0,
    };
    Results {
        setup: Setup {
            rounds: 2,
            duration_s: 1,
            threads: 3,
            connections: 48,
            path: "/ping".into(),
            xdp_mode: "auto",
            segment: "bridge",
            udp: Some(UdpSetup {
                duration_s: 1,
                flows: 48,
                payload_bytes: 18,
            }),
            cpus: 2,
        },
        background_busy_percent: vec![5.0, 60.0],
        http,
        udp: vec![
            UdpRuns {
                option: Opt::Direct,
                runs: vec![udp(100, 100), udp(100, 100)],
            },
            UdpRuns {
                option: Opt::Xdp,
                runs: vec![udp(100, 90), udp(100, 90)],
            },
            UdpRuns {
                option: Opt::Haproxy,
                runs: Vec::new(),
            },
        ],
    }
}

#[test]
fn ratios_and_added_cpu_are_paired_per_round() {
    let r = results();
    let json = r.json();
    let xdp = json["http"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["option"] == "xdp" && h["connection"] == "keep-alive")
        .unwrap();
    assert!((xdp["rps_ratio_to_direct"].as_f64().unwrap() - 0.96).abs() < 1e-9);
    assert!((xdp["added_cpu_us_per_request"].as_f64().unwrap() - 2.0).abs() < 1e-9);
    // nginx adds 20 per round, XDP 2: a tenth, which meets the target (≤ 0.1).
    assert!((xdp["added_cpu_ratio_to_nginx"].as_f64().unwrap() - 0.1).abs() < 1e-9);
    assert!((xdp["added_lab_cpu_us_per_request"].as_f64().unwrap() - 1.0).abs() < 1e-9);
    let targets = json["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 6);
    let rps = targets
        .iter()
        .find(|t| t["name"] == "xdp_rps_ratio_to_direct_keep-alive")
        .unwrap();
    assert_eq!(rps["met"], true);
    let udp = json["udp"].as_array().unwrap();
    assert!((udp[1]["pps_ratio_to_direct"].as_f64().unwrap() - 0.9).abs() < 1e-9);
    assert_eq!(udp[2]["supported"], false);
    let table = r.table();
    assert!(table.contains("target MET: XDP throughput vs direct, keep-alive: 0.960"));
    assert!(table.contains("n/a"));
}

#[test]
fn thousands() {
    assert_eq!(fmt_int(1234567.4), "1,234,567");
    assert_eq!(fmt_int(999.0), "999");
    assert_eq!(fmt_int(-1000.0), "-1,000");
}
