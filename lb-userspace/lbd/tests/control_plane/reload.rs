//! Reloading lbd.toml under load: `SIGHUP` and `lbctl reload` change weights, add and remove
//! a VIP while wrk (keep-alive) and a loop of new connections go through the VIP with no
//! failed request; a bad file is refused with FILE:LINE and changes nothing; what the API
//! added stays; `lbctl vip`/`lbctl backend` say who owns what.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{lab::*, maps};

/// The lab's config with `web`'s weights and an optional extra VIP, as the reloads write it.
fn rewrite(cl: &ControlLab, weights: [u32; 3], extra_vip: bool, broken: bool) {
    let text = std::fs::read_to_string(&cl.config).expect("config");
    // Everything before the first backend of web is the lab's own; the rest is ours.
    let head = text
        .split("\n[[vips.backends]]")
        .next()
        .expect("config head")
        .to_string();
    let mut out = head;
    for (i, w) in weights.iter().enumerate() {
        out.push_str(&format!(
            "\n[[vips.backends]]\naddress = \"10.77.0.{}\"\nweight = {w}\n",
            11 + i
        ));
    }
    if extra_vip {
        out.push_str(
            "\n[[vips]]\nname = \"extra\"\naddress = \"10.77.0.103\"\nport = 8080\n\
             [[vips.backends]]\naddress = \"10.77.0.11\"\n",
        );
    }
    if broken {
        out.push_str(
            "\n[[vips]]\nname = \"bad\"\naddress = \"10.77.0.104\"\nalgorithm = \"random\"\n",
        );
    }
    std::fs::write(&cl.config, out).expect("write config");
}

fn weights(cl: &ControlLab) -> Vec<u64> {
    (11..=13)
        .map(|i| {
            cl.backend_view("web", &format!("10.77.0.{i}"))["weight"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect()
}

fn wait(cl: &ControlLab, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}\n{}", cl.lbd_log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn reload_under_load_drops_nothing_and_refuses_a_bad_file() {
    let cl = ControlLab::new(3);
    let pins = cl.lab.bpffs().expect("bpffs").join("lb1");
    let client = cl.lab.host("client").expect("client");

    // Something the API added, which no reload may remove.
    let (st, v) = cl.api(
        "POST",
        "/v1/vips",
        Some(r#"{"name": "dyn", "address": "10.77.0.105", "port": 81}"#),
    );
    assert_eq!(st, 201, "{v}");

    // Keep-alive load (wrk) and new connections, both through the VIP, bounded in time.
    let wrk = client
        .spawn(
            "wrk",
            [
                "wrk",
                "-t2",
                "-c16",
                "-d12s",
                "--timeout",
                "3s",
                &format!("http://{VIP}/"),
            ],
        )
        .expect("wrk (apt package wrk)");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let fresh = client
        .spawn_thread(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let start = Instant::now();
            while !flag.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(30) {
                match get_once(Duration::from_secs(2)) {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        })
        .expect("new-connection loop");
    std::thread::sleep(Duration::from_millis(1500));

    // 1. SIGHUP: new weights and a new VIP.
    rewrite(&cl, [50, 100, 200], true, false);
    cl.lbd
        .as_ref()
        .expect("lbd")
        .signal(libc::SIGHUP)
        .expect("SIGHUP");
    wait(&cl, "SIGHUP applied the new weights and VIP", || {
        weights(&cl) == [50, 100, 200] && cl.api("GET", "/v1/vips/extra", None).0 == 200
    });
    assert!(maps::vip_exists(
        &pins,
        "10.77.0.103".parse::<IpAddr>().expect("ip"),
        8080,
        6
    ));
    std::thread::sleep(Duration::from_millis(1500));

    // 2. A bad file: refused with FILE:LINE: field: reason, nothing changes.
    rewrite(&cl, [1, 1, 1], false, true);
    let (ok, out) = cl.lbctl(&["reload"]);
    let file = cl.config.display().to_string();
    assert!(!ok, "a bad file is refused: {out}");
    assert!(
        out.contains(&format!("{file}:")) && out.contains("vips[1].algorithm: unknown algorithm"),
        "the refusal names FILE:LINE: field: reason: {out}"
    );
    assert_eq!(
        weights(&cl),
        [50, 100, 200],
        "the refused file changed nothing"
    );
    assert_eq!(cl.api("GET", "/v1/vips/extra", None).0, 200);

    // 3. A dry run shows the difference and changes nothing; the reload applies it.
    rewrite(&cl, [100, 100, 100], false, false);
    let (ok, out) = cl.lbctl(&["reload", "--dry-run"]);
    assert!(ok, "{out}");
    for want in [
        "would change",
        "remove VIP extra",
        "web/10.77.0.11: weight 50 -> 100",
        "web/10.77.0.13: weight 200 -> 100",
    ] {
        assert!(out.contains(want), "dry run shows {want:?}: {out}");
    }
    assert!(
        !out.contains("dyn"),
        "the API's VIP is not the file's to remove: {out}"
    );
    assert_eq!(weights(&cl), [50, 100, 200], "a dry run changes nothing");
    let (ok, out) = cl.lbctl(&["reload"]);
    assert!(ok && out.contains("applied"), "{out}");
    assert_eq!(weights(&cl), [100, 100, 100]);
    assert_eq!(cl.api("GET", "/v1/vips/extra", None).0, 404);
    assert!(!maps::vip_exists(
        &pins,
        "10.77.0.103".parse::<IpAddr>().expect("ip"),
        8080,
        6
    ));
    assert_eq!(
        cl.api("GET", "/v1/vips/dyn", None).0,
        200,
        "the API's VIP stays"
    );

    // Who owns what.
    let (ok, out) = cl.lbctl(&["vip", "list"]);
    assert!(ok && out.contains("SOURCE"), "{out}");
    let source_of = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .map(str::to_string)
    };
    assert_eq!(source_of("web").as_deref(), Some("config"), "{out}");
    assert_eq!(source_of("dyn").as_deref(), Some("api"), "{out}");
    let (ok, out) = cl.lbctl(&["backend", "list", "web"]);
    assert!(
        ok && out.contains("SOURCE") && out.contains("config"),
        "{out}"
    );

    // The load ends by itself; nothing failed.
    let mut wrk = wrk;
    let status = wrk
        .wait_timeout(Duration::from_secs(30))
        .expect("wait for wrk")
        .expect("wrk ended");
    stop.store(true, Ordering::Relaxed);
    let (fresh_ok, fresh_failed) = fresh.join().expect("loop");
    let report = wrk.log();
    eprintln!(
        "wrk through three reloads:\n{report}\nnew connections: {fresh_ok} ok, {} failed",
        fresh_failed.len()
    );
    assert!(status.success(), "wrk failed: {report}");
    let requests: u64 = report
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(requests > 100, "wrk made requests: {report}");
    assert!(
        !report.contains("Socket errors") && !report.contains("Non-2xx"),
        "no request failed across the reloads: {report}\n{}",
        cl.lbd_log()
    );
    assert!(fresh_ok > 20, "new connections were made ({fresh_ok})");
    assert!(
        fresh_failed.is_empty(),
        "new connections failed across the reloads: {:?}",
        &fresh_failed[..fresh_failed.len().min(5)]
    );
    assert!(cl.lbd_log().contains("config reloaded"), "{}", cl.lbd_log());
}
