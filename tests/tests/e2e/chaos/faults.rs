//! The faults: each is a [`Fault`] that `scenario` runs while the mixed load goes on. A fault
//! ends when what it broke is back (daemon restarted and answering, link up).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use super::Refusable;
use crate::E2e;
use tests::mixed::Traffic;
use tests::mixed::ledger::Entry;
use tests::observe;

/// A fault of a scenario.
pub trait Fault {
    fn name(&self) -> &'static str;
    /// What may be refused (503 + `Retry-After`) while it lasts.
    fn may(&self) -> Refusable;
    /// Breaks something under load and brings it back.
    fn run(&mut self, e: &E2e, traffic: &Traffic) -> Result<()>;
    /// Whether a request that got no 2xx is excused by the fault (beyond `may`).
    fn excuses(&self, _entry: &Entry) -> bool {
        false
    }
    /// Figures the fault measured, printed after the ledger summary.
    fn report(&self, _e: &E2e) -> Result<String> {
        Ok(String::new())
    }
}

/// Waits until the load made progress again after a fault (bounded).
fn load_goes_on(traffic: &Traffic) -> Result<()> {
    Ok(traffic.wait_more(50, Duration::from_secs(30))?)
}

/// Redis SIGKILLed, restarted after `down`.
pub struct RedisKilled {
    pub down: Duration,
}

impl Fault for RedisKilled {
    fn name(&self) -> &'static str {
        "redis-killed"
    }

    fn may(&self) -> Refusable {
        // The users API goes on from L1 and the database; tasks and orders live in Redis.
        Refusable::QUEUE
    }

    fn run(&mut self, e: &E2e, traffic: &Traffic) -> Result<()> {
        e.system.signal_daemon("svc", "redis", libc::SIGKILL)?;
        e.say(&format!("redis SIGKILLed; back in {:?}", self.down));
        std::thread::sleep(self.down);
        e.system.provision("svc")?;
        load_goes_on(traffic)
    }
}

/// PostgreSQL SIGKILLed (the postmaster and every backend process), restarted after `down`.
pub struct PostgresKilled {
    pub down: Duration,
}

impl Fault for PostgresKilled {
    fn name(&self) -> &'static str {
        "postgres-killed"
    }

    fn may(&self) -> Refusable {
        // Cached reads go on; writes are refused with 503 + Retry-After.
        Refusable::USER_WRITES
    }

    fn run(&mut self, e: &E2e, traffic: &Traffic) -> Result<()> {
        // `postgres.pid` is the session leader that runs the postmaster (`runuser`): kill the
        // whole session, as a crash of the machine's database would.
        let pid = e
            .system
            .daemon_pid("svc", "postgres")
            .context("postgres runs on svc")?;
        // SAFETY: kill(2) of the process group our own provisioning started.
        let rc = unsafe { libc::kill(-pid, libc::SIGKILL) };
        ensure!(
            rc == 0,
            "kill -KILL -{pid}: {}",
            std::io::Error::last_os_error()
        );
        e.system
            .wait_gone("svc", "postgres", Duration::from_secs(10))?;
        e.say(&format!("postgres SIGKILLed; back in {:?}", self.down));
        std::thread::sleep(self.down);
        e.system.provision("svc")?;
        load_goes_on(traffic)
    }
}

/// A host's link down for `down`, then up.
pub struct LinkDown {
    pub host: &'static str,
    pub down: Duration,
}

impl Fault for LinkDown {
    fn name(&self) -> &'static str {
        "link-down"
    }

    fn may(&self) -> Refusable {
        Refusable::WRITES
    }

    fn run(&mut self, e: &E2e, traffic: &Traffic) -> Result<()> {
        let host = e.system.lab().host(self.host)?;
        host.exec(["ip", "link", "set", host.iface(), "down"])?;
        e.say(&format!("{} link down for {:?}", self.host, self.down));
        std::thread::sleep(self.down);
        host.exec(["ip", "link", "set", host.iface(), "up"])?;
        load_goes_on(traffic)
    }
}

/// `lb_table_swaps_total` of lbd on `lb`.
pub fn table_swaps(e: &E2e, lb: &str) -> Result<u64> {
    let text = observe::lbd_metrics(&e.system, lb)?;
    ensure!(
        text.contains("lb_table_swaps_total"),
        "no lb_table_swaps_total in lbd's metrics on {lb}"
    );
    Ok(observe::metric_sum(&text, "lb_table_swaps_total") as u64)
}

/// The churn a flapping backend may cause (table swaps per minute on one balancer).
const MAX_SWAPS_PER_MINUTE: f64 = 12.0;

