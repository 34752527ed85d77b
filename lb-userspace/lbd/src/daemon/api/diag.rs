//! The diagnostics endpoints (docs/troubleshooting.md): `POST /v1/capture` streams a capture
//! inside the data plane (the capture itself runs in `capture`), `GET /v1/vips/{vip}/trace`
//! says where a flow goes and why, from the live maps.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{Query, State as AxState},
    http::header,
    response::{IntoResponse, Response},
};
use lb_api::diag::{
    CaptureRequest, DEFAULT_CAPTURE_COUNT, DEFAULT_CAPTURE_SECONDS, MAX_CAPTURE_COUNT,
    MAX_CAPTURE_SECONDS, Trace, TraceBackend, TraceCandidate, TraceCpu, TraceDecision, TraceEntry,
    TracePick, TraceQuery,
};
use lb_common::{ConnEntry, FlowKey, Reason, capture::CAPTURE_MAX_SNAP};
use lb_dataplane::{
    Maps,
    capture::{CaptureFilter, DEFAULT_SNAP_LEN, Prefix},
    trace::{AlgorithmTrace, Decision, FirstPacket},
};

use lb_api::types::ErrorCode;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{
    error::{ApiError, ApiPath, JsonBody},
    vips::VipPath,
};
use crate::daemon::{
    Inner, State,
    capture::{Plan, StartError},
    model::{self, VipRuntime},
};

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Invalid, m)
}

/// Checks a capture request and resolves its names to data-plane ids.
fn plan(inner: &Inner, mut req: CaptureRequest) -> Result<Plan, ApiError> {
    let mut filter = CaptureFilter::default();
    if let Some(name) = &req.vip {
        if !inner.vips.contains_key(name) {
            return Err(ApiError::not_found(format!("no VIP named {name}")));
        }
        filter.vip_id = Some(inner.prog.vip_id(name).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Conflict,
                format!("VIP {name} is not in the data plane yet"),
            )
        })?);
    }
    if let Some(addr) = req.backend {
        filter.backend_ids = inner
            .prog
            .backend_ids()
            .filter(|(v, a, _)| *a == addr && req.vip.as_deref().is_none_or(|n| n == *v))
            .map(|(_, _, id)| id)
            .collect();
        if filter.backend_ids.is_empty() {
            return Err(ApiError::not_found(match &req.vip {
                Some(v) => format!("{addr} is not a backend of VIP {v}"),
                None => format!("{addr} is no VIP's backend"),
            }));
        }
    }
    if let Some(c) = &req.client {
        filter.client = Some(
            c.parse::<Prefix>()
                .map_err(|e| invalid(format!("client: {e}")))?,
        );
    }
    for name in &req.reasons {
        let r = Reason::ALL
            .iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| {
                let all: Vec<&str> = Reason::ALL.iter().map(|r| r.name()).collect();
                invalid(format!(
                    "reasons: {name:?} is not a reason (one of {})",
                    all.join(", ")
                ))
            })?;
        filter.reasons.push(*r);
    }
    let sample = req.sample.unwrap_or(1);
    if !(1..=1_000_000).contains(&sample) {
        return Err(invalid("sample: must be 1-1000000 (keep one packet in N)"));
    }
    filter.sample_every = sample;
    let snap = req.snap_len.unwrap_or(DEFAULT_SNAP_LEN);
    if !(1..=CAPTURE_MAX_SNAP).contains(&snap) {
        return Err(invalid(format!("snap_len: must be 1-{CAPTURE_MAX_SNAP}")));
    }
    filter.snap_len = snap;
    filter.output = req.output;
    let count = req.count.unwrap_or(DEFAULT_CAPTURE_COUNT);
    if !(1..=MAX_CAPTURE_COUNT).contains(&count) {
        return Err(invalid(format!("count: must be 1-{MAX_CAPTURE_COUNT}")));
    }
    let secs = req.duration_s.unwrap_or(DEFAULT_CAPTURE_SECONDS);
    if !(secs.is_finite() && secs > 0.0 && secs <= MAX_CAPTURE_SECONDS) {
        return Err(invalid(format!(
            "duration_s: must be more than 0 and at most {MAX_CAPTURE_SECONDS}"
        )));
    }
    req.sample = Some(sample);
    req.snap_len = Some(snap);
    req.count = Some(count);
    req.duration_s = Some(secs);
    Ok(Plan {
        request: req,
        filter,
        count,
        duration: Duration::from_secs_f64(secs),
    })
}

