//! Orders' rows: an order and its items, the claim on its Idempotency-Key, reading them back,
//! cancelling, and purging expired keys. Placing one (the fence, group commit, replay) is the
//! backend's `service::orders`, on a transaction it holds.

use std::collections::HashMap;

use serde::Serialize;
use shopgate_core::shardmap::bucket;
use shopgate_core::time::rfc3339;
use shopgate_core::UserId;
use sqlx::{AnyConnection, AnyPool};

use crate::{catalog, fence, placeholders, Dialect};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Order {
    /// Unique across all shards and all backend processes of each, increasing with time (its high
    /// bits are the milliseconds it was minted at).
    #[schema(minimum = 1)]
    pub id: i64,
    #[schema(minimum = 1)]
    pub user_id: i64,
    /// `placed` or `cancelled`.
    #[schema(pattern = "^(placed|cancelled)$", example = "placed")]
    pub status: String,
    /// The sum of the items' line totals, in integer cents.
    pub total_cents: i64,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
    pub items: Vec<OrderItem>,
}

/// One line of an order; the unit price is the catalog's when the order was placed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderItem {
    pub product_id: i64,
    pub name: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: i64,
    user_id: i64,
    status: String,
    total_cents: i64,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    order_id: i64,
    product_id: i64,
    name: Option<String>,
    quantity: i64,
    unit_price_cents: i64,
    line_total_cents: i64,
}

/// Prices by product id: its name and unit price in cents.
pub type Prices = HashMap<i64, (String, i64)>;

const ORDER_COLUMNS: &str = "id, user_id, status, total_cents, created_at";

/// The open ones among `buckets` and the prices of `products` (both non-empty), in one round trip:
/// `fence::select_sql` and `catalog::prices_sql` as one `UNION ALL`. On MariaDB a locking
/// clause in a union applies to its own parenthesised `SELECT`: the fence rows are share-locked,
/// the products are not (an operator's price change never waits for orders).
pub async fn fences_and_prices(
    tx: &mut AnyConnection,
    dialect: Dialect,
    buckets: &[u16],
    products: &[i64],
) -> sqlx::Result<(Vec<u16>, Prices)> {
    let (fences, prices) = (fence::select_sql(dialect, buckets.len()), catalog::prices_sql(products.len()));
    let sql = match dialect {
        Dialect::MySql => format!("({fences}) UNION ALL ({prices})"),
        // SQLite takes no parentheses around a compound's SELECTs (and has no locking clause).
        Dialect::Sqlite => format!("{fences} UNION ALL {prices}"),
    };
    let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(&sql);
    for b in buckets {
        query = query.bind(i64::from(*b));
    }
    for p in products {
        query = query.bind(*p);
    }
    let (fence_rows, price_rows): (Vec<_>, Vec<_>) = query.fetch_all(tx).await?.into_iter().partition(|r| r.0 == 0);
    let open = fence::open_of(fence_rows.into_iter().map(|(_, b, open, _)| (b, open)));
    Ok((open, price_rows.into_iter().map(|(_, id, price, name)| (id, (name, price))).collect()))
}

/// An order's claim on its Idempotency-Key: the key, the fingerprint of the items asked for (a
/// retry must ask for the same ones) and the order it names.
pub struct KeyClaim<'a> {
    pub user: UserId,
    pub key: &'a str,
    pub fingerprint: &'a str,
    pub order_id: i64,
    pub now: i64,
}

