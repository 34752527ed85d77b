//! The cases of `queue-bench`, their medians and ratios, as a table or JSON.

use serde::Serialize;

use app::queue::QueueBackend;
use app_bench::stats::{Latency, median, ratio};

use super::Measured;

/// A queue the bench runs jobs through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// Our queue on Redis Streams.
    Redis,
    /// Our queue on RabbitMQ.
    Rabbitmq,
    /// BullMQ (the peer), on the same redis-server.
    Bullmq,
}

impl System {
    /// Our queue's backend; `None` for the peer.
    pub fn backend(self) -> Option<QueueBackend> {
        match self {
            System::Redis => Some(QueueBackend::Redis),
            System::Rabbitmq => Some(QueueBackend::Rabbitmq),
            System::Bullmq => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            System::Redis => "redis streams",
            System::Rabbitmq => "rabbitmq",
            System::Bullmq => "bullmq",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    RawBatched,
    RawPerEntry { readers: usize },
    RawRabbit { prefetch: usize },
    System(System, usize),
}

pub struct Case {
    pub kind: Kind,
    jobs_per_s: Vec<f64>,
    cpu_us_per_job: Vec<f64>,
    latency: Vec<Latency>,
}

impl Case {
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            jobs_per_s: Vec::new(),
            cpu_us_per_job: Vec::new(),
            latency: Vec::new(),
        }
    }

    pub fn name(&self) -> String {
        match self.kind {
            Kind::RawBatched => "raw redis, batches of 100".into(),
            Kind::RawPerEntry { readers } => format!("raw redis, per entry ({readers} readers)"),
            Kind::RawRabbit { prefetch } => format!("raw rabbitmq (prefetch {prefetch})"),
            Kind::System(s, w) => {
                format!("{}, {w} worker{}", s.label(), if w == 1 { "" } else { "s" })
            }
        }
    }

    pub fn push(&mut self, jobs: usize, m: Measured) {
        self.jobs_per_s.push(m.jobs_per_s);
        self.cpu_us_per_job
            .push(m.redis_cpu_s * 1e6 / jobs.max(1) as f64);
        if let Some(l) = m.latencies_ms {
            self.latency.push(Latency::of(&l));
        }
    }

    fn median(&self) -> f64 {
        median(&self.jobs_per_s)
    }
}

/// The settings every system ran with.
#[derive(Debug, Serialize)]
pub struct Setup {
    pub jobs_per_run: usize,
    pub runs: usize,
    pub producers: usize,
    pub concurrency_per_worker: usize,
    /// The guarantees, equal on every system (the app queue's defaults).
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub claim_idle_ms: u64,
    pub retention_s: u64,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub case: String,
    /// `null` for the raw bounds.
    pub system: Option<System>,
    pub workers: Option<usize>,
    pub jobs_per_s_median: f64,
    pub jobs_per_s_runs: Vec<f64>,
    /// Enqueue to done (median of each percentile over the runs); `null` for the raw bounds.
    pub latency: Option<Latency>,
    pub redis_cpu_us_per_job: f64,
    /// Against the raw per-entry bound of its broker (Redis or RabbitMQ).
    pub ratio_to_raw_of_its_broker: Option<f64>,
    /// Against the raw Redis loop one entry at a time, with as many readers as this row's
    /// workers have jobs in flight.
    pub ratio_to_raw_per_entry: Option<f64>,
    /// Ours against BullMQ with the same worker count.
    pub ratio_to_bullmq: Option<f64>,
}

/// The goals, and where the queue stands (the goals are the next phase's work).
#[derive(Debug, Serialize)]
pub struct Goals {
    /// Redis Streams / BullMQ, per worker count (goal >= 2).
    pub redis_vs_bullmq: Vec<(usize, f64)>,
    /// Redis Streams with one worker / raw per entry with `concurrency` readers (goal >= 0.8).
    pub redis_one_worker_vs_raw: Option<f64>,
    /// RabbitMQ / its raw bound, per worker count (goal >= 0.6).
    pub rabbitmq_vs_raw: Vec<(usize, f64)>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub bench: &'static str,
    pub setup: Setup,
    pub rows: Vec<Row>,
    pub goals: Goals,
}

