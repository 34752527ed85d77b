//! Active-active balancers: lbd's side of BGP (docs/bgp.md). The speaker is BIRD 2 ([`speaker`]):
//! lbd writes its configuration ([`conf`]), reads its sessions on the control socket
//! ([`ctl`]) and announces a VIP address by putting a route for it in a kernel table of its
//! own ([`routes`]), which BIRD learns and exports to the routers. Announcements are
//! health-gated ([`plan`]): an address is in the table only while this node's data plane is
//! attached and one of its VIPs can take new flows.

pub mod conf;
pub mod ctl;
pub mod plan;
pub mod routes;
pub mod speaker;

use std::{
    collections::BTreeMap,
    future::Future,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use lb_api::bgp::{Overview, Prefix, Session, SessionState, Speaker as SpeakerView};
use lb_config::BgpConfig;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

pub use plan::{GateView, VipState};

/// What the daemon tells the announcer.
pub trait Gate: Send + Sync + 'static {
    /// Every VIP with its address and whether it can take new flows, and the interfaces
    /// whose XDP program is not attached.
    fn view(&self) -> impl Future<Output = GateView> + Send;
}

/// How often the gate is read and the table made to follow it.
pub const ANNOUNCE_PERIOD: Duration = Duration::from_millis(200);
/// How often the speaker's sessions are read.
pub const SESSIONS_PERIOD: Duration = Duration::from_secs(1);

/// The live status, shared with the API and metrics.
#[derive(Clone)]
pub struct Status(Arc<Mutex<Overview>>);

impl Status {
    /// A copy of the current status.
    pub fn overview(&self) -> Option<Overview> {
        self.0.lock().ok().map(|o| o.clone())
    }

