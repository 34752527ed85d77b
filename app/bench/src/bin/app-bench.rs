//! `cargo xtask bench app`: requests per second and p50/p99 latency of the app's read
//! paths, measured with `wrk` against in-process app instances on loopback, beside
//! `redis-benchmark -t get` (the bound for the L2 path) measured in the same run.
//!
//! Rows (each the median of `--runs` runs):
//! - `ping`: `GET /ping`, a constant body (the baseline every ratio refers to);
//! - `l1_hit`: `GET /users/{id}` on an instance with L1 on (served from moka);
//! - `l2_hit`: `GET /users/{id}` on a second instance with L1 disabled (`cache.l1_enabled =
//!   false`), so every request is one Redis GET;
//! - `db_read`: `GET /users/{id}` on a third instance with L1, L2 and the Bloom filter
//!   disabled, so every request is one SQLite read;
//! - `redis_get`: `redis-benchmark -t get` against the same redis-server.
//!
//! The instances share one redis-server (started here on a free port, no persistence) and
//! one SQLite file in a temporary directory. The user rows read `--users` different ids at
//! random (a wrk Lua script), so concurrent misses of one key are rarely coalesced and each
//! request really takes the path its row names; the app's cache counters, read after
//! every row, report the share of requests that did (`level %`).

use std::process::Command;

use anyhow::{Context, bail};
use clap::Parser;
use serde::Serialize;

use app::config::Config;
use app::server::RunningApp;
use app_testkit::LocalRedis;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "app-bench",
    about = "Benchmark the app's read paths (ping, L1 hit, L2 hit, database read) with wrk, beside redis-benchmark GET"
)]
struct Args {
    /// Short run for smoke tests: 1 s per run, 3 runs, fewer redis-benchmark requests.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Runs per row; the median is reported (at least 3).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(3..=50))]
    runs: u32,
    /// Seconds per wrk run (default 5; 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=300))]
    duration_secs: Option<u64>,
    /// Open connections (wrk -c and redis-benchmark -c).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    threads: u32,
    /// Users created and read at random by the user rows.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    users: u32,
    /// Requests per redis-benchmark run (default 200000; 50000 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1000..=10_000_000))]
    redis_requests: Option<u64>,
}

/// One measurement.
#[derive(Debug, Clone, Copy, Serialize)]
struct Sample {
    requests_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
}

#[derive(Debug, Serialize)]
struct Row {
    name: &'static str,
    description: &'static str,
    requests_per_sec: f64,
    p50_latency_ms: f64,
    p99_latency_ms: f64,
    /// Throughput relative to the `ping` row of the same run.
    ratio_to_ping: f64,
    /// Share of the row's requests answered by the level the row names (from the app's
    /// counters); null for rows without a cache level.
    level_hit_ratio: Option<f64>,
    runs: Vec<Sample>,
}

#[derive(Debug, Serialize)]
struct Report {
    benchmark: &'static str,
    load_generator: &'static str,
    runs_per_row: u32,
    seconds_per_run: u64,
    connections: u32,
    wrk_threads: u32,
    redis_benchmark_requests: u64,
    rows: Vec<Row>,
}

fn need(bin: &str, package: &str) -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    if !found {
        bail!("`{bin}` not found in PATH: install the apt package `{package}`");
    }
    Ok(())
}

/// "211.00us" / "1.20ms" / "1.02s" -> milliseconds.
fn parse_duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(v) = s.strip_suffix("us") {
        (v, 1e-3)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e3)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

fn parse_wrk(out: &str) -> anyhow::Result<Sample> {
    let mut rps = None;
    let (mut p50, mut p99, mut requests) = (None, None, None);
    for line in out.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = t.strip_prefix("50%") {
            p50 = parse_duration_ms(v);
        } else if let Some(v) = t.strip_prefix("99%") {
            p99 = parse_duration_ms(v);
        } else if t.contains("requests in") {
            requests = t
                .split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok());
        } else if t.starts_with("Non-2xx or 3xx responses:") || t.starts_with("Socket errors:") {
            bail!("wrk saw failures: {t}");
        }
    }
    match (rps, p50, p99, requests) {
        (Some(r), Some(a), Some(b), Some(n)) => Ok(Sample {
            requests_per_sec: r,
            p50_ms: a,
            p99_ms: b,
            requests: n,
        }),
        _ => bail!("could not parse wrk output:\n{out}"),
    }
}