/// Captures packets inside the data plane, each with its verdict: one JSON `CaptureEvent`
/// per line (`application/x-ndjson`): `started`, a `packet` per record, `end` (why, counts).
/// The capture ends at `count` packets, after `duration_s`, or when the client closes the
/// connection (`lbctl capture`, docs/troubleshooting.md).
#[utoipa::path(post, path = "/v1/capture", tag = "diagnostics", request_body = CaptureRequest,
    responses(
        (status = OK, description = "the capture, one event per line until it ends", body = lb_api::diag::CaptureEvent, content_type = "application/x-ndjson"),
        (status = NOT_FOUND, description = "no such VIP, or the address is not its backend", body = lb_api::types::ErrorBody),
        (status = CONFLICT, description = "the VIP is not in the data plane yet", body = lb_api::types::ErrorBody),
        (status = UNPROCESSABLE_ENTITY, description = "a filter out of range (sample, snap_len, count, duration_s, a reason's name, a client prefix)", body = lb_api::types::ErrorBody),
        (status = TOO_MANY_REQUESTS, description = "as many captures run as lbd allows", body = lb_api::types::ErrorBody),
        (status = SERVICE_UNAVAILABLE, description = "the data plane has no capture program", body = lb_api::types::ErrorBody),
    ))]
pub async fn capture(
    AxState(s): AxState<State>,
    JsonBody(req): JsonBody<CaptureRequest>,
) -> Result<Response, ApiError> {
    let plan = {
        let inner = s.inner.lock().await;
        plan(&inner, req)?
    };
    let rx = s.captures.start(plan).await.map_err(|e| match e {
        StartError::Busy => ApiError::new(ErrorCode::Busy, e.to_string()),
        StartError::Unavailable => ApiError::new(ErrorCode::Unavailable, e.to_string()),
        StartError::Dataplane(_) => ApiError::internal(e),
    })?;
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = rx.recv().await?;
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(line)), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// The query of `GET /v1/vips/{vip}/trace`, as strings so that a bad value gets our error
/// (the document gives each its type).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RawTraceQuery {
    /// The client's `ADDR:PORT` (IPv6 as `[ADDR]:PORT`).
    #[param(required = true, value_type = String, example = "10.77.0.100:40000")]
    client: Option<String>,
    /// The flow's protocol; left out: the VIP's.
    #[param(value_type = Option<lb_api::types::Protocol>)]
    protocol: Option<String>,
    /// The destination port; required for a VIP on every port (port 0).
    #[param(value_type = Option<u16>, minimum = 0, maximum = 65535)]
    port: Option<String>,
    /// The packet traced: `syn` (a new connection, the default) or `other`.
    #[param(value_type = Option<String>, pattern = "^(syn|other)$")]
    first: Option<String>,
}

fn trace_query(q: RawTraceQuery) -> Result<TraceQuery, ApiError> {
    let client = q
        .client
        .ok_or_else(|| ApiError::bad_request("client: required (ADDR:PORT)"))?;
    // 422: any text is a string by the schema; which texts are addresses, it cannot say.
    let client: SocketAddr = client.parse().map_err(|_| {
        invalid(format!(
            "client: {client:?} is not ADDR:PORT (IPv6 as [ADDR]:PORT)"
        ))
    })?;
    let port = q
        .port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| ApiError::bad_request(format!("port: {p:?} is not a port")))
        })
        .transpose()?;
    Ok(TraceQuery {
        client,
        protocol: q.protocol,
        port,
        first: q.first,
    })
}

