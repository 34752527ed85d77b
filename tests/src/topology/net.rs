//! IPv4 and IPv6 prefixes ("10.77.0.0/24", "fd77::/64") as used by the lab segment.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 network: an address with all host bits zero and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

/// An IPv6 network: an address with all host bits zero and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv6Net {
    addr: Ipv6Addr,
    prefix: u8,
}

fn split_cidr(s: &str, max_prefix: u8) -> Result<(&str, u8), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not a prefix: expected ADDRESS/LENGTH"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("`{s}`: prefix length `{len}` is not a number"))?;
    if len > max_prefix {
        return Err(format!(
            "`{s}`: prefix length {len} is larger than {max_prefix}"
        ));
    }
    Ok((addr, len))
}

impl Ipv4Net {
    /// Builds a network; fails when `addr` has host bits set or `prefix` > 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, String> {
        if prefix > 32 {
            return Err(format!("prefix length {prefix} is larger than 32"));
        }
        let net = Self { addr, prefix };
        if net.network() != addr {
            return Err(format!(
                "{addr}/{prefix} has host bits set (the network is {}/{prefix})",
                net.network()
            ));
        }
        Ok(net)
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address (host bits all one).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// The address `network + n`, or `None` when it falls outside the network.
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        let ip = Ipv4Addr::from(u32::from(self.network()).checked_add(n)?);
        self.contains(ip).then_some(ip)
    }
}

impl Ipv6Net {
    /// Builds a network; fails when `addr` has host bits set or `prefix` > 128.
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Result<Self, String> {
        if prefix > 128 {
            return Err(format!("prefix length {prefix} is larger than 128"));
        }
        let net = Self { addr, prefix };
        if net.network() != addr {
            return Err(format!(
                "{addr}/{prefix} has host bits set (the network is {}/{prefix})",
                net.network()
            ));
        }
        Ok(net)
    }

    fn mask(&self) -> u128 {
        u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr) & self.mask())
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.addr) & self.mask()
    }

    /// The address `network + n`, or `None` when it falls outside the network.
    pub fn host(&self, n: u128) -> Option<Ipv6Addr> {
        let ip = Ipv6Addr::from(u128::from(self.network()).checked_add(n)?);
        self.contains(ip).then_some(ip)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = split_cidr(s, 32)?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{s}`: `{addr}` is not an IPv4 address"))?;
        Self::new(addr, len)
    }
}

impl FromStr for Ipv6Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = split_cidr(s, 128)?;
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| format!("`{s}`: `{addr}` is not an IPv6 address"))?;
        Self::new(addr, len)
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl TryFrom<String> for Ipv6Net {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

impl From<Ipv6Net> for String {
    fn from(n: Ipv6Net) -> String {
        n.to_string()
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_membership() {
        let v4: Ipv4Net = "10.77.0.0/24".parse().unwrap();
        assert!(v4.contains("10.77.0.200".parse().unwrap()));
        assert!(!v4.contains("10.77.1.1".parse().unwrap()));
        assert_eq!(v4.broadcast(), Ipv4Addr::new(10, 77, 0, 255));
        assert_eq!(v4.host(10), Some(Ipv4Addr::new(10, 77, 0, 10)));
        assert_eq!(v4.host(256), None);
        let v6: Ipv6Net = "fd77::/64".parse().unwrap();
        assert!(v6.contains("fd77::100".parse().unwrap()));
        assert!(!v6.contains("fd78::1".parse().unwrap()));
        assert_eq!(v6.host(0x10), Some("fd77::10".parse().unwrap()));
    }

    #[test]
    fn rejects_bad_prefixes() {
        assert!(
            "10.77.0.1/24"
                .parse::<Ipv4Net>()
                .unwrap_err()
                .contains("host bits")
        );
        assert!("10.77.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.77.0.0".parse::<Ipv4Net>().is_err());
        assert!("fd77::/x".parse::<Ipv6Net>().is_err());
        assert!("fd77::1/64".parse::<Ipv6Net>().is_err());
        assert_eq!(
            "0.0.0.0/0".parse::<Ipv4Net>().unwrap().broadcast(),
            Ipv4Addr::BROADCAST
        );
    }
}
