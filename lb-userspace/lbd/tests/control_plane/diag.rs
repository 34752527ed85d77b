//! Diagnostics with the real lbd and lbctl: `lbctl capture` while the client talks to the
//! VIP (the pcapng read by our reader and by tshark, each packet's verdict naming the backend
//! that answered; filters, sampling and two captures at once), and `lbctl trace` naming the
//! backend each connection then reaches.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use lb_dataplane::pcapng::{self, Direction};

use crate::lab::*;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);

/// From the client: a connection from `CLIENT:port` (0: any), one request; (backend name,
/// source port).
fn request_from(cl: &ControlLab, port: u16) -> (String, u16) {
    cl.lab
        .host("client")
        .expect("client")
        .in_netns(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let sock = tokio::net::TcpSocket::new_v4().expect("socket");
                sock.bind(SocketAddr::new(IpAddr::V4(CLIENT), port))
                    .expect("bind the client port");
                let s = tokio::time::timeout(
                    Duration::from_secs(3),
                    sock.connect(SocketAddr::new(IpAddr::V4(VIP), 80)),
                )
                .await
                .expect("connect in time")
                .expect("connect");
                let local = s.local_addr().expect("local address").port();
                let mut s = s.into_std().expect("std stream");
                s.set_nonblocking(false).expect("blocking");
                s.set_read_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
                (request(&mut s).expect("an answer through the VIP"), local)
            })
        })
        .expect("client namespace")
}

fn backend_addr(name: &str) -> IpAddr {
    let n: u8 = name
        .strip_prefix("be")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a backend name: {name}"));
    IpAddr::V4(Ipv4Addr::new(10, 77, 0, 10 + n))
}

