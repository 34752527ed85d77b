//! `queue-bench --redis cluster`: the Redis Streams queue on a Redis Cluster of 1, 2 and 3
//! masters (no replicas; every queue over one partition per master) beside the same queue on
//! one redis-server, same workload, same run, cases interleaved run by run. Reports jobs/s,
//! jobs/s per master and the ratio to the single server.
//!
//! On a 2-core machine every master, the producer and the workers share the same two
//! cores, so a second or third master adds CPU contention rather than capacity: the figures
//! show what cluster mode costs (routing by slot, a round over the partitions instead of one
//! blocking read, one connection per node) more than how it scales. On machines with a core
//! per master the per-master figure is the one to compare.

use std::time::Duration;

use anyhow::{Context, anyhow};
use app::queue::QueueBackend;
use app_redis::{RedisConn, RedisTarget, Timeouts};
use app_testkit::{LocalRedis, RedisCluster};
use serde_json::json;

use app_bench::stats::median;

use super::{Args, queue_run};

/// Master counts measured.
const MASTERS: [usize; 3] = [1, 2, 3];

/// Empties every master (FLUSHALL goes to all of them in cluster mode).
async fn flush(url: &str) -> anyhow::Result<()> {
    let target = RedisTarget::parse(url).map_err(|e| anyhow!("{url}: {e}"))?;
    let mut c = RedisConn::open(
        &target,
        Timeouts {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(30),
        },
    )?;
    let _: redis::Value = redis::cmd("FLUSHALL").query_async(&mut c).await?;
    Ok(())
}

/// Where one case's queue runs.
struct Target {
    /// 0 for the single server.
    masters: usize,
    url: String,
}

struct Case {
    target: usize,
    workers: usize,
    runs: Vec<f64>,
}

fn name(t: &Target) -> String {
    match t.masters {
        0 => "single redis-server".into(),
        1 => "cluster, 1 master".into(),
        m => format!("cluster, {m} masters"),
    }
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    let limit = Duration::from_secs(args.run_timeout_s);
    let single = LocalRedis::start()?;
    let mut targets = vec![Target {
        masters: 0,
        url: single.url(),
    }];
    let mut clusters = Vec::new();
    for m in MASTERS {
        eprintln!("starting a cluster of {m} master(s)...");
        let c = tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(|| RedisCluster::start(m, 0))
                .map_err(|_| anyhow!("the cluster of {m} master(s) did not start (see above)"))
        })
        .await??;
        targets.push(Target {
            masters: m,
            url: c.url(),
        });
        clusters.push(c);
    }
    eprintln!(
        "{} jobs per run, {} runs per case, workers {:?}",
        args.jobs, args.runs, args.workers
    );
    let settings_for = |t: &Target| {
        let mut a = args.clone();
        a.partitions = t.masters.max(1) as u32;
        a
    };
    for t in &targets {
        flush(&t.url).await?;
        queue_run(
            &t.url,
            (QueueBackend::Redis, ""),
            &settings_for(t),
            1,
            args.jobs.min(1_000),
            limit,
        )
        .await
        .with_context(|| format!("warm-up on {}", name(t)))?;
    }
    let mut cases: Vec<Case> = args
        .workers
        .iter()
        .flat_map(|&w| {
            (0..targets.len()).map(move |t| Case {
                target: t,
                workers: w,
                runs: Vec::new(),
            })
        })
        .collect();
    // Interleaved run by run, so a slow moment of the machine hits every case.
    for run in 1..=args.runs {
        for case in &mut cases {
            let t = &targets[case.target];
            flush(&t.url).await?;
            let rate = queue_run(
                &t.url,
                (QueueBackend::Redis, ""),
                &settings_for(t),
                case.workers,
                args.jobs,
                limit,
            )
            .await
            .with_context(|| format!("{}, {} worker(s)", name(t), case.workers))?
            .jobs_per_s;
            eprintln!(
                "run {run}/{}: {:<24} {} worker(s) {:>10.0} jobs/s",
                args.runs,
                name(t),
                case.workers,
                rate
            );
            case.runs.push(rate);
        }
    }
    let single_median = |w: usize| {
        cases
            .iter()
            .find(|c| c.target == 0 && c.workers == w)
            .map(|c| median(&c.runs))
            .unwrap_or(0.0)
    };
    let ratio = |m: f64, base: f64| if base > 0.0 { m / base } else { 0.0 };
    if args.json {
        let rows: Vec<_> = cases
            .iter()
            .map(|c| {
                let t = &targets[c.target];
                let m = median(&c.runs);
                json!({
                    "redis": if t.masters == 0 { "single" } else { "cluster" },
                    "masters": t.masters.max(1),
                    "partitions": t.masters.max(1),
                    "workers": c.workers,
                    "jobs_per_s_median": m,
                    "jobs_per_s_runs": c.runs,
                    "jobs_per_s_per_master": m / t.masters.max(1) as f64,
                    "ratio_to_single_server": ratio(m, single_median(c.workers)),
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "bench": "queue",
                "redis": "cluster",
                "jobs_per_run": args.jobs,
                "runs": args.runs,
                "producers": args.producers,
                "concurrency_per_worker": args.concurrency,
                "replicas_per_master": 0,
                "cases": rows,
            })
        );
        return Ok(());
    }
    println!(
        "Queue throughput on a Redis Cluster (no replicas, one partition per master) and on one redis-server: \
         {} jobs per run, median of {} runs, {} jobs in flight per worker, {} concurrent producers",
        args.jobs, args.runs, args.concurrency, args.producers
    );
    println!(
        "{:<24} {:>8} {:>14} {:>10} {:>10} {:>16} {:>11}",
        "case", "workers", "jobs/s median", "min", "max", "jobs/s / master", "vs single"
    );
    for c in &cases {
        let t = &targets[c.target];
        let m = median(&c.runs);
        let min = c.runs.iter().copied().fold(f64::INFINITY, f64::min);
        let max = c.runs.iter().copied().fold(0.0, f64::max);
        println!(
            "{:<24} {:>8} {:>14.0} {:>10.0} {:>10.0} {:>16.0} {:>10.2}x",
            name(t),
            c.workers,
            m,
            min,
            max,
            m / t.masters.max(1) as f64,
            ratio(m, single_median(c.workers))
        );
    }
    println!(
        "every master, the producer and the workers share this machine's cores: with fewer cores \
         than masters the figures show the cost of cluster mode (slot routing, polling the \
         partitions, a connection per node) more than its scale"
    );
    drop(clusters);
    Ok(())
}
