//! One benchmark run: the lab, the proxies, the UDP VIP and sinks, then the rounds.
//!
//! Teardown is by ownership: [`Bench`] holds nginx, HAProxy (process groups killed on drop)
//! and the UDP sinks (threads stopped and joined on drop); it is dropped before the
//! [`System`], whose drop kills every daemon in the lab and deletes the namespaces. An error
//! or a signal (checked between runs) unwinds through the same drops.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tests::{Host, Process, Role, System, SystemOptions, exec};

use crate::cpu::{CpuSample, LabCpu};
use crate::proxies::{self, ProxySpec};
use crate::report::{HttpRuns, Results, Setup, UdpRuns, UdpSetup};
use crate::udp::{self, Generator, Sinks};
use crate::wrk::{self, ConnMode, Load};
use crate::{Args, Opt, ecmp, interrupted, progress, secs};

/// Ports of the proxies on the first balancer's own address.
const NGINX_PORT: u16 = 8080;
const HAPROXY_PORT: u16 = 8081;
/// Name of the UDP VIP added at runtime.
const UDP_VIP: &str = "bench-udp";

struct Bench {
    quiet: bool,
    client: Host,
    /// Every backend's address and the VIP's port (the pinned direct baseline's targets).
    backends: Vec<SocketAddr>,
    lab_cpu: LabCpu,
    dir: PathBuf,
    /// Per option: wrk's URL host and the Lua script that spreads threads over targets.
    http: Vec<(Opt, SocketAddr, PathBuf)>,
    /// Per option with UDP: where the generator's flows go.
    udp_targets: Vec<(Opt, Vec<SocketAddr>)>,
    sinks: Option<Sinks>,
    _nginx: Process,
    _haproxy: Process,
}

fn checkpoint() -> Result<()> {
    if interrupted() {
        bail!("interrupted: tearing the lab down");
    }
    Ok(())
}

pub fn run(args: &Args) -> Result<Results> {
    if !args.connections.is_multiple_of(args.threads) || args.connections < args.threads {
        bail!(
            "--connections ({}) must be a multiple of --threads ({})",
            args.connections,
            args.threads
        );
    }
    proxies::check_prerequisites()?;
    let mut opts = SystemOptions::from_build();
    opts.progress = !args.quiet;
    opts.xdp_mode = args.xdp_mode.into();
    opts.segment = args.segment.into();
    let topology = System::topology(&opts).context("reading vagrant/topology.json")?;
    progress(
        args.quiet,
        "starting the lab (vagrant/topology.json as namespaces)",
    );
    let system = System::start(&topology, opts).context("starting the lab")?;
    checkpoint()?;
    let bench = Bench::setup(&system, args)?;
    let results = bench.measure(args);
    drop(bench);
    progress(args.quiet, "tearing the lab down");
    system.teardown().context("tearing the lab down")?;
    results
}

