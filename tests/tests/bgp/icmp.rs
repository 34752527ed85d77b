//! ICMP under ECMP: a router on the path sends "fragmentation needed" about a live flow; ECMP
//! may hand it to a balancer that never saw the flow. That balancer must still send it to the
//! flow's backend (it hashes the quoted, reversed tuple), whose kernel then lowers its path
//! MTU towards the client.
//!
//! The test sends the ICMP itself, from the router's namespace, as a whole Ethernet frame to
//! a chosen balancer that carries no packet of the flow. The backend's TCP accepts an ICMP
//! error only when the quoted sequence number is one it has sent and not seen acknowledged
//! (RFC 5927): the client captures the flow's last segment from the backend to learn it.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::http::{Conn, Request};
use crate::served::Ledger;
use crate::{BgpLab, poll};

/// The MTU the ICMP announces (below the lab's 1,500).
const MTU: u16 = 1200;

pub fn frag_needed_reaches_the_flows_backend(lab: &BgpLab) -> Result<()> {
    let vip = lab.vip;
    let IpAddr::V4(vip4) = vip.ip() else {
        bail!("the IPv4 VIP")
    };
    let client = lab.client();
    let client_ip = client.ipv4();
    // A keep-alive connection; which balancer carries it: the one whose VIP packet counter
    // moves with it.
    let mut conn = client.in_netns(move || Conn::connect(vip, Duration::from_secs(5)))??;
    let port = conn.local_addr()?.port();
    let balancers = lab.system.balancers();
    let packets = |lb: &str| lab.vip_stat(lb, "packets");
    let before: Vec<u64> = balancers
        .iter()
        .map(|b| packets(b))
        .collect::<Result<_>>()?;
    for i in 1..=5 {
        let id = format!("bgp-icmp-{i}");
        let r = conn.send(&Request::get("/ping", &id))?;
        ensure!(r.status == 200, "status {}", r.status);
    }
    let moved: Vec<u64> = balancers
        .iter()
        .zip(&before)
        .map(|(b, was)| Ok(packets(b)? - was))
        .collect::<Result<_>>()?;
    let carrier = moved
        .iter()
        .position(|m| *m > 0)
        .context("no balancer counted the flow's packets")?;
    ensure!(
        moved.iter().filter(|m| **m > 0).count() == 1,
        "the flow's packets went through several balancers: {moved:?}"
    );
    let other = balancers
        .iter()
        .enumerate()
        .find(|(i, _)| *i != carrier)
        .map(|(_, b)| b.clone())
        .context("a second balancer")?;
    // The backend's next sequence number on the (idle) connection, seen from the client.
    let capture = client.in_netns(|| Capture::open("eth0"))??;
    let r = conn.send(&Request::get("/ping", "bgp-icmp-last"))?;
    ensure!(r.status == 200, "status {}", r.status);
    let next_seq = capture
        .next_seq(vip4, vip.port(), port, Duration::from_millis(500))
        .context("no segment of the backend seen on the client")?;
    // The flow's backend, from the apps' logs.
    let mut ledger = Ledger::default();
    let backend = ledger.wait_for(&lab.system, "bgp-icmp-5")?;
    let be = lab.system.lab().host(&backend)?;
    let route_mtu = |be: &tests::Host| -> Result<Option<u16>> {
        let out = be.exec(["ip", "-4", "route", "get", &client_ip.to_string()])?;
        Ok(out
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .find(|w| w[0] == "mtu")
            .and_then(|w| w[1].parse().ok()))
    };
    ensure!(
        route_mtu(be)? != Some(MTU),
        "{backend} already has a path MTU of {MTU} towards the client"
    );
    let icmp_before = reason(lab, &other, "tx_icmp_error")?;
    // The frame: from the router, to the chosen balancer's MAC, about the backend's reply
    // (VIP:80 -> client:port) that "did not fit".
    let other_mac = lab.system.lab().host(&other)?.mac()?.0;
    let router = lab.router();
    let router_mac = router.mac()?.0;
    let frame = frag_needed_frame(
        router_mac,
        other_mac,
        router.ipv4(),
        vip4,
        client_ip,
        vip.port(),
        port,
        next_seq,
    );
    router.in_netns(move || send_frame("eth0", &frame))??;
    let took = poll(
        &format!("{backend}'s path MTU towards the client to become {MTU}"),
        Duration::from_secs(10),
        || Ok(route_mtu(be)? == Some(MTU)),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{e} (the ICMP went to {other}, the flow through {}; {other}'s tx_icmp_error: {:?})",
            balancers[carrier],
            reason(lab, &other, "tx_icmp_error")
        )
    })?;
    let forwarded = reason(lab, &other, "tx_icmp_error")? - icmp_before;
    ensure!(
        forwarded == 1,
        "{other} forwarded {forwarded} ICMP errors, want 1"
    );
    // The connection still works after the MTU change.
    let r = conn.send(&Request::get("/ping", "bgp-icmp-after"))?;
    ensure!(r.status == 200, "after the ICMP: status {}", r.status);
    lab.say(&format!(
        "fragmentation needed (MTU {MTU}) sent to {other}, which never saw the flow (it runs \
         through {}): forwarded to {backend}, whose path MTU towards the client became {MTU} \
         within {} ms",
        balancers[carrier],
        took.as_millis()
    ));
    Ok(())
}

