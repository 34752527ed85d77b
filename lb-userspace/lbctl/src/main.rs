//! `lbctl`: the command-line tool of the XDP load balancer. It drives a running `lbd` through
//! its JSON API (docs/api.md) and replays captures through the XDP program offline.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use lb_api::types::{AdminState, Algorithm, Mode, NewBackend, NewVip, Protocol};
use lb_api::{Client, ClientError, DEFAULT_SOCKET, Endpoint, Fetched};

mod bgp_view;
mod diag;
mod format;
mod rates;
mod table;
mod vrrp_view;

const AFTER_HELP: &str = "\
Environment:
  LBCTL_SOCKET      same as --socket
  LBCTL_URL         same as --url
  LBCTL_TOKEN_FILE  same as --token-file
  LBCTL_TOKEN       the bearer token itself, used with --url when no token file is given
  LBCTL_CACERT      same as --cacert
  LBCTL_CERT        same as --cert
  LBCTL_KEY         same as --key

Errors are printed on one line to stderr and the exit status is 1 (2 for bad usage).";

#[derive(Parser)]
#[command(
    name = "lbctl",
    version,
    about = "Drive and debug the XDP load balancer",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    /// Print lbd's JSON answer (pretty) instead of a table; `stats --watch` prints one JSON
    /// object of rates per line; `replay` prints one JSON object per packet; `capture` prints
    /// lbd's events, one JSON object per line.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct ConnArgs {
    /// lbd's unix socket.
    #[arg(long, global = true, env = "LBCTL_SOCKET", value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Talk to lbd over TCP at http://HOST:PORT or https://HOST:PORT instead of the unix
    /// socket (needs a token or a client certificate). An explicit --socket wins over
    /// LBCTL_URL from the environment.
    #[arg(long, global = true, env = "LBCTL_URL", value_name = "URL")]
    url: Option<String>,
    /// With https://: the CA certificate (PEM) that signed lbd's certificate.
    #[arg(long, global = true, env = "LBCTL_CACERT", value_name = "PATH")]
    cacert: Option<PathBuf>,
    /// With https://: this client's certificate (PEM) for mutual TLS (with --key).
    #[arg(
        long,
        global = true,
        env = "LBCTL_CERT",
        value_name = "PATH",
        requires = "key"
    )]
    cert: Option<PathBuf>,
    /// With https://: the private key (PEM) of --cert.
    #[arg(
        long,
        global = true,
        env = "LBCTL_KEY",
        value_name = "PATH",
        requires = "cert"
    )]
    key: Option<PathBuf>,
    /// File whose first line is the bearer token for --url (lbd's `[api] token_file`).
    #[arg(long, global = true, env = "LBCTL_TOKEN_FILE", value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Seconds to wait for each answer of lbd.
    #[arg(long, global = true, value_name = "SECS", default_value = "10", value_parser = seconds)]
    timeout: Duration,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show lbd's version, uptime, interfaces and VIP/backend counts.
    Status,
    /// List, add and delete VIPs (the SOURCE column says who owns each: config or api).
    Vip {
        #[command(subcommand)]
        cmd: VipCmd,
    },
    /// List, add, delete, re-weight, drain and undrain the backends of a VIP (the SOURCE
    /// column says who owns each: config, api or registered).
    Backend {
        #[command(subcommand)]
        cmd: BackendCmd,
    },
    /// Packet, byte and connection counters per VIP and backend (totals, or live rates with --watch).
    Stats {
        /// Redraw a table of per-second rates until Ctrl-C (or --count refreshes).
        #[arg(long)]
        watch: bool,
        /// Seconds between two samples with --watch.
        #[arg(long, value_name = "SECS", default_value = "1", value_parser = seconds)]
        interval: Duration,
        /// Stop after this many refreshes with --watch (the first comes one interval after start).
        #[arg(long, value_name = "N", requires = "watch")]
        count: Option<u64>,
    },
    /// Health, admin state and last check of every backend of every VIP.
    Health,
    /// VRRP state, priority, current master, timers and counters of each virtual router (IPv4,
    /// IPv6); needs `[vrrp]` in lbd's config.
    Vrrp,
    /// BGP sessions of this balancer's speaker and the VIP addresses it announces (or why
    /// not); needs `[bgp]` in lbd's config.
    Bgp,
    /// Re-read lbd.toml (as SIGHUP does): print what changes, and apply it without dropping
    /// a flow of the VIPs it keeps. A bad file is refused with FILE:LINE: field: reason and
    /// lbd goes on with the config it has (exit status 1).
    ///
    /// The file owns its VIPs and their listed backends; what the API or a backend's own
    /// registration added stays unless --prune is given.
    Reload {
        /// Only show the difference; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also remove the VIPs and backends the API or registrations added that the file
        /// does not list.
        #[arg(long)]
        prune: bool,
    },
    /// Record what the XDP program sees and does, inside the data plane (lbd runs the capture):
    /// one line per packet, and with -w a pcapng file whose packet comments carry the verdict
    /// (action, reason, VIP, backend). Stops after --count packets or --duration seconds, or
    /// at Ctrl-C. Filters combine (all must match).
    Capture {
        /// Only packets of this VIP.
        #[arg(long, value_name = "NAME")]
        vip: Option<String>,
        /// Only packets for this backend (of --vip, or of any VIP).
        #[arg(long, value_name = "ADDR")]
        backend: Option<IpAddr>,
        /// Only packets whose source is in this prefix (10.0.0.0/8, 2001:db8::/32, an address).
        #[arg(long, value_name = "PREFIX")]
        client: Option<String>,
        /// Only packets counted under this reason (repeatable): tx_forward, drop_no_backend,
        /// pass_not_vip... (the names of `lbctl stats`).
        #[arg(long = "reason", value_name = "NAME")]
        reasons: Vec<String>,
        /// Only dropped packets (every drop_* reason).
        #[arg(long)]
        drops: bool,
        /// Keep one matching packet in N.
        #[arg(long, value_name = "N")]
        sample: Option<u32>,
        /// Bytes kept of each packet (1-2048; default 256).
        #[arg(long, value_name = "BYTES")]
        snap_len: Option<u32>,
        /// Stop after this many packets (default 1000, at most 1000000).
        #[arg(long, short = 'c', value_name = "N")]
        count: Option<u64>,
        /// Stop after this many seconds (default 30, at most 3600).
        #[arg(long, value_name = "SECS", value_parser = seconds)]
        duration: Option<Duration>,
        /// Also record each transmitted packet as it left (rewritten or encapsulated).
        #[arg(long)]
        output: bool,
        /// Write the packets to this pcapng file (Wireshark shows each verdict as the
        /// packet's comment; `tshark -r FILE -T fields -e frame.comment` prints them).
        #[arg(long, short = 'w', value_name = "FILE")]
        write: Option<PathBuf>,
        /// No line per packet (only the summary, on stderr).
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Where a new flow from a client goes, and why: the connection-table entry, the
    /// algorithm's table slot (or per-CPU cursor, or least-connections candidates) and the
    /// backend's state and weight, read from the live maps by lbd.
    Trace {
        /// The VIP.
        #[arg(long, value_name = "NAME")]
        vip: String,
        /// The client's address and source port (IPv6 as [ADDR]:PORT).
        #[arg(long, value_name = "ADDR:PORT")]
        client: SocketAddr,
        /// tcp or udp (default: the VIP's protocol).
        #[arg(long, value_name = "PROTO")]
        proto: Option<String>,
        /// Destination port (default: the VIP's; required for a VIP of every port).
        #[arg(long, value_name = "PORT")]
        port: Option<u16>,
        /// Trace a later packet of the flow instead of its opening SYN (TCP).
        #[arg(long)]
        established: bool,
    },
    /// Stop lbd (with `[bgp]`: withdraw, drain, then stop). The XDP program keeps forwarding unless --detach is given.
    Shutdown {
        /// Also detach the XDP program and remove its pins, leaving nothing behind.
        #[arg(long)]
        detach: bool,
    },
    /// Run every packet of a pcap through the XDP program with the maps a config describes
    /// (root; nothing is attached to any interface).
    Replay {
        /// Balancer config (TOML) whose VIPs and backends fill the maps. Backends without a
        /// `mac` get 02:00 followed by the last four bytes of their address.
        #[arg(long)]
        config: PathBuf,
        /// Input capture (pcap or pcapng, Ethernet; e.g. a file `lbctl capture -w` wrote).
        #[arg(long)]
        pcap: PathBuf,
        /// Where to write the packets the program transmitted or passed.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The forwarding state in the maps pinned under --pin-dir (root; no lbd involved): each
    /// VIP's id, algorithm, mode and a digest of its active table, every backend slot, and a
    /// digest of it all. Balancers with the same VIPs and backends show the same digest,
    /// whatever order the backends came in.
    Forwarding {
        /// lbd's `[dataplane] pin_dir`.
        #[arg(long, value_name = "DIR")]
        pin_dir: PathBuf,
    },
    /// Write the man pages of lbctl and its commands into DIR (lbctl.1, lbctl-vip.1, ...).
    #[command(hide = true)]
    GenerateMan { dir: PathBuf },
    /// Attach a helper XDP program through a pinned link (root; no lbd involved). XDP_TX on a
    /// veth is dropped unless the peer end has an XDP program: `pass` on the bridge-side port
    /// fixes that; `decap` strips IPIP addressed to --decap-address on a backend.
    Xdp {
        #[command(subcommand)]
        cmd: XdpCmd,
    },
}

#[derive(Subcommand)]
enum XdpCmd {
    /// Load the program and pin its link under --pin-dir, so it stays attached after lbctl exits.
    Attach {
        #[arg(long, value_enum)]
        program: XdpProgram,
        /// Interface to attach to (in the current network namespace).
        #[arg(long, value_name = "IFACE")]
        iface: String,
        /// bpffs directory for the pinned link (mounted if it is not a bpffs yet).
        #[arg(long, value_name = "DIR")]
        pin_dir: PathBuf,
        /// Outer destination the decap program accepts (repeatable; required by `decap`).
        #[arg(long, value_name = "IP")]
        decap_address: Vec<IpAddr>,
    },
    /// Detach every link pinned under --pin-dir and remove the pins.
    Detach {
        #[arg(long, value_name = "DIR")]
        pin_dir: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum XdpProgram {
    /// Passes every packet (makes XDP_TX from the peer veth work).
    Pass,
    /// Decapsulates IPIP addressed to --decap-address, passes the rest.
    Decap,
}

#[derive(Subcommand)]
enum VipCmd {
    /// List every VIP with its settings and backend counts.
    List,
    /// Add a VIP (options left out take lbd's defaults).
    Add {
        /// Unique name of the VIP.
        name: String,
        /// Virtual IP address (IPv4 or IPv6).
        #[arg(long)]
        address: IpAddr,
        /// Port clients connect to.
        #[arg(long)]
        port: Option<u16>,
        /// tcp or udp.
        #[arg(long)]
        protocol: Option<Protocol>,
        /// maglev, ip-hash, weighted-round-robin (wrr) or least-connections (lc).
        #[arg(long)]
        algorithm: Option<Algorithm>,
        /// Forwarding mode: dsr-l2 or ipip.
        #[arg(long)]
        mode: Option<Mode>,
        /// Size of the lookup table (a prime for maglev).
        #[arg(long, value_name = "N")]
        table_size: Option<u32>,
    },
    /// Delete a VIP and its backends.
    #[command(visible_alias = "delete")]
    Del {
        /// Name of the VIP.
        name: String,
    },
}

#[derive(Subcommand)]
enum BackendCmd {
    /// List the backends of a VIP: weights, health, admin state, MAC, last check.
    List {
        /// Name of the VIP.
        vip: String,
    },
    /// Add a backend, or re-register it (a heartbeat: keeps an operator's drain and weight).
    ///
    /// This is the call a backend's own registration repeats every few seconds. Re-registering
    /// an existing backend never undoes `drain` (only `undrain` or `del` does), and a weight set
    /// with `weight` stays until the registrant declares a different weight than it declared
    /// before.
    Add {
        /// Name of the VIP.
        vip: String,
        /// Address of the backend.
        address: IpAddr,
        /// The declared weight. Left out: 100 for a new backend, unchanged for an existing one.
        #[arg(long)]
        weight: Option<u32>,
    },
    /// Remove a backend from a VIP.
    #[command(visible_alias = "delete")]
    Del {
        /// Name of the VIP.
        vip: String,
        /// Address of the backend.
        address: IpAddr,
    },
    /// Set the configured weight of a backend (kept across its re-registrations).
    ///
    /// The weight stays until the backend declares a different weight than it declared
    /// before (its own config changed), or until it is deleted.
    Weight {
        /// Name of the VIP.
        vip: String,
        /// Address of the backend.
        address: IpAddr,
        /// New weight.
        weight: u32,
    },
    /// Stop sending new flows to a backend; its existing flows go on. Sticks until `undrain`.
    ///
    /// The backend's periodic re-registration does not undo the drain; `undrain` or `del`
    /// does.
    Drain {
        /// Name of the VIP.
        vip: String,
        /// Address of the backend.
        address: IpAddr,
    },
    /// Let a drained backend take new flows again.
    Undrain {
        /// Name of the VIP.
        vip: String,
        /// Address of the backend.
        address: IpAddr,
    },
}

fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        return Err(format!("{s} must be more than 0 and at most 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lbctl: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, matches: &ArgMatches) -> Result<()> {
    let json = cli.json;
    let cmd = match cli.cmd {
        Cmd::Replay { config, pcap, out } => {
            return lb_dataplane::replay::replay_file(
                &lb_config::Config::load(&config)?.replay_setup(),
                &pcap,
                out.as_deref(),
                json,
            );
        }
        Cmd::Xdp { cmd } => return xdp_command(cmd),
        Cmd::Forwarding { pin_dir } => {
            let state = lb_dataplane::forwarding::read_pinned(&pin_dir)
                .with_context(|| format!("reading the maps pinned under {}", pin_dir.display()))?;
            return print(&if json {
                pretty(&serde_json::to_value(&state)?)
            } else {
                format::forwarding(&state)
            });
        }
        Cmd::GenerateMan { dir } => return generate_man(&dir),
        cmd => cmd,
    };
    let client = Client::new(endpoint(&cli.conn, matches)?, cli.conn.timeout);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(api_command(&client, cmd, json))
}

/// One page per command (`lbctl.1`, `lbctl-backend.1`, `lbctl-backend-drain.1`, ...), from
/// the same definitions as `--help`.
fn generate_man(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))
}

fn xdp_command(cmd: XdpCmd) -> Result<()> {
    use lb_dataplane::{Dataplane, LoadOptions, pin};
    match cmd {
        XdpCmd::Attach {
            program,
            iface,
            pin_dir,
            decap_address,
        } => {
            let name = match program {
                XdpProgram::Pass => lb_common::names::PROG_PASS,
                XdpProgram::Decap => lb_common::names::PROG_DECAP,
            };
            let decap = matches!(program, XdpProgram::Decap);
            if decap && decap_address.is_empty() {
                anyhow::bail!("--program decap needs at least one --decap-address");
            }
            let mut dp = Dataplane::load(LoadOptions {
                balancer: false,
                decap,
                pass: !decap,
                conn_table_size: 1024,
                ..LoadOptions::default()
            })
            .context("loading the XDP object")?;
            if decap {
                let mut maps = dp.take_maps()?;
                for addr in &decap_address {
                    maps.add_decap_address(*addr)?;
                }
            }
            pin::prepare(&pin_dir)?;
            // The attach mode is recorded outside the bpffs (which holds no regular files).
            let record = std::env::temp_dir().join("lbctl-xdp");
            let attached =
                dp.attach_pinned(name, &iface, pin::AttachMode::Auto, &pin_dir, &record)?;
            println!(
                "{name} attached to {iface} ({}{}), link pinned under {}",
                attached.mode,
                if attached.adopted { ", replaced" } else { "" },
                pin_dir.display()
            );
            Ok(())
        }
        XdpCmd::Detach { pin_dir } => {
            pin::remove_all(&pin_dir)?;
            println!("detached the links pinned under {}", pin_dir.display());
            Ok(())
        }
    }
}

/// The unix socket unless a URL is given; an explicit `--socket` beats `LBCTL_URL`.
fn endpoint(conn: &ConnArgs, matches: &ArgMatches) -> Result<Endpoint> {
    let from_cli = |id| matches.value_source(id) == Some(ValueSource::CommandLine);
    let url = match &conn.url {
        Some(_) if from_cli("socket") && from_cli("url") => {
            anyhow::bail!("give either --socket or --url, not both")
        }
        Some(_) if from_cli("socket") => None,
        url => url.as_deref(),
    };
    let Some(url) = url else {
        return Ok(Endpoint::Unix(conn.socket.clone()));
    };
    let token = match &conn.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            anyhow::ensure!(
                !token.is_empty(),
                "the token file {} is empty",
                path.display()
            );
            Some(token)
        }
        None => std::env::var("LBCTL_TOKEN").ok(),
    };
    let tls = lb_api::TlsFiles {
        ca: conn.cacert.clone(),
        cert: conn.cert.clone(),
        key: conn.key.clone(),
    };
    Ok(Endpoint::from_url_tls(url, token, Some(&tls))?)
}

