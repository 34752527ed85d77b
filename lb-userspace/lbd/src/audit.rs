//! The audit log: one line for every change made through the API (and by lbd itself: a
//! reload, an expired lease), saying who, from where, what and the result. It goes to lbd's
//! log under the target `audit` (a JSON object per line with `--log-json`), so it can be
//! routed or kept apart by the log collector.

use std::net::IpAddr;

use axum::http::{Method, StatusCode};
use tracing::{info, warn};

fn result(status: StatusCode) -> &'static str {
    if status.is_success() {
        "ok"
    } else if status.is_client_error() {
        "refused"
    } else {
        "failed"
    }
}

/// Who made a change: a client's name and scope, and where it called from.
pub struct Who<'a> {
    pub name: &'a str,
    pub scope: &'a str,
    pub from: &'a str,
}

/// A change that reached its handler (and succeeded or failed there).
pub fn change(p: &Who, method: &Method, path: &str, address: Option<IpAddr>, status: StatusCode) {
    info!(
        target: "audit",
        who = %p.name,
        scope = p.scope,
        from = %p.from,
        method = %method,
        path,
        address = address.map(|a| a.to_string()),
        status = status.as_u16(),
        result = result(status),
        "change"
    );
}

/// A change refused before its handler: unauthenticated (401) or outside the scope (403).
pub fn refused(p: &Who, method: &Method, path: &str, status: StatusCode, reason: &str) {
    warn!(
        target: "audit",
        who = p.name,
        from = p.from,
        from = p.from,
        method = %method,
        path,
        status = status.as_u16(),
        result = "refused",
        reason,
        "change refused"
    );
}

/// A change lbd made by itself or on a signal: `who` is `SIGHUP`, `lease`, ...
pub fn internal(who: &str, what: &str, ok: bool) {
    info!(target: "audit", who, from = "lbd", what, result = if ok { "ok" } else { "failed" }, "change");
}
