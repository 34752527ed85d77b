//! Keeping a set of addresses resolved: kernel notifications for quick updates, a periodic
//! re-check for what notifications cannot show, and one event per change of result.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::neighbour::NeighbourState;
use rtnetlink::MulticastGroup;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::netlink::{Neighbour, Netlink};
use super::resolve::{self, Located, Look, ResolveOptions, observe_on, resolve_on};
use super::{NeighbourError, Resolution};

/// Settings of the background task started by [`Resolver::spawn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolverOptions {
    /// Every tracked address is resolved again this often (default 30 s). This is what notices
    /// changes the kernel does not announce, e.g. a backend that went away while its entry sat
    /// STALE (the data plane's traffic bypasses the kernel, so nothing else re-checks it).
    pub refresh: Duration,
    /// ARP/ND wait of each resolution.
    pub resolve: ResolveOptions,
    /// Route notifications come in bursts: wait this long after one before re-resolving
    /// (default 100 ms).
    pub debounce: Duration,
    /// Ask the kernel to re-check STALE entries at each refresh (default true).
    pub confirm_stale: bool,
    /// Capacity of the event channel (default 256).
    pub channel: usize,
}

impl Default for ResolverOptions {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(30),
            resolve: ResolveOptions::default(),
            debounce: Duration::from_millis(100),
            confirm_stale: true,
            channel: 256,
        }
    }
}

/// What made the resolver look at an address when it found a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The address's first resolution after it was tracked (or after the task started).
    Initial,
    /// A kernel notification: a neighbour entry the address resolves through was updated or
    /// deleted, or a route changed. Also when the periodic re-check happens to run while such a
    /// notification waits out its debounce delay: the kernel did announce the change.
    Notification,
    /// The periodic re-check, which finds what the kernel does not announce.
    Recheck,
}

