//! Small-packet UDP: a bounded generator on the client, counting sinks on the backends.
//!
//! Sockets belong to the namespace they were created in, so each is created inside its host
//! ([`Host::in_netns`]) and then driven from an ordinary thread. The sinks bind `0.0.0.0`:
//! under direct server return the VIP sits on the backends' `lo`, so the same socket receives
//! datagrams addressed to the VIP (XDP), to the backend itself (direct, nginx).

use std::io;
use std::mem;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tests::Host;

use crate::cpu::{CpuSample, LabCpu};
use crate::interrupted;

/// Datagrams per sendmmsg/recvmmsg call.
const BATCH: usize = 64;
/// Receive buffer of each sink, so a short burst is not lost to a scheduling hiccup.
const SINK_RCVBUF: libc::c_int = 8 << 20;
/// How often a blocked sink looks at its stop flag.
const SINK_POLL: Duration = Duration::from_millis(100);
/// Hard bound on a sink thread's life, whatever happens to its owner.
const SINK_MAX_LIFE: Duration = Duration::from_secs(3 * 3600);

/// One counting UDP receiver per backend, running until dropped.
pub struct Sinks {
    stop: Arc<AtomicBool>,
    counts: Vec<Arc<AtomicU64>>,
    threads: Vec<JoinHandle<()>>,
}

impl Sinks {
    /// Binds `0.0.0.0:port` (UDP) inside each of `hosts` and starts counting.
    pub fn start(hosts: &[Host], port: u16) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut sinks = Sinks {
            stop: stop.clone(),
            counts: Vec::new(),
            threads: Vec::new(),
        };
        for host in hosts {
            let sock = host
                .in_netns(|| UdpSocket::bind(("0.0.0.0", port)))?
                .with_context(|| format!("binding UDP 0.0.0.0:{port} on {}", host.name()))?;
            set_int(&sock, libc::SO_RCVBUFFORCE, SINK_RCVBUF)
                .with_context(|| format!("SO_RCVBUFFORCE on {}", host.name()))?;
            sock.set_read_timeout(Some(SINK_POLL))?;
            let count = Arc::new(AtomicU64::new(0));
            let (c, s) = (count.clone(), stop.clone());
            let t = std::thread::Builder::new()
                .name(format!("sink:{}", host.name()))
                .spawn(move || sink_loop(&sock, &c, &s))
                .context("spawning a sink thread")?;
            sinks.counts.push(count);
            sinks.threads.push(t);
        }
        Ok(sinks)
    }

    /// Datagrams received so far, per backend.
    pub fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.counts().iter().sum()
    }
}

impl Drop for Sinks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn sink_loop(sock: &UdpSocket, count: &AtomicU64, stop: &AtomicBool) {
    let started = Instant::now();
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: an all-zero mmsghdr is valid (no name, no control data).
            let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    let fd = sock.as_raw_fd();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < SINK_MAX_LIFE {
        // SAFETY: msgs, iov and bufs live (and stay put) for the whole loop; the kernel writes
        // at most iov_len bytes into each buffer.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            count.fetch_add(n as u64, Ordering::Relaxed);
        }
        // n < 0: the read timeout (EAGAIN) or EINTR; look at the stop flag again.
    }
}

fn set_int(sock: &UdpSocket, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The generator's bounds and packet shape.
#[derive(Debug, Clone)]
pub struct Generator {
    /// Distinct flows (source ports), spread round-robin over the targets.
    pub flows: usize,
    pub payload: usize,
    pub duration: Duration,
    pub max_packets: u64,
}

/// What one UDP run measured.
#[derive(Debug, Clone, Copy)]
pub struct UdpResult {
    pub sent: u64,
    pub received: u64,
    pub send_secs: f64,
    pub cpu_busy_us: f64,
    pub lab_busy_us: f64,
}

impl UdpResult {
    pub fn sent_pps(&self) -> f64 {
        self.sent as f64 / self.send_secs.max(1e-9)
    }
    pub fn received_pps(&self) -> f64 {
        self.received as f64 / self.send_secs.max(1e-9)
    }
    pub fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            1.0 - self.received as f64 / self.sent as f64
        }
    }
}

/// Sends from `client` to `targets` (flow i goes to target i mod n) for at most
/// `gen.duration` and `gen.max_packets`, then waits briefly for the sinks to drain and counts
/// what they received.
pub fn run(
    client: &Host,
    lab_cpu: &LabCpu,
    targets: &[SocketAddr],
    sinks: &Sinks,
    generator: &Generator,
) -> Result<UdpResult> {
    if targets.is_empty() || generator.flows == 0 {
        bail!("UDP run without targets or flows");
    }
    let socks: Vec<UdpSocket> = client
        .in_netns(|| -> io::Result<Vec<UdpSocket>> {
            (0..generator.flows)
                .map(|i| {
                    let s = UdpSocket::bind("0.0.0.0:0")?;
                    s.connect(targets[i % targets.len()])?;
                    Ok(s)
                })
                .collect()
        })?
        .context("creating the generator's sockets on the client")?;
    let payload = vec![0x5au8; generator.payload];
    let base = sinks.total();
    let lab_before = lab_cpu.sample()?;
    let before = CpuSample::now()?;
    let started = Instant::now();
    let deadline = started + generator.duration;
    let mut sent = 0u64;
    let mut send_errors = 0u64;
    'outer: loop {
        for s in &socks {
            if Instant::now() >= deadline || sent >= generator.max_packets || interrupted() {
                break 'outer;
            }
            let want = BATCH.min((generator.max_packets - sent) as usize);
            match send_batch(s, &payload, want) {
                Ok(n) => sent += n as u64,
                // ENOBUFS/ECONNREFUSED (an ICMP error of a missing listener) are counted, the
                // loop stays bounded by the deadline.
                Err(_) => send_errors += 1,
            }
        }
    }
    let send_secs = started.elapsed().as_secs_f64();
    // Let the datagrams in flight reach the sinks.
    std::thread::sleep(Duration::from_millis(300));
    let after = CpuSample::now()?;
    let lab_after = lab_cpu.sample()?;
    let received = sinks.total().saturating_sub(base);
    if sent == 0 {
        bail!("the generator sent nothing ({send_errors} send errors)");
    }
    Ok(UdpResult {
        sent,
        received,
        send_secs,
        cpu_busy_us: after.busy_us_since(&before),
        lab_busy_us: lab_after.busy_us_since(&lab_before),
    })
}

fn send_batch(sock: &UdpSocket, payload: &[u8], n: usize) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    let iov_ptr: *mut libc::iovec = &mut iov;
    let mut msgs: Vec<libc::mmsghdr> = (0..n)
        .map(|_| {
            // SAFETY: an all-zero mmsghdr is valid; every entry points at the same iovec.
            let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
            m.msg_hdr.msg_iov = iov_ptr;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: the socket is connected (no address needed); msgs and iov outlive the call and
    // the kernel only reads the payload.
    let rc = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), n as libc::c_uint, 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}
