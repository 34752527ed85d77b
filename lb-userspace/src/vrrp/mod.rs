//! VIP failover between balancers with VRRP version 3 (RFC 5798), interoperable with
//! keepalived (`vrrp_version 3`): the pure state machine ([`machine`]), the wire format
//! ([`packet`]), sockets and addresses ([`io`]), and the task that drives them ([`spawn`]).

pub mod io;
pub mod machine;
pub mod packet;
mod status;
pub mod track;

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{Instant, sleep_until},
};
use tracing::{info, warn};

pub use self::status::{Counters, Status};
use self::{
    machine::{Action, Event, Machine, Params, State, Timer},
    packet::{Addresses, Advert, GROUP_V4},
};
use crate::config::VrrpConfig;

/// A running virtual router: its status for the API and the means to stop it.
pub struct Handle {
    status: Arc<Mutex<Status>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Handle {
    /// A copy of the current status and counters.
    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The shared status, for readers that outlive a borrow of the handle (the API).
    pub fn status_ref(&self) -> Arc<Mutex<Status>> {
        self.status.clone()
    }

    /// Leaves cleanly: a master sends a priority-0 advert (the backup takes over at once) and
    /// removes the VIPs. Waits up to 2 s for that to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .is_err()
        {
            warn!("vrrp: the router did not stop within 2 s");
        }
    }
}

struct Router {
    cfg: VrrpConfig,
    machine: Machine,
    socket: io::VrrpSocket,
    primary: Ipv4Addr,
    mac: [u8; 6],
    status: Arc<Mutex<Status>>,
    deadline: Option<(Timer, Instant)>,
}

/// Opens the socket and starts the router task. `fault` is the tracking signal: `true` means
/// this node must not serve (the router enters the fault state and leaves mastership).
pub fn spawn(cfg: VrrpConfig, fault: watch::Receiver<bool>) -> Result<Handle> {
    if !cfg.addresses[0].addr.is_ipv4() {
        bail!("vrrp: IPv6 virtual routers are not supported by the socket layer yet");
    }
    let primary = match cfg.source {
        Some(IpAddr::V4(a)) => a,
        _ => io::primary_v4(&cfg.interface)
            .with_context(|| format!("vrrp: no IPv4 address on {}", cfg.interface))?,
    };
    let mac = io::mac_of(&cfg.interface)
        .with_context(|| format!("vrrp: reading the MAC of {}", cfg.interface))?;
    let socket = io::VrrpSocket::open_v4(&cfg.interface, cfg.unicast_peers.is_empty())
        .with_context(|| format!("vrrp: opening the raw socket on {}", cfg.interface))?;
    let machine = Machine::new(Params {
        priority: cfg.priority,
        interval: cfg.interval,
        preempt: cfg.preempt,
        primary: IpAddr::V4(primary),
    });
    let status = Arc::new(Mutex::new(Status::new(&cfg, IpAddr::V4(primary))));
    let (stop, stop_rx) = watch::channel(false);
    let router = Router {
        cfg,
        machine,
        socket,
        primary,
        mac,
        status: status.clone(),
        deadline: None,
    };
    let task = tokio::spawn(router.run(fault, stop_rx));
    Ok(Handle { status, stop, task })
}