impl Trigger {
    /// Lower-case name, as logged.
    pub fn name(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Notification => "notification",
            Self::Recheck => "recheck",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A change in what a tracked address resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeighbourEvent {
    /// The address resolved for the first time, or again after being unresolvable.
    Resolved {
        /// The tracked address.
        addr: IpAddr,
        /// Its resolution.
        resolution: Resolution,
        /// What found it.
        trigger: Trigger,
    },
    /// The address resolved to something else (new MAC, interface or gateway).
    Changed {
        /// The tracked address.
        addr: IpAddr,
        /// The previous resolution.
        old: Resolution,
        /// The new one.
        new: Resolution,
        /// What found it.
        trigger: Trigger,
    },
    /// The address could not be resolved on its first try, or stopped resolving. Further
    /// failures (even with another reason) give no new event until it resolves again.
    Unresolvable {
        /// The tracked address.
        addr: IpAddr,
        /// Why.
        error: NeighbourError,
        /// The resolution it had until now, if any.
        last: Option<Resolution>,
        /// What found it.
        trigger: Trigger,
    },
}

impl NeighbourEvent {
    /// The tracked address the event is about.
    pub fn addr(&self) -> IpAddr {
        match self {
            Self::Resolved { addr, .. }
            | Self::Changed { addr, .. }
            | Self::Unresolvable { addr, .. } => *addr,
        }
    }

    /// What made the resolver find the change.
    pub fn trigger(&self) -> Trigger {
        match self {
            Self::Resolved { trigger, .. }
            | Self::Changed { trigger, .. }
            | Self::Unresolvable { trigger, .. } => *trigger,
        }
    }
}

/// What is known about one tracked address.
#[derive(Debug, Default)]
struct Entry {
    /// The route and interface name of the last resolution attempt that found a route.
    route: Located,
    /// `None` until the first attempt finishes.
    result: Option<Result<Resolution, NeighbourError>>,
}

#[derive(Debug, Default)]
struct Shared {
    entries: Mutex<HashMap<IpAddr, Entry>>,
    /// Wakes the task when addresses are added.
    wake: Notify,
    running: AtomicBool,
}

/// A set of addresses kept resolved. Cheap to clone: clones share the set, so `lbd` can keep one
/// for [`Resolver::track`]/[`Resolver::current`] while the task started by [`Resolver::spawn`]
/// updates it.
///
/// ```no_run
/// # async fn f() -> Result<(), lbd::neighbours::NeighbourError> {
/// use lbd::neighbours::{Resolver, ResolverOptions};
/// let resolver = Resolver::new();
/// resolver.track("10.77.0.11".parse().unwrap());
/// let (_task, mut events) = resolver.spawn(ResolverOptions::default())?;
/// while let Some(event) = events.recv().await {
///     println!("{event:?}"); // program the data plane with the new MAC, or stop using it
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    shared: Arc<Shared>,
}

impl Resolver {
    /// An empty set; nothing is resolved until [`Resolver::spawn`].
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<IpAddr, Entry>> {
        // A panic elsewhere cannot leave an entry half-written: every write is one assignment.
        self.shared
            .entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Starts keeping `addr` resolved (no-op if it already is). The running task resolves it
    /// at once and reports the outcome as an event.
    pub fn track(&self, addr: IpAddr) {
        let added = self.entries().insert(addr, Entry::default()).is_none();
        if added {
            self.shared.wake.notify_one();
        }
    }

    /// Stops tracking `addr`; no more events about it.
    pub fn untrack(&self, addr: IpAddr) {
        self.entries().remove(&addr);
    }

    /// The tracked addresses.
    pub fn tracked(&self) -> Vec<IpAddr> {
        self.entries().keys().copied().collect()
    }

    /// The latest result for `addr`: `None` if it is not tracked or not tried yet.
    pub fn current(&self, addr: IpAddr) -> Option<Result<Resolution, NeighbourError>> {
        self.entries().get(&addr).and_then(|e| e.result.clone())
    }

    /// Starts the background task in the calling thread's network namespace (it needs a tokio
    /// runtime). It subscribes to the kernel's neighbour and IPv4/IPv6 route notifications,
    /// resolves every tracked address, and then sends a [`NeighbourEvent`] on the returned
    /// channel whenever an address's result changes. The task stops when the [`RefreshTask`]
    /// is dropped; only one may run per set.
    pub fn spawn(
        &self,
        opts: ResolverOptions,
    ) -> Result<(RefreshTask, mpsc::Receiver<NeighbourEvent>), NeighbourError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(NeighbourError::NoRuntime);
        }
        if self.shared.running.swap(true, Ordering::SeqCst) {
            return Err(NeighbourError::AlreadyRunning);
        }
        let running = RunningGuard(self.shared.clone());
        // Subscribe before the first resolution so that no change falls in between.
        let (conn, _handle, messages) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Neigh,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
        ])
        .map_err(|e| NeighbourError::Socket(e.to_string()))?;
        let nl = Netlink::open()?;
        let monitor = tokio::spawn(conn);
        let (tx, rx) = mpsc::channel(opts.channel.max(1));
        let worker = Worker {
            resolver: self.clone(),
            nl,
            opts,
            tx,
            _running: running,
        };
        let task = tokio::spawn(worker.run(messages.map(|(m, _)| m).boxed()));
        Ok((
            RefreshTask {
                task: Some(task),
                monitor: Some(monitor),
            },
            rx,
        ))
    }
}

/// Clears the "task running" flag however the task ends (including abort).
#[derive(Debug)]
struct RunningGuard(Arc<Shared>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::SeqCst);
    }
}

/// The running background task of a [`Resolver`]; dropping it stops the task.
#[derive(Debug)]
pub struct RefreshTask {
    task: Option<JoinHandle<()>>,
    monitor: Option<JoinHandle<()>>,
}

impl RefreshTask {
    /// Stops the task and waits until it has stopped.
    pub async fn stop(mut self) {
        for handle in [self.task.take(), self.monitor.take()]
            .into_iter()
            .flatten()
        {
            handle.abort();
            // The only error left is the cancellation we asked for.
            let _ = handle.await;
        }
    }
}

impl Drop for RefreshTask {
    fn drop(&mut self) {
        for handle in [&self.task, &self.monitor].into_iter().flatten() {
            handle.abort();
        }
    }
}

