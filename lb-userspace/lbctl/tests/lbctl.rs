//! `lbctl` against a fake lbd: an axum router serving docs/api.md's JSON on a unix socket in a
//! temp dir and, with a bearer-token check, on 127.0.0.1:0. The real `lbctl` binary is run.

#[path = "lbctl/fake_lbd.rs"]
mod fake_lbd;
#[path = "lbctl/run.rs"]
mod run;

use std::path::Path;

use fake_lbd::{FakeLbd, TOKEN};
use run::{lbctl, over_socket, row};
use serde_json::{Value, json};

#[test]
fn help_documents_every_option() {
    let out = lbctl(&["--help"], &[]).ok();
    for needle in [
        "--socket",
        "--url",
        "--token-file",
        "--json",
        "--timeout",
        "LBCTL_SOCKET",
        "LBCTL_URL",
        "LBCTL_TOKEN",
        "/run/lbd/lbd.sock",
        "status",
        "vip",
        "backend",
        "stats",
        "health",
        "shutdown",
        "replay",
    ] {
        assert!(
            out.stdout.contains(needle),
            "--help lacks {needle}:\n{}",
            out.stdout
        );
    }
    let out = lbctl(&["stats", "--help"], &[]).ok();
    for needle in ["--watch", "--interval", "--count"] {
        assert!(out.stdout.contains(needle), "stats --help lacks {needle}");
    }
    let out = lbctl(&["replay", "--help"], &[]).ok();
    assert!(out.stdout.contains("--pcap") && out.stdout.contains("--config"));
}

#[test]
fn status_shows_the_daemon() {
    let lbd = FakeLbd::start();
    let out = over_socket(&lbd, &["status"]).ok();
    assert!(out.stdout.contains("0.1.0-test"), "{}", out.stdout);
    assert!(out.stdout.contains("veth-lb0 (driver)"), "{}", out.stdout);
    assert!(out.stdout.contains("2 (1 healthy)"), "{}", out.stdout);
    assert!(
        out.stdout.contains("1h 1m"),
        "uptime 3661 s: {}",
        out.stdout
    );
    let out = over_socket(&lbd, &["--json", "status"]).ok();
    assert_eq!(out.json()["healthy_backends"], 1);
}

#[test]
fn vip_list_table_and_json() {
    let lbd = FakeLbd::start();
    let out = over_socket(&lbd, &["vip", "list"]).ok();
    assert!(out.stdout.starts_with("NAME"), "{}", out.stdout);
    assert_eq!(
        row(&out.stdout, "web"),
        [
            "web",
            "10.77.0.100",
            "80",
            "tcp",
            "maglev",
            "dsr-l2",
            "65537",
            "2",
            "1",
            "config"
        ]
    );
    // --json is lbd's own answer, pretty-printed.
    let out = over_socket(&lbd, &["vip", "list", "--json"]).ok();
    assert_eq!(out.json(), json!([fake_lbd::web_vip()]));
    assert!(out.stdout.lines().count() > 10, "pretty JSON spans lines");
}

#[test]
fn backend_list_shows_weights_health_mac_and_latency() {
    let lbd = FakeLbd::start();
    let out = over_socket(&lbd, &["backend", "list", "web"]).ok();
    let header = out.stdout.lines().next().unwrap_or_default();
    for col in [
        "ADDRESS",
        "WEIGHT",
        "EFFECTIVE",
        "HEALTH",
        "ADMIN",
        "MAC",
        "LATENCY",
        "LAST CHECK",
    ] {
        assert!(header.contains(col), "missing column {col}: {header}");
    }
    let r = row(&out.stdout, "10.77.0.11");
    assert_eq!(
        r[..9],
        [
            "10.77.0.11",
            "100",
            "100",
            "healthy",
            "active",
            "config",
            "02:00:00:00:00:11",
            "0.40",
            "ms"
        ]
    );
    assert_eq!(r[9], "ok,");
    let r = row(&out.stdout, "10.77.0.12");
    assert_eq!(
        r[..9],
        [
            "10.77.0.12",
            "50",
            "0",
            "unhealthy",
            "draining",
            "(operator)",
            "api",
            "unresolved",
            "-"
        ]
    );
    assert!(out.stdout.contains("failed") && out.stdout.contains("connection refused"));
    assert!(
        out.stdout
            .contains("10.77.0.12: MAC unresolved: no ARP reply"),
        "{}",
        out.stdout
    );
    let out = over_socket(&lbd, &["--json", "backend", "list", "web"]).ok();
    assert_eq!(out.json()[0]["address"], "10.77.0.11");
}

