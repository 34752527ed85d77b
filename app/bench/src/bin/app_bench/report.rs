//! The rows of `app-bench`, what each run measured, and the table and JSON made of them.

use serde::Serialize;

use app::alloc::Allocator;
use app_bench::procs::{self, Sampled};
use app_bench::prom::HistogramDelta;
use app_bench::stats::{median, ratio};

use super::load::Sample;
use super::servers::Levels;

/// A row of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Kind {
    Ping,
    L1Hit,
    L2Hit,
    DbRead,
    GinPing,
    GinL2Hit,
    RedisGet,
    AxumPing,
    NginxPing,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Ping,
        Kind::L1Hit,
        Kind::L2Hit,
        Kind::DbRead,
        Kind::GinPing,
        Kind::GinL2Hit,
        Kind::RedisGet,
        Kind::AxumPing,
        Kind::NginxPing,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Ping => "ping",
            Kind::L1Hit => "l1_hit",
            Kind::L2Hit => "l2_hit",
            Kind::DbRead => "db_read",
            Kind::GinPing => "gin_ping",
            Kind::GinL2Hit => "gin_l2_hit",
            Kind::RedisGet => "redis_get",
            Kind::AxumPing => "axum_ping",
            Kind::NginxPing => "nginx_ping",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Kind::Ping => "GET /ping (constant body)",
            Kind::L1Hit => "GET /users/{id} from L1 (moka)",
            Kind::L2Hit => "GET /users/{id} from L2 (Redis; L1 off)",
            Kind::DbRead => "GET /users/{id} from SQLite (no cache)",
            Kind::GinPing => "Gin gin.Default() GET /ping (seed ch. 1)",
            Kind::GinL2Hit => "Gin GET /users/:id via go-redis (seed 3.2)",
            Kind::RedisGet => "redis-benchmark -t get (bound of the L2 path)",
            Kind::AxumPing => "bare axum GET /ping, no middleware or log (floor of our stack)",
            Kind::NginxPing => "nginx return 200, buffered access log (HTTP floor here)",
        }
    }

    /// The app instance a row of ours runs on.
    pub fn levels(self) -> Option<Levels> {
        match self {
            Kind::Ping | Kind::L1Hit => Some(Levels::Full),
            Kind::L2Hit => Some(Levels::L2Only),
            Kind::DbRead => Some(Levels::DbOnly),
            Kind::GinPing | Kind::GinL2Hit | Kind::RedisGet | Kind::AxumPing | Kind::NginxPing => {
                None
            }
        }
    }

    pub fn is_gin(self) -> bool {
        matches!(self, Kind::GinPing | Kind::GinL2Hit)
    }

    pub fn reads_users(self) -> bool {
        matches!(
            self,
            Kind::L1Hit | Kind::L2Hit | Kind::DbRead | Kind::GinL2Hit
        )
    }

    /// The path wrk asks for (user rows replace it from their script).
    pub fn path(self) -> &'static str {
        if self.reads_users() { "/" } else { "/ping" }
    }

    /// The app's counter of requests served by the level the row names.
    pub fn level_counter(self) -> Option<(&'static str, &'static [(&'static str, &'static str)])> {
        match self {
            Kind::L1Hit => Some((
                "app_cache_lookups_total",
                &[("level", "l1"), ("result", "hit")],
            )),
            Kind::L2Hit => Some((
                "app_cache_lookups_total",
                &[("level", "l2"), ("result", "hit")],
            )),
            Kind::DbRead => Some(("app_cache_db_loads_total", &[("entity", "user")])),
            _ => None,
        }
    }

    /// The Gin row measuring the same path, for ours.
    fn peer(self) -> Option<Kind> {
        match self {
            Kind::Ping => Some(Kind::GinPing),
            Kind::L2Hit => Some(Kind::GinL2Hit),
            _ => None,
        }
    }

    fn system(self) -> &'static str {
        match self {
            Kind::GinPing | Kind::GinL2Hit => "gin",
            Kind::RedisGet => "redis-benchmark",
            Kind::AxumPing => "axum",
            Kind::NginxPing => "nginx",
            _ => "app",
        }
    }
}

/// The database pool during one run of `db_read`.
#[derive(Debug, Clone, Copy)]
pub struct PoolRun {
    pub max: f64,
    pub in_use: Sampled,
    pub wait: HistogramDelta,
}

/// What one run of one row measured.
#[derive(Debug, Clone)]
pub struct RunOut {
    pub sample: Sample,
    pub rss_peak_kib: Option<u64>,
    /// Requests the row's cache level served (app rows).
    pub level_hits: Option<f64>,
    pub pool: Option<PoolRun>,
}

impl RunOut {
    pub fn plain(sample: Sample) -> Self {
        Self {
            sample,
            rss_peak_kib: None,
            level_hits: None,
            pool: None,
        }
    }
}