/// Claims each key for its order, in one statement. A key already claimed fails it whole: a
/// unique violation, with nothing claimed.
pub async fn claim_keys(tx: &mut AnyConnection, claims: &[KeyClaim<'_>]) -> sqlx::Result<()> {
    let sql = format!(
        "INSERT INTO idempotency_keys (user_id, idem_key, request_hash, order_id, created_at, bucket) VALUES {}",
        vec!["(?, ?, ?, ?, ?, ?)"; claims.len()].join(", ")
    );
    let mut claim = sqlx::query(&sql);
    for c in claims {
        claim = claim
            .bind(c.user.as_i64())
            .bind(c.key)
            .bind(c.fingerprint)
            .bind(c.order_id)
            .bind(c.now)
            .bind(i64::from(bucket(c.user)));
    }
    claim.execute(tx).await?;
    Ok(())
}

/// The claim on `user`'s `key`, if any: the fingerprint it was made with and its order's id.
pub async fn claim_of(db: &AnyPool, user: UserId, key: &str) -> sqlx::Result<Option<(String, i64)>> {
    sqlx::query_as("SELECT request_hash, order_id FROM idempotency_keys WHERE user_id = ? AND idem_key = ?")
        .bind(user.as_i64())
        .bind(key)
        .fetch_optional(db)
        .await
}

/// Inserts `orders` (each with the time it was asked for) and all their items: two statements.
pub async fn insert(tx: &mut AnyConnection, orders: &[(&Order, i64)]) -> sqlx::Result<()> {
    let sql = format!(
        "INSERT INTO orders (id, user_id, status, total_cents, created_at, updated_at, bucket) VALUES {}",
        vec!["(?, ?, 'placed', ?, ?, ?, ?)"; orders.len()].join(", ")
    );
    let mut insert = sqlx::query(&sql);
    for (order, now) in orders {
        insert = insert
            .bind(order.id)
            .bind(order.user_id)
            .bind(order.total_cents)
            .bind(*now)
            .bind(*now)
            .bind(user_bucket(order.user_id));
    }
    insert.execute(&mut *tx).await?;
    let lines = orders.iter().map(|(o, _)| o.items.len()).sum();
    let sql = format!(
        "INSERT INTO order_items (order_id, product_id, quantity, unit_price_cents, line_total_cents, bucket) VALUES {}",
        vec!["(?, ?, ?, ?, ?, ?)"; lines].join(", ")
    );
    let mut insert = sqlx::query(&sql);
    for (order, _) in orders {
        for item in &order.items {
            insert = insert
                .bind(order.id)
                .bind(item.product_id)
                .bind(item.quantity)
                .bind(item.unit_price_cents)
                .bind(item.line_total_cents)
                .bind(user_bucket(order.user_id));
        }
    }
    insert.execute(tx).await?;
    Ok(())
}

/// `user`'s order `id`; someone else's is `None`, the same as a missing one.
pub async fn find(db: &AnyPool, user: UserId, id: i64) -> sqlx::Result<Option<Order>> {
    let row: Option<OrderRow> =
        sqlx::query_as(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ? AND user_id = ?"))
            .bind(id)
            .bind(user.as_i64())
            .fetch_optional(db)
            .await?;
    Ok(with_items(db, row.into_iter().collect()).await?.pop())
}

/// How many orders `user` has on this shard.
pub async fn count_for_user(db: &AnyPool, user: UserId) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE user_id = ?").bind(user.as_i64()).fetch_one(db).await
}

/// Up to `limit` of `user`'s orders with ids below `before`, newest first, and the `before` of the
/// next page if there is one.
pub async fn page(
    db: &AnyPool,
    user: UserId,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<(Vec<Order>, Option<i64>)> {
    let mut rows: Vec<OrderRow> = sqlx::query_as(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?"
    ))
    .bind(user.as_i64())
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit + 1)
    .fetch_all(db)
    .await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next_before = if more { rows.last().map(|r| r.id) } else { None };
    Ok((with_items(db, rows).await?, next_before))
}

/// Cancels `user`'s order `id` in `tx` if it is still placed; false if there is no such placed
/// order of theirs.
pub async fn cancel(tx: &mut AnyConnection, user: UserId, id: i64, now: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE orders SET status = 'cancelled', updated_at = ? WHERE id = ? AND user_id = ? AND status = 'placed'",
    )
    .bind(now)
    .bind(id)
    .bind(user.as_i64())
    .execute(tx)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The purge's rows are those of buckets whose writes are open on this primary: a bucket on its
