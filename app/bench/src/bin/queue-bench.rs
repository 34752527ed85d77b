//! Queue throughput, end to end (enqueue to acknowledged), with 1, 2 and 4 workers on each
//! backend (Redis Streams and RabbitMQ) and on BullMQ, the most used Redis job queue, all
//! with the same workload in the same run, beside the raw bounds of both brokers: Redis
//! Streams (XADD, XREADGROUP, XACK) and RabbitMQ (confirmed persistent publish, consume,
//! ack), both without job logic. Starts its own redis-server and rabbitmq-server on free
//! loopback ports.
//!
//! Every case also reports the time from enqueue to done of each job as the system itself
//! records it (p50, p99, p99.9; the app's job hash has `created_ms` and `finished_ms`,
//! BullMQ's job has `timestamp` and `finishedOn`) and the redis-server CPU time per job.
//!
//! `cargo xtask bench queue [ARGS]` runs `cargo run --release -p app-bench --bin queue-bench -- [ARGS]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use app::queue::{
    JobContext, JobError, JobOutput, NewJob, PoolStats, Queue, QueueBackend, QueueSettings,
    Registry, WorkerPool,
};
use app_testkit::{LocalRabbit, LocalRedis};
use clap::Parser;
use futures::StreamExt;
use serde_json::json;

#[path = "queue_bench/bullmq.rs"]
mod bullmq;
#[path = "queue_bench/cluster.rs"]
mod cluster;
#[path = "queue_bench/raw.rs"]
mod raw;
#[path = "queue_bench/report.rs"]
mod report;

use report::{Case, Kind};

/// The `app` binary's allocator (jemalloc unless `APP_ALLOCATOR` says otherwise): the queue
/// runs here as it runs in `app worker` and `app serve`, not on glibc's malloc (which took
/// about 15% of this process's CPU).
#[global_allocator]
static GLOBAL: app::alloc::Selectable = app::alloc::Selectable;

/// Where the Redis of the queue cases runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum RedisSetup {
    /// One redis-server (with the raw baselines and, optionally, RabbitMQ).
    Single,
    /// Redis Clusters of 1, 2 and 3 masters beside one redis-server (Redis Streams only).
    Cluster,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "queue-bench",
    about = "Jobs per second of the queue (enqueue to acknowledged) with 1, 2 and 4 workers on \
             Redis Streams, on RabbitMQ and on BullMQ, beside raw bounds of both brokers measured in the same run"
)]
struct Args {
    /// Jobs per measured run.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Systems to measure, comma separated: redis, rabbitmq (our queue on each broker),
    /// bullmq (the peer).
    #[arg(long, value_delimiter = ',', default_value = "redis,rabbitmq,bullmq")]
    systems: Vec<report::System>,
    /// Runs per case; the median is reported (at least 3).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Worker counts to measure, comma separated. A worker is one pool with its own Redis
    /// connections and consumer name, like one `app worker` process (for BullMQ: one
    /// worker process).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    /// Jobs one worker runs at the same time (`queue.default_concurrency`; BullMQ's
    /// `concurrency`).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Concurrent enqueue calls of the producer.
    #[arg(long, default_value_t = 16)]
    producers: usize,
    /// Short run: 3,000 jobs per run, 3 runs.
    #[arg(long)]
    quick: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Give up on a run after this many seconds (a bench must stop by itself).
    #[arg(long, default_value_t = 300)]
    run_timeout_s: u64,
    /// `single`: one redis-server; `cluster`: the Redis Streams queue (`--backends` is
    /// ignored) on Redis Clusters of 1, 2 and 3 masters (one partition per master) beside one
    /// redis-server, same run.
    #[arg(long, value_enum, default_value_t = RedisSetup::Single)]
    redis: RedisSetup,
    /// `queue.partitions` of the queue cases on one server (cluster cases use one per master).
    #[arg(long, default_value_t = 1)]
    partitions: u32,
}

