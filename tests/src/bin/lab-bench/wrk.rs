//! HTTP load with wrk from the client host, one run = one measurement.
//!
//! wrk's own Lua hooks do two jobs: `setup` points thread *i* at target *i mod n* (so the
//! thread→backend reference row is ONE wrk process whose threads are spread over the backends,
//! giving one latency histogram instead of percentiles that would have to be merged), and
//! `done` prints the exact figures as one JSON line instead of wrk's rounded text.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use tests::{Host, exec};

use crate::cpu::{CpuSample, LabCpu};

/// Marker of the line the Lua `done` hook prints.
const MARK: &str = "LABBENCH ";

/// How the client uses its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnMode {
    /// HTTP/1.1 keep-alive: every connection carries many requests.
    KeepAlive,
    /// `Connection: close`: a new TCP connection per request.
    Close,
}

impl ConnMode {
    pub const ALL: [ConnMode; 2] = [ConnMode::KeepAlive, ConnMode::Close];

    pub fn key(self) -> &'static str {
        match self {
            ConnMode::KeepAlive => "keep-alive",
            ConnMode::Close => "close",
        }
    }
}

/// The client's load, the same for every option.
#[derive(Debug, Clone)]
pub struct Load {
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
    pub path: String,
    /// wrk's per-request timeout.
    pub timeout: Duration,
}

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct WrkResult {
    pub requests: u64,
    pub duration_us: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub err_connect: u64,
    pub err_read: u64,
    pub err_write: u64,
    pub err_status: u64,
    pub err_timeout: u64,
    /// Machine-wide non-idle CPU over the run, filled in after wrk exits.
    #[serde(skip)]
    pub cpu_busy_us: f64,
    /// Run time of the lab's tasks over the run (see `cpu`), filled in after wrk exits.
    #[serde(skip)]
    pub lab_busy_us: f64,
}

impl WrkResult {
    pub fn rps(&self) -> f64 {
        if self.duration_us == 0 {
            0.0
        } else {
            self.requests as f64 * 1e6 / self.duration_us as f64
        }
    }

    pub fn cpu_us_per_request(&self) -> f64 {
        if self.requests == 0 {
            f64::NAN
        } else {
            self.cpu_busy_us / self.requests as f64
        }
    }

    pub fn lab_us_per_request(&self) -> f64 {
        if self.requests == 0 {
            f64::NAN
        } else {
            self.lab_busy_us / self.requests as f64
        }
    }

    pub fn errors(&self) -> u64 {
        self.err_connect + self.err_read + self.err_write + self.err_status + self.err_timeout
    }
}

/// Writes the Lua script for `targets` (empty: wrk's own URL host) into `dir`.
pub fn write_script(dir: &Path, name: &str, targets: &[SocketAddr]) -> Result<PathBuf> {
    let list = targets
        .iter()
        .map(|t| format!("{{\"{}\", \"{}\"}}", t.ip(), t.port()))
        .collect::<Vec<_>>()
        .join(", ");
    let script = format!(
        r#"-- Written by lab-bench. Thread i talks to target i mod n (none: the URL's host).
local targets = {{ {list} }}
local next_thread = 0
function setup(thread)
  if #targets > 0 then
    local t = targets[(next_thread % #targets) + 1]
    thread.addr = wrk.lookup(t[1], t[2])[1]
  end
  next_thread = next_thread + 1
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{MARK}{{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"#
    );
    let path = dir.join(format!("wrk-{name}.lua"));
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Runs wrk on `client` against `url` (host:port of the first target) with `script`, and
/// samples CPU (machine-wide and the lab's tasks) around it.
pub fn run(
    client: &Host,
    lab_cpu: &LabCpu,
    url_host: SocketAddr,
    script: &Path,
    load: &Load,
    mode: ConnMode,
    duration: Duration,
) -> Result<WrkResult> {
    let secs = duration.as_secs().max(1);
    let mut args: Vec<String> = vec![
        "wrk".into(),
        "--latency".into(),
        "-t".into(),
        load.threads.to_string(),
        "-c".into(),
        load.connections.to_string(),
        "-d".into(),
        format!("{secs}s"),
        "--timeout".into(),
        format!("{}s", load.timeout.as_secs().max(1)),
        "-s".into(),
        script.display().to_string(),
    ];
    if mode == ConnMode::Close {
        args.extend(["-H".into(), "Connection: close".into()]);
    }
    args.push(format!("http://{url_host}{}", load.path));
    let mut cmd = client.command(&args);
    // wrk stops by itself after -d; the bound only guards against a hung wrk.
    let bound = Duration::from_secs(secs + 30);
    let lab_before = lab_cpu.sample()?;
    let before = CpuSample::now()?;
    let out = exec::output(&mut cmd, bound)?;
    let after = CpuSample::now()?;
    let lab_after = lab_cpu.sample()?;
    exec::check(&cmd, &out)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut result = parse(&stdout).with_context(|| format!("wrk output:\n{stdout}"))?;
    result.cpu_busy_us = after.busy_us_since(&before);
    result.lab_busy_us = lab_after.busy_us_since(&lab_before);
    Ok(result)
}

fn parse(stdout: &str) -> Result<WrkResult> {
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix(MARK)) else {
        bail!("no `{}` line from the Lua done() hook", MARK.trim());
    };
    serde_json::from_str(line).with_context(|| format!("parsing `{line}`"))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn parses_the_done_line() {
        let out = "Running 1s test\nLABBENCH {\"requests\":100,\"duration_us\":2000000,\"p50_us\":150,\"p99_us\":900,\"err_connect\":0,\"err_read\":1,\"err_write\":0,\"err_status\":2,\"err_timeout\":0}\n";
        let r = parse(out).unwrap();
        assert_eq!(r.requests, 100);
        assert_eq!(r.rps(), 50.0);
        assert_eq!(r.errors(), 3);
        assert!(parse("Running 1s test\n").is_err());
    }
}
