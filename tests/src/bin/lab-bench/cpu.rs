//! CPU time, two ways.
//!
//! - Machine-wide (the definition): XDP runs in softirq context and is charged to
//!   whatever task happens to be running, so no per-process counter sees it; the aggregate
//!   `cpu` line of `/proc/stat` does. All non-idle time of all CPUs over the run.
//! - Lab tasks (a cross-check on a shared machine, where other people's work lands in the
//!   machine-wide figure): the run time of every process inside the lab's namespaces, of
//!   `ksoftirqd`, and of this benchmark's own threads and reaped children (wrk). This kernel
//!   has no IRQ time accounting, so softirq work done in a task's context (on veth, nearly
//!   all of it: the sender's `local_bh_enable` runs the receive path, XDP included) is part
//!   of that task's run time; softirq work deferred to `ksoftirqd` is part of its.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Cumulative CPU counters of the whole machine, in clock ticks (`USER_HZ`).
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    busy: u64,
    idle: u64,
}

impl CpuSample {
    /// Reads the aggregate `cpu` line of `/proc/stat`.
    pub fn now() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        parse(&text)
    }

    /// Non-idle CPU time since `earlier`, in microseconds (all CPUs summed).
    pub fn busy_us_since(&self, earlier: &Self) -> f64 {
        ticks_to_us(self.busy.saturating_sub(earlier.busy))
    }

    /// Share of all CPUs that was busy since `earlier`, 0..=1.
    pub fn busy_share_since(&self, earlier: &Self) -> f64 {
        let busy = self.busy.saturating_sub(earlier.busy) as f64;
        let idle = self.idle.saturating_sub(earlier.idle) as f64;
        if busy + idle == 0.0 {
            0.0
        } else {
            busy / (busy + idle)
        }
    }
}

/// Selects the lab's processes (by network namespace) and `ksoftirqd`.
#[derive(Debug, Clone)]
pub struct LabCpu {
    ns_inodes: Vec<u64>,
}

/// Cumulative run time of the selected tasks at one moment.
#[derive(Debug, Clone)]
pub struct LabSample {
    ticks: HashMap<u32, u64>,
    own_us: f64,
}

impl LabCpu {
    /// `namespaces`: names under `/run/netns`.
    pub fn new(namespaces: &[String]) -> Result<Self> {
        let ns_inodes = namespaces
            .iter()
            .map(|ns| {
                let p = Path::new(tests::setns::NETNS_DIR).join(ns);
                std::fs::metadata(&p)
                    .map(|m| m.ino())
                    .with_context(|| format!("stat {}", p.display()))
            })
            .collect::<Result<_>>()?;
        Ok(Self { ns_inodes })
    }

    pub fn sample(&self) -> Result<LabSample> {
        let mut ticks = HashMap::new();
        let procs = std::fs::read_dir("/proc").context("listing /proc")?;
        for entry in procs.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // Processes come and go while we look: a vanished one is simply skipped.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((comm, t)) = parse_pid_stat(&stat) else {
                continue;
            };
            let in_lab = std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .map(|m| self.ns_inodes.contains(&m.ino()))
                .unwrap_or(false);
            if in_lab || comm.starts_with("ksoftirqd/") {
                ticks.insert(pid, t);
            }
        }
        Ok(LabSample {
            ticks,
            own_us: rusage_us(libc::RUSAGE_SELF) + rusage_us(libc::RUSAGE_CHILDREN),
        })
    }
}

impl LabSample {
    /// Run time of the lab's tasks since `earlier`, in microseconds. A task that started in
    /// between counts whole; one that ended in between is lost unless it was our child.
    pub fn busy_us_since(&self, earlier: &Self) -> f64 {
        let ticks: u64 = self
            .ticks
            .iter()
            .map(|(pid, t)| t.saturating_sub(earlier.ticks.get(pid).copied().unwrap_or(0)))
            .sum();
        ticks_to_us(ticks) + (self.own_us - earlier.own_us).max(0.0)
    }
}

fn rusage_us(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// `PID (COMM) STATE PPID ... UTIME STIME ...`: COMM and utime + stime (fields 14 and 15).
fn parse_pid_stat(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

fn ticks_to_us(ticks: u64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    ticks as f64 * 1e6 / hz
}

/// `cpu  user nice system idle iowait irq softirq steal guest guest_nice`: busy is everything
/// but idle and iowait (guest time is already inside user and nice).
fn parse(text: &str) -> Result<CpuSample> {
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat has no aggregate `cpu` line")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse::<u64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing /proc/stat line `{line}`"))?;
    if fields.len() < 8 {
        bail!("/proc/stat line `{line}` has fewer than 8 counters");
    }
    let idle = fields[3] + fields[4];
    let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7];
    Ok(CpuSample { busy, idle })
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn parses_the_aggregate_line() {
        let s = parse("cpu  10 1 5 100 4 2 3 1 0 0\ncpu0 5 0 2 50 2 1 1 0 0 0\n").unwrap();
        assert_eq!(s.busy, 10 + 1 + 5 + 2 + 3 + 1);
        assert_eq!(s.idle, 104);
        assert!(parse("cpu0 1 2 3\n").is_err());
        assert!(parse("cpu  1 2 3\n").is_err());
    }

    #[test]
    fn parses_a_process_stat_line() {
        let line = "42 (ksoftirqd/0) S 2 0 0 0 -1 69238880 0 0 0 0 17 5 0 0 20 0 1 0 9 0 0";
        assert_eq!(parse_pid_stat(line), Some(("ksoftirqd/0", 22)));
        let odd = "7 (a) b (c)) R 1 1 1 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 9 0 0";
        assert_eq!(parse_pid_stat(odd), Some(("a) b (c)", 7)));
        assert_eq!(parse_pid_stat("7 (x) R 1"), None);
    }
}