/// Where a client's flow to a VIP goes and why, from the live maps: its connection-table
/// entry, the algorithm's table slot, the backend's state and weight (`lbctl trace`).
#[utoipa::path(get, path = "/v1/vips/{vip}/trace", tag = "diagnostics",
    params(VipPath, RawTraceQuery),
    responses(
        (status = OK, description = "the flow's path through the data plane", body = Trace),
        (status = NOT_FOUND, description = "no VIP of that name", body = lb_api::types::ErrorBody),
        (status = UNPROCESSABLE_ENTITY, description = "a client that is not ADDR:PORT or of the other family than the VIP's, a protocol the VIP lacks, no port for a VIP on every port", body = lb_api::types::ErrorBody),
    ))]
pub async fn trace(
    AxState(s): AxState<State>,
    ApiPath(VipPath { vip }): ApiPath<VipPath>,
    q: Result<Query<RawTraceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Trace>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let q = trace_query(q)?;
    let inner = s.inner.lock().await;
    let v = inner
        .vips
        .get(&vip)
        .ok_or_else(|| ApiError::not_found(format!("no VIP named {vip}")))?;
    let proto = match q.protocol.as_deref() {
        None => v.cfg.proto,
        Some(p) => lb_config::parse_protocol(p).map_err(|e| invalid(format!("protocol: {e}")))?,
    };
    let port = match (q.port, v.cfg.port) {
        (Some(p), _) => p,
        (None, 0) => {
            return Err(invalid(
                "port: VIP {vip} takes every port: say which (port=N)".replace("{vip}", &vip),
            ));
        }
        (None, p) => p,
    };
    if q.client.is_ipv4() != v.cfg.address.is_ipv4() {
        return Err(invalid(format!(
            "client: {} is not of the VIP's address family ({})",
            q.client.ip(),
            v.cfg.address
        )));
    }
    let first = match q.first.as_deref() {
        None | Some("syn") => FirstPacket::Syn,
        Some("other") => FirstPacket::Other,
        Some(f) => return Err(invalid(format!("first: {f:?} is not syn or other"))),
    };
    let flow = FlowKey::new(q.client.ip(), q.client.port(), v.cfg.address, port, proto);
    let maps = inner.prog.maps();
    let t = maps.trace(&flow, first).map_err(ApiError::internal)?;
    let who = Who::new(&inner);
    let backend = |id: u32| who.backend(maps, id);
    let first_name = match t.first_packet {
        FirstPacket::Syn => "syn",
        FirstPacket::Other => "other",
    };
    let entry = t.entry.map(|e| TraceEntry {
        backend: backend(e.backend_id),
        closing: e.closing,
        vip_valid: e.vip_valid,
        backend_usable: e.backend_usable,
        idle_s: idle_seconds(maps, e.last_seen_jiffies),
    });
    let cpu = |c: &lb_dataplane::trace::CpuPick| TraceCpu {
        cpu: c.cpu,
        cursor: c.cursor,
        position: c.position,
        backend: c.backend_id.map(backend),
    };
    let pick = match &t.pick {
        AlgorithmTrace::Hashed {
            hash,
            position,
            backend_id,
        } => TracePick::Hashed {
            hash: *hash,
            position: *position,
            backend: backend_id.map(backend),
        },
        AlgorithmTrace::RoundRobin { per_cpu } => TracePick::RoundRobin {
            per_cpu: per_cpu.iter().map(cpu).collect(),
        },
        AlgorithmTrace::LeastConnections {
            start,
            candidates,
            backend_id,
        } => TracePick::LeastConnections {
            start: *start,
            candidates: candidates
                .iter()
                .map(|c| TraceCandidate {
                    backend: backend(c.backend_id),
                    weight: c.weight,
                    connections: c.connections,
                })
                .collect(),
            backend: backend_id.map(backend),
        },
        AlgorithmTrace::Empty => TracePick::Empty,
    };
    let named_id = inner.prog.vip_id(&vip);
    let decision = match (&t.vip, &t.decision) {
        (Some(found), _)
            if Some(found.id) != named_id && !matches!(t.decision, Decision::Entry { .. }) =>
        {
            TraceDecision::OtherVip {
                vip: who
                    .vips
                    .get(&found.id)
                    .cloned()
                    .unwrap_or_else(|| format!("id {}", found.id)),
            }
        }
        (_, Decision::Entry { backend_id }) => TraceDecision::Entry {
            backend: backend(*backend_id),
        },
        (_, Decision::Algorithm { backend_id }) => TraceDecision::Algorithm {
            backend: backend(*backend_id),
        },
        (_, Decision::PerCpu { backend_ids }) => TraceDecision::PerCpu {
            per_cpu: match &pick {
                TracePick::RoundRobin { per_cpu } => per_cpu
                    .iter()
                    .map(|c| TraceCpu {
                        backend: backend_ids
                            .iter()
                            .find(|(cpu, _)| *cpu == c.cpu)
                            .and_then(|(_, id)| id.map(backend)),
                        ..c.clone()
                    })
                    .collect(),
                _ => Vec::new(),
            },
        },
        (_, Decision::NoBackend) => TraceDecision::NoBackend,
        (_, Decision::NotAVip) => TraceDecision::NotAVip,
    };
    let mut trace = Trace {
        vip: vip.clone(),
        client: q.client,
        destination: SocketAddr::new(v.cfg.address, port),
        protocol: lb_config::protocol_name(proto).to_string(),
        first: first_name.into(),
        algorithm: lb_config::algorithm_name(v.cfg.algorithm).into(),
        mode: lb_config::mode_name(v.cfg.mode).into(),
        slot: t.slot,
        table_len: t.table_len,
        entry,
        pick,
        decision,
        explanation: Vec::new(),
    };
    trace.explanation = explain(&trace, v);
    Ok(Json(trace))
}

