//! Orders: placing one (with its items, its idempotency row and the user's profile, in one
//! transaction on the primary), reading them back, cancelling.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use shopgate_core::db::begin_write_on;
use shopgate_core::shardmap::bucket;
use shopgate_core::time::rfc3339;
use shopgate_core::UserId;
use sqlx::{AnyConnection, AnyPool};

use super::{catalog, fence, placeholders, users};
use crate::auth::AuthUser;
use crate::db::{is_unique_violation, now_secs, Dialect};
use crate::domain::{unknown_product, IdempotencyKey, OrderLines};
use crate::error::ApiError;
use crate::group_commit::{GroupCommit, Member};
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

/// An order asked for: by whom, under which key, what. Its id and time are minted on arrival.
pub(crate) struct Request {
    user: AuthUser,
    key: Option<IdempotencyKey>,
    lines: OrderLines,
    fingerprint: String,
    id: i64,
    now: i64,
}

/// What a batch says to one of its orders: its answer, or to be placed alone (the batch could not
/// take it, or failed before its commit and so wrote nothing), which gives it the exact answer it
/// would have had on its own.
pub(crate) enum Outcome {
    Done(Result<Placed, ApiError>),
    Alone,
}

/// The orders waiting to share a transaction ([`crate::group_commit`]).
pub(crate) type Batches = GroupCommit<Arc<Request>, Outcome>;

/// A batch takes orders until they hold this many lines: well inside the bound parameters one
/// statement may carry (5 a line; SQLite allows 32,766).
const MAX_BATCH_LINES: usize = 2_000;

/// One batch at a time, per process. On SQLite writes take turns on one connection anyway. On
/// MariaDB two at once (one flushed to disk while the next is sent) measured no faster straight to
/// a backend and 14% slower through the full stack, where the CPU is the limit and bigger batches
/// cost less per order (`scripts/bench-orders`, 2026-11-30).
const BATCHES_AT_ONCE: usize = 1;

/// Under load, how long a batch's leader waits at most for as many orders as the last batch had.
/// Less than one flush to disk (≈ 3 ms on the development machine); at 16 clients over two
/// shards 2 ms cut the databases' CPU per order by a fifth, 4 ms did no better
/// (`scripts/bench --only orders`, 2026-12-06, BENCHMARKS.md). A quiet shop never waits.
const LINGER: Duration = Duration::from_millis(2);

pub(crate) fn batches() -> Batches {
    GroupCommit::new(BATCHES_AT_ONCE, MAX_BATCH_LINES, LINGER)
}

/// Places an order for `user`. Prices come from the catalog; the total is checked integer cents.
/// With a key, a request repeating an earlier one (same merged items) gets that order back, one
/// with different items gets 422, and of concurrent duplicates exactly one creates the order.
///
/// Orders that arrive while others are being committed share their transaction (group commit,
/// [`place_batch`]); one that arrives alone is placed alone ([`place_alone`]).
pub(crate) async fn place(
    state: &AppState,
    user: &AuthUser,
    key: Option<IdempotencyKey>,
    lines: OrderLines,
) -> Result<Placed, ApiError> {
    user.may_write()?;
    let request = Arc::new(Request {
        user: user.clone(),
        key,
        fingerprint: lines.fingerprint(),
        lines,
        id: state.order_ids.next(),
        now: now_secs(),
    });
    let outcome =
        state.order_batches.submit(request.clone(), |r| r.lines.lines().len(), |batch| place_batch(state, batch)).await;
    match outcome {
        Some(Outcome::Done(result)) => result,
        Some(Outcome::Alone) => place_alone(state, &request).await,
        None => Err(anyhow::anyhow!("an order batch ended without answering").into()),
    }
}

/// One order in a transaction of its own, in as few round trips as the rules allow: `BEGIN`, the
/// fence and the prices (one statement, [`fences_and_prices`]), the key's claim, the order, its
/// items (one statement), the profile, `COMMIT`. A repeated key is found by its claim failing, not
/// by a read before it.
async fn place_alone(state: &AppState, request: &Request) -> Result<Placed, ApiError> {
    let Request { user, key, lines, fingerprint, id, now } = request;
    // `place` checked `user.may_write()` before queueing the request.
    let mut tx = state.db.begin_write().await?;
    // Read in the transaction: on MariaDB the same snapshot as the rest, the fence row
    // share-locked; on SQLite under the write lock.
    let (open, prices) =
        fences_and_prices(&mut tx, state.db.dialect(), &[bucket(user.id)], &lines.product_ids()).await?;
    if open.is_empty() {
        return Err(ApiError::Moving);
    }
    if let Some(key) = key {
        // First write of the transaction: on a duplicate key nothing else has been written.
        match claim_keys(&mut tx, &[request]).await {
            Ok(()) => {}
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                // An earlier request with this key committed (or a concurrent one just did).
                return match replay(state, user.id, key, fingerprint).await? {
                    Some(earlier) => Ok(Placed::Replayed(earlier)),
                    None => Err(anyhow::anyhow!("idempotency row vanished after a duplicate-key error").into()),
                };
            }
            Err(e) => return Err(e.into()),
        }
    }
    // An unknown product or a total too large drops the transaction: nothing is written.
    let order = priced(*id, user.id, lines, &prices)?;
    insert_orders(&mut tx, &[(&order, *now)]).await?;
    users::upsert(&mut tx, state.db.dialect(), &[(user.id, &user.email, *now)]).await?;
    tx.commit().await?;
    state.metrics.order_transaction();
    Ok(placed(state, user.id, order, *now))
}

