//! Active-active balancers over BGP/ECMP (issue 13): the BGP lab of `vagrant/topology.json`
//! (`bgp` section): a router running BIRD 2 with ECMP hashed on layer 4, the client behind it
//! on the edge segment, three balancers running `lbd` with `[bgp]` (each drives its own BIRD),
//! `app` on be1..be3. Nothing is mocked: both ends of every session are Debian's BIRD.
//!
//! Run as root: `cargo xtask test bgp` (builds the release binaries first). Three labs run one
//! after the other (a static lock): one checks the announcements, the spread of 3,000
//! connections and the tables, and ICMP under ECMP; the other takes the balancers through
//! scale-out, clean scale-in, a dead node and a total backend failure under load; a third
//! runs second chance's table change and balancer restart with the feature off, then on
//! (`second_chance.rs`). Figures
//! (gaps, shares) go to stderr: `-- --nocapture` shows them.

#[path = "../e2e/load.rs"]
#[allow(dead_code)]
mod load;
#[path = "../e2e/served.rs"]
#[allow(dead_code)]
mod served;

mod failures;
mod icmp;
mod second_chance;
mod spread;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;
use tests::{HaMode, Host, System, SystemOptions, http};

/// One lab at a time: the machine has two cores and the BGP lab runs ten hosts.
static SERIAL: Mutex<()> = Mutex::new(());

/// A running BGP lab for one test.
pub struct BgpLab {
    pub system: System,
    pub vip: SocketAddr,
    pub vip6: SocketAddr,
    pub vip_name: String,
    pub test: &'static str,
    _serial: MutexGuard<'static, ()>,
}