    fn update(&self, f: impl FnOnce(&mut Overview)) {
        if let Ok(mut o) = self.0.lock() {
            f(&mut o);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// Everything withdrawn; the data plane keeps forwarding what still arrives.
    Draining,
    Stopped,
}

/// The running announcer.
pub struct Handle {
    status: Status,
    phase: watch::Sender<Phase>,
    withdrawn: watch::Receiver<bool>,
    announcer: JoinHandle<()>,
    sessions: JoinHandle<()>,
    drain: Duration,
}

impl Handle {
    /// The shared status, for the API and metrics.
    pub fn status_ref(&self) -> Status {
        self.status.clone()
    }

    /// A clean stop: withdraws every address, keeps forwarding for the drain time while the
    /// routers move the flows to the other balancers, then stops BIRD (its sessions close).
    pub async fn stop(mut self) {
        let _ = self.phase.send(Phase::Draining);
        // `wait_for`'s guard holds the channel's read lock: it must be gone before the drain,
        // or the announcer's next `send_replace` blocks a runtime thread for good.
        let confirmed = tokio::time::timeout(Duration::from_secs(3), async {
            self.withdrawn.wait_for(|w| *w).await.is_ok()
        })
        .await
        .unwrap_or(false);
        if confirmed {
            info!(
                drain_s = self.drain.as_secs(),
                "bgp: every VIP withdrawn; draining before stopping"
            );
        } else {
            warn!("bgp: could not confirm the withdrawal within 3 s; draining anyway");
        }
        tokio::time::sleep(self.drain).await;
        let _ = self.phase.send(Phase::Stopped);
        for (what, task) in [("announcer", self.announcer), ("sessions", self.sessions)] {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                warn!("bgp: the {what} task did not stop within 10 s");
            }
        }
    }
}

/// Starts (or adopts) BIRD, then the announcer and the session reader.
pub async fn spawn<G: Gate>(cfg: BgpConfig, gate: Arc<G>) -> Result<Handle> {
    let speaker = speaker::Speaker::start(&cfg).await?;
    let netlink = routes::connect().context("bgp: opening a route-netlink socket")?;
    let status = Status(Arc::new(Mutex::new(Overview {
        local_as: cfg.local_as,
        router_id: cfg.router_id.to_string(),
        hold_time_s: cfg.hold_time.as_secs(),
        bfd_detection_ms: cfg.bfd.map(|b| b.detection().as_millis() as u64),
        table: cfg.table,
        stopping: false,
        speaker: SpeakerView {
            kind: "bird".into(),
            version: speaker.version.clone(),
            running: true,
            adopted: speaker.adopted,
            starts: speaker.starts,
            error: None,
        },
        sessions: cfg
            .peers
            .iter()
            .map(|p| Session {
                name: p.name(),
                peer: p.address,
                peer_as: p.asn,
                state: SessionState::Down,
                since: None,
                exported: 0,
                bfd_up: None,
                last_error: None,
            })
            .collect(),
        prefixes: Vec::new(),
    })));
    let (phase, phase_rx) = watch::channel(Phase::Running);
    let (withdrawn_tx, withdrawn) = watch::channel(false);
    let announcer = tokio::spawn(announce_loop(
        cfg.clone(),
        gate,
        netlink,
        status.clone(),
        phase_rx.clone(),
        withdrawn_tx,
    ));
    let sessions = tokio::spawn(sessions_loop(
        cfg.clone(),
        speaker,
        status.clone(),
        phase_rx,
    ));
    Ok(Handle {
        status,
        phase,
        withdrawn,
        announcer,
        sessions,
        drain: cfg.drain,
    })
}

/// Keeps lbd's table equal to the plan every [`ANNOUNCE_PERIOD`]; empty once draining.
async fn announce_loop<G: Gate>(
    cfg: BgpConfig,
    gate: Arc<G>,
    netlink: rtnetlink::Handle,
    status: Status,
    mut phase: watch::Receiver<Phase>,
    withdrawn: watch::Sender<bool>,
) {
    let mut counts: BTreeMap<IpAddr, (u64, u64)> = BTreeMap::new();
    let mut last_error: Option<String> = None;
    let mut tick = tokio::time::interval(ANNOUNCE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let hold_until = tokio::time::Instant::now() + cfg.announce_delay;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = phase.changed() => if r.is_err() { return; },
        }
        let now = *phase.borrow();
        if now == Phase::Stopped {
            return;
        }
        let draining = now == Phase::Draining;
        // The start-up hold: the table stays as found (see `BgpConfig::announce_delay`).
        if !draining && tokio::time::Instant::now() < hold_until {
            continue;
        }
        let view = gate.view().await;
        let plan = plan::plan(&cfg, &view, draining);
        let result = apply(&netlink, &cfg, &plan, &mut counts).await;
        match &result {
            Err(e) if last_error.as_deref() != Some(e) => {
                warn!(error = %e, "bgp: cannot update the announcements")
            }
            _ => {}
        }
        last_error = result.err();
        if draining && last_error.is_none() && !*withdrawn.borrow() {
            withdrawn.send_replace(true);
        }
        status.update(|o| {
            o.stopping = draining;
            o.prefixes = plan
                .iter()
                .map(|p| {
                    let (a, w) = counts.get(&p.address).copied().unwrap_or_default();
                    Prefix {
                        prefix: plan::prefix(p.address),
                        address: p.address,
                        vips: p.vips.clone(),
                        announced: p.announce,
                        reason: p.reason.clone(),
                        announcements: a,
                        withdrawals: w,
                    }
                })
                .collect();
        });
    }
}