/// Seconds since `jiffies`, placed on the monotonic clock with the data plane's anchor.
fn idle_seconds(maps: &Maps, jiffies: u64) -> Option<f64> {
    let anchor = maps.clock_anchor()?;
    let e = ConnEntry {
        last_seen: jiffies,
        ..Default::default()
    };
    let seen = Maps::last_seen_ns(anchor, Maps::jiffy_ns(), &e);
    Some(Maps::coarse_now_ns().saturating_sub(seen) as f64 / 1e9)
}

/// Names and model state for backend slots.
struct Who<'a> {
    inner: &'a Inner,
    slots: HashMap<u32, (String, IpAddr)>,
    vips: HashMap<u32, String>,
    now: Instant,
}

impl<'a> Who<'a> {
    fn new(inner: &'a Inner) -> Self {
        let slots = inner
            .prog
            .backend_ids()
            .map(|(v, a, id)| (id, (v.to_string(), a)))
            .collect();
        let vips = inner
            .vips
            .keys()
            .filter_map(|n| inner.prog.vip_id(n).map(|id| (id, n.clone())))
            .collect();
        Self {
            inner,
            slots,
            vips,
            now: Instant::now(),
        }
    }

    fn backend(&self, maps: &Maps, id: u32) -> TraceBackend {
        let active = maps
            .backend(id)
            .map(|b| b.flags & lb_common::BACKEND_F_ACTIVE != 0)
            .unwrap_or(false);
        let mut out = TraceBackend {
            id,
            address: None,
            vip: None,
            active,
            weight: None,
            effective_weight: None,
            health: None,
            admin: None,
            no_new_flows: None,
        };
        let Some((vip, addr)) = self.slots.get(&id) else {
            return out;
        };
        out.address = Some(*addr);
        out.vip = Some(vip.clone());
        if let Some(v) = self.inner.vips.get(vip)
            && let Some(b) = v.backends.get(addr)
        {
            let view = model::backend_view(v, *addr, b, self.now);
            out.weight = Some(view.weight);
            out.effective_weight = Some(view.effective_weight);
            out.health = Some(view.health.to_string());
            out.admin = Some(view.admin.to_string());
            out.no_new_flows = model::no_new_flows(v, b, self.now);
        }
        out
    }
}

fn name(b: &TraceBackend) -> String {
    match (&b.address, &b.vip) {
        (Some(a), Some(v)) => format!("{a} (backend {} of {v})", b.id),
        _ => format!("backend slot {} (no backend lbd knows)", b.id),
    }
}