async fn api_command(client: &Client, cmd: Cmd, json: bool) -> Result<()> {
    let now = format::now_unix_ms();
    match cmd {
        Cmd::Status => {
            let r = client.status().await?;
            show(json, &r, || format::status(&r.value))
        }
        Cmd::Vip { cmd } => vip_command(client, cmd, json).await,
        Cmd::Backend { cmd } => backend_command(client, cmd, json).await,
        Cmd::Health => {
            let r = client.health().await?;
            show(json, &r, || format::health(&r.value, now))
        }
        Cmd::Vrrp => {
            let r = client.vrrp().await?;
            show(json, &r, || vrrp_view::render(&r.value))
        }
        Cmd::Bgp => {
            let r = client.bgp().await?;
            show(json, &r, || bgp_view::render(&r.value))
        }
        Cmd::Stats { watch: false, .. } => {
            let r = client.stats().await?;
            show(json, &r, || format::stats_totals(&r.value))
        }
        Cmd::Stats {
            watch: true,
            interval,
            count,
        } => watch_stats(client, interval, count, json).await,
        Cmd::Reload { dry_run, prune } => {
            let r = client.reload(dry_run, prune).await?;
            show(json, &r, || format::reload(&r.value))
        }
        Cmd::Shutdown { detach } => {
            let r = client.shutdown(detach).await?;
            if json {
                let raw = if r.raw.is_null() {
                    serde_json::json!({})
                } else {
                    r.raw
                };
                return print(&pretty(&raw));
            }
            print(if detach {
                "lbd is shutting down and detaching the XDP program\n"
            } else {
                "lbd is shutting down (the XDP program keeps forwarding)\n"
            })
        }
        Cmd::Capture {
            vip,
            backend,
            client: source,
            mut reasons,
            drops,
            sample,
            snap_len,
            count,
            duration,
            output,
            write,
            quiet,
        } => {
            if drops {
                reasons.extend(diag::drop_reasons());
            }
            let request = lb_api::diag::CaptureRequest {
                vip,
                backend,
                client: source,
                reasons,
                sample,
                snap_len,
                count,
                duration_s: diag::duration_s(duration),
                output,
            };
            diag::capture(
                client,
                diag::CaptureArgs {
                    request,
                    write,
                    quiet,
                    json,
                },
            )
            .await
        }
        Cmd::Trace {
            vip,
            client: flow,
            proto,
            port,
            established,
        } => diag::trace(client, &vip, flow, proto, port, established, json).await,
        Cmd::Replay { .. } | Cmd::Xdp { .. } | Cmd::GenerateMan { .. } | Cmd::Forwarding { .. } => {
            unreachable!("handled before the API client is made")
        }
    }
}