/// The reader counts of the raw per-entry loops a run measures: one per worker count,
/// `workers * concurrency` (as many entries in flight as those pools), in the order given.
pub fn per_entry_readers(workers: &[usize], concurrency: usize) -> Vec<usize> {
    workers.iter().fold(Vec::new(), |mut v, w| {
        let r = w * concurrency;
        if !v.contains(&r) {
            v.push(r);
        }
        v
    })
}

impl Report {
    pub fn new(setup: Setup, cases: &[Case]) -> Self {
        let find = |k: &dyn Fn(Kind) -> bool| cases.iter().find(|c| k(c.kind)).map(Case::median);
        let per_worker = setup.concurrency_per_worker;
        // The raw per-entry loop with as many readers as `w` workers have jobs in flight.
        let raw1 = |w: usize| {
            find(&|k| {
                k == Kind::RawPerEntry {
                    readers: w * per_worker,
                }
            })
        };
        let raw_mq = find(&|k| matches!(k, Kind::RawRabbit { .. }));
        let sys = |s: System, w: usize| find(&|k| k == Kind::System(s, w));
        let rows = cases
            .iter()
            .map(|c| {
                let m = c.median();
                let (system, workers) = match c.kind {
                    Kind::System(s, w) => (Some(s), Some(w)),
                    _ => (None, None),
                };
                let raw_of = match (system, workers) {
                    (Some(System::Rabbitmq), _) => raw_mq,
                    (Some(_), Some(w)) => raw1(w),
                    _ => None,
                };
                Row {
                    case: c.name(),
                    system,
                    workers,
                    jobs_per_s_median: m,
                    jobs_per_s_runs: c.jobs_per_s.clone(),
                    latency: (!c.latency.is_empty()).then(|| Latency::median_of(&c.latency)),
                    redis_cpu_us_per_job: median(&c.cpu_us_per_job),
                    ratio_to_raw_of_its_broker: raw_of.map(|r| ratio(m, r)),
                    ratio_to_raw_per_entry: workers.and_then(raw1).map(|r| ratio(m, r)),
                    ratio_to_bullmq: match (system, workers) {
                        (Some(s), Some(w)) if s != System::Bullmq => {
                            sys(System::Bullmq, w).map(|b| ratio(m, b))
                        }
                        _ => None,
                    },
                }
            })
            .collect();
        let workers: Vec<usize> = cases
            .iter()
            .filter_map(|c| match c.kind {
                Kind::System(_, w) => Some(w),
                _ => None,
            })
            .fold(Vec::new(), |mut v, w| {
                if !v.contains(&w) {
                    v.push(w);
                }
                v
            });
        let per_worker = |a: System, base: &dyn Fn(usize) -> Option<f64>| {
            workers
                .iter()
                .filter_map(|&w| Some((w, ratio(sys(a, w)?, base(w)?))))
                .collect()
        };
        let goals = Goals {
            redis_vs_bullmq: per_worker(System::Redis, &|w| sys(System::Bullmq, w)),
            redis_one_worker_vs_raw: sys(System::Redis, 1).zip(raw1(1)).map(|(a, b)| ratio(a, b)),
            rabbitmq_vs_raw: per_worker(System::Rabbitmq, &|_| raw_mq),
        };
        Self {
            bench: "queue",
            setup,
            rows,
            goals,
        }
    }