#[test]
fn backend_changes_send_the_documented_requests() {
    let lbd = FakeLbd::start();
    let out = over_socket(
        &lbd,
        &["backend", "add", "web", "10.77.0.13", "--weight", "30"],
    )
    .ok();
    assert!(
        out.stdout
            .starts_with("added backend of web: 10.77.0.13: weight 30"),
        "{}",
        out.stdout
    );
    let out = over_socket(&lbd, &["backend", "add", "web", "10.77.0.13"]).ok();
    assert!(
        out.stdout.starts_with("re-registered backend"),
        "{}",
        out.stdout
    );
    let out = over_socket(&lbd, &["backend", "weight", "web", "10.77.0.13", "50"]).ok();
    assert!(out.stdout.contains("weight 50"), "{}", out.stdout);
    let out = over_socket(&lbd, &["backend", "drain", "web", "10.77.0.13"]).ok();
    assert!(out.stdout.contains("draining"), "{}", out.stdout);
    let out = over_socket(&lbd, &["--json", "backend", "undrain", "web", "10.77.0.13"]).ok();
    assert_eq!(out.json()["admin"], "active");
    let out = over_socket(&lbd, &["backend", "del", "web", "10.77.0.13"]).ok();
    assert_eq!(out.stdout, "deleted backend 10.77.0.13 of web\n");

    let log = lbd.requests();
    let expected = [
        (
            "POST",
            "/v1/vips/web/backends",
            json!({"address": "10.77.0.13", "weight": 30}),
        ),
        (
            "POST",
            "/v1/vips/web/backends",
            json!({"address": "10.77.0.13"}),
        ),
        (
            "POST",
            "/v1/vips/web/backends/10.77.0.13/weight",
            json!({"weight": 50}),
        ),
        (
            "POST",
            "/v1/vips/web/backends/10.77.0.13/drain",
            Value::Null,
        ),
        (
            "POST",
            "/v1/vips/web/backends/10.77.0.13/undrain",
            Value::Null,
        ),
        ("DELETE", "/v1/vips/web/backends/10.77.0.13", Value::Null),
    ];
    assert_eq!(log.len(), expected.len(), "{log:?}");
    for (got, (method, path, body)) in log.iter().zip(expected) {
        assert_eq!(
            (got.method.as_str(), got.path.as_str(), &got.body),
            (method, path, &body)
        );
    }
}

#[test]
fn vip_add_and_del() {
    let lbd = FakeLbd::start();
    let args = [
        "vip",
        "add",
        "dns",
        "--address",
        "10.77.0.101",
        "--port",
        "53",
        "--protocol",
        "udp",
        "--algorithm",
        "ip-hash",
        "--table-size",
        "251",
    ];
    let out = over_socket(&lbd, &args).ok();
    assert_eq!(
        out.stdout,
        "added VIP dns 10.77.0.101:53/udp (ip-hash, dsr-l2, table 251)\n"
    );
    let body = &lbd.requests()[0].body;
    assert_eq!(
        body,
        &json!({"name": "dns", "address": "10.77.0.101", "port": 53, "protocol": "udp",
                "algorithm": "ip-hash", "table_size": 251})
    );
    // The same name again: lbd's 409 comes back as a one-line error.
    let out = over_socket(&lbd, &args).failed();
    assert!(
        out.stderr.contains("VIP dns already exists") && out.stderr.contains("409 conflict"),
        "{}",
        out.stderr
    );
    let out = over_socket(&lbd, &["vip", "list"]).ok();
    row(&out.stdout, "dns");
    let out = over_socket(&lbd, &["vip", "del", "dns"]).ok();
    assert_eq!(out.stdout, "deleted VIP dns\n");
    let out = over_socket(&lbd, &["vip", "del", "dns"]).failed();
    assert!(out.stderr.contains("404 not_found"), "{}", out.stderr);
}