/// A row on one allocator (peers' rows carry the first allocator, unused).
pub struct Case {
    pub kind: Kind,
    pub allocator: Allocator,
    pub runs: Vec<RunOut>,
    ours: bool,
}

impl Case {
    pub fn label(&self) -> String {
        if self.ours {
            format!("{} [{}]", self.kind.name(), self.allocator)
        } else {
            self.kind.name().to_string()
        }
    }

    pub fn file_name(&self) -> String {
        format!("{}-{}", self.kind.name(), self.allocator)
    }

    fn rps(&self) -> f64 {
        median(
            &self
                .runs
                .iter()
                .map(|r| r.sample.requests_per_sec)
                .collect::<Vec<_>>(),
        )
    }
}

/// Our rows on every allocator, then the peers.
pub fn cases(kinds: &[Kind], allocators: &[Allocator]) -> Vec<Case> {
    let mut out = Vec::new();
    for &a in allocators {
        for &k in kinds.iter().filter(|k| k.levels().is_some()) {
            out.push(Case {
                kind: k,
                allocator: a,
                runs: Vec::new(),
                ours: true,
            });
        }
    }
    for &k in kinds.iter().filter(|k| k.levels().is_none()) {
        out.push(Case {
            kind: k,
            allocator: allocators[0],
            runs: Vec::new(),
            ours: false,
        });
    }
    out
}

/// A server of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKey {
    App(Levels, Allocator),
    Gin,
}

impl Case {
    fn server(&self) -> Option<ServerKey> {
        match self.kind.levels() {
            Some(l) => Some(ServerKey::App(l, self.allocator)),
            None if self.kind.is_gin() => Some(ServerKey::Gin),
            None => None,
        }
    }
}

