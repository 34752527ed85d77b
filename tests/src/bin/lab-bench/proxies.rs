//! The user-space L4 proxies compared with the XDP balancer: nginx `stream` and HAProxy in TCP
//! mode, both on the first balancer's namespace on its own address, each with a config file
//! of its own in the lab directory, killed (whole process group) when dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tests::{Host, Process};

/// Debian's dynamic stream module (package libnginx-mod-stream).
pub const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// Fails, naming the package, when a program or module the comparison needs is missing.
pub fn check_prerequisites() -> Result<()> {
    let needs = [
        ("/usr/bin/wrk", "wrk"),
        ("/usr/sbin/nginx", "nginx"),
        (NGINX_STREAM_MODULE, "libnginx-mod-stream"),
        ("/usr/sbin/haproxy", "haproxy"),
    ];
    let missing: Vec<String> = needs
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(path, pkg)| format!("{path} (apt-get install {pkg})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing: {} — `cargo xtask bench lab` installs them",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Where a proxy listens and what it forwards to.
#[derive(Debug, Clone)]
pub struct ProxySpec {
    pub listen: SocketAddr,
    pub backends: Vec<SocketAddr>,
    /// Also proxy UDP datagrams arriving on `listen`'s address and port (nginx only).
    pub udp_backends: Vec<SocketAddr>,
}

/// nginx as a layer-4 stream proxy: one worker per core, SO_REUSEPORT listeners (one accept
/// queue per worker), least_conn for TCP, plain round robin for UDP, no access log.
pub fn nginx_config(spec: &ProxySpec, dir: &Path) -> String {
    let servers = |list: &[SocketAddr]| {
        list.iter()
            .map(|b| format!("        server {b};\n"))
            .collect::<String>()
    };
    let udp = if spec.udp_backends.is_empty() {
        String::new()
    } else {
        format!(
            r#"
    upstream udp_backends {{
{udp_servers}    }}
    server {{
        # No response is expected from the sinks: a session per client address lives until
        # proxy_timeout, so datagrams of one flow reuse one upstream socket.
        listen {listen} udp reuseport;
        proxy_pass udp_backends;
        proxy_timeout 5s;
    }}
"#,
            udp_servers = servers(&spec.udp_backends),
            listen = spec.listen,
        )
    };
    format!(
        r#"# Written by lab-bench: nginx as an L4 (stream) proxy in front of the lab's backends.
load_module {NGINX_STREAM_MODULE};
worker_processes auto;
worker_rlimit_nofile 16384;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;

events {{
    worker_connections 8192;
    use epoll;
}}

stream {{
    upstream http_backends {{
        least_conn;
{tcp_servers}    }}
    server {{
        listen {listen} reuseport backlog=4096;
        proxy_pass http_backends;
        proxy_connect_timeout 2s;
        proxy_timeout 30s;
    }}
{udp}}}
"#,
        dir = dir.display(),
        tcp_servers = servers(&spec.backends),
        listen = spec.listen,
    )
}

/// HAProxy 2.6 in TCP mode: one thread per core, leastconn, no health checks (nginx's open
/// source stream module has none either), no logging.
pub fn haproxy_config(spec: &ProxySpec, dir: &Path, threads: usize) -> String {
    let servers: String = spec
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("    server be{} {b}\n", i + 1))
        .collect();
    format!(
        r#"# Written by lab-bench: HAProxy in TCP mode in front of the lab's backends.
global
    nbthread {threads}
    maxconn 8000
    pidfile {dir}/haproxy.pid

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend bench
    bind {listen}
    default_backend lab

backend lab
    balance leastconn
{servers}"#,
        dir = dir.display(),
        listen = spec.listen,
    )
}

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Starts nginx on `host` and waits (bounded) until `client` can connect to it.
pub fn start_nginx(host: &Host, client: &Host, spec: &ProxySpec, dir: &Path) -> Result<Process> {
    let conf = write(dir, "nginx.conf", &nginx_config(spec, dir))?;
    let conf_s = conf.display().to_string();
    let err_log = dir.join("nginx-error.log").display().to_string();
    let prefix = dir.display().to_string();
    let test = host.output([
        "nginx", "-t", "-q", "-p", &prefix, "-e", &err_log, "-c", &conf_s,
    ])?;
    if !test.status.success() {
        bail!(
            "nginx rejects {conf_s}: {}",
            String::from_utf8_lossy(&test.stderr).trim()
        );
    }
    let mut p = host.spawn(
        "nginx",
        ["nginx", "-p", &prefix, "-e", &err_log, "-c", &conf_s],
    )?;
    ready(&mut p, client, spec.listen)?;
    Ok(p)
}

/// Starts HAProxy on `host` and waits (bounded) until `client` can connect to it.
pub fn start_haproxy(
    host: &Host,
    client: &Host,
    spec: &ProxySpec,
    dir: &Path,
    threads: usize,
) -> Result<Process> {
    let conf = write(dir, "haproxy.cfg", &haproxy_config(spec, dir, threads))?;
    let conf_s = conf.display().to_string();
    let test = host.output(["haproxy", "-c", "-q", "-f", &conf_s])?;
    if !test.status.success() {
        bail!(
            "haproxy rejects {conf_s}: {}{}",
            String::from_utf8_lossy(&test.stdout).trim(),
            String::from_utf8_lossy(&test.stderr).trim()
        );
    }
    // -db: stay in the foreground, so the Process owns it.
    let mut p = host.spawn("haproxy", ["haproxy", "-db", "-f", &conf_s])?;
    ready(&mut p, client, spec.listen)?;
    Ok(p)
}

fn ready(p: &mut Process, client: &Host, listen: SocketAddr) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if !p.is_running() {
            bail!("`{}` exited at start; log:\n{}", p.name(), p.log());
        }
        if client.wait_tcp(listen, Duration::from_secs(1)).is_ok() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "`{}` does not accept connections on {listen}; log:\n{}",
                p.name(),
                p.log()
            );
        }
    }
}

/// `ip:port` list helper.
pub fn addrs(ips: &[Ipv4Addr], port: u16) -> Vec<SocketAddr> {
    ips.iter().map(|ip| SocketAddr::from((*ip, port))).collect()
}

#[cfg(test)]
mod unit {
    use super::*;

    fn spec() -> ProxySpec {
        let ips = [Ipv4Addr::new(10, 0, 0, 11), Ipv4Addr::new(10, 0, 0, 12)];
        ProxySpec {
            listen: "10.0.0.2:8080".parse().unwrap(),
            backends: addrs(&ips, 80),
            udp_backends: addrs(&ips, 80),
        }
    }

    #[test]
    fn nginx_config_lists_every_backend_once_per_protocol() {
        let c = nginx_config(&spec(), Path::new("/tmp/x"));
        assert_eq!(c.matches("server 10.0.0.11:80;").count(), 2);
        assert!(c.contains("listen 10.0.0.2:8080 reuseport"));
        assert!(c.contains("listen 10.0.0.2:8080 udp reuseport"));
        assert!(c.contains("least_conn;"));
        assert!(c.contains(NGINX_STREAM_MODULE));
        let mut tcp_only = spec();
        tcp_only.udp_backends.clear();
        assert!(!nginx_config(&tcp_only, Path::new("/tmp/x")).contains("udp"));
    }

    #[test]
    fn haproxy_config_names_threads_and_servers() {
        let c = haproxy_config(&spec(), Path::new("/tmp/x"), 2);
        assert!(c.contains("nbthread 2"));
        assert!(c.contains("server be2 10.0.0.12:80"));
        assert!(c.contains("bind 10.0.0.2:8080"));
    }
}