#[test]
fn server_errors_are_clear_and_fail() {
    let lbd = FakeLbd::start();
    let out = over_socket(&lbd, &["backend", "del", "web", "10.77.0.99"]).failed();
    assert_eq!(
        out.stderr.trim_end(),
        "lbctl: lbd refused the request: backend 10.77.0.99 is not a backend of VIP web (404 not_found)"
    );
    assert_eq!(out.stdout, "");
    let out = over_socket(&lbd, &["backend", "list", "nope"]).failed();
    assert!(out.stderr.contains("unknown VIP nope"), "{}", out.stderr);
    let out = over_socket(&lbd, &["backend", "weight", "web", "10.77.0.11", "2000000"]).failed();
    assert!(out.stderr.contains("400 bad_request"), "{}", out.stderr);
    // A bad argument never reaches lbd: clap's usage error, status 2.
    let out = over_socket(&lbd, &["backend", "drain", "web", "not-an-ip"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(!lbd.requests().iter().any(|r| r.path.contains("not-an-ip")));
}

#[test]
fn no_server_listening() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("lbd.sock");
    let p = path.display().to_string();
    let out = lbctl(&["--socket", &p, "status"], &[]).failed();
    assert!(
        out.stderr
            .contains(&format!("cannot connect to lbd at {p} (is lbd running?)")),
        "{}",
        out.stderr
    );
    // The socket may also come from the environment.
    let out = lbctl(&["vip", "list"], &[("LBCTL_SOCKET", &p)]).failed();
    assert!(out.stderr.contains(&p), "{}", out.stderr);
    // TCP: a port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = lbctl(&["--url", &url, "health"], &[]).failed();
    assert!(
        out.stderr
            .contains(&format!("cannot connect to lbd at {url} (is lbd running?)")),
        "{}",
        out.stderr
    );
}

#[test]
fn tcp_needs_the_bearer_token() {
    let lbd = FakeLbd::start();
    let url = lbd.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("token");
    std::fs::write(&good, format!("{TOKEN}\nsecond line is ignored\n")).expect("write token");
    let bad = dir.path().join("bad-token");
    std::fs::write(&bad, "wrong\n").expect("write token");
    let tok = |p: &Path| p.display().to_string();

    let out = lbctl(
        &["--url", &url, "--token-file", &tok(&good), "vip", "list"],
        &[],
    )
    .ok();
    row(&out.stdout, "web");
    let out = lbctl(
        &["vip", "list"],
        &[("LBCTL_URL", &url), ("LBCTL_TOKEN", TOKEN)],
    )
    .ok();
    row(&out.stdout, "web");
    let out = lbctl(
        &["--url", &url, "--token-file", &tok(&bad), "vip", "list"],
        &[],
    )
    .failed();
    assert!(
        out.stderr.contains("401 unauthorized") && out.stderr.contains("--token-file"),
        "{}",
        out.stderr
    );
    let out = lbctl(&["--url", &url, "vip", "list"], &[]).failed();
    assert!(out.stderr.contains("401 unauthorized"), "{}", out.stderr);
    let out = lbctl(
        &[
            "--url",
            &url,
            "--token-file",
            &tok(&dir.path().join("missing")),
            "status",
        ],
        &[],
    )
    .failed();
    assert!(
        out.stderr.contains("cannot read the token file"),
        "{}",
        out.stderr
    );
    // An explicit --socket beats LBCTL_URL from the environment (the socket needs no token).
    let s = lbd.socket.display().to_string();
    let out = lbctl(&["--socket", &s, "vip", "list"], &[("LBCTL_URL", &url)]).ok();
    row(&out.stdout, "web");
    // https is TLS (issue 15): it needs the CA of lbd's certificate, and says so.
    let out = lbctl(&["--url", "https://127.0.0.1:1", "status"], &[]).failed();
    assert!(out.stderr.contains("--cacert"), "{}", out.stderr);
}

#[test]
fn bad_responses_are_reported() {
    let lbd = FakeLbd::start_broken();
    let out = over_socket(&lbd, &["status"]).failed();
    assert!(
        out.stderr.contains("bad response from lbd (200): not JSON"),
        "{}",
        out.stderr
    );
    let out = over_socket(&lbd, &["health"]).failed();
    assert!(
        out.stderr.contains("bad response from lbd (502)"),
        "{}",
        out.stderr
    );
}

#[test]
fn health_table() {
    let lbd = FakeLbd::start();
    let out = over_socket(&lbd, &["health"]).ok();
    let r = row(&out.stdout, "web");
    assert_eq!(
        r[..6],
        ["web", "10.77.0.11", "healthy", "active", "100", "0.40"]
    );
    assert!(
        out.stdout.contains("failed") && out.stdout.contains("connection refused"),
        "{}",
        out.stdout
    );
    let out = over_socket(&lbd, &["health", "--json"]).ok();
    assert_eq!(out.json().as_array().map(Vec::len), Some(2));
}

#[test]
fn stats_snapshot_shows_totals() {
    let lbd = FakeLbd::start();
    let out = over_socket(&lbd, &["stats"]).ok();
    // First snapshot of the fake: n = 0.
    assert_eq!(row(&out.stdout, "web"), ["web", "10,000", "0", "0", "10"]);
    assert_eq!(
        row(&out.stdout, "10.77.0.11"),
        ["10.77.0.11", "0", "0", "0", "7"]
    );
    assert!(out.stdout.contains("REASON"), "{}", out.stdout);
    let out = over_socket(&lbd, &["stats", "--json"]).ok();
    assert_eq!(out.json()["vips"][0]["packets"], 11_000);
}

#[test]
fn stats_watch_prints_rates_from_snapshots() {
    let lbd = FakeLbd::start();
    // The fake's clock moves 2 s per snapshot, so the rates do not depend on real timing.
    let out = over_socket(
        &lbd,
        &["stats", "--watch", "--interval", "0.05", "--count", "2"],
    )
    .ok();
    assert_eq!(
        out.stdout.matches("lbd rates over the last 2.0 s").count(),
        2,
        "{}",
        out.stdout
    );
    assert_eq!(
        row(&out.stdout, "web"),
        ["web", "500.0", "750.00", "kB", "10.0", "10"]
    );
    assert_eq!(
        row(&out.stdout, "10.77.0.11"),
        ["10.77.0.11", "300.0", "450.00", "kB", "6.0", "7"]
    );
    assert_eq!(
        row(&out.stdout, "10.77.0.12"),
        ["10.77.0.12", "200.0", "300.00", "kB", "4.0", "3"]
    );
    assert!(out.stdout.contains("tx_forward 500.0"), "{}", out.stdout);
    assert!(
        !out.stdout.contains('\x1b'),
        "no ANSI codes when stdout is not a terminal"
    );
    assert_eq!(lbd.stats_calls(), 3, "one snapshot plus one per refresh");

    let out = over_socket(
        &lbd,
        &[
            "--json",
            "stats",
            "--watch",
            "--interval",
            "0.05",
            "--count",
            "2",
        ],
    )
    .ok();
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(l["interval_s"], 2.0);
        assert_eq!(l["vips"][0]["packets_per_s"], 500.0);
        assert_eq!(l["vips"][0]["bytes_per_s"], 750_000.0);
        assert_eq!(l["vips"][0]["new_conns_per_s"], 10.0);
        assert_eq!(l["vips"][0]["active_conns"], 10);
        assert_eq!(l["vips"][0]["backends"][1]["packets_per_s"], 200.0);
        assert_eq!(l["reasons_per_s"]["drop_no_backend"], 2.0);
    }
}

#[test]
fn shutdown_asks_lbd_to_exit() {
    let lbd = FakeLbd::start();
    let out = over_socket(&lbd, &["shutdown", "--detach"]).ok();
    assert!(out.stdout.contains("detaching"), "{}", out.stdout);
    let out = over_socket(&lbd, &["shutdown", "--json"]).ok();
    assert_eq!(out.json(), json!({"shutting_down": true, "detach": false}));
    let bodies: Vec<Value> = lbd.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies, [json!({"detach": true}), json!({"detach": false})]);
}
