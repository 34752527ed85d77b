//! Neighbour resolution against the real kernel: a lab of network namespaces around a bridge,
//! resolution run from inside the balancer's namespace, compared with the backends' real MACs.
//! Needs root and `ip` (iproute2), `ethtool`, `sysctl` (the lab's tools); fails otherwise.

use std::net::{IpAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use lbd::neighbours::{
    NeighbourError, NeighbourEvent, ResolveOptions, Resolver, ResolverOptions, resolve,
    resolve_with,
};
use tests::{Host, Lab, Topology};
use tokio::sync::mpsc;

/// Upper bound for any awaited condition (never a pass/fail criterion by itself).
const WAIT: Duration = Duration::from_secs(15);

fn lab() -> Result<Lab> {
    // Logs of the resolver (RUST_LOG=lbd=debug) show up with --nocapture.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Lab::create(&Topology::small(2)?).context("building the lab (needs root, ip, ethtool, sysctl)")
}

/// Runs `f` on a tokio runtime on a thread inside `host`'s namespace.
fn in_host<F, Fut, R>(host: &Host, f: F) -> Result<R>
where
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = Result<R>>,
    R: Send,
{
    host.in_netns(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(f())
    })?
}

fn ip(a: impl Into<IpAddr>) -> IpAddr {
    a.into()
}

#[test]
fn resolves_backends_on_the_segment_v4_and_v6() -> Result<()> {
    let lab = lab()?;
    let lb = lab.host("lb1")?;
    for name in ["be1", "be2"] {
        let be = lab.host(name)?;
        let mac = be.mac()?.0;
        for addr in [ip(be.ipv4()), ip(be.ipv6())] {
            let r = in_host(lb, || async move { Ok(resolve(addr).await?) })?;
            assert_eq!(
                r.mac, mac,
                "{addr} resolved to {r}, {name}'s MAC is {:02x?}",
                mac
            );
            assert_eq!(r.ifname, "eth0");
            assert_eq!(r.via, None, "{addr} is on the segment");
            assert!(r.ifindex > 0);
        }
    }
    Ok(())
}

#[test]
fn routed_address_resolves_to_the_gateway_mac() -> Result<()> {
    let lab = lab()?;
    let lb = lab.host("lb1")?;
    let gw = lab.host("be1")?;
    let gw_mac = gw.mac()?.0;
    // Only the gateway (a lab host) is ever ARPed for; nothing is sent to the routed prefixes.
    lb.exec([
        "ip",
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        &gw.ipv4().to_string(),
    ])?;
    lb.exec([
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:77::/64",
        "via",
        &gw.ipv6().to_string(),
    ])?;
    for (addr, via) in [
        (
            ip("198.51.100.7".parse::<std::net::Ipv4Addr>()?),
            ip(gw.ipv4()),
        ),
        (
            ip("2001:db8:77::7".parse::<std::net::Ipv6Addr>()?),
            ip(gw.ipv6()),
        ),
    ] {
        let r = in_host(lb, || async move { Ok(resolve(addr).await?) })?;
        assert_eq!(
            r.mac, gw_mac,
            "{addr} should resolve to the gateway's MAC, got {r}"
        );
        assert_eq!(r.via, Some(via));
        assert_eq!(r.ifname, "eth0");
    }
    Ok(())
}

