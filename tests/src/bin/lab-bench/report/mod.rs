//! Medians, ratios, target verdicts, and the two outputs: a table and one JSON object.
//!
//! Every round runs every option once, so round *r* of one option is paired with round *r* of
//! the direct baseline: ratios and "added CPU" are computed per round, then the median is
//! taken, which cancels most of the drift of a shared machine between rounds.

use serde_json::{Value, json};
pub use tests::stats::median;

mod format;

use format::{fmt, fmt_int, per_packet_ns, render};

use crate::Opt;
use crate::udp::UdpResult;
use crate::wrk::{ConnMode, WrkResult};

/// XDP throughput must reach this share of direct.
pub const RPS_TARGET: f64 = 0.95;
/// XDP added CPU per request at most this share of nginx's.
pub const CPU_TARGET: f64 = 0.10;
/// What issue 7 measured by hand for nginx stream on this kind of machine (µs per request).
const NGINX_REFERENCE_KEEPALIVE_US: u32 = 20;
const NGINX_REFERENCE_CLOSE_US: u32 = 110;

/// The measured runs of one option in one connection mode, one per round.
#[derive(Debug, Clone)]
pub struct HttpRuns {
    pub option: Opt,
    pub mode: ConnMode,
    pub runs: Vec<WrkResult>,
}

/// The UDP runs of one option, one per round (empty: not supported, HAProxy).
#[derive(Debug, Clone)]
pub struct UdpRuns {
    pub option: Opt,
    pub runs: Vec<UdpResult>,
}

/// Settings echoed in both outputs.
#[derive(Debug, Clone)]
pub struct Setup {
    pub rounds: usize,
    pub duration_s: u64,
    pub threads: u32,
    pub connections: u32,
    pub path: String,
    pub udp: Option<UdpSetup>,
    pub cpus: usize,
    /// lbd's `xdp_mode` on the balancers.
    pub xdp_mode: &'static str,
    /// What joins the lab's hosts: `bridge` or `macvlan`.
    pub segment: &'static str,
}

#[derive(Debug, Clone)]
pub struct UdpSetup {
    pub duration_s: u64,
    pub flows: usize,
    pub payload_bytes: usize,
}

pub struct Results {
    pub setup: Setup,
    pub background_busy_percent: Vec<f64>,
    pub http: Vec<HttpRuns>,
    pub udp: Vec<UdpRuns>,
}

/// Medians of one HTTP row.
#[derive(Debug, Clone, Copy)]
struct HttpRow {
    option: Opt,
    mode: ConnMode,
    rps: f64,
    rps_ratio: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    added_us: f64,
    added_vs_nginx: f64,
    lab_us: f64,
    lab_added_us: f64,
    lab_added_vs_nginx: f64,
    errors: u64,
}

#[derive(Debug, Clone, Copy)]
struct UdpRow {
    option: Opt,
    supported: bool,
    sent_pps: f64,
    received_pps: f64,
    ratio: f64,
    loss_percent: f64,
    cpu_ns_per_packet: f64,
    lab_ns_per_packet: f64,
}

struct Verdict {
    key: String,
    text: String,
    value: f64,
    limit: f64,
    /// None: the baseline it needs was not measurable (e.g. nginx added no CPU).
    met: Option<bool>,
}

impl Results {
    fn http_runs(&self, option: Opt, mode: ConnMode) -> Option<&HttpRuns> {
        self.http
            .iter()
            .find(|h| h.option == option && h.mode == mode)
    }

    fn paired(
        &self,
        option: Opt,
        mode: ConnMode,
        f: impl Fn(&WrkResult, &WrkResult) -> f64,
    ) -> f64 {
        let (Some(o), Some(d)) = (
            self.http_runs(option, mode),
            self.http_runs(Opt::Direct, mode),
        ) else {
            return f64::NAN;
        };
        median(o.runs.iter().zip(&d.runs).map(|(o, d)| f(o, d)).collect())
    }

