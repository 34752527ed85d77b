//! One resolution: route lookup, neighbour lookup, and if needed ARP/ND with a bounded wait.

use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_route::neighbour::NeighbourState;
use tokio::time::Instant;

use super::netlink::{Neighbour, Netlink, Route};
use super::{NeighbourError, Resolution, Target};

/// How long [`resolve_with`] waits for ARP/ND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolveOptions {
    /// Longest wait for an answer once ARP/ND has been started (default 1 s).
    pub wait: Duration,
    /// How often the neighbour table is read during that wait (default 50 ms).
    pub poll: Duration,
}

impl Default for ResolveOptions {
    fn default() -> Self {
        Self {
            wait: Duration::from_secs(1),
            poll: Duration::from_millis(50),
        }
    }
}

/// Resolves `addr` with [`ResolveOptions::default`] (waits at most 1 s for ARP/ND).
pub async fn resolve(addr: IpAddr) -> Result<Resolution, NeighbourError> {
    resolve_with(addr, &ResolveOptions::default()).await
}

/// Resolves `addr` to the MAC its frames must carry: looks up the route (interface, gateway),
/// then the neighbour entry of the gateway or of `addr` itself. An entry in state REACHABLE,
/// STALE, DELAY, PROBE, PERMANENT or NOARP counts; otherwise ARP/ND is started and the table
/// read again until it answers or `opts.wait` runs out.
///
/// Uses a netlink socket of the calling thread's network namespace; needs a tokio runtime.
pub async fn resolve_with(
    addr: IpAddr,
    opts: &ResolveOptions,
) -> Result<Resolution, NeighbourError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(NeighbourError::NoRuntime);
    }
    let nl = Netlink::open()?;
    resolve_on(&nl, addr, opts, Look::Resolve).await.1
}

/// Whether an entry's link-layer address may be used (the kernel itself would send to it).
pub(crate) fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

/// The resolution an entry gives, or `None` when it gives none yet (INCOMPLETE, FAILED...).
/// An entry in a usable state without a 6-byte address is an error.
pub(crate) fn from_entry(
    entry: &Neighbour,
    target: &Target,
    ifindex: u32,
) -> Option<Result<Resolution, NeighbourError>> {
    if !usable(entry.state) {
        return None;
    }
    let mac = entry
        .lladdr
        .as_deref()
        .and_then(|l| <[u8; 6]>::try_from(l).ok());
    Some(match mac {
        Some(mac) => Ok(Resolution {
            mac,
            ifindex,
            ifname: target.ifname.clone(),
            via: target.via,
        }),
        None => Err(NeighbourError::NoLinkLayerAddress {
            target: target.clone(),
            state: state_name(entry.state),
        }),
    })
}

/// The error for an entry that gives no address after the wait.
pub(crate) fn unresolved(
    entry: Option<&Neighbour>,
    target: &Target,
    waited: Duration,
) -> NeighbourError {
    match entry.map(|e| e.state) {
        Some(NeighbourState::Failed) => NeighbourError::Failed {
            target: target.clone(),
        },
        _ => NeighbourError::Incomplete {
            target: target.clone(),
            waited,
        },
    }
}

/// Upper-case kernel name of a state, as `ip neigh` prints it.
pub(crate) fn state_name(state: NeighbourState) -> String {
    match state {
        NeighbourState::Incomplete => "INCOMPLETE".into(),
        NeighbourState::Reachable => "REACHABLE".into(),
        NeighbourState::Stale => "STALE".into(),
        NeighbourState::Delay => "DELAY".into(),
        NeighbourState::Probe => "PROBE".into(),
        NeighbourState::Failed => "FAILED".into(),
        NeighbourState::Noarp => "NOARP".into(),
        NeighbourState::Permanent => "PERMANENT".into(),
        NeighbourState::None => "NONE".into(),
        other => format!("{other:?}"),
    }
}

