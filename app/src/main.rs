//! The `app` binary: `app serve --config FILE` runs the service; `app check-config` prints
//! the effective configuration (file plus `APP_*` overrides) or the first error; `app
//! openapi` prints the API's OpenAPI document.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use app::alloc::{Allocator, Selectable};
use app::config::Config;
use app::logs::LogFormat;
use app::server;

/// glibc's malloc, jemalloc or mimalloc, as `APP_ALLOCATOR` says (see `app::alloc`).
#[global_allocator]
static GLOBAL: Selectable = Selectable;

#[derive(Parser, Debug)]
#[command(
    name = "app",
    version,
    about = "Backend service behind the load balancer's VIP: users API with a two-level cache"
)]
struct Cli {
    /// Log format: `text` or `json`.
    #[arg(long, env = "APP_LOG_FORMAT", default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP service until SIGTERM/SIGINT, then shut down in order (drain on the
    /// control planes, not-ready, finish in-flight requests, deregister, exit).
    Serve {
        /// TOML config file; every key can be overridden by `APP_SECTION__KEY` variables
        /// (e.g. `APP_DATABASE__URL`). Without a file the defaults apply.
        #[arg(long, short, env = "APP_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run only queue workers (tasks, callbacks, orders) until SIGTERM/SIGINT, then stop
    /// taking jobs and finish running ones within `queue.shutdown_grace_ms`.
    Worker {
        /// TOML config file (same rules as `serve`).
        #[arg(long, short, env = "APP_CONFIG")]
        config: Option<PathBuf>,
    },
    /// List, replay or purge dead letters of a queue.
    Dlq {
        /// TOML config file (same rules as `serve`).
        #[arg(long, short, env = "APP_CONFIG", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: app::queue::cli::DlqCommand,
    },
    /// Print the HTTP API's OpenAPI 3.1 document (what `GET /openapi.json` serves) and exit.
    /// Needs no configuration, database or Redis.
    Openapi,
    /// Load and validate the configuration, print it as TOML (passwords hidden) after a
    /// comment naming the Redis mode (`single`, `sentinel` or `cluster`), and exit.
    CheckConfig {
        /// TOML config file (same rules as `serve`).
        #[arg(long, short, env = "APP_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check this host's direct-server-return setup for a VIP and print every finding with
    /// its fix: the report `app serve` sends with its registrations. For a host that runs
    /// another service behind the balancer, give --vip, --mode and --address; with a config
    /// whose [registration] is set, the VIP's address and mode are asked from its first
    /// control plane. Exit status 1 when a check fails (the balancer would give this host no
    /// new flows), 0 otherwise.
    CheckHost {
        /// TOML config file (same rules as `serve`): [registration] names the VIP, this
        /// host's address and the control planes.
        #[arg(long, short, env = "APP_CONFIG")]
        config: Option<PathBuf>,
        /// The VIP's address (instead of asking the control plane).
        #[arg(long, value_name = "ADDR", requires = "mode")]
        vip: Option<std::net::IpAddr>,
        /// How the balancer forwards the VIP: dsr-l2 or ipip.
        #[arg(long, value_name = "MODE", requires = "vip")]
        mode: Option<String>,
        /// This host's address as the balancer sees it (default: registration.address).
        #[arg(long, value_name = "ADDR")]
        address: Option<std::net::IpAddr>,
        /// The balancers' `[dataplane] backend_mtu`, when they set one (ipip: what must fit).
        #[arg(long, value_name = "BYTES")]
        backend_mtu: Option<u32>,
        /// Print the report as JSON (what lbd receives).
        #[arg(long)]
        json: bool,
    },
    /// Write the man pages of app and its commands into DIR (used by `cargo xtask package`).
    #[command(hide = true)]
    GenerateMan { dir: PathBuf },
}

/// One page per command (`app.1`, `app-serve.1`, ...), from the same definitions as `--help`.
fn generate_man(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Ok(Config::load(path, std::env::vars())?)
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = load_config(config.as_deref())?;
    let running = server::start_with(cfg, app::wiring::extensions).await?;
    let signal = wait_for_signal().await?;
    tracing::info!(signal, "shutdown requested");
    running.shutdown();
    let report = running.wait().await?;
    if !report.http_finished {
        anyhow::bail!("in-flight requests were cut at the end of the grace period");
    }
    Ok(())
}

/// `app check-host`: returns whether a check failed.
async fn check_host(
    config: Option<PathBuf>,
    vip: Option<std::net::IpAddr>,
    mode: Option<String>,
    address: Option<std::net::IpAddr>,
    backend_mtu: Option<u32>,
    json: bool,
) -> anyhow::Result<bool> {
    use app::hostcheck::{self, Mode, Target};
    let reg = match &config {
        Some(_) => Some(load_config(config.as_deref())?.registration),
        None => None,
    };
    let address = match (address, &reg) {
        (Some(a), _) => a,
        (None, Some(r)) if !r.address.is_empty() => r
            .address
            .parse()
            .with_context(|| format!("registration.address {:?}", r.address))?,
        _ => anyhow::bail!("give --address (or a config with registration.address)"),
    };
    let target = match (vip, mode) {
        (Some(vip), Some(mode)) => Target {
            vip,
            port: 0,
            mode: Mode::parse(&mode).map_err(anyhow::Error::msg)?,
            backend_mtu,
            address,
        },
        _ => {
            let Some(r) = reg.filter(|r| r.enabled()) else {
                anyhow::bail!(
                    "give --vip and --mode, or a config whose [registration] names the VIP and \
                     its control planes"
                );
            };
            use app::registration::{RegistrarError, RegistrationError};
            let v = match app::registration::vip_facts(&r).await {
                Ok(v) => v,
                // A `registrant` token (lbd's [[api.clients]]) may register, not read VIPs.
                Err(RegistrarError::Client(RegistrationError::Rejected {
                    status: 403, ..
                })) => {
                    anyhow::bail!(
                        "the control plane does not let registration.token read VIPs (a \
                         registrant-scoped client): give --vip and --mode"
                    )
                }
                Err(e) => return Err(e.into()),
            };
            Target {
                vip: v.address,
                port: v.port,
                mode: Mode::parse(v.mode.name()).map_err(anyhow::Error::msg)?,
                backend_mtu,
                address,
            }
        }
    };
    let report = hostcheck::check(&target).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", hostcheck::render(&report, address));
    }
    Ok(report.failing().next().is_some())
}

fn main() -> anyhow::Result<()> {
    // The process already runs on the default when the variable names no allocator: refuse
    // to go on rather than run on something the operator did not ask for.
    let allocator = Allocator::from_env().map_err(anyhow::Error::msg)?;
    let cli = Cli::parse();
    match cli.command {
        Command::GenerateMan { dir } => generate_man(&dir),
        Command::Openapi => {
            let doc = serde_json::to_string_pretty(&app::wiring::openapi())
                .context("printing the OpenAPI document")?;
            println!("{doc}");
            Ok(())
        }
        Command::CheckConfig { config } => {
            let mut cfg = load_config(config.as_deref())?;
            if cfg.registration.token.is_some() {
                cfg.registration.token = Some("***".into());
            }
            if cfg.http.admin_token.is_some() {
                cfg.http.admin_token = Some("***".into());
            }
            // A comment, so the output stays valid TOML.
            println!("# redis mode: {}", cfg.redis.target()?.describe());
            let queue_url = cfg.queue.redis_url.as_deref().unwrap_or(&cfg.redis.url);
            println!(
                "# queue redis mode: {}; {} partition(s) per queue",
                app_redis::RedisTarget::parse(queue_url)?.describe(),
                cfg.queue.partitions
            );
            cfg.redis.url = app::config::redact_url(&cfg.redis.url);
            cfg.queue.redis_url = cfg.queue.redis_url.as_deref().map(app::config::redact_url);
            print!(
                "{}",
                toml::to_string_pretty(&cfg).context("printing the config")?
            );
            Ok(())
        }
        Command::CheckHost {
            config,
            vip,
            mode,
            address,
            backend_mtu,
            json,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let failing = rt.block_on(check_host(config, vip, mode, address, backend_mtu, json))?;
            if failing {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Worker { config } => {
            let _logs = app::logs::init(cli.log_format);
            let cfg = load_config(config.as_deref())?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(app::wiring::run_worker(cfg, async {
                match wait_for_signal().await {
                    Ok(signal) => tracing::info!(signal, "worker shutdown requested"),
                    Err(e) => tracing::error!(error = %e, "signal handling failed; stopping"),
                }
            }))
        }
        Command::Dlq { config, command } => {
            let cfg = load_config(config.as_deref())?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(app::wiring::run_dlq(&cfg, command))
        }
        Command::Serve { config } => {
            let _logs = app::logs::init(cli.log_format);
            tracing::info!(%allocator, "memory allocator");
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(serve(config))
        }
    }
}
