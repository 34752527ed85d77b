//! Where a task callback may go. A callback URL comes from whoever submits a task, and the
//! app POSTs to it from inside the backend network: without a check that is a request
//! forgery path to the app's own loopback services, the cloud metadata address
//! (169.254.169.254) or the balancers' control API. Loopback, link-local, unspecified,
//! multicast and broadcast addresses and the balancers' own addresses (the hosts of
//! `registration.control_planes` and `tasks.callback_denied`) are refused, unless
//! `tasks.callback_allow_local` says otherwise (tests, a receiver on the same host).
//!
//! A name is checked when it is resolved, at each delivery ([`Guard`] is the HTTP client's
//! resolver), so a name that resolves elsewhere later (DNS rebinding) is refused then.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// The callback policy in force.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub allow_local: bool,
    pub denied: Vec<IpNet>,
}

/// `ADDR` or `ADDR/PREFIX`.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or ADDR/PREFIX"))
}

impl Policy {
    /// Why a callback may not go to `ip`, or `None` when it may.
    pub fn refuses(&self, ip: IpAddr) -> Option<String> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if let Some(n) = self.denied.iter().find(|n| n.contains(&ip)) {
            return Some(format!(
                "{ip} is a balancer's address ({n}, tasks.callback_denied)"
            ));
        }
        if self.allow_local {
            return None;
        }
        let kind = match ip {
            IpAddr::V4(a) if a.is_loopback() => "loopback",
            IpAddr::V4(a) if a.is_link_local() => "link-local",
            IpAddr::V4(a) if a.is_unspecified() => "unspecified",
            IpAddr::V4(a) if a.is_multicast() || a.is_broadcast() => "multicast/broadcast",
            IpAddr::V6(a) if a.is_loopback() => "loopback",
            IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80 => "link-local",
            IpAddr::V6(a) if a.is_unspecified() => "unspecified",
            IpAddr::V6(a) if a.is_multicast() => "multicast",
            _ => return None,
        };
        Some(format!(
            "{ip} is a {kind} address (set tasks.callback_allow_local to allow it)"
        ))
    }
}

/// The callback client's resolver: resolves with the system's, then keeps only addresses the
/// policy allows; none left is an error the delivery reports.
pub struct Guard(pub Arc<Policy>);

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut why = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.refuses(a.ip()) {
                    Some(r) => {
                        why.get_or_insert(r);
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                let reason = why.unwrap_or_else(|| "no address".into());
                return Err(format!("callback host {host} refused: {reason}").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_balancer_addresses_are_refused() {
        let p = Policy {
            allow_local: false,
            denied: vec![
                parse_net("10.77.0.2").unwrap(),
                parse_net("10.88.0.0/24").unwrap(),
            ],
        };
        let refused = |s: &str| p.refuses(s.parse().unwrap()).is_some();
        for bad in [
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
            "10.77.0.2",
            "10.88.0.9",
            "224.0.0.1",
        ] {
            assert!(refused(bad), "{bad}");
        }
        for good in ["10.77.0.50", "192.0.2.1", "fd00::5"] {
            assert!(!refused(good), "{good}");
        }
        let open = Policy {
            allow_local: true,
            ..p
        };
        assert!(open.refuses("127.0.0.1".parse().unwrap()).is_none());
        assert!(
            open.refuses("10.77.0.2".parse().unwrap()).is_some(),
            "a listed balancer stays refused"
        );
    }
}
