//! `POST /v1/capture`: captures inside the data plane, owned by lbd.
//!
//! lbd, not lbctl, turns the capture on and reads the ring: the ring has one reader (its
//! consumer position lives in the map), the maps are not pinned (a capture never outlives the
//! daemon that started it), a client that goes away ends its capture, and the API's
//! scopes decide who may see packets (admin only, audited: `auth::Action::Inspect`). Several captures may run at once: the kernel
//! then keeps what any of them asks for (`CaptureFilter::union`), and this task gives each
//! capture its own share, filtered and sampled again here. Each capture stops by itself after
//! its count or its duration.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use lb_api::diag::{
    CaptureEnd, CaptureEvent, CaptureInterface, CapturePoint, CaptureRequest, CaptureStop,
    CapturedPacket,
};
use lb_dataplane::capture::{self, CaptureFilter, CaptureMaps, Point};
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, oneshot},
};
use tracing::{info, warn};

use super::State;

/// Captures running at once, at most.
pub const MAX_CAPTURES: usize = 8;
/// Records read per wake-up before other work gets a turn.
const BATCH: usize = 4096;
/// Events queued per capture for its client; beyond, packets are counted as dropped.
const QUEUE: usize = 4096;

/// One capture's request, resolved against the model.
pub struct Plan {
    pub request: CaptureRequest,
    pub filter: CaptureFilter,
    pub count: u64,
    pub duration: Duration,
}

/// Why a capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the data plane has no capture maps (the XDP object predates capture)")]
    Unavailable,
    #[error("{MAX_CAPTURES} captures are running already; wait for one to end")]
    Busy,
    #[error("starting the capture: {0}")]
    Dataplane(String),
}

enum Command {
    Start {
        // Boxed: a plan is far larger than the other commands.
        plan: Box<Plan>,
        events: mpsc::Sender<CaptureEvent>,
        done: oneshot::Sender<Result<(), StartError>>,
    },
    StopAll {
        done: oneshot::Sender<()>,
    },
}

/// The handle the API uses.
pub struct Captures {
    cmd: Option<mpsc::Sender<Command>>,
    running: Arc<AtomicUsize>,
}

impl Captures {
    pub fn unavailable() -> Self {
        Self {
            cmd: None,
            running: Arc::default(),
        }
    }

    /// Captures running now (the `lb_captures_running` gauge).
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// The handle, and the task that will own `maps` (see [`Runner::run`]).
    pub fn new(maps: CaptureMaps) -> std::io::Result<(Self, Runner)> {
        let (tx, rx) = mpsc::channel(16);
        // SAFETY: the ring's descriptor belongs to `maps` (its MapData) for as long as the
        // AsyncFd owns it, and `as_raw_fd` always returns that one descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(maps, tokio::io::Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let running = Arc::new(AtomicUsize::new(0));
        Ok((
            Self {
                cmd: Some(tx),
                running: running.clone(),
            },
            Runner {
                running,
                fd,
                cmds: rx,
                sessions: Vec::new(),
                names: Names::default(),
            },
        ))
    }

    /// Starts a capture; its events (first `Started`, last `End`) come on the returned
    /// receiver. Dropping the receiver ends the capture.
    pub async fn start(&self, plan: Plan) -> Result<mpsc::Receiver<CaptureEvent>, StartError> {
        let cmd = self.cmd.as_ref().ok_or(StartError::Unavailable)?;
        let (events, rx) = mpsc::channel(QUEUE);
        let (done, answer) = oneshot::channel();
        cmd.send(Command::Start {
            plan: Box::new(plan),
            events,
            done,
        })
        .await
        .map_err(|_| StartError::Unavailable)?;
        answer.await.map_err(|_| StartError::Unavailable)??;
        Ok(rx)
    }

    /// Ends every capture (lbd is stopping): each gets its `End`.
    pub async fn stop_all(&self) {
        if let Some(cmd) = &self.cmd {
            let (done, answer) = oneshot::channel();
            if cmd.send(Command::StopAll { done }).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(2), answer).await;
            }
        }
    }
}

/// Names for the ids in records.
#[derive(Default)]
struct Names {
    vips: HashMap<u32, String>,
    backends: HashMap<u32, IpAddr>,
    ifaces: HashMap<u32, String>,
}

