//! The RFC 5798 (section 6.4) state machine, pure: events in, actions out. Time and I/O live
//! in the driver ([`super::run`]), which keeps the single armed timer and performs the actions.

use std::{net::IpAddr, time::Duration};

use super::packet::Centis;

/// Priority of the router that owns the virtual addresses (it is always master).
pub const PRIORITY_OWNER: u8 = 255;
/// Priority in an advert that means "the master is leaving".
pub const PRIORITY_LEAVING: u8 = 0;

pub use lb_api::vrrp::State;

/// Something that happened to the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The daemon started the router.
    Startup,
    /// The daemon is stopping.
    Shutdown,
    /// A valid advert for our virtual router arrived.
    Advert {
        /// Sender's priority.
        priority: u8,
        /// Sender's advertisement interval.
        interval: Centis,
        /// Sender's primary address (IP source).
        source: IpAddr,
    },
    /// The master-down timer expired.
    MasterDown,
    /// The advertisement timer expired.
    AdverTimer,
    /// Tracking changed: `true` means the node must not serve.
    Fault(bool),
}

/// Which timer to arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Send the next advert when it fires.
    Adver,
    /// Take over when it fires.
    MasterDown,
}

/// What the driver must do, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advert with this priority.
    SendAdvert(u8),
    /// Add the virtual addresses and announce them (gratuitous ARP / unsolicited NA).
    TakeAddresses,
    /// Remove the virtual addresses.
    ReleaseAddresses,
    /// Arm the (single) timer, replacing any armed one.
    Arm(Timer, Duration),
    /// Disarm the timer.
    Disarm,
}

/// The static parameters of one virtual router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Our priority, 1..=255.
    pub priority: u8,
    /// Our advertisement interval.
    pub interval: Centis,
    /// Whether a higher-priority backup preempts a lower-priority master.
    pub preempt: bool,
    /// Our primary address (the source of our adverts, used to break priority ties).
    pub primary: IpAddr,
}

/// One virtual router's state machine.
#[derive(Clone, Debug)]
pub struct Machine {
    params: Params,
    state: State,
    /// The master's advertisement interval as learnt from its adverts.
    master_interval: Centis,
    /// Whether tracking currently forbids serving.
    faulty: bool,
}

/// Skew time: `((256 - priority) * interval) / 256`, in centiseconds (RFC 5798 6.1).
pub fn skew(priority: u8, interval: Centis) -> Duration {
    let cs = (256 - u64::from(priority)) * u64::from(interval.get()) / 256;
    Duration::from_millis(cs * 10)
}

/// Master-down interval: `3 * interval + skew`.
pub fn master_down(priority: u8, interval: Centis) -> Duration {
    interval.duration() * 3 + skew(priority, interval)
}

impl Machine {
    /// A router in `Initialize`.
    pub fn new(params: Params) -> Self {
        Self {
            params,
            state: State::Initialize,
            master_interval: params.interval,
            faulty: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configured parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The interface's addresses changed: our primary address is now `primary` (the next
    /// tie-break on equal priority uses it). Nothing else changes.
    pub fn set_primary(&mut self, primary: IpAddr) {
        self.params.primary = primary;
    }

    /// The master's advertisement interval (ours while we are master).
    pub fn master_interval(&self) -> Centis {
        self.master_interval
    }

    /// The current master-down interval (from the master's interval and our priority).
    pub fn master_down_interval(&self) -> Duration {
        master_down(self.params.priority, self.master_interval)
    }

    /// Applies one event; returns what to do.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        use Action::*;
        let p = self.params;
        match (self.state, event) {
            (_, Event::Fault(true)) => {
                self.faulty = true;
                let mut out = match self.state {
                    State::Master => vec![SendAdvert(PRIORITY_LEAVING), ReleaseAddresses],
                    _ => Vec::new(),
                };
                if self.state != State::Initialize {
                    self.state = State::Fault;
                    out.push(Disarm);
                }
                out
            }
            (State::Fault, Event::Fault(false)) => {
                self.faulty = false;
                self.state = State::Initialize;
                self.startup()
            }
            (_, Event::Fault(false)) => {
                self.faulty = false;
                Vec::new()
            }
            (State::Initialize, Event::Startup) if self.faulty => {
                self.state = State::Fault;
                Vec::new()
            }
            (State::Initialize, Event::Startup) => self.startup(),
            (State::Initialize | State::Fault, Event::Shutdown) => {
                self.state = State::Initialize;
                vec![Disarm]
            }
            (State::Backup, Event::Shutdown) => {
                self.state = State::Initialize;
                vec![Disarm]
            }
            (State::Master, Event::Shutdown) => {
                self.state = State::Initialize;
                vec![Disarm, SendAdvert(PRIORITY_LEAVING), ReleaseAddresses]
            }
            (State::Backup, Event::MasterDown) => self.become_master(),
            (
                State::Backup,
                Event::Advert {
                    priority, interval, ..
                },
            ) => {
                if priority == PRIORITY_LEAVING {
                    vec![Arm(
                        Timer::MasterDown,
                        skew(p.priority, self.master_interval),
                    )]
                } else if !p.preempt || priority >= p.priority {
                    self.master_interval = interval;
                    vec![Arm(Timer::MasterDown, self.master_down_interval())]
                } else {
                    // A lower-priority master while we preempt: let the master-down timer run.
                    Vec::new()
                }
            }
            (State::Master, Event::AdverTimer) => {
                vec![
                    SendAdvert(p.priority),
                    Arm(Timer::Adver, p.interval.duration()),
                ]
            }
            (
                State::Master,
                Event::Advert {
                    priority,
                    interval,
                    source,
                },
            ) => {
                if priority == PRIORITY_LEAVING {
                    vec![
                        SendAdvert(p.priority),
                        Arm(Timer::Adver, p.interval.duration()),
                    ]
                } else if priority > p.priority
                    || (priority == p.priority && addr_greater(source, p.primary))
                {
                    self.master_interval = interval;
                    self.state = State::Backup;
                    vec![
                        ReleaseAddresses,
                        Arm(Timer::MasterDown, self.master_down_interval()),
                    ]
                } else {
                    Vec::new()
                }
            }
            // Stale timers and adverts in states that ignore them.
            _ => Vec::new(),
        }
    }

    fn startup(&mut self) -> Vec<Action> {
        if self.params.priority == PRIORITY_OWNER {
            self.become_master()
        } else {
            self.master_interval = self.params.interval;
            self.state = State::Backup;
            vec![Action::Arm(Timer::MasterDown, self.master_down_interval())]
        }
    }

    fn become_master(&mut self) -> Vec<Action> {
        self.state = State::Master;
        self.master_interval = self.params.interval;
        vec![
            Action::SendAdvert(self.params.priority),
            Action::TakeAddresses,
            Action::Arm(Timer::Adver, self.params.interval.duration()),
        ]
    }
}

/// Compares primary addresses as unsigned integers in network order (RFC 5798 6.4.3).
fn addr_greater(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets() > b.octets(),
        (IpAddr::V6(a), IpAddr::V6(b)) => a.octets() > b.octets(),
        _ => false,
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
