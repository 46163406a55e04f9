//! Categories and products: the same rows on every shard.

use serde::Serialize;
use sqlx::{Any, AnyConnection, AnyPool, Executor};

use crate::{placeholders, Dialect};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(example = json!({"id": 1, "name": "Books"}))]
pub struct Category {
    pub id: i64,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProductPage {
    pub category_id: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

const PRODUCT_COLUMNS: &str = "id, sku, name, category_id, price_cents, description";

pub async fn categories<'e, E>(db: E) -> sqlx::Result<Vec<Category>>
where
    E: Executor<'e, Database = Any>,
{
    sqlx::query_as("SELECT id, name FROM categories ORDER BY id").fetch_all(db).await
}

/// A category with the id given: shopctl's import settles ids once for every shard.
pub async fn insert_category(conn: &mut AnyConnection, id: i64, name: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO categories (id, name) VALUES (?, ?)").bind(id).bind(name).execute(conn).await?;
    Ok(())
}

pub async fn count_products(db: &AnyPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM products").fetch_one(db).await
}

/// Every product (shopctl's import settles ids and counts unchanged rows from them).
pub async fn all_products(db: &AnyPool) -> sqlx::Result<Vec<Product>> {
    sqlx::query_as(&format!("SELECT {PRODUCT_COLUMNS} FROM products")).fetch_all(db).await
}

/// A product as an import writes it; no description keeps the stored one on update.
#[derive(Debug, Clone, Copy)]
pub struct ProductUpsert<'a> {
    pub id: i64,
    pub sku: &'a str,
    pub name: &'a str,
    pub category_id: i64,
    pub price_cents: i64,
    pub description: Option<&'a str>,
}

/// Rows per INSERT: 6 parameters each, well under every engine's limit on bound parameters.
const UPSERT_BATCH: usize = 500;

/// Inserts `rows`, or updates the stored product of the same sku, in multi-row statements.
pub async fn upsert_products(
    conn: &mut AnyConnection,
    dialect: Dialect,
    rows: &[ProductUpsert<'_>],
) -> sqlx::Result<()> {
    // Rows without a description keep the stored one on update, so they take another statement.
    let (with, without): (Vec<_>, Vec<_>) = rows.iter().partition(|p| p.description.is_some());
    for (group, has_description) in [(with, true), (without, false)] {
        for batch in group.chunks(UPSERT_BATCH) {
            upsert_batch(&mut *conn, dialect, batch, has_description).await?;
        }
    }
    Ok(())
}

async fn upsert_batch(
    conn: &mut AnyConnection,
    dialect: Dialect,
    batch: &[&ProductUpsert<'_>],
    has_description: bool,
) -> sqlx::Result<()> {
    let (cols, one, updates) = if has_description {
        (
            "id, sku, name, category_id, price_cents, description",
            "(?, ?, ?, ?, ?, ?)",
            vec!["name", "category_id", "price_cents", "description"],
        )
    } else {
        ("id, sku, name, category_id, price_cents", "(?, ?, ?, ?, ?)", vec!["name", "category_id", "price_cents"])
    };
    let values = vec![one; batch.len()].join(", ");
    let set = match dialect {
        Dialect::Sqlite => format!(
            "ON CONFLICT (sku) DO UPDATE SET {}",
            updates.iter().map(|c| format!("{c} = excluded.{c}")).collect::<Vec<_>>().join(", ")
        ),
        Dialect::MySql => format!(
            "ON DUPLICATE KEY UPDATE {}",
            updates.iter().map(|c| format!("{c} = VALUES({c})")).collect::<Vec<_>>().join(", ")
        ),
    };
    let sql = format!("INSERT INTO products ({cols}) VALUES {values} {set}");
    let mut q = sqlx::query(&sql);
    for p in batch {
        q = q.bind(p.id).bind(p.sku).bind(p.name).bind(p.category_id).bind(p.price_cents);
        if has_description {
            q = q.bind(p.description.unwrap_or_default());
        }
    }
    q.execute(conn).await.map(|_| ())
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

/// Current name and unit price of each of `n` products (bound in order) that exists: rows `(1, id,
/// price_cents, name)`, the shape of `fence::select_sql`'s, so that an order's transaction reads
/// both in one statement (`store::orders`).
pub(crate) fn prices_sql(n: usize) -> String {
    format!("SELECT 1 AS part, id, price_cents AS value, name FROM products WHERE id IN ({})", placeholders(n))
}