/// What notifications asked to re-resolve, once the debounce delay has passed.
#[derive(Debug, Default)]
struct Pending {
    /// Routes changed: everything.
    all: bool,
    /// Entries deleted: resolve again (starting ARP/ND).
    resolve: HashSet<IpAddr>,
    /// Entries of resolved addresses turned FAILED: look again, taking FAILED as final.
    recheck: HashSet<IpAddr>,
    /// Entries updated: read them again (a notification may be older than our last read).
    observe: HashSet<IpAddr>,
    at: Option<Instant>,
}

impl Pending {
    fn due(&mut self, debounce: Duration) {
        self.at.get_or_insert(Instant::now() + debounce);
    }

    /// Whether a notification waiting here concerns `addr`.
    fn mentions(&self, addr: &IpAddr) -> bool {
        self.all
            || self.resolve.contains(addr)
            || self.recheck.contains(addr)
            || self.observe.contains(addr)
    }
}

type Messages = futures_util::stream::BoxStream<'static, NetlinkMessage<RouteNetlinkMessage>>;

struct Worker {
    resolver: Resolver,
    nl: Netlink,
    opts: ResolverOptions,
    tx: mpsc::Sender<NeighbourEvent>,
    _running: RunningGuard,
}

impl Worker {
    async fn run(self, mut messages: Messages) {
        let mut pending = Pending::default();
        let mut refresh = tokio::time::interval(self.opts.refresh.max(Duration::from_millis(10)));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared = self.resolver.shared.clone();
        loop {
            let debounce = pending.at;
            tokio::select! {
                // The first tick is immediate: the initial resolution of everything.
                _ = refresh.tick() => {
                    let look = if self.opts.confirm_stale { Look::ConfirmStale } else { Look::Resolve };
                    let all = self.resolver.tracked();
                    let p = &pending;
                    self.resolve_some(all, look, |a| {
                        if p.mentions(a) { Trigger::Notification } else { Trigger::Recheck }
                    })
                    .await;
                }
                () = shared.wake.notified() => self.resolve_new().await,
                msg = messages.next() => match msg {
                    Some(msg) => self.on_message(msg, &mut pending),
                    None => {
                        tracing::warn!("netlink notifications ended; relying on periodic refresh");
                        messages = futures_util::stream::pending().boxed();
                    }
                },
                () = sleep_until(debounce), if debounce.is_some() => {
                    let p = std::mem::take(&mut pending);
                    if p.all {
                        let all = self.resolver.tracked();
                        self.resolve_some(all, Look::Resolve, |_| Trigger::Notification).await;
                    } else {
                        self.resolve_pending(p).await;
                    }
                }
            }
        }
    }

    /// Looks again at what notifications pointed to; each address once, the strongest look.
    async fn resolve_pending(&self, p: Pending) {
        let recheck: Vec<IpAddr> = p.recheck.difference(&p.resolve).copied().collect();
        let observe: Vec<IpAddr> = p
            .observe
            .iter()
            .filter(|a| !p.resolve.contains(a) && !p.recheck.contains(a))
            .copied()
            .collect();
        let by_notification = |_: &IpAddr| Trigger::Notification;
        self.resolve_some(
            p.resolve.into_iter().collect(),
            Look::Resolve,
            by_notification,
        )
        .await;
        self.resolve_some(recheck, Look::AcceptFailed, by_notification)
            .await;
        let seen = join_all(
            observe
                .into_iter()
                .map(|addr| async move { observe_on(&self.nl, addr).await.map(|o| (addr, o)) }),
        )
        .await;
        for (addr, (located, result)) in seen.into_iter().flatten() {
            self.locate(addr, located);
            self.record(addr, result, Trigger::Notification).await;
        }
    }

    /// Remembers where `addr` was found (for matching notifications).
    fn locate(&self, addr: IpAddr, located: Located) {
        if let Some(entry) = self.resolver.entries().get_mut(&addr) {
            entry.route = located;
        }
    }

