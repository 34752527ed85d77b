//! Queue throughput, end to end (enqueue to acknowledged), with 1, 2 and 4 workers on each
//! backend (Redis Streams and RabbitMQ, same workload, same run), beside the raw bounds
//! measured in the same run: Redis Streams (XADD + XREADGROUP + XACK) and RabbitMQ (confirmed
//! persistent publish + consume + ack), both without job logic. Starts its own redis-server
//! and rabbitmq-server on free loopback ports.
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

#[path = "queue_bench/cluster.rs"]
mod cluster;
#[path = "queue_bench/raw.rs"]
mod raw;

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
             Redis Streams and on RabbitMQ, beside raw bounds of both brokers measured in the same run"
)]
struct Args {
    /// Jobs per measured run.
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Backends to measure, comma separated: redis, rabbitmq.
    #[arg(long, value_delimiter = ',', default_value = "redis,rabbitmq")]
    backends: Vec<QueueBackend>,
    /// Runs per case; the median is reported (at least 3).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Worker counts to measure, comma separated. A worker is one pool with its own Redis
    /// connections and consumer name, like one `app worker` process.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    /// Jobs one worker runs at the same time (`queue.default_concurrency`).
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

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

async fn flush(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut c = client.get_multiplexed_async_connection().await?;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await?;
    Ok(())
}

async fn noop(_ctx: JobContext) -> Result<JobOutput, JobError> {
    Ok(None)
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
) -> anyhow::Result<f64> {
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
    let start = Instant::now();
    let enqueue = tokio::spawn({
        let producers = args.producers;
        async move {
            let mut results = futures::stream::iter(0..jobs)
                .map(|i| {
                    let q = producer.clone();
                    async move { q.enqueue(NewJob::new("bench", "noop", json!(i))).await }
                })
                .buffer_unordered(producers);
            while let Some(r) = results.next().await {
                if let Err(e) = r {
                    return Some(e);
                }
            }
            None
        }
    });
    while done() < jobs as u64 {
        if start.elapsed() > limit {
            bail!(
                "queue run with {workers} worker(s) did not finish within {limit:?} ({} of {jobs} done)",
                done()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = start.elapsed();
    if let Some(e) = enqueue.await? {
        return Err(e).context("enqueue failed");
    }
    for p in pools {
        p.shutdown().await;
    }
    for q in queues {
        q.close().await;
    }
    Ok(jobs as f64 / took.as_secs_f64())
}

#[derive(Clone, Copy)]
enum Kind {
    RawBatched,
    RawPerEntry,
    RawRabbit,
    Queue(QueueBackend, usize),
}

struct Case {
    name: String,
    kind: Kind,
    runs: Vec<f64>,
}

fn backend_name(b: QueueBackend) -> &'static str {
    match b {
        QueueBackend::Redis => "redis streams",
        QueueBackend::Rabbitmq => "rabbitmq",
    }
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
    if args.backends.is_empty() {
        bail!("--backends needs at least one of redis, rabbitmq");
    }
    args.backends.dedup();
    if !(1..=64).contains(&args.partitions) {
        bail!("--partitions takes a count between 1 and 64");
    }
    if args.redis == RedisSetup::Cluster {
        return cluster::run(&args).await;
    }
    let with_rabbit = args.backends.contains(&QueueBackend::Rabbitmq);
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
    // declarations and page faults.
    for &b in &args.backends {
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
    let mut cases = vec![
        Case {
            name: "raw redis, batches of 100".into(),
            kind: Kind::RawBatched,
            runs: Vec::new(),
        },
        Case {
            name: format!("raw redis, per entry ({readers} readers)"),
            kind: Kind::RawPerEntry,
            runs: Vec::new(),
        },
    ];
    if with_rabbit {
        cases.push(Case {
            name: format!("raw rabbitmq (prefetch {readers})"),
            kind: Kind::RawRabbit,
            runs: Vec::new(),
        });
    }
    for &w in &args.workers {
        for &b in &args.backends {
            cases.push(Case {
                name: format!(
                    "{}, {w} worker{}",
                    backend_name(b),
                    if w == 1 { "" } else { "s" }
                ),
                kind: Kind::Queue(b, w),
                runs: Vec::new(),
            });
        }
    }
    // Interleave the cases run by run, so a slow moment of the machine hits all of them.
    for run in 1..=args.runs {
        for case in &mut cases {
            flush(&url).await?;
            let rate = match case.kind {
                Kind::RawBatched => raw::raw_bound(&url, args.jobs, limit).await?,
                Kind::RawPerEntry => {
                    raw::raw_per_entry(&url, args.producers, readers, args.jobs, limit).await?
                }
                Kind::RawRabbit => {
                    let prefetch = u16::try_from(readers).unwrap_or(u16::MAX);
                    raw::raw_rabbit(&rabbit_url, args.producers, prefetch, args.jobs, limit).await?
                }
                Kind::Queue(b, w) => {
                    queue_run(&url, (b, &rabbit_url), &args, w, args.jobs, limit).await?
                }
            };
            eprintln!(
                "run {run}/{}: {:<36} {:>10.0} jobs/s",
                args.runs, case.name, rate
            );
            case.runs.push(rate);
        }
    }

    let find = |k: &dyn Fn(Kind) -> bool| {
        cases
            .iter()
            .find(|c| k(c.kind))
            .map(|c| median(&c.runs))
            .unwrap_or(0.0)
    };
    let raw = find(&|k| matches!(k, Kind::RawBatched));
    let raw1 = find(&|k| matches!(k, Kind::RawPerEntry));
    let raw_mq = find(&|k| matches!(k, Kind::RawRabbit));
    let queue_median = |b: QueueBackend, w: usize| {
        find(&|k| matches!(k, Kind::Queue(kb, kw) if kb == b && kw == w))
    };
    let ratio = |m: f64, base: f64| if base > 0.0 { m / base } else { 0.0 };
    let raw_of = |b: QueueBackend| match b {
        QueueBackend::Redis => raw1,
        QueueBackend::Rabbitmq => raw_mq,
    };
    if args.json {
        let queue: Vec<_> = cases
            .iter()
            .filter_map(|c| match c.kind {
                Kind::Queue(b, w) => Some((c, b, w)),
                _ => None,
            })
            .map(|(c, b, w)| {
                let m = median(&c.runs);
                json!({
                    "backend": b.as_str(),
                    "workers": w,
                    "concurrency_per_worker": args.concurrency,
                    "jobs_per_s_median": m,
                    "jobs_per_s_runs": c.runs,
                    "ratio_to_raw_bound": ratio(m, raw),
                    "ratio_to_raw_per_entry": ratio(m, raw1),
                    "ratio_to_raw_of_its_broker": ratio(m, raw_of(b)),
                    "ratio_to_redis_same_workers": ratio(m, queue_median(QueueBackend::Redis, w)),
                })
            })
            .collect();
        let mut out = json!({
            "bench": "queue",
            "jobs_per_run": args.jobs,
            "runs": args.runs,
            "producers": args.producers,
            "backends": args.backends.iter().map(|b| b.as_str()).collect::<Vec<_>>(),
            "raw_bound_jobs_per_s_median": raw,
            "raw_bound_jobs_per_s_runs": cases[0].runs,
            "raw_per_entry_readers": readers,
            "raw_per_entry_jobs_per_s_median": raw1,
            "raw_per_entry_jobs_per_s_runs": cases[1].runs,
            "queue": queue,
        });
        if with_rabbit {
            out["raw_rabbitmq_prefetch"] = json!(readers);
            out["raw_rabbitmq_jobs_per_s_median"] = json!(raw_mq);
            out["raw_rabbitmq_jobs_per_s_runs"] = json!(cases[2].runs);
        }
        println!("{out}");
        return Ok(());
    }
    println!(
        "Queue throughput, enqueue to acknowledged: {} jobs per run, median of {} runs, {} jobs in flight per worker, {} concurrent producers",
        args.jobs, args.runs, args.concurrency, args.producers
    );
    println!(
        "{:<38} {:>14} {:>10} {:>10} {:>12}",
        "case", "jobs/s median", "min", "max", "vs its raw"
    );
    for c in &cases {
        let m = median(&c.runs);
        let min = c.runs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = c.runs.iter().copied().fold(0.0, f64::max);
        let vs = match c.kind {
            Kind::Queue(b, _) => format!("{:.2}x", ratio(m, raw_of(b))),
            _ => "-".into(),
        };
        println!(
            "{:<38} {:>14.0} {:>10.0} {:>10.0} {:>12}",
            c.name, m, min, max, vs
        );
    }
    println!();
    print!("{:<10}", "workers");
    for &b in &args.backends {
        print!(" {:>16}", format!("{} jobs/s", b.as_str()));
    }
    if args.backends.len() == 2 {
        print!(" {:>16}", "rabbitmq/redis");
    }
    println!();
    for &w in &args.workers {
        print!("{w:<10}");
        for &b in &args.backends {
            print!(" {:>16.0}", queue_median(b, w));
        }
        if args.backends.len() == 2 {
            let r = ratio(
                queue_median(QueueBackend::Rabbitmq, w),
                queue_median(QueueBackend::Redis, w),
            );
            print!(" {:>15.2}x", r);
        }
        println!();
    }
    println!(
        "raw redis, batches of 100: one producer pipelines XADD in batches of 100; one consumer reads COUNT 100 and sends one XACK per batch"
    );
    println!(
        "raw redis, per entry: one XADD per job from {} concurrent producers; readers each XREADGROUP COUNT 1 then XACK (the queue's shape, no job logic)",
        args.producers
    );
    if with_rabbit {
        println!(
            "raw rabbitmq: {} concurrent confirmed persistent publishes into a durable queue; one consumer acks each message (no job logic)",
            args.producers
        );
    }
    println!(
        "queue: the job record in Redis (ENQUEUE, START, COMPLETE scripts) plus the broker; on rabbitmq each enqueue also waits for the publisher confirm; 'vs its raw' compares with the raw per-entry bound of the same broker"
    );
    Ok(())
}
