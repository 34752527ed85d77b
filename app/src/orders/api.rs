//! `POST /orders`, `GET /orders/{id}`, `GET|PUT /orders/stock/{sku}`.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{OrderRequest, OrderService, OrderView, StockView};
use crate::api::{Accepted, ApiError, ApiJson, ApiPath, ErrorBody, idempotency_header};

/// Body of `PUT /orders/stock/{sku}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStock {
    /// Units on hand (held units come on top), at most 10^12.
    #[schema(maximum = 1_000_000_000_000u64)]
    pub available: u64,
}

pub fn routes<S: Clone + Send + Sync + 'static>(svc: OrderService) -> OpenApiRouter<S> {
    api().with_state(svc)
}

/// The routes without their service: what the document is made from.
pub fn api() -> OpenApiRouter<OrderService> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(stock, set_stock))
        .routes(routes!(show))
}

/// Starts an order through the saga (reserve stock, pay, confirm; compensated on failure) and
/// answers at once; `Location` (and `status_url`) is where to follow it.
#[utoipa::path(post, path = "/orders", tag = "orders", request_body = OrderRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "ASCII; submitting the same key again returns the first order")),
    responses(
        (status = ACCEPTED, description = "started", body = Accepted,
            headers(("Location" = String, description = "/orders/{id}"))),
        (status = BAD_REQUEST, description = "`invalid_header`: an `Idempotency-Key` that is not ASCII", body = ErrorBody),
        (status = UNPROCESSABLE_ENTITY, description = "a SKU, quantity or amount the rules refuse", body = ErrorBody),
    ))]
async fn create(
    State(svc): State<OrderService>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<OrderRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_header(&headers)?;
    let (id, created) = svc.create(req, key).await?;
    Ok(Accepted::response("/orders", id, created))
}

/// An order's state and history.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    params(("id" = String, Path, description = "the order's id")),
    responses(
        (status = OK, description = "the order", body = OrderView),
        (status = NOT_FOUND, description = "no such order", body = ErrorBody),
    ))]
async fn show(
    State(svc): State<OrderService>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<OrderView>, ApiError> {
    svc.get(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("order {id} not found")))
}

/// The stock of a SKU.
#[utoipa::path(get, path = "/orders/stock/{sku}", tag = "orders",
    params(("sku" = String, Path, description = "1-64 characters of [A-Za-z0-9._-]", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = OK, description = "the stock", body = StockView),
        (status = UNPROCESSABLE_ENTITY, description = "not a SKU", body = ErrorBody),
    ))]
async fn stock(
    State(svc): State<OrderService>,
    ApiPath(sku): ApiPath<String>,
) -> Result<Json<StockView>, ApiError> {
    Ok(Json(svc.stock(&sku).await?))
}

/// Sets the units on hand of a SKU.
#[utoipa::path(put, path = "/orders/stock/{sku}", tag = "orders", request_body = SetStock,
    params(("sku" = String, Path, description = "1-64 characters of [A-Za-z0-9._-]", pattern = r"^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = OK, description = "the stock now", body = StockView),
        (status = UNPROCESSABLE_ENTITY, description = "not a SKU, or a count out of range", body = ErrorBody),
    ))]
async fn set_stock(
    State(svc): State<OrderService>,
    ApiPath(sku): ApiPath<String>,
    ApiJson(b): ApiJson<SetStock>,
) -> Result<Json<StockView>, ApiError> {
    Ok(Json(svc.set_stock(&sku, b.available).await?))
}