    /// Resolves addresses that have never been tried.
    async fn resolve_new(&self) {
        let new: Vec<IpAddr> = self
            .resolver
            .entries()
            .iter()
            .filter(|(_, e)| e.result.is_none())
            .map(|(a, _)| *a)
            .collect();
        self.resolve_some(new, Look::Resolve, |_| Trigger::Initial)
            .await;
    }

    /// Resolves `addrs` concurrently, then records each result, found by `trigger(addr)`.
    async fn resolve_some(
        &self,
        addrs: Vec<IpAddr>,
        look: Look,
        trigger: impl Fn(&IpAddr) -> Trigger,
    ) {
        if addrs.is_empty() {
            return;
        }
        let opts = self.opts.resolve;
        let results = join_all(addrs.into_iter().map(|addr| async move {
            let (route, result) = resolve_on(&self.nl, addr, &opts, look).await;
            (addr, route, result)
        }))
        .await;
        for (addr, located, result) in results {
            self.locate(addr, located);
            self.record(addr, result, trigger(&addr)).await;
        }
    }

    /// Stores a result and sends an event if the outcome changed. Results for addresses
    /// untracked meanwhile are dropped. An address's first result is always `Initial`,
    /// whatever looked.
    async fn record(
        &self,
        addr: IpAddr,
        result: Result<Resolution, NeighbourError>,
        trigger: Trigger,
    ) {
        let event = {
            let mut entries = self.resolver.entries();
            let Some(entry) = entries.get_mut(&addr) else {
                return;
            };
            let trigger = if entry.result.is_none() {
                Trigger::Initial
            } else {
                trigger
            };
            let event = change(addr, entry.result.as_ref(), &result, trigger);
            entry.result = Some(result);
            event
        };
        if let Some(event) = event {
            tracing::info!(?event, trigger = %event.trigger(), "neighbour change");
            // A closed channel only means nobody listens; `current` stays up to date.
            let _ = self.tx.send(event).await;
        }
    }

    fn on_message(&self, msg: NetlinkMessage<RouteNetlinkMessage>, pending: &mut Pending) {
        let NetlinkPayload::InnerMessage(msg) = msg.payload else {
            return;
        };
        match msg {
            RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => {
                tracing::trace!(route = ?r, "route notification");
                pending.all = true;
                pending.due(self.opts.debounce);
            }
            RouteNetlinkMessage::NewNeighbour(n) => {
                if let Some(n) = Neighbour::from_message(&n) {
                    self.on_neighbour(&n, pending);
                }
            }
            RouteNetlinkMessage::DelNeighbour(n) => {
                // An entry the kernel dropped (garbage collection, `ip neigh del`) says nothing
                // about the backend: look again, which starts ARP/ND for it.
                if let Some(n) = Neighbour::from_message(&n) {
                    let affected = self.affected(&n);
                    if !affected.is_empty() {
                        pending.resolve.extend(affected.into_iter().map(|a| a.addr));
                        pending.due(self.opts.debounce);
                    }
                }
            }
            _ => {}
        }
    }

    /// Tracked addresses that resolve through neighbour `n`.
    fn affected(&self, n: &Neighbour) -> Vec<Affected> {
        self.resolver
            .entries()
            .iter()
            .filter_map(|(addr, e)| {
                let (route, _) = e.route.as_ref()?;
                (route.ifindex == n.ifindex && route.neighbour(*addr) == n.addr).then_some(
                    Affected {
                        addr: *addr,
                        resolved: matches!(e.result, Some(Ok(_))),
                    },
                )
            })
            .collect()
    }

    /// Schedules another look at the addresses a neighbour entry update concerns. The update
    /// itself is not applied: it may be older than a read made since, and reading again is
    /// cheap (no ARP/ND is started for an entry that may be mid-resolution).
    ///
    /// A FAILED entry of a resolved address gets a closer look: `ip neigh del` also passes
    /// through FAILED just before the entry goes, which says nothing about the backend.
    /// Addresses already unresolvable ignore FAILED: their own ARP/ND attempts end that way.
    fn on_neighbour(&self, n: &Neighbour, pending: &mut Pending) {
        tracing::trace!(?n, "neighbour notification");
        for a in self.affected(n) {
            if resolve::usable(n.state) {
                pending.observe.insert(a.addr);
            } else if n.state == NeighbourState::Failed && a.resolved {
                pending.recheck.insert(a.addr);
            } else {
                // INCOMPLETE (ARP/ND under way) and the like: the outcome comes later.
                continue;
            }
            pending.due(self.opts.debounce);
        }
    }
}