#[test]
fn absent_host_on_the_segment_is_an_error_after_the_bounded_wait() -> Result<()> {
    let lab = lab()?;
    let lb = lab.host("lb1")?;
    for addr in ["10.77.0.99", "fd77::99"] {
        let addr: IpAddr = addr.parse()?;
        let opts = ResolveOptions {
            wait: Duration::from_millis(500),
            ..ResolveOptions::default()
        };
        let res = in_host(lb, || async move {
            tokio::time::timeout(WAIT, resolve_with(addr, &opts))
                .await
                .map_err(|_| anyhow!("resolve({addr}) did not return within {WAIT:?}"))
        })?;
        let err = match res {
            Ok(r) => bail!("{addr} has no host but resolved to {r}"),
            Err(e) => e,
        };
        assert!(
            matches!(
                err,
                NeighbourError::Incomplete { .. } | NeighbourError::Failed { .. }
            ),
            "unexpected error for {addr}: {err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&addr.to_string()) && msg.contains("eth0"),
            "{msg}"
        );
        let proto = if addr.is_ipv4() { "ARP" } else { "ND" };
        assert!(msg.contains(proto), "{msg}");
    }
    // Waiting on: once the kernel gives up (3 probes, 1 s apart) the entry is FAILED.
    let addr: IpAddr = "10.77.0.99".parse()?;
    let failed = in_host(lb, || async move {
        for _ in 0..20 {
            match resolve_with(addr, &ResolveOptions::default()).await {
                Err(e @ NeighbourError::Failed { .. }) => return Ok(e),
                Err(_) => {}
                Ok(r) => bail!("{addr} resolved to {r}"),
            }
        }
        bail!("{addr} never reported FAILED")
    })?;
    assert_eq!(
        failed.to_string(),
        "10.77.0.99 on eth0: neighbour FAILED (no ARP reply)"
    );
    Ok(())
}

#[test]
fn no_route_and_local_addresses_are_errors() -> Result<()> {
    let lab = lab()?;
    let lb = lab.host("lb1")?;
    let own = lb.ipv4();
    in_host(lb, || async move {
        // The lab namespaces have no default route.
        for addr in ["192.0.2.1", "2001:db8::1"] {
            let addr: IpAddr = addr.parse()?;
            match resolve(addr).await {
                Err(e @ NeighbourError::NoRoute { .. }) => {
                    ensure!(
                        e.to_string().starts_with(&format!("no route to {addr}")),
                        "{e}"
                    )
                }
                other => bail!("{addr}: expected no route, got {other:?}"),
            }
        }
        match resolve(IpAddr::V4(own)).await {
            Err(NeighbourError::Local { .. }) => {}
            other => bail!("{own} (the balancer's own): expected Local, got {other:?}"),
        }
        Ok(())
    })?;
    // A route that exists but drops the traffic is no route either.
    lb.exec(["ip", "route", "add", "unreachable", "203.0.113.0/24"])?;
    in_host(lb, || async move {
        match resolve("203.0.113.9".parse()?).await {
            Err(NeighbourError::NoRoute { .. }) => Ok(()),
            other => bail!("expected no route, got {other:?}"),
        }
    })
}

/// The resolver's events, with those not waited for yet kept for later waits.
struct Events {
    rx: mpsc::Receiver<NeighbourEvent>,
    backlog: Vec<NeighbourEvent>,
}

impl Events {
    fn new(rx: mpsc::Receiver<NeighbourEvent>) -> Self {
        Self {
            rx,
            backlog: Vec::new(),
        }
    }

    /// Every event received or kept back so far, without waiting.
    fn drain(&mut self) -> Vec<NeighbourEvent> {
        let mut all = std::mem::take(&mut self.backlog);
        while let Ok(ev) = self.rx.try_recv() {
            all.push(ev);
        }
        all
    }

    /// The first event (kept back or new) about `addr` that satisfies `want`; fails after
    /// [`WAIT`] naming the events that came instead.
    async fn wait(
        &mut self,
        addr: IpAddr,
        what: &str,
        want: impl Fn(&NeighbourEvent) -> bool,
    ) -> Result<NeighbourEvent> {
        let matches = |ev: &NeighbourEvent| ev.addr() == addr && want(ev);
        if let Some(i) = self.backlog.iter().position(matches) {
            return Ok(self.backlog.remove(i));
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(ev)) if matches(&ev) => return Ok(ev),
                Ok(Some(ev)) => self.backlog.push(ev),
                Ok(None) => bail!(
                    "event channel closed while waiting for {what}; saw {:#?}",
                    self.backlog
                ),
                Err(_) => bail!("no {what} within {WAIT:?}; saw {:#?}", self.backlog),
            }
        }
    }
}

