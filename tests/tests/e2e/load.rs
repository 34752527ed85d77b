//! Bounded load from the client host: workers that each open a new connection per request
//! (so the balancer chooses a backend for every request), and keep-alive connections that
//! stay on one backend. Every request's outcome, start and end time and id are recorded; the
//! answering backend comes from the apps' logs ([`crate::served`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tests::Host;

use crate::http::{self, Conn, Request};

/// What happened to one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: String,
    /// Worker (new-connection load) or connection index (keep-alive).
    pub lane: usize,
    pub start: Instant,
    pub end: Instant,
    /// The status, or the error text.
    pub result: Result<u16, String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.result == Ok(200)
    }
}

/// The shape of a new-connection load.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Prefix of every request id (unique per test).
    pub tag: String,
    pub workers: usize,
    /// Stop after this many requests in total...
    pub max_requests: usize,
    /// ...or after this long, whichever comes first.
    pub max_time: Duration,
    /// Each worker sends at most one request per `pace` (zero: back to back).
    pub pace: Duration,
    /// Connect and read bound of one request.
    pub timeout: Duration,
    pub path: String,
}

impl Spec {
    pub fn new(tag: &str) -> Self {
        Self {
            tag: tag.into(),
            workers: 4,
            max_requests: 100_000,
            max_time: Duration::from_secs(60),
            pace: Duration::from_millis(5),
            timeout: Duration::from_secs(5),
            path: "/ping".into(),
        }
    }
}

/// A running load; [`Load::finish`] stops it and returns every outcome.
pub struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    ok: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<Vec<Outcome>>>,
    deadline: Instant,
}

