//! The BullMQ peer: `peers/bullmq/bench.js` under the machine's Node.js, on the same
//! redis-server and with the same workload and guarantees as the app's queue.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use app::queue::QueueSettings;
use serde::Deserialize;

use super::Measured;

#[derive(Deserialize)]
struct Output {
    jobs_per_s: f64,
    redis_cpu_s: f64,
    latencies_ms: Vec<f64>,
}

/// The workload of one run.
pub struct Load {
    pub port: u16,
    pub jobs: usize,
    pub producers: usize,
    pub workers: usize,
    pub concurrency: usize,
    pub limit: Duration,
}

/// One run: `workers` worker processes with `concurrency` each. Attempts, backoff, stall
/// detection and retention come from the app queue's defaults (`settings`).
pub fn run(load: &Load, settings: &QueueSettings) -> anyhow::Result<Measured> {
    let dir = app_bench::peers::bullmq_dir()?;
    let args = [
        u64::from(load.port),
        load.jobs as u64,
        load.producers as u64,
        load.workers as u64,
        load.concurrency as u64,
        u64::from(settings.max_attempts),
        settings.backoff_base_ms,
        settings.claim_idle_ms,
        settings.retention_s,
        load.limit.as_secs().max(1),
    ];
    let out = Command::new("node")
        .arg("bench.js")
        .args(args.iter().map(u64::to_string))
        .current_dir(&dir)
        .output()
        .context("running node (apt package nodejs)")?;
    if !out.status.success() {
        bail!(
            "the BullMQ run failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let o: Output = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "unexpected output of bench.js:\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    if o.latencies_ms.len() < load.jobs {
        bail!(
            "BullMQ reported {} completions of {} jobs",
            o.latencies_ms.len(),
            load.jobs
        );
    }
    Ok(Measured {
        jobs_per_s: o.jobs_per_s,
        redis_cpu_s: o.redis_cpu_s,
        latencies_ms: Some(o.latencies_ms),
        first_done_ms: None,
        enqueued_ms: None,
        done_when_enqueued: None,
    })
}
