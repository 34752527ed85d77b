//! Backend MACs from the kernel's neighbour table, by events: one [`Resolver`] keeps every
//! backend address without a static MAC resolved (one watch per address, however many VIPs
//! share it), and each [`NeighbourEvent`] is applied to every VIP that has the address.
//!
//! Nothing here waits on netlink while holding the daemon's lock: the resolver runs in its own
//! task, and the lock is taken only to write what an event says.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{State, model::VipRuntime, reconcile};
use crate::neighbours::{
    NeighbourError, NeighbourEvent, RefreshTask, Resolution, Resolver, ResolverOptions, format_mac,
};

/// How the daemon's resolver runs. Kernel notifications are applied within the debounce
/// delay; the periodic re-check (concurrent for all addresses, asking the kernel to confirm
/// STALE entries) finds what the kernel does not announce, e.g. a backend that went away while
/// its entry sat STALE because only XDP traffic, which bypasses the kernel, went to it.
pub fn options() -> ResolverOptions {
    ResolverOptions {
        refresh: REFRESH,
        ..ResolverOptions::default()
    }
}

/// The periodic re-check of every tracked address (docs/config.md).
pub const REFRESH: Duration = Duration::from_secs(10);

/// The `cause` field of the log lines this module writes.
const CAUSE: &str = "neighbour event";

/// The addresses that need resolving: backends without a static MAC, each once.
fn wanted(vips: &BTreeMap<String, VipRuntime>) -> HashSet<IpAddr> {
    vips.values()
        .flat_map(|v| {
            v.backends
                .iter()
                .filter(|(_, b)| b.static_mac.is_none())
                .map(|(a, _)| *a)
        })
        .collect()
}

/// Makes the resolver's address set equal to the model's: new addresses are watched (and
/// resolved at once by the resolver's task), addresses no backend has any more are dropped.
pub fn sync(resolver: &Resolver, vips: &BTreeMap<String, VipRuntime>) {
    let want = wanted(vips);
    let have: HashSet<IpAddr> = resolver.tracked().into_iter().collect();
    for gone in have.difference(&want) {
        resolver.untrack(*gone);
    }
    for new in want.difference(&have) {
        resolver.track(*new);
    }
}

/// The model's form of a resolution result.
pub fn mac_of(result: Result<Resolution, NeighbourError>) -> Result<[u8; 6], String> {
    result.map(|r| r.mac).map_err(|e| e.to_string())
}

fn show(mac: &Result<[u8; 6], String>) -> String {
    match mac {
        Ok(m) => format_mac(m),
        Err(_) => "unresolved".into(),
    }
}

/// Writes `event` to every backend with its address (and no static MAC); returns whether a
/// usable MAC appeared, changed or went away anywhere (the maps must then be reconciled).
/// `quiet` logs first resolutions at debug level only (start-up, many backends at once).
pub fn apply(vips: &mut BTreeMap<String, VipRuntime>, event: &NeighbourEvent, quiet: bool) -> bool {
    let (new, kind) = match event {
        NeighbourEvent::Resolved { resolution, .. } => (Ok(resolution.mac), "resolved"),
        NeighbourEvent::Changed { new, .. } => (Ok(new.mac), "changed"),
        NeighbourEvent::Unresolvable { error, .. } => (Err(error.to_string()), "unresolvable"),
    };
    let addr = event.addr();
    let mut dirty = false;
    for v in vips.values_mut() {
        let Some(b) = v.backends.get_mut(&addr) else {
            continue;
        };
        if b.static_mac.is_some() {
            continue;
        }
        let changed = b.mac.as_ref().ok() != new.as_ref().ok();
        if changed {
            let (vip, from, to) = (&v.cfg.name, show(&b.mac), show(&new));
            match &new {
                Err(e) => {
                    warn!(%vip, backend = %addr, %from, %to, error = %e, cause = CAUSE, event = %kind,
                        "backend MAC changed: unresolved, not used until it resolves")
                }
                Ok(_) if quiet => {
                    debug!(%vip, backend = %addr, %from, %to, cause = CAUSE, event = %kind, "backend MAC changed")
                }
                Ok(_) => {
                    info!(%vip, backend = %addr, %from, %to, cause = CAUSE, event = %kind, "backend MAC changed")
                }
            }
        }
        dirty |= changed;
        b.mac = new.clone();
    }
    dirty
}

/// Applies the resolver's first answer for each address it tracks, waiting at most `within`
/// (one ARP/ND wait, all addresses concurrently). Addresses without an answer by then keep
/// "not resolved yet" until their event reaches [`event_loop`].
pub async fn initial(
    vips: &mut BTreeMap<String, VipRuntime>,
    resolver: &Resolver,
    events: &mut mpsc::Receiver<NeighbourEvent>,
    within: Duration,
) {
    // Every tracked address gets exactly one first event (resolved or unresolvable).
    let mut pending: HashSet<IpAddr> = resolver.tracked().into_iter().collect();
    let deadline = tokio::time::Instant::now() + within;
    while !pending.is_empty() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) => {
                apply(vips, &event, true);
                pending.remove(&event.addr());
            }
            Ok(None) => break,
            Err(_) => {
                warn!(
                    unanswered = pending.len(),
                    ?within,
                    "backend MACs not resolved at start-up yet: they are used once they resolve"
                );
                break;
            }
        }
    }
}

/// Applies the resolver's events to the model until the resolver stops; owns its task.
/// Events that arrive together are applied under one lock and one reconcile.
pub async fn event_loop(
    shared: State,
    task: RefreshTask,
    mut events: mpsc::Receiver<NeighbourEvent>,
) {
    while let Some(first) = events.recv().await {
        let mut inner = shared.inner.lock().await;
        let mut dirty = apply(&mut inner.vips, &first, false);
        while let Ok(more) = events.try_recv() {
            dirty |= apply(&mut inner.vips, &more, false);
        }
        if dirty && let Err(e) = reconcile(&shared, &mut inner) {
            warn!(error = %e, "reconcile after a neighbour change failed");
        }
    }
    warn!("the neighbour resolver stopped: backend MACs are no longer followed");
    drop(task);
}
