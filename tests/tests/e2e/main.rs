//! End-to-end tests of the whole system (issue 7): the lab of `vagrant/topology.json` with
//! `lbd` on lb1 (VRRP master) and lb2, `app` on be1..be3, Redis and PostgreSQL on svc, all
//! provisioned by the same scripts as `cargo xtask lab` and the Vagrant VMs. Every request
//! comes from the client namespace through the VIP; the backend that answered it is read from
//! the apps' logs (every request carries a unique `x-request-id`).
//!
//! Run as root: `cargo xtask test e2e` (builds the release binaries first), or
//! `cargo build --release -p lbd -p lbctl -p app --bins && cargo test -p tests --test e2e`.
//! Each test starts its own lab under a unique name; a static lock runs one lab at a time.
//! `E2E_PROGRESS=1` prints the provisioning steps. Figures (shares, gaps, counts) go to stderr:
//! `-- --nocapture` shows them.

mod api;
mod backend_failure;
mod balancer_failure;
mod browser;
mod chaos;
mod dashboard;
mod drain;
mod ipv6;
mod load;
mod prometheus;
mod restart;
mod served;
mod spread;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tests::{Host, System, SystemOptions, http};

use crate::served::Ledger;

/// One lab at a time: the machine has two cores and every lab runs seven hosts.
static SERIAL: Mutex<()> = Mutex::new(());

/// A running system for one test, with the client's view of it.
pub struct E2e {
    pub system: System,
    pub vip: SocketAddr,
    /// The same service on the IPv6 VIP.
    pub vip6: SocketAddr,
    pub vip_name: String,
    pub ledger: Ledger,
    pub test: &'static str,
    // Declared last: released after the system is torn down.
    _serial: MutexGuard<'static, ()>,
}

impl E2e {
    /// Starts the whole system and waits until both balancers see every backend healthy and
    /// lb1 is the VRRP master.
    pub fn start(test: &'static str) -> Result<Self> {
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        tests::exec::require_root().context(
            "the end-to-end tests create network namespaces and attach XDP programs: run them \
             as root (cargo xtask test e2e)",
        )?;
        let mut opts = SystemOptions::from_build();
        opts.progress = std::env::var_os("E2E_PROGRESS").is_some();
        let topology = System::topology(&opts)?;
        let began = Instant::now();
        let system = System::start(&topology, opts)
            .with_context(|| format!("{test}: starting the lab of vagrant/topology.json"))?;
        let v = topology.vip();
        let e2e = Self {
            vip: SocketAddr::new(IpAddr::V4(v.ipv4()), v.port()),
            vip6: SocketAddr::new(IpAddr::V6(v.ipv6()), v.port()),
            vip_name: v.name().to_string(),
            system,
            ledger: Ledger::default(),
            test,
            _serial: serial,
        };
        for lb in e2e.system.balancers() {
            e2e.system
                .wait_healthy(&lb, e2e.system.vip_backends(), Duration::from_secs(60))?;
        }
        e2e.wait_until("lb1 to be the VRRP master", Duration::from_secs(30), || {
            Ok(e2e.system.is_master("lb1"))
        })?;
        e2e.say(&format!(
            "lab {} up in {:.1} s",
            e2e.system.lab().prefix(),
            began.elapsed().as_secs_f64()
        ));
        Ok(e2e)
    }

    pub fn client(&self) -> &Host {
        self.system
            .lab()
            .host("client")
            .expect("the topology has a client")
    }

    pub fn say(&self, msg: &str) {
        eprintln!("[e2e {}] {msg}", self.test);
    }

    /// Polls `cond` every 100 ms until it holds, at most `timeout`; returns the time it took.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl FnMut() -> Result<bool>,
    ) -> Result<Duration> {
        poll(what, timeout, cond)
    }

    /// Address of backend `be` (from the topology).
    pub fn addr_of(&self, host: &str) -> Result<IpAddr> {
        Ok(IpAddr::V4(self.system.lab().host(host)?.ipv4()))
    }

    /// Health of backend `be` as `lbd` on `lb` reports it (`healthy`, `unhealthy`, ...).
    pub fn health_of(&self, lb: &str, be: &str) -> Result<String> {
        let addr = self.addr_of(be)?.to_string();
        let json = self.system.lbctl_json(lb, ["health"])?;
        Ok(json
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["address"] == addr.as_str())
            .map(|b| {
                format!(
                    "{}/{}",
                    b["health"].as_str().unwrap_or("?"),
                    b["admin"].as_str().unwrap_or("?")
                )
            })
            .unwrap_or_else(|| "absent".into()))
    }

    /// Runs `lbctl ARGS...` on balancer `lb`, failing with its stderr.
    pub fn lbctl(&self, lb: &str, args: &[&str]) -> Result<String> {
        let mut c = self.system.lbctl(lb);
        c.args(args);
        Ok(tests::exec::run(&mut c)?)
    }

    /// Requests of `report` per backend (from the logs), plus those no log shows.
    pub fn per_backend<'a>(
        &self,
        outcomes: impl IntoIterator<Item = &'a load::Outcome>,
    ) -> (BTreeMap<String, usize>, usize) {
        let mut by: BTreeMap<String, usize> =
            self.system.backends().into_iter().map(|b| (b, 0)).collect();
        let mut unknown = 0;
        for o in outcomes.into_iter().filter(|o| o.ok()) {
            match self.ledger.backend(&o.id) {
                Some(b) => *by.entry(b.to_string()).or_default() += 1,
                None => unknown += 1,
            }
        }
        (by, unknown)
    }

    /// Failure message context: the logs of the given daemons.
    pub fn logs(&self, which: &[(&str, &str)]) -> String {
        self.system.log_tails(which)
    }
}

pub use crate::load::{no_failures, poll};
