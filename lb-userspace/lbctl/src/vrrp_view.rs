//! `lbctl vrrp`: the routers as text.

use lb_api::vrrp::{Family, Overview, Status};

/// One block per instance.
pub fn render(overview: &Overview) -> String {
    overview
        .instances
        .iter()
        .map(render_status)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The human view `lbctl vrrp` prints for one router.
pub fn render_status(s: &Status) -> String {
    let on = |b: bool| if b { "on" } else { "off" };
    let c = &s.counters;
    let rejected: Vec<String> = c
        .rejects
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let rows = [
        (
            "state",
            format!(
                "{} (priority {}, preempt {})",
                s.state.name(),
                s.priority,
                on(s.preempt)
            ),
        ),
        (
            "router",
            format!(
                "{}, vrid {} on {}{}, primary {}{}",
                match s.family {
                    Family::Ipv4 => "IPv4",
                    Family::Ipv6 => "IPv6",
                },
                s.vrid,
                s.interface,
                match c.socket_reopens {
                    0 => String::new(),
                    1 => " (re-created once)".to_string(),
                    n => format!(" (re-created {n} times)"),
                },
                s.primary,
                match (s.primary_configured, c.primary_changes) {
                    (true, _) => " (configured)".to_string(),
                    (false, 0) => String::new(),
                    (false, 1) => " (1 change)".to_string(),
                    (false, n) => format!(" ({n} changes)"),
                }
            ),
        ),
        (
            "master",
            s.master
                .map(|m| {
                    if m == s.primary {
                        format!("{m} (this node)")
                    } else {
                        m.to_string()
                    }
                })
                .unwrap_or_else(|| "unknown".into()),
        ),
        ("addresses", s.addresses.join(", ")),
        (
            "timers",
            format!(
                "advert {} ms (master's {} ms), master-down {} ms",
                u64::from(s.interval_cs) * 10,
                u64::from(s.master_interval_cs) * 10,
                s.master_down_ms
            ),
        ),
        (
            "fault",
            match (s.fault, &s.address_fault) {
                (false, None) => "no".into(),
                (true, None) => "yes (tracking)".into(),
                (false, Some(why)) => format!("yes: {why}"),
                (true, Some(why)) => format!("yes: {why}; tracking too"),
            },
        ),
        (
            "adverts",
            format!(
                "sent {}, received {}, {} {}",
                c.adverts_sent,
                c.adverts_received,
                match s.family {
                    Family::Ipv4 => "gratuitous ARP",
                    Family::Ipv6 => "neighbour adverts",
                },
                c.garp_sent + c.na_sent
            ),
        ),
        (
            "transitions",
            format!(
                "{} (to master {}, to backup {}, to fault {})",
                c.transitions, c.became_master, c.became_backup, c.became_fault
            ),
        ),
        (
            "rejected",
            if rejected.is_empty() {
                "0".into()
            } else {
                format!("{} ({})", c.rejected(), rejected.join(", "))
            },
        ),
    ];
    rows.iter().map(|(k, v)| format!("{k:<12} {v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use lb_api::vrrp::State;

    use super::*;

    #[test]
    fn state_and_rejects() {
        let mut s = Status {
            state: State::Master,
            priority: 100,
            ..Status::default()
        };
        s.counters.rejects.insert("ttl".into(), 1);
        let text = render_status(&s);
        assert!(text.contains("master (priority 100"), "{text}");
        assert!(text.contains("rejected     1 (ttl 1)"), "{text}");
    }

    #[test]
    fn address_fault_and_primary_changes_are_shown() {
        let mut s = Status {
            state: State::Fault,
            address_fault: Some("no IPv4 address on eth0 besides the VIPs".into()),
            ..Status::default()
        };
        s.counters.primary_changes = 2;
        s.counters.socket_reopens = 1;
        let text = render_status(&s);
        assert!(text.contains("(re-created once)"), "{text}");
        assert!(
            text.contains("fault        yes: no IPv4 address on eth0"),
            "{text}"
        );
        assert!(text.contains("(2 changes)"), "{text}");
        s.primary_configured = true;
        s.address_fault = None;
        s.fault = true;
        let text = render_status(&s);
        assert!(text.contains("(configured)"), "{text}");
        assert!(text.contains("fault        yes (tracking)"), "{text}");
    }

    #[test]
    fn both_families() {
        let v6 = Status {
            family: Family::Ipv6,
            ..Status::default()
        };
        let text = render(&Overview {
            instances: vec![Status::default(), v6],
        });
        assert!(text.contains("IPv6, vrid 0"), "{text}");
        assert!(text.contains("IPv4, vrid 0"), "{text}");
    }
}
