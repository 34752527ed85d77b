//! Health checks: one task per (VIP, backend) probing at its interval; results go to the
//! daemon through a channel, which applies them through the state machine.

mod machine;
mod probe;

pub use machine::{Health, Machine, slow_start_weight};
pub use probe::{ProbeResult, probe};

use std::{net::IpAddr, time::Duration};

use tokio::{sync::mpsc, task::JoinHandle};

use lb_config::HealthConfig;

/// What a checker reports after each probe.
#[derive(Clone, Debug)]
pub struct ProbeEvent {
    pub vip: String,
    pub addr: IpAddr,
    pub result: ProbeResult,
}

/// Starts probing `addr` (port `port`) every `cfg.interval` until the handle is aborted or
/// the receiver is gone. The first probe is immediate.
pub fn spawn_checker(
    vip: String,
    addr: IpAddr,
    port: u16,
    cfg: HealthConfig,
    tx: mpsc::Sender<ProbeEvent>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cfg.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let result = probe(addr, port, &cfg.kind, cfg.timeout).await;
            let ev = ProbeEvent {
                vip: vip.clone(),
                addr,
                result,
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    })
}

/// How long a backend takes at most to be marked down once it stops answering.
pub fn detection_bound(cfg: &HealthConfig) -> Duration {
    cfg.interval * cfg.fall + cfg.timeout
}
