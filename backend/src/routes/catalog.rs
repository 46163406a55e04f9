//! `GET /api/categories`, `GET /api/products`, `GET /api/products/{id}`: the catalog, the same on
//! every shard. Authenticated like every `/api` route; read from the replica when it is usable.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::{int_param, ApiPath, ApiQuery};
use crate::openapi::{CategoryList, ProductList};
use crate::state::AppState;
use shopgate_core::openapi::{BadRequest, Misdirected, NotFound, Unauthorized, Unavailable};
use crate::store::catalog::{self, Product, ProductPage};

/// Every category.
#[utoipa::path(
    get,
    path = "/api/categories",
    operation_id = "list_categories",
    tag = "catalog",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The categories, by id.", body = CategoryList),
        (status = 401, response = Unauthorized),
        (status = 421, response = Misdirected),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn list_categories(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    let categories = state.read(user.id, |db| async move { catalog::categories(&db).await }).await?;
    Ok(Json(json!({ "categories": categories })))
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
    security(("bearer" = [])),
    params(ProductsQuery),
    responses(
        (status = 200, description = "The products.", body = ProductList),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 421, response = Misdirected),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn list_products(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ProductsQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = query.parse()?;
    let products = state.read(user.id, |db| async move { catalog::products(&db, page).await }).await?;
    Ok(Json(json!({ "products": products })))
}

/// One product.
#[utoipa::path(
    get,
    path = "/api/products/{id}",
    operation_id = "show_product",
    tag = "catalog",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The product's id")),
    responses(
        (status = 200, description = "The product.", body = Product),
        (status = 404, response = NotFound),
        (status = 401, response = Unauthorized),
        (status = 421, response = Misdirected),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn show_product(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Product>, ApiError> {
    state
        .read(user.id, |db| async move { catalog::product(&db, id).await })
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("no such product"))
}
