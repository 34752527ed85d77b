//! `GET /v1/events`: the dashboard's live feed. A server-sent-events stream with one
//! `snapshot` event per second, each the same views the other read endpoints answer (status,
//! VIPs with their backends, counters, VRRP) taken by the same handlers, so the page and lbctl
//! cannot disagree. Read scope; the browser reads it with `fetch` (an `EventSource` cannot send
//! the bearer token, and a token in the URL would end up in logs).

use std::{convert::Infallible, time::Duration};

use axum::{
    Json,
    extract::{Query, State as AxState},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use lb_api::types::Snapshot;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{
    error::{ApiError, ApiResult},
    node, vips,
};
use crate::daemon::{State, model};

/// Time between two snapshots.
const PERIOD: Duration = Duration::from_secs(1);

/// The most snapshots one bounded stream may ask for (a day).
const MAX_COUNT: u64 = 86_400;

/// The query of `GET /v1/events`, as a string so that a bad value gets our error.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// End the stream after this many snapshots; left out: until the client closes it.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 86400)]
    count: Option<String>,
}

/// Everything the dashboard shows, now.
pub async fn snapshot(s: &State) -> ApiResult<Snapshot> {
    let Json(status) = node::status(AxState(s.clone())).await;
    let Json(vips) = vips::list_vips(AxState(s.clone())).await;
    let Json(stats) = node::stats(AxState(s.clone())).await?;
    let vrrp = s.vrrp_statuses().map(|v| v.overview());
    let bgp = s.bgp.get().and_then(|b| b.overview());
    let table_generations = {
        let inner = s.inner.lock().await;
        vips.iter()
            .filter_map(|v| {
                let g = inner.prog.table_generation(&v.name)?;
                Some((v.name.clone(), g))
            })
            .collect()
    };
    Ok(Snapshot {
        at_unix_ms: model::unix_ms(),
        status,
        vips,
        stats,
        table_generations,
        vrrp,
        bgp,
    })
}

/// A `snapshot` event every second (the first at once), with VIPs, backends (health, last
/// check, admin state, weights, source), per-backend counters (totals: rates are the
/// difference of two events), the data plane's verdicts, VRRP and BGP. A failed snapshot is an
/// `error` event with an `ErrorBody` and the stream goes on.
#[utoipa::path(get, path = "/v1/events", tag = "node",
    params(EventsQuery),
    responses(
        (status = OK, description = "`event: snapshot` every second, its `data` one Snapshot (JSON)", body = Snapshot, content_type = "text/event-stream"),
        (status = BAD_REQUEST, description = "`count` is not 1-86400", body = lb_api::types::ErrorBody),
    ))]
pub async fn events(
    AxState(s): AxState<State>,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let count = match q.count {
        None => None,
        Some(c) => match c.parse::<u64>() {
            Ok(n) if (1..=MAX_COUNT).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "count: {c:?} is not a number of snapshots 1-{MAX_COUNT}"
                )));
            }
        },
    };
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream =
        futures_util::stream::unfold((s, ticks, 0u64), move |(s, mut ticks, sent)| async move {
            if count.is_some_and(|c| sent >= c) {
                return None;
            }
            ticks.tick().await;
            let event = match snapshot(&s).await {
                Ok(snap) => Event::default().event("snapshot").json_data(snap),
                Err(e) => Event::default().event("error").json_data(e.body()),
            }
            .unwrap_or_else(|_| Event::default().event("error").data("unserialisable"));
            Some((Ok::<_, Infallible>(event), (s, ticks, sent + 1)))
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