/// Places a batch of orders in one transaction and answers each ([`write_batch`]); a batch of one
/// is an order alone.
async fn place_batch(state: &AppState, mut batch: Vec<Member<Arc<Request>, Outcome>>) {
    if batch.len() == 1 {
        let member = batch.remove(0);
        let result = place_alone(state, &member.job).await;
        return member.answer(Outcome::Done(result));
    }
    let requests: Vec<Arc<Request>> = batch.iter().map(|m| m.job.clone()).collect();
    let outcomes = write_batch(state, &requests).await;
    for (member, outcome) in batch.into_iter().zip(outcomes) {
        member.answer(outcome);
    }
}

/// The outcome of each of `requests`, placed together: `BEGIN`, the fences of all their buckets,
/// the prices of all their products, then one statement each for the keys' claims, the orders,
/// their items and the profiles, `COMMIT`. What one order alone would not have met is left to
/// [`place_alone`]: a bucket closed here is 503 at once, and an order the prices refuse is placed
/// alone. If any statement fails before the commit (a key already claimed, a deadlock, a lost
/// connection), nothing was written and every order is placed alone. A batch that cannot start, or
/// whose `COMMIT` fails (its outcome unknown), is every order's error, as it would be for one.
///
/// A batch runs on the connection the last one kept if it committed ([`crate::db::Db::kept_writer`]), and
/// keeps its own if it commits.
async fn write_batch(state: &AppState, requests: &[Arc<Request>]) -> Vec<Outcome> {
    let cannot_start = |e: sqlx::Error| {
        let e = ApiError::from(e);
        tracing::warn!(error = %e, orders = requests.len(), "could not start a batch of orders");
        requests.iter().map(|_| Outcome::Done(Err(copy_of(&e)))).collect()
    };
    let mut conn = match state.db.kept_writer().await {
        Ok(conn) => conn,
        Err(e) => return cannot_start(e),
    };
    // `None`: in the transaction; what is still `None` at the end is placed alone.
    let mut outcomes: Vec<Option<Outcome>> = requests.iter().map(|_| None).collect();
    let committed = {
        let mut tx = match begin_write_on(&mut conn, state.db.dialect()).await {
            Ok(tx) => tx,
            Err(e) => return cannot_start(e),
        };
        match stage_batch(state, &mut tx, requests, &mut outcomes).await {
            // Dropping the transaction rolls it back: nothing of the batch was written.
            Err(e) => {
                tracing::debug!(error = %e, "a batch of orders failed before its commit; placing them alone");
                false
            }
            Ok(orders) if orders.is_empty() => false,
            Ok(orders) => match tx.commit().await {
                Ok(()) => {
                    state.metrics.order_transaction();
                    for (i, order) in orders {
                        outcomes[i] =
                            Some(Outcome::Done(Ok(placed(state, requests[i].user.id, order, requests[i].now))));
                    }
                    true
                }
                Err(e) => {
                    let e = ApiError::from(e);
                    tracing::warn!(error = %e, orders = orders.len(), "the commit of a batch of orders failed");
                    for (i, _) in orders {
                        outcomes[i] = Some(Outcome::Done(Err(copy_of(&e))));
                    }
                    false
                }
            },
        }
    };
    if committed {
        state.db.keep(conn);
    }
    outcomes.into_iter().map(|o| o.unwrap_or(Outcome::Alone)).collect()
}