/// Makes the table hold exactly the planned announcements; counts the changes.
async fn apply(
    netlink: &rtnetlink::Handle,
    cfg: &BgpConfig,
    plan: &[plan::Planned],
    counts: &mut BTreeMap<IpAddr, (u64, u64)>,
) -> Result<(), String> {
    let have = routes::list(netlink, cfg.table)
        .await
        .map_err(|e| e.to_string())?;
    for p in plan {
        let present = have.contains(&p.address);
        if p.announce && !present {
            routes::add(netlink, p.address, cfg.table)
                .await
                .map_err(|e| e.to_string())?;
            counts.entry(p.address).or_default().0 += 1;
            info!(prefix = %plan::prefix(p.address), vips = ?p.vips, "bgp: announced");
        } else if !p.announce && present {
            routes::del(netlink, p.address, cfg.table)
                .await
                .map_err(|e| e.to_string())?;
            counts.entry(p.address).or_default().1 += 1;
            info!(prefix = %plan::prefix(p.address), reason = p.reason.as_deref().unwrap_or(""), "bgp: withdrawn");
        }
    }
    // What no VIP explains (left by an earlier run, a VIP since removed) goes.
    for stale in have
        .iter()
        .filter(|a| !plan.iter().any(|p| p.address == **a))
    {
        routes::del(netlink, *stale, cfg.table)
            .await
            .map_err(|e| e.to_string())?;
        info!(prefix = %plan::prefix(*stale), "bgp: withdrawn (no VIP has this address)");
    }
    Ok(())
}

/// Reads the sessions every [`SESSIONS_PERIOD`], starts BIRD again if it died, and stops it
/// on a clean stop.
async fn sessions_loop(
    cfg: BgpConfig,
    mut speaker: speaker::Speaker,
    status: Status,
    mut phase: watch::Receiver<Phase>,
) {
    let mut tick = tokio::time::interval(SESSIONS_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut silent = 0u32;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = phase.changed() => if r.is_err() { return; },
        }
        if *phase.borrow() == Phase::Stopped {
            speaker.stop().await;
            status.update(|o| {
                o.speaker.running = false;
                for s in &mut o.sessions {
                    s.state = SessionState::Down;
                }
            });
            return;
        }
        let error = match speaker.restart_if_exited().await {
            Err(e) => Some(format!("{e:#}")),
            Ok(_) => match read_sessions(&cfg, &speaker).await {
                Ok(sessions) => {
                    silent = 0;
                    status.update(|o| o.sessions = sessions);
                    None
                }
                Err(e) => {
                    silent += 1;
                    // An adopted BIRD that stays silent is replaced by one of lbd's own.
                    if silent >= 3 && speaker.adopted {
                        if let Err(e) = speaker.replace_adopted().await {
                            warn!(error = %format!("{e:#}"), "bgp: cannot start BIRD");
                        }
                        silent = 0;
                    }
                    Some(format!("{e:#}"))
                }
            },
        };
        status.update(|o| {
            o.speaker.running = error.is_none();
            o.speaker.error = error.clone();
            o.speaker.starts = speaker.starts;
            o.speaker.adopted = speaker.adopted;
            o.speaker.version = speaker.version.clone();
            if error.is_some() {
                for s in &mut o.sessions {
                    s.state = SessionState::Down;
                }
            }
        });
    }
}

async fn read_sessions(cfg: &BgpConfig, speaker: &speaker::Speaker) -> Result<Vec<Session>> {
    let mut ctl = speaker.ctl().await?;
    let protocols = ctl::parse_protocols(&ctl.command("show protocols all").await?);
    let bfd = if cfg.bfd.is_some() {
        Some(ctl::parse_bfd(&ctl.command("show bfd sessions").await?))
    } else {
        None
    };
    Ok(cfg
        .peers
        .iter()
        .map(|p| {
            let name = p.name();
            let found = protocols.iter().find(|x| x.name == name);
            Session {
                name,
                peer: p.address,
                peer_as: p.asn,
                state: found
                    .and_then(|x| x.bgp_state)
                    .unwrap_or(SessionState::Down),
                since: found.and_then(|x| x.since.clone()),
                exported: found.map(|x| x.exported).unwrap_or(0),
                bfd_up: bfd
                    .as_ref()
                    .map(|b| b.get(&p.address).copied().unwrap_or(false)),
                last_error: found.and_then(|x| x.last_error.clone()),
            }
        })
        .collect())
}
