//! Human output of `lbctl`: one function per kind of answer, each returning the text to print.

use std::time::{SystemTime, UNIX_EPOCH};

use lb_api::types::{
    AdminState, Backend, DrainedBy, HealthEntry, LastCheck, ReloadReport, Stats, Status, Vip,
};

use crate::rates::Rates;
use crate::table::{Align, Table, key_values};

use Align::{Left, Right};

/// Milliseconds since the Unix epoch on this machine, for "checked 3s ago".
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn status(s: &Status) -> String {
    let interfaces = if s.interfaces.is_empty() {
        "none".to_string()
    } else {
        s.interfaces
            .iter()
            .map(|i| format!("{} ({})", i.iface, i.mode))
            .collect::<Vec<_>>()
            .join(", ")
    };
    key_values(&[
        ("version", s.version.clone()),
        ("uptime", duration(s.uptime_s as f64)),
        ("interfaces", interfaces),
        ("pinned", if s.pinned { "yes" } else { "no" }.to_string()),
        ("vips", s.vips.to_string()),
        (
            "backends",
            format!("{} ({} healthy)", s.backends, s.healthy_backends),
        ),
    ])
}

pub fn vips(vips: &[Vip]) -> String {
    let mut t = Table::new(&[
        ("NAME", Left),
        ("ADDRESS", Left),
        ("PORT", Right),
        ("PROTO", Left),
        ("ALGORITHM", Left),
        ("MODE", Left),
        ("TABLE", Right),
        ("BACKENDS", Right),
        ("SERVING", Right),
        ("SOURCE", Left),
    ]);
    for v in vips {
        let serving = v.backends.iter().filter(|b| b.effective_weight > 0).count();
        t.row([
            v.name.clone(),
            v.address.to_string(),
            v.port.to_string(),
            v.protocol.to_string(),
            v.algorithm.to_string(),
            v.mode.to_string(),
            v.table_size.to_string(),
            v.backends.len().to_string(),
            serving.to_string(),
            v.source
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    with_empty_note(t, "no VIPs")
}

pub fn backends(backends: &[Backend], now_ms: u64) -> String {
    let mut t = Table::new(&[
        ("ADDRESS", Left),
        ("WEIGHT", Right),
        ("EFFECTIVE", Right),
        ("HEALTH", Left),
        ("ADMIN", Left),
        ("SOURCE", Left),
        ("MAC", Left),
        ("LATENCY", Right),
        ("LAST CHECK", Left),
        ("SELF-CHECK", Left),
    ]);
    let mut notes = String::new();
    for b in backends {
        let mac = b.mac.clone().unwrap_or_else(|| "unresolved".to_string());
        if let (None, Some(err)) = (&b.mac, &b.mac_error) {
            notes.push_str(&format!("{}: MAC unresolved: {err}\n", b.address));
        }
        notes.push_str(&self_check_notes(b));
        t.row([
            b.address.to_string(),
            b.weight.to_string(),
            b.effective_weight.to_string(),
            b.health.to_string(),
            admin(b),
            b.source.to_string(),
            mac,
            latency(b.last_check.as_ref()),
            last_check(b.last_check.as_ref(), now_ms),
            b.self_check
                .as_ref()
                .map(|r| r.summary())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut out = with_empty_note(t, "no backends");
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes);
    }
    out
}

/// Why a backend gets no new flows, and the findings of its self-check that are not ok,
/// each with its fix.
fn self_check_notes(b: &Backend) -> String {
    use lb_api::selfcheck::Status;
    let mut out = String::new();
    if let Some(why) = &b.no_new_flows {
        out.push_str(&format!("{}: no new flows: {why}\n", b.address));
    }
    if let Some(r) = &b.self_check {
        for f in r.findings.iter().filter(|f| f.status != Status::Ok) {
            out.push_str(&format!(
                "{}: self-check {} {}: {}\n",
                b.address, f.status, f.check, f.detail
            ));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("    fix: {fix}\n"));
            }
        }
    }
    out
}

/// The admin state, with who drained it: "draining (operator)".
pub fn admin(b: &Backend) -> String {
    admin_label(b.admin, b.drained_by)
}

fn admin_label(admin: AdminState, by: Option<DrainedBy>) -> String {
    match (admin, by) {
        (AdminState::Draining, Some(by)) => format!("draining ({by})"),
        (a, _) => a.to_string(),
    }
}

/// What a reload changed (or would change).
pub fn reload(r: &ReloadReport) -> String {
    let mut out = String::new();
    let verb = match (r.dry_run, r.changes.is_empty()) {
        (_, true) => "no change",
        (true, false) => "would change (dry run, nothing applied)",
        (false, false) => "applied",
    };
    out.push_str(&format!("{}: {verb}\n", r.file));
    if !r.changes.is_empty() {
        let mut t = Table::new(&[("SECTION", Left), ("CHANGE", Left)]);
        for c in &r.changes {
            t.row([c.section.clone(), c.change.clone()]);
        }
        out.push_str(&t.render());
    }
    for n in &r.needs_restart {
        out.push_str(&format!(
            "note: {n} changed; it takes effect when lbd restarts\n"
        ));
    }
    out
}

/// One line saying what an add/weight/drain call left behind.
pub fn backend_summary(b: &Backend) -> String {
    format!(
        "{}: weight {}, effective {}, {}, {}",
        b.address,
        b.weight,
        b.effective_weight,
        b.health,
        admin(b)
    )
}

pub fn health(entries: &[HealthEntry], now_ms: u64) -> String {
    let mut t = Table::new(&[
        ("VIP", Left),
        ("ADDRESS", Left),
        ("HEALTH", Left),
        ("ADMIN", Left),
        ("EFFECTIVE", Right),
        ("LATENCY", Right),
        ("LAST CHECK", Left),
        ("SELF-CHECK", Left),
    ]);
    let mut notes = String::new();
    for e in entries {
        if let Some(why) = &e.no_new_flows {
            notes.push_str(&format!("{} {}: no new flows: {why}\n", e.vip, e.address));
        }
        t.row([
            e.vip.clone(),
            e.address.to_string(),
            e.health.to_string(),
            admin_label(e.admin, e.drained_by),
            e.effective_weight.to_string(),
            latency(e.last_check.as_ref()),
            last_check(e.last_check.as_ref(), now_ms),
            e.self_check.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut out = with_empty_note(t, "no backends");
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes);
    }
    out
}

/// Totals since the data plane was loaded (`lbctl stats` without `--watch`).
pub fn stats_totals(s: &Stats) -> String {
    let mut t = Table::new(&[
        ("VIP / BACKEND", Left),
        ("PACKETS", Right),
        ("BYTES", Right),
        ("NEW CONNS", Right),
        ("ACTIVE CONNS", Right),
    ]);
    for v in &s.vips {
        let active: u64 = v.backends.iter().map(|b| b.active_conns).sum();
        t.row([
            v.name.clone(),
            grouped(v.packets),
            grouped(v.bytes),
            grouped(v.new_conns),
            grouped(active),
        ]);
        for b in &v.backends {
            t.row([
                format!("  {}", b.address),
                grouped(b.packets),
                grouped(b.bytes),
                grouped(b.new_conns),
                grouped(b.active_conns),
            ]);
        }
    }
    let mut out = with_empty_note(t, "no VIPs");
    if !s.reasons.is_empty() {
        let mut r = Table::new(&[("REASON", Left), ("PACKETS", Right)]);
        for (k, v) in &s.reasons {
            r.row([k.clone(), grouped(*v)]);
        }
        out.push('\n');
        out.push_str(&r.render());
    }
    out
}

/// One screen of `lbctl stats --watch`.
pub fn rates_frame(r: &Rates) -> String {
    let mut t = Table::new(&[
        ("VIP / BACKEND", Left),
        ("PACKETS/S", Right),
        ("BYTES/S", Right),
        ("NEW CONNS/S", Right),
        ("ACTIVE CONNS", Right),
    ]);
    let rate = |v: Option<f64>, unit: &str| v.map_or_else(|| "-".to_string(), |v| si(v, unit));
    for v in &r.vips {
        t.row([
            v.name.clone(),
            rate(v.packets_per_s, ""),
            rate(v.bytes_per_s, "B"),
            rate(v.new_conns_per_s, ""),
            grouped(v.active_conns),
        ]);
        for b in &v.backends {
            t.row([
                format!("  {}", b.address),
                rate(b.packets_per_s, ""),
                rate(b.bytes_per_s, "B"),
                rate(b.new_conns_per_s, ""),
                grouped(b.active_conns),
            ]);
        }
    }
    let mut out = format!(
        "lbd rates over the last {:.1} s (Ctrl-C to stop)\n\n",
        r.interval_s
    );
    out.push_str(&with_empty_note(t, "no VIPs"));
    let busy: Vec<String> = r
        .reasons_per_s
        .iter()
        .filter_map(|(k, v)| v.filter(|v| *v > 0.0).map(|v| format!("{k} {}", si(v, ""))))
        .collect();
    if !busy.is_empty() {
        out.push_str(&format!("\nreasons/s: {}\n", busy.join("  ")));
    }
    out
}

fn with_empty_note(t: Table, what: &str) -> String {
    let mut out = t.render();
    if t.is_empty() {
        out.push_str(&format!("({what})\n"));
    }
    out
}

fn latency(c: Option<&LastCheck>) -> String {
    match c.and_then(|c| c.latency_ms) {
        Some(ms) if ms < 10.0 => format!("{ms:.2} ms"),
        Some(ms) => format!("{ms:.1} ms"),
        None => "-".to_string(),
    }
}

fn last_check(c: Option<&LastCheck>, now_ms: u64) -> String {
    let Some(c) = c else {
        return "never".to_string();
    };
    let ago = ago(c.at_unix_ms, now_ms);
    match (&c.error, c.ok) {
        (_, true) => format!("ok, {ago}"),
        (Some(err), false) => format!("failed {ago}: {err}"),
        (None, false) => format!("failed {ago}"),
    }
}

fn ago(at_ms: u64, now_ms: u64) -> String {
    if at_ms >= now_ms {
        return "just now".to_string();
    }
    format!("{} ago", duration((now_ms - at_ms) as f64 / 1000.0))
}

/// `93784` -> `1d 2h 3m 4s`; the two largest units only.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    let parts = [
        (s / 86_400, "d"),
        (s / 3_600 % 24, "h"),
        (s / 60 % 60, "m"),
        (s % 60, "s"),
    ];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    parts[first..]
        .iter()
        .take(2)
        .map(|(n, u)| format!("{n}{u}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A rate with an SI prefix: `512.0`, `1.50k`, `12.34 MB`.
pub fn si(v: f64, unit: &str) -> String {
    let (scaled, prefix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(f, _)| v >= *f)
        .map_or((v, ""), |(f, p)| (v / f, p));
    let decimals = if prefix.is_empty() { 1 } else { 2 };
    if unit.is_empty() {
        format!("{scaled:.decimals$}{prefix}")
    } else {
        format!("{scaled:.decimals$} {prefix}{unit}")
    }
}

/// `1234567` -> `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `lbctl forwarding`: VIPs, backend slots and the digest.
pub fn forwarding(f: &lb_dataplane::forwarding::ForwardingState) -> String {
    let mut vips = Table::new(&[
        ("VIP", Left),
        ("ID", Right),
        ("ALGO", Right),
        ("MODE", Right),
        ("TABLE", Right),
        ("TABLE DIGEST", Left),
    ]);
    for v in &f.vips {
        vips.row([
            v.key.clone(),
            v.id.to_string(),
            v.algorithm.to_string(),
            v.mode.to_string(),
            v.table_len.to_string(),
            v.table_digest.clone(),
        ]);
    }
    let mut slots = Table::new(&[
        ("SLOT", Right),
        ("BACKEND", Left),
        ("ACTIVE", Left),
        ("GENERATION", Right),
        ("MAC", Left),
    ]);
    for b in &f.backends {
        slots.row([
            b.id.to_string(),
            b.address.clone(),
            if b.active { "yes" } else { "no" }.to_string(),
            format!("{:08x}", b.generation),
            b.mac.clone(),
        ]);
    }
    format!(
        "{}\n{}\ndigest {}\n",
        vips.render(),
        slots.render(),
        f.digest
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(si(512.0, ""), "512.0");
        assert_eq!(si(1_500.0, ""), "1.50k");
        assert_eq!(si(750_000.0, "B"), "750.00 kB");
        assert_eq!(si(20.0, "B"), "20.0 B");
        assert_eq!(si(2.5e9, "B"), "2.50 GB");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0.2), "0s");
        assert_eq!(duration(59.0), "59s");
        assert_eq!(duration(93_784.0), "1d 2h");
        assert_eq!(duration(3_601.0), "1h 0m");
        assert_eq!(ago(10_000, 13_500), "3s ago");
        assert_eq!(ago(10_000, 9_000), "just now");
    }
}