async fn vip_command(client: &Client, cmd: VipCmd, json: bool) -> Result<()> {
    match cmd {
        VipCmd::List => {
            let r = client.vips().await?;
            show(json, &r, || format::vips(&r.value))
        }
        VipCmd::Add {
            name,
            address,
            port,
            protocol,
            algorithm,
            mode,
            table_size,
        } => {
            let new = NewVip {
                name,
                address,
                port,
                protocol,
                algorithm,
                mode,
                table_size,
                second_chance: None,
                second_chance_window_s: None,
                health: None,
            };
            let r = client.add_vip(&new).await?;
            let v = &r.value;
            show(json, &r, || {
                format!(
                    "added VIP {} {}:{}/{} ({}, {}, table {})\n",
                    v.name, v.address, v.port, v.protocol, v.algorithm, v.mode, v.table_size
                )
            })
        }
        VipCmd::Del { name } => {
            let r = client.delete_vip(&name).await?;
            show(json, &r, || format!("deleted VIP {}\n", r.value.deleted))
        }
    }
}

async fn backend_command(client: &Client, cmd: BackendCmd, json: bool) -> Result<()> {
    match cmd {
        BackendCmd::List { vip } => {
            let r = client.backends(&vip).await?;
            show(json, &r, || {
                format::backends(&r.value, format::now_unix_ms())
            })
        }
        BackendCmd::Add {
            vip,
            address,
            weight,
        } => {
            let r = client
                .add_backend(
                    &vip,
                    &NewBackend {
                        address,
                        weight,
                        self_check: None,
                    },
                )
                .await?;
            let verb = if r.status == 201 {
                "added backend"
            } else {
                "re-registered backend"
            };
            show(json, &r, || {
                let b = &r.value;
                let mut out = format!("{verb} of {vip}: {}\n", format::backend_summary(b));
                if b.admin == AdminState::Draining {
                    out.push_str(&format!(
                        "note: still draining (a re-registration never undrains); \
                         to take new flows again: lbctl backend undrain {vip} {address}\n"
                    ));
                }
                if let (Some(w), Some(d)) = (weight, b.declared_weight)
                    && w == d
                    && b.weight != w
                {
                    out.push_str(&format!(
                        "note: weight {} set by an operator is kept (weight {w} was already \
                         declared); to change it: lbctl backend weight {vip} {address} {w}\n",
                        b.weight
                    ));
                }
                out
            })
        }
        BackendCmd::Del { vip, address } => {
            let r = client.delete_backend(&vip, address).await?;
            show(json, &r, || {
                format!("deleted backend {} of {vip}\n", r.value.deleted)
            })
        }
        BackendCmd::Weight {
            vip,
            address,
            weight,
        } => {
            let r = client.set_weight(&vip, address, weight).await?;
            show(json, &r, || {
                format!(
                    "weight set for {vip}: {}\n",
                    format::backend_summary(&r.value)
                )
            })
        }
        BackendCmd::Drain { vip, address } => {
            let r = client.drain(&vip, address).await?;
            show(json, &r, || {
                format!(
                    "draining in {vip} (no new flows, existing flows go on): {}\n",
                    format::backend_summary(&r.value)
                )
            })
        }
        BackendCmd::Undrain { vip, address } => {
            let r = client.undrain(&vip, address).await?;
            show(json, &r, || {
                format!(
                    "undrained in {vip}: {}\n",
                    format::backend_summary(&r.value)
                )
            })
        }
    }
}

