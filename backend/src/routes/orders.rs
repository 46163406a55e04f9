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
use shopgate_store::orders::{self, Order};

use crate::service::orders::{self as placing, Placed};
use shopgate_core::openapi::{
    BadRequest, Misdirected, NotFound, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use shopgate_core::ErrorBody;

/// The body of `POST /api/orders`: `{"items": [{"product_id": 1, "quantity": 2}]}`.
///
/// Unknown fields are refused with 400 (`deny_unknown_fields`), not ignored: a client sending
/// `unit_price` or `total` believes it sets prices, and should learn at once that it does not.
/// Prices always come from the catalog.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"items": [{"product_id": 1, "quantity": 2}]}))]
pub(crate) struct CreateOrder {
    /// 1 to 100 lines; a product listed twice is one line with the quantities added.
    #[schema(min_items = 1, max_items = 100)]
    items: Vec<CreateOrderItem>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOrderItem {
    /// A product of the catalog (`GET /api/products`); another id is 422 `unknown_product`.
    #[schema(minimum = 1, maximum = 9_007_199_254_740_991_i64)]
    #[serde(deserialize_with = "whole_number")]
    product_id: i64,
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(deserialize_with = "whole_number")]
    quantity: i64,
}

/// 201 with the new order, or 200 with the order an earlier request under the same
/// `Idempotency-Key` made.
#[utoipa::path(
    post,
    path = "/api/orders",
    operation_id = "create_order",
    tag = "orders",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 128, pattern = "^[\\x21-\\x7e]+$",
        description = "1 to 128 visible ASCII characters; an empty header is 400, not the same as none. A retry under the same key with the same items answers 200 with the order the first request made, never a second order; with other items, 422 `idempotency_key_reused`.")),
    request_body = CreateOrder,
    responses(
        (status = 201, description = "The new order.", body = Order,
            headers(("Location" = String, description = "`/api/orders/{id}`"))),
        (status = 200, description = "The order an earlier request with this `Idempotency-Key` made.", body = Order,
            headers(("Location" = String, description = "`/api/orders/{id}`"))),
        (status = 400, description = "Malformed JSON (`malformed_json`), a wrong type, a missing or unknown field (`invalid_body`; prices cannot be sent), or a bad `Idempotency-Key` (`invalid_idempotency_key`).", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, description = "Well-formed but not acceptable: `invalid_items`, `invalid_quantity`, `unknown_product`, `total_too_large`, `idempotency_key_reused`.", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 421, response = Misdirected),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateOrder>,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let lines = OrderLines::parse(body.items.into_iter().map(|i| (i.product_id, i.quantity)))?;
    // Placing runs to its end even if the client goes away meanwhile (Db::write): the order is
    // either all there, logged and counted, or not at all.
    let work = {
        let state = state.clone();
        async move { placing::place(&state.service(), &user, key, lines).await }
    };
    let (status, order) = match state.db.write(work).await? {
        Placed::Created(order) => (StatusCode::CREATED, order),
        Placed::Replayed(order) => (StatusCode::OK, order),
    };
    let location = format!("/api/orders/{}", order.id);
    Ok((status, [(header::LOCATION, location)], Json(order)).into_response())
}

/// Query of `GET /api/orders`: `limit` 1-100 (default 20), `before` an order id (exclusive).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// At most this many (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// Only orders with a smaller id: the `next_before` of the previous page.
    #[param(value_type = Option<i64>, minimum = 1)]
    before: Option<String>,
}

/// The caller's orders, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/api/orders",
    operation_id = "list_orders",
    tag = "orders",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of orders.", body = OrderPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 421, response = Misdirected),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn list(
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

/// One of the caller's orders.
#[utoipa::path(
    get,
    path = "/api/orders/{id}",
    operation_id = "show_order",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order.", body = Order),
        (status = 404, response = NotFound),
        (status = 401, response = Unauthorized),
        (status = 421, response = Misdirected),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn show(
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
#[utoipa::path(
    post,
    path = "/api/orders/{id}/cancel",
    operation_id = "cancel_order",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order, cancelled.", body = Order),
        (status = 404, response = NotFound),
        (status = 401, response = Unauthorized),
        (status = 421, response = Misdirected),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Order>, ApiError> {
    let work = {
        let state = state.clone();
        async move { placing::cancel(&state.service(), &user, id).await }
    };
    state.db.write(work).await?.map(Json).ok_or(ApiError::NotFound("no such order"))
}

/// `GET /api/orders`: newest first.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct OrderPage {
    pub orders: Vec<Order>,
    /// Pass as `before` for the next page; `null` on the last one.
    pub(crate) next_before: Option<i64>,
}
