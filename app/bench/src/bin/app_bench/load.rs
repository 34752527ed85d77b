//! The load generators: `wrk` (HTTP rows) and `redis-benchmark` (the Redis GET bound).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use serde::Serialize;

/// One measured run of one row.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// `None` where the tool does not report it.
    pub p999_ms: Option<f64>,
    pub requests: u64,
}

/// wrk's `done` hook: one machine-readable line with the totals and the percentiles (wrk's
/// own `--latency` table stops at p99).
const DONE: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d p999_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), e.connect + e.read + e.write + e.timeout, e.status))
end
"#;

/// The wrk script of a row: `GET path`, or `GET /users/{random id}` when `ids` is given.
pub fn script(ids: Option<(i64, i64)>) -> String {
    let mut s = String::from(DONE);
    if let Some((first, last)) = ids {
        s.push_str(&format!(
            "local n = 0\n\
             setup = function(thread) n = n + 1; thread:set(\"seed\", n) end\n\
             init = function(args) math.randomseed(os.time() + (seed or 0)) end\n\
             request = function() return wrk.format(\"GET\", \"/users/\" .. math.random({first}, {last})) end\n"
        ));
    }
    s
}

/// Parses the `BENCH` line of [`DONE`].
pub fn parse_wrk(out: &str) -> anyhow::Result<Sample> {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .with_context(|| format!("no BENCH line in the wrk output:\n{out}"))?;
    let field = |k: &str| -> anyhow::Result<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {k} in `{line}`"))
    };
    let (errors, non2xx) = (field("errors")?, field("non2xx")?);
    if errors > 0.0 || non2xx > 0.0 {
        bail!("wrk saw {errors} socket errors and {non2xx} non-2xx answers: `{line}`");
    }
    let (requests, us) = (field("requests")?, field("duration_us")?);
    if requests < 1.0 || us <= 0.0 {
        bail!("wrk made no request: `{line}`");
    }
    Ok(Sample {
        requests_per_sec: requests / (us / 1e6),
        p50_ms: field("p50_us")? / 1e3,
        p99_ms: field("p99_us")? / 1e3,
        p999_ms: Some(field("p999_us")? / 1e3),
        requests: requests as u64,
    })
}

/// Settings every wrk run of a bench shares.
#[derive(Debug, Clone, Copy)]
pub struct WrkLoad {
    pub threads: u32,
    pub connections: u32,
    pub secs: u64,
}

pub fn run_wrk(url: &str, script: &Path, load: WrkLoad) -> anyhow::Result<Sample> {
    let out = Command::new("wrk")
        .arg("-s")
        .arg(script)
        .args(["-t", &load.threads.to_string()])
        .args(["-c", &load.connections.to_string()])
        .args(["-d", &format!("{}s", load.secs), "--timeout", "10s", url])
        .output()
        .context("running wrk")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

/// `redis-benchmark -t get`: throughput, p50 and p99 from its summary, and p99.9 read off
/// its percentile distribution (the first listed percentile at or above 99.9, so an upper
/// bound).
pub fn run_redis_benchmark(port: u16, connections: u32, requests: u64) -> anyhow::Result<Sample> {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "get"])
        .args(["-n", &requests.to_string(), "-c", &connections.to_string()])
        .output()
        .context("running redis-benchmark")?;
    parse_redis_benchmark(&String::from_utf8_lossy(&out.stdout), requests)
}

fn parse_redis_benchmark(text: &str, requests: u64) -> anyhow::Result<Sample> {
    // redis-benchmark redraws its progress line with \r: only the final text counts.
    let text: String = text
        .lines()
        .map(|l| l.rsplit('\r').next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("throughput summary:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no throughput summary in redis-benchmark output:\n{text}"))?;
    // "  latency summary (msec):" then a header line "avg min p50 p95 p99 max" and the values.
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim().starts_with("latency summary"))
        .context("no latency summary in redis-benchmark output")?;
    let values: Vec<f64> = lines
        .get(at + 2)
        .map(|l| {
            l.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if values.len() < 6 {
        bail!("unexpected redis-benchmark latency summary:\n{text}");
    }
    // "99.900% <= 0.503 milliseconds (cumulative count 99923)"
    let p999 = text.lines().find_map(|l| {
        let (pct, rest) = l.trim().split_once("% <= ")?;
        (pct.parse::<f64>().ok()? >= 99.9)
            .then(|| rest.split_whitespace().next()?.parse::<f64>().ok())?
    });
    Ok(Sample {
        requests_per_sec: rps,
        p50_ms: values[2],
        p99_ms: values[4],
        p999_ms: p999,
        requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_line() {
        let s = parse_wrk("Running 1s test\nBENCH requests=5000 duration_us=1000000 p50_us=400 p99_us=2000 p999_us=5000 errors=0 non2xx=0\n").unwrap();
        assert_eq!(s.requests_per_sec, 5000.0);
        assert_eq!((s.p50_ms, s.p99_ms, s.p999_ms), (0.4, 2.0, Some(5.0)));
        let e = parse_wrk(
            "BENCH requests=5 duration_us=1000000 p50_us=1 p99_us=1 p999_us=1 errors=0 non2xx=3\n",
        );
        assert!(e.unwrap_err().to_string().contains("non-2xx"));
        assert!(parse_wrk("garbage").is_err());
    }

    #[test]
    fn redis_benchmark_summary() {
        let text = "GET: rps=0.0 (overall: nan) avg_msec=nan (overall: nan)\r====== GET ======\n\
            Latency by percentile distribution:\n\
            0.000% <= 0.087 milliseconds (cumulative count 1)\n\
            99.000% <= 0.303 milliseconds (cumulative count 99000)\n\
            99.902% <= 0.503 milliseconds (cumulative count 99902)\n\
            100.000% <= 1.007 milliseconds (cumulative count 100000)\n\
            Summary:\n  throughput summary: 85714.29 requests per second\n\
            \x20 latency summary (msec):\n\
            \x20         avg       min       p50       p95       p99       max\n\
            \x20       0.201     0.080     0.191     0.271     0.303     1.007\n";
        let s = parse_redis_benchmark(text, 100_000).unwrap();
        assert_eq!(s.requests_per_sec, 85714.29);
        assert_eq!((s.p50_ms, s.p99_ms, s.p999_ms), (0.191, 0.303, Some(0.503)));
    }
}
