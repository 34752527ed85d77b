//! State machine tests: every transition of RFC 5798 6.4 plus the fault state.

use std::net::Ipv4Addr;

use super::*;

fn cs(v: u16) -> Centis {
    Centis::new(v).unwrap()
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn machine(priority: u8, preempt: bool) -> Machine {
    Machine::new(Params {
        priority,
        interval: cs(100),
        preempt,
        primary: ip(2),
    })
}

fn advert(priority: u8, source: u8) -> Event {
    Event::Advert {
        priority,
        interval: cs(100),
        source: ip(source),
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[test]
fn skew_and_master_down_follow_the_rfc() {
    // interval 1 s, priority 100: skew = (156 * 100) / 256 = 60 cs (integer division).
    assert_eq!(skew(100, cs(100)), ms(600));
    assert_eq!(master_down(100, cs(100)), ms(3600));
    // priority 90: skew = 166 * 100 / 256 = 64 cs.
    assert_eq!(master_down(90, cs(100)), ms(3640));
    // 100 ms interval, priority 254: skew = 2 * 10 / 256 = 0.
    assert_eq!(master_down(254, cs(10)), ms(300));
    assert_eq!(skew(1, cs(4095)), ms(40_790));
}

#[test]
fn startup_goes_to_backup_with_the_master_down_timer() {
    let mut m = machine(100, true);
    assert_eq!(m.state(), State::Initialize);
    assert_eq!(
        m.handle(Event::Startup),
        vec![Action::Arm(Timer::MasterDown, ms(3600))]
    );
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn owner_starts_as_master() {
    let mut m = machine(PRIORITY_OWNER, true);
    assert_eq!(
        m.handle(Event::Startup),
        vec![
            Action::SendAdvert(255),
            Action::TakeAddresses,
            Action::Arm(Timer::Adver, ms(1000))
        ]
    );
    assert_eq!(m.state(), State::Master);
}

#[test]
fn master_down_timer_makes_a_backup_master() {
    let mut m = machine(100, true);
    m.handle(Event::Startup);
    let a = m.handle(Event::MasterDown);
    assert_eq!(a[0], Action::SendAdvert(100));
    assert!(a.contains(&Action::TakeAddresses));
    assert_eq!(m.state(), State::Master);
    assert_eq!(
        m.handle(Event::AdverTimer),
        vec![Action::SendAdvert(100), Action::Arm(Timer::Adver, ms(1000))]
    );
}

#[test]
fn backup_resets_its_timer_on_a_higher_master_and_learns_its_interval() {
    let mut m = machine(90, true);
    m.handle(Event::Startup);
    let a = m.handle(Event::Advert {
        priority: 100,
        interval: cs(10),
        source: ip(1),
    });
    // 3 * 100 ms + (166 * 10 / 256 = 6 cs)
    assert_eq!(a, vec![Action::Arm(Timer::MasterDown, ms(360))]);
    assert_eq!(m.master_interval(), cs(10));
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn priority_zero_makes_the_backup_take_over_after_skew() {
    let mut m = machine(90, true);
    m.handle(Event::Startup);
    assert_eq!(
        m.handle(advert(0, 1)),
        vec![Action::Arm(Timer::MasterDown, ms(640))]
    );
}

#[test]
fn preempting_backup_ignores_a_lower_master() {
    let mut m = machine(100, true);
    m.handle(Event::Startup);
    assert!(m.handle(advert(90, 1)).is_empty());
    assert_eq!(m.state(), State::Backup);
    // ... and takes over when its own timer fires.
    m.handle(Event::MasterDown);
    assert_eq!(m.state(), State::Master);
}

#[test]
fn non_preempting_backup_accepts_a_lower_master() {
    let mut m = machine(100, false);
    m.handle(Event::Startup);
    assert_eq!(
        m.handle(advert(90, 1)),
        vec![Action::Arm(Timer::MasterDown, ms(3600))]
    );
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn master_yields_to_a_higher_priority() {
    let mut m = machine(90, true);
    m.handle(Event::Startup);
    m.handle(Event::MasterDown);
    let a = m.handle(advert(100, 1));
    assert_eq!(
        a,
        vec![
            Action::ReleaseAddresses,
            Action::Arm(Timer::MasterDown, ms(3640))
        ]
    );
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn master_keeps_mastership_against_a_lower_priority() {
    let mut m = machine(100, false);
    m.handle(Event::Startup);
    m.handle(Event::MasterDown);
    assert!(m.handle(advert(90, 9)).is_empty());
    assert_eq!(m.state(), State::Master);
}

#[test]
fn equal_priority_tie_breaks_on_the_higher_primary_address() {
    let mut m = machine(100, true); // primary 10.0.0.2
    m.handle(Event::Startup);
    m.handle(Event::MasterDown);
    assert!(m.handle(advert(100, 1)).is_empty(), "10.0.0.1 < 10.0.0.2");
    assert_eq!(m.state(), State::Master);
    m.handle(advert(100, 3));
    assert_eq!(m.state(), State::Backup, "10.0.0.3 > 10.0.0.2");
}

#[test]
fn a_new_primary_address_decides_the_next_tie_break() {
    let mut m = machine(100, true); // primary 10.0.0.2
    m.handle(Event::Startup);
    m.handle(Event::MasterDown);
    // Re-addressed to 10.0.0.5: an equal-priority master at 10.0.0.3 now loses, and nothing
    // else moved (still master, no action).
    m.set_primary(ip(5));
    assert_eq!(m.params().primary, ip(5));
    assert_eq!(m.state(), State::Master);
    assert!(m.handle(advert(100, 3)).is_empty(), "10.0.0.3 < 10.0.0.5");
    assert_eq!(m.state(), State::Master);
    m.handle(advert(100, 7));
    assert_eq!(m.state(), State::Backup, "10.0.0.7 > 10.0.0.5");
}

#[test]
fn master_answers_a_priority_zero_advert_at_once() {
    let mut m = machine(100, true);
    m.handle(Event::Startup);
    m.handle(Event::MasterDown);
    assert_eq!(
        m.handle(advert(0, 3)),
        vec![Action::SendAdvert(100), Action::Arm(Timer::Adver, ms(1000))]
    );
    assert_eq!(m.state(), State::Master);
}

#[test]
fn master_shutdown_sends_priority_zero_and_releases() {
    let mut m = machine(100, true);
    m.handle(Event::Startup);
    m.handle(Event::MasterDown);
    assert_eq!(
        m.handle(Event::Shutdown),
        vec![
            Action::Disarm,
            Action::SendAdvert(PRIORITY_LEAVING),
            Action::ReleaseAddresses
        ]
    );
    assert_eq!(m.state(), State::Initialize);
}

#[test]
fn backup_shutdown_is_quiet() {
    let mut m = machine(100, true);
    m.handle(Event::Startup);
    assert_eq!(m.handle(Event::Shutdown), vec![Action::Disarm]);
    assert_eq!(m.state(), State::Initialize);
}

#[test]
fn stale_events_are_ignored() {
    let mut m = machine(100, true);
    assert!(m.handle(Event::MasterDown).is_empty());
    assert!(m.handle(advert(200, 1)).is_empty());
    m.handle(Event::Startup);
    assert!(m.handle(Event::AdverTimer).is_empty());
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn fault_makes_the_master_leave_and_recovery_restarts_as_backup() {
    let mut m = machine(100, true);
    m.handle(Event::Startup);
    m.handle(Event::MasterDown);
    assert_eq!(
        m.handle(Event::Fault(true)),
        vec![
            Action::SendAdvert(PRIORITY_LEAVING),
            Action::ReleaseAddresses,
            Action::Disarm
        ]
    );
    assert_eq!(m.state(), State::Fault);
    // A faulty node never takes over.
    assert!(m.handle(Event::MasterDown).is_empty());
    assert!(m.handle(advert(0, 1)).is_empty());
    assert_eq!(
        m.handle(Event::Fault(false)),
        vec![Action::Arm(Timer::MasterDown, ms(3600))]
    );
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn fault_before_startup_holds_the_router_in_fault() {
    let mut m = machine(100, true);
    assert!(m.handle(Event::Fault(true)).is_empty());
    assert!(m.handle(Event::Startup).is_empty());
    assert_eq!(m.state(), State::Fault);
    m.handle(Event::Fault(false));
    assert_eq!(m.state(), State::Backup);
}

#[test]
fn backup_fault_disarms() {
    let mut m = machine(100, true);
    m.handle(Event::Startup);
    assert_eq!(m.handle(Event::Fault(true)), vec![Action::Disarm]);
    assert_eq!(m.state(), State::Fault);
}
