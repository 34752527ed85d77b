//! Health checks against real TCP and HTTP servers started here (loopback, free ports).

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, TcpListener},
    time::{Duration, Instant},
};

use lb_config::{CheckKind, HealthConfig};

use lbd::health::{Health, Machine, probe, spawn_checker};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// An HTTP server answering every request with `status`; `None` accepts and never answers.
fn http_server(status: Option<u16>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                match status {
                    Some(code) => {
                        let _ = s.write_all(
                            format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                        );
                    }
                    None => std::thread::sleep(Duration::from_secs(5)),
                }
            });
        }
    });
    port
}

fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn http(expect: u16) -> CheckKind {
    CheckKind::Http {
        path: "/healthz".into(),
        expect_status: expect,
    }
}

#[tokio::test]
async fn probes_tell_up_from_down() {
    let ok = http_server(Some(200));
    let unready = http_server(Some(503));
    let silent = http_server(None);
    let closed = closed_port();
    let t = Duration::from_millis(300);
    assert!(probe(LO, ok, &CheckKind::Tcp, t).await.ok);
    assert!(probe(LO, ok, &http(200), t).await.ok);
    let r = probe(LO, unready, &http(200), t).await;
    assert!(
        !r.ok && r.error.as_deref().is_some_and(|e| e.contains("HTTP 503")),
        "{r:?}"
    );
    assert!(
        probe(LO, unready, &http(503), t).await.ok,
        "the expected status is configurable"
    );
    let r = probe(LO, silent, &http(200), t).await;
    assert!(
        !r.ok && r.error.as_deref().is_some_and(|e| e.contains("timed out")),
        "{r:?}"
    );
    assert!(
        probe(LO, silent, &CheckKind::Tcp, t).await.ok,
        "TCP connect alone succeeds"
    );
    let r = probe(LO, closed, &CheckKind::Tcp, t).await;
    assert!(
        !r.ok && r.error.as_deref().is_some_and(|e| e.contains("connect")),
        "{r:?}"
    );
}

/// A checker feeding the state machine: healthy after `rise` good probes, unhealthy after
/// `fall` bad ones, healthy again after `rise`.
#[tokio::test]
async fn checker_drives_rise_and_fall() {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let cfg = HealthConfig {
        kind: CheckKind::Tcp,
        port,
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(50),
        rise: 3,
        fall: 2,
        ..HealthConfig::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let h = spawn_checker("web".into(), LO, port, cfg, tx);
    let mut m = Machine::new(3, 2);
    let mut transitions = Vec::new();
    let probes_until =
        |m: &mut Machine, transitions: &mut Vec<(Health, usize)>, n: &mut usize, ev_ok: bool| {
            *n += 1;
            if let Some(s) = m.observe(ev_ok, Instant::now()) {
                transitions.push((s, *n));
            }
        };
    let mut n = 0;
    while transitions.is_empty() {
        let ev = rx.recv().await.expect("probe");
        probes_until(&mut m, &mut transitions, &mut n, ev.result.ok);
    }
    assert_eq!(
        transitions,
        vec![(Health::Healthy, 3)],
        "healthy after exactly rise=3 successes"
    );
    drop(l);
    let mut n = 0;
    while transitions.len() < 2 {
        let ev = rx.recv().await.expect("probe");
        probes_until(&mut m, &mut transitions, &mut n, ev.result.ok);
    }
    assert_eq!(
        transitions[1],
        (Health::Unhealthy, 2),
        "unhealthy after exactly fall=2 failures"
    );
    let _l = TcpListener::bind(("127.0.0.1", port)).expect("rebind the same port");
    let mut n = 0;
    while transitions.len() < 3 {
        let ev = rx.recv().await.expect("probe");
        probes_until(&mut m, &mut transitions, &mut n, ev.result.ok);
    }
    // It fell within FLAP_WINDOW of becoming healthy: a flap, so rise=3 is doubled.
    assert_eq!(
        transitions[2],
        (Health::Healthy, 6),
        "healthy again after rise=3 doubled by the flap hysteresis"
    );
    h.abort();
}
