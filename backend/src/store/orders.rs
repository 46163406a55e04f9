//! Orders: placing one (with its items, its idempotency row and the user's profile, in one
//! transaction on the primary), reading them back, cancelling.

use std::collections::HashMap;

use serde::Serialize;
use shopgate_core::time::rfc3339;
use shopgate_core::UserId;
use sqlx::AnyPool;

use super::{catalog, fence, placeholders, users};
use crate::auth::AuthUser;
use crate::db::{is_unique_violation, now_secs, Dialect};
use crate::domain::{unknown_product, IdempotencyKey, OrderLines};
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Order {
    /// Unique across all shards and all backend processes of each, increasing with time (its high
    /// bits are the milliseconds it was minted at).
    #[schema(minimum = 1)]
    pub id: i64,
    #[schema(minimum = 1)]
    pub(crate) user_id: i64,
    /// `placed` or `cancelled`.
    #[schema(pattern = "^(placed|cancelled)$", example = "placed")]
    pub(crate) status: String,
    /// The sum of the items' line totals, in integer cents.
    pub(crate) total_cents: i64,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub(crate) created_at: String,
    pub(crate) items: Vec<OrderItem>,
}

/// One line of an order; the unit price is the catalog's when the order was placed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct OrderItem {
    pub(crate) product_id: i64,
    pub name: String,
    pub(crate) quantity: i64,
    pub(crate) unit_price_cents: i64,
    pub(crate) line_total_cents: i64,
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

/// What `place` did: made a new order, or found the one an earlier request with the same
/// Idempotency-Key made.
#[derive(Debug)]
pub(crate) enum Placed {
    Created(Order),
    Replayed(Order),
}

const ORDER_COLUMNS: &str = "id, user_id, status, total_cents, created_at";

