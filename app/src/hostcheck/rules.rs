//! The direct-server-return prerequisites, judged from the host's [`Facts`]: each check gives
//! a finding with what was found and, when it is not right, the fix.

use std::net::IpAddr;

use lb_api::selfcheck::{Check, Finding, Status};

use super::facts::{Facts, Iface};
use super::{Mode, Target};

fn finding(check: Check, status: Status, detail: String, fix: Option<String>) -> Finding {
    Finding {
        check,
        status,
        detail,
        fix,
    }
}

fn ok(check: Check, detail: String) -> Finding {
    finding(check, Status::Ok, detail, None)
}

/// The encapsulation's bytes: an outer IPv4 or IPv6 header.
fn overhead(vip: IpAddr) -> u32 {
    if vip.is_ipv4() { 20 } else { 40 }
}

/// The largest packet clients send when the balancer does not limit it: Ethernet's.
const CLIENT_MTU: u32 = 1500;

fn add_vip_fix(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(v) => format!("ip addr add {v}/32 dev lo"),
        IpAddr::V6(v) => format!("ip -6 addr add {v}/128 dev lo nodad"),
    }
}

fn sysctl_fix(rx: &str, key: &str, value: i64) -> String {
    format!("sysctl -w net.ipv4.conf.all.{key}={value} net.ipv4.conf.{rx}.{key}={value}")
}

/// Every finding for `t` on this host.
pub fn evaluate(t: &Target, f: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    let rx = match f.iface_with(t.address) {
        Some(i) => {
            out.push(ok(
                Check::Address,
                format!(
                    "{} is on {}, where the balancer's packets arrive",
                    t.address, i.name
                ),
            ));
            Some(i)
        }
        None => {
            out.push(finding(
                Check::Address,
                Status::Fail,
                format!(
                    "{} (the address this backend registers) is on no interface of this host: \
                     the balancer would send its flows elsewhere",
                    t.address
                ),
                Some(
                    "register the address of this host's interface towards the balancer \
                      (registration.address)"
                        .into(),
                ),
            ));
            None
        }
    };
    out.push(vip_local(t, f, rx));
    if let Some(rx) = rx {
        if t.mode == Mode::DsrL2 {
            out.extend(arp(t, f, rx));
        }
        out.extend(rp_filter(t, f, rx));
        if t.mode == Mode::Ipip {
            out.push(decap(t, f, rx));
            out.push(mtu(t, rx));
        }
    }
    out
}

fn vip_local(t: &Target, f: &Facts, rx: Option<&Iface>) -> Finding {
    let Some(holder) = f.iface_with(t.vip) else {
        return finding(
            Check::VipLocal,
            Status::Fail,
            format!(
                "VIP {} is on no interface of this host: the kernel drops the packets the \
                 balancer sends it",
                t.vip
            ),
            Some(add_vip_fix(t.vip)),
        );
    };
    let facing = rx.is_some_and(|r| r.index == holder.index);
    if t.mode == Mode::DsrL2
        && t.vip.is_ipv4()
        && facing
        && f.effective(&holder.name, "arp_ignore").unwrap_or(0) < 8
    {
        return finding(
            Check::VipLocal,
            Status::Fail,
            format!(
                "VIP {} is on {}, the interface facing the balancer: the host answers ARP for \
                 it there and takes the VIP's traffic away from the balancer",
                t.vip, holder.name
            ),
            Some(format!(
                "ip addr del {}/32 dev {}; {}",
                t.vip,
                holder.name,
                add_vip_fix(t.vip)
            )),
        );
    }
    ok(
        Check::VipLocal,
        format!("VIP {} is on {}", t.vip, holder.name),
    )
}