    fn http_rows(&self) -> Vec<HttpRow> {
        let mut rows: Vec<HttpRow> = self
            .http
            .iter()
            .map(|h| {
                let m = |f: fn(&WrkResult) -> f64| median(h.runs.iter().map(f).collect());
                HttpRow {
                    option: h.option,
                    mode: h.mode,
                    rps: m(WrkResult::rps),
                    rps_ratio: self.paired(h.option, h.mode, |o, d| o.rps() / d.rps()),
                    p50_ms: m(|r| r.p50_us / 1000.0),
                    p99_ms: m(|r| r.p99_us / 1000.0),
                    cpu_us: m(WrkResult::cpu_us_per_request),
                    added_us: self.paired(h.option, h.mode, |o, d| {
                        o.cpu_us_per_request() - d.cpu_us_per_request()
                    }),
                    added_vs_nginx: f64::NAN,
                    lab_us: m(WrkResult::lab_us_per_request),
                    lab_added_us: self.paired(h.option, h.mode, |o, d| {
                        o.lab_us_per_request() - d.lab_us_per_request()
                    }),
                    lab_added_vs_nginx: f64::NAN,
                    errors: h.runs.iter().map(WrkResult::errors).sum(),
                }
            })
            .collect();
        let nginx: Vec<(ConnMode, f64, f64)> = rows
            .iter()
            .filter(|r| r.option == Opt::Nginx)
            .map(|r| (r.mode, r.added_us, r.lab_added_us))
            .collect();
        for r in &mut rows {
            if r.option == Opt::Direct {
                continue;
            }
            if let Some((_, n, lab)) = nginx.iter().find(|(m, _, _)| *m == r.mode) {
                if *n > 0.0 {
                    r.added_vs_nginx = r.added_us / n;
                }
                if *lab > 0.0 {
                    r.lab_added_vs_nginx = r.lab_added_us / lab;
                }
            }
        }
        rows
    }

    fn udp_rows(&self) -> Vec<UdpRow> {
        let direct = self.udp.iter().find(|u| u.option == Opt::Direct);
        self.udp
            .iter()
            .map(|u| {
                let m = |f: fn(&UdpResult) -> f64| median(u.runs.iter().map(f).collect());
                let ratio = match direct {
                    Some(d) if !u.runs.is_empty() => median(
                        u.runs
                            .iter()
                            .zip(&d.runs)
                            .map(|(o, d)| o.received_pps() / d.received_pps())
                            .collect(),
                    ),
                    _ => f64::NAN,
                };
                UdpRow {
                    option: u.option,
                    supported: !u.runs.is_empty(),
                    sent_pps: m(UdpResult::sent_pps),
                    received_pps: m(UdpResult::received_pps),
                    ratio,
                    loss_percent: m(|r| r.loss() * 100.0),
                    cpu_ns_per_packet: m(|r| per_packet_ns(r.cpu_busy_us, r.received)),
                    lab_ns_per_packet: m(|r| per_packet_ns(r.lab_busy_us, r.received)),
                }
            })
            .collect()
    }

    fn verdicts(&self, rows: &[HttpRow]) -> Vec<Verdict> {
        let mut out = Vec::new();
        for mode in ConnMode::ALL {
            let Some(x) = rows.iter().find(|r| r.option == Opt::Xdp && r.mode == mode) else {
                continue;
            };
            out.push(Verdict {
                key: format!("xdp_rps_ratio_to_direct_{}", mode.key()),
                text: format!(
                    "XDP throughput vs direct, {}: {:.3} (target ≥ {RPS_TARGET})",
                    mode.key(),
                    x.rps_ratio
                ),
                value: x.rps_ratio,
                limit: RPS_TARGET,
                met: (!x.rps_ratio.is_nan()).then_some(x.rps_ratio >= RPS_TARGET),
            });
            let nginx = rows
                .iter()
                .find(|r| r.option == Opt::Nginx && r.mode == mode);
            for (key, what, xdp, ngx, ratio) in [
                (
                    "xdp_added_cpu_ratio_to_nginx",
                    "machine-wide",
                    x.added_us,
                    nginx.map(|n| n.added_us).unwrap_or(f64::NAN),
                    x.added_vs_nginx,
                ),
                (
                    "xdp_added_lab_cpu_ratio_to_nginx",
                    "lab tasks",
                    x.lab_added_us,
                    nginx.map(|n| n.lab_added_us).unwrap_or(f64::NAN),
                    x.lab_added_vs_nginx,
                ),
            ] {
                out.push(Verdict {
                    key: format!("{key}_{}", mode.key()),
                    text: format!(
                        "XDP added CPU vs nginx's ({what}), {}: {xdp:.1} µs vs {ngx:.1} µs per request = {ratio:.3} (target ≤ {CPU_TARGET})",
                        mode.key(),
                    ),
                    value: ratio,
                    limit: CPU_TARGET,
                    met: (ngx > 0.0).then_some(ratio <= CPU_TARGET),
                });
            }
        }
        out
    }

