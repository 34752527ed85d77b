//! `lbd`: the control-plane daemon of the XDP load balancer (run as root).

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::Parser;
use lb_config::Config;
use lb_dataplane::pin;
use lbd::daemon::{self, api};
use tokio::{
    net::{TcpListener, UnixListener},
    signal::unix::{SignalKind, signal},
};
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "lbd",
    version,
    about = "The XDP load balancer's control-plane daemon"
)]
struct Cli {
    /// The balancer config (TOML); see lb-userspace/config/example.toml and docs/config.md.
    #[arg(long, short, default_value = "/etc/lbd/lbd.toml")]
    config: PathBuf,
    /// Only check the config: print the first error (file:line: field: reason) and exit 1,
    /// or print "ok" and exit 0. Touches nothing.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
    /// Print the API's OpenAPI 3.1 document (what `GET /v1/openapi.json` serves) and exit.
    /// Touches nothing.
    #[arg(long)]
    openapi: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.openapi {
        return match serde_json::to_string_pretty(&api::openapi()) {
            Ok(doc) => {
                println!("{doc}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cannot render the OpenAPI document: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("LBD_LOG").unwrap_or_else(|_| "info".into());
    if cli.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    if let Some(path) = cli.check_config {
        return match Config::load(&path) {
            Ok(c) => {
                println!(
                    "ok: {} VIPs, {} backends",
                    c.vips.len(),
                    c.vips.iter().map(|v| v.backends.len()).sum::<usize>()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("lbd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<()> {
    let detach_default = config.dataplane.detach_on_exit;
    let pin_dir = config.dataplane.pin_dir.clone();
    let api_cfg = config.api.clone();
    let (state, probes) = daemon::start(config).await?;
    info!(
        vips = state.config.vips.len(),
        "data plane programmed and attached"
    );

    tokio::spawn(daemon::health_loop(state.clone(), probes));
    tokio::spawn(daemon::tick_loop(state.clone()));
    tokio::spawn(daemon::sweep_loop(state.clone()));
    let vrrp = match state.config.vrrp.clone() {
        Some(cfg) => {
            let (fault_tx, fault_rx) = tokio::sync::watch::channel(false);
            tokio::spawn(lb_vrrp::track::track_loop(
                cfg.clone(),
                state.config.dataplane.interfaces.clone(),
                state.clone(),
                fault_tx,
            ));
            let handle = lb_vrrp::spawn(cfg, fault_rx)?;
            let _ = state.vrrp.set(handle.status_ref());
            Some(handle)
        }
        None => None,
    };
    let bgp = match state.config.bgp.clone() {
        Some(cfg) => {
            let gate = std::sync::Arc::new(daemon::BgpGate::new(state.clone()));
            let handle = lb_bgp::spawn(cfg, gate)
                .await
                .context("starting the BGP announcer")?;
            let _ = state.bgp.set(handle.status_ref());
            Some(handle)
        }
        None => None,
    };

    if let Some(dir) = api_cfg.socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&api_cfg.socket);
    let unix = UnixListener::bind(&api_cfg.socket)
        .with_context(|| format!("binding {}", api_cfg.socket.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&api_cfg.socket, std::fs::Permissions::from_mode(0o600))?;
    info!(socket = %api_cfg.socket.display(), "API listening");
    let router = api::router(state.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(unix, router).await {
            error!(error = %e, "unix API server stopped");
        }
    });
    if let Some(addr) = api_cfg.listen {
        let token_file = api_cfg
            .token_file
            .clone()
            .context("api.listen needs api.token_file")?;
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("reading the API token from {}", token_file.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        anyhow::ensure!(
            token.len() >= 16,
            "the API token in {} must be at least 16 characters",
            token_file.display()
        );
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        info!(%addr, "API listening on TCP (bearer token required)");
        let router = api::tcp_router(state.clone(), token);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(tcp, router).await {
                error!(error = %e, "TCP API server stopped");
            }
        });
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut shutdown = state.shutdown.subscribe();
    let detach = tokio::select! {
        _ = term.recv() => { info!("SIGTERM"); detach_default }
        _ = int.recv() => { info!("SIGINT"); detach_default }
        r = shutdown.wait_for(|v| v.is_some()) => {
            let requested = r.map(|v| v.unwrap_or(false)).unwrap_or(false);
            info!(detach = requested, "shutdown requested through the API");
            requested || detach_default
        }
    };
    if let Some(handle) = vrrp {
        // Priority-0 advert and VIPs removed: the backup takes over at once.
        handle.stop().await;
    }
    if let Some(handle) = bgp {
        // Withdraw, keep forwarding for the drain time, then stop the speaker.
        handle.stop().await;
    }
    let _ = std::fs::remove_file(&api_cfg.socket);
    if detach {
        pin::remove_all(&pin_dir)?;
        let _ = std::fs::remove_file(&api_cfg.state_file);
        info!("detached: the XDP program and its pins are gone");
    } else {
        warn!(
            "exiting; the XDP program keeps forwarding from its pinned link (use `lbctl shutdown --detach` to remove it)"
        );
    }
    Ok(())
}