struct Session {
    plan: Plan,
    events: mpsc::Sender<CaptureEvent>,
    started: Instant,
    sent: u64,
    matched: u64,
    dropped: u64,
    lost_at_start: u64,
}

/// The task that owns the ring (see the module documentation).
pub struct Runner {
    running: Arc<AtomicUsize>,
    fd: AsyncFd<CaptureMaps>,
    cmds: mpsc::Receiver<Command>,
    sessions: Vec<Session>,
    names: Names,
}

/// The name of interface `ifindex` in this network namespace.
fn iface_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("if{ifindex}");
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

impl Runner {
    pub async fn run(mut self, shared: State) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut refreshed = Instant::now();
        loop {
            let reading = !self.sessions.is_empty();
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(Command::Start { plan, events, done }) => {
                        let r = self.add(&shared, *plan, events).await;
                        let _ = done.send(r);
                    }
                    Some(Command::StopAll { done }) => {
                        self.drain_ring();
                        for s in std::mem::take(&mut self.sessions) {
                            self.end(s, CaptureStop::Shutdown);
                        }
                        self.reconfigure();
                        let _ = done.send(());
                    }
                    None => return,
                },
                ready = self.fd.readable_mut(), if reading => {
                    match ready {
                        Ok(mut guard) => {
                            guard.clear_ready();
                            drop(guard);
                            self.drain_ring();
                        }
                        Err(e) => warn!(error = %e, "capture ring: poll failed"),
                    }
                }
                _ = tick.tick() => {
                    if reading {
                        // Edge-triggered readiness can be missed between a drain and its
                        // reset: the tick bounds how late such records are read.
                        self.drain_ring();
                        if refreshed.elapsed() >= Duration::from_secs(1) {
                            self.refresh_names(&shared).await;
                            refreshed = Instant::now();
                        }
                        self.expire();
                    }
                }
            }
        }
    }

    async fn refresh_names(&mut self, shared: &State) {
        let inner = shared.inner.lock().await;
        let mut names = Names::default();
        for (vip, addr, id) in inner.prog.backend_ids() {
            names.backends.insert(id, addr);
            if let Some(vid) = inner.prog.vip_id(vip) {
                names.vips.insert(vid, vip.to_string());
            }
        }
        for v in inner.vips.keys() {
            if let Some(vid) = inner.prog.vip_id(v) {
                names.vips.insert(vid, v.clone());
            }
        }
        for a in &inner.attached {
            if let Ok(i) = std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", a.iface))
                && let Ok(i) = i.trim().parse::<u32>()
            {
                names.ifaces.insert(i, a.iface.clone());
            }
        }
        self.names = names;
    }

    async fn add(
        &mut self,
        shared: &State,
        plan: Plan,
        events: mpsc::Sender<CaptureEvent>,
    ) -> Result<(), StartError> {
        if self.sessions.len() >= MAX_CAPTURES {
            return Err(StartError::Busy);
        }
        self.refresh_names(shared).await;
        let first = self.sessions.is_empty();
        if !self.fd.get_ref().ready() {
            // The capture program is loaded on first use: its verification takes a moment,
            // which no lbd start and no packet should wait for.
            let maps = self.fd.get_mut();
            tokio::task::block_in_place(|| shared.enable_capture(maps))
                .map_err(|e| StartError::Dataplane(format!("{e:#}")))?;
        }
        let lost_at_start = if first {
            let filter = plan.filter.clone();
            self.fd
                .get_mut()
                .start(&filter)
                .map_err(|e| StartError::Dataplane(e.to_string()))?;
            0
        } else {
            self.fd.get_ref().counters().map(|c| c.lost).unwrap_or(0)
        };
        let mut interfaces: Vec<CaptureInterface> = self
            .names
            .ifaces
            .iter()
            .map(|(i, n)| CaptureInterface {
                ifindex: *i,
                name: n.clone(),
            })
            .collect();
        interfaces.sort_by_key(|i| i.ifindex);
        let started = CaptureEvent::Started {
            request: plan.request.clone(),
            interfaces,
            shared: !first,
        };
        let _ = events.try_send(started);
        info!(request = ?plan.request, running = self.sessions.len() + 1, "capture started");
        self.sessions.push(Session {
            plan,
            events,
            started: Instant::now(),
            sent: 0,
            matched: 0,
            dropped: 0,
            lost_at_start,
        });
        if first {
            self.running.store(1, Ordering::Relaxed);
        } else {
            self.reconfigure();
        }
        Ok(())
    }

    /// The kernel's filter: the one capture's own, or what any of them wants; off when none
    /// runs.
    fn reconfigure(&mut self) {
        self.running.store(self.sessions.len(), Ordering::Relaxed);
        let maps = self.fd.get_mut();
        let r = if self.sessions.is_empty() {
            maps.stop()
        } else {
            let filters: Vec<&CaptureFilter> =
                self.sessions.iter().map(|s| &s.plan.filter).collect();
            maps.refilter(&CaptureFilter::union(&filters))
        };
        if let Err(e) = r {
            warn!(error = %e, "capture: cannot set the data plane's filter");
        }
    }

    fn drain_ring(&mut self) {
        let shared = self.sessions.len() > 1;
        for _ in 0..BATCH {
            let Some(rec) = self.fd.get_mut().next_record() else {
                break;
            };
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    warn!(error = %e, "capture: a malformed record in the ring");
                    continue;
                }
            };
            let mut event = None;
            for s in &mut self.sessions {
                if s.sent >= s.plan.count || !s.plan.filter.matches(&rec) {
                    continue;
                }
                s.matched += 1;
                // Alone, the kernel sampled for this capture; shared, it kept everything.
                let every = s.plan.filter.sample_every.max(1) as u64;
                if shared && !(s.matched - 1).is_multiple_of(every) {
                    continue;
                }
                let ev = event.get_or_insert_with(|| self::event(&self.names, &rec));
                match s.events.try_send(CaptureEvent::Packet(ev.clone())) {
                    Ok(()) => s.sent += 1,
                    Err(_) => s.dropped += 1,
                }
            }
        }
        self.expire();
    }

    /// Ends the captures that reached their count or duration, or whose client left.
    fn expire(&mut self) {
        let mut changed = false;
        let mut i = 0;
        while i < self.sessions.len() {
            let s = &self.sessions[i];
            let why = if s.events.is_closed() {
                None
            } else if s.sent >= s.plan.count {
                Some(CaptureStop::Count)
            } else if s.started.elapsed() >= s.plan.duration {
                Some(CaptureStop::Duration)
            } else {
                i += 1;
                continue;
            };
            let s = self.sessions.swap_remove(i);
            changed = true;
            match why {
                Some(why) => self.end(s, why),
                None => info!(packets = s.sent, "capture ended: its client went away"),
            }
        }
        if changed {
            self.reconfigure();
        }
    }

    fn end(&self, s: Session, why: CaptureStop) {
        let lost = self
            .fd
            .get_ref()
            .counters()
            .map(|c| c.lost.saturating_sub(s.lost_at_start))
            .unwrap_or(0);
        let end = CaptureEnd {
            stopped_by: why,
            packets: s.sent,
            lost_in_ring: lost,
            dropped_slow_reader: s.dropped,
            elapsed_s: s.started.elapsed().as_secs_f64(),
        };
        info!(?end, "capture ended");
        // The End event must not be lost to a full queue: wait for room, bounded.
        let tx = s.events;
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), tx.send(CaptureEvent::End(end))).await;
        });
    }
}

fn event(names: &Names, r: &capture::CapturedPacket) -> CapturedPacket {
    CapturedPacket {
        ts_unix_ns: capture::mono_to_unix_ns(r.mono_ns),
        iface: names
            .ifaces
            .get(&r.ifindex)
            .cloned()
            .unwrap_or_else(|| iface_name(r.ifindex)),
        ifindex: r.ifindex,
        cpu: r.cpu,
        rx_queue: r.rx_queue,
        point: match r.point {
            Point::Input => CapturePoint::Input,
            Point::Output => CapturePoint::Output,
        },
        action: r.action.name().to_string(),
        reason: r
            .reason
            .map(|x| x.name().to_string())
            .unwrap_or_else(|| "unknown".into()),
        vip: r.vip_id.and_then(|v| names.vips.get(&v).cloned()),
        backend: r.backend_id.and_then(|b| names.backends.get(&b).copied()),
        len: r.pkt_len,
        data_hex: CapturedPacket::hex(&r.data),
    }
}