    /// The readable report.
    pub fn table(&self) -> String {
        let s = &self.setup;
        let rows = self.http_rows();
        let mut out = String::new();
        out.push_str(&format!(
            "HTTP GET {} — wrk -t{} -c{}, {} s per run, median of {} rounds; CPU = machine-wide non-idle time ({} CPUs) / requests; lab = run time of the lab's tasks / requests; lbd xdp_mode {}; segment {}\n",
            s.path, s.threads, s.connections, s.duration_s, s.rounds, s.cpus, s.xdp_mode, s.segment
        ));
        let header = [
            "option",
            "connection",
            "req/s",
            "× direct",
            "p50 ms",
            "p99 ms",
            "CPU µs/req",
            "added µs/req",
            "added × nginx",
            "lab µs/req",
            "lab added",
            "lab × nginx",
            "errors",
        ];
        let mut cells: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
        for mode in ConnMode::ALL {
            for r in rows.iter().filter(|r| r.mode == mode) {
                // The direct row is what the "added" columns are measured against.
                let added = |us: f64| {
                    if r.option == Opt::Direct {
                        "(baseline)".into()
                    } else {
                        fmt(us, 1)
                    }
                };
                cells.push(vec![
                    r.option.label().to_string(),
                    mode.key().to_string(),
                    fmt_int(r.rps),
                    fmt(r.rps_ratio, 3),
                    fmt(r.p50_ms, 2),
                    fmt(r.p99_ms, 2),
                    fmt(r.cpu_us, 1),
                    added(r.added_us),
                    fmt(r.added_vs_nginx, 3),
                    fmt(r.lab_us, 1),
                    added(r.lab_added_us),
                    fmt(r.lab_added_vs_nginx, 3),
                    r.errors.to_string(),
                ]);
            }
        }
        out.push_str(&render(&cells));
        if let Some(u) = &s.udp {
            out.push_str(&format!(
                "\nUDP, {}-byte payloads, {} flows, {} s per run (median of {} rounds); forwarded = received by the backends' sinks\n",
                u.payload_bytes, u.flows, u.duration_s, s.rounds
            ));
            let mut cells: Vec<Vec<String>> = vec![
                [
                    "option",
                    "sent pkt/s",
                    "forwarded pkt/s",
                    "× direct",
                    "loss %",
                    "CPU ns/pkt",
                    "lab ns/pkt",
                ]
                .iter()
                .map(|h| h.to_string())
                .collect(),
            ];
            for r in self.udp_rows() {
                if r.supported {
                    cells.push(vec![
                        r.option.label().to_string(),
                        fmt_int(r.sent_pps),
                        fmt_int(r.received_pps),
                        fmt(r.ratio, 3),
                        fmt(r.loss_percent, 1),
                        fmt_int(r.cpu_ns_per_packet),
                        fmt_int(r.lab_ns_per_packet),
                    ]);
                } else {
                    let mut row = vec![r.option.label().to_string()];
                    row.extend(std::iter::repeat_n("n/a".to_string(), 6));
                    cells.push(row);
                }
            }
            out.push_str(&render(&cells));
        }
        out.push_str(&format!(
            "\nbackground load before each round (machine-wide busy %): {}\n",
            self.background_busy_percent
                .iter()
                .map(|b| format!("{b:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let nginx = |mode: ConnMode, lab: bool| {
            rows.iter()
                .find(|r| r.option == Opt::Nginx && r.mode == mode)
                .map(|r| if lab { r.lab_added_us } else { r.added_us })
                .unwrap_or(f64::NAN)
        };
        out.push_str(&format!(
            "nginx added CPU per request, keep-alive / close: {} / {} µs machine-wide, {} / {} µs lab tasks (issue 7, by hand on this kind of machine: ~{NGINX_REFERENCE_KEEPALIVE_US} / ~{NGINX_REFERENCE_CLOSE_US} µs)\n",
            fmt(nginx(ConnMode::KeepAlive, false), 1),
            fmt(nginx(ConnMode::Close, false), 1),
            fmt(nginx(ConnMode::KeepAlive, true), 1),
            fmt(nginx(ConnMode::Close, true), 1),
        ));
        out.push('\n');
        for v in self.verdicts(&rows) {
            let word = match v.met {
                Some(true) => "MET",
                Some(false) => "MISSED",
                None => "NOT MEASURABLE",
            };
            out.push_str(&format!("target {word}: {}\n", v.text));
        }
        out
    }

    /// The same figures as one JSON object.
    pub fn json(&self) -> Value {
        let s = &self.setup;
        let rows = self.http_rows();
        let http: Vec<Value> = rows
            .iter()
            .map(|r| {
                let runs = self
                    .http_runs(r.option, r.mode)
                    .map(|h| {
                        h.runs
                            .iter()
                            .map(|w| {
                                json!({
                                    "requests": w.requests,
                                    "requests_per_s": w.rps(),
                                    "latency_p50_ms": w.p50_us / 1000.0,
                                    "latency_p99_ms": w.p99_us / 1000.0,
                                    "cpu_us_per_request": w.cpu_us_per_request(),
                                    "lab_cpu_us_per_request": w.lab_us_per_request(),
                                    "errors": w.errors(),
                                })
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                json!({
                    "option": r.option.key(),
                    "connection": r.mode.key(),
                    "requests_per_s": r.rps,
                    "rps_ratio_to_direct": r.rps_ratio,
                    "latency_p50_ms": r.p50_ms,
                    "latency_p99_ms": r.p99_ms,
                    "cpu_us_per_request": r.cpu_us,
                    "added_cpu_us_per_request": r.added_us,
                    "added_cpu_ratio_to_nginx": r.added_vs_nginx,
                    "lab_cpu_us_per_request": r.lab_us,
                    "added_lab_cpu_us_per_request": r.lab_added_us,
                    "added_lab_cpu_ratio_to_nginx": r.lab_added_vs_nginx,
                    "errors": r.errors,
                    "rounds": runs,
                })
            })
            .collect();
        let udp: Vec<Value> = self
            .udp_rows()
            .iter()
            .map(|r| {
                if r.supported {
                    json!({
                        "option": r.option.key(),
                        "supported": true,
                        "sent_pps": r.sent_pps,
                        "forwarded_pps": r.received_pps,
                        "pps_ratio_to_direct": r.ratio,
                        "loss_percent": r.loss_percent,
                        "cpu_ns_per_packet": r.cpu_ns_per_packet,
                        "lab_cpu_ns_per_packet": r.lab_ns_per_packet,
                    })
                } else {
                    json!({"option": r.option.key(), "supported": false})
                }
            })
            .collect();
        let targets: Vec<Value> = self
            .verdicts(&rows)
            .iter()
            .map(|v| json!({"name": v.key, "value": v.value, "limit": v.limit, "met": v.met}))
            .collect();
        json!({
            "bench": "lab",
            "config": {
                "rounds": s.rounds,
                "duration_s": s.duration_s,
                "wrk_threads": s.threads,
                "wrk_connections": s.connections,
                "path": s.path,
                "cpus": s.cpus,
                "xdp_mode": s.xdp_mode,
                "segment": s.segment,
                "udp": s.udp.as_ref().map(|u| json!({
                    "duration_s": u.duration_s,
                    "flows": u.flows,
                    "payload_bytes": u.payload_bytes,
                })),
            },
            "background_busy_percent": self.background_busy_percent,
            "http": http,
            "udp": udp,
            "targets": targets,
            "nginx_reference_added_cpu_us_per_request": {
                "keep-alive": NGINX_REFERENCE_KEEPALIVE_US,
                "close": NGINX_REFERENCE_CLOSE_US,
            },
        })
    }
}

#[cfg(test)]
mod unit;