impl Bench {
    fn setup(system: &System, args: &Args) -> Result<Self> {
        let quiet = args.quiet;
        let lab = system.lab();
        let client = lab.host("client")?.clone();
        let lb_name = system
            .balancers()
            .into_iter()
            .next()
            .context("the topology has no balancer")?;
        let lb = lab.host(&lb_name)?.clone();
        let backends: Vec<Host> = lab.hosts_with_role(Role::Backend).cloned().collect();
        if backends.is_empty() {
            bail!("the topology has no backends");
        }
        if !(args.threads as usize).is_multiple_of(backends.len()) {
            progress(
                quiet,
                &format!(
                    "note: --threads {} is not a multiple of {} backends: the direct baseline loads them unevenly",
                    args.threads,
                    backends.len()
                ),
            );
        }
        let vip = lab.topology().vip();
        let port = vip.port();
        let vip_addr = SocketAddr::from((vip.ipv4(), port));
        let ips: Vec<_> = backends.iter().map(Host::ipv4).collect();
        let be_addrs = proxies::addrs(&ips, port);

        // The segment stands for a switch: without this, bridge netfilter (built into this
        // kernel, on by default) takes every bridged frame through the IP hooks, and the paths
        // through a balancer cross the bridge twice.
        if lab.segment_kind() == tests::SegmentKind::Bridge {
            let mut c = exec::netns_command(lab.bridge_ns(), ["sysctl", "-q", "-w"]);
            c.args([
                "net.bridge.bridge-nf-call-iptables=0",
                "net.bridge.bridge-nf-call-ip6tables=0",
                "net.bridge.bridge-nf-call-arptables=0",
            ]);
            if let Err(e) = exec::run(&mut c) {
                progress(quiet, &format!("note: bridge netfilter stays on: {e}"));
            }
        }
        // A new connection per request runs tens of thousands of connections through the
        // client's (and the proxies') ephemeral ports in one run.
        for host in [&client, &lb] {
            host.sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
            host.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
        }

        let dir = lab.dir().join("bench");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let udp = !args.no_udp;
        let nginx_listen = SocketAddr::from((lb.ipv4(), NGINX_PORT));
        let haproxy_listen = SocketAddr::from((lb.ipv4(), HAPROXY_PORT));
        progress(quiet, &format!("nginx stream on {lb_name} {nginx_listen}"));
        let nginx = proxies::start_nginx(
            &lb,
            &client,
            &ProxySpec {
                listen: nginx_listen,
                backends: be_addrs.clone(),
                udp_backends: if udp { be_addrs.clone() } else { Vec::new() },
            },
            &dir,
        )?;
        progress(quiet, &format!("HAProxy tcp on {lb_name} {haproxy_listen}"));
        let haproxy = proxies::start_haproxy(
            &lb,
            &client,
            &ProxySpec {
                listen: haproxy_listen,
                backends: be_addrs.clone(),
                udp_backends: Vec::new(),
            },
            &dir,
            cpus(),
        )?;

        progress(
            quiet,
            &format!(
                "direct baseline: {} on every backend's lo, a multipath route to it in the client",
                ecmp::ANYCAST
            ),
        );
        ecmp::install(&client, &backends)?;
        let pinned_script = wrk::write_script(&dir, "direct_pinned", &be_addrs)?;
        let plain_script = wrk::write_script(&dir, "plain", &[])?;
        let http = vec![
            (
                Opt::Direct,
                SocketAddr::from((ecmp::ANYCAST, port)),
                plain_script.clone(),
            ),
            (Opt::DirectPinned, be_addrs[0], pinned_script),
            (Opt::Xdp, vip_addr, plain_script.clone()),
            (Opt::Nginx, nginx_listen, plain_script.clone()),
            (Opt::Haproxy, haproxy_listen, plain_script),
        ];
        let mut udp_targets = Vec::new();
        let mut sinks = None;
        if udp {
            add_udp_vip(system, vip_addr, &ips, quiet)?;
            progress(quiet, &format!("UDP sinks on port {port} of every backend"));
            sinks = Some(Sinks::start(&backends, port)?);
            udp_targets = vec![
                (Opt::Direct, be_addrs.clone()),
                (Opt::Xdp, vec![vip_addr]),
                (Opt::Nginx, vec![nginx_listen]),
            ];
        }
        let bench = Bench {
            quiet,
            client,
            backends: be_addrs,
            lab_cpu: LabCpu::new(lab.namespaces())?,
            dir,
            http,
            udp_targets,
            sinks,
            _nginx: nginx,
            _haproxy: haproxy,
        };
        bench.smoke(&args.path)?;
        Ok(bench)
    }

