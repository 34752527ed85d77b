//! Checks the shared test helpers themselves: real servers start, answer, and stop.

mod support;

use std::time::Duration;

#[test]
fn redis_starts_restarts_and_stops() {
    let mut r = support::RedisServer::start();
    assert_eq!(r.cli(&["PING"]), "PONG");
    r.cli(&["SET", "k", "v"]);
    r.restart();
    assert_eq!(r.cli(&["PING"]), "PONG");
    assert_eq!(
        r.cli(&["GET", "k"]),
        "",
        "no persistence: a restarted redis is empty"
    );
    let port = r.port;
    drop(r);
    assert!(support::wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || !support::port_open(port)
    ));
}

#[test]
fn postgres_starts_and_creates_databases() {
    let pg = support::Postgres::start();
    let url = pg.create_database("selftest");
    assert!(url.ends_with("/selftest"));
    let port = pg.port;
    drop(pg);
    assert!(support::wait_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || !support::port_open(port)
    ));
}
