//! `lbd`: the control-plane daemon of the XDP load balancer (run as root).

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::Parser;
use lb_config::Config;
use lb_dataplane::pin;
use lbd::daemon::{self, api, reload};
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
    /// Log as JSON lines instead of text (the audit lines too, under the target "audit").
    #[arg(long)]
    log_json: bool,
    /// Write lbd's man page (lbd.8) into DIR and exit (used by `cargo xtask package`).
    #[arg(long, value_name = "DIR", hide = true)]
    generate_man: Option<PathBuf>,
    /// Print the API's OpenAPI 3.1 document (what `GET /v1/openapi.json` serves) and exit.
    /// Touches nothing.
    #[arg(long)]
    openapi: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = &cli.generate_man {
        use clap::CommandFactory;
        let page = clap_mangen::Man::new(Cli::command()).section("8");
        let mut out = Vec::new();
        let written = page
            .render(&mut out)
            .and_then(|()| std::fs::create_dir_all(dir))
            .and_then(|()| std::fs::write(dir.join("lbd.8"), out));
        return match written {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lbd: writing the man page into {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
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
    match rt.block_on(run(config, cli.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("lbd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, path: PathBuf) -> Result<()> {
    let pin_dir = config.dataplane.pin_dir.clone();
    let api_cfg = config.api.clone();
    let (state, probes) = daemon::start(config).await?;
    state.set_config_path(path);
    info!(
        vips = state.config.vips.len(),
        "data plane programmed and attached"
    );

    tokio::spawn(daemon::health_loop(state.clone(), probes));
    tokio::spawn(daemon::tick_loop(state.clone()));
    tokio::spawn(daemon::sweep_loop(state.clone()));
    let (vrrp_stop, vrrp_stopped) = tokio::sync::oneshot::channel();
    let vrrp = tokio::spawn(vrrp_supervisor(state.clone(), vrrp_stopped));
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
    tokio::spawn(lbd::tls::serve_unix(unix, router.clone()));
    if let Some(addr) = api_cfg.listen {
        let tcp = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let tls = state.access().tls.is_some();
        if tls {
            info!(%addr, "API listening on TCP with TLS");
        } else if addr.ip().is_loopback() {
            info!(%addr, "API listening on TCP (plain HTTP on loopback)");
        } else {
            warn!(%addr, "API listening on TCP WITHOUT TLS: tokens cross the network in clear; set [api.tls]");
        }
        let s = state.clone();
        tokio::spawn(lbd::tls::serve(tcp, router, move || s.access().tls.clone()));
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut shutdown = state.shutdown.subscribe();
    let detach = loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM"); break state.current().dataplane.detach_on_exit }
            _ = int.recv() => { info!("SIGINT"); break state.current().dataplane.detach_on_exit }
            _ = hup.recv() => {
                info!("SIGHUP: reloading the config");
                let r = reload::reload(&state, reload::Options::default()).await;
                match &r {
                    Ok(report) => lbd::audit::internal("SIGHUP", &format!("reload: {} changes", report.changes.len()), true),
                    Err(e) => {
                        error!("reload refused, lbd goes on with the config it has: {e}");
                        lbd::audit::internal("SIGHUP", &format!("reload refused: {e}"), false);
                    }
                }
            }
            r = shutdown.wait_for(|v| v.is_some()) => {
                let requested = r.map(|v| v.unwrap_or(false)).unwrap_or(false);
                info!(detach = requested, "shutdown requested through the API");
                break requested || state.current().dataplane.detach_on_exit
            }
        }
    };
    // Running captures get their last line before the API goes away.
    state.captures.stop_all().await;
    // Priority-0 advert and VIPs removed: the backup takes over at once.
    let _ = vrrp_stop.send(());
    let _ = vrrp.await;
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

/// Runs the VRRP routers of the `[vrrp]` in force, and runs them again with the new settings
/// when a reload changes that section; stops them (a master hands over at once) on `stop`.
async fn vrrp_supervisor(state: daemon::State, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let mut configs = state.subscribe_config();
    let mut running: Option<(
        lb_config::VrrpConfig,
        lb_vrrp::Handle,
        tokio::task::JoinHandle<()>,
    )> = None;
    loop {
        let want = configs.borrow_and_update().vrrp.clone();
        if running.as_ref().map(|(c, _, _)| c) != want.as_ref() {
            if let Some((_, handle, track)) = running.take() {
                info!("vrrp: settings changed, restarting the routers");
                handle.stop().await;
                track.abort();
                state.set_vrrp_statuses(None);
            }
            if let Some(cfg) = want {
                let (fault_tx, fault_rx) = tokio::sync::watch::channel(false);
                let track = tokio::spawn(lb_vrrp::track::track_loop(
                    cfg.clone(),
                    state.config.dataplane.interfaces.clone(),
                    state.clone(),
                    fault_tx,
                ));
                match lb_vrrp::spawn(cfg.clone(), fault_rx) {
                    Ok(handle) => {
                        state.set_vrrp_statuses(Some(handle.status_ref()));
                        running = Some((cfg, handle, track));
                    }
                    Err(e) => {
                        track.abort();
                        error!("vrrp: cannot start the routers: {e:#}");
                    }
                }
            }
        }
        tokio::select! {
            _ = &mut stop => break,
            r = configs.changed() => if r.is_err() { break },
        }
    }
    if let Some((_, handle, track)) = running {
        handle.stop().await;
        track.abort();
    }
}
