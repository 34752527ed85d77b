//! `cargo xtask bench soak --minutes N`: the whole lab under a mixed load (user reads and
//! writes, tasks, orders through the VIP, the chaos tests' client) for N minutes. Every
//! `--sample-seconds` it records the resident memory of lbd on each balancer and of each app,
//! the connection-table size, Redis's memory and the queues' dead letters; at the end it prints
//! them with the requests, errors and p99 latency of each interval, and how much each memory
//! line grew from the first sample after the warm-up to the last (a growing line is a finding).
//! The first sample after the warm-up is the baseline of every ratio. Not part of CI.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde::Serialize;
use serde_json::json;
use tests::http::Request;
use tests::mixed::ledger::{Entry, Op};
use tests::mixed::{self, Mix, Traffic, Users};
use tests::{System, SystemOptions, observe};

/// Run the lab under a mixed load for N minutes, sampling memory, connections, Redis and
/// dead letters, with the requests, errors and p99 latency of every interval.
#[derive(Debug, Parser)]
#[command(name = "soak")]
struct Args {
    /// How long the load runs.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1440))]
    minutes: u64,
    /// Seconds between two samples (and the width of each latency interval).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    sample_seconds: u64,
    /// Samples before this many seconds are warm-up: not the baseline of the growth figures.
    #[arg(long, default_value_t = 60)]
    warmup_seconds: u64,
    /// Client workers (each sends one request at a time, on a new connection).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    workers: u64,
    /// Pause between two requests of one worker, in milliseconds.
    #[arg(long, default_value_t = 30)]
    pace_ms: u64,
    /// Print one JSON object instead of the tables.
    #[arg(long)]
    json: bool,
}

/// One sample of the system's vital signs.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    at_s: f64,
    requests: usize,
    /// Resident memory in KiB, by `host/daemon`.
    rss_kib: BTreeMap<String, u64>,
    /// Flows in lb1's connection table (its last sweep).
    conns: u64,
    redis_used_bytes: u64,
    dead_letters: u64,
}

