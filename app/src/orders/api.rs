//! `POST /orders`, `GET /orders/{id}`, `GET|PUT /orders/stock/{sku}`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{OrderRequest, OrderService, OrderView, StockView};
use crate::queue::api_error::{ApiError, idempotency_header};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StockBody {
    available: u64,
}

pub fn routes<S: Clone + Send + Sync + 'static>(svc: OrderService) -> Router<S> {
    Router::new()
        .route("/orders", post(create))
        .route("/orders/stock/{sku}", get(stock).put(set_stock))
        .route("/orders/{id}", get(show))
        .with_state(svc)
}

async fn create(
    State(svc): State<OrderService>,
    headers: HeaderMap,
    body: Result<Json<OrderRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    let key = idempotency_header(&headers)?;
    let (id, created) = svc.create(req, key).await?;
    let location = format!("/orders/{id}");
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location.clone())],
        Json(json!({ "id": id, "created": created, "status_url": location })),
    )
        .into_response())
}

async fn show(
    State(svc): State<OrderService>,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    svc.get(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("order {id} not found")))
}

async fn stock(
    State(svc): State<OrderService>,
    Path(sku): Path<String>,
) -> Result<Json<StockView>, ApiError> {
    Ok(Json(svc.stock(&sku).await?))
}

async fn set_stock(
    State(svc): State<OrderService>,
    Path(sku): Path<String>,
    body: Result<Json<StockBody>, JsonRejection>,
) -> Result<Json<StockView>, ApiError> {
    let Json(b) = body?;
    Ok(Json(svc.set_stock(&sku, b.available).await?))
}
