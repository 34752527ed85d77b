//! The BGP announcer's Prometheus lines (`lbd_bgp_*`).

use std::fmt::Write;

use lb_api::bgp::{Overview, SessionState};

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Every `lbd_bgp_*` metric, one family at a time.
pub fn prometheus(v: &Overview) -> String {
    let mut o = String::new();
    head(
        &mut o,
        "lbd_bgp_session_up",
        "gauge",
        "1 while the BGP session with the peer is established.",
    );
    for s in &v.sessions {
        let _ = writeln!(
            o,
            "lbd_bgp_session_up{{peer=\"{}\",peer_as=\"{}\"}} {}",
            s.peer,
            s.peer_as,
            u8::from(s.state == SessionState::Established)
        );
    }
    head(
        &mut o,
        "lbd_bgp_session_state",
        "gauge",
        "BGP state: 0 down (no speaker), 1 idle, 2 connect, 3 active, 4 opensent, 5 openconfirm, 6 established.",
    );
    for s in &v.sessions {
        let _ = writeln!(
            o,
            "lbd_bgp_session_state{{peer=\"{}\"}} {}",
            s.peer,
            s.state.code()
        );
    }
    head(
        &mut o,
        "lbd_bgp_exported_routes",
        "gauge",
        "Routes exported to the peer.",
    );
    for s in &v.sessions {
        let _ = writeln!(
            o,
            "lbd_bgp_exported_routes{{peer=\"{}\"}} {}",
            s.peer, s.exported
        );
    }
    head(
        &mut o,
        "lbd_bgp_announced",
        "gauge",
        "1 while the VIP address is announced, 0 while withdrawn.",
    );
    for p in &v.prefixes {
        let _ = writeln!(
            o,
            "lbd_bgp_announced{{prefix=\"{}\"}} {}",
            p.prefix,
            u8::from(p.announced)
        );
    }
    head(
        &mut o,
        "lbd_bgp_announcements_total",
        "counter",
        "Times the VIP address was announced since lbd started.",
    );
    for p in &v.prefixes {
        let _ = writeln!(
            o,
            "lbd_bgp_announcements_total{{prefix=\"{}\"}} {}",
            p.prefix, p.announcements
        );
    }
    head(
        &mut o,
        "lbd_bgp_withdrawals_total",
        "counter",
        "Times the VIP address was withdrawn since lbd started.",
    );
    for p in &v.prefixes {
        let _ = writeln!(
            o,
            "lbd_bgp_withdrawals_total{{prefix=\"{}\"}} {}",
            p.prefix, p.withdrawals
        );
    }
    head(
        &mut o,
        "lbd_bgp_speaker_up",
        "gauge",
        "1 while BIRD answers on its control socket.",
    );
    let _ = writeln!(o, "lbd_bgp_speaker_up {}", u8::from(v.speaker.running));
    head(
        &mut o,
        "lbd_bgp_speaker_starts_total",
        "counter",
        "Times lbd started BIRD.",
    );
    let _ = writeln!(o, "lbd_bgp_speaker_starts_total {}", v.speaker.starts);
    o
}