    /// One request through every HTTP path and a few datagrams through every UDP path, so a
    /// broken path fails here with a clear message rather than as a row of zeros.
    fn smoke(&self, path: &str) -> Result<()> {
        for (opt, target, _) in &self.http {
            let targets: Vec<SocketAddr> = if *opt == Opt::DirectPinned {
                self.backends.clone()
            } else {
                vec![*target]
            };
            for t in targets {
                let status = http_get(&self.client, t, path)
                    .with_context(|| format!("{}: GET {path} from the client to {t}", opt.key()))?;
                if !status.starts_with("HTTP/1.1 200") {
                    bail!(
                        "{}: GET {path} via {t} answered `{status}`; logs in {}",
                        opt.key(),
                        self.dir.display()
                    );
                }
            }
        }
        if let Some(sinks) = &self.sinks {
            let probe = Generator {
                flows: 12,
                payload: 18,
                duration: Duration::from_secs(2),
                max_packets: 1200,
            };
            for (opt, targets) in &self.udp_targets {
                let r = udp::run(&self.client, &self.lab_cpu, targets, sinks, &probe)?;
                if r.received == 0 {
                    bail!(
                        "{}: none of {} UDP datagrams to {targets:?} reached the backends' sinks",
                        opt.key(),
                        r.sent
                    );
                }
            }
        }
        progress(
            self.quiet,
            "every path answers: HTTP 200 and UDP datagrams received",
        );
        Ok(())
    }

    fn measure(&self, args: &Args) -> Result<Results> {
        let load = Load {
            threads: args.threads,
            connections: args.connections,
            duration: secs(args.duration),
            path: args.path.clone(),
            timeout: secs(args.request_timeout),
        };
        let generator = Generator {
            flows: args.udp_flows as usize,
            payload: args.udp_payload as usize,
            duration: secs(args.udp_duration),
            max_packets: args.udp_max_packets,
        };
        let rounds = args.rounds as usize;
        if args.warmup > 0 {
            for (opt, host, script) in &self.http {
                checkpoint()?;
                progress(
                    self.quiet,
                    &format!("warm-up {} ({} s)", opt.key(), args.warmup),
                );
                wrk::run(
                    &self.client,
                    &self.lab_cpu,
                    *host,
                    script,
                    &load,
                    ConnMode::KeepAlive,
                    secs(args.warmup),
                )?;
            }
        }
        let mut http: Vec<HttpRuns> = Vec::new();
        for (opt, _, _) in &self.http {
            for mode in ConnMode::ALL {
                http.push(HttpRuns {
                    option: *opt,
                    mode,
                    runs: Vec::new(),
                });
            }
        }
        let mut udp: Vec<UdpRuns> = Opt::ALL
            .iter()
            .filter(|o| self.sinks.is_some() && o.in_udp_table())
            .map(|o| UdpRuns {
                option: *o,
                runs: Vec::new(),
            })
            .collect();
        let mut background = Vec::new();
        let started = Instant::now();
        for round in 0..rounds {
            checkpoint()?;
            let before = CpuSample::now()?;
            std::thread::sleep(Duration::from_secs(1));
            let bg = CpuSample::now()?.busy_share_since(&before) * 100.0;
            background.push(bg);
            progress(
                self.quiet,
                &format!(
                    "round {}/{rounds} (background load {bg:.0}% busy)",
                    round + 1
                ),
            );
            // Rotate the order so no option always runs first (or right after another one).
            let n = self.http.len();
            for i in 0..n {
                let (opt, host, script) = &self.http[(i + round) % n];
                for mode in ConnMode::ALL {
                    checkpoint()?;
                    let r = wrk::run(
                        &self.client,
                        &self.lab_cpu,
                        *host,
                        script,
                        &load,
                        mode,
                        load.duration,
                    )
                    .with_context(|| format!("wrk through {} ({})", opt.key(), mode.key()))?;
                    progress(
                        self.quiet,
                        &format!(
                            "  {:<8} {:<10} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  CPU {:>6.1} µs/req (lab {:>6.1})  {} errors",
                            opt.key(),
                            mode.key(),
                            r.rps(),
                            r.p50_us / 1000.0,
                            r.p99_us / 1000.0,
                            r.cpu_us_per_request(),
                            r.lab_us_per_request(),
                            r.errors()
                        ),
                    );
                    if let Some(h) = http.iter_mut().find(|h| h.option == *opt && h.mode == mode) {
                        h.runs.push(r);
                    }
                }
            }
            if let Some(sinks) = &self.sinks {
                let n = self.udp_targets.len();
                for i in 0..n {
                    checkpoint()?;
                    let (opt, targets) = &self.udp_targets[(i + round) % n];
                    let r = udp::run(&self.client, &self.lab_cpu, targets, sinks, &generator)
                        .with_context(|| format!("UDP through {}", opt.key()))?;
                    progress(
                        self.quiet,
                        &format!(
                            "  {:<8} udp        {:>8.0} pkt/s sent  {:>8.0} pkt/s forwarded  ({:.1}% lost)",
                            opt.key(),
                            r.sent_pps(),
                            r.received_pps(),
                            r.loss() * 100.0
                        ),
                    );
                    if let Some(u) = udp.iter_mut().find(|u| u.option == *opt) {
                        u.runs.push(r);
                    }
                }
            }
        }
        progress(
            self.quiet,
            &format!(
                "{rounds} rounds in {:.0} s",
                started.elapsed().as_secs_f64()
            ),
        );
        Ok(Results {
            setup: Setup {
                rounds,
                duration_s: args.duration,
                threads: args.threads,
                connections: args.connections,
                path: args.path.clone(),
                udp: self.sinks.as_ref().map(|_| UdpSetup {
                    duration_s: args.udp_duration,
                    flows: generator.flows,
                    payload_bytes: generator.payload,
                }),
                cpus: cpus(),
                xdp_mode: tests::XdpMode::from(args.xdp_mode).as_str(),
                segment: tests::SegmentKind::from(args.segment).as_str(),
            },
            background_busy_percent: background,
            http,
            udp,
        })
    }
}