fn reason(lab: &BgpLab, lb: &str, name: &str) -> Result<u64> {
    let s = lab.system.lbctl_json(lb, ["stats"])?;
    Ok(s["reasons"][name].as_u64().unwrap_or(0))
}

fn checksum(data: &[u8]) -> u16 {
    lb_common::csum::checksum(&[data], 0)
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, total: u16, ttl: u8) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[6] = 0x40; // DF
    h[8] = ttl;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// Ethernet + IPv4 (router -> VIP) + ICMP type 3 code 4 quoting the backend's reply segment.
#[allow(clippy::too_many_arguments)]
fn frag_needed_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    router: Ipv4Addr,
    vip: Ipv4Addr,
    client: Ipv4Addr,
    vip_port: u16,
    client_port: u16,
    seq: u32,
) -> Vec<u8> {
    // The quoted packet: a full-size reply from the VIP to the client (IP header + 8 bytes).
    let mut quoted = ipv4_header(vip, client, 6, 1500, 63).to_vec();
    quoted.extend(vip_port.to_be_bytes());
    quoted.extend(client_port.to_be_bytes());
    quoted.extend(seq.to_be_bytes());
    let mut icmp = vec![3u8, 4, 0, 0, 0, 0];
    icmp.extend(MTU.to_be_bytes());
    icmp.extend(&quoted);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut frame = dst_mac.to_vec();
    frame.extend(src_mac);
    frame.extend([0x08, 0x00]);
    frame.extend(ipv4_header(router, vip, 1, (20 + icmp.len()) as u16, 64));
    frame.extend(icmp);
    frame
}

fn packet_socket() -> Result<OwnedFd> {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if fd < 0 {
        bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifindex(iface: &str) -> Result<i32> {
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: a NUL-terminated name.
    let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
    ensure!(i != 0, "no interface {iface}");
    Ok(i as i32)
}

fn link_addr(iface: &str, proto: u16) -> Result<libc::sockaddr_ll> {
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto.to_be();
    sa.sll_ifindex = ifindex(iface)?;
    Ok(sa)
}

/// Sends one whole frame out of `iface` (call inside the host's namespace).
fn send_frame(iface: &str, frame: &[u8]) -> Result<()> {
    let fd = packet_socket()?;
    let sa = link_addr(iface, libc::ETH_P_ALL as u16)?;
    // SAFETY: the frame and address outlive the call.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    ensure!(
        n == frame.len() as isize,
        "sending the frame: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Frames arriving on an interface, from the moment it is opened.
struct Capture {
    fd: OwnedFd,
}

impl Capture {
    fn open(iface: &str) -> Result<Self> {
        let fd = packet_socket()?;
        let sa = link_addr(iface, libc::ETH_P_ALL as u16)?;
        // SAFETY: binding to a valid sockaddr_ll.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        ensure!(r == 0, "binding: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: a valid timeval for SO_RCVTIMEO.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(Self { fd })
    }

    /// The sequence number following the last segment from `src:sport` to `dport` seen within
    /// `quiet` of the previous one: what the sender has sent, all of it acknowledged.
    fn next_seq(&self, src: Ipv4Addr, sport: u16, dport: u16, quiet: Duration) -> Option<u32> {
        let mut best: Option<u32> = None;
        let mut last = Instant::now();
        let mut buf = [0u8; 4096];
        while last.elapsed() < quiet {
            // SAFETY: reading into a buffer we own.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                continue;
            }
            let f = &buf[..n as usize];
            if f.len() < 54 || f[12..14] != [0x08, 0x00] || f[23] != 6 {
                continue;
            }
            let ihl = usize::from(f[14] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
            let t = 14 + ihl;
            if f[26..30] != src.octets()
                || f.len() < t + 20
                || u16::from_be_bytes([f[t], f[t + 1]]) != sport
                || u16::from_be_bytes([f[t + 2], f[t + 3]]) != dport
            {
                continue;
            }
            let seq = u32::from_be_bytes([f[t + 4], f[t + 5], f[t + 6], f[t + 7]]);
            let doff = usize::from(f[t + 12] >> 4) * 4;
            let flags = f[t + 13];
            let payload = total.saturating_sub(ihl + doff) as u32;
            // SYN and FIN count for one.
            let next = seq
                .wrapping_add(payload)
                .wrapping_add(u32::from(flags & 0x03 != 0));
            best = Some(best.map_or(next, |b| {
                if next.wrapping_sub(b) < 1 << 31 {
                    next
                } else {
                    b
                }
            }));
            last = Instant::now();
        }
        best
    }
}