/// Resident memory of one server: before the load, and the peak while a row loaded it.
#[derive(Debug, Serialize)]
pub struct ServerMemory {
    pub server: String,
    #[serde(skip)]
    key: ServerKey,
    pub rss_idle_mib: f64,
    pub rss_peak_under_load_mib: f64,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl ServerMemory {
    /// Resident memory of `pid` now, before any load.
    pub fn idle(server: String, key: ServerKey, pid: u32) -> Self {
        Self {
            server,
            key,
            rss_idle_mib: procs::rss_kib(pid).map(mib).unwrap_or(0.0),
            rss_peak_under_load_mib: 0.0,
        }
    }

    /// The peak over every run of the rows this server served.
    fn set_peak(&mut self, cases: &[Case]) {
        self.rss_peak_under_load_mib = cases
            .iter()
            .filter(|c| c.server() == Some(self.key))
            .flat_map(|c| c.runs.iter().filter_map(|r| r.rss_peak_kib))
            .max()
            .map(mib)
            .unwrap_or(0.0);
    }
}

/// The run's settings.
#[derive(Debug, Serialize)]
pub struct Setup {
    pub runs_per_row: u32,
    pub seconds_per_run: u64,
    pub connections: u32,
    pub wrk_threads: u32,
    pub redis_benchmark_requests: u64,
    pub users: u32,
    pub cpus: Option<String>,
    pub cores: usize,
    pub default_allocator: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PoolReport {
    pub max_connections: f64,
    pub in_use_peak: u64,
    pub in_use_mean: f64,
    pub acquires: f64,
    pub acquire_wait_mean_ms: f64,
    /// Upper bound of the histogram bucket holding the 99th percentile (median over runs).
    pub acquire_wait_p99_ms_at_most: f64,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub name: &'static str,
    pub system: &'static str,
    /// The allocator of our rows; `null` for the peers.
    pub allocator: Option<&'static str>,
    pub description: &'static str,
    pub requests_per_sec: f64,
    pub p50_latency_ms: f64,
    pub p99_latency_ms: f64,
    pub p999_latency_ms: Option<f64>,
    /// (max - min) / median of the runs' req/s, in percent: the noise of this row.
    pub spread_pct: f64,
    /// Throughput relative to the ping row of the same server (ours on the same allocator).
    pub ratio_to_ping: Option<f64>,
    /// Ours relative to the Gin row of the same path (ping, l2_hit).
    pub ratio_to_gin: Option<f64>,
    /// Ours on this allocator relative to ours on the system allocator (allocator study).
    pub ratio_to_system_allocator: Option<f64>,
    /// Share of the row's requests served by the level the row names (app counters).
    pub level_hit_ratio: Option<f64>,
    pub rss_peak_mib: Option<f64>,
    pub pool: Option<PoolReport>,
    pub runs: Vec<Sample>,
}

/// The goals, on the default allocator's rows.
#[derive(Debug, Serialize)]
pub struct Goals {
    /// `ping` / `gin_ping` (goal >= 1.2).
    pub ping_vs_gin: Option<f64>,
    /// `l2_hit` / `redis_get` (goal >= 0.6).
    pub l2_hit_vs_redis_get: Option<f64>,
    /// `l2_hit` / `gin_l2_hit`.
    pub l2_hit_vs_gin_l2_hit: Option<f64>,
    /// The floors, which say where the L2 goal's gap is: `ping` / `axum_ping` is the share
    /// of the bare stack's throughput our layers keep; `axum_ping` / `redis_get` and
    /// `nginx_ping` / `redis_get` bound any L2 hit served by that stack (a hit is a ping plus
    /// a GET).
    pub ping_vs_axum_ping: Option<f64>,
    pub axum_ping_vs_redis_get: Option<f64>,
    pub nginx_ping_vs_redis_get: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub benchmark: &'static str,
    pub load_generator: &'static str,
    pub setup: Setup,
    pub rows: Vec<Row>,
    pub goals: Goals,
    pub memory: Vec<ServerMemory>,
}

fn pool_report(runs: &[RunOut]) -> Option<PoolReport> {
    let pools: Vec<&PoolRun> = runs.iter().filter_map(|r| r.pool.as_ref()).collect();
    if pools.is_empty() {
        return None;
    }
    let acquires: f64 = pools.iter().map(|p| p.wait.count).sum();
    let wait_sum: f64 = pools.iter().map(|p| p.wait.mean * p.wait.count).sum();
    Some(PoolReport {
        max_connections: pools.iter().map(|p| p.max).fold(0.0, f64::max),
        in_use_peak: pools.iter().map(|p| p.in_use.peak).max().unwrap_or(0),
        in_use_mean: median(&pools.iter().map(|p| p.in_use.mean).collect::<Vec<_>>()),
        acquires,
        acquire_wait_mean_ms: ratio(wait_sum, acquires) * 1e3,
        acquire_wait_p99_ms_at_most: median(
            &pools
                .iter()
                .map(|p| p.wait.p99_upper_bound * 1e3)
                .collect::<Vec<_>>(),
        ),
    })
}

impl Report {
    pub fn new(setup: Setup, cases: Vec<Case>, memory: Vec<ServerMemory>) -> Self {
        let rps = |k: Kind, a: Option<Allocator>| {
            cases
                .iter()
                .find(|c| c.kind == k && (a.is_none() || Some(c.allocator) == a))
                .map(Case::rps)
        };
        let rows = cases
            .iter()
            .map(|c| {
                let m = c.rps();
                let col = |f: fn(&Sample) -> f64| {
                    median(&c.runs.iter().map(|r| f(&r.sample)).collect::<Vec<_>>())
                };
                let all: Vec<f64> = c.runs.iter().map(|r| r.sample.requests_per_sec).collect();
                let (lo, hi) = all
                    .iter()
                    .fold((f64::INFINITY, 0.0f64), |(l, h), v| (l.min(*v), h.max(*v)));
                let p999: Vec<f64> = c.runs.iter().filter_map(|r| r.sample.p999_ms).collect();
                let own_ping = match (c.ours, c.kind.is_gin()) {
                    (true, _) => rps(Kind::Ping, Some(c.allocator)),
                    (false, true) => rps(Kind::GinPing, None),
                    _ => None,
                };
                let requests: f64 = c.runs.iter().map(|r| r.sample.requests as f64).sum();
                let hits: Vec<f64> = c.runs.iter().filter_map(|r| r.level_hits).collect();
                Row {
                    name: c.kind.name(),
                    system: c.kind.system(),
                    allocator: c.ours.then(|| c.allocator.as_str()),
                    description: c.kind.description(),
                    requests_per_sec: m,
                    p50_latency_ms: col(|s| s.p50_ms),
                    p99_latency_ms: col(|s| s.p99_ms),
                    p999_latency_ms: (!p999.is_empty()).then(|| median(&p999)),
                    spread_pct: ratio(hi - lo, m) * 100.0,
                    ratio_to_ping: own_ping.map(|p| ratio(m, p)),
                    ratio_to_gin: c
                        .kind
                        .peer()
                        .filter(|_| c.ours)
                        .and_then(|p| rps(p, None))
                        .map(|g| ratio(m, g)),
                    ratio_to_system_allocator: c
                        .ours
                        .then(|| rps(c.kind, Some(Allocator::System)))
                        .flatten()
                        .map(|s| ratio(m, s)),
                    level_hit_ratio: (!hits.is_empty())
                        .then(|| ratio(hits.iter().sum(), requests).min(1.0)),
                    rss_peak_mib: c.runs.iter().filter_map(|r| r.rss_peak_kib).max().map(mib),
                    pool: pool_report(&c.runs),
                    runs: c.runs.iter().map(|r| r.sample).collect(),
                }
            })
            .collect();
        let default = cases
            .iter()
            .find(|c| c.ours && c.allocator == Allocator::DEFAULT)
            .or_else(|| cases.iter().find(|c| c.ours))
            .map(|c| c.allocator);
        let pair = |a: Kind, b: Kind| Some(ratio(rps(a, default)?, rps(b, None)?));
        let peers = |a: Kind, b: Kind| Some(ratio(rps(a, None)?, rps(b, None)?));
        let goals = Goals {
            ping_vs_gin: pair(Kind::Ping, Kind::GinPing),
            l2_hit_vs_redis_get: pair(Kind::L2Hit, Kind::RedisGet),
            l2_hit_vs_gin_l2_hit: pair(Kind::L2Hit, Kind::GinL2Hit),
            ping_vs_axum_ping: pair(Kind::Ping, Kind::AxumPing),
            axum_ping_vs_redis_get: peers(Kind::AxumPing, Kind::RedisGet),
            nginx_ping_vs_redis_get: peers(Kind::NginxPing, Kind::RedisGet),
        };
        let mut memory = memory;
        for m in &mut memory {
            m.set_peak(&cases);
        }
        Self {
            benchmark: "app",
            load_generator: "wrk",
            setup,
            rows,
            goals,
            memory,
        }
    }

