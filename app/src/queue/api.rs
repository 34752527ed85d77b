//! `/dlq` routes: list, replay and purge dead letters.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Queue;
use super::api_error::ApiError;
use super::keys::validate_queue_name;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    /// Dead-letter entry ids; absent means all.
    entries: Option<Vec<String>>,
}

/// `GET /dlq/{queue}`, `POST /dlq/{queue}/replay`, `DELETE /dlq/{queue}`.
pub fn routes<S: Clone + Send + Sync + 'static>(queue: Queue) -> Router<S> {
    Router::new()
        .route("/dlq/{queue}", get(list).delete(purge))
        .route("/dlq/{queue}/replay", post(replay))
        .with_state(queue)
}

fn check(name: &str) -> Result<(), ApiError> {
    validate_queue_name(name).map_err(ApiError::not_found)
}

async fn list(
    State(q): State<Queue>,
    Path(name): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    check(&name)?;
    let Query(query) =
        query.map_err(|e| ApiError::new(axum::http::StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::unprocessable("limit must be between 1 and 1000"));
    }
    let items = q.dlq_list(&name, query.after.as_deref(), limit).await?;
    let next = (items.len() == limit).then(|| items.last().map(|d| d.entry.clone()));
    Ok(Json(
        json!({ "queue": name, "items": items, "next_after": next.flatten() }),
    ))
}

async fn replay(
    State(q): State<Queue>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    check(&name)?;
    // An empty body replays everything; otherwise `{"entries": [...]}`.
    let body: ReplayBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            let status = if e.is_data() {
                axum::http::StatusCode::UNPROCESSABLE_ENTITY
            } else {
                axum::http::StatusCode::BAD_REQUEST
            };
            ApiError::new(status, format!("invalid body: {e}"))
        })?
    };
    let replayed = match body.entries {
        None => q.dlq_replay_all(&name).await?,
        Some(entries) => {
            let mut ids = Vec::new();
            for e in entries {
                if let Some(id) = q.dlq_replay(&name, &e).await? {
                    ids.push(id);
                }
            }
            ids
        }
    };
    Ok(Json(
        json!({ "queue": name, "replayed": replayed.len(), "jobs": replayed }),
    ))
}

async fn purge(State(q): State<Queue>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    check(&name)?;
    let n = q.dlq_purge(&name).await?;
    Ok(Json(json!({ "queue": name, "purged": n })))
}
