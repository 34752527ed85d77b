//! Shared helpers for the app's integration tests: free ports, kill-on-drop child guards,
//! a real redis-server and a real PostgreSQL started in temporary directories.
//!
//! Every helper fails (panics with a message naming what is missing) when a prerequisite
//! binary is absent: a test must never pass without its real server.
#![allow(dead_code)]

pub mod app;
pub mod conformance;
pub mod orders;
pub mod probe;
pub mod rabbit;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

pub use app_testkit::process::{
    ChildGuard, START_TIMEOUT, free_port, port_open, require_binary, wait_until,
};

/// Async variant of [`wait_until`] for tests running inside tokio.
pub async fn wait_until_async<F, Fut>(timeout: Duration, every: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// Queue settings for tests: short blocks, claims and backoffs, so retries and takeovers
/// happen within a test's bounds; 3 attempts.
pub fn fast_queue_settings() -> ::app::queue::QueueSettings {
    ::app::queue::QueueSettings {
        claim_idle_ms: 1_000,
        block_ms: 200,
        mover_interval_ms: 50,
        backoff_base_ms: 20,
        backoff_max_ms: 100,
        max_attempts: 3,
        shutdown_grace_ms: 10_000,
        ..Default::default()
    }
}

/// How many attempts in a job's history succeeded (one for a job run once in effect).
pub fn successes(j: &::app::queue::JobRecord) -> usize {
    j.history
        .iter()
        .filter(|a| a.outcome == "succeeded")
        .count()
}

/// Raises the soft open-files limit to the hard limit (tests with many connections).
pub fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// A redis-server on 127.0.0.1 with its own port and temporary directory, no persistence.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    guard: Option<ChildGuard>,
}

impl RedisServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let mut s = Self {
            port: free_port(),
            dir,
            guard: None,
        };
        s.spawn();
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        let bin = require_binary("redis-server", &[], "redis-server");
        let child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(["--dir", &self.dir.path().display().to_string()])
            .args([
                "--logfile",
                &self.dir.path().join("redis.log").display().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let mut guard = ChildGuard::new("redis-server", child);
        let port = self.port;
        let up = wait_until(START_TIMEOUT, Duration::from_millis(20), || {
            port_open(port) && redis_ping(port)
        });
        if !up {
            let log =
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
            guard.stop();
            panic!("redis-server did not answer PING on port {port}; log:\n{log}");
        }
        self.guard = Some(guard);
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.stop();
        }
    }

    /// Freezes the server (SIGSTOP): it accepts connections but answers nothing, like a
    /// Redis stuck on a slow command or a saturated host.
    pub fn pause(&self) {
        if let Some(g) = &self.guard {
            g.signal(libc::SIGSTOP);
        }
    }

    /// Undoes [`RedisServer::pause`].
    pub fn resume(&self) {
        if let Some(g) = &self.guard {
            g.signal(libc::SIGCONT);
        }
    }

    /// Starts the server again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs `redis-cli` against this server and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let bin = require_binary("redis-cli", &[], "redis-tools");
        let out = Command::new(bin)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn redis_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// uid and gid of the `postgres` user (from /etc/passwd).
fn postgres_ids() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == "postgres").then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
        .and_then(|(u, g)| Some((u?, g?)))
        .expect("no `postgres` user: install the apt package `postgresql`")
}

/// A PostgreSQL server on 127.0.0.1 with its own port and data directory, run as the
/// `postgres` user (initdb and postgres refuse to run as root). The processes are started
/// with that uid directly (no `runuser` in between), so the guard signals postgres itself.
pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    guard: Option<ChildGuard>,
}

impl Postgres {
    pub fn start() -> Self {
        use std::os::unix::process::CommandExt;
        let initdb = require_binary("initdb", &[PG_BIN_DIR], "postgresql");
        let postgres = require_binary("postgres", &[PG_BIN_DIR], "postgresql");
        let (uid, gid) = postgres_ids();
        let dir = tempfile::Builder::new()
            .prefix("app-pg-")
            .tempdir_in("/tmp")
            .expect("temp dir for postgres");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("create postgres data dir");
        for p in [dir.path(), data.as_path()] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown the postgres temp dir");
        }

        let out = Command::new(&initdb)
            .args([
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .current_dir(dir.path())
            .uid(uid)
            .gid(gid)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let port = free_port();
        let log_path = dir.path().join("postgres.log");
        let log = std::fs::File::create(&log_path).expect("postgres log file");
        let child = Command::new(&postgres)
            .args(["-D", &data.display().to_string(), "-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args([
                "-c",
                &format!("unix_socket_directories={}", dir.path().display()),
            ])
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args(["-c", "max_connections=200"])
            .current_dir(dir.path())
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        // SIGINT: a fast shutdown that also ends every backend process.
        let mut guard = ChildGuard::new("postgres", child).with_stop_signal(libc::SIGINT);
        let pg_isready = require_binary("pg_isready", &[PG_BIN_DIR], "postgresql-client");
        let up = wait_until(START_TIMEOUT, Duration::from_millis(100), || {
            Command::new(&pg_isready)
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                    "-q",
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        });
        if !up {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            guard.stop();
            panic!("postgres did not become ready on port {port}; log:\n{log}");
        }
        Self {
            port,
            dir,
            guard: Some(guard),
        }
    }

    /// URL of a database on this server (see [`Postgres::create_database`]).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let psql = require_binary("psql", &[PG_BIN_DIR], "postgresql-client");
        let out = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args([
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &format!("CREATE DATABASE \"{name}\""),
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "CREATE DATABASE {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(name)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.stop();
        }
    }
}

/// Queue settings for callback tests: short blocks and backoffs, three attempts, so a
/// refused or failing callback becomes a dead letter quickly.
pub fn fast_callback_queue() -> ::app::queue::QueueSettings {
    ::app::queue::QueueSettings {
        block_ms: 200,
        mover_interval_ms: 20,
        backoff_base_ms: 50,
        backoff_max_ms: 200,
        max_attempts: 3,
        ..Default::default()
    }
}