/// Requests of one interval.
#[derive(Debug, Clone, Serialize)]
struct Interval {
    from_s: f64,
    requests: usize,
    errors: usize,
    p50_ms: f64,
    p99_ms: f64,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn sample(system: &System, t0: Instant, traffic: &Traffic) -> Result<Sample> {
    let mut rss_kib = BTreeMap::new();
    for lb in system.balancers() {
        if let Some(k) = observe::rss_kib(system, &lb, "lbd") {
            rss_kib.insert(format!("{lb}/lbd"), k);
        }
    }
    for be in system.backends() {
        if let Some(k) = observe::rss_kib(system, &be, "app") {
            rss_kib.insert(format!("{be}/app"), k);
        }
    }
    if let Some(k) = observe::rss_kib(system, "svc", "redis") {
        rss_kib.insert("svc/redis".into(), k);
    }
    let metrics = observe::lbd_metrics(system, "lb1")?;
    Ok(Sample {
        at_s: t0.elapsed().as_secs_f64(),
        requests: traffic.sent(),
        rss_kib,
        conns: observe::metric_sum(&metrics, "lb_backend_active_connections") as u64,
        redis_used_bytes: observe::redis_info(system, "memory", "used_memory")?,
        dead_letters: observe::dead_letters(system)?,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

fn intervals(entries: &[Entry], t0: Instant, width: Duration, end: f64) -> Vec<Interval> {
    let n = (end / width.as_secs_f64()).ceil().max(1.0) as usize;
    let mut buckets: Vec<(Vec<Duration>, usize)> = vec![(Vec::new(), 0); n];
    for e in entries {
        let at = e.sent.saturating_duration_since(t0).as_secs_f64();
        let i = ((at / width.as_secs_f64()) as usize).min(n - 1);
        buckets[i].0.push(e.took);
        if !e.ok() {
            buckets[i].1 += 1;
        }
    }
    buckets
        .into_iter()
        .enumerate()
        .map(|(i, (mut took, errors))| {
            took.sort();
            Interval {
                from_s: i as f64 * width.as_secs_f64(),
                requests: took.len(),
                errors,
                p50_ms: percentile(&took, 0.50),
                p99_ms: percentile(&took, 0.99),
            }
        })
        .collect()
}

/// Least-squares slope of `ys` over `xs`, per 10 minutes.
fn slope_per_10min(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if var == 0.0 { 0.0 } else { cov / var * 600.0 }
}

/// Per memory line: first after warm-up, last, last ÷ first, least-squares growth per 10 min.
fn growth(samples: &[Sample], warmup: f64) -> BTreeMap<String, serde_json::Value> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at_s >= warmup).collect();
    let mut lines: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in &after {
        for (k, v) in &s.rss_kib {
            lines
                .entry(format!("{k} RSS MiB"))
                .or_default()
                .push((s.at_s, *v as f64 / 1024.0));
        }
        let extra = [
            ("lb1 conn table", s.conns as f64),
            ("redis used MiB", s.redis_used_bytes as f64 / 1048576.0),
            ("dead letters", s.dead_letters as f64),
        ];
        for (k, v) in extra {
            lines.entry(k.into()).or_default().push((s.at_s, v));
        }
    }
    lines
        .into_iter()
        .map(|(k, pts)| {
            let (xs, ys): (Vec<f64>, Vec<f64>) = pts.iter().copied().unzip();
            let (first, last) = (ys[0], ys[ys.len() - 1]);
            let v = json!({
                "first": first,
                "last": last,
                "ratio": if first > 0.0 { last / first } else { f64::NAN },
                "per_10min": slope_per_10min(&xs, &ys),
            });
            (k, v)
        })
        .collect()
}

fn run(args: &Args) -> Result<serde_json::Value> {
    let mut opts = SystemOptions::from_build();
    opts.progress = !args.json;
    let topology = System::topology(&opts)?;
    let system = System::start(&topology, opts).context("starting the lab")?;
    let v = topology.vip();
    let vip = SocketAddr::new(IpAddr::V4(v.ipv4()), v.port());
    for lb in system.balancers() {
        system.wait_healthy(&lb, system.backends().len(), Duration::from_secs(60))?;
    }
    let tag = format!("{}-soak", system.lab().prefix());
    let workers = args.workers as usize;
    let users = Users::create(&system, vip, &tag, workers)?;
    let sku = format!("{tag}-sku");
    let client = system.lab().host("client")?;
    let body = json!({ "available": 1_000_000_000u64 }).to_string();
    let path = format!("/orders/stock/{sku}");
    // Setting stock is an admin route of the app.
    let token = system.token()?;
    let set = mixed::call(
        client,
        vip,
        Op::Ping,
        Request::put(&path, &body, "soak-stock").authorized(&token),
    )?;
    anyhow::ensure!(set.ok(), "setting the stock: {set:?}");
    let mix = Mix {
        tag: tag.clone(),
        readers: users.readers.clone(),
        owned: users.owned.clone(),
        counter: format!("{tag}-counter"),
        sku,
        pace: Duration::from_millis(args.pace_ms),
        // The sampling loop stops the load; this only bounds it if that loop dies.
        max_time: Duration::from_secs(args.minutes * 60 + 120),
    };
    let length = Duration::from_secs(args.minutes * 60);
    let every = Duration::from_secs(args.sample_seconds);
    let t0 = Instant::now();
    let traffic = Traffic::start(client, vip, mix)?;
    let mut samples = Vec::new();
    if !args.json {
        eprintln!(
            "soak: {} minutes, a sample every {every:?} (Ctrl-C stops early)",
            args.minutes
        );
    }
    let mut k = 0u32;
    while t0.elapsed() < length && !INTERRUPTED.load(Ordering::Relaxed) {
        k += 1;
        let due = t0 + every * k;
        while Instant::now() < due && !INTERRUPTED.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100).min(due - Instant::now()));
        }
        let s = sample(&system, t0, &traffic)?;
        if !args.json {
            let mem: Vec<String> = s
                .rss_kib
                .iter()
                .map(|(k, v)| format!("{k} {:.0}", *v as f64 / 1024.0))
                .collect();
            eprintln!(
                "  {:>6.0} s  {:>8} requests  conns {:>6}  redis {:>6.1} MiB  dead {:>4}  RSS MiB: {}",
                s.at_s,
                s.requests,
                s.conns,
                s.redis_used_bytes as f64 / 1048576.0,
                s.dead_letters,
                mem.join(", ")
            );
        }
        samples.push(s);
    }
    let end = t0.elapsed().as_secs_f64();
    let entries = traffic.finish()?;
    let by_interval = intervals(&entries, t0, every, end);
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for e in &entries {
        if let Some(f) = e.failure() {
            *errors.entry(f).or_default() += 1;
        }
    }
    let mut all: Vec<Duration> = entries.iter().map(|e| e.took).collect();
    all.sort();
    let warmup = args.warmup_seconds as f64;
    let p99: Vec<f64> = by_interval
        .iter()
        .filter(|i| i.from_s >= warmup && i.requests > 0)
        .map(|i| i.p99_ms)
        .collect();
    Ok(json!({
        "minutes": end / 60.0,
        "requests": entries.len(),
        "requests_per_s": entries.len() as f64 / end,
        "errors": errors,
        "p50_ms": percentile(&all, 0.50),
        "p99_ms": percentile(&all, 0.99),
        "p99_first_interval_ms": p99.first(),
        "p99_last_interval_ms": p99.last(),
        "p99_last_over_first": match (p99.first(), p99.last()) {
            (Some(f), Some(l)) if *f > 0.0 => Some(l / f),
            _ => None,
        },
        "growth_after_warmup": growth(&samples, warmup),
        "samples": samples,
        "intervals": by_interval,
    }))
}

