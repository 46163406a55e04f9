//! The demo catalog, written at start into a shard whose `products` table is empty. Fixed ids, so
//! every shard holds the same catalog and an order's product ids mean the same thing everywhere.
//! `shopctl catalog import` replaces it with a real one.

use sqlx::AnyConnection;

pub const CATEGORIES: &[(i64, &str)] = &[(1, "Books"), (2, "Kitchen"), (3, "Garden"), (4, "Electronics")];

/// (id, sku, name, category_id, price_cents, description)
pub const PRODUCTS: &[(i64, &str, &str, i64, i64, &str)] = &[
    (1, "BK-0001", "The Rust Programming Language", 1, 3999, "The book, in print."),
    (2, "BK-0002", "Designing Data-Intensive Applications", 1, 4550, "Replication, partitioning, transactions."),
    (3, "BK-0003", "High Performance MySQL", 1, 5299, "Replication and sharding in practice."),
    (4, "KT-0001", "Chef's Knife 20 cm", 2, 8900, "Carbon steel, full tang."),
    (5, "KT-0002", "Cast Iron Skillet", 2, 3450, "26 cm, pre-seasoned."),
    (6, "KT-0003", "Pour-Over Coffee Set", 2, 2799, "Dripper, carafe and 100 filters."),
    (7, "GD-0001", "Pruning Shears", 3, 1999, "Bypass blades for green stems."),
    (8, "GD-0002", "Heirloom Tomato Seeds", 3, 349, "Five varieties, 20 seeds each."),
    (9, "GD-0003", "Watering Can 10 L", 3, 2495, "Galvanised steel with a brass rose."),
    (10, "EL-0001", "USB-C Cable 2 m", 4, 1299, "100 W, braided."),
    (11, "EL-0002", "Mechanical Keyboard", 4, 11900, "Tenkeyless, hot-swappable switches."),
    (12, "EL-0003", "Noise-Cancelling Headphones", 4, 24999, "Over-ear, 30 h battery."),
];

/// Inserts the demo catalog in `tx` if `products` is empty, and says whether it did. The check
/// runs inside the caller's write transaction, so two starting processes cannot both insert.
pub async fn insert_if_empty(tx: &mut AnyConnection) -> sqlx::Result<bool> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products").fetch_one(&mut *tx).await?;
    if count > 0 {
        return Ok(false);
    }
    for (id, name) in CATEGORIES {
        sqlx::query("DELETE FROM categories WHERE id = ?").bind(id).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO categories (id, name) VALUES (?, ?)").bind(id).bind(*name).execute(&mut *tx).await?;
    }
    for (id, sku, name, category_id, price_cents, description) in PRODUCTS {
        sqlx::query(
            "INSERT INTO products (id, sku, name, category_id, price_cents, description) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(*sku)
        .bind(*name)
        .bind(category_id)
        .bind(price_cents)
        .bind(*description)
        .execute(&mut *tx)
        .await?;
    }
    Ok(true)
}