/// A tracked address that resolves through a neighbour a notification is about.
struct Affected {
    addr: IpAddr,
    /// Whether it currently resolves.
    resolved: bool,
}

/// The event for a result `new` following `old`, if the outcome changed.
fn change(
    addr: IpAddr,
    old: Option<&Result<Resolution, NeighbourError>>,
    new: &Result<Resolution, NeighbourError>,
    trigger: Trigger,
) -> Option<NeighbourEvent> {
    match (old, new) {
        (Some(Ok(old)), Ok(new)) if old == new => None,
        (Some(Ok(old)), Ok(new)) => Some(NeighbourEvent::Changed {
            addr,
            old: old.clone(),
            new: new.clone(),
            trigger,
        }),
        (None | Some(Err(_)), Ok(new)) => Some(NeighbourEvent::Resolved {
            addr,
            resolution: new.clone(),
            trigger,
        }),
        (Some(Err(_)), Err(_)) => None,
        (old, Err(error)) => Some(NeighbourEvent::Unresolvable {
            addr,
            error: error.clone(),
            last: old.and_then(|o| o.as_ref().ok()).cloned(),
            trigger,
        }),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(mac: u8) -> Resolution {
        Resolution {
            mac: [2, 0, 0, 0, 0, mac],
            ifindex: 2,
            ifname: "eth0".into(),
            via: None,
        }
    }

    fn ch(
        a: IpAddr,
        old: Option<&Result<Resolution, NeighbourError>>,
        new: &Result<Resolution, NeighbourError>,
    ) -> Option<NeighbourEvent> {
        change(a, old, new, Trigger::Recheck)
    }

    #[test]
    fn events_carry_what_found_them() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let ev =
            change(a, Some(&Ok(res(1))), &Ok(res(2)), Trigger::Notification).expect("a change");
        assert_eq!(ev.trigger(), Trigger::Notification);
        assert_eq!(ev.trigger().to_string(), "notification");
        let ev = change(a, None, &Ok(res(1)), Trigger::Initial).expect("first result");
        assert_eq!(ev.trigger(), Trigger::Initial);
    }

    #[test]
    fn a_recheck_during_a_pending_notification_is_the_notification() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut p = Pending::default();
        assert!(!p.mentions(&a));
        p.observe.insert(a);
        assert!(p.mentions(&a) && !p.mentions(&b));
        p.all = true;
        assert!(p.mentions(&b));
    }

    #[test]
    fn events_only_on_change_of_outcome() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let err = NeighbourError::Local { addr: a };
        assert!(matches!(
            ch(a, None, &Ok(res(1))),
            Some(NeighbourEvent::Resolved { .. })
        ));
        assert_eq!(ch(a, Some(&Ok(res(1))), &Ok(res(1))), None);
        assert!(matches!(
            ch(a, Some(&Ok(res(1))), &Ok(res(2))),
            Some(NeighbourEvent::Changed { .. })
        ));
        match ch(a, Some(&Ok(res(1))), &Err(err.clone())) {
            Some(NeighbourEvent::Unresolvable { last, .. }) => assert_eq!(last, Some(res(1))),
            other => panic!("expected Unresolvable, got {other:?}"),
        }
        assert!(matches!(
            ch(a, None, &Err(err.clone())),
            Some(NeighbourEvent::Unresolvable { last: None, .. })
        ));
        assert_eq!(ch(a, Some(&Err(err.clone())), &Err(err.clone())), None);
        assert!(matches!(
            ch(a, Some(&Err(err)), &Ok(res(1))),
            Some(NeighbourEvent::Resolved { .. })
        ));
    }
}