fn captures_running(cl: &ControlLab) -> u64 {
    let (_, m) = cl.api("GET", "/metrics", None);
    m.as_str()
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("lb_captures_running "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

fn wait_running(cl: &ControlLab, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while captures_running(cl) != n {
        assert!(
            Instant::now() < deadline,
            "lb_captures_running never reached {n}\n{}",
            cl.lbd_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) for a capture process and returns its stdout.
fn finish(cl: &ControlLab, child: Child, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut child = child;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what}: lbctl capture did not end\n{}", cl.lbd_log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn spawn_capture(cl: &ControlLab, args: &[&str]) -> Child {
    cl.lbctl_command(&[&["capture"], args].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lbctl capture")
}

/// The TCP source port and SYN flag of an Ethernet/IPv4 frame.
fn tcp_src(frame: &[u8]) -> Option<(u16, bool)> {
    let ip = frame.get(14..)?;
    let ihl = (ip.first()? & 0x0f) as usize * 4;
    let tcp = ip.get(ihl..ihl + 14)?;
    Some((u16::from_be_bytes([tcp[0], tcp[1]]), tcp[13] & 0x12 == 0x02))
}

/// `frame.comment` and the TCP source port of every SYN, as tshark reads the file.
fn tshark_syns(file: &Path) -> BTreeMap<u16, String> {
    let out = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(file)
        .args([
            "-Y",
            "tcp.flags.syn == 1 && tcp.flags.ack == 0",
            "-T",
            "fields",
            "-e",
            "tcp.srcport",
            "-e",
            "frame.comment",
        ])
        .output()
        .expect("tshark (Debian package `tshark`, installed by `cargo xtask setup`)");
    assert!(
        out.status.success(),
        "tshark cannot read {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (port, comment) = l.split_once('\t')?;
            Some((port.trim().parse().ok()?, comment.to_string()))
        })
        .collect()
}

#[test]
fn capture_records_each_verdict_with_the_backend_that_answered() {
    let cl = ControlLab::new(3);
    let file = cl.lab.dir().join("web.pcapng");
    let file_s = file.to_str().expect("utf-8 path").to_string();
    let cap = spawn_capture(
        &cl,
        &["--vip", "web", "--duration", "4", "--output", "-w", &file_s],
    );
    wait_running(&cl, 1);
    let answered: Vec<(String, u16)> = (0..12).map(|_| request_from(&cl, 0)).collect();
    let lines = finish(&cl, cap, "capture of web");
    wait_running(&cl, 0);

    let c = pcapng::parse(&std::fs::read(&file).expect("the pcapng")).expect("our reader");
    assert_eq!(c.interfaces[0].name.as_deref(), Some("eth0"));
    let mut by_port = BTreeMap::new();
    for p in &c.packets {
        let comment = p.comments.first().expect("every packet has its verdict");
        assert!(comment.contains("vip=web"), "{comment}");
        match p.direction {
            Direction::Inbound => {
                assert!(
                    comment.starts_with("lb: TX tx_forward point=input"),
                    "{comment}"
                );
                if let Some((port, true)) = tcp_src(&p.data) {
                    by_port.insert(port, comment.clone());
                }
            }
            // The frame as sent: to the backend's MAC, the same IP packet (dsr-l2).
            Direction::Outbound => assert!(comment.contains("point=output"), "{comment}"),
            Direction::Unknown => panic!("no direction: {comment}"),
        }
    }
    assert_eq!(
        c.packets
            .iter()
            .filter(|p| p.direction == Direction::Outbound)
            .count(),
        c.packets
            .iter()
            .filter(|p| p.direction == Direction::Inbound)
            .count(),
        "each forwarded packet recorded as it came and as it left"
    );
    let from_tshark = tshark_syns(&file);
    for (name, port) in &answered {
        let want = format!("backend={}", backend_addr(name));
        let ours = by_port
            .get(port)
            .unwrap_or_else(|| panic!("no SYN from port {port} in the capture"));
        assert!(
            ours.contains(&want),
            "port {port} answered by {name}: {ours}"
        );
        let theirs = from_tshark
            .get(port)
            .unwrap_or_else(|| panic!("tshark sees no SYN from port {port}"));
        assert!(theirs.contains(&want), "tshark: {theirs}");
    }
    // The live view printed one line per packet.
    assert_eq!(lines.lines().count(), c.packets.len(), "{lines}");
    assert!(lines.contains("tx_forward"), "{lines}");
}

#[test]
fn capture_filters_hold_and_captures_share_the_ring() {
    let cl = ControlLab::new(2);
    // Nothing from a prefix that sends nothing; nothing dropped in healthy traffic.
    let none = spawn_capture(
        &cl,
        &["--json", "--client", "192.0.2.0/24", "--duration", "2"],
    );
    let drops = spawn_capture(&cl, &["--json", "--drops", "--duration", "2"]);
    wait_running(&cl, 2);
    for _ in 0..5 {
        request_from(&cl, 0);
    }
    for (child, what) in [(none, "other client"), (drops, "drops")] {
        let out = finish(&cl, child, what);
        let events: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
            .collect();
        assert_eq!(
            events.first().map(|e| e["event"].clone()),
            Some("started".into())
        );
        let end = events.last().expect("an end");
        assert_eq!(end["event"], "end", "{out}");
        assert_eq!(end["packets"], 0, "{what}: {out}");
        assert_eq!(end["stopped_by"], "duration");
    }

    // Two at once: every client packet, and one web packet in two.
    let all = spawn_capture(
        &cl,
        &["--json", "--client", "10.77.0.10", "--duration", "4"],
    );
    wait_running(&cl, 1);
    let half = spawn_capture(
        &cl,
        &["--json", "--vip", "web", "--sample", "2", "--duration", "4"],
    );
    wait_running(&cl, 2);
    for _ in 0..8 {
        request_from(&cl, 0);
    }
    let packets = |out: &str| -> Vec<serde_json::Value> {
        out.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == "packet")
            .collect()
    };
    let all = packets(&finish(&cl, all, "every client packet"));
    let half = packets(&finish(&cl, half, "sampled web packets"));
    let web: Vec<&serde_json::Value> = all.iter().filter(|p| p["vip"] == "web").collect();
    assert!(
        web.len() >= 8 * 4,
        "at least 4 packets per request: {}",
        web.len()
    );
    assert_eq!(
        half.len(),
        web.len().div_ceil(2),
        "one in two of {}",
        web.len()
    );
    // The sampled ones are the 1st, 3rd, ... of the same packets, byte for byte.
    for (i, p) in half.iter().enumerate() {
        assert_eq!(p["data_hex"], web[i * 2]["data_hex"]);
        assert_eq!(p["ts_unix_ns"], web[i * 2]["ts_unix_ns"]);
    }
    wait_running(&cl, 0);

    // A capture started now sees nothing of what came before it.
    let began = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let later = spawn_capture(
        &cl,
        &["--json", "--vip", "web", "-c", "3", "--duration", "10"],
    );
    wait_running(&cl, 1);
    request_from(&cl, 0);
    let later = packets(&finish(&cl, later, "a later capture"));
    assert_eq!(later.len(), 3);
    assert!(
        later
            .iter()
            .all(|p| p["ts_unix_ns"].as_u64().is_some_and(|t| t >= began)),
        "{later:?}"
    );

    // Bad requests are refused with the API's errors, and nothing starts.
    for (args, says) in [
        (&["--vip", "nope"][..], "no VIP named nope"),
        (&["--client", "10.0.0.0/40"], "client:"),
        (&["--reason", "drop_everything"], "reasons:"),
        (&["--snap-len", "5000"], "snap_len:"),
        (&["--backend", "10.77.0.99"], "10.77.0.99"),
    ] {
        let out = cl.lbctl_output(&[&["capture"], args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
    assert_eq!(captures_running(&cl), 0);
}

#[test]
fn trace_names_the_backend_each_connection_then_reaches() {
    let cl = ControlLab::new(3);
    let mut seen = BTreeMap::new();
    for i in 0..30u16 {
        let port = 41000 + i;
        let client = format!("{CLIENT}:{port}");
        let out = cl.lbctl_output(&["--json", "trace", "--vip", "web", "--client", &client]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t: serde_json::Value = serde_json::from_slice(&out.stdout).expect("trace JSON");
        assert_eq!(t["decision"]["by"], "algorithm", "{t}");
        let predicted = t["decision"]["backend"]["address"].clone();
        let (name, local) = request_from(&cl, port);
        assert_eq!(local, port);
        assert_eq!(
            predicted,
            serde_json::json!(backend_addr(&name)),
            "{client}: trace said {predicted}, {name} answered\n{t:#}"
        );
        *seen.entry(name).or_insert(0) += 1;
        // The connection is closed by now: its entry is there and points to the same
        // backend; a later packet of it would follow the entry.
        let out = cl.lbctl_output(&[
            "--json",
            "trace",
            "--vip",
            "web",
            "--client",
            &client,
            "--established",
        ]);
        let t: serde_json::Value = serde_json::from_slice(&out.stdout).expect("trace JSON");
        assert_eq!(t["entry"]["backend"]["address"], predicted, "{t:#}");
    }
    assert!(seen.len() >= 2, "30 connections reached only {seen:?}");
    // The human view names the backend and the steps.
    let out = cl.lbctl_output(&["trace", "--vip", "web", "--client", "10.77.0.10:41000"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("connection table: an entry points to"),
        "{text}"
    );
    assert!(text.contains("maglev: hash"), "{text}");
    // Errors: no such VIP, another family, a bad address.
    for (args, says) in [
        (
            &["--vip", "nope", "--client", "10.77.0.10:1"][..],
            "no VIP named nope",
        ),
        (
            &["--vip", "web", "--client", "[fd00::1]:1"],
            "address family",
        ),
    ] {
        let out = cl.lbctl_output(&[&["trace"], args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
}