fn resolved_to(mac: [u8; 6]) -> impl Fn(&NeighbourEvent) -> bool {
    move |ev| match ev {
        NeighbourEvent::Resolved { resolution, .. } => resolution.mac == mac,
        NeighbourEvent::Changed { new, .. } => new.mac == mac,
        NeighbourEvent::Unresolvable { .. } => false,
    }
}

#[test]
fn resolver_reports_changes_from_the_kernel() -> Result<()> {
    let lab = lab()?;
    let lb = lab.host("lb1")?;
    let (be1, be2) = (lab.host("be1")?, lab.host("be2")?);
    let (be1_mac, be2_mac) = (be1.mac()?.0, be2.mac()?.0);
    let (be1_v4, be2_v4, be2_v6) = (ip(be1.ipv4()), ip(be2.ipv4()), ip(be2.ipv6()));
    let lb_v4 = lb.ipv4();
    let lb_v6 = lb.ipv6();
    in_host(lb, || async move {
        let resolver = Resolver::new();
        for a in [be1_v4, be2_v4, be2_v6] {
            resolver.track(a);
        }
        // A long refresh: every change below must come from the kernel's notifications.
        let opts = ResolverOptions {
            refresh: Duration::from_secs(3600),
            ..ResolverOptions::default()
        };
        let (task, rx) = resolver.spawn(opts)?;
        let mut rx = Events::new(rx);
        ensure!(
            matches!(resolver.spawn(opts), Err(NeighbourError::AlreadyRunning)),
            "a second task must be refused"
        );
        rx.wait(be1_v4, "be1 resolved", resolved_to(be1_mac))
            .await?;
        rx.wait(be2_v4, "be2 resolved", resolved_to(be2_mac))
            .await?;
        rx.wait(be2_v6, "be2 v6 resolved", resolved_to(be2_mac))
            .await?;
        assert_eq!(
            resolver.current(be1_v4).and_then(|r| r.ok()).map(|r| r.mac),
            Some(be1_mac)
        );

        // An administrator rewrites the entry.
        let fake = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        lb.exec([
            "ip",
            "neigh",
            "replace",
            "10.77.0.11",
            "dev",
            "eth0",
            "lladdr",
            "02:11:22:33:44:55",
        ])?;
        match rx.wait(be1_v4, "be1 changed", resolved_to(fake)).await? {
            NeighbourEvent::Changed { old, new, .. } => {
                assert_eq!((old.mac, new.mac), (be1_mac, fake));
            }
            other => bail!("expected Changed, got {other:?}"),
        }

        // The entry disappears (as garbage collection does): the resolver looks again.
        lb.exec(["ip", "neigh", "del", "10.77.0.11", "dev", "eth0"])?;
        match rx
            .wait(be1_v4, "be1 re-resolved", resolved_to(be1_mac))
            .await?
        {
            NeighbourEvent::Changed { old, .. } => assert_eq!(old.mac, fake),
            other => bail!("expected Changed, got {other:?}"),
        }

        // The backend's NIC changes; it announces itself when it next talks to the balancer.
        let new_mac = [0x02, 0x77, 0x00, 0x00, 0x00, 0x12];
        be2.exec(["ip", "link", "set", "eth0", "address", "02:77:00:00:00:12"])?;
        be2.exec(["ip", "neigh", "flush", "dev", "eth0"])?;
        be2.in_netns(|| -> std::io::Result<()> {
            let s4 = UdpSocket::bind("0.0.0.0:0")?;
            s4.send_to(b"hello", (lb_v4, 9))?;
            let s6 = UdpSocket::bind("[::]:0")?;
            s6.send_to(b"hello", (lb_v6, 9))?;
            Ok(())
        })??;
        rx.wait(be2_v4, "be2 v4 new MAC", resolved_to(new_mac))
            .await?;
        rx.wait(be2_v6, "be2 v6 new MAC", resolved_to(new_mac))
            .await?;

        // Nothing else happened to be1: no flapping through "unresolvable" on the way.
        let rest = rx.drain();
        ensure!(
            rest.iter().all(|ev| ev.addr() != be1_v4),
            "unexpected events: {rest:#?}"
        );

        // Untracked addresses are forgotten.
        resolver.untrack(be2_v4);
        ensure!(resolver.current(be2_v4).is_none());
        ensure!(!resolver.tracked().contains(&be2_v4));
        task.stop().await;
        Ok(())
    })
}

