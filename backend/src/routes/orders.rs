//! `POST /api/orders`, `GET /api/orders`, `GET /api/orders/{id}`, `POST /api/orders/{id}/cancel`:
//! the caller's own orders. Someone else's order is 404, the same answer as a missing one.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::AuthUser;
use crate::domain::{IdempotencyKey, OrderLines};
use crate::error::ApiError;
use crate::extract::{int_param, whole_number, ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use crate::store::orders::{self, Order, Placed};

/// The body of `POST /api/orders`: `{"items": [{"product_id": 1, "quantity": 2}]}`.
///
/// Unknown fields are refused with 400 (`deny_unknown_fields`), not ignored: a client sending
/// `unit_price` or `total` believes it sets prices, and should learn at once that it does not.
/// Prices always come from the catalog.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    items: Vec<CreateOrderItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrderItem {
    #[serde(deserialize_with = "whole_number")]
    product_id: i64,
    #[serde(deserialize_with = "whole_number")]
    quantity: i64,
}

/// 201 with the new order, or 200 with the order an earlier request under the same
/// `Idempotency-Key` made.
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateOrder>,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let lines = OrderLines::parse(body.items.into_iter().map(|i| (i.product_id, i.quantity)))?;
    let (status, order) = match orders::place(&state, &user, key, lines).await? {
        Placed::Created(order) => (StatusCode::CREATED, order),
        Placed::Replayed(order) => (StatusCode::OK, order),
    };
    let location = format!("/api/orders/{}", order.id);
    Ok((status, [(header::LOCATION, location)], Json(order)).into_response())
}

/// Query of `GET /api/orders`: `limit` 1-100 (default 20), `before` an order id (exclusive).
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    before: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = int_param("limit", query.limit.as_deref(), 1, 100)?.unwrap_or(20);
    let before = int_param("before", query.before.as_deref(), 1, i64::MAX)?;
    let uid = user.id;
    let (orders, next_before) =
        state.read(uid, |db| async move { orders::page(&db, uid, before, limit).await }).await?;
    Ok(Json(json!({ "orders": orders, "next_before": next_before })))
}

pub async fn show(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Order>, ApiError> {
    let uid = user.id;
    state
        .read(uid, |db| async move { orders::find(&db, uid, id).await })
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("no such order"))
}

/// 200 with the order, now cancelled (or already cancelled: unchanged).
pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Order>, ApiError> {
    orders::cancel(&state, user.id, id).await?.map(Json).ok_or(ApiError::NotFound("no such order"))
}
