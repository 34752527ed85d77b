//! VIP failover between balancers with VRRP version 3 (RFC 5798), interoperable with
//! keepalived (`vrrp_version 3`): the pure state machine ([`machine`]), the wire format
//! ([`packet`]), sockets and addresses ([`io`] for IPv4, [`io6`] for IPv6), and the tasks that
//! drive them ([`spawn`]): one virtual router per address family of the `[vrrp]` section, each
//! following its interface's addresses ([`ifwatch`], [`addrs`]).

pub mod addrs;
mod follow;
pub mod ifwatch;
pub mod io;
pub mod io6;
pub mod kernel;
mod link;
pub mod machine;
pub mod packet;
mod status;
pub mod track;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{Instant, sleep_until},
};
use tracing::{info, warn};

pub use self::status::{Counters, Family, Overview, Status};
use self::{
    machine::{Action, Event, Machine, Params, State, Timer},
    packet::{Addresses, Advert, GROUP_V4, GROUP_V6, Received, Reject},
};
use lb_config::{VirtualAddr, VrrpConfig};

/// The live status of every virtual router, shared with the API and metrics.
#[derive(Clone, Default)]
pub struct Statuses(Vec<Arc<Mutex<Status>>>);

impl Statuses {
    /// A copy of every router's status and counters.
    pub fn overview(&self) -> Overview {
        Overview {
            instances: self
                .0
                .iter()
                .filter_map(|s| s.lock().ok().map(|s| s.clone()))
                .collect(),
        }
    }
}

/// The running virtual routers: their status for the API and the means to stop them.
pub struct Handle {
    statuses: Statuses,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Handle {
    /// A copy of the current status and counters of every router.
    pub fn status(&self) -> Overview {
        self.statuses.overview()
    }

    /// The shared statuses, for readers that outlive a borrow of the handle (the API).
    pub fn status_ref(&self) -> Statuses {
        self.statuses.clone()
    }

    /// Leaves cleanly: a master sends a priority-0 advert (the backup takes over at once) and
    /// removes the VIPs. Waits up to 2 s for that to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let all = join_all(self.tasks);
        if tokio::time::timeout(Duration::from_secs(2), all)
            .await
            .is_err()
        {
            warn!("vrrp: the routers did not stop within 2 s");
        }
    }
}