/// What one run measured.
pub struct Measured {
    pub jobs_per_s: f64,
    /// redis-server CPU time (user + system) between the first enqueue and the last ack.
    pub redis_cpu_s: f64,
    /// Each job's enqueue-to-done time, where the system records it.
    pub latencies_ms: Option<Vec<f64>>,
    /// From the clock's start to the first completion seen, and to the last enqueue's
    /// answer (where the bench sees them).
    pub first_done_ms: Option<f64>,
    pub enqueued_ms: Option<f64>,
    /// Jobs complete when the last enqueue was answered.
    pub done_when_enqueued: Option<usize>,
}

/// The clock and redis-server's CPU counter of one run.
pub struct Meter {
    conn: redis::aio::MultiplexedConnection,
    cpu0: f64,
    start: Instant,
    first_done: Option<Duration>,
    enqueued: Option<(Duration, usize)>,
}

/// A connection for the bench's own commands. redis-rs gives up on an answer after 500 ms
/// by default; a FLUSHALL of a run's 20,000 jobs on a loaded machine takes longer, and a bench
/// must not fail for it (it still stops by itself: 30 s).
pub async fn bench_conn(
    client: &redis::Client,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let cfg =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}

async fn redis_cpu(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    let field = |k: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(field("used_cpu_sys") + field("used_cpu_user"))
}

impl Meter {
    pub async fn start(client: &redis::Client) -> anyhow::Result<Self> {
        let mut conn = bench_conn(client).await?;
        let cpu0 = redis_cpu(&mut conn).await?;
        Ok(Self {
            conn,
            cpu0,
            start: Instant::now(),
            first_done: None,
            enqueued: None,
        })
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn start_instant(&self) -> Instant {
        self.start
    }

    /// Notes that `done` jobs are complete (the first non-zero call marks the first).
    pub fn saw_done(&mut self, done: usize) {
        if done > 0 && self.first_done.is_none() {
            self.first_done = Some(self.start.elapsed());
        }
    }

    /// Notes that the last enqueue was answered now, with `done` jobs complete.
    pub fn enqueued(&mut self, done: usize) {
        if self.enqueued.is_none() {
            self.enqueued = Some((self.start.elapsed(), done));
        }
    }

    /// Stops the clock after `jobs` jobs.
    pub async fn stop(mut self, jobs: usize) -> anyhow::Result<Measured> {
        let took = self.start.elapsed();
        let cpu = redis_cpu(&mut self.conn).await? - self.cpu0;
        Ok(Measured {
            jobs_per_s: jobs as f64 / took.as_secs_f64(),
            redis_cpu_s: cpu,
            latencies_ms: None,
            first_done_ms: self.first_done.map(|d| d.as_secs_f64() * 1e3),
            enqueued_ms: self.enqueued.map(|(d, _)| d.as_secs_f64() * 1e3),
            done_when_enqueued: self.enqueued.map(|(_, n)| n),
        })
    }
}

async fn flush(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut c = bench_conn(&client).await?;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut c)
        .await
        .context("FLUSHALL between runs")?;
    Ok(())
}

async fn noop(_ctx: JobContext) -> Result<JobOutput, JobError> {
    Ok(None)
}

/// The payload of every job of every system: `{"n": i}`.
fn payload(i: usize) -> serde_json::Value {
    json!({ "n": i })
}

/// Enqueue-to-done of each job from its record (`created_ms`, `finished_ms`: Redis time).
async fn job_latencies(q: &Queue, ids: &[String]) -> anyhow::Result<Vec<f64>> {
    let mut conn = q.connection();
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let mut p = redis::pipe();
        for id in chunk {
            p.cmd("HMGET")
                .arg(q.keys().job(id))
                .arg("created_ms")
                .arg("finished_ms");
        }
        let rows: Vec<(Option<u64>, Option<u64>)> = p.query_async(&mut conn).await?;
        for (id, (c, f)) in chunk.iter().zip(rows) {
            match (c, f) {
                (Some(c), Some(f)) => out.push(f.saturating_sub(c) as f64),
                _ => bail!("job {id} has no created_ms/finished_ms"),
            }
        }
    }
    Ok(out)
}

