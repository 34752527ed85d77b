//! Processes of tests and benchmarks: free loopback ports, bounded waits, required
//! binaries, and [`ChildGuard`], a child process stopped when the guard drops (also when a
//! test panics). Every helper fails with a message naming what is missing: a test must never
//! pass without its real server.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// Generous bound for servers to come up on a loaded 2-core machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    l.local_addr().expect("local_addr of probe socket").port()
}

/// Finds `name` in PATH or in the given extra directories; panics naming the package.
pub fn require_binary(name: &str, extra_dirs: &[&str], apt_package: &str) -> PathBuf {
    let path_var = std::env::var("PATH").unwrap_or_default();
    let dirs = extra_dirs
        .iter()
        .map(|d| PathBuf::from(*d))
        .chain(std::env::split_paths(&path_var));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "required binary `{name}` not found in PATH or {extra_dirs:?}: install the apt package `{apt_package}`"
    );
}

/// Waits (bounded) until `cond` is true, polling every `every`; returns whether it became true.
pub fn wait_until(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Sends a signal to a process id (e.g. `libc::SIGTERM`).
pub fn send_signal(pid: u32, signal: i32) {
    let pid = i32::try_from(pid).expect("pid fits in i32");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// A child process that is stopped when the guard drops (also when a test panics).
///
/// It first sends `stop_signal` (SIGKILL by default; PostgreSQL prefers SIGINT, a fast
/// shutdown that also stops its worker processes), waits a bounded time, then SIGKILLs.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
    stop_signal: i32,
}

impl ChildGuard {
    pub fn new(name: impl Into<String>, child: Child) -> Self {
        Self {
            child: Some(child),
            name: name.into(),
            stop_signal: libc::SIGKILL,
        }
    }

    pub fn with_stop_signal(mut self, signal: i32) -> Self {
        self.stop_signal = signal;
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends `signal` without waiting.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            send_signal(c.id(), signal);
        }
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process now (stop signal, bounded wait, then SIGKILL) and reaps it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        send_signal(child.id(), self.stop_signal);
        // A paused (SIGSTOPped) process only acts on the signal once continued.
        send_signal(child.id(), libc::SIGCONT);
        // Generous: a database's fast shutdown can take a while on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{}: did not stop after signal {}, killing",
            self.name, self.stop_signal
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}
