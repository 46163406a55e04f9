//! Categories and products: the same rows on every shard.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::{Any, AnyPool, Executor};

use super::placeholders;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(example = json!({"id": 1, "name": "Books"}))]
pub struct Category {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(example = json!({"id": 1, "sku": "BK-001", "name": "The Rust Book", "category_id": 1, "price_cents": 3999, "description": ""}))]
pub struct Product {
    pub id: i64,
    pub sku: String,
    pub name: String,
    pub category_id: i64,
    /// The unit price in integer cents.
    pub price_cents: i64,
    pub description: String,
}

/// Which page of products: optionally one category, `limit` rows from `offset`, by id.
#[derive(Debug, Clone, Copy)]
pub struct ProductPage {
    pub category_id: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

const PRODUCT_COLUMNS: &str = "id, sku, name, category_id, price_cents, description";

pub async fn categories(db: &AnyPool) -> sqlx::Result<Vec<Category>> {
    sqlx::query_as("SELECT id, name FROM categories ORDER BY id").fetch_all(db).await
}

pub async fn products(db: &AnyPool, page: ProductPage) -> sqlx::Result<Vec<Product>> {
    match page.category_id {
        Some(category_id) => {
            sqlx::query_as(&format!(
                "SELECT {PRODUCT_COLUMNS} FROM products WHERE category_id = ? ORDER BY id LIMIT ? OFFSET ?"
            ))
            .bind(category_id)
            .bind(page.limit)
            .bind(page.offset)
            .fetch_all(db)
            .await
        }
        None => {
            sqlx::query_as(&format!("SELECT {PRODUCT_COLUMNS} FROM products ORDER BY id LIMIT ? OFFSET ?"))
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(db)
                .await
        }
    }
}

pub async fn product(db: &AnyPool, id: i64) -> sqlx::Result<Option<Product>> {
    sqlx::query_as(&format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE id = ?")).bind(id).fetch_optional(db).await
}

/// Current name and unit price of each listed product that exists, by id.
pub async fn prices<'e, E>(db: E, ids: &[i64]) -> sqlx::Result<HashMap<i64, (String, i64)>>
where
    E: Executor<'e, Database = Any>,
{
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!("SELECT id, name, price_cents FROM products WHERE id IN ({})", placeholders(ids.len()));
    let mut query = sqlx::query_as::<_, (i64, String, i64)>(&sql);
    for id in ids {
        query = query.bind(*id);
    }
    let rows = query.fetch_all(db).await?;
    Ok(rows.into_iter().map(|(id, name, price)| (id, (name, price))).collect())
}