#[test]
fn resolver_reports_unresolvable_and_recovered() -> Result<()> {
    let lab = lab()?;
    let lb = lab.host("lb1")?;
    let be1 = lab.host("be1")?;
    let be1_mac = be1.mac()?.0;
    let ghost: IpAddr = "10.77.0.98".parse()?;
    let routeless: IpAddr = "192.0.2.50".parse()?;
    in_host(lb, || async move {
        let resolver = Resolver::new();
        // Periodic refresh is what finds the address again once the kernel gave up on it.
        let opts = ResolverOptions {
            refresh: Duration::from_secs(2),
            ..ResolverOptions::default()
        };
        let (_task, rx) = resolver.spawn(opts)?;
        let mut rx = Events::new(rx);
        resolver.track(ghost);
        resolver.track(routeless);
        let unresolvable = |ev: &NeighbourEvent| matches!(ev, NeighbourEvent::Unresolvable { .. });
        match rx.wait(routeless, "no route", unresolvable).await? {
            NeighbourEvent::Unresolvable { error, last, .. } => {
                ensure!(matches!(error, NeighbourError::NoRoute { .. }), "{error}");
                ensure!(last.is_none());
            }
            other => bail!("{other:?}"),
        }
        rx.wait(ghost, "ghost unresolvable", unresolvable).await?;
        ensure!(matches!(resolver.current(ghost), Some(Err(_))));

        // The address appears on be1: it becomes resolvable, to be1's MAC.
        be1.exec(["ip", "addr", "add", "10.77.0.98/24", "dev", "eth0"])?;
        rx.wait(ghost, "ghost recovered", resolved_to(be1_mac))
            .await?;

        // The address leaves be1 while the balancer's entry is STALE (XDP traffic never
        // refreshes it): the periodic re-check probes it and reports it gone.
        be1.exec(["ip", "addr", "del", "10.77.0.98/24", "dev", "eth0"])?;
        lb.exec([
            "sysctl",
            "-qw",
            "net.ipv4.neigh.eth0.delay_first_probe_time=1",
        ])?;
        let be1_mac_s = be1.mac()?.to_string();
        lb.exec([
            "ip",
            "neigh",
            "change",
            "10.77.0.98",
            "dev",
            "eth0",
            "lladdr",
            &be1_mac_s,
            "nud",
            "stale",
        ])?;
        match rx.wait(ghost, "stale ghost gone", unresolvable).await? {
            NeighbourEvent::Unresolvable { error, last, .. } => {
                ensure!(matches!(error, NeighbourError::Failed { .. }), "{error}");
                ensure!(last.map(|l| l.mac) == Some(be1_mac));
            }
            other => bail!("{other:?}"),
        }

        // A route appears for the routeless one (through be1): it resolves to be1's MAC too.
        lb.exec(["ip", "route", "add", "192.0.2.0/24", "via", "10.77.0.11"])?;
        match rx
            .wait(routeless, "route added", resolved_to(be1_mac))
            .await?
        {
            NeighbourEvent::Resolved { resolution, .. } => {
                ensure!(
                    resolution.via == Some("10.77.0.11".parse()?),
                    "{resolution}"
                )
            }
            other => bail!("{other:?}"),
        }
        // And the route going away makes it unresolvable again.
        lb.exec(["ip", "route", "del", "192.0.2.0/24"])?;
        match rx.wait(routeless, "route removed", unresolvable).await? {
            NeighbourEvent::Unresolvable { last, .. } => {
                ensure!(last.map(|l| l.mac) == Some(be1_mac))
            }
            other => bail!("{other:?}"),
        }
        Ok(())
    })
}
