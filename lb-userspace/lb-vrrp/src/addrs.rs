//! The router's primary address (the source of its adverts and RFC 5798's tie-breaker on equal
//! priority), chosen from the interface's current addresses. Pure: [`super::ifwatch`] supplies
//! the addresses, the router applies the choice.

use std::net::IpAddr;

use super::{io6, status::Family};

/// One address of the interface, as rtnetlink reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// IPv4: a secondary address (another one of the same subnet came first).
    pub secondary: bool,
    /// IPv6: duplicate address detection still running or failed. The kernel refuses such an
    /// address as a source, so it cannot be a primary yet.
    pub tentative: bool,
}

/// How one router picks its primary address.
#[derive(Clone, Debug)]
pub struct Rule {
    pub family: Family,
    pub interface: String,
    /// `source` / `source_v6` from the configuration: never replaced, only its presence on the
    /// interface is watched.
    pub configured: Option<IpAddr>,
    /// The router's virtual addresses: never a primary (the master adds them itself, and they
    /// move between nodes).
    pub vips: Vec<IpAddr>,
    /// IPv6 with global unicast peers: the primary is a global address (the one the peers
    /// list), not the link-local one.
    pub global: bool,
}

/// Why there is no primary address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Missing {
    /// The configured address is not a usable address of the interface.
    Configured(IpAddr),
    /// The interface has no address of the kind the router needs.
    NoAddress,
}

impl Rule {
    /// Whether `a` may be this router's primary when none is configured.
    fn candidate(&self, a: &IfAddr) -> bool {
        let ip = a.addr;
        Family::of(ip) == self.family
            && !a.tentative
            && !self.vips.contains(&ip)
            && !ip.is_loopback()
            && !ip.is_multicast()
            && !ip.is_unspecified()
            && match ip {
                IpAddr::V4(_) => true,
                IpAddr::V6(v) => io6::is_link_local(v) != self.global,
            }
    }

    /// The primary address among `addrs` (the interface's, in the kernel's order).
    ///
    /// A configured one is kept while the interface has it. Otherwise the `current` primary
    /// stays as long as it qualifies, so that adding an address never moves the router;
    /// when it is gone the first qualifying address takes over: for IPv4 the first primary
    /// (not secondary) one, what `SIOCGIFADDR` and keepalived use; for IPv6 the first
    /// link-local one (global with global unicast peers).
    pub fn choose(&self, addrs: &[IfAddr], current: Option<IpAddr>) -> Result<IpAddr, Missing> {
        if let Some(c) = self.configured {
            return if addrs.iter().any(|a| a.addr == c && !a.tentative) {
                Ok(c)
            } else {
                Err(Missing::Configured(c))
            };
        }
        let mut candidates = addrs.iter().filter(|a| self.candidate(a));
        if let Some(cur) = current
            && candidates.clone().any(|a| a.addr == cur)
        {
            return Ok(cur);
        }
        candidates
            .clone()
            .find(|a| !a.secondary)
            .or_else(|| candidates.next())
            .map(|a| a.addr)
            .ok_or(Missing::NoAddress)
    }

