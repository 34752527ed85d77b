//! The IPv4 VRRP socket (raw IPv4, protocol 112), gratuitous ARP through an `AF_PACKET` socket, and
//! the virtual addresses on the interface (`ip addr`).

use std::{
    ffi::CString,
    io, mem,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use tokio::io::unix::AsyncFd;

use super::packet::{GROUP_V4, PROTO_VRRP};

pub(super) fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(super) fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live T of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

pub(super) fn socket(
    domain: libc::c_int,
    kind: libc::c_int,
    proto: libc::c_int,
) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor is owned from here on.
    let fd = cvt(unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking raw socket of `domain` for protocol 112, bound to `iface` so that it sends
/// and receives on that interface only (both families).
pub(super) fn raw_vrrp_socket(domain: libc::c_int, iface: &str) -> io::Result<OwnedFd> {
    let fd = socket(
        domain,
        libc::SOCK_RAW | libc::SOCK_NONBLOCK,
        libc::c_int::from(PROTO_VRRP),
    )?;
    // SAFETY: the name is passed with its exact length.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            iface.as_ptr().cast(),
            iface.len() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// The interface's index, or an error naming it.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::other("interface name holds a NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::other(format!("no interface named {name}"))),
        i => Ok(i),
    }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { mem::zeroed() };
    for (d, s) in r
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    r
}

/// The interface's MAC address.
pub fn mac_of(name: &str) -> io::Result<[u8; 6]> {
    let s = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
    let mut r = ifreq(name);
    // SAFETY: SIOCGIFHWADDR fills the ifreq passed by pointer.
    cvt(unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFHWADDR, &mut r) })?;
    // SAFETY: the kernel wrote the hwaddr member of the union.
    let data = unsafe { r.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data) {
        *m = d as u8;
    }
    Ok(mac)
}

/// A raw IPv4 socket for protocol 112 on one interface: we write whole IP headers (TTL 255),
/// the kernel hands over whole packets (header included).
pub struct VrrpSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
}

fn sockaddr_v4(a: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    }
}

impl VrrpSocket {
    /// Opens the socket bound to `iface`; joins 224.0.0.18 when `multicast`.
    pub fn open_v4(iface: &str, multicast: bool) -> io::Result<Self> {
        let if_index = ifindex(iface)?;
        let index = if_index as libc::c_int;
        let fd = raw_vrrp_socket(libc::AF_INET, iface)?;
        let raw = fd.as_raw_fd();
        setsockopt(raw, libc::IPPROTO_IP, libc::IP_HDRINCL, &1i32)?;
        setsockopt(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &0i32)?;
        setsockopt(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_TTL, &255i32)?;
        let mreq = libc::ip_mreqn {
            imr_multiaddr: libc::in_addr {
                s_addr: u32::from(GROUP_V4).to_be(),
            },
            imr_address: libc::in_addr { s_addr: 0 },
            imr_ifindex: index,
        };
        setsockopt(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreq)?;
        if multicast {
            setsockopt(raw, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreq)?;
        }
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns and closes it; its raw
        // descriptor never changes.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(Self {
            fd,
            ifindex: if_index,
        })
    }

    /// The index of the interface the socket was opened on.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Sends a whole IPv4 packet (built with [`super::packet::Advert::encode_ipv4`]) to `dst`.
    pub fn send(&self, packet: &[u8], dst: Ipv4Addr) -> io::Result<()> {
        let sa = sockaddr_v4(dst);
        // SAFETY: buffer and address are live for the call and passed with their sizes.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        sent_all(n, packet.len())
    }

    /// Waits for the next packet (IP header included).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        recv_ready(&self.fd, |fd| {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        })
        .await
    }
}

/// What a send(2)-like call returned for a datagram of `len` bytes: an error, a short send,
/// or all of it.
pub(super) fn sent_all(n: isize, len: usize) -> io::Result<()> {
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != len {
        return Err(io::Error::other("short send"));
    }
    Ok(())
}

/// Waits until `fd` is readable and `recv_once` (one non-blocking receive) has something;
/// `WouldBlock` clears the readiness and waits again.
pub(super) async fn recv_ready<R>(
    fd: &AsyncFd<OwnedFd>,
    mut recv_once: impl FnMut(RawFd) -> io::Result<R>,
) -> io::Result<R> {
    loop {
        let mut guard = fd.readable().await?;
        if let Ok(r) = guard.try_io(|fd| recv_once(fd.as_raw_fd())) {
            return r;
        }
    }
}

/// A gratuitous ARP request for `ip` from `mac` (sender and target address both `ip`).
pub fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

/// Sends one whole Ethernet frame (gratuitous ARP, neighbour advertisement) out of `iface`
/// through an `AF_PACKET` socket.
pub fn send_frame(iface: &str, frame: &[u8]) -> io::Result<()> {
    if frame.len() < 14 {
        return Err(io::Error::other("frame shorter than its Ethernet header"));
    }
    let proto = u16::from_be_bytes([frame[12], frame[13]]).to_be();
    // Protocol 0: a send-only socket, it receives nothing.
    let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
    // SAFETY: sockaddr_ll is plain old data.
    let mut sa: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto;
    sa.sll_ifindex = ifindex(iface)? as libc::c_int;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: buffer and address are live for the call and passed with their sizes.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sa as *const libc::sockaddr_ll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_layout() {
        let f = gratuitous_arp([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "request");
        assert_eq!(&f[28..32], &[10, 0, 0, 100]);
        assert_eq!(&f[38..42], &[10, 0, 0, 100]);
    }
}
