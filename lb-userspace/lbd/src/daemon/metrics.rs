//! `GET /metrics` in the Prometheus text format.

use std::{fmt::Write, time::Instant};

use axum::{extract::State as AxState, http::header, response::IntoResponse};

use super::State;
use crate::health::Health;

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Prometheus metrics of the data plane, health checks and VRRP.
#[utoipa::path(get, path = "/metrics", tag = "node",
    responses((status = OK, description = "the Prometheus text format",
        content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn handler(AxState(s): AxState<State>) -> impl IntoResponse {
    // Asked before taking the lock: the kernel's answer does not depend on the model.
    let attached = super::attach_metrics::prometheus(&s.config.dataplane.interfaces).await;
    let inner = s.inner.lock().await;
    let maps = inner.prog.maps();
    let now = Instant::now();
    let mut out = String::new();
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    head(
        &mut out,
        "lb_vip_packets_total",
        "counter",
        "Packets forwarded for a VIP.",
    );
    head(
        &mut out,
        "lb_vip_bytes_total",
        "counter",
        "Bytes forwarded for a VIP.",
    );
    head(
        &mut out,
        "lb_vip_new_connections_total",
        "counter",
        "New flows of a VIP.",
    );
    for v in inner.vips.values() {
        let Some(id) = inner.prog.vip_id(&v.cfg.name) else {
            continue;
        };
        if let Ok(t) = maps.vip_totals(id) {
            let l = format!("vip=\"{}\"", esc(&v.cfg.name));
            let _ = writeln!(out, "lb_vip_packets_total{{{l}}} {}", t.packets);
            let _ = writeln!(out, "lb_vip_bytes_total{{{l}}} {}", t.bytes);
            let _ = writeln!(out, "lb_vip_new_connections_total{{{l}}} {}", t.new_conns);
        }
    }
    head(
        &mut out,
        "lb_backend_packets_total",
        "counter",
        "Packets forwarded to a backend.",
    );
    head(
        &mut out,
        "lb_backend_bytes_total",
        "counter",
        "Bytes forwarded to a backend.",
    );
    head(
        &mut out,
        "lb_backend_new_connections_total",
        "counter",
        "New flows sent to a backend.",
    );
    head(
        &mut out,
        "lb_backend_active_connections",
        "gauge",
        "Flows in the connection table (last sweep).",
    );
    head(
        &mut out,
        "lb_backend_up",
        "gauge",
        "1 healthy, 0 unhealthy, -1 unknown.",
    );
    head(
        &mut out,
        "lb_backend_effective_weight",
        "gauge",
        "Weight new flows see (0 draining/unhealthy).",
    );
    head(
        &mut out,
        "lb_backend_check_latency_seconds",
        "gauge",
        "Latency of the last health check.",
    );
    head(
        &mut out,
        "lb_backend_self_check_findings",
        "gauge",
        "Findings of the backend's check of its own setup, by status (ok, warn, fail).",
    );
    head(
        &mut out,
        "lb_backend_self_check_blocked",
        "gauge",
        "1 when the backend's self-check fails: it gets no new flows.",
    );
    for v in inner.vips.values() {
        for (addr, b) in &v.backends {
            let l = format!("vip=\"{}\",backend=\"{addr}\"", esc(&v.cfg.name));
            if let Some(bid) = inner.prog.backend_id(&v.cfg.name, *addr)
                && let Ok(t) = maps.backend_totals(bid)
            {
                let _ = writeln!(out, "lb_backend_packets_total{{{l}}} {}", t.packets);
                let _ = writeln!(out, "lb_backend_bytes_total{{{l}}} {}", t.bytes);
                let _ = writeln!(
                    out,
                    "lb_backend_new_connections_total{{{l}}} {}",
                    t.new_conns
                );
                let active = inner.active.get(&bid).copied().unwrap_or(0);
                let _ = writeln!(out, "lb_backend_active_connections{{{l}}} {active}");
            }
            let up = match b.machine.state() {
                Health::Healthy => 1,
                Health::Unhealthy => 0,
                Health::Unknown => -1,
            };
            let _ = writeln!(out, "lb_backend_up{{{l}}} {up}");
            let _ = writeln!(
                out,
                "lb_backend_effective_weight{{{l}}} {}",
                b.effective_weight(&v.cfg.health, now)
            );
            // Only a check that succeeded has a latency (a refusal's is not one).
            if let Some(ms) = b.last.as_ref().and_then(|c| c.latency_ms) {
                let _ = writeln!(out, "lb_backend_check_latency_seconds{{{l}}} {}", ms / 1e3);
            }
            if let Some(r) = &b.self_check {
                use lb_api::selfcheck::Status;
                for (status, name) in [
                    (Status::Ok, "ok"),
                    (Status::Warn, "warn"),
                    (Status::Fail, "fail"),
                ] {
                    let n = r.findings.iter().filter(|f| f.status == status).count();
                    let _ = writeln!(
                        out,
                        "lb_backend_self_check_findings{{{l},status=\"{name}\"}} {n}"
                    );
                }
                let _ = writeln!(
                    out,
                    "lb_backend_self_check_blocked{{{l}}} {}",
                    u8::from(b.self_check_blocks())
                );
            }
        }
    }
    head(
        &mut out,
        "lb_dataplane_packets_total",
        "counter",
        "Packets by data-plane decision (pass/tx/drop reason).",
    );
    if let Ok(reasons) = maps.reasons() {
        for (r, n) in reasons {
            let _ = writeln!(
                out,
                "lb_dataplane_packets_total{{reason=\"{}\"}} {n}",
                r.name()
            );
        }
    }
    head(
        &mut out,
        "lb_table_swap_seconds",
        "gauge",
        "Duration of the last table recompute and swap.",
    );
    let _ = writeln!(
        out,
        "lb_table_swap_seconds {}",
        inner
            .last_table_swap
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    );
    head(
        &mut out,
        "lb_captures_running",
        "gauge",
        "Captures inside the data plane running now (lbctl capture).",
    );
    let _ = writeln!(out, "lb_captures_running {}", s.captures.running());
    head(
        &mut out,
        "lb_table_swaps_total",
        "counter",
        "Lookup tables swapped (a backend joining or leaving a VIP swaps its table).",
    );
    let _ = writeln!(out, "lb_table_swaps_total {}", inner.table_swaps);
    out.push_str(&attached);
    if let Some(v) = s.vrrp_statuses() {
        out.push_str(&super::vrrp_metrics::prometheus(&v.overview()));
    }
    if let Some(o) = s.bgp.get().and_then(|b| b.overview()) {
        out.push_str(&super::bgp_metrics::prometheus(&o));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