/// The trace in words.
fn explain(t: &Trace, v: &VipRuntime) -> Vec<String> {
    let mut out = vec![format!(
        "{} {} -> {} ({}, {}, {} backends in the model)",
        t.protocol,
        t.client,
        t.destination,
        t.algorithm,
        t.mode,
        v.backends.len()
    )];
    match &t.entry {
        None => out.push("connection table: no entry for this flow".into()),
        Some(e) => {
            let mut s = format!("connection table: an entry points to {}", name(&e.backend));
            if let Some(idle) = e.idle_s {
                s.push_str(&format!(", last packet {idle:.1} s ago"));
            }
            if e.closing {
                s.push_str("; the flow saw FIN/RST (a new SYN starts over)");
            }
            if !e.vip_valid {
                s.push_str("; its VIP id is no longer in use (stale)");
            }
            if !e.backend_usable {
                s.push_str("; its backend is down or was replaced (the flow is re-hashed)");
            }
            out.push(s);
        }
    }
    if t.first == "syn" && t.entry.is_some() {
        out.push("a bare SYN skips the table lookup; one that finds an open entry is a retransmission and keeps it".into());
    }
    match &t.pick {
        TracePick::Hashed {
            hash,
            position,
            backend,
        } => out.push(format!(
            "{}: hash {hash:#010x} % {} = slot {position} of table {} -> {}",
            t.algorithm,
            t.table_len,
            t.slot,
            backend
                .as_ref()
                .map(name)
                .unwrap_or_else(|| "nothing".into())
        )),
        TracePick::RoundRobin { per_cpu } => {
            for c in per_cpu {
                out.push(format!(
                    "weighted-round-robin on CPU {}: cursor {} % {} = position {} -> {}",
                    c.cpu,
                    c.cursor,
                    t.table_len,
                    c.position,
                    c.backend
                        .as_ref()
                        .map(name)
                        .unwrap_or_else(|| "nothing".into())
                ));
            }
        }
        TracePick::LeastConnections {
            start,
            candidates,
            backend,
        } => {
            let list: Vec<String> = candidates
                .iter()
                .map(|c| {
                    format!(
                        "{} {}/{}",
                        c.backend
                            .address
                            .map(|a| a.to_string())
                            .unwrap_or_else(|| c.backend.id.to_string()),
                        c.connections,
                        c.weight
                    )
                })
                .collect();
            out.push(format!(
                "least-connections from candidate {start} (connections/weight): {} -> {}",
                list.join(", "),
                backend
                    .as_ref()
                    .map(name)
                    .unwrap_or_else(|| "nothing".into())
            ));
        }
        TracePick::Empty => out.push("the VIP's table is empty: no backend has weight".into()),
    }
    out.push(match &t.decision {
        TraceDecision::Entry { backend } => {
            format!("=> {} (kept by its connection-table entry)", name(backend))
        }
        TraceDecision::Algorithm { backend } => format!(
            "=> {} (chosen by {}; a new connection-table entry pins it)",
            name(backend),
            t.algorithm
        ),
        TraceDecision::PerCpu { per_cpu } => format!(
            "=> depends on the CPU the packet lands on: {}",
            per_cpu
                .iter()
                .map(|c| format!(
                    "CPU {} -> {}",
                    c.cpu,
                    c.backend
                        .as_ref()
                        .and_then(|b| b.address)
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "none".into())
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        TraceDecision::NoBackend => {
            "=> dropped (drop_no_backend): no active backend for this flow".into()
        }
        TraceDecision::OtherVip { vip } => {
            format!("=> not this VIP: the data plane's lookup gives the flow to VIP {vip}")
        }
        TraceDecision::NotAVip => {
            "=> no VIP takes this flow: passed to the kernel untouched".into()
        }
    });
    for b in [&t.decision].iter().filter_map(|d| match d {
        TraceDecision::Entry { backend } | TraceDecision::Algorithm { backend } => Some(backend),
        _ => None,
    }) {
        if let Some(why) = &b.no_new_flows {
            out.push(format!("note: {} gets no new flows: {why}", name(b)));
        }
    }
    out
}
