//! `cargo xtask bench app`: requests per second and p50/p99/p99.9 latency of the app's read
//! paths, measured with `wrk` against `app serve` processes on loopback, beside the peers
//! measured in the same run:
//! - the design seed's Gin service (`gin.Default()`, `GET /ping`), built from Debian's Go
//!   packages by this bench, and its chapter 3.2 cached read (`GET /users/:id` through
//!   go-redis, reading the entries our app wrote to L2);
//! - `redis-benchmark -t get` on the same redis-server, the bound of the L2 path.
//!
//! Rows (each the median of `--runs` runs; runs are interleaved and each run starts at the
//! next row, so a slow moment of the shared machine does not hit one row only):
//! - `ping`: `GET /ping`, a constant body;
//! - `l1_hit`: `GET /users/{id}` on an instance with L1 on (served from moka);
//! - `l2_hit`: `GET /users/{id}` on an instance with L1 off, so every request is one Redis GET;
//! - `db_read`: `GET /users/{id}` on an instance with no cache, so every request is one
//!   SQLite read (this row shows the database pool's saturation);
//! - `gin_ping`, `gin_l2_hit`: the same two paths on Gin;
//! - `redis_get`: `redis-benchmark -t get`.
//!
//! Our rows run on each allocator of `--allocators` (the allocator study). Every server
//! logs one line per request to its own file, uses every core unless `--cpus` pins them all
//! to one list, and is sampled for resident memory while it is loaded.

#[path = "app_bench/load.rs"]
mod load;
#[path = "app_bench/report.rs"]
mod report;
#[path = "app_bench/servers.rs"]
mod servers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;

use app::alloc::Allocator;
use app_bench::procs::{self, Sampler, Server};
use app_bench::prom::{self, Metrics};
use app_testkit::LocalRedis;
use load::WrkLoad;
use report::{PoolRun, RunOut};
use servers::{Levels, Shared};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "app-bench",
    about = "Benchmark the app's read paths (ping, L1 hit, L2 hit, database read) with wrk, beside the seed's Gin service and redis-benchmark GET"
)]
struct Args {
    /// Short run for smoke tests: 1 s per run, 3 runs, 200 users, fewer redis-benchmark requests.
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
    /// Users created and read at random by the user rows (default 1000; 200 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    users: Option<u32>,
    /// Requests per redis-benchmark run (default 200000; 50000 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1000..=10_000_000))]
    redis_requests: Option<u64>,
    /// Allocators our rows run on, comma separated: system, jemalloc, mimalloc (the
    /// allocator study: `--allocators system,jemalloc,mimalloc`). Default: the app's default.
    #[arg(long, value_delimiter = ',')]
    allocators: Vec<Allocator>,
    /// Rows to run, comma separated (default all): ping, l1_hit, l2_hit, db_read, gin_ping,
    /// gin_l2_hit, redis_get.
    #[arg(long, value_delimiter = ',')]
    only: Vec<report::Kind>,
    /// Pin every server (ours and Gin) to this CPU list (`taskset -c`), e.g. `0` or `0-1`.
    /// Default: every server may use every core, like the load generator.
    #[arg(long)]
    cpus: Option<String>,
    /// Record a CPU profile of each app row's first run into this folder
    /// (`perf record -g -p PID`, one `ROW-ALLOCATOR.data` per row; read it with
    /// `perf report -i FILE --no-children`).
    #[arg(long)]
    perf: Option<PathBuf>,
    /// The `app` binary to measure (default: the one built next to this bench).
    #[arg(long)]
    app_bin: Option<PathBuf>,
    /// `APP_LOG` of our servers: `info` logs one line per request (as Gin's gin.Default()
    /// does), `warn` none.
    #[arg(long, default_value = "info")]
    app_log: String,
}

fn progress(args: &Args, msg: &str) {
    if !args.json {
        eprintln!("{msg}");
    }
}

/// Every server of the run.
struct Servers {
    apps: HashMap<(Levels, Allocator), Server>,
    gin: Option<Server>,
    axum_floor: Option<Server>,
    nginx: Option<Server>,
}

impl Servers {
    fn for_kind(&self, kind: report::Kind, a: Allocator) -> Option<&Server> {
        match kind.levels() {
            Some(l) => self.apps.get(&(l, a)),
            None if kind.is_gin() => self.gin.as_ref(),
            None if kind == report::Kind::AxumPing => self.axum_floor.as_ref(),
            None if kind == report::Kind::NginxPing => self.nginx.as_ref(),
            None => None,
        }
    }
}

