//! `GET /api/categories`, `GET /api/products`, `GET /api/products/{id}`: the catalog, the same on
//! every shard. Authenticated like every `/api` route; read from the replica when it is usable.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::extract::{int_param, ApiPath, ApiQuery};
use crate::state::AppState;
use crate::store::catalog::{self, Product, ProductPage};

pub async fn list_categories(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    let categories = state.read(user.id, |db| async move { catalog::categories(&db).await }).await?;
    Ok(Json(json!({ "categories": categories })))
}

/// Query of `GET /api/products`; empty values count as absent.
#[derive(Debug, Deserialize)]
pub struct ProductsQuery {
    category_id: Option<String>,
    limit: Option<String>,
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

pub async fn list_products(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ProductsQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = query.parse()?;
    let products = state.read(user.id, |db| async move { catalog::products(&db, page).await }).await?;
    Ok(Json(json!({ "products": products })))
}

pub async fn show_product(
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
