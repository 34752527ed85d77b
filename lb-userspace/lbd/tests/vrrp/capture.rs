//! A packet capture inside one lab namespace (`AF_PACKET`, every frame on eth0, sent and
//! received), bounded in time and count, with just enough parsing to judge VRRP adverts and
//! neighbour advertisements.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tests::Host;

/// A running capture; [`Capture::finish`] stops it and returns the kept frames.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
}

/// Longest a capture runs, whatever happens to the test.
const MAX_TIME: Duration = Duration::from_secs(90);
/// Most frames a capture keeps.
const MAX_FRAMES: usize = 50_000;

impl Capture {
    /// Starts capturing on `host`'s eth0, keeping the frames `keep` accepts. Returns once the
    /// socket is open, so nothing sent afterwards is missed.
    pub fn start(host: &Host, keep: fn(&[u8]) -> bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = host
            .spawn_thread(move || {
                let fd = open("eth0");
                let _ = ready_tx.send(());
                let t0 = Instant::now();
                let mut kept = Vec::new();
                let mut buf = vec![0u8; 4096];
                while !flag.load(Ordering::Relaxed)
                    && t0.elapsed() < MAX_TIME
                    && kept.len() < MAX_FRAMES
                {
                    // SAFETY: `buf` is writable for its length; the socket has a 50 ms timeout.
                    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
                    if n > 0 && keep(&buf[..n as usize]) {
                        kept.push(buf[..n as usize].to_vec());
                    }
                }
                // SAFETY: closing the descriptor opened above, once.
                unsafe { libc::close(fd) };
                kept
            })
            .expect("capture thread");
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("capture socket open");
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the capture; the kept frames.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("capture thread"))
            .unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open(iface: &str) -> libc::c_int {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain syscalls on a descriptor this function owns; structs are plain old data.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, libc::c_int::from(proto));
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let name = std::ffi::CString::new(iface).expect("name");
        let mut sa: libc::sockaddr_ll = std::mem::zeroed();
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto;
        sa.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as libc::c_int;
        let r = libc::bind(
            fd,
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 50_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        fd
    }
}

/// A VRRP advert seen on the wire.
#[derive(Debug, Clone)]
pub struct Seen {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL / hop limit.
    pub hops: u8,
    /// The VRRP message.
    pub msg: Vec<u8>,
}

/// The VRRP advert in an Ethernet frame, IPv4 or IPv6 (no extension headers).
pub fn vrrp(frame: &[u8]) -> Option<Seen> {
    let (ethertype, ip) = (
        u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]),
        frame.get(14..)?,
    );
    match ethertype {
        0x0800 if ip.len() >= 20 && ip[9] == 112 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            Some(Seen {
                src: IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])),
                dst: IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19])),
                hops: ip[8],
                msg: ip.get(ihl..)?.to_vec(),
            })
        }
        0x86dd if ip.len() >= 40 && ip[6] == 112 => Some(Seen {
            src: IpAddr::V6(v6(&ip[8..24])),
            dst: IpAddr::V6(v6(&ip[24..40])),
            hops: ip[7],
            msg: ip[40..].to_vec(),
        }),
        _ => None,
    }
}

/// A neighbour advertisement seen on the wire.
#[derive(Debug, Clone)]
pub struct Na {
    pub eth_src: [u8; 6],
    pub dst: Ipv6Addr,
    pub hops: u8,
    /// The R/S/O flag byte.
    pub flags: u8,
    pub target: Ipv6Addr,
    /// The target link-layer address option.
    pub tlla: Option<[u8; 6]>,
}

/// The ICMPv6 neighbour advertisement in an Ethernet frame.
pub fn neighbour_advert(frame: &[u8]) -> Option<Na> {
    if frame.get(12..14)? != [0x86, 0xdd] {
        return None;
    }
    let ip = frame.get(14..)?;
    if ip.len() < 40 + 24 || ip[6] != 58 || ip[40] != 136 {
        return None;
    }
    let icmp = &ip[40..];
    let mut tlla = None;
    let mut opts = &icmp[24..];
    while opts.len() >= 8 && opts[1] > 0 {
        let len = usize::from(opts[1]) * 8;
        if opts[0] == 2 && len >= 8 {
            tlla = Some(opts[2..8].try_into().ok()?);
        }
        opts = opts.get(len..).unwrap_or(&[]);
    }
    Some(Na {
        eth_src: frame[6..12].try_into().ok()?,
        dst: v6(&ip[24..40]),
        hops: ip[7],
        flags: icmp[4],
        target: v6(&icmp[8..24]),
        tlla,
    })
}

fn v6(b: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[..16]);
    Ipv6Addr::from(o)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .trim()
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).expect("hex MAC byte"))
        .collect();
    v.try_into().expect("6-byte MAC")
}
