//! `POST /tasks` and `GET /tasks/{id}`.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{TaskRequest, TaskService, TaskView};
use crate::api::{Accepted, ApiError, ApiJson, ApiPath, ErrorBody, idempotency_header};

pub fn routes<S: Clone + Send + Sync + 'static>(svc: TaskService) -> OpenApiRouter<S> {
    api().with_state(svc)
}

/// The routes without their service: what the document is made from.
pub fn api() -> OpenApiRouter<TaskService> {
    OpenApiRouter::new()
        .routes(routes!(submit))
        .routes(routes!(show))
}

/// Queues a task and answers at once; `Location` (and `status_url`) is where to follow it.
/// The same `Idempotency-Key` (header or field) gives the same task back (`created: false`).
#[utoipa::path(post, path = "/tasks", tag = "tasks", request_body = TaskRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "ASCII; submitting the same key again returns the first task")),
    responses(
        (status = ACCEPTED, description = "queued", body = Accepted,
            headers(("Location" = String, description = "/tasks/{id}"))),
        (status = BAD_REQUEST, description = "`invalid_header`: an `Idempotency-Key` that is not ASCII", body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, description = "an unknown kind, an input the kind refuses, a callback URL without `tasks.callback_secret`", body = ErrorBody),
    ))]
async fn submit(
    State(svc): State<TaskService>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<TaskRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_header(&headers)?;
    let (id, created) = svc.submit(req, key).await?;
    Ok(Accepted::response("/tasks", id, created))
}

/// A task's state, attempts, result or error.
#[utoipa::path(get, path = "/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "the task's id")),
    responses(
        (status = OK, description = "the task", body = TaskView),
        (status = NOT_FOUND, description = "no such task", body = ErrorBody),
    ))]
async fn show(
    State(svc): State<TaskService>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TaskView>, ApiError> {
    svc.get(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("task {id} not found")))
}