fn scrape(addr: SocketAddr) -> anyhow::Result<Metrics> {
    let (status, body) = procs::http(addr, "GET", "/metrics", None)?;
    if status != 200 {
        bail!("GET /metrics on {addr} answered {status}");
    }
    Ok(Metrics::parse(&body))
}

/// `perf record` of `pid` for `secs`, into `dir/name.data`.
fn start_perf(dir: &Path, name: &str, pid: u32, secs: u64) -> anyhow::Result<Child> {
    std::fs::create_dir_all(dir)?;
    Command::new("perf")
        .args([
            "record",
            "-q",
            "-F",
            "999",
            "-g",
            "-p",
            &pid.to_string(),
            "-o",
        ])
        .arg(dir.join(format!("{name}.data")))
        .args(["--", "sleep", &secs.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting perf record (apt package linux-perf)")
}

/// One run of one case.
fn measure(
    args: &Args,
    case: &report::Case,
    servers: &Servers,
    scripts: &HashMap<bool, PathBuf>,
    load: WrkLoad,
    redis: (u16, u64),
    perf: bool,
) -> anyhow::Result<RunOut> {
    let Some(srv) = servers.for_kind(case.kind, case.allocator) else {
        let sample = load::run_redis_benchmark(redis.0, args.connections, redis.1)?;
        return Ok(RunOut::plain(sample));
    };
    let is_app = case.kind.levels().is_some();
    let before = if is_app {
        Some(scrape(srv.addr)?)
    } else {
        None
    };
    let pid = srv.pid();
    let rss = Sampler::start(Duration::from_millis(100), move || procs::rss_kib(pid));
    let pool = (case.kind == report::Kind::DbRead).then(|| {
        let addr = srv.addr;
        Sampler::start(Duration::from_millis(100), move || {
            let m = scrape(addr).ok()?;
            Some(m.sum("app_db_pool_connections_in_use", &[]) as u64)
        })
    });
    let mut recorder = match (&args.perf, perf && is_app) {
        (Some(dir), true) => Some(start_perf(dir, &case.file_name(), pid, load.secs)?),
        _ => None,
    };
    let url = format!("http://{}{}", srv.addr, case.kind.path());
    let sample = load::run_wrk(&url, &scripts[&case.kind.reads_users()], load).with_context(|| {
        format!(
            "{}: end of {}:\n{}",
            case.label(),
            srv.log.display(),
            procs::log_tail(&srv.log, 10)
        )
    });
    if let Some(r) = recorder.as_mut() {
        let _ = r.wait();
    }
    let rss = rss.finish();
    let in_use = pool.map(Sampler::finish);
    let sample = sample?;
    let mut out = RunOut::plain(sample);
    // nginx serves from worker processes: its master's memory would say nothing.
    out.rss_peak_kib = (case.kind != report::Kind::NginxPing).then_some(rss.peak);
    if let Some(before) = before {
        let after = scrape(srv.addr)?;
        out.level_hits = case
            .kind
            .level_counter()
            .map(|(name, labels)| after.sum(name, labels) - before.sum(name, labels));
        if let Some(in_use) = in_use {
            out.pool = Some(PoolRun {
                max: after.sum("app_db_pool_max_connections", &[]),
                in_use,
                wait: prom::histogram_delta(&before, &after, "app_db_pool_acquire_wait_seconds"),
            });
        }
    }
    Ok(out)
}

fn bench(args: &Args) -> anyhow::Result<report::Report> {
    procs::need("wrk", "wrk")?;
    procs::need("redis-server", "redis-server")?;
    procs::need("redis-benchmark", "redis-tools")?;
    if args.cpus.is_some() {
        procs::need("taskset", "util-linux")?;
    }
    if args.perf.is_some() {
        procs::need("perf", "linux-perf")?;
    }
    let secs = args.duration_secs.unwrap_or(if args.quick { 1 } else { 5 });
    let users = args.users.unwrap_or(if args.quick { 200 } else { 1000 });
    let redis_requests = args
        .redis_requests
        .unwrap_or(if args.quick { 50_000 } else { 200_000 });
    let allocators = if args.allocators.is_empty() {
        vec![Allocator::DEFAULT]
    } else {
        let mut a = args.allocators.clone();
        a.dedup();
        a
    };
    let kinds: Vec<report::Kind> = if args.only.is_empty() {
        report::Kind::ALL.to_vec()
    } else {
        report::Kind::ALL
            .into_iter()
            .filter(|k| args.only.contains(k))
            .collect()
    };
    let app_bin = match &args.app_bin {
        Some(p) => p.clone(),
        None => procs::sibling_bin("app")?,
    };
    let gin_bin = if kinds.iter().any(|k| k.is_gin()) {
        Some(app_bench::peers::gin_peer(&|m| progress(args, m))?)
    } else {
        None
    };

    let redis = LocalRedis::start()?;
    let (_guard, dir) = servers::work_dir()?;
    let db_url = format!("sqlite://{}", dir.join("bench.db").display());
    let redis_url = redis.url();
    let shared = Shared {
        dir: &dir,
        app_bin: &app_bin,
        db_url: &db_url,
        redis_url: &redis_url,
        cpus: args.cpus.as_deref(),
        log: &args.app_log,
    };

    progress(
        args,
        &format!(
            "starting app instances on {} allocator(s)",
            allocators.len()
        ),
    );
    let mut apps = HashMap::new();
    for &a in &allocators {
        for levels in Levels::ALL {
            if kinds.iter().any(|k| k.levels() == Some(levels)) || levels == Levels::Full {
                apps.insert((levels, a), servers::start_app(&shared, levels, a)?);
            }
        }
    }
    // Users are created through the first full instance (POST /users, as clients do), then
    // every instance with a cache reads each once (its L1, and the shared L2).
    progress(args, &format!("creating and warming {users} users"));
    let creator = apps[&(Levels::Full, allocators[0])].addr;
    let ids = servers::create_users(creator, users)?;
    for ((levels, _), srv) in &apps {
        if *levels != Levels::DbOnly {
            servers::warm(srv.addr, ids)?;
        }
    }
    let gin = match &gin_bin {
        Some(bin) => Some(servers::start_gin(&shared, bin, redis.port())?),
        None => None,
    };
    let axum_floor = if kinds.contains(&report::Kind::AxumPing) {
        let bin = procs::sibling_bin("axum-floor")?;
        Some(servers::start_axum_floor(&shared, &bin)?)
    } else {
        None
    };
    let nginx = if kinds.contains(&report::Kind::NginxPing) {
        Some(servers::start_nginx(&shared)?)
    } else {
        None
    };
    let servers = Servers {
        apps,
        gin,
        axum_floor,
        nginx,
    };
    let mut memory: Vec<report::ServerMemory> = servers
        .apps
        .iter()
        .map(|(&(l, a), s)| {
            let name = format!("app {} [{a}]", l.describe());
            report::ServerMemory::idle(name, report::ServerKey::App(l, a), s.pid())
        })
        .collect();
    if let Some(g) = &servers.gin {
        memory.push(report::ServerMemory::idle(
            "gin".into(),
            report::ServerKey::Gin,
            g.pid(),
        ));
    }
    memory.sort_by(|a, b| a.server.cmp(&b.server));

    let mut scripts = HashMap::new();
    for users in [false, true] {
        let path = dir.join(format!("wrk-{users}.lua"));
        std::fs::write(&path, load::script(users.then_some(ids)))?;
        scripts.insert(users, path);
    }
    let mut cases = report::cases(&kinds, &allocators);
    let load = WrkLoad {
        threads: args.threads,
        connections: args.connections,
        secs,
    };
    let warm_load = WrkLoad { secs: 1, ..load };
    for case in &cases {
        progress(args, &format!("warm-up: {} (1 s)", case.label()));
        measure(
            args,
            case,
            &servers,
            &scripts,
            warm_load,
            (redis.port(), redis_requests / 10),
            false,
        )?;
    }
    let n = cases.len();
    for run in 0..args.runs as usize {
        for i in 0..n {
            let case = &mut cases[(i + run) % n];
            progress(
                args,
                &format!(
                    "run {}/{}: {} ({secs} s, wrk -t{} -c{})",
                    run + 1,
                    args.runs,
                    case.label(),
                    args.threads,
                    args.connections
                ),
            );
            let out = measure(
                args,
                case,
                &servers,
                &scripts,
                load,
                (redis.port(), redis_requests),
                run == 0,
            )?;
            case.runs.push(out);
        }
    }
    Ok(report::Report::new(
        report::Setup {
            runs_per_row: args.runs,
            seconds_per_run: secs,
            connections: args.connections,
            wrk_threads: args.threads,
            redis_benchmark_requests: redis_requests,
            users,
            cpus: args.cpus.clone(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            default_allocator: Allocator::DEFAULT.as_str(),
        },
        cases,
        memory,
    ))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = bench(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.print_table();
        if let Some(dir) = &args.perf {
            println!(
                "\nperf profiles in {}: perf report -i {}/l2_hit-{}.data --no-children --sort dso,symbol",
                dir.display(),
                dir.display(),
                Allocator::DEFAULT
            );
        }
    }
    Ok(())
}
