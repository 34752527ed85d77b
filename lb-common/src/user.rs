//! Userspace conveniences: `aya::Pod` for every map type and conversions from std types.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::*;

unsafe impl aya::Pod for VipKey {}
unsafe impl aya::Pod for VipMeta {}
unsafe impl aya::Pod for Backend {}
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for ConnEntry {}
unsafe impl aya::Pod for LcList {}
unsafe impl aya::Pod for Settings {}
unsafe impl aya::Pod for IfaceMac {}
unsafe impl aya::Pod for TrafficStats {}
unsafe impl aya::Pod for FloodWindow {}
unsafe impl aya::Pod for HarnessPacket {}
unsafe impl aya::Pod for capture::CaptureConfig {}
unsafe impl aya::Pod for capture::CaptureHeader {}
unsafe impl aya::Pod for capture::CaptureRecord {}

/// An address as the data plane stores it: network-order words, IPv4 in word 0.
pub fn addr_words(ip: IpAddr) -> [u32; 4] {
    match ip {
        IpAddr::V4(v4) => [u32::from_ne_bytes(v4.octets()), 0, 0, 0],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            [w(0), w(4), w(8), w(12)]
        }
    }
}

/// The inverse of [`addr_words`].
pub fn words_addr(words: [u32; 4], family: u8) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::from(words[0].to_ne_bytes()))
    } else {
        let mut o = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(o))
    }
}

pub fn family_of(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { AF_INET } else { AF_INET6 }
}

impl VipKey {
    pub fn new(addr: IpAddr, port: u16, proto: u8) -> Self {
        Self {
            addr: addr_words(addr),
            port: port.to_be(),
            proto,
            family: family_of(addr),
        }
    }

    /// The address entry of `addr` (`proto == 0`).
    pub fn address(addr: IpAddr) -> Self {
        Self::new(addr, 0, 0)
    }

    pub fn ip(&self) -> IpAddr {
        words_addr(self.addr, self.family)
    }

    pub fn port_host(&self) -> u16 {
        u16::from_be(self.port)
    }
}

impl FlowKey {
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, proto: u8) -> Self {
        Self {
            src: addr_words(src),
            dst: addr_words(dst),
            sport: sport.to_be(),
            dport: dport.to_be(),
            proto,
            family: family_of(dst),
            _pad: [0; 2],
        }
    }

    pub fn src_ip(&self) -> IpAddr {
        words_addr(self.src, self.family)
    }

    pub fn dst_ip(&self) -> IpAddr {
        words_addr(self.dst, self.family)
    }
}

impl Backend {
    pub fn ip(&self) -> IpAddr {
        words_addr(self.addr, self.family)
    }
}

impl Reason {
    pub fn from_index(i: u32) -> Option<Self> {
        Self::ALL.get(i as usize).copied()
    }
}