/// Places an order for `user`. Prices come from the catalog; the total is checked integer cents.
/// With a key, a request repeating an earlier one (same merged items) gets that order back, one
/// with different items gets 422, and of concurrent duplicates exactly one creates the order.
///
/// Everything happens on one connection, in one transaction, in as few round trips as the rules
/// allow: `BEGIN`, the fence, the key's claim, the prices, the order, its items (one statement),
/// the profile, `COMMIT`. A repeated key is found by its claim failing, not by a read before it.
pub(crate) async fn place(
    state: &AppState,
    user: &AuthUser,
    key: Option<IdempotencyKey>,
    lines: OrderLines,
) -> Result<Placed, ApiError> {
    let fingerprint = lines.fingerprint();
    let (id, now) = (state.order_ids.next(), now_secs());
    let mut tx = fence::begin(state, user).await?;
    if let Some(key) = &key {
        // First write of the transaction: on a duplicate key nothing else has been written.
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (user_id, idem_key, request_hash, order_id, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(user.id.as_i64())
        .bind(key.as_str())
        .bind(&fingerprint)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match claimed {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                // An earlier request with this key committed (or a concurrent one just did).
                return match replay(state, user.id, key, &fingerprint).await? {
                    Some(earlier) => Ok(Placed::Replayed(earlier)),
                    None => Err(anyhow::anyhow!("idempotency row vanished after a duplicate-key error").into()),
                };
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Read in the transaction: on MariaDB the same snapshot as the rest; on SQLite under the
    // write lock. An unknown product or a total too large drops the transaction, nothing written.
    let prices = catalog::prices(&mut *tx, &lines.product_ids()).await?;
    let order = priced(id, user.id, &lines, &prices)?;
    sqlx::query(
        "INSERT INTO orders (id, user_id, status, total_cents, created_at, updated_at) VALUES (?, ?, 'placed', ?, ?, ?)",
    )
    .bind(order.id)
    .bind(order.user_id)
    .bind(order.total_cents)
    .bind(now)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let sql = format!(
        "INSERT INTO order_items (order_id, product_id, quantity, unit_price_cents, line_total_cents) VALUES {}",
        vec!["(?, ?, ?, ?, ?)"; order.items.len()].join(", ")
    );
    let mut insert_items = sqlx::query(&sql);
    for item in &order.items {
        insert_items = insert_items
            .bind(order.id)
            .bind(item.product_id)
            .bind(item.quantity)
            .bind(item.unit_price_cents)
            .bind(item.line_total_cents);
    }
    insert_items.execute(&mut *tx).await?;
    users::upsert(&mut tx, state.db.dialect(), user.id, &user.email, now).await?;
    tx.commit().await?;

    state.db.note_write(user.id);
    state.metrics.order_created();
    tracing::info!(order_id = order.id, total_cents = order.total_cents, items = order.items.len(), "order placed");
    Ok(Placed::Created(Order { created_at: rfc3339(now), ..order }))
}

/// The order `lines` make at `prices` (by product id: name and unit price in cents): 422 for an
/// unknown product or a total above [`OrderLines::MAX_TOTAL_CENTS`] (checked, never wrapped).
fn priced(id: i64, user: UserId, lines: &OrderLines, prices: &HashMap<i64, (String, i64)>) -> Result<Order, ApiError> {
    let too_large = || {
        ApiError::unprocessable(
            "total_too_large",
            format!("the order total may be at most {} cents", OrderLines::MAX_TOTAL_CENTS),
        )
    };
    let mut items = Vec::with_capacity(lines.lines().len());
    let mut total_cents: i64 = 0;
    for &(product_id, quantity) in lines.lines() {
        let (name, unit_price_cents) = prices.get(&product_id).ok_or_else(|| unknown_product(product_id))?;
        let line_total_cents = unit_price_cents.checked_mul(quantity).ok_or_else(too_large)?;
        total_cents = total_cents
            .checked_add(line_total_cents)
            .filter(|t| *t <= OrderLines::MAX_TOTAL_CENTS)
            .ok_or_else(too_large)?;
        items.push(OrderItem {
            product_id,
            name: name.clone(),
            quantity,
            unit_price_cents: *unit_price_cents,
            line_total_cents,
        });
    }
    Ok(Order {
        id,
        user_id: user.as_i64(),
        status: "placed".into(),
        total_cents,
        created_at: String::new(),
        items,
    })
}

/// The order an earlier request under `key` made, if any; 422 if that request had other items.
async fn replay(
    state: &AppState,
    user: UserId,
    key: &IdempotencyKey,
    fingerprint: &str,
) -> Result<Option<Order>, ApiError> {
    let earlier: Option<(String, i64)> =
        sqlx::query_as("SELECT request_hash, order_id FROM idempotency_keys WHERE user_id = ? AND idem_key = ?")
            .bind(user.as_i64())
            .bind(key.as_str())
            .fetch_optional(state.db_write())
            .await?;
    let Some((request_hash, order_id)) = earlier else {
        return Ok(None);
    };
    if request_hash != fingerprint {
        return Err(ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different order; use a new key for a new order",
        ));
    }
    let order = find(state.db_write(), user, order_id).await?;
    if order.is_some() {
        state.metrics.idempotent_replay();
    }
    Ok(order)
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
pub(crate) async fn page(
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

/// Cancels `user`'s order `id` if it is still placed; `None` if there is no such order of theirs.
pub(crate) async fn cancel(state: &AppState, user: &AuthUser, id: i64) -> Result<Option<Order>, ApiError> {
    let mut tx = fence::begin(state, user).await?;
    let user = user.id;
    let done = sqlx::query(
        "UPDATE orders SET status = 'cancelled', updated_at = ? WHERE id = ? AND user_id = ? AND status = 'placed'",
    )
    .bind(now_secs())
    .bind(id)
    .bind(user.as_i64())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if done.rows_affected() > 0 {
        state.db.note_write(user);
        tracing::info!(order_id = id, "order cancelled");
    }
    Ok(find(state.db_write(), user, id).await?)
}

/// Deletes up to `batch` idempotency keys created before `cutoff` (unix seconds), oldest first,
/// and says how many went. On MySQL/MariaDB a plain read finds them first and the DELETE names
/// each by its primary key, so it locks exactly those rows, never a range new keys are being
/// inserted into, and an order placed meanwhile never waits on it. SQLite has no row locks: one
/// statement, by rowid.
pub(crate) async fn purge_expired_keys(db: &AnyPool, dialect: Dialect, cutoff: i64, batch: u32) -> sqlx::Result<u64> {
    if dialect == Dialect::Sqlite {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE rowid IN \
             (SELECT rowid FROM idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT ?)",
        )
        .bind(cutoff)
        .bind(i64::from(batch))
        .execute(db)
        .await?;
        return Ok(done.rows_affected());
    }
    let expired: Vec<(i64, String)> = sqlx::query_as(
        "SELECT user_id, idem_key FROM idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT ?",
    )
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
