//! `GET /api/categories`, `GET /api/products`, `GET /api/products/{id}`: the catalog, the same on
//! every shard and public (CONTRACT §4): no token is needed or looked at, any shard answers for
//! anyone, so nginx sends these paths to whichever shard is healthy. Read from the replica when
//! it is usable.
//!
//! Answers come from [`crate::catalog_cache`] (at most `[backend] catalog_cache_ms` old) with a
//! strong `ETag` derived from the body and `Cache-Control: public, no-cache`: a client may keep
//! an answer but asks again each time, and an `If-None-Match` naming the current answer gets 304
//! without a body. nginx keeps each answer `[nginx] catalog_cache_seconds` more (README, "The
//! catalog"), so no client sees a price older than the two bounds together.

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::catalog_cache::{Answer, Key};
use crate::error::ApiError;
use crate::extract::{int_param, ApiPath, ApiQuery};
use crate::state::AppState;
use shopgate_core::openapi::{BadRequest, NotFound, Unavailable};
use shopgate_store::catalog::{self, Category, Product, ProductPage};

/// What every catalog answer says about caching it.
const CACHE_CONTROL_VALUE: &str = "public, no-cache";

/// 200 with the answer, or 304 if the request's `If-None-Match` names it; both with its `ETag`.
fn respond(answer: &Answer, headers: &HeaderMap) -> Response {
    let not_modified = headers.get_all(IF_NONE_MATCH).iter().any(|v| answer.matches(v.as_bytes()));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], answer.body.clone()).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(ETAG, answer.etag.clone());
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL_VALUE));
    response
}

/// Every category.
#[utoipa::path(
    get,
    path = "/api/categories",
    operation_id = "list_categories",
    tag = "catalog",
    responses(
        (status = 200, description = "The categories, by id.", body = CategoryList, headers(
            ("ETag" = String, description = "Strong validator of this answer"),
            ("Cache-Control" = String, description = "`public, no-cache`"))),
        (status = 304, description = "Not modified: `If-None-Match` names the current answer."),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn list_categories(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let answer = state
        .catalog_read(Key::Categories, |db| async move {
            Ok(Some(json!({ "categories": catalog::categories(&db).await? })))
        })
        .await?;
    answer.map(|a| respond(&a, &headers)).ok_or(ApiError::NotFound("no categories"))
}

/// Query of `GET /api/products`; empty values count as absent.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ProductsQuery {
    /// Only this category's products.
    #[param(value_type = Option<i64>, minimum = 1)]
    category_id: Option<String>,
    /// At most this many (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// Skip this many (default 0).
    #[param(value_type = Option<i64>, minimum = 0, maximum = 1_000_000)]
    offset: Option<String>,
}

impl ProductsQuery {
    fn parse(&self) -> Result<ProductPage, ApiError> {
        Ok(ProductPage {
            category_id: int_param("category_id", self.category_id.as_deref(), 1, i64::MAX)?,
            limit: int_param("limit", self.limit.as_deref(), 1, 100)?.unwrap_or(50),
            offset: int_param("offset", self.offset.as_deref(), 0, 1_000_000)?.unwrap_or(0),
        })
    }
}

/// A page of products, by id.
#[utoipa::path(
    get,
    path = "/api/products",
    operation_id = "list_products",
    tag = "catalog",
    params(ProductsQuery),
    responses(
        (status = 200, description = "The products.", body = ProductList, headers(
            ("ETag" = String, description = "Strong validator of this answer"),
            ("Cache-Control" = String, description = "`public, no-cache`"))),
        (status = 304, description = "Not modified: `If-None-Match` names the current answer."),
        (status = 400, response = BadRequest),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn list_products(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ProductsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let page = query.parse()?;
    let answer = state
        .catalog_read(Key::Products(page), |db| async move {
            Ok(Some(json!({ "products": catalog::products(&db, page).await? })))
        })
        .await?;
    answer.map(|a| respond(&a, &headers)).ok_or(ApiError::NotFound("no products"))
}

/// One product.
#[utoipa::path(
    get,
    path = "/api/products/{id}",
    operation_id = "show_product",
    tag = "catalog",
    params(("id" = i64, Path, description = "The product's id")),
    responses(
        (status = 200, description = "The product.", body = Product, headers(
            ("ETag" = String, description = "Strong validator of this answer"),
            ("Cache-Control" = String, description = "`public, no-cache`"))),
        (status = 304, description = "Not modified: `If-None-Match` names the current answer."),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn show_product(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let answer = state.catalog_read(Key::Product(id), |db| async move { catalog::product(&db, id).await }).await?;
    answer.map(|a| respond(&a, &headers)).ok_or(ApiError::NotFound("no such product"))
}

/// `GET /api/products`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ProductList {
    pub(crate) products: Vec<Product>,
}

/// `GET /api/categories`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CategoryList {
    pub(crate) categories: Vec<Category>,
}
