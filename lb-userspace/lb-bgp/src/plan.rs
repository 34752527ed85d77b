//! Which VIP addresses to announce: pure, from the configuration and what the daemon reports.
//!
//! An address is announced while this node's data plane is attached on every interface and
//! at least one announced VIP at that address can take new flows (a backend healthy, active,
//! with weight). Several VIPs may share an address (other ports): one route covers them all,
//! so it stays while any of them can serve; a port whose VIP has no backend is dropped by the
//! data plane on every balancer alike.

use std::{collections::BTreeMap, net::IpAddr};

use lb_config::BgpConfig;

/// One VIP as the daemon sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipState {
    pub name: String,
    pub address: IpAddr,
    /// At least one backend can take new flows.
    pub ready: bool,
    /// This node has not yet had a first health verdict for every backend since it started:
    /// its table may still hold fewer backends than the other balancers', so flows the
    /// routers moved here would reach other backends. Not announced until it settles.
    pub settling: bool,
}

/// What the daemon reports to the announcer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GateView {
    pub vips: Vec<VipState>,
    /// Interfaces whose XDP program is not attached.
    pub detached: Vec<String>,
}

/// The decision for one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    pub address: IpAddr,
    pub vips: Vec<String>,
    pub announce: bool,
    /// Why not, when not.
    pub reason: Option<String>,
}

/// `10.77.0.100/32`, `fd77::100/128`.
pub fn prefix(a: IpAddr) -> String {
    format!("{a}/{}", if a.is_ipv4() { 32 } else { 128 })
}

/// One entry per address of an announced VIP, in address order.
pub fn plan(cfg: &BgpConfig, view: &GateView, draining: bool) -> Vec<Planned> {
    let mut by_addr: BTreeMap<IpAddr, (Vec<String>, bool, bool)> = BTreeMap::new();
    for v in &view.vips {
        let listed = cfg
            .announce
            .as_ref()
            .is_none_or(|names| names.contains(&v.name));
        if !listed {
            continue;
        }
        let e = by_addr.entry(v.address).or_default();
        e.0.push(v.name.clone());
        e.1 |= v.ready;
        e.2 |= v.settling;
    }
    by_addr
        .into_iter()
        .map(|(address, (vips, ready, settling))| {
            let reason = if draining {
                Some("lbd is stopping (draining)".to_string())
            } else if !view.detached.is_empty() {
                Some(format!(
                    "XDP program not attached on {}",
                    view.detached.join(", ")
                ))
            } else if settling {
                Some(format!(
                    "waiting for a first health verdict on every backend ({})",
                    vips.join(", ")
                ))
            } else if !ready {
                Some(format!(
                    "no backend can take new flows ({})",
                    vips.join(", ")
                ))
            } else {
                None
            };
            Planned {
                address,
                vips,
                announce: reason.is_none(),
                reason,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(announce: &str) -> BgpConfig {
        let text = format!(
            "[[vips]]\nname = \"web\"\naddress = \"10.0.0.100\"\nport = 80\n\
             [[vips]]\nname = \"tls\"\naddress = \"10.0.0.100\"\nport = 443\n\
             [[vips]]\nname = \"web6\"\naddress = \"fd00::100\"\nport = 80\n\
             [bgp]\nlocal_as = 65001\nrouter_id = \"10.0.0.2\"\n{announce}\
             [[bgp.peers]]\naddress = \"10.0.0.1\"\nas = 65000\n"
        );
        lb_config::Config::parse(&text, "lbd.toml")
            .unwrap()
            .bgp
            .unwrap()
    }

    fn vip(name: &str, a: &str, ready: bool) -> VipState {
        VipState {
            name: name.into(),
            address: a.parse().unwrap(),
            ready,
            settling: false,
        }
    }

    fn view() -> GateView {
        GateView {
            vips: vec![
                vip("web", "10.0.0.100", false),
                vip("tls", "10.0.0.100", true),
                vip("web6", "fd00::100", false),
            ],
            detached: vec![],
        }
    }

    #[test]
    fn an_address_is_announced_while_one_of_its_vips_can_serve() {
        let p = plan(&cfg(""), &view(), false);
        assert_eq!(p.len(), 2);
        assert!(p[0].announce);
        assert_eq!(p[0].vips, ["web", "tls"]);
        assert!(!p[1].announce);
        assert_eq!(
            p[1].reason.as_deref(),
            Some("no backend can take new flows (web6)")
        );
    }

    #[test]
    fn detached_or_draining_withdraws_everything() {
        let mut v = view();
        v.detached = vec!["eth0".into()];
        let p = plan(&cfg(""), &v, false);
        assert!(p.iter().all(|p| !p.announce));
        assert_eq!(
            p[0].reason.as_deref(),
            Some("XDP program not attached on eth0")
        );
        let p = plan(&cfg(""), &view(), true);
        assert!(p.iter().all(|p| !p.announce));
    }

    #[test]
    fn only_listed_vips_count() {
        let p = plan(&cfg("announce = [\"web\"]\n"), &view(), false);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].vips, ["web"]);
        assert!(
            !p[0].announce,
            "tls is not announced, so it does not hold the route"
        );
    }

    #[test]
    fn a_settling_vip_holds_its_address_back() {
        let mut settling = vip("tls", "10.0.0.100", true);
        settling.settling = true;
        let view = GateView {
            vips: vec![vip("web", "10.0.0.100", true), settling],
            detached: vec![],
        };
        let p = plan(&cfg(""), &view, false);
        assert!(!p[0].announce, "{p:?}");
        assert!(
            p[0].reason
                .as_deref()
                .is_some_and(|r| r.contains("first health verdict")),
            "{p:?}"
        );
    }
}