/// How [`resolve_on`] treats the entry it finds, besides using a usable one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// Start ARP/ND for an absent, INCOMPLETE or FAILED entry and wait for it.
    Resolve,
    /// Like `Resolve`, and also ask the kernel to re-check a STALE entry (still used), so a
    /// backend that went away or changed its MAC shows up at the next look.
    ConfirmStale,
    /// Like `Resolve`, but a FAILED entry is taken as the answer: the kernel just gave up on
    /// it, and asking again would only repeat that.
    AcceptFailed,
}

/// A route and interface name, as the [`super::Resolver`] keeps them to match later
/// neighbour notifications to the address.
pub(crate) type Located = Option<(Route, String)>;

/// The route to `addr` and the neighbour to resolve for it.
async fn locate(nl: &Netlink, addr: IpAddr) -> Result<(Route, Target), NeighbourError> {
    let route = nl.route_get(addr).await?;
    let ifname = nl.link_name(route.ifindex).await?;
    let target = Target {
        addr,
        via: route.via,
        ifname,
    };
    Ok((route, target))
}

/// Resolves `addr` over an open connection; also returns where it was located.
pub(crate) async fn resolve_on(
    nl: &Netlink,
    addr: IpAddr,
    opts: &ResolveOptions,
    look: Look,
) -> (Located, Result<Resolution, NeighbourError>) {
    let (route, target) = match locate(nl, addr).await {
        Ok(found) => found,
        Err(e) => return (None, Err(e)),
    };
    let result = resolve_route(nl, route, &target, opts, look).await;
    (Some((route, target.ifname)), result)
}

/// Reads what the kernel's tables say about `addr` now, starting nothing: `None` while the
/// neighbour is absent or being resolved (no news), a FAILED entry is an error.
pub(crate) async fn observe_on(
    nl: &Netlink,
    addr: IpAddr,
) -> Option<(Located, Result<Resolution, NeighbourError>)> {
    let (route, target) = match locate(nl, addr).await {
        Ok(found) => found,
        Err(e) => return Some((None, Err(e))),
    };
    let result = match nl.neighbour_get(route.ifindex, route.neighbour(addr)).await {
        Ok(Some(entry)) => match from_entry(&entry, &target, route.ifindex) {
            Some(result) => result,
            None if entry.state == NeighbourState::Failed => {
                Err(unresolved(Some(&entry), &target, Duration::ZERO))
            }
            None => return None,
        },
        Ok(None) => return None,
        Err(e) => Err(e),
    };
    Some((Some((route, target.ifname)), result))
}

async fn resolve_route(
    nl: &Netlink,
    route: Route,
    target: &Target,
    opts: &ResolveOptions,
    look: Look,
) -> Result<Resolution, NeighbourError> {
    let addr = target.addr;
    let neighbour = route.neighbour(addr);
    let entry = nl.neighbour_get(route.ifindex, neighbour).await?;
    if let Some(result) = entry
        .as_ref()
        .and_then(|e| from_entry(e, target, route.ifindex))
    {
        let stale = entry.as_ref().map(|e| e.state) == Some(NeighbourState::Stale);
        if look == Look::ConfirmStale
            && stale
            && let Err(e) = nl.nudge(route.ifindex, neighbour).await
        {
            tracing::debug!(%neighbour, "re-checking a stale neighbour: {e}");
        }
        return result;
    }
    let state = entry.as_ref().map(|e| e.state);
    if look == Look::AcceptFailed && state == Some(NeighbourState::Failed) {
        return Err(unresolved(entry.as_ref(), target, Duration::ZERO));
    }
    tracing::debug!(%target, ?state, "starting ARP/ND");
    nl.nudge(route.ifindex, neighbour).await?;
    let start = Instant::now();
    let deadline = start + opts.wait;
    let mut last = entry;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(unresolved(last.as_ref(), target, opts.wait));
        }
        tokio::time::sleep(opts.poll.min(deadline - now)).await;
        last = nl.neighbour_get(route.ifindex, neighbour).await?;
        if let Some(e) = last.as_ref() {
            if let Some(result) = from_entry(e, target, route.ifindex) {
                return result;
            }
            // The nudge made the entry INCOMPLETE; FAILED now means the kernel already gave up.
            if e.state == NeighbourState::Failed {
                return Err(unresolved(last.as_ref(), target, start.elapsed()));
            }
        }
    }
}
