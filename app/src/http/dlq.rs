//! The queue's dead letters over HTTP: list, replay and purge (`GET|DELETE /dlq/{queue}`,
//! `POST /dlq/{queue}/replay`), as Sidekiq's and BullMQ's dead sets are browsed.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::{ApiError, ApiPath, ApiQuery, ErrorBody};
use crate::queue::keys::validate_queue_name;
use crate::queue::{DeadLetter, Queue};

/// `GET /dlq/{queue}`'s query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The previous page's `next_after`.
    after: Option<String>,
    /// Dead letters per page, 100 by default.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// A page of dead letters, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    pub queue: String,
    pub items: Vec<DeadLetter>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<String>,
}

/// Optional body of `POST /dlq/{queue}/replay`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// Dead letters to replay (their `entry`); absent: all of them.
    pub entries: Option<Vec<String>>,
}

/// What a replay put back on the queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct Replayed {
    pub queue: String,
    pub replayed: usize,
    /// The replayed jobs' ids.
    pub jobs: Vec<String>,
}

/// What a purge removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Purged {
    pub queue: String,
    pub purged: u64,
}

/// The dead-letter routes and their document.
pub fn routes<S: Clone + Send + Sync + 'static>(queue: Queue) -> OpenApiRouter<S> {
    api().with_state(queue)
}

/// The routes without their queue: what the document is made from.
pub fn api() -> OpenApiRouter<Queue> {
    OpenApiRouter::new()
        .routes(routes!(list, purge))
        .routes(routes!(replay))
}

/// The path of a queue's dead letters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct QueuePath {
    /// A queue name: 1-64 characters of [A-Za-z0-9._-] (`tasks`, `callbacks`, `orders`).
    #[param(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    queue: String,
}

impl QueuePath {
    /// The queue's name, checked (404 when it cannot be one).
    fn name(self) -> Result<String, ApiError> {
        validate_queue_name(&self.queue).map_err(ApiError::NotFound)?;
        Ok(self.queue)
    }
}

/// A queue's dead letters, a page at a time.
#[utoipa::path(get, path = "/dlq/{queue}", tag = "dlq",
    params(QueuePath, ListQuery),
    responses(
        (status = OK, description = "a page of dead letters", body = DeadLetterPage),
        (status = BAD_REQUEST, description = "`invalid_query`: an unknown parameter, or a limit out of range", body = ErrorBody),
        (status = NOT_FOUND, description = "not a queue name", body = ErrorBody),
    ))]
async fn list(
    State(q): State<Queue>,
    ApiPath(path): ApiPath<QueuePath>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let name = path.name()?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            crate::api::ErrorCode::InvalidQuery,
            "limit must be between 1 and 1000",
        ));
    }
    let items = q.dlq_list(&name, query.after.as_deref(), limit).await?;
    let next_after = if items.len() == limit {
        items.last().map(|d| d.entry.clone())
    } else {
        None
    };
    Ok(Json(DeadLetterPage {
        queue: name,
        items,
        next_after,
    }))
}

/// Puts dead letters back on their queue with a fresh attempt budget (all of them without a
/// body).
#[utoipa::path(post, path = "/dlq/{queue}/replay", tag = "dlq",
    request_body(content = Option<Replay>, description = "left out: replay all"),
    params(QueuePath),
    responses(
        (status = OK, description = "what was replayed", body = Replayed),
        (status = NOT_FOUND, description = "not a queue name", body = ErrorBody),
    ))]
async fn replay(
    State(q): State<Queue>,
    ApiPath(path): ApiPath<QueuePath>,
    body: Bytes,
) -> Result<Json<Replayed>, ApiError> {
    let name = path.name()?;
    // An empty body (or `null`) replays everything; otherwise `{"entries": [...]}`.
    // An array would be read as the struct's fields in order: `[]` as "replay all".
    let body: Replay = match crate::api::first_json_byte(&body) {
        None => Replay::default(),
        Some(b'{' | b'n') => serde_json::from_slice::<Option<Replay>>(&body)
            .map_err(|e| {
                if e.is_data() {
                    ApiError::unprocessable(format!("invalid body: {e}"))
                } else {
                    ApiError::bad_request(
                        crate::api::ErrorCode::InvalidJson,
                        format!("invalid body: {e}"),
                    )
                }
            })?
            .unwrap_or_default(),
        Some(_) => {
            return Err(ApiError::unprocessable(
                "invalid body: a JSON object (or null, or nothing)",
            ));
        }
    };
    let jobs = match body.entries {
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
    Ok(Json(Replayed {
        queue: name,
        replayed: jobs.len(),
        jobs,
    }))
}

/// Removes every dead letter of a queue.
#[utoipa::path(delete, path = "/dlq/{queue}", tag = "dlq",
    params(QueuePath),
    responses(
        (status = OK, description = "how many were removed", body = Purged),
        (status = NOT_FOUND, description = "not a queue name", body = ErrorBody),
    ))]
async fn purge(
    State(q): State<Queue>,
    ApiPath(path): ApiPath<QueuePath>,
) -> Result<Json<Purged>, ApiError> {
    let name = path.name()?;
    let purged = q.dlq_purge(&name).await?;
    Ok(Json(Purged {
        queue: name,
        purged,
    }))
}