/// Adds the UDP VIP (the TCP VIP's address and port) with every backend on each balancer, and
/// waits (bounded) until the first one sees them healthy. Its health checks inherit the TCP
/// VIP's (HTTP GET /healthz on the VIP's port), which `app` answers on every backend: that is
/// why the UDP VIP shares the port rather than taking one of its own.
fn add_udp_vip(
    system: &System,
    vip: SocketAddr,
    backends: &[std::net::Ipv4Addr],
    quiet: bool,
) -> Result<()> {
    for lb in system.balancers() {
        progress(
            quiet,
            &format!("UDP VIP {UDP_VIP} {vip}/udp on {lb} (lbctl vip add, backend add)"),
        );
        let mut add = system.lbctl(&lb);
        add.args(["vip", "add", UDP_VIP, "--address"])
            .arg(vip.ip().to_string())
            .args(["--port", &vip.port().to_string(), "--protocol", "udp"]);
        exec::run(&mut add)?;
        for b in backends {
            let mut c = system.lbctl(&lb);
            c.args(["backend", "add", UDP_VIP, &b.to_string()]);
            exec::run(&mut c)?;
        }
    }
    let lb = system
        .balancers()
        .into_iter()
        .next()
        .context("no balancer")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = system.lbctl(&lb);
        c.args(["--json", "health"]);
        let out = exec::run(&mut c)?;
        let json: serde_json::Value =
            serde_json::from_str(&out).context("parsing `lbctl --json health`")?;
        let healthy = json
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|b| b["vip"] == UDP_VIP && b["health"] == "healthy")
                    .count()
            })
            .unwrap_or(0);
        if healthy >= backends.len() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "UDP VIP {UDP_VIP}: {healthy} of {} backends healthy after 30 s",
                backends.len()
            );
        }
        checkpoint()?;
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One HTTP/1.1 request on a new connection from `client`; returns the status line.
fn http_get(client: &Host, to: SocketAddr, path: &str) -> Result<String> {
    let answer = client.in_netns(|| -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = Vec::new();
        s.take(64 * 1024).read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    })??;
    Ok(answer.lines().next().unwrap_or("").to_string())
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
