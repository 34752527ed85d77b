//! Processes a bench starts and watches: servers on free loopback ports (killed when their
//! guard drops), their resident memory, tools that must be on PATH, and one-shot HTTP GETs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Fails with the apt package to install when `bin` is not on PATH.
pub fn need(bin: &str, package: &str) -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    if !found {
        bail!(
            "`{bin}` not found in PATH: install the apt package `{package}` (`cargo xtask bench` does)"
        );
    }
    Ok(())
}

/// A free loopback port (it could be taken before it is used: servers are checked).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last `n` lines of a log file (for error messages).
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One request over a fresh connection (a JSON body when given); the status and the body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP header end in the answer of {addr}{path}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in the answer of {addr}{path}"))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A server process: its output goes to `log`; it is killed (SIGTERM, then SIGKILL) when
/// the guard drops.
pub struct Server {
    pub name: String,
    pub addr: SocketAddr,
    pub log: PathBuf,
    child: Child,
}

impl Server {
    /// Spawns `cmd` (output to `log`) and waits until `GET ready_path` on `addr` answers 200.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        addr: SocketAddr,
        log: PathBuf,
        ready_path: &str,
    ) -> anyhow::Result<Self> {
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        let mut s = Self {
            name: name.to_string(),
            addr,
            log,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = s.child.try_wait()? {
                bail!(
                    "{name} exited with {status} before answering; end of {}:\n{}",
                    s.log.display(),
                    log_tail(&s.log, 20)
                );
            }
            if matches!(http(addr, "GET", ready_path, None), Ok((200, _))) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} did not answer GET {ready_path} on {addr} within 30 s; end of {}:\n{}",
                    s.log.display(),
                    log_tail(&s.log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the end of the log when the process has died.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} died ({status}); end of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log, 20)
            );
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first: the app's ordered shutdown; the bench sets no drain delay.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child, which we have not reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process in KiB (`VmRSS`), `None` once it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Peak and mean of what a [`Sampler`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Sampled {
    pub peak: u64,
    pub mean: f64,
    pub samples: u64,
}

/// Calls a probe every `every` on a thread of its own until finished (resident memory, a
/// gauge under load); keeps the peak and the mean.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Sampled>>,
}

impl Sampler {
    pub fn start(every: Duration, probe: impl Fn() -> Option<u64> + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut peak, mut sum, mut n) = (0u64, 0u64, 0u64);
                loop {
                    if let Some(v) = probe() {
                        peak = peak.max(v);
                        sum += v;
                        n += 1;
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(every);
                }
                Sampled {
                    peak,
                    mean: if n > 0 { sum as f64 / n as f64 } else { 0.0 },
                    samples: n,
                }
            })
        };
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling (after one last probe).
    pub fn finish(mut self) -> Sampled {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `cmd` run under `taskset -c cpus` when `cpus` is given (the same CPU list for every
/// server a bench compares).
pub fn pinned(program: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(list) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(list).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A binary built next to the running bench (`target/release/NAME`).
pub fn sibling_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let path = exe
        .parent()
        .context("the bench binary has no folder")?
        .join(name);
    if !path.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release --bin {name}` (`cargo xtask bench` does)",
            path.display()
        );
    }
    Ok(path)
}