impl Router {
    async fn run(mut self, mut fault: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        // A previous lbd killed while master may have left the VIPs behind.
        for a in &self.cfg.addresses {
            if let Ok(true) = io::remove_address(a, &self.cfg.interface).await {
                info!(vip = %a, "vrrp: removed a VIP left from an earlier run");
            }
        }
        if *fault.borrow_and_update() {
            self.apply(Event::Fault(true)).await;
        }
        self.apply(Event::Startup).await;
        let mut buf = vec![0u8; 2048];
        loop {
            let deadline = self.deadline;
            tokio::select! {
                r = self.socket.recv(&mut buf) => match r {
                    Ok(n) => {
                        let pkt = buf[..n].to_vec();
                        self.on_packet(&pkt).await;
                    }
                    Err(e) => {
                        warn!(error = %e, "vrrp: receive failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = async { sleep_until(deadline.map(|d| d.1).unwrap_or_else(Instant::now)).await },
                    if deadline.is_some() => {
                    self.deadline = None;
                    let ev = match deadline.map(|d| d.0) {
                        Some(Timer::Adver) => Event::AdverTimer,
                        _ => Event::MasterDown,
                    };
                    self.apply(ev).await;
                }
                r = fault.changed() => {
                    if r.is_err() {
                        // The daemon dropped the tracker: keep running without tracking.
                        fault = watch::channel(false).1;
                        continue;
                    }
                    let f = *fault.borrow_and_update();
                    self.with_status(|s| s.fault = f);
                    self.apply(Event::Fault(f)).await;
                }
                _ = stop.changed() => {
                    self.apply(Event::Shutdown).await;
                    info!("vrrp: stopped");
                    return;
                }
            }
        }
    }

    fn with_status(&self, f: impl FnOnce(&mut Status)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    async fn on_packet(&mut self, pkt: &[u8]) {
        let r = match packet::decode_ipv4(pkt, self.cfg.vrid) {
            Ok(r) => r,
            Err(reason) => {
                // Our own adverts never loop back (IP_MULTICAST_LOOP off), so count everything.
                self.with_status(|s| s.counters.reject(reason));
                tracing::debug!(reason = %reason, "vrrp: advert dropped");
                return;
            }
        };
        if r.source == IpAddr::V4(self.primary) {
            return;
        }
        if !self.cfg.unicast_peers.is_empty() && !self.cfg.unicast_peers.contains(&r.source) {
            self.with_status(|s| s.counters.not_a_peer += 1);
            return;
        }
        let a = &r.advert;
        self.with_status(|s| {
            s.counters.adverts_received += 1;
            s.last_advert_from = Some(r.source);
            s.last_advert_priority = Some(a.priority);
        });
        self.apply(Event::Advert {
            priority: a.priority,
            interval: a.interval,
            source: r.source,
        })
        .await;
        if self.machine.state() == State::Backup && a.priority > 0 {
            self.with_status(|s| s.master = Some(r.source));
        }
    }

    async fn apply(&mut self, event: Event) {
        let before = self.machine.state();
        let actions = self.machine.handle(event);
        for action in actions {
            self.perform(action).await;
        }
        let after = self.machine.state();
        let primary = self.primary;
        let mdi = self.machine.master_down_interval();
        let mi = self.machine.master_interval();
        self.with_status(|s| {
            s.state = after;
            s.master_interval_cs = mi.get();
            s.master_down_ms = mdi.as_millis() as u64;
            if after == State::Master {
                s.master = Some(IpAddr::V4(primary));
            } else if before == State::Master || after != State::Backup {
                s.master = None;
            }
            if before != after {
                s.counters.transition(after);
            }
        });
        if before != after {
            info!(from = before.name(), to = after.name(), event = ?event, "vrrp: state changed");
        }
    }

    async fn perform(&mut self, action: Action) {
        match action {
            Action::SendAdvert(priority) => self.send_advert(priority),
            Action::TakeAddresses => {
                for a in &self.cfg.addresses {
                    if let Err(e) = io::add_address(a, &self.cfg.interface).await {
                        warn!(vip = %a, error = %e, "vrrp: cannot add the VIP");
                    }
                }
                self.announce();
            }
            Action::ReleaseAddresses => {
                for a in &self.cfg.addresses {
                    if let Err(e) = io::remove_address(a, &self.cfg.interface).await {
                        warn!(vip = %a, error = %e, "vrrp: cannot remove the VIP");
                    }
                }
            }
            Action::Arm(t, d) => self.deadline = Some((t, Instant::now() + d)),
            Action::Disarm => self.deadline = None,
        }
    }

    fn send_advert(&mut self, priority: u8) {
        let addrs = self
            .cfg
            .addresses
            .iter()
            .filter_map(|a| match a.addr {
                IpAddr::V4(v) => Some(v),
                IpAddr::V6(_) => None,
            })
            .collect();
        let advert = Advert {
            vrid: self.cfg.vrid,
            priority,
            interval: self.cfg.interval,
            addresses: Addresses::V4(addrs),
        };
        let dsts: Vec<Ipv4Addr> = if self.cfg.unicast_peers.is_empty() {
            vec![GROUP_V4]
        } else {
            self.cfg
                .unicast_peers
                .iter()
                .filter_map(|p| match p {
                    IpAddr::V4(v) => Some(*v),
                    IpAddr::V6(_) => None,
                })
                .collect()
        };
        for dst in dsts {
            let pkt = advert.encode_ipv4(self.primary, dst);
            match self.socket.send(&pkt, dst) {
                Ok(()) => self.with_status(|s| s.counters.adverts_sent += 1),
                Err(e) => {
                    self.with_status(|s| s.counters.send_errors += 1);
                    warn!(%dst, error = %e, "vrrp: cannot send the advert");
                }
            }
        }
    }

    /// Gratuitous ARP for every VIP, so switches and neighbours learn the new owner's MAC.
    fn announce(&mut self) {
        for a in &self.cfg.addresses {
            if let IpAddr::V4(ip) = a.addr {
                let frame = io::gratuitous_arp(self.mac, ip);
                match io::send_frame(&self.cfg.interface, &frame) {
                    Ok(()) => self.with_status(|s| s.counters.garp_sent += 1),
                    Err(e) => warn!(vip = %ip, error = %e, "vrrp: gratuitous ARP failed"),
                }
            }
        }
    }
}