impl BgpLab {
    /// Starts the BGP lab without the balancers in `held_back`, then waits until every
    /// running balancer sees every backend healthy and the router has one next hop per
    /// running balancer for both VIPs.
    pub fn start(test: &'static str, held_back: &[&str]) -> Result<Self> {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        tests::exec::require_root().context(
            "the BGP tests create network namespaces and attach XDP programs: run them as root \
             (cargo xtask test bgp)",
        )?;
        tests::exec::which("bird")
            .context("BIRD 2 is missing: apt-get install bird2 (cargo xtask setup does)")?;
        let mut opts = SystemOptions::from_build();
        opts.progress = std::env::var_os("E2E_PROGRESS").is_some();
        opts.held_back = held_back.iter().map(|s| s.to_string()).collect();
        let topology = System::topology_for(&opts, HaMode::Bgp)?;
        let began = Instant::now();
        let system = System::start(&topology, opts)
            .with_context(|| format!("{test}: starting the BGP lab of vagrant/topology.json"))?;
        let v = topology.vip();
        let lab = Self {
            vip: SocketAddr::new(IpAddr::V4(v.ipv4()), v.port()),
            vip6: SocketAddr::new(IpAddr::V6(v.ipv6()), v.port()),
            vip_name: v.name().to_string(),
            system,
            test,
            _serial: serial,
        };
        let running = lab.running_balancers();
        // Each backend twice: registered for the IPv4 VIP, listed for the IPv6 one.
        for lb in &running {
            lab.system.wait_healthy(
                lb,
                2 * lab.system.backends().len(),
                Duration::from_secs(60),
            )?;
        }
        lab.wait_next_hops(running.len(), Duration::from_secs(30))?;
        lab.say(&format!(
            "BGP lab {} up in {:.1} s ({} balancers announcing)",
            lab.system.lab().prefix(),
            began.elapsed().as_secs_f64(),
            running.len()
        ));
        Ok(lab)
    }

    /// Balancers whose lbd runs.
    pub fn running_balancers(&self) -> Vec<String> {
        self.system
            .balancers()
            .into_iter()
            .filter(|b| self.system.daemon_pid(b, "lbd").is_some())
            .collect()
    }

    pub fn client(&self) -> &Host {
        self.system
            .lab()
            .host("client")
            .expect("the BGP lab has a client")
    }

    pub fn router(&self) -> &Host {
        self.system
            .lab()
            .host("router")
            .expect("the BGP lab has a router")
    }

    pub fn say(&self, msg: &str) {
        eprintln!("[bgp {}] {msg}", self.test);
    }

    /// The router's kernel next hops for `vip` (both families): the gateways of its route,
    /// sorted; empty when there is no route.
    pub fn next_hops(&self, vip: IpAddr) -> Result<Vec<IpAddr>> {
        let fam = if vip.is_ipv4() { "-4" } else { "-6" };
        let out = self
            .router()
            .exec(["ip", "-j", fam, "route", "show", &vip.to_string()])?;
        let routes: Value = serde_json::from_str(&out).context("ip -j route")?;
        let mut hops: Vec<IpAddr> = Vec::new();
        for r in routes.as_array().into_iter().flatten() {
            if let Some(g) = r["gateway"].as_str() {
                hops.extend(g.parse::<IpAddr>());
            }
            for nh in r["nexthops"].as_array().into_iter().flatten() {
                if let Some(g) = nh["gateway"].as_str() {
                    hops.extend(g.parse::<IpAddr>());
                }
            }
        }
        hops.sort();
        Ok(hops)
    }

    /// Waits until the router's routes to both VIPs have exactly `n` next hops.
    pub fn wait_next_hops(&self, n: usize, timeout: Duration) -> Result<Duration> {
        let (v4, v6) = (self.vip.ip(), self.vip6.ip());
        poll(
            &format!("{n} next hops on the router for {v4} and {v6}"),
            timeout,
            || Ok(self.next_hops(v4)?.len() == n && self.next_hops(v6)?.len() == n),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}: the router has {:?} / {:?}\n{}",
                self.next_hops(v4).unwrap_or_default(),
                self.next_hops(v6).unwrap_or_default(),
                self.system.log_tail("router", "bird", 15)
            )
        })
    }

    /// `lbctl bgp --json` on balancer `lb`.
    pub fn bgp(&self, lb: &str) -> Result<Value> {
        Ok(self.system.lbctl_json(lb, ["bgp"])?)
    }

    /// New connections balancer `lb` counted for the IPv4 VIP (`lbctl stats`).
    pub fn new_conns(&self, lb: &str) -> Result<u64> {
        self.vip_stat(lb, "new_conns")
    }

    /// Counter `field` of the IPv4 VIP on balancer `lb` (`lbctl stats`), 0 when absent.
    pub fn vip_stat(&self, lb: &str, field: &str) -> Result<u64> {
        let stats = self.system.lbctl_json(lb, ["stats"])?;
        Ok(stats["vips"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == self.vip_name.as_str())
            .and_then(|v| v[field].as_u64())
            .unwrap_or(0))
    }

    /// What balancer `lb`'s pinned maps forward with (`lbctl forwarding --json`).
    pub fn forwarding(&self, lb: &str) -> Result<Value> {
        let mut c = std::process::Command::new(self.system.bin("lbctl"));
        c.args(["--json", "forwarding", "--pin-dir"])
            .arg(self.system.bpffs().join(lb));
        Ok(serde_json::from_str(&tests::exec::run(&mut c)?)?)
    }

    /// Requires the running balancers' pinned forwarding state to be equal (a flow moved
    /// between them keeps its backend); returns the common digest.
    pub fn same_tables(&self, when: &str) -> Result<String> {
        let running = self.running_balancers();
        let first = running.first().context("no balancer runs")?;
        let want = self.forwarding(first)?;
        for lb in &running[1..] {
            let got = self.forwarding(lb)?;
            anyhow::ensure!(
                got == want,
                "{when}: {lb}'s forwarding state differs from {first}'s:\n{got:#}\nvs\n{want:#}"
            );
        }
        Ok(want["digest"].to_string())
    }

    /// Failure context: the logs of the given daemons.
    pub fn logs(&self, which: &[(&str, &str)]) -> String {
        self.system.log_tails(which)
    }
}

pub use crate::load::{no_failures, poll};