/// A wrk script requesting `/users/{random id in ids}`.
fn user_script(first: i64, last: i64) -> String {
    format!(
        "local n = 0\n\
         setup = function(thread) n = n + 1; thread:set(\"seed\", n) end\n\
         init = function(args) math.randomseed(os.time() + (seed or 0)) end\n\
         request = function() return wrk.format(\"GET\", \"/users/\" .. math.random({first}, {last})) end\n"
    )
}

fn run_wrk(
    url: &str,
    script: Option<&std::path::Path>,
    args: &Args,
    secs: u64,
) -> anyhow::Result<Sample> {
    let mut cmd = Command::new("wrk");
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd
        .args([
            "-t",
            &args.threads.to_string(),
            "-c",
            &args.connections.to_string(),
        ])
        .args([
            "-d",
            &format!("{secs}s"),
            "--timeout",
            "10s",
            "--latency",
            url,
        ])
        .output()
        .context("running wrk")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

fn run_redis_benchmark(port: u16, args: &Args, requests: u64) -> anyhow::Result<Sample> {
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "get",
            "--csv",
        ])
        .args([
            "-n",
            &requests.to_string(),
            "-c",
            &args.connections.to_string(),
        ])
        .output()
        .context("running redis-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let row = text
        .lines()
        .find(|l| l.starts_with("\"GET\""))
        .with_context(|| format!("no GET row in redis-benchmark output:\n{text}"))?;
    let f: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|v| v.trim_matches('"').parse::<f64>().unwrap_or(f64::NAN))
        .collect();
    if f.len() < 7 || f.iter().any(|v| v.is_nan()) {
        bail!("unexpected redis-benchmark row: {row}");
    }
    Ok(Sample {
        requests_per_sec: f[0],
        p50_ms: f[3],
        p99_ms: f[5],
        requests,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn instance_config(db: &str, redis: &str, l1: bool, l2: bool) -> Config {
    let mut c = Config {
        listen: ([127, 0, 0, 1], 0).into(),
        ..Config::default()
    };
    c.database.url = db.to_string();
    c.redis.url = redis.to_string();
    c.http.rate_limit.enabled = false;
    c.cache.l1_enabled = l1;
    c.cache.l2_enabled = l2;
    c.cache.bloom_enabled = l1 || l2;
    // Long TTLs: the measured entry must not expire during a row.
    c.cache.l1_ttl_ms = 3_600_000;
    c.cache.l2_ttl_ms = 3_600_000;
    c.shutdown.drain_delay_ms = 0;
    c
}

fn progress(args: &Args, msg: &str) {
    if !args.json {
        eprintln!("{msg}");
    }
}

async fn bench(args: Args) -> anyhow::Result<Report> {
    need("wrk", "wrk")?;
    need("redis-server", "redis-server")?;
    need("redis-benchmark", "redis-tools")?;
    let secs = args.duration_secs.unwrap_or(if args.quick { 1 } else { 5 });
    let redis_requests = args
        .redis_requests
        .unwrap_or(if args.quick { 50_000 } else { 200_000 });

    let redis = LocalRedis::start()?;
    let redis_url = redis.url();
    let dir = tempfile::tempdir()?;
    let db = format!("sqlite://{}", dir.path().join("bench.db").display());
    let full = app::server::start(instance_config(&db, &redis_url, true, true)).await?;
    let l2only = app::server::start(instance_config(&db, &redis_url, false, true)).await?;
    let dbonly = app::server::start(instance_config(&db, &redis_url, false, false)).await?;

    // Users to read (created through the store and the cache's create hook, which is what
    // POST /users does), then L1 and L2 warmed by reading each once.
    progress(&args, &format!("creating and warming {} users", args.users));
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for i in 0..args.users {
        let req = app::store::CreateUserRequest {
            name: format!("bench{i}"),
            email: format!("bench{i}@example.org"),
        };
        let new = app::store::NewUser::try_from(req).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let u = full.state.store.create_user(&new).await?;
        full.state.cache.created(app::cache::Key::user(u.id)).await;
        first = first.min(u.id);
        last = last.max(u.id);
    }
    if last - first + 1 != i64::from(args.users) {
        bail!("user ids are not contiguous ({first}..={last}); use a fresh database");
    }
    let c = reqwest::Client::new();
    for id in first..=last {
        for a in [&full, &l2only] {
            c.get(format!("http://{}/users/{id}", a.addr))
                .send()
                .await?
                .error_for_status()?;
        }
    }
    let script = dir.path().join("users.lua");
    std::fs::write(&script, user_script(first, last))?;

    type Hits = fn(&RunningApp) -> u64;
    let rows: [(&'static str, &'static str, &RunningApp, &str, Option<Hits>); 4] = [
        (
            "ping",
            "GET /ping (constant body; baseline)",
            &full,
            "/ping",
            None,
        ),
        (
            "l1_hit",
            "GET /users/{id} from L1 (moka)",
            &full,
            "/",
            Some(|a| a.state.metrics.lookups("l1", "hit")),
        ),
        (
            "l2_hit",
            "GET /users/{id} from L2 (Redis; L1 disabled)",
            &l2only,
            "/",
            Some(|a| a.state.metrics.lookups("l2", "hit")),
        ),
        (
            "db_read",
            "GET /users/{id} from SQLite (caches disabled)",
            &dbonly,
            "/",
            Some(|a| a.state.metrics.user_db_loads()),
        ),
    ];
    let mut out = Vec::new();
    for (name, description, inst, path, hits) in rows {
        let url = format!("http://{}{}", inst.addr, path);
        let mut samples = Vec::new();
        let before = hits.map(|h| h(inst));
        for run in 1..=args.runs {
            progress(
                &args,
                &format!(
                    "{name}: run {run}/{} ({secs} s, wrk -c{})",
                    args.runs, args.connections
                ),
            );
            let u = url.clone();
            let a = args.clone();
            let sc = hits.is_some().then(|| script.clone());
            samples.push(
                tokio::task::spawn_blocking(move || run_wrk(&u, sc.as_deref(), &a, secs)).await??,
            );
        }
        let level_hit_ratio = match (hits, before) {
            (Some(h), Some(b)) => {
                let total: u64 = samples.iter().map(|s| s.requests).sum();
                Some(((h(inst) - b) as f64 / total.max(1) as f64).min(1.0))
            }
            _ => None,
        };
        out.push(make_row(name, description, samples, level_hit_ratio));
    }
    let mut samples = Vec::new();
    for run in 1..=args.runs {
        progress(
            &args,
            &format!(
                "redis_get: run {run}/{} (redis-benchmark -t get -n {redis_requests})",
                args.runs
            ),
        );
        let a = args.clone();
        let port = redis.port();
        samples.push(
            tokio::task::spawn_blocking(move || run_redis_benchmark(port, &a, redis_requests))
                .await??,
        );
    }
    out.push(make_row(
        "redis_get",
        "redis-benchmark -t get (bound for the L2 path)",
        samples,
        None,
    ));

    let ping = out[0].requests_per_sec;
    for r in &mut out {
        r.ratio_to_ping = if ping > 0.0 {
            r.requests_per_sec / ping
        } else {
            0.0
        };
    }
    for a in [full, l2only, dbonly] {
        a.stop().await?;
    }
    Ok(Report {
        benchmark: "app",
        load_generator: "wrk",
        runs_per_row: args.runs,
        seconds_per_run: secs,
        connections: args.connections,
        wrk_threads: args.threads,
        redis_benchmark_requests: redis_requests,
        rows: out,
    })
}

fn make_row(
    name: &'static str,
    description: &'static str,
    runs: Vec<Sample>,
    level_hit_ratio: Option<f64>,
) -> Row {
    Row {
        name,
        description,
        requests_per_sec: median(runs.iter().map(|s| s.requests_per_sec).collect()),
        p50_latency_ms: median(runs.iter().map(|s| s.p50_ms).collect()),
        p99_latency_ms: median(runs.iter().map(|s| s.p99_ms).collect()),
        ratio_to_ping: 0.0,
        level_hit_ratio,
        runs,
    }
}

fn print_table(r: &Report) {
    println!(
        "app benchmark: wrk -t{} -c{}, {} s per run, median of {} runs; redis-benchmark -n {} -c{}",
        r.wrk_threads,
        r.connections,
        r.seconds_per_run,
        r.runs_per_row,
        r.redis_benchmark_requests,
        r.connections
    );
    println!(
        "{:<10} {:>12} {:>9} {:>9} {:>9} {:>9}  what",
        "row", "req/s", "p50 ms", "p99 ms", "x ping", "level %"
    );
    for row in &r.rows {
        let level = row
            .level_hit_ratio
            .map(|v| format!("{:.1}", v * 100.0))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<10} {:>12.0} {:>9.3} {:>9.3} {:>9.2} {:>9}  {}",
            row.name,
            row.requests_per_sec,
            row.p50_latency_ms,
            row.p99_latency_ms,
            row.ratio_to_ping,
            level,
            row.description
        );
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let json = args.json;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(bench(args))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}
