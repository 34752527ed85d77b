//! The servers of `app-bench`: `app serve` processes (the shipped binary, on the allocator
//! a row names) and the seed's Gin service, each on a free loopback port with its output
//! (request log included) in a file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use app::alloc::Allocator;
use app::config::Config;
use app_bench::procs::{self, Server};

/// Which cache levels an instance has, so every request takes the path its row names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Levels {
    /// L1 and L2 (and the Bloom filter): the served configuration.
    Full,
    /// L2 only (`cache.l1_enabled = false`): every read is one Redis GET.
    L2Only,
    /// No cache, no Bloom filter: every read is one database read.
    DbOnly,
}

impl Levels {
    pub const ALL: [Levels; 3] = [Levels::Full, Levels::L2Only, Levels::DbOnly];

    fn name(self) -> &'static str {
        match self {
            Levels::Full => "full",
            Levels::L2Only => "l2only",
            Levels::DbOnly => "dbonly",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Levels::Full => "L1+L2",
            Levels::L2Only => "L2 only",
            Levels::DbOnly => "no cache",
        }
    }
}

/// Where every server of a run finds its shared parts.
pub struct Shared<'a> {
    pub dir: &'a Path,
    pub app_bin: &'a Path,
    pub db_url: &'a str,
    pub redis_url: &'a str,
    pub cpus: Option<&'a str>,
    /// `APP_LOG` of the app servers.
    pub log: &'a str,
}

fn config(s: &Shared, listen: SocketAddr, levels: Levels) -> Config {
    let mut c = Config {
        listen,
        ..Config::default()
    };
    c.database.url = s.db_url.to_string();
    c.redis.url = s.redis_url.to_string();
    c.http.rate_limit.enabled = false;
    let (l1, l2) = match levels {
        Levels::Full => (true, true),
        Levels::L2Only => (false, true),
        Levels::DbOnly => (false, false),
    };
    c.cache.l1_enabled = l1;
    c.cache.l2_enabled = l2;
    c.cache.bloom_enabled = l1 || l2;
    // Long TTLs: a measured entry must not expire during a row.
    c.cache.l1_ttl_ms = 3_600_000;
    c.cache.l2_ttl_ms = 3_600_000;
    c.shutdown.drain_delay_ms = 0;
    // Only the HTTP paths are measured: no queue workers polling Redis beside them.
    c.queue.workers_in_serve = false;
    c
}