/// One backend's app SIGKILLed and started again every `period` for `length`.
pub struct Flapping {
    pub host: &'static str,
    pub period: Duration,
    pub length: Duration,
    /// When each kill happened, and whether lbd on lb1 had the backend in the VIP's table
    /// then (healthy: new connections were still sent to it).
    deaths: Vec<(Instant, bool)>,
    /// The documented bound of the health checks: interval × fall + timeout.
    window: Duration,
    swaps: (u64, u64),
    began: Option<Instant>,
    ended: Option<Instant>,
}

impl Flapping {
    pub fn new(host: &'static str, window: Duration) -> Self {
        Self {
            host,
            period: Duration::from_secs(2),
            length: Duration::from_secs(30),
            deaths: Vec::new(),
            window,
            swaps: (0, 0),
            began: None,
            ended: None,
        }
    }
}

impl Fault for Flapping {
    fn name(&self) -> &'static str {
        "backend-flapping"
    }

    fn may(&self) -> Refusable {
        Refusable::NOTHING
    }

    fn run(&mut self, e: &E2e, traffic: &Traffic) -> Result<()> {
        self.swaps.0 = table_swaps(e, "lb1")?;
        let start = Instant::now();
        self.began = Some(start);
        let mut k = 0u32;
        while start.elapsed() < self.length {
            let due = start + self.period * k;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            // lbd answers its API under the lock it updates the maps with.
            let in_table = e.health_of("lb1", self.host)?.starts_with("healthy");
            // The death counts from the signal (signal_daemon returns once it is gone).
            let at = Instant::now();
            e.system.signal_daemon(self.host, "app", libc::SIGKILL)?;
            self.deaths.push((at, in_table));
            e.system.provision(self.host)?;
            k += 1;
        }
        self.ended = Some(Instant::now());
        self.swaps.1 = table_swaps(e, "lb1")?;
        e.say(&format!(
            "{}'s app killed and restarted {} times in {:.1} s",
            self.host,
            self.deaths.len(),
            start.elapsed().as_secs_f64()
        ));
        load_goes_on(traffic)
    }

    /// A request may fail when it overlaps the health-check window after a death of the
    /// backend while it was in the table: from the kill until the checks take it out. Once
    /// out, a flapping backend must stay out (lbd's hysteresis): no more failures.
    fn excuses(&self, x: &Entry) -> bool {
        let end = x.sent + x.took;
        self.deaths
            .iter()
            .filter(|(_, in_table)| *in_table)
            .any(|(d, _)| end >= *d && x.sent <= *d + self.window)
    }

    fn report(&self, e: &E2e) -> Result<String> {
        let (Some(began), Some(ended)) = (self.began, self.ended) else {
            return Ok(String::new());
        };
        let minutes = (ended - began).as_secs_f64() / 60.0;
        let swaps = self.swaps.1.saturating_sub(self.swaps.0);
        let health = e.health_of("lb1", self.host)?;
        let in_table = self.deaths.iter().filter(|(_, t)| *t).count();
        // Hysteresis bounds the churn: at most one swap in or out per 5 s however fast the
        // backend dies and comes back.
        ensure!(
            swaps as f64 / minutes <= MAX_SWAPS_PER_MINUTE,
            "{} flaps of {} made lbd on lb1 swap the VIP's table {swaps} times in {:.0} s",
            self.deaths.len(),
            self.host,
            minutes * 60.0
        );
        Ok(format!(
            "{} flaps in {:.0} s ({in_table} while in lb1's table): lbd on lb1 swapped the \
             VIP's table {swaps} times ({:.1} per minute); {} is {health} now; requests may \
             fail within {} ms of a death while in the table",
            self.deaths.len(),
            minutes * 60.0,
            swaps as f64 / minutes,
            self.host,
            self.window.as_millis()
        ))
    }
}

/// lbd SIGKILLed on lb1 (the master), restarted; then the same on lb2.
pub struct LbdKilledOnBoth;

impl Fault for LbdKilledOnBoth {
    fn name(&self) -> &'static str {
        "lbd-killed"
    }

    fn may(&self) -> Refusable {
        Refusable::NOTHING
    }

    fn run(&mut self, e: &E2e, traffic: &Traffic) -> Result<()> {
        for lb in ["lb1", "lb2"] {
            e.system.signal_daemon(lb, "lbd", libc::SIGKILL)?;
            e.say(&format!("lbd on {lb} SIGKILLed"));
            // Long enough for the other to take the VIP over (VRRP master down interval).
            traffic.wait_more(400, Duration::from_secs(30))?;
            e.system.provision(lb)?;
            e.system
                .wait_healthy(lb, e.system.backends().len(), Duration::from_secs(30))?;
            e.wait_until("lb1 to be the VRRP master", Duration::from_secs(30), || {
                Ok(e.system.is_master("lb1"))
            })?;
            e.say(&format!("lbd on {lb} restarted; lb1 is master"));
            traffic.wait_more(200, Duration::from_secs(30))?;
        }
        Ok(())
    }
}