/// The queue end to end: workers start first, then the producer enqueues while they run;
/// the clock stops when every job is acknowledged (COMPLETE script done).
async fn queue_run(
    url: &str,
    backend: (QueueBackend, &str),
    args: &Args,
    workers: usize,
    jobs: usize,
    limit: Duration,
) -> anyhow::Result<Measured> {
    let settings = QueueSettings {
        backend: backend.0,
        rabbitmq_url: backend.1.to_string(),
        default_concurrency: args.concurrency,
        partitions: args.partitions,
        block_ms: 100,
        ..Default::default()
    };
    let mut pools = Vec::new();
    let mut queues = Vec::new();
    for _ in 0..workers {
        let q = Queue::connect(url, settings.clone()).await?;
        q.ensure_group("bench").await?;
        queues.push(q.clone());
        pools.push(WorkerPool::start(q, Registry::new().on("bench", "noop", noop)).await?);
    }
    let stats: Vec<Arc<PoolStats>> = pools.iter().map(WorkerPool::stats).collect();
    let done = || {
        stats
            .iter()
            .map(|s| PoolStats::get(&s.succeeded))
            .sum::<u64>()
    };
    let producer = Queue::connect(url, settings).await?;
    queues.push(producer.clone());
    let mut meter = Meter::start(&redis::Client::open(url)?).await?;
    let enqueue = tokio::spawn({
        let producers = args.producers;
        let producer = producer.clone();
        async move {
            let mut ids = Vec::with_capacity(jobs);
            let mut results = futures::stream::iter(0..jobs)
                .map(|i| {
                    let q = producer.clone();
                    async move { q.enqueue(NewJob::new("bench", "noop", payload(i))).await }
                })
                .buffer_unordered(producers);
            while let Some(r) = results.next().await {
                ids.push(r?.id);
            }
            Ok::<_, app::queue::QueueError>(ids)
        }
    });
    while done() < jobs as u64 {
        meter.saw_done(done() as usize);
        if enqueue.is_finished() {
            meter.enqueued(done() as usize);
        }
        if meter.elapsed() > limit {
            bail!(
                "queue run with {workers} worker(s) did not finish within {limit:?} ({} of {jobs} done)",
                done()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    meter.saw_done(jobs);
    meter.enqueued(jobs);
    let mut m = meter.stop(jobs).await?;
    let ids = enqueue.await?.context("enqueue failed")?;
    for p in pools {
        p.shutdown().await;
    }
    m.latencies_ms = Some(job_latencies(&producer, &ids).await?);
    for q in queues {
        q.close().await;
    }
    Ok(m)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.jobs = 3_000;
        args.runs = 3;
    }
    if args.runs < 3 {
        bail!("--runs must be at least 3 (the median of fewer says little)");
    }
    if args.jobs == 0 || args.concurrency == 0 || args.producers == 0 {
        bail!("--jobs, --concurrency and --producers must be at least 1");
    }
    if args.workers.is_empty() || args.workers.contains(&0) || args.workers.iter().any(|&w| w > 64)
    {
        bail!("--workers takes counts between 1 and 64");
    }
    if args.systems.is_empty() {
        bail!("--systems needs at least one of redis, rabbitmq, bullmq");
    }
    args.systems.dedup();
    let with_rabbit = args.systems.contains(&report::System::Rabbitmq);
    if args.systems.contains(&report::System::Bullmq) {
        app_bench::peers::bullmq_dir()?;
    }
    if !(1..=64).contains(&args.partitions) {
        bail!("--partitions takes a count between 1 and 64");
    }
    if args.redis == RedisSetup::Cluster {
        return cluster::run(&args).await;
    }
    let limit = Duration::from_secs(args.run_timeout_s);
    let redis = LocalRedis::start()?;
    let url = redis.url();
    eprintln!(
        "redis-server on 127.0.0.1:{}; {} jobs per run, {} runs per case",
        redis.port(),
        args.jobs,
        args.runs
    );
    let rabbit = if with_rabbit {
        eprintln!("starting rabbitmq-server (about 20 s)...");
        let r = tokio::task::spawn_blocking(LocalRabbit::start).await??;
        eprintln!("rabbitmq-server on 127.0.0.1:{}", r.port());
        Some(r)
    } else {
        None
    };
    let rabbit_url = rabbit.as_ref().map(LocalRabbit::url).unwrap_or_default();

    // A short warm-up so the first measured run does not pay for script loading, queue
    // declarations and page faults (BullMQ warms up inside each of its runs).
    for b in args.systems.iter().filter_map(|s| s.backend()) {
        flush(&url).await?;
        queue_run(
            &url,
            (b, &rabbit_url),
            &args,
            1,
            args.jobs.min(1_000),
            limit,
        )
        .await?;
    }

    let max_workers = args.workers.iter().copied().max().unwrap_or(1);
    let readers = max_workers * args.concurrency;
    let mut cases = vec![Case::new(Kind::RawBatched)];
    // One raw per-entry loop per worker count, with as many readers as the pools have jobs
    // in flight: a row is compared with the raw loop at its own concurrency (a 1-worker row
    // against 32 readers measured the loop's gain from concurrency, not the queue's cost).
    for r in report::per_entry_readers(&args.workers, args.concurrency) {
        cases.push(Case::new(Kind::RawPerEntry { readers: r }));
    }
    if with_rabbit {
        cases.push(Case::new(Kind::RawRabbit { prefetch: readers }));
    }
    for &w in &args.workers {
        for &s in &args.systems {
            cases.push(Case::new(Kind::System(s, w)));
        }
    }
    let defaults = QueueSettings::default();
    // Interleave the cases run by run, so a slow moment of the machine hits all of them.
    for run in 1..=args.runs {
        for case in &mut cases {
            flush(&url).await?;
            let m = match case.kind {
                Kind::RawBatched => raw::raw_bound(&url, args.jobs, limit).await?,
                Kind::RawPerEntry { readers } => {
                    raw::raw_per_entry(&url, args.producers, readers, args.jobs, limit).await?
                }
                Kind::RawRabbit { prefetch } => {
                    let prefetch = u16::try_from(prefetch).unwrap_or(u16::MAX);
                    raw::raw_rabbit(
                        &rabbit_url,
                        &url,
                        args.producers,
                        prefetch,
                        args.jobs,
                        limit,
                    )
                    .await?
                }
                Kind::System(s, w) => match s.backend() {
                    Some(b) => {
                        queue_run(&url, (b, &rabbit_url), &args, w, args.jobs, limit).await?
                    }
                    None => {
                        let load = bullmq::Load {
                            port: redis.port(),
                            jobs: args.jobs,
                            producers: args.producers,
                            workers: w,
                            concurrency: args.concurrency,
                            limit,
                        };
                        let d = defaults.clone();
                        tokio::task::spawn_blocking(move || bullmq::run(&load, &d)).await??
                    }
                },
            };
            let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
            eprintln!(
                "run {run}/{}: {:<36} {:>10.0} jobs/s (first done {}, all enqueued {} with {} done)",
                args.runs,
                case.name(),
                m.jobs_per_s,
                ms(m.first_done_ms),
                ms(m.enqueued_ms),
                m.done_when_enqueued.map_or("-".into(), |n| n.to_string()),
            );
            case.push(args.jobs, m);
        }
    }
    let r = report::Report::new(
        report::Setup {
            jobs_per_run: args.jobs,
            runs: args.runs,
            producers: args.producers,
            concurrency_per_worker: args.concurrency,
            max_attempts: defaults.max_attempts,
            backoff_base_ms: defaults.backoff_base_ms,
            claim_idle_ms: defaults.claim_idle_ms,
            retention_s: defaults.retention_s,
        },
        &cases,
    );
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        r.print_table();
    }
    Ok(())
}
