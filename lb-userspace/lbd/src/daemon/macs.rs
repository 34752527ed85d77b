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
    // Kernel notification, periodic re-check, or first resolution.
    let trigger = event.trigger().name();
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
                    warn!(%vip, backend = %addr, %from, %to, error = %e, cause = CAUSE, trigger, event = %kind,
                        "backend MAC changed: unresolved, not used until it resolves")
                }
                Ok(_) if quiet => {
                    debug!(%vip, backend = %addr, %from, %to, cause = CAUSE, trigger, event = %kind, "backend MAC changed")
                }
                Ok(_) => {
                    info!(%vip, backend = %addr, %from, %to, cause = CAUSE, trigger, event = %kind, "backend MAC changed")
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::neighbours::Trigger;
    use lb_config::{HealthInput, VipEnv, VipInput};

    use crate::daemon::model::{BackendRuntime, Source};

    const SHARED: &str = "10.0.0.5";

    fn ip(a: &str) -> IpAddr {
        a.parse().expect("address")
    }

    fn vip(name: &str, address: &str, backends: &[(&str, Option<[u8; 6]>)]) -> VipRuntime {
        let input = VipInput {
            name: name.into(),
            address: address.into(),
            port: 80,
            ..Default::default()
        };
        let cfg = input
            .check(&VipEnv {
                ipip_source_v4: false,
                ipip_source_v6: false,
                backend_mtu: 0,
                health: &HealthInput::default(),
            })
            .expect("valid VIP");
        let health = cfg.health.clone();
        VipRuntime {
            cfg,
            input,
            source: Source::Api,
            backends: backends
                .iter()
                .map(|(a, mac)| {
                    let b = BackendRuntime::new(100, Source::Api, *mac, &health, Instant::now());
                    (ip(a), b)
                })
                .collect(),
        }
    }

    /// Two VIPs sharing one backend address, each with one of its own; `web` has a static one.
    fn model() -> BTreeMap<String, VipRuntime> {
        let static_mac = Some([2, 0, 0, 0, 0, 9]);
        [
            vip(
                "web",
                "10.0.0.100",
                &[(SHARED, None), ("10.0.0.9", static_mac)],
            ),
            vip("api", "10.0.0.101", &[(SHARED, None), ("10.0.0.6", None)]),
        ]
        .into_iter()
        .map(|v| (v.cfg.name.clone(), v))
        .collect()
    }

    fn resolution(mac: u8) -> Resolution {
        Resolution {
            mac: [2, 0, 0, 0, 0, mac],
            ifindex: 2,
            ifname: "eth0".into(),
            via: None,
        }
    }

    fn tracked(r: &Resolver) -> Vec<IpAddr> {
        let mut t = r.tracked();
        t.sort();
        t
    }

    #[test]
    fn the_resolver_follows_the_model_once_per_address_without_static_macs() {
        let mut vips = model();
        let r = Resolver::new();
        sync(&r, &vips);
        assert_eq!(tracked(&r), vec![ip(SHARED), ip("10.0.0.6")]);

        // The shared address stays watched while one VIP still has it.
        vips.get_mut("web").map(|v| v.backends.remove(&ip(SHARED)));
        sync(&r, &vips);
        assert_eq!(tracked(&r), vec![ip(SHARED), ip("10.0.0.6")]);
        vips.remove("api");
        sync(&r, &vips);
        assert!(tracked(&r).is_empty(), "{:?}", tracked(&r));
    }

    #[test]
    fn events_fan_out_to_every_vip_with_the_address_and_skip_static_macs() {
        let mut vips = model();
        let macs = |vips: &BTreeMap<String, VipRuntime>, a: &str| -> Vec<Result<[u8; 6], String>> {
            vips.values()
                .filter_map(|v| v.backends.get(&ip(a)).map(|b| b.mac.clone()))
                .collect()
        };
        let resolved = NeighbourEvent::Resolved {
            addr: ip(SHARED),
            resolution: resolution(1),
            trigger: Trigger::Notification,
        };
        assert!(apply(&mut vips, &resolved, false));
        assert_eq!(macs(&vips, SHARED), vec![Ok([2, 0, 0, 0, 0, 1]); 2]);
        assert!(
            !apply(&mut vips, &resolved, false),
            "the same MAC again changes nothing"
        );

        let changed = NeighbourEvent::Changed {
            addr: ip(SHARED),
            old: resolution(1),
            new: resolution(2),
            trigger: Trigger::Notification,
        };
        assert!(apply(&mut vips, &changed, false));
        assert_eq!(macs(&vips, SHARED), vec![Ok([2, 0, 0, 0, 0, 2]); 2]);

        let lost = NeighbourEvent::Unresolvable {
            addr: ip(SHARED),
            error: NeighbourError::Local { addr: ip(SHARED) },
            last: Some(resolution(2)),
            trigger: Trigger::Notification,
        };
        assert!(apply(&mut vips, &lost, false));
        for mac in macs(&vips, SHARED) {
            let err = mac.expect_err("unresolved");
            assert!(err.contains("address of this host"), "{err}");
        }

        // A static MAC is never overwritten by the resolver.
        let other = NeighbourEvent::Resolved {
            addr: ip("10.0.0.9"),
            resolution: resolution(7),
            trigger: Trigger::Notification,
        };
        assert!(!apply(&mut vips, &other, false));
        assert_eq!(macs(&vips, "10.0.0.9"), vec![Ok([2, 0, 0, 0, 0, 9])]);
    }
}
