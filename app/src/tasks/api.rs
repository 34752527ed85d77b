//! `POST /tasks` and `GET /tasks/{id}`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::{TaskRequest, TaskService};
use crate::queue::api_error::{ApiError, idempotency_header};

pub fn routes<S: Clone + Send + Sync + 'static>(svc: TaskService) -> Router<S> {
    Router::new()
        .route("/tasks", post(submit))
        .route("/tasks/{id}", get(show))
        .with_state(svc)
}

async fn submit(
    State(svc): State<TaskService>,
    headers: HeaderMap,
    body: Result<Json<TaskRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let key = idempotency_header(&headers)?;
    let (id, created) = svc.submit(req, key).await?;
    let location = format!("/tasks/{id}");
    let body = json!({ "id": id, "created": created, "status_url": location });
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

async fn show(
    State(svc): State<TaskService>,
    Path(id): Path<String>,
) -> Result<Json<super::TaskView>, ApiError> {
    svc.get(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))
}
