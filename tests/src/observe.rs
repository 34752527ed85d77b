//! Vital signs of a running [`System`]: resident memory of its daemons, lbd's metrics, Redis's
//! memory and the queue's dead letters (the soak samples them, the chaos tests read swaps).

use std::process::Command;
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::exec;
use crate::system::System;

/// Resident memory (`VmRSS`, KiB) of daemon `daemon` on `host`; `None` when it does not run.
pub fn rss_kib(system: &System, host: &str, daemon: &str) -> Option<u64> {
    let pid = system.daemon_pid(host, daemon)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// lbd's Prometheus text on balancer `lb` (its unix socket needs no token).
pub fn lbd_metrics(system: &System, lb: &str) -> Result<String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sf", "--max-time", "5", "--unix-socket"])
        .arg(system.lbd_socket(lb))
        .arg("http://lbd/metrics");
    let out = exec::output(&mut cmd, Duration::from_secs(10))?;
    exec::check(&cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The sum of every series of metric `name` in Prometheus text (0 when there is none).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let n = series.split('{').next()?;
            (n == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// `redis-cli ARGS...` against the services host's Redis, its answer trimmed.
pub fn redis(system: &System, args: &[&str]) -> Result<String> {
    let svc = system
        .lab()
        .hosts_with_role(crate::Role::Services)
        .next()
        .ok_or_else(|| LabError::Option {
            option: "redis".into(),
            reason: "the topology has no services host".into(),
        })?;
    let ip = svc.ipv4().to_string();
    let mut all = vec!["redis-cli", "-h", ip.as_str()];
    all.extend_from_slice(args);
    Ok(svc.exec(all)?.trim().to_string())
}

/// A field of Redis's `INFO` (e.g. `used_memory`).
pub fn redis_info(system: &System, section: &str, field: &str) -> Result<u64> {
    let text = redis(system, &["INFO", section])?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| LabError::Parse {
            command: format!("redis-cli INFO {section}"),
            reason: format!("no numeric {field}"),
        })
}

/// Queues of the app whose dead letters are counted.
pub const QUEUES: [&str; 3] = ["tasks", "orders", "callbacks"];

/// Dead letters in the app's queues (Redis Streams backend, key prefix `q`).
pub fn dead_letters(system: &System) -> Result<u64> {
    let mut n = 0;
    for q in QUEUES {
        let key = format!("q:dlq:{q}");
        n += redis(system, &["XLEN", &key])?.parse::<u64>().unwrap_or(0);
    }
    Ok(n)
}