async fn join_all(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// The socket of one family's router.
enum Socket {
    V4(io::VrrpSocket),
    V6(io6::VrrpSocket6),
}

impl Socket {
    /// Opens `family`'s socket on `iface`, joined to the group when `multicast`.
    fn open(iface: &str, family: Family, multicast: bool) -> Result<Self> {
        Ok(match family {
            Family::Ipv4 => Socket::V4(
                io::VrrpSocket::open_v4(iface, multicast)
                    .with_context(|| format!("vrrp: opening the raw IPv4 socket on {iface}"))?,
            ),
            Family::Ipv6 => Socket::V6(
                io6::VrrpSocket6::open(iface, multicast)
                    .with_context(|| format!("vrrp: opening the raw IPv6 socket on {iface}"))?,
            ),
        })
    }

    /// The index of the interface the socket is bound to.
    fn ifindex(&self) -> u32 {
        match self {
            Socket::V4(s) => s.ifindex(),
            Socket::V6(s) => s.ifindex(),
        }
    }

    /// Waits for the next packet and decodes it for `vrid`; the TTL / hop limit must be 255
    /// when `check_ttl`.
    async fn recv(
        &self,
        buf: &mut [u8],
        vrid: u8,
        check_ttl: bool,
    ) -> std::io::Result<Result<Received, Reject>> {
        match self {
            Socket::V4(s) => {
                let n = s.recv(buf).await?;
                Ok(packet::decode_ipv4_with(&buf[..n], vrid, check_ttl))
            }
            Socket::V6(s) => {
                let r = s.recv(buf).await?;
                // The kernel always attaches both control messages once asked; a packet
                // without a hop limit cannot be shown to come from this link.
                let hops = match r.hop_limit {
                    _ if !check_ttl => packet::TTL,
                    Some(h) => h,
                    None => return Ok(Err(Reject::Ttl)),
                };
                let dst = r.dst.unwrap_or(GROUP_V6);
                Ok(packet::decode_message(
                    &buf[..r.len],
                    IpAddr::V6(r.src),
                    IpAddr::V6(dst),
                    hops,
                    vrid,
                ))
            }
        }
    }
}

struct Router {
    cfg: VrrpConfig,
    family: Family,
    /// This family's virtual addresses.
    addresses: Vec<VirtualAddr>,
    /// This family's unicast peers (empty: multicast).
    peers: Vec<IpAddr>,
    machine: Machine,
    socket: Socket,
    /// Adds and removes the virtual addresses.
    kernel: rtnetlink::Handle,
    /// The advert source; meaningful only while `address_fault` is `None`.
    primary: IpAddr,
    /// How the primary is chosen from the interface's addresses.
    rule: addrs::Rule,
    /// The interface's addresses, as rtnetlink reports them.
    if_addrs: ifwatch::Addresses,
    /// Why there is no usable primary (the router is then held in fault and sends nothing).
    address_fault: Option<String>,
    /// What tracking says (`true`: must not serve).
    track_fault: bool,
    /// The fault last given to the machine: tracking or no usable primary.
    faulted: bool,
    mac: [u8; 6],
    status: Arc<Mutex<Status>>,
    deadline: Option<(Timer, Instant)>,
    /// When to announce the VIPs a second time after becoming master.
    reannounce: Option<Instant>,
    /// When to announce them next while master (`garp_master_refresh`).
    refresh: Option<Instant>,
    /// The interface the socket is bound to was deleted or replaced; the socket is reopened
    /// once an interface of the name exists (see [`link`]).
    link_lost: bool,
    /// When to try reopening the socket again after a failure.
    reopen_retry: Option<Instant>,
}

/// Opens the sockets and starts one router task per address family in `cfg.addresses`.
/// `fault` is the tracking signal: `true` means this node must not serve (every router enters
/// the fault state and leaves mastership).
pub fn spawn(cfg: VrrpConfig, fault: watch::Receiver<bool>) -> Result<Handle> {
    let mac = io::mac_of(&cfg.interface)
        .with_context(|| format!("vrrp: reading the MAC of {}", cfg.interface))?;
    let (if_addrs, watcher) = ifwatch::spawn(cfg.interface.clone())
        .context("vrrp: opening the rtnetlink socket that follows the interface's addresses")?;
    let mut routers = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        let addresses: Vec<VirtualAddr> = cfg
            .addresses
            .iter()
            .copied()
            .filter(|a| Family::of(a.addr) == family)
            .collect();
        if addresses.is_empty() {
            continue;
        }
        routers.push(Router::open(
            &cfg,
            family,
            addresses,
            mac,
            if_addrs.clone(),
        )?);
    }
    drop(if_addrs);
    let (stop, stop_rx) = watch::channel(false);
    let statuses = Statuses(routers.iter().map(|r| r.status.clone()).collect());
    let mut tasks: Vec<JoinHandle<()>> = routers
        .into_iter()
        .map(|r| tokio::spawn(r.run(fault.clone(), stop_rx.clone())))
        .collect();
    // Ends by itself once the routers (its receivers) are gone.
    tasks.push(watcher);
    Ok(Handle {
        statuses,
        stop,
        tasks,
    })
}