fn arp(t: &Target, f: &Facts, rx: &Iface) -> Vec<Finding> {
    if t.vip.is_ipv6() {
        return vec![ok(
            Check::ArpIgnore,
            "IPv6: neighbour solicitations are answered only for addresses of the receiving \
             interface, so the VIP on lo is not announced"
                .into(),
        )];
    }
    let unreadable = |key: &str| {
        finding(
            match key {
                "arp_ignore" => Check::ArpIgnore,
                _ => Check::ArpAnnounce,
            },
            Status::Warn,
            format!("cannot read net.ipv4.conf.{}.{key}", rx.name),
            None,
        )
    };
    let mut out = Vec::new();
    out.push(match f.effective(&rx.name, "arp_ignore") {
        None => unreadable("arp_ignore"),
        Some(0) => finding(
            Check::ArpIgnore,
            Status::Fail,
            format!(
                "arp_ignore is 0 on {}: the host answers ARP for the VIP (an address of lo) and \
                 takes its traffic away from the balancer",
                rx.name
            ),
            Some(sysctl_fix(&rx.name, "arp_ignore", 1)),
        ),
        Some(v) => ok(
            Check::ArpIgnore,
            format!(
                "arp_ignore {v} on {}: ARP for the VIP is not answered there",
                rx.name
            ),
        ),
    });
    out.push(match f.effective(&rx.name, "arp_announce") {
        None => unreadable("arp_announce"),
        Some(0) => finding(
            Check::ArpAnnounce,
            Status::Fail,
            format!(
                "arp_announce is 0 on {}: the host may send the VIP as the source of its ARP \
                 requests, and its neighbours then send the VIP's traffic here",
                rx.name
            ),
            Some(sysctl_fix(&rx.name, "arp_announce", 2)),
        ),
        Some(1) => finding(
            Check::ArpAnnounce,
            Status::Warn,
            format!(
                "arp_announce is 1 on {}: the VIP is avoided as ARP source only when another \
                 address of the subnet exists",
                rx.name
            ),
            Some(sysctl_fix(&rx.name, "arp_announce", 2)),
        ),
        Some(v) => ok(
            Check::ArpAnnounce,
            format!(
                "arp_announce {v} on {}: ARP requests use the interface's own address",
                rx.name
            ),
        ),
    });
    out
}

/// Where decapsulated packets enter the stack: the receiving interface (XDP decap) and the
/// kernel's tunnel device when there is one.
fn decap_ifaces<'a>(t: &Target, f: &'a Facts, rx: &'a Iface) -> Vec<&'a Iface> {
    let mut out = vec![rx];
    if t.mode == Mode::Ipip
        && let Some(tun) = f.iface(tunnel_device(t.vip))
        && tun.up
    {
        out.push(tun);
    }
    out
}

fn tunnel_device(vip: IpAddr) -> &'static str {
    if vip.is_ipv4() { "tunl0" } else { "ip6tnl0" }
}

fn rp_filter(t: &Target, f: &Facts, rx: &Iface) -> Vec<Finding> {
    if t.vip.is_ipv6() {
        return vec![ok(
            Check::RpFilter,
            "IPv6 has no rp_filter: reverse-path filtering does not apply".into(),
        )];
    }
    decap_ifaces(t, f, rx)
        .into_iter()
        .map(|i| match (f.effective(&i.name, "rp_filter"), t.mode) {
            (None, _) => finding(
                Check::RpFilter,
                Status::Warn,
                format!("cannot read net.ipv4.conf.{}.rp_filter", i.name),
                None,
            ),
            (Some(1), Mode::Ipip) => finding(
                Check::RpFilter,
                Status::Fail,
                format!(
                    "rp_filter is 1 (strict) on {}: decapsulated packets keep the client's \
                     source, and strict reverse-path filtering drops every one whose client is \
                     not routed back through {} (all of them on a tunnel device)",
                    i.name, i.name
                ),
                Some(sysctl_fix(&i.name, "rp_filter", 2)),
            ),
            (Some(1), Mode::DsrL2) => finding(
                Check::RpFilter,
                Status::Warn,
                format!(
                    "rp_filter is 1 (strict) on {}: packets from clients routed back through \
                     another interface are dropped",
                    i.name
                ),
                Some(sysctl_fix(&i.name, "rp_filter", 2)),
            ),
            (Some(v), _) => ok(
                Check::RpFilter,
                format!(
                    "rp_filter {v} on {} ({})",
                    i.name,
                    if v == 0 { "off" } else { "loose" }
                ),
            ),
        })
        .collect()
}

