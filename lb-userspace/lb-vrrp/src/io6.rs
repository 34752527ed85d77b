//! The IPv6 side: a raw IPv6 socket for protocol 112 (ff02::12, hop limit 255 sent, the
//! received hop limit and destination read from control messages), the interface's IPv6
//! addresses, and unsolicited neighbour advertisements.
//!
//! Unlike IPv4, an IPv6 raw socket never hands over the IP header: the hop limit comes from
//! `IPV6_HOPLIMIT` and the destination (for the pseudo-header checksum) from `IPV6_PKTINFO`.
//! The kernel is NOT asked to check the checksum (`IPV6_CHECKSUM` stays off) so that a bad one
//! reaches us and is counted instead of vanishing in the kernel.

use std::{
    ffi::CStr,
    io, mem,
    net::Ipv6Addr,
    os::fd::{AsRawFd, OwnedFd},
};

use tokio::io::unix::AsyncFd;

use super::{
    io::{cvt, ifindex, raw_vrrp_socket, recv_ready, sent_all, setsockopt},
    packet::{GROUP_V6, TTL, inet_checksum},
};

/// All-nodes multicast group: where unsolicited neighbour advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// One received IPv6 VRRP message with what the control messages said about it.
#[derive(Clone, Copy, Debug)]
pub struct Recv6 {
    /// Bytes of VRRP message in the buffer (no IP header).
    pub len: usize,
    /// IPv6 source.
    pub src: Ipv6Addr,
    /// IPv6 destination (`IPV6_PKTINFO`); `None` if the kernel gave none.
    pub dst: Option<Ipv6Addr>,
    /// Hop limit (`IPV6_HOPLIMIT`); `None` if the kernel gave none.
    pub hop_limit: Option<u8>,
}

/// A raw IPv6 socket for protocol 112 on one interface.
pub struct VrrpSocket6 {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
}

/// Whether `a` is in fe80::/10.
pub fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// Link-local and link-scope multicast destinations need the interface as scope id.
fn needs_scope(a: Ipv6Addr) -> bool {
    is_link_local(a) || (a.is_multicast() && a.segments()[0] & 0x000f <= 2)
}

impl VrrpSocket6 {
    /// Opens the socket bound to `iface`; joins ff02::12 when `multicast`.
    pub fn open(iface: &str, multicast: bool) -> io::Result<Self> {
        let index = ifindex(iface)?;
        let fd = raw_vrrp_socket(libc::AF_INET6, iface)?;
        let raw = fd.as_raw_fd();
        let ttl = libc::c_int::from(TTL);
        setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &ttl)?;
        setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)?;
        setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &0i32)?;
        setsockopt(
            raw,
            libc::IPPROTO_IPV6,
            libc::IPV6_MULTICAST_IF,
            &(index as libc::c_int),
        )?;
        setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &1i32)?;
        setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, &1i32)?;
        // Traffic class CS6 (network control), as for IPv4.
        setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_TCLASS, &0xc0i32)?;
        if multicast {
            let mreq = libc::ipv6_mreq {
                ipv6mr_multiaddr: libc::in6_addr {
                    s6_addr: GROUP_V6.octets(),
                },
                ipv6mr_interface: index,
            };
            setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &mreq)?;
        }
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns and closes it.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(Self { fd, ifindex: index })
    }

    /// The index of the interface the socket was opened on.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Sets the hop limit of what this socket sends (255 by default). Tests use it to craft
    /// adverts that must be rejected.
    pub fn set_hop_limit(&self, hops: u8) -> io::Result<()> {
        let h = libc::c_int::from(hops);
        let raw = self.fd.as_raw_fd();
        setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &h)?;
        setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &h)
    }

    /// Sends one VRRP message (built with [`super::packet::Advert::encode`] for `src`->`dst`)
    /// from `src`, which must be an address of the interface (`IPV6_PKTINFO`).
    pub fn send(&self, msg: &[u8], src: Ipv6Addr, dst: Ipv6Addr) -> io::Result<()> {
        // SAFETY: sockaddr_in6 is plain old data.
        let mut sa: libc::sockaddr_in6 = unsafe { mem::zeroed() };
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_addr.s6_addr = dst.octets();
        if needs_scope(dst) {
            sa.sin6_scope_id = self.ifindex;
        }
        let info = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: src.octets(),
            },
            ipi6_ifindex: self.ifindex,
        };
        // u64 words keep the control buffer aligned for cmsghdr.
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: msg.as_ptr() as *mut libc::c_void,
            iov_len: msg.len(),
        };
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(mem::size_of::<libc::in6_pktinfo>() as u32) };
        // Every buffer the header points to outlives the sendmsg call.
        let mh = msghdr6(&mut sa, &mut iov, &mut control, space as usize);
        // SAFETY: the control buffer (64 bytes) holds one cmsghdr with an in6_pktinfo
        // (CMSG_SPACE = 40 bytes); CMSG_FIRSTHDR/CMSG_DATA point inside it.
        let n = unsafe {
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::IPPROTO_IPV6;
            (*c).cmsg_type = libc::IPV6_PKTINFO;
            (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<libc::in6_pktinfo>() as u32) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>(), info);
            libc::sendmsg(self.fd.as_raw_fd(), &mh, 0)
        };
        sent_all(n, msg.len())
    }

    /// Waits for the next VRRP message; the payload lands in `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Recv6> {
        recv_ready(&self.fd, |fd| recv_once(fd, buf)).await
    }
}