/// way in (the target of a move) or out (paused at the source) is the move's to change, and a key
/// purged under it would make the two shards' copies differ. A row from before the bucket column
/// (NULL) is never part of a move (`shards move` waits until none is left).
const OPEN_BUCKETS: &str = "(bucket IS NULL OR bucket IN (SELECT bucket FROM bucket_fence WHERE writes_open = 1))";

/// Deletes up to `batch` idempotency keys created before `cutoff` (unix seconds), oldest first,
/// and says how many went. On MySQL/MariaDB a plain read finds them first and the DELETE names
/// each by its primary key, so it locks exactly those rows, never a range new keys are being
/// inserted into, and an order placed meanwhile never waits on it. SQLite has no row locks: one
/// statement, by rowid. Only keys of buckets whose writes are open here ([`OPEN_BUCKETS`]).
pub async fn purge_expired_keys(db: &AnyPool, dialect: Dialect, cutoff: i64, batch: u32) -> sqlx::Result<u64> {
    if dialect == Dialect::Sqlite {
        let done = sqlx::query(&format!(
            "DELETE FROM idempotency_keys WHERE rowid IN \
             (SELECT rowid FROM idempotency_keys WHERE created_at < ? AND {OPEN_BUCKETS} ORDER BY created_at LIMIT ?)"
        ))
        .bind(cutoff)
        .bind(i64::from(batch))
        .execute(db)
        .await?;
        return Ok(done.rows_affected());
    }
    let expired: Vec<(i64, String)> = sqlx::query_as(&format!(
        "SELECT user_id, idem_key FROM idempotency_keys WHERE created_at < ? AND {OPEN_BUCKETS} ORDER BY created_at LIMIT ?"
    ))
    .bind(cutoff)
    .bind(i64::from(batch))
    .fetch_all(db)
    .await?;
    if expired.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "DELETE FROM idempotency_keys WHERE created_at < ? AND ({})",
        vec!["(user_id = ? AND idem_key = ?)"; expired.len()].join(" OR ")
    );
    let mut delete = sqlx::query(&sql).bind(cutoff);
    for (user, key) in &expired {
        delete = delete.bind(*user).bind(key.as_str());
    }
    Ok(delete.execute(db).await?.rows_affected())
}

async fn with_items(db: &AnyPool, rows: Vec<OrderRow>) -> sqlx::Result<Vec<Order>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT oi.order_id, oi.product_id, p.name, oi.quantity, oi.unit_price_cents, oi.line_total_cents \
         FROM order_items oi LEFT JOIN products p ON p.id = oi.product_id \
         WHERE oi.order_id IN ({}) ORDER BY oi.order_id, oi.product_id",
        placeholders(rows.len())
    );
    let mut query = sqlx::query_as::<_, ItemRow>(&sql);
    for r in &rows {
        query = query.bind(r.id);
    }
    let mut items: HashMap<i64, Vec<OrderItem>> = HashMap::new();
    for i in query.fetch_all(db).await? {
        items.entry(i.order_id).or_default().push(OrderItem {
            product_id: i.product_id,
            name: i.name.unwrap_or_default(),
            quantity: i.quantity,
            unit_price_cents: i.unit_price_cents,
            line_total_cents: i.line_total_cents,
        });
    }
    Ok(rows
        .into_iter()
        .map(|r| Order {
            items: items.remove(&r.id).unwrap_or_default(),
            id: r.id,
            user_id: r.user_id,
            status: r.status,
            total_cents: r.total_cents,
            created_at: rfc3339(r.created_at),
        })
        .collect())
}

/// The bucket column's value for a row of `user_id` (every order's is a valid user id; -1, which
/// no shard owns, would mark one that is not).
fn user_bucket(user_id: i64) -> i64 {
    u64::try_from(user_id).ok().and_then(|u| UserId::new(u).ok()).map_or(-1, |u| i64::from(bucket(u)))
}