fn decap(t: &Target, f: &Facts, rx: &Iface) -> Finding {
    let attach = format!(
        "lbctl xdp attach --program decap --iface {} --pin-dir /sys/fs/bpf/lb-decap \
         --decap-address {}",
        rx.name, t.address
    );
    let Some(x) = &rx.xdp else {
        if let Some(tun) = f.iface(tunnel_device(t.vip))
            && tun.up
        {
            return ok(
                Check::Decap,
                format!("the kernel's {} decapsulates IPIP", tun.name),
            );
        }
        return finding(
            Check::Decap,
            Status::Fail,
            format!(
                "nothing removes the IPIP header on {}: no XDP program is attached and there is \
                 no {} device, so the packets the balancer encapsulates to {} are dropped",
                rx.name,
                tunnel_device(t.vip),
                t.address
            ),
            Some(attach),
        );
    };
    match &x.name {
        Ok(name) if name == "xdp_decap" => match &x.decap_addresses {
            Ok(addrs) if addrs.contains(&t.address) => ok(
                Check::Decap,
                format!(
                    "xdp_decap (program {}, {} mode) on {} takes IPIP addressed to {}",
                    x.id, x.mode, rx.name, t.address
                ),
            ),
            Ok(addrs) => finding(
                Check::Decap,
                Status::Fail,
                format!(
                    "xdp_decap on {} does not take IPIP addressed to {} (it takes {})",
                    rx.name,
                    t.address,
                    if addrs.is_empty() {
                        "nothing".to_string()
                    } else {
                        addrs
                            .iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
                Some(attach),
            ),
            Err(e) => finding(
                Check::Decap,
                Status::Warn,
                format!(
                    "xdp_decap (program {}) is on {}; the addresses it takes are {e}",
                    x.id, rx.name
                ),
                None,
            ),
        },
        Ok(name) => finding(
            Check::Decap,
            Status::Warn,
            format!(
                "XDP program {name:?} (id {}) is on {}: make sure it removes the IPIP header of \
                 packets addressed to {}",
                x.id, rx.name, t.address
            ),
            None,
        ),
        Err(e) => finding(
            Check::Decap,
            Status::Warn,
            format!(
                "an XDP program (id {}, {} mode) is on {}; its name is {e}",
                x.id, x.mode, rx.name
            ),
            None,
        ),
    }
}

fn mtu(t: &Target, rx: &Iface) -> Finding {
    let (need, why) = match t.backend_mtu {
        Some(m) => (
            m,
            format!("the balancer sends packets of up to {m} bytes (its backend_mtu)"),
        ),
        None => {
            let n = CLIENT_MTU + overhead(t.vip);
            (
                n,
                format!(
                    "a full-size client packet is {n} bytes once encapsulated (the balancers \
                     set no backend_mtu)"
                ),
            )
        }
    };
    if rx.mtu >= need {
        return ok(
            Check::Mtu,
            format!("MTU {} on {} carries them: {why}", rx.mtu, rx.name),
        );
    }
    finding(
        Check::Mtu,
        Status::Fail,
        format!(
            "MTU {} on {} is too small: {why}, and larger ones are dropped",
            rx.mtu, rx.name
        ),
        Some(format!(
            "ip link set dev {} mtu {need} (and the path from the balancer must carry it), or \
             set [dataplane] backend_mtu = {} on the balancers so they answer ICMP \"too big\"",
            rx.name, rx.mtu
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::super::facts::{Facts, Iface, Xdp};
    use super::*;

    fn iface(index: u32, name: &str, addrs: &[&str], mtu: u32) -> Iface {
        Iface {
            index,
            name: name.into(),
            mtu,
            up: true,
            loopback: name == "lo",
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            xdp: None,
        }
    }

    fn host() -> Facts {
        let mut f = Facts {
            ifaces: vec![
                iface(1, "lo", &["127.0.0.1", "10.77.0.100"], 65536),
                iface(2, "eth0", &["10.77.0.11"], 1500),
            ],
            ..Default::default()
        };
        for (scope, key, v) in [
            ("all", "arp_ignore", 0),
            ("eth0", "arp_ignore", 1),
            ("all", "arp_announce", 2),
            ("eth0", "arp_announce", 0),
            ("all", "rp_filter", 0),
            ("eth0", "rp_filter", 2),
        ] {
            f.sysctls.insert((scope.into(), key.into()), v);
        }
        f
    }

    fn target(mode: Mode) -> Target {
        Target {
            vip: "10.77.0.100".parse().unwrap(),
            port: 80,
            mode,
            backend_mtu: None,
            address: "10.77.0.11".parse().unwrap(),
        }
    }

    fn status(findings: &[Finding], check: Check) -> Vec<Status> {
        findings
            .iter()
            .filter(|f| f.check == check)
            .map(|f| f.status)
            .collect()
    }

    #[test]
    fn a_good_dsr_host_passes_every_check() {
        let out = evaluate(&target(Mode::DsrL2), &host());
        assert!(out.iter().all(|f| f.status == Status::Ok), "{out:#?}");
        let checks: Vec<Check> = out.iter().map(|f| f.check).collect();
        assert_eq!(
            checks,
            vec![
                Check::Address,
                Check::VipLocal,
                Check::ArpIgnore,
                Check::ArpAnnounce,
                Check::RpFilter
            ]
        );
    }

    #[test]
    fn each_broken_prerequisite_fails_with_its_fix() {
        let t = target(Mode::DsrL2);
        let mut f = host();
        f.ifaces[0].addrs.retain(|a| a.to_string() != "10.77.0.100");
        let out = evaluate(&t, &f);
        assert_eq!(status(&out, Check::VipLocal), vec![Status::Fail]);
        let fix = out.iter().find(|x| x.check == Check::VipLocal).unwrap();
        assert_eq!(
            fix.fix.as_deref(),
            Some("ip addr add 10.77.0.100/32 dev lo")
        );

        let mut f = host();
        f.sysctls.insert(("eth0".into(), "arp_ignore".into()), 0);
        assert_eq!(
            status(&evaluate(&t, &f), Check::ArpIgnore),
            vec![Status::Fail]
        );
        // The larger of `all` and the interface's own value applies.
        f.sysctls.insert(("all".into(), "arp_ignore".into()), 1);
        assert_eq!(
            status(&evaluate(&t, &f), Check::ArpIgnore),
            vec![Status::Ok]
        );

        let mut f = host();
        f.ifaces[1].addrs.push("10.77.0.100".parse().unwrap());
        f.ifaces[0].addrs.retain(|a| a.to_string() != "10.77.0.100");
        assert_eq!(
            status(&evaluate(&t, &f), Check::VipLocal),
            vec![Status::Fail],
            "the VIP on the interface facing the balancer answers ARP"
        );

        // The kernel applies the larger of `all` and the interface's rp_filter: `all = 1`
        // beside the interface's 2 (loose) is loose; strict needs the interface at 1.
        let mut f = host();
        f.sysctls.insert(("all".into(), "rp_filter".into()), 1);
        assert_eq!(status(&evaluate(&t, &f), Check::RpFilter), vec![Status::Ok]);
        f.sysctls.insert(("eth0".into(), "rp_filter".into()), 1);
        assert_eq!(
            status(&evaluate(&t, &f), Check::RpFilter),
            vec![Status::Warn]
        );
        let ipip = target(Mode::Ipip);
        assert_eq!(
            status(&evaluate(&ipip, &f), Check::RpFilter),
            vec![Status::Fail]
        );
    }

    #[test]
    fn ipip_needs_a_decap_for_our_address_and_room_for_the_header() {
        let t = target(Mode::Ipip);
        let mut f = host();
        let out = evaluate(&t, &f);
        assert_eq!(status(&out, Check::Decap), vec![Status::Fail]);
        assert_eq!(status(&out, Check::Mtu), vec![Status::Fail]);
        assert!(
            status(&out, Check::ArpIgnore).is_empty(),
            "ARP does not matter for ipip"
        );
        f.ifaces[1].mtu = 1520;
        f.ifaces[1].xdp = Some(Xdp {
            id: 7,
            mode: "driver",
            name: Ok("xdp_decap".into()),
            decap_addresses: Ok(vec!["10.77.0.11".parse().unwrap()]),
        });
        let out = evaluate(&t, &f);
        assert!(out.iter().all(|x| x.status == Status::Ok), "{out:#?}");
        // A decap for another address, an unknown program, an unreadable one.
        if let Some(x) = &mut f.ifaces[1].xdp {
            x.decap_addresses = Ok(vec!["10.77.0.12".parse().unwrap()]);
        }
        assert_eq!(status(&evaluate(&t, &f), Check::Decap), vec![Status::Fail]);
        if let Some(x) = &mut f.ifaces[1].xdp {
            x.name = Err("unreadable without CAP_SYS_ADMIN or CAP_BPF".into());
        }
        assert_eq!(status(&evaluate(&t, &f), Check::Decap), vec![Status::Warn]);
        // The balancer's backend_mtu decides what must fit.
        f.ifaces[1].mtu = 1500;
        let with_limit = Target {
            backend_mtu: Some(1500),
            ..t
        };
        assert_eq!(
            status(&evaluate(&with_limit, &f), Check::Mtu),
            vec![Status::Ok]
        );
        // A kernel tunnel device decapsulates too, and its rp_filter counts.
        f.ifaces[1].xdp = None;
        f.ifaces.push(iface(3, "tunl0", &[], 1480));
        f.sysctls.insert(("tunl0".into(), "rp_filter".into()), 1);
        let out = evaluate(&with_limit, &f);
        assert_eq!(status(&out, Check::Decap), vec![Status::Ok]);
        assert_eq!(
            status(&out, Check::RpFilter),
            vec![Status::Ok, Status::Fail]
        );
    }

    #[test]
    fn a_foreign_address_fails() {
        let t = Target {
            address: "10.77.0.99".parse().unwrap(),
            ..target(Mode::DsrL2)
        };
        assert_eq!(
            status(&evaluate(&t, &host()), Check::Address),
            vec![Status::Fail]
        );
    }
}