impl Load {
    /// Starts `spec.workers` threads inside `client`'s namespace sending to `addr`.
    pub fn start(client: &Host, addr: SocketAddr, spec: Spec) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let ok = Arc::new(AtomicUsize::new(0));
        let issued = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + spec.max_time;
        let mut threads = Vec::new();
        for lane in 0..spec.workers {
            let (stop, done, ok, issued, spec) = (
                stop.clone(),
                done.clone(),
                ok.clone(),
                issued.clone(),
                spec.clone(),
            );
            threads.push(client.spawn_thread(move || {
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if n >= spec.max_requests {
                        break;
                    }
                    let id = format!("{}-{n}", spec.tag);
                    let start = Instant::now();
                    let result = http::once(addr, &Request::get(&spec.path, &id), spec.timeout)
                        .map(|r| r.status)
                        .map_err(|e| e.to_string());
                    let end = Instant::now();
                    if result == Ok(200) {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    out.push(Outcome {
                        id,
                        lane,
                        start,
                        end,
                        result,
                    });
                    done.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(spec.pace.saturating_sub(end - start));
                }
                out
            })?);
        }
        Ok(Self {
            stop,
            done,
            ok,
            threads,
            deadline,
        })
    }

    /// Requests finished so far.
    pub fn done(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Requests answered 200 so far.
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests than now have finished (bounded by `timeout`).
    pub fn wait_more(&self, n: usize, timeout: Duration) -> Result<()> {
        let want = self.done() + n;
        let until = Instant::now() + timeout;
        while self.done() < want {
            if Instant::now() >= until || Instant::now() >= self.deadline {
                bail!(
                    "the load made {} of {want} requests within {timeout:?}",
                    self.done()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits until every worker ends by itself (count or time bound reached).
    pub fn join(mut self) -> Result<Report> {
        let mut outcomes = Vec::new();
        for t in std::mem::take(&mut self.threads) {
            outcomes.extend(
                t.join()
                    .map_err(|_| anyhow::anyhow!("a load worker panicked"))?,
            );
        }
        outcomes.sort_by_key(|o| o.start);
        Ok(Report { outcomes })
    }

    /// Stops the workers after their current request.
    pub fn finish(self) -> Result<Report> {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // A failed test drops a running load: stop it (its workers end after one request).
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Outcomes of a load, sorted by start time.
#[derive(Debug, Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
}

impl Report {
    pub fn ok(&self) -> usize {
        self.outcomes.iter().filter(|o| o.ok()).count()
    }

    /// Ids of the requests that got an answer (to look up in the backends' logs).
    pub fn answered_ids(&self) -> impl Iterator<Item = &str> {
        self.outcomes
            .iter()
            .filter(|o| o.ok())
            .map(|o| o.id.as_str())
    }

    pub fn failed(&self) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| !o.ok()).collect()
    }

    /// Failed requests that started at or after `t`.
    pub fn failed_after(&self, t: Instant) -> Vec<&Outcome> {
        self.outcomes
            .iter()
            .filter(|o| o.start >= t && !o.ok())
            .collect()
    }

    /// The longest time without a successful answer around `t`: between the last success that
    /// ended before `t` and the first that ended after it, and every gap after that.
    pub fn longest_gap_after(&self, t: Instant) -> Option<Duration> {
        let mut ends: Vec<Instant> = self
            .outcomes
            .iter()
            .filter(|o| o.ok())
            .map(|o| o.end)
            .collect();
        ends.sort();
        let first_after = ends.iter().position(|e| *e > t)?;
        let from = first_after.saturating_sub(1);
        ends[from..].windows(2).map(|w| w[1] - w[0]).max()
    }

    /// Each lane's first failed request: the keep-alive connections that broke (one that
    /// fails once is not used again).
    pub fn broken_lanes(&self) -> Vec<&Outcome> {
        let mut first: std::collections::BTreeMap<usize, &Outcome> = Default::default();
        for o in self.outcomes.iter().filter(|o| !o.ok()) {
            first.entry(o.lane).or_insert(o);
        }
        first.into_values().collect()
    }

    /// The longest time one lane (a keep-alive connection) went without an answer across
    /// `t`: between two of its answers, the later one after `t`.
    pub fn longest_stall(&self, t: Instant) -> Option<Duration> {
        let mut by_lane: std::collections::BTreeMap<usize, Vec<Instant>> = Default::default();
        for o in self.outcomes.iter().filter(|o| o.ok()) {
            by_lane.entry(o.lane).or_default().push(o.end);
        }
        by_lane
            .values_mut()
            .filter_map(|ends| {
                ends.sort();
                ends.windows(2)
                    .filter(|w| w[1] > t)
                    .map(|w| w[1] - w[0])
                    .max()
            })
            .max()
    }

    /// A few failures, for messages.
    pub fn describe_failures(&self, failed: &[&Outcome], t0: Instant) -> String {
        failed
            .iter()
            .take(5)
            .map(|o| {
                format!(
                    "{} at +{} ms: {:?}",
                    o.id,
                    o.start.saturating_duration_since(t0).as_millis(),
                    o.result
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Keep-alive connections, each sending one request every `period` until stopped: they stay
/// on the backend the balancer chose when they were opened.
pub struct KeepAlive {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Outcome>>>,
    /// The id of each connection's first request (to find its backend).
    pub first_ids: Vec<String>,
}

impl KeepAlive {
    /// Opens `n` connections from `client` to `addr` and sends one request on each; then a
    /// thread keeps them busy. A connection that fails once is not used again.
    pub fn start(
        client: &Host,
        addr: SocketAddr,
        tag: &str,
        n: usize,
        period: Duration,
    ) -> Result<Self> {
        let timeout = Duration::from_secs(5);
        let first_ids: Vec<String> = (0..n).map(|i| format!("{tag}-c{i}-0")).collect();
        let ids = first_ids.clone();
        let mut conns = client.in_netns(move || -> Result<Vec<Conn>> {
            let mut conns = Vec::new();
            for id in &ids {
                let mut c = Conn::connect(addr, timeout)
                    .with_context(|| format!("keep-alive connection to {addr}"))?;
                let r = c.send(&Request::get("/ping", id))?;
                anyhow::ensure!(r.status == 200, "first request {id}: status {}", r.status);
                conns.push(c);
            }
            Ok(conns)
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let tag = tag.to_string();
        // Bounded: at most 10 minutes or 100,000 requests, whatever the caller does.
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut alive = vec![true; conns.len()];
            let t0 = Instant::now();
            let mut round = 1;
            while !flag.load(Ordering::Relaxed)
                && t0.elapsed() < Duration::from_secs(600)
                && out.len() < 100_000
            {
                for (lane, c) in conns.iter_mut().enumerate() {
                    if !alive[lane] {
                        continue;
                    }
                    let id = format!("{tag}-c{lane}-{round}");
                    let start = Instant::now();
                    let result = c
                        .send(&Request::get("/ping", &id))
                        .map(|r| r.status)
                        .map_err(|e| e.to_string());
                    alive[lane] = result == Ok(200);
                    out.push(Outcome {
                        id,
                        lane,
                        start,
                        end: Instant::now(),
                        result,
                    });
                }
                round += 1;
                std::thread::sleep(period);
            }
            out
        });
        Ok(Self {
            stop,
            thread: Some(thread),
            first_ids,
        })
    }

    /// Stops the thread and returns every outcome after the first requests.
    pub fn finish(mut self) -> Result<Report> {
        self.stop.store(true, Ordering::Relaxed);
        let outcomes = self
            .thread
            .take()
            .context("keep-alive thread already joined")?
            .join()
            .map_err(|_| anyhow::anyhow!("the keep-alive thread panicked"))?;
        Ok(Report { outcomes })
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `cond` every 100 ms until it holds, at most `timeout`; returns the time it took.
pub fn poll(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Result<bool>,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if cond()? {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            bail!("waited {timeout:?} for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Fails listing a few failures of `report` when there are any.
pub fn no_failures(what: &str, report: &Report, t0: Instant) -> Result<()> {
    let failed = report.failed();
    if !failed.is_empty() {
        bail!(
            "{what}: {} of {} requests failed: {}",
            failed.len(),
            report.outcomes.len(),
            report.describe_failures(&failed, t0)
        );
    }
    Ok(())
}