/// A message header over one buffer with an IPv6 peer address and the first `control_len`
/// bytes of `control` (u64 words keep it aligned for cmsghdr). It holds raw pointers to the
/// arguments: they must outlive every use of the header.
fn msghdr6(
    sa: &mut libc::sockaddr_in6,
    iov: &mut libc::iovec,
    control: &mut [u64],
    control_len: usize,
) -> libc::msghdr {
    debug_assert!(control_len <= mem::size_of_val(control));
    // SAFETY: msghdr is plain old data; all-zero is a valid value.
    let mut mh: libc::msghdr = unsafe { mem::zeroed() };
    mh.msg_name = (sa as *mut libc::sockaddr_in6).cast();
    mh.msg_namelen = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    mh.msg_iov = iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control.as_mut_ptr().cast();
    mh.msg_controllen = control_len;
    mh
}

fn recv_once(fd: libc::c_int, buf: &mut [u8]) -> io::Result<Recv6> {
    // SAFETY: plain old data.
    let mut sa: libc::sockaddr_in6 = unsafe { mem::zeroed() };
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Every buffer the header points to outlives the recvmsg call.
    let control_len = mem::size_of_val(&control);
    let mut mh = msghdr6(&mut sa, &mut iov, &mut control, control_len);
    // SAFETY: `mh` describes live, writable buffers of the sizes given.
    let n = unsafe { libc::recvmsg(fd, &mut mh, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut r = Recv6 {
        len: n as usize,
        src: Ipv6Addr::from(sa.sin6_addr.s6_addr),
        dst: None,
        hop_limit: None,
    };
    // SAFETY: the kernel filled `msg_controllen` bytes of well-formed cmsghdrs; the CMSG_*
    // helpers stay inside them and the data is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&mh);
        while !c.is_null() {
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    let h: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    r.hop_limit = u8::try_from(h).ok();
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let i: libc::in6_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    r.dst = Some(Ipv6Addr::from(i.ipi6_addr.s6_addr));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
    }
    Ok(r)
}

/// The interface's IPv6 addresses, in the kernel's order.
pub fn addresses_v6(iface: &str) -> io::Result<Vec<Ipv6Addr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    cvt(unsafe { libc::getifaddrs(&mut head) })?;
    let mut out = Vec::new();
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` walks the list getifaddrs returned; names are NUL-terminated and an
        // AF_INET6 ifa_addr points to a sockaddr_in6.
        unsafe {
            let ifa = &*p;
            if !ifa.ifa_addr.is_null()
                && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET6
                && CStr::from_ptr(ifa.ifa_name).to_bytes() == iface.as_bytes()
            {
                let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                out.push(Ipv6Addr::from(sa.sin6_addr.s6_addr));
            }
            p = ifa.ifa_next;
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// An unsolicited neighbour advertisement (RFC 4861 7.2.6) for `vip` from `mac`: to ff02::1,
/// hop limit 255, override flag, target link-layer address option; a whole Ethernet frame.
pub fn unsolicited_na(mac: [u8; 6], vip: Ipv6Addr) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0]); // type NA, code 0, checksum
    icmp.extend_from_slice(&[0x20, 0, 0, 0]); // flags: override (not solicited, not router)
    icmp.extend_from_slice(&vip.octets());
    icmp.extend_from_slice(&[2, 1]); // option: target link-layer address, 8 bytes
    icmp.extend_from_slice(&mac);
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&vip.octets());
    pseudo.extend_from_slice(&ALL_NODES.octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    let sum = inet_checksum(&[&pseudo, &icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]); // ff02::1 mapped to Ethernet
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd]);
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, traffic class 0, flow 0
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, TTL]); // ICMPv6, hop limit 255
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&icmp);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_advertisement_layout_and_checksum() {
        let vip: Ipv6Addr = "fd77::100".parse().unwrap();
        let mac = [2, 0, 0, 0, 0, 3];
        let f = unsolicited_na(mac, vip);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!((f[20], f[21]), (58, 255), "ICMPv6, hop limit 255");
        let icmp = &f[54..];
        assert_eq!(icmp[0], 136);
        assert_eq!(icmp[4], 0x20, "override only");
        assert_eq!(&icmp[8..24], &vip.octets());
        assert_eq!(&icmp[24..32], &[2, 1, 2, 0, 0, 0, 0, 3]);
        // A correct checksum sums to zero over pseudo-header + message.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[22..54]);
        pseudo.extend_from_slice(&32u32.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(inet_checksum(&[&pseudo, icmp]), 0);
    }

    #[test]
    fn link_local_and_group_destinations_need_a_scope() {
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let global: Ipv6Addr = "fd77::2".parse().unwrap();
        assert!(needs_scope(GROUP_V6) && needs_scope(ll) && !needs_scope(global));
    }
}