    pub fn print_table(&self) {
        let s = &self.setup;
        println!(
            "Queue throughput, enqueue to done: {} jobs per run, median of {} runs, {} concurrent producers, {} jobs in flight per worker; \
             every system: {} attempts, backoff from {} ms, stalled jobs taken over after {} ms, finished jobs kept {} s",
            s.jobs_per_run,
            s.runs,
            s.producers,
            s.concurrency_per_worker,
            s.max_attempts,
            s.backoff_base_ms,
            s.claim_idle_ms,
            s.retention_s
        );
        println!(
            "{:<36} {:>9} {:>8} {:>8} {:>9} {:>9} {:>10} {:>11} {:>9} {:>9}",
            "case",
            "jobs/s",
            "min",
            "max",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "redis us/job",
            "vs raw",
            "vs bullmq"
        );
        let x = |v: Option<f64>| v.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into());
        for r in &self.rows {
            let (lo, hi) = r
                .jobs_per_s_runs
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(l, h), v| (l.min(*v), h.max(*v)));
            let lat = |f: fn(&Latency) -> f64| {
                r.latency
                    .as_ref()
                    .map(|l| format!("{:.0}", f(l)))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "{:<36} {:>9.0} {:>8.0} {:>8.0} {:>9} {:>9} {:>10} {:>11.1} {:>9} {:>9}",
                r.case,
                r.jobs_per_s_median,
                lo,
                hi,
                lat(|l| l.p50_ms),
                lat(|l| l.p99_ms),
                lat(|l| l.p999_ms),
                r.redis_cpu_us_per_job,
                x(r.ratio_to_raw_of_its_broker),
                x(r.ratio_to_bullmq)
            );
        }
        let g = &self.goals;
        let list = |v: &[(usize, f64)]| {
            v.iter()
                .map(|(w, r)| format!("{w}w {r:.2}x"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("\ngoals (the queue's next phase):");
        println!(
            "  redis streams / bullmq, same workers: {} (goal >= 2x)",
            list(&g.redis_vs_bullmq)
        );
        println!(
            "  redis streams, 1 worker / raw per entry: {} (goal >= 0.8x)",
            x(g.redis_one_worker_vs_raw)
        );
        println!(
            "  rabbitmq / its raw bound: {} (goal >= 0.6x)",
            list(&g.rabbitmq_vs_raw)
        );
        println!(
            "\nraw redis, batches of 100: one producer pipelines XADD in batches of 100; one consumer reads COUNT 100 and sends one XACK per batch\n\
             raw redis, per entry: one XADD per job from the producers; readers each XREADGROUP COUNT 1 then XACK (the queue's shape, no job logic); one loop per worker count, with workers x jobs in flight readers, and each redis streams and bullmq row's vs raw is against the loop of its worker count\n\
             raw rabbitmq: concurrent confirmed persistent publishes into a durable queue; one consumer acks each message (no job logic)\n\
             queue: the job record in Redis (ENQUEUE, START, COMPLETE scripts) plus the broker; on rabbitmq each enqueue also waits for the publisher confirm; in this process, on the app binary's allocator (APP_ALLOCATOR, default jemalloc)\n\
             bullmq: Queue.add from the producers, one Worker process per worker; latency from job.timestamp to job.finishedOn, ours from created_ms to finished_ms\n\
             redis us/job: redis-server CPU (user + system) per job over the measured interval (on rabbitmq only the job records are in Redis)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(kind: Kind, jobs_per_s: f64) -> Case {
        let mut c = Case::new(kind);
        for _ in 0..3 {
            c.push(
                1,
                Measured {
                    jobs_per_s,
                    redis_cpu_s: 0.0,
                    latencies_ms: None,
                    first_done_ms: None,
                    enqueued_ms: None,
                    done_when_enqueued: None,
                },
            );
        }
        c
    }

    #[test]
    fn one_raw_loop_per_worker_count() {
        assert_eq!(per_entry_readers(&[1, 4, 1], 8), vec![8, 32]);
        assert_eq!(per_entry_readers(&[2], 3), vec![6]);
    }

    #[test]
    fn each_row_is_set_against_the_raw_loop_of_its_concurrency() {
        let setup = Setup {
            jobs_per_run: 1,
            runs: 3,
            producers: 16,
            concurrency_per_worker: 8,
            max_attempts: 5,
            backoff_base_ms: 500,
            claim_idle_ms: 30_000,
            retention_s: 1,
        };
        let cases = [
            case(Kind::RawPerEntry { readers: 8 }, 1000.0),
            case(Kind::RawPerEntry { readers: 32 }, 2000.0),
            case(Kind::System(System::Redis, 1), 800.0),
            case(Kind::System(System::Bullmq, 1), 400.0),
            case(Kind::System(System::Redis, 4), 1800.0),
        ];
        let r = Report::new(setup, &cases);
        let row = |n: &str| r.rows.iter().find(|x| x.case == n).expect(n);
        assert_eq!(
            row("redis streams, 1 worker").ratio_to_raw_per_entry,
            Some(0.8)
        );
        assert_eq!(row("bullmq, 1 worker").ratio_to_raw_per_entry, Some(0.4));
        assert_eq!(
            row("redis streams, 4 workers").ratio_to_raw_per_entry,
            Some(0.9)
        );
        assert_eq!(r.goals.redis_one_worker_vs_raw, Some(0.8));
    }
}