    pub fn print_table(&self) {
        let s = &self.setup;
        println!(
            "app benchmark: wrk -t{} -c{}, {} s per run, median of {} runs (rotated order), {} users; redis-benchmark -n {} -c{}; {} cores{}",
            s.wrk_threads,
            s.connections,
            s.seconds_per_run,
            s.runs_per_row,
            s.users,
            s.redis_benchmark_requests,
            s.connections,
            s.cores,
            s.cpus
                .as_deref()
                .map(|c| format!(", servers pinned to CPUs {c}"))
                .unwrap_or_default()
        );
        println!(
            "{:<11} {:<9} {:>9} {:>8} {:>8} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}  what",
            "row",
            "alloc",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "spread",
            "x ping",
            "x gin",
            "level",
            "RSS MiB",
            "x system"
        );
        let opt = |v: Option<f64>, prec: usize| match v {
            Some(v) => format!("{v:.prec$}"),
            None => "-".into(),
        };
        for r in &self.rows {
            println!(
                "{:<11} {:<9} {:>9.0} {:>8.3} {:>8.3} {:>9} {:>6.1}% {:>7} {:>7} {:>7} {:>7} {:>8}  {}",
                r.name,
                r.allocator.unwrap_or("-"),
                r.requests_per_sec,
                r.p50_latency_ms,
                r.p99_latency_ms,
                opt(r.p999_latency_ms, 3),
                r.spread_pct,
                opt(r.ratio_to_ping, 2),
                opt(r.ratio_to_gin, 2),
                r.level_hit_ratio
                    .map(|v| format!("{:.1}%", v * 100.0))
                    .unwrap_or_else(|| "-".into()),
                opt(r.rss_peak_mib, 1),
                opt(r.ratio_to_system_allocator, 3),
                r.description
            );
        }
        let g = &self.goals;
        println!(
            "\ngoals ({} allocator): ping / gin_ping = {} (goal >= 1.2x); l2_hit / redis_get = {} (goal >= 0.6x); l2_hit / gin_l2_hit = {}",
            s.default_allocator,
            opt(g.ping_vs_gin, 2),
            opt(g.l2_hit_vs_redis_get, 2),
            opt(g.l2_hit_vs_gin_l2_hit, 2)
        );
        println!(
            "floors: ping / axum_ping = {} (what our layers keep of the bare stack); axum_ping / redis_get = {} and nginx_ping / redis_get = {} (an L2 hit is a ping plus a GET: it stays below these)",
            opt(g.ping_vs_axum_ping, 2),
            opt(g.axum_ping_vs_redis_get, 2),
            opt(g.nginx_ping_vs_redis_get, 2)
        );
        for r in &self.rows {
            if let Some(p) = &r.pool {
                println!(
                    "database pool during {} [{}]: in use peak {} of {}, mean {:.1}; {} acquires, wait mean {:.3} ms, p99 <= {} ms",
                    r.name,
                    r.allocator.unwrap_or("-"),
                    p.in_use_peak,
                    p.max_connections,
                    p.in_use_mean,
                    p.acquires,
                    p.acquire_wait_mean_ms,
                    p.acquire_wait_p99_ms_at_most
                );
            }
        }
        println!("\nresident memory (MiB): before the load, and peak while loaded");
        for m in &self.memory {
            println!(
                "  {:<28} {:>7.1} {:>7.1}",
                m.server, m.rss_idle_mib, m.rss_peak_under_load_mib
            );
        }
    }
}
