//! The direct baseline's spreading: a multipath route in the client for an address every
//! backend owns (on `lo`), hashed on the 5-tuple (`fib_multipath_hash_policy=1`). The client's
//! own kernel then spreads each connection over the backends, as a balancer does but with no
//! hop and no middlebox: a perfect, free balancer, the bound the XDP path is measured against.
//!
//! wrk alone can only spread per *thread* (every connection of a thread goes to one address).
//! That baseline is kept as its own row: its threads each serve one backend, which batches
//! wakeups better than any per-connection spreading can, so no balancer could reach it.

use std::net::Ipv4Addr;

use anyhow::{Context, Result, bail};
use tests::Host;

/// RFC 2544's benchmarking range: never routed anywhere, and used by nothing else in the lab.
pub const ANYCAST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// Puts [`ANYCAST`] on every backend's `lo` and a multipath route to it in `client`.
pub fn install(client: &Host, backends: &[Host]) -> Result<()> {
    if backends.is_empty() {
        bail!("no backends to spread over");
    }
    let host_route = format!("{ANYCAST}/32");
    for b in backends {
        b.exec(["ip", "addr", "replace", &host_route, "dev", "lo"])
            .with_context(|| format!("adding {ANYCAST} to {}'s lo", b.name()))?;
    }
    client.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
    let mut args: Vec<String> = ["ip", "route", "replace", &host_route]
        .map(String::from)
        .to_vec();
    for b in backends {
        args.extend(["nexthop", "via", &b.ipv4().to_string(), "dev", b.iface()].map(String::from));
    }
    client
        .exec(&args)
        .context("adding the client's multipath route")?;
    let shown = client.exec(["ip", "route", "show", &host_route])?;
    let hops = shown.matches("nexthop").count();
    if hops != backends.len() {
        bail!(
            "the client's route to {ANYCAST} has {hops} next hops, not {}: {shown}",
            backends.len()
        );
    }
    Ok(())
}