    /// The reason shown in status and logs.
    pub fn describe(&self, m: &Missing) -> String {
        let iface = &self.interface;
        match m {
            Missing::Configured(c) => format!(
                "the configured source {c} is not a usable address of {iface} (removed, or \
                 IPv6 duplicate address detection not done)"
            ),
            Missing::NoAddress => match (self.family, self.global) {
                (Family::Ipv4, _) => format!("no IPv4 address on {iface} besides the VIPs"),
                (Family::Ipv6, false) => {
                    format!("no usable IPv6 link-local address on {iface} besides the VIPs")
                }
                (Family::Ipv6, true) => format!(
                    "no usable global IPv6 address on {iface} besides the VIPs (the unicast \
                     peers are global)"
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IfAddr {
        IfAddr {
            addr: s.parse().unwrap(),
            prefix_len: 24,
            secondary: false,
            tentative: false,
        }
    }

    fn secondary(s: &str) -> IfAddr {
        IfAddr {
            secondary: true,
            ..a(s)
        }
    }

    fn tentative(s: &str) -> IfAddr {
        IfAddr {
            tentative: true,
            ..a(s)
        }
    }

    fn rule(family: Family, vips: &[&str]) -> Rule {
        Rule {
            family,
            interface: "eth0".into(),
            configured: None,
            vips: vips.iter().map(|v| v.parse().unwrap()).collect(),
            global: false,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_first_primary_address_never_a_vip() {
        let r = rule(Family::Ipv4, &["10.0.0.100"]);
        let addrs = [a("10.0.0.100"), secondary("10.0.0.9"), a("10.0.0.2")];
        assert_eq!(r.choose(&addrs, None), Ok(ip("10.0.0.2")));
        // Only secondaries left (no promotion): one of them still serves.
        assert_eq!(
            r.choose(&[a("10.0.0.100"), secondary("10.0.0.9")], None),
            Ok(ip("10.0.0.9"))
        );
        assert_eq!(r.choose(&[a("10.0.0.100")], None), Err(Missing::NoAddress));
        assert_eq!(r.choose(&[], None), Err(Missing::NoAddress));
        // Addresses of the other family do not count.
        assert_eq!(r.choose(&[a("fe80::1")], None), Err(Missing::NoAddress));
    }

    #[test]
    fn current_primary_stays_while_present_then_the_next_takes_over() {
        let r = rule(Family::Ipv4, &["10.0.0.100"]);
        let cur = Some(ip("10.0.0.2"));
        // A new address listed first does not move the router.
        let added = [a("10.0.0.1"), a("10.0.0.2")];
        assert_eq!(r.choose(&added, cur), Ok(ip("10.0.0.2")));
        // Re-addressing: the old primary deleted, the new one (promoted) takes over.
        assert_eq!(r.choose(&[a("10.0.0.12")], cur), Ok(ip("10.0.0.12")));
        // A VIP is never kept, even as the current primary.
        assert_eq!(
            r.choose(&[a("10.0.0.100"), a("10.0.0.3")], Some(ip("10.0.0.100"))),
            Ok(ip("10.0.0.3"))
        );
    }

    #[test]
    fn ipv6_link_local_unless_peers_are_global_never_tentative() {
        let mut r = rule(Family::Ipv6, &["fe80::51", "fd77::100"]);
        let addrs = [
            a("fe80::51"),
            a("fd77::100"),
            a("fd77::2"),
            tentative("fe80::9"),
            a("fe80::1"),
        ];
        assert_eq!(r.choose(&addrs, None), Ok(ip("fe80::1")));
        // The link-local address regenerated: the new one, once duplicate address detection
        // is done.
        let cur = Some(ip("fe80::1"));
        assert_eq!(
            r.choose(&[a("fe80::51"), tentative("fe80::7")], cur),
            Err(Missing::NoAddress)
        );
        assert_eq!(
            r.choose(&[a("fe80::51"), a("fe80::7")], cur),
            Ok(ip("fe80::7"))
        );
        r.global = true;
        assert_eq!(r.choose(&addrs, None), Ok(ip("fd77::2")));
        assert_eq!(
            r.choose(&[a("fe80::1"), a("fd77::100")], None),
            Err(Missing::NoAddress)
        );
        assert!(r.describe(&Missing::NoAddress).contains("global"));
    }

    #[test]
    fn configured_source_is_watched_never_replaced() {
        let mut r = rule(Family::Ipv4, &[]);
        r.configured = Some(ip("10.0.0.2"));
        assert_eq!(
            r.choose(&[a("10.0.0.3"), a("10.0.0.2")], None),
            Ok(ip("10.0.0.2"))
        );
        let gone = r.choose(&[a("10.0.0.3")], Some(ip("10.0.0.2")));
        assert_eq!(gone, Err(Missing::Configured(ip("10.0.0.2"))));
        let why = r.describe(&gone.unwrap_err());
        assert!(why.contains("10.0.0.2") && why.contains("eth0"), "{why}");
        let mut r6 = rule(Family::Ipv6, &[]);
        r6.configured = Some(ip("fe80::1"));
        assert_eq!(
            r6.choose(&[tentative("fe80::1")], None),
            Err(Missing::Configured(ip("fe80::1")))
        );
    }
}