fn print_tables(r: &serde_json::Value) {
    println!(
        "soak: {:.1} min, {} requests ({:.0}/s), errors {}, p50 {:.1} ms, p99 {:.1} ms \
         (p99 last interval / first after warm-up: {:.2})",
        r["minutes"].as_f64().unwrap_or(0.0),
        r["requests"],
        r["requests_per_s"].as_f64().unwrap_or(0.0),
        r["errors"],
        r["p50_ms"].as_f64().unwrap_or(f64::NAN),
        r["p99_ms"].as_f64().unwrap_or(f64::NAN),
        r["p99_last_over_first"].as_f64().unwrap_or(f64::NAN),
    );
    println!(
        "\n{:>7} {:>9} {:>6} {:>8} {:>8}",
        "from s", "requests", "errors", "p50 ms", "p99 ms"
    );
    for i in r["intervals"].as_array().into_iter().flatten() {
        println!(
            "{:>7.0} {:>9} {:>6} {:>8.1} {:>8.1}",
            i["from_s"].as_f64().unwrap_or(0.0),
            i["requests"],
            i["errors"],
            i["p50_ms"].as_f64().unwrap_or(f64::NAN),
            i["p99_ms"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!(
        "\n{:<24} {:>10} {:>10} {:>7} {:>12}",
        "line (after warm-up)", "first", "last", "ratio", "per 10 min"
    );
    if let Some(g) = r["growth_after_warmup"].as_object() {
        for (k, v) in g {
            println!(
                "{k:<24} {:>10.1} {:>10.1} {:>7.2} {:>+12.2}",
                v["first"].as_f64().unwrap_or(f64::NAN),
                v["last"].as_f64().unwrap_or(f64::NAN),
                v["ratio"].as_f64().unwrap_or(f64::NAN),
                v["per_10min"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    match run(&args) {
        Ok(r) => {
            if args.json {
                println!("{r}");
            } else {
                print_tables(&r);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::FAILURE
        }
    }
}