impl Router {
    fn open(
        cfg: &VrrpConfig,
        family: Family,
        addresses: Vec<VirtualAddr>,
        mac: [u8; 6],
        if_addrs: ifwatch::Addresses,
    ) -> Result<Self> {
        let iface = &cfg.interface;
        let peers: Vec<IpAddr> = cfg
            .unicast_peers
            .iter()
            .copied()
            .filter(|p| Family::of(*p) == family)
            .collect();
        let multicast = peers.is_empty();
        let configured = match family {
            Family::Ipv4 => cfg.source,
            Family::Ipv6 => cfg.source_v6,
        };
        let rule = addrs::Rule {
            family,
            interface: iface.clone(),
            configured,
            vips: addresses.iter().map(|a| a.addr).collect(),
            global: peers.first().is_some_and(|p| !is_link_local(*p)),
        };
        // The interface's addresses come with the first dump; until then nothing is sent.
        let primary = configured.unwrap_or(match family {
            Family::Ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::Ipv6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        if family == Family::Ipv6
            && multicast
            && !addresses.first().is_some_and(|a| is_link_local(a.addr))
        {
            info!(
                "vrrp: RFC 5798 wants the first IPv6 virtual address to be link-local \
                 (keepalived logs the same); running anyway"
            );
        }
        let socket = Socket::open(iface, family, multicast)?;
        let kernel = kernel::connect().context("vrrp: opening a route-netlink socket")?;
        let machine = Machine::new(Params {
            priority: cfg.priority,
            interval: cfg.interval,
            preempt: cfg.preempt,
            primary,
        });
        let mut status = status::initial(cfg, family, primary, configured.is_some());
        status.address_fault = Some(WAITING.to_string());
        let status = Arc::new(Mutex::new(status));
        Ok(Self {
            cfg: cfg.clone(),
            family,
            addresses,
            peers,
            machine,
            socket,
            kernel,
            primary,
            rule,
            if_addrs,
            address_fault: Some(WAITING.to_string()),
            track_fault: false,
            faulted: false,
            mac,
            status,
            deadline: None,
            reannounce: None,
            refresh: None,
            link_lost: false,
            reopen_retry: None,
        })
    }
}

fn is_link_local(a: IpAddr) -> bool {
    matches!(a, IpAddr::V6(v) if io6::is_link_local(v))
}

/// The reason shown until the first address dump arrives.
const WAITING: &str = "waiting for the interface's addresses (rtnetlink)";

impl Router {
    async fn run(mut self, mut fault: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        // A previous lbd killed while master may have left the VIPs behind.
        for a in &self.addresses {
            if let Ok(true) = kernel::remove_address(&self.kernel, a, &self.cfg.interface).await {
                info!(vip = %a, "vrrp: removed a VIP left from an earlier run");
            }
        }
        // The primary comes from the interface's addresses: wait for the first dump.
        let first = tokio::select! {
            r = self.if_addrs.wait_for(Option::is_some) => r.ok().and_then(|s| s.clone()),
            _ = stop.changed() => return,
        };
        self.track_fault = *fault.borrow_and_update();
        self.with_status(|s| s.fault = self.track_fault);
        self.if_addrs.borrow_and_update();
        match first {
            Some(snapshot) => self.on_interface(&snapshot).await,
            None => self.sync_fault().await,
        }
        self.apply(Event::Startup).await;
        let mut buf = vec![0u8; 2048];
        loop {
            let deadline = self.deadline;
            tokio::select! {
                r = self.socket.recv(&mut buf, self.cfg.vrid, self.peers.is_empty()) => match r {
                    Ok(r) => self.on_packet(r).await,
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
                _ = async { sleep_until(self.reannounce.unwrap_or_else(Instant::now)).await },
                    if self.reannounce.is_some() => {
                    self.reannounce = None;
                    if self.machine.state() == State::Master {
                        self.announce(self.cfg.garp_repeat);
                    }
                }
                _ = async { sleep_until(self.refresh.unwrap_or_else(Instant::now)).await },
                    if self.refresh.is_some() => {
                    self.refresh = None;
                    if self.machine.state() == State::Master {
                        self.announce(self.cfg.garp_master_refresh_repeat);
                        self.refresh = self.cfg.garp_master_refresh.map(|d| Instant::now() + d);
                    }
                }
                r = fault.changed() => {
                    if r.is_err() {
                        // The daemon dropped the tracker: keep running without tracking.
                        fault = watch::channel(false).1;
                        continue;
                    }
                    let f = *fault.borrow_and_update();
                    self.track_fault = f;
                    self.with_status(|s| s.fault = f);
                    self.sync_fault().await;
                }
                r = self.if_addrs.changed() => {
                    if r.is_err() {
                        // Never happens while a router runs; keep the last addresses.
                        warn!(family = self.family.name(), "vrrp: the address watcher ended");
                        self.if_addrs = watch::channel(None).1;
                        continue;
                    }
                    let snapshot = self.if_addrs.borrow_and_update().clone();
                    if let Some(s) = snapshot {
                        self.on_interface(&s).await;
                    }
                }
                _ = async { sleep_until(self.reopen_retry.unwrap_or_else(Instant::now)).await },
                    if self.reopen_retry.is_some() => {
                    self.reopen_retry = None;
                    let snapshot = self.if_addrs.borrow().clone();
                    if let Some(s) = snapshot {
                        self.on_interface(&s).await;
                    }
                }
                _ = stop.changed() => {
                    self.apply(Event::Shutdown).await;
                    info!(family = self.family.name(), "vrrp: stopped");
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

    async fn on_packet(&mut self, r: Result<Received, Reject>) {
        let r = match r {
            Ok(r) => r,
            Err(reason) => {
                // Our own adverts never loop back (multicast loop off), so count everything.
                self.with_status(|s| status::count_reject(&mut s.counters, reason));
                tracing::debug!(family = self.family.name(), reason = %reason, "vrrp: advert dropped");
                return;
            }
        };
        if r.source == self.primary {
            return;
        }
        if !self.peers.is_empty() && !self.peers.contains(&r.source) {
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
                s.master = Some(primary);
            } else if before == State::Master || after != State::Backup {
                s.master = None;
            }
            if before != after {
                status::count_transition(&mut s.counters, after);
            }
        });
        if before != after {
            info!(
                family = self.family.name(),
                from = before.name(),
                to = after.name(),
                event = ?event,
                "vrrp: state changed"
            );
        }
    }

    async fn perform(&mut self, action: Action) {
        match action {
            Action::SendAdvert(priority) => self.send_advert(priority),
            Action::TakeAddresses => {
                for a in &self.addresses {
                    if let Err(e) = kernel::add_address(&self.kernel, a, &self.cfg.interface).await
                    {
                        warn!(vip = %a, error = %e, "vrrp: cannot add the VIP");
                    }
                }
                self.announce(self.cfg.garp_repeat);
                let now = Instant::now();
                self.reannounce = self.cfg.garp_master_delay.map(|d| now + d);
                self.refresh = self.cfg.garp_master_refresh.map(|d| now + d);
            }
            Action::ReleaseAddresses => {
                self.reannounce = None;
                self.refresh = None;
                for a in &self.addresses {
                    if let Err(e) =
                        kernel::remove_address(&self.kernel, a, &self.cfg.interface).await
                    {
                        warn!(vip = %a, error = %e, "vrrp: cannot remove the VIP");
                    }
                }
            }
            Action::Arm(t, d) => self.deadline = Some((t, Instant::now() + d)),
            Action::Disarm => self.deadline = None,
        }
    }

    fn send_advert(&mut self, priority: u8) {
        if self.address_fault.is_some() {
            // Never from an address the host does not have (a leaving master's priority-0
            // advert included: the backup then waits out its master-down interval).
            tracing::debug!(
                family = self.family.name(),
                priority,
                "vrrp: advert not sent: no usable primary address"
            );
            return;
        }
        let addresses = match self.family {
            Family::Ipv4 => {
                Addresses::V4(self.addresses.iter().filter_map(|a| v4(a.addr)).collect())
            }
            Family::Ipv6 => {
                Addresses::V6(self.addresses.iter().filter_map(|a| v6(a.addr)).collect())
            }
        };
        let advert = Advert {
            vrid: self.cfg.vrid,
            priority,
            interval: self.cfg.interval,
            addresses,
        };
        let dsts: Vec<IpAddr> = if self.peers.is_empty() {
            match self.family {
                Family::Ipv4 => vec![IpAddr::V4(GROUP_V4)],
                Family::Ipv6 => vec![IpAddr::V6(GROUP_V6)],
            }
        } else {
            self.peers.clone()
        };
        for dst in dsts {
            let r = match (&self.socket, self.primary, dst) {
                (Socket::V4(s), IpAddr::V4(src), IpAddr::V4(d)) => {
                    s.send(&advert.encode_ipv4(src, d), d)
                }
                (Socket::V6(s), IpAddr::V6(src), IpAddr::V6(d)) => {
                    s.send(&advert.encode(self.primary, dst), src, d)
                }
                _ => Err(std::io::Error::other("address family mismatch")),
            };
            match r {
                Ok(()) => self.with_status(|s| s.counters.adverts_sent += 1),
                Err(e) => {
                    self.with_status(|s| s.counters.send_errors += 1);
                    warn!(%dst, error = %e, "vrrp: cannot send the advert");
                }
            }
        }
    }

    /// Gratuitous ARP (IPv4) or an unsolicited neighbour advertisement (IPv6) for every VIP,
    /// `repeat` times, so switches and neighbours learn (or keep) the owner's MAC: the bursts
    /// on becoming master (`garp_repeat`) and the periodic refresh while master
    /// (`garp_master_refresh_repeat`), all counted in `garp_sent` / `na_sent`.
    fn announce(&mut self, repeat: u8) {
        let repeat = usize::from(repeat.max(1));
        for a in std::iter::repeat_n(&self.addresses, repeat).flatten() {
            let frame = match a.addr {
                IpAddr::V4(ip) => io::gratuitous_arp(self.mac, ip),
                IpAddr::V6(ip) => io6::unsolicited_na(self.mac, ip),
            };
            match io::send_frame(&self.cfg.interface, &frame) {
                Ok(()) => self.with_status(|s| match a.addr {
                    IpAddr::V4(_) => s.counters.garp_sent += 1,
                    IpAddr::V6(_) => s.counters.na_sent += 1,
                }),
                Err(e) => warn!(vip = %a.addr, error = %e, "vrrp: announcing the VIP failed"),
            }
        }
    }
}

fn v4(a: IpAddr) -> Option<Ipv4Addr> {
    match a {
        IpAddr::V4(v) => Some(v),
        IpAddr::V6(_) => None,
    }
}

fn v6(a: IpAddr) -> Option<Ipv6Addr> {
    match a {
        IpAddr::V6(v) => Some(v),
        IpAddr::V4(_) => None,
    }
}