/// Starts server `name` on a free loopback port, answering `GET /ping`, its output in
/// `log`: `cmd` builds its command for an address. A probed free port can be taken before
/// the server binds it, so three ports are tried.
fn spawn_on_free_port(
    name: &str,
    log: PathBuf,
    mut cmd: impl FnMut(SocketAddr) -> anyhow::Result<std::process::Command>,
) -> anyhow::Result<Server> {
    let mut last = None;
    for _ in 0..3 {
        let addr = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
        match Server::spawn(name, cmd(addr)?, addr, log.clone(), "/ping") {
            Ok(srv) => return Ok(srv),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{name} did not start")))
}

/// Starts `app serve` with `levels` on `allocator`; its log (one line per request, as in
/// production) goes to a file in the bench's directory.
pub fn start_app(s: &Shared, levels: Levels, allocator: Allocator) -> anyhow::Result<Server> {
    let name = format!("app-{}-{}", levels.name(), allocator.as_str());
    let log = s.dir.join(format!("{name}.log"));
    spawn_on_free_port(&name, log, |addr| {
        let path = s.dir.join(format!("{name}.toml"));
        std::fs::write(&path, toml::to_string(&config(s, addr, levels))?)
            .with_context(|| format!("writing {}", path.display()))?;
        let mut cmd = procs::pinned(s.app_bin, s.cpus);
        cmd.arg("serve").arg("--config").arg(&path);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("APP_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("APP_ALLOCATOR", allocator.as_str())
            .env("APP_LOG", s.log);
        Ok(cmd)
    })
}

/// Starts the seed's Gin service (`gin.Default()`: request log to its output file, panic
/// recovery; `GIN_MODE=release` as in production) reading the app's L2 entries.
pub fn start_gin(s: &Shared, bin: &Path, redis_port: u16) -> anyhow::Result<Server> {
    spawn_on_free_port("gin", s.dir.join("gin.log"), |addr| {
        let mut cmd = procs::pinned(bin, s.cpus);
        cmd.arg("-listen")
            .arg(addr.to_string())
            .arg("-redis")
            .arg(format!("127.0.0.1:{redis_port}"))
            .arg("-key-prefix")
            .arg(app::config::Config::default().cache.key_prefix)
            .env("GIN_MODE", "release");
        Ok(cmd)
    })
}

/// Creates `n` users through `POST /users`; their ids, which must be contiguous (the wrk
/// script draws from the range).
pub fn create_users(addr: SocketAddr, n: u32) -> anyhow::Result<(i64, i64)> {
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for i in 0..n {
        let body = format!(r#"{{"name":"bench{i}","email":"bench{i}@example.org"}}"#);
        let (status, answer) = procs::http(addr, "POST", "/users", Some(&body))?;
        if status != 201 {
            bail!("POST /users answered {status}: {answer}");
        }
        let v: serde_json::Value = serde_json::from_str(&answer)
            .with_context(|| format!("POST /users answered {answer}"))?;
        let id = v["id"].as_i64().context("POST /users answered no id")?;
        first = first.min(id);
        last = last.max(id);
    }
    if last - first + 1 != i64::from(n) {
        bail!("user ids are not contiguous ({first}..={last}); use a fresh database");
    }
    Ok((first, last))
}

/// Reads every user once through `addr` (fills its L1 and the shared L2).
pub fn warm(addr: SocketAddr, ids: (i64, i64)) -> anyhow::Result<()> {
    for id in ids.0..=ids.1 {
        let (status, body) = procs::http(addr, "GET", &format!("/users/{id}"), None)?;
        if status != 200 {
            bail!("GET /users/{id} on {addr} answered {status}: {body}");
        }
    }
    Ok(())
}

/// The bench's working directory: SQLite file, configs, server logs, wrk scripts.
pub fn work_dir() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::Builder::new().prefix("app-bench-").tempdir()?;
    let path = dir.path().to_path_buf();
    Ok((dir, path))
}

/// Starts the `axum_ping` row's server: `axum-floor`, built next to this bench.
pub fn start_axum_floor(s: &Shared, bin: &Path) -> anyhow::Result<Server> {
    spawn_on_free_port("axum-floor", s.dir.join("axum-floor.log"), |addr| {
        let mut cmd = procs::pinned(bin, s.cpus);
        cmd.arg("--listen").arg(addr.to_string());
        Ok(cmd)
    })
}

/// The `nginx_ping` row's configuration: one worker per core (as our runtime has one worker
/// thread per core), the same body, and an access line per request buffered as our log is
/// (64 KiB, flushed every 100 ms; `app/src/logs.rs`).
fn nginx_conf(dir: &Path, addr: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes auto;
daemon off;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log {d}/nginx-access.log combined buffer=64k flush=100ms;
  client_body_temp_path {d}/nginx-body;
  proxy_temp_path {d}/nginx-proxy;
  fastcgi_temp_path {d}/nginx-fastcgi;
  uwsgi_temp_path {d}/nginx-uwsgi;
  scgi_temp_path {d}/nginx-scgi;
  keepalive_requests 1000000;
  server {{
    listen {addr};
    location = /ping {{ default_type application/json; return 200 '{{"message":"pong"}}'; }}
  }}
}}
"#
    )
}

/// Starts the `nginx_ping` row's nginx (the apt package the lab installs).
pub fn start_nginx(s: &Shared) -> anyhow::Result<Server> {
    procs::need("nginx", "nginx")?;
    spawn_on_free_port("nginx", s.dir.join("nginx.log"), |addr| {
        let conf = s.dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(s.dir, addr))
            .with_context(|| format!("writing {}", conf.display()))?;
        let mut cmd = procs::pinned(Path::new("nginx"), s.cpus);
        cmd.arg("-c").arg(&conf).arg("-p").arg(s.dir);
        cmd.arg("-e").arg(s.dir.join("nginx-error.log"));
        Ok(cmd)
    })
}
