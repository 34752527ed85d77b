//! The VRRP routers' Prometheus lines (`lbd_vrrp_*`, labelled by family).

use std::fmt::Write;

use lb_api::vrrp::{Overview, State, Status};

/// The Prometheus lines for every instance.
pub fn prometheus(overview: &Overview) -> String {
    let mut samples: Vec<Sample> = Vec::new();
    for s in &overview.instances {
        samples_of(s, &mut samples);
    }
    let mut o = String::new();
    let mut done: Vec<&str> = Vec::new();
    for (i, first) in samples.iter().enumerate() {
        if done.contains(&first.name) {
            continue;
        }
        done.push(first.name);
        let _ = writeln!(
            o,
            "# HELP {n} {h}\n# TYPE {n} {k}",
            n = first.name,
            h = first.help,
            k = first.kind
        );
        for s in samples[i..].iter().filter(|s| s.name == first.name) {
            let _ = writeln!(o, "{}{{{}}} {}", s.name, s.labels, s.value);
        }
    }
    o
}
/// One Prometheus sample before grouping by metric name.
struct Sample {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    labels: String,
    value: u64,
}

/// A router's samples (`lbd_vrrp_*`).
fn samples_of(s: &Status, out: &mut Vec<Sample>) {
    let l = format!(
        "vrid=\"{}\",interface=\"{}\",family=\"{}\"",
        s.vrid,
        s.interface,
        s.family.name()
    );
    let mut metric =
        |name: &'static str, kind: &'static str, help: &'static str, extra: &str, v: u64| {
            out.push(Sample {
                name,
                kind,
                help,
                labels: format!("{l}{extra}"),
                value: v,
            })
        };
    metric(
        "lbd_vrrp_state",
        "gauge",
        "VRRP state: 0 initialize, 1 backup, 2 master, 3 fault.",
        "",
        u64::from(s.state.code()),
    );
    metric(
        "lbd_vrrp_master",
        "gauge",
        "1 while this node is the VRRP master.",
        "",
        u64::from(s.state == State::Master),
    );
    metric(
        "lbd_vrrp_priority",
        "gauge",
        "Configured VRRP priority.",
        "",
        u64::from(s.priority),
    );
    let c = &s.counters;
    for (to, v) in [
        ("master", c.became_master),
        ("backup", c.became_backup),
        ("fault", c.became_fault),
    ] {
        metric(
            "lbd_vrrp_transitions_total",
            "counter",
            "VRRP state changes by new state.",
            &format!(",to=\"{to}\""),
            v,
        );
    }
    metric(
        "lbd_vrrp_address_fault",
        "gauge",
        "1 while the router has no usable primary address on its interface.",
        "",
        u64::from(s.address_fault.is_some()),
    );
    metric(
        "lbd_vrrp_primary_changes_total",
        "counter",
        "Primary address changes that followed the interface's addresses.",
        "",
        c.primary_changes,
    );
    metric(
        "lbd_vrrp_socket_reopens_total",
        "counter",
        "VRRP sockets reopened on a re-created interface of the same name.",
        "",
        c.socket_reopens,
    );
    metric(
        "lbd_vrrp_adverts_sent_total",
        "counter",
        "VRRP adverts sent.",
        "",
        c.adverts_sent,
    );
    metric(
        "lbd_vrrp_adverts_received_total",
        "counter",
        "Valid VRRP adverts received.",
        "",
        c.adverts_received,
    );
    metric(
        "lbd_vrrp_announcements_total",
        "counter",
        "Gratuitous ARPs (IPv4) and unsolicited neighbour advertisements (IPv6) sent.",
        "",
        c.garp_sent + c.na_sent,
    );
    for (reason, v) in &c.rejects {
        metric(
            "lbd_vrrp_rejected_total",
            "counter",
            "VRRP packets dropped, by reason.",
            &format!(",reason=\"{reason}\""),
            *v,
        );
    }
}

#[cfg(test)]
mod tests {
    use lb_api::vrrp::Family;

    use super::*;

    #[test]
    fn one_help_per_metric_and_both_families() {
        let v6 = Status {
            family: Family::Ipv6,
            state: State::Backup,
            ..Status::default()
        };
        let mut v4 = Status {
            address_fault: Some("no IPv4 address".into()),
            ..Status::default()
        };
        v4.counters.primary_changes = 2;
        let m = prometheus(&Overview {
            instances: vec![v4, v6],
        });
        assert_eq!(m.matches("# TYPE lbd_vrrp_state gauge").count(), 1, "{m}");
        assert!(m.contains("family=\"ipv6\"} 1"), "{m}");
        assert!(m.contains("family=\"ipv4\"} 0"), "{m}");
        assert!(m.contains("lbd_vrrp_address_fault{"), "{m}");
        assert!(m.contains("lbd_vrrp_primary_changes_total{"), "{m}");
        assert!(m.contains("lbd_vrrp_socket_reopens_total{"), "{m}");
    }
}