/// Everything of [`write_batch`] up to its commit: the orders written, by their place in
/// `requests`. Those left out get their outcome in `outcomes`.
async fn stage_batch(
    state: &AppState,
    tx: &mut AnyConnection,
    requests: &[Arc<Request>],
    outcomes: &mut [Option<Outcome>],
) -> sqlx::Result<Vec<(usize, Order)>> {
    let mut buckets: Vec<u16> = requests.iter().map(|r| bucket(r.user.id)).collect();
    buckets.sort_unstable();
    buckets.dedup();
    let mut products: Vec<i64> = requests.iter().flat_map(|r| r.lines.product_ids()).collect();
    products.sort_unstable();
    products.dedup();
    let (open, prices) = fences_and_prices(tx, state.db.dialect(), &buckets, &products).await?;

    let mut orders = Vec::with_capacity(requests.len());
    let mut keys = HashSet::new();
    for (i, r) in requests.iter().enumerate() {
        let key = r.key.as_ref().map(|k| (r.user.id, k.as_str()));
        if !open.contains(&bucket(r.user.id)) {
            outcomes[i] = Some(Outcome::Done(Err(ApiError::Moving)));
        } else if key.is_some_and(|k| !keys.insert(k)) {
            // A retry of an order in this batch: alone, after it, it finds that order.
            outcomes[i] = Some(Outcome::Alone);
        } else if let Ok(order) = priced(r.id, r.user.id, &r.lines, &prices) {
            orders.push((i, order));
        } else {
            outcomes[i] = Some(Outcome::Alone);
        }
    }
    if orders.is_empty() {
        return Ok(orders);
    }
    let keyed: Vec<&Request> = orders.iter().map(|(i, _)| &*requests[*i]).filter(|r| r.key.is_some()).collect();
    if !keyed.is_empty() {
        claim_keys(tx, &keyed).await?;
    }
    let rows: Vec<(&Order, i64)> = orders.iter().map(|(i, order)| (order, requests[*i].now)).collect();
    insert_orders(tx, &rows).await?;
    let mut profiles: Vec<(UserId, &str, i64)> = orders
        .iter()
        .map(|(i, _)| (requests[*i].user.id, requests[*i].user.email.as_str(), requests[*i].now))
        .collect();
    // One row per user, in ascending order (see `users::upsert`).
    profiles.sort_by_key(|(user, _, _)| *user);
    profiles.dedup_by_key(|(user, _, _)| *user);
    users::upsert(tx, state.db.dialect(), &profiles).await?;
    Ok(orders)
}

/// The open ones among `buckets` and the prices of `products` (both non-empty), in one round trip:
/// [`fence::select_sql`] and [`catalog::prices_sql`] as one `UNION ALL`. On MariaDB a locking
/// clause in a union applies to its own parenthesised `SELECT`: the fence rows are share-locked,
/// the products are not (an operator's price change never waits for orders).
async fn fences_and_prices(
    tx: &mut AnyConnection,
    dialect: Dialect,
    buckets: &[u16],
    products: &[i64],
) -> sqlx::Result<(Vec<u16>, HashMap<i64, (String, i64)>)> {
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

/// Claims each request's Idempotency-Key for its order, in one statement. A key already claimed
/// fails it whole: a unique violation, with nothing claimed.
async fn claim_keys(tx: &mut AnyConnection, requests: &[&Request]) -> sqlx::Result<()> {
    let sql = format!(
        "INSERT INTO idempotency_keys (user_id, idem_key, request_hash, order_id, created_at, bucket) VALUES {}",
        vec!["(?, ?, ?, ?, ?, ?)"; requests.len()].join(", ")
    );
    let mut claim = sqlx::query(&sql);
    for r in requests {
        let key = r.key.as_ref().map(IdempotencyKey::as_str);
        claim = claim
            .bind(r.user.id.as_i64())
            .bind(key)
            .bind(&r.fingerprint)
            .bind(r.id)
            .bind(r.now)
            .bind(i64::from(bucket(r.user.id)));
    }
    claim.execute(tx).await?;
    Ok(())
}

/// Inserts `orders` (each with the time it was asked for) and all their items: two statements.
async fn insert_orders(tx: &mut AnyConnection, orders: &[(&Order, i64)]) -> sqlx::Result<()> {
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

/// After `order`'s commit: the read-your-writes mark, the counter, the log line, the answer.
fn placed(state: &AppState, user: UserId, order: Order, now: i64) -> Placed {
    state.db.note_write(user);
    state.metrics.order_created();
    tracing::info!(order_id = order.id, total_cents = order.total_cents, items = order.items.len(), "order placed");
    Placed::Created(Order { created_at: rfc3339(now), ..order })
}

/// `e` once more, for the next order of a batch that shares it (errors are not `Clone`): the same
/// status for the client, the same text for the log.
fn copy_of(e: &ApiError) -> ApiError {
    match e {
        ApiError::Unavailable(source) => ApiError::Unavailable(sqlx::Error::Protocol(source.to_string())),
        other => ApiError::Unexpected(anyhow::anyhow!("{other:#}")),
    }
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
    Ok(Order { id, user_id: user.as_i64(), status: "placed".into(), total_cents, created_at: String::new(), items })
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
pub(crate) async fn purge_expired_keys(db: &AnyPool, dialect: Dialect, cutoff: i64, batch: u32) -> sqlx::Result<u64> {
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