/// `lbctl stats --watch`: rates from the deltas of consecutive snapshots, redrawn in place on
/// a terminal and appended (one frame or JSON line per refresh) otherwise.
async fn watch_stats(
    client: &Client,
    interval: Duration,
    count: Option<u64>,
    json: bool,
) -> Result<()> {
    let redraw = !json && std::io::stdout().is_terminal();
    if redraw {
        print("\x1b[H\x1b[2Jcollecting the first sample...\n")?;
    }
    // One listener for the whole run, so that a Ctrl-C between two polls is not lost.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut prev = tokio::select! {
        r = client.stats() => r?,
        _ = &mut ctrl_c => return Ok(()),
    };
    let mut prev_at = Instant::now();
    let mut shown = 0u64;
    while count.is_none_or(|c| shown < c) {
        let next = async {
            tokio::time::sleep(interval).await;
            client.stats().await
        };
        let cur = tokio::select! {
            r = next => r?,
            _ = &mut ctrl_c => break,
        };
        let r = rates::rates(&prev.value, &cur.value, prev_at.elapsed());
        prev_at = Instant::now();
        prev = cur;
        shown += 1;
        if json {
            print(&format!("{}\n", serde_json::to_string(&r)?))?;
        } else if redraw {
            print(&format!("\x1b[H\x1b[2J{}", format::rates_frame(&r)))?;
        } else {
            let sep = if shown > 1 { "\n" } else { "" };
            print(&format!("{sep}{}", format::rates_frame(&r)))?;
        }
    }
    Ok(())
}

/// Prints the raw JSON with `--json`, the human text otherwise.
fn show<T>(json: bool, r: &Fetched<T>, human: impl FnOnce() -> String) -> Result<()> {
    if json {
        print(&pretty(&r.raw))
    } else {
        print(&human())
    }
}

fn pretty(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

fn print(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()?;
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The error and its causes on one line, without repeating a cause its parent already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    if e.downcast_ref::<ClientError>()
        .is_some_and(|c| c.code() == Some(lb_api::types::ErrorCode::Unauthorized))
    {
        out.push_str("; give the token with --token-file PATH or LBCTL_TOKEN");
    }
    out.replace(['\n', '\r'], " ")
}
