//! Placing orders: the write fence, group commit, replay of an idempotent retry, and what each
//! outcome means to the client ([`ApiError`]). The rows themselves are written and read by
//! [`shopgate_store::orders`], on the transaction held here.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use shopgate_core::db::begin_write_on;
use shopgate_core::shardmap::bucket;
use shopgate_core::time::rfc3339;
use shopgate_core::UserId;
use shopgate_store::orders::{self, fences_and_prices, KeyClaim, Order, OrderItem, Prices};
use shopgate_store::users;
use sqlx::AnyConnection;

use crate::auth::AuthUser;
use crate::db::{is_unique_violation, now_secs};
use crate::domain::{unknown_product, IdempotencyKey, OrderLines};
use crate::error::ApiError;
use crate::group_commit::{GroupCommit, Member};
use crate::order_id::OrderIdGen;

use super::{fence, Shard};

/// What `place` did: made a new order, or found the one an earlier request with the same
/// Idempotency-Key made.
#[derive(Debug)]
pub(crate) enum Placed {
    Created(Order),
    Replayed(Order),
}

/// An order asked for: by whom, under which key, what. Its id and time are minted on arrival.
pub(crate) struct Request {
    user: AuthUser,
    key: Option<IdempotencyKey>,
    lines: OrderLines,
    fingerprint: String,
    id: i64,
    now: i64,
}

impl Request {
    /// Its claim on its Idempotency-Key, if it has one.
    fn claim(&self) -> Option<KeyClaim<'_>> {
        let key = self.key.as_ref()?;
        Some(KeyClaim {
            user: self.user.id,
            key: key.as_str(),
            fingerprint: &self.fingerprint,
            order_id: self.id,
            now: self.now,
        })
    }
}

/// What a batch says to one of its orders: its answer, or to be placed alone (the batch could not
/// take it, or failed before its commit and so wrote nothing), which gives it the exact answer it
/// would have had on its own.
pub(crate) enum Outcome {
    Done(Result<Placed, ApiError>),
    Alone,
}

/// The orders waiting to share a transaction ([`crate::group_commit`]).
type Batches = GroupCommit<Arc<Request>, Outcome>;

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

/// This process's part in placing orders: the ids it mints and the orders waiting to share a
/// transaction.
pub(crate) struct Orders {
    pub(crate) ids: OrderIdGen,
    batches: Batches,
}

impl Orders {
    /// For process `instance` of the shard numbered `shard`.
    pub(crate) fn new(shard: u8, instance: u8) -> Self {
        Self {
            ids: OrderIdGen::new(shard, instance),
            batches: GroupCommit::new(BATCHES_AT_ONCE, MAX_BATCH_LINES, LINGER),
        }
    }
}

/// Places an order for `user`. Prices come from the catalog; the total is checked integer cents.
/// With a key, a request repeating an earlier one (same merged items) gets that order back, one
/// with different items gets 422, and of concurrent duplicates exactly one creates the order.
///
/// Orders that arrive while others are being committed share their transaction (group commit,
/// [`place_batch`]); one that arrives alone is placed alone ([`place_alone`]).
pub(crate) async fn place(
    shard: &Shard<'_>,
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
        id: shard.orders.ids.next(),
        now: now_secs(),
    });
    let outcome = shard
        .orders
        .batches
        .submit(request.clone(), |r| r.lines.lines().len(), |batch| place_batch(shard, batch))
        .await;
    match outcome {
        Some(Outcome::Done(result)) => result,
        Some(Outcome::Alone) => place_alone(shard, &request).await,
        None => Err(anyhow::anyhow!("an order batch ended without answering").into()),
    }
}

/// One order in a transaction of its own, in as few round trips as the rules allow: `BEGIN`, the
/// fence and the prices (one statement, [`fences_and_prices`]), the key's claim, the order, its
/// items (one statement), the profile, `COMMIT`. A repeated key is found by its claim failing, not
/// by a read before it.
async fn place_alone(shard: &Shard<'_>, request: &Request) -> Result<Placed, ApiError> {
    let Request { user, key, lines, fingerprint, id, now } = request;
    // `place` checked `user.may_write()` before queueing the request.
    let mut tx = shard.db.begin_write().await?;
    // Read in the transaction: on MariaDB the same snapshot as the rest, the fence row
    // share-locked; on SQLite under the write lock.
    let (open, prices) =
        fences_and_prices(&mut tx, shard.db.dialect(), &[bucket(user.id)], &lines.product_ids()).await?;
    if open.is_empty() {
        return Err(ApiError::Moving);
    }
    if let Some(key) = key {
        // First write of the transaction: on a duplicate key nothing else has been written.
        let claim = KeyClaim { user: user.id, key: key.as_str(), fingerprint, order_id: *id, now: *now };
        match orders::claim_keys(&mut tx, &[claim]).await {
            Ok(()) => {}
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                // An earlier request with this key committed (or a concurrent one just did).
                return match replay(shard, user.id, key, fingerprint).await? {
                    Some(earlier) => Ok(Placed::Replayed(earlier)),
                    None => Err(anyhow::anyhow!("idempotency row vanished after a duplicate-key error").into()),
                };
            }
            Err(e) => return Err(e.into()),
        }
    }
    // An unknown product or a total too large drops the transaction: nothing is written.
    let order = priced(*id, user.id, lines, &prices)?;
    orders::insert(&mut tx, &[(&order, *now)]).await?;
    users::upsert(&mut tx, shard.db.dialect(), &[(user.id, &user.email, *now)]).await?;
    tx.commit().await?;
    shard.metrics.order_transaction();
    Ok(placed(shard, user.id, order, *now))
}

/// Places a batch of orders in one transaction and answers each ([`write_batch`]); a batch of one
/// is an order alone.
async fn place_batch(shard: &Shard<'_>, mut batch: Vec<Member<Arc<Request>, Outcome>>) {
    if batch.len() == 1 {
        let member = batch.remove(0);
        let result = place_alone(shard, &member.job).await;
        return member.answer(Outcome::Done(result));
    }
    let requests: Vec<Arc<Request>> = batch.iter().map(|m| m.job.clone()).collect();
    let outcomes = write_batch(shard, &requests).await;
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
async fn write_batch(shard: &Shard<'_>, requests: &[Arc<Request>]) -> Vec<Outcome> {
    let cannot_start = |e: sqlx::Error| {
        let e = ApiError::from(e);
        tracing::warn!(error = %e, orders = requests.len(), "could not start a batch of orders");
        requests.iter().map(|_| Outcome::Done(Err(copy_of(&e)))).collect()
    };
    let mut conn = match shard.db.kept_writer().await {
        Ok(conn) => conn,
        Err(e) => return cannot_start(e),
    };
    // `None`: in the transaction; what is still `None` at the end is placed alone.
    let mut outcomes: Vec<Option<Outcome>> = requests.iter().map(|_| None).collect();
    let committed = {
        let mut tx = match begin_write_on(&mut conn, shard.db.dialect()).await {
            Ok(tx) => tx,
            Err(e) => return cannot_start(e),
        };
        match stage_batch(shard, &mut tx, requests, &mut outcomes).await {
            // Dropping the transaction rolls it back: nothing of the batch was written.
            Err(e) => {
                tracing::debug!(error = %e, "a batch of orders failed before its commit; placing them alone");
                false
            }
            Ok(orders) if orders.is_empty() => false,
            Ok(orders) => match tx.commit().await {
                Ok(()) => {
                    shard.metrics.order_transaction();
                    for (i, order) in orders {
                        outcomes[i] =
                            Some(Outcome::Done(Ok(placed(shard, requests[i].user.id, order, requests[i].now))));
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
        shard.db.keep(conn);
    }
    outcomes.into_iter().map(|o| o.unwrap_or(Outcome::Alone)).collect()
}

/// Everything of [`write_batch`] up to its commit: the orders written, by their place in
/// `requests`. Those left out get their outcome in `outcomes`.
async fn stage_batch(
    shard: &Shard<'_>,
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
    let (open, prices) = fences_and_prices(tx, shard.db.dialect(), &buckets, &products).await?;

    let mut placing = Vec::with_capacity(requests.len());
    let mut keys = HashSet::new();
    for (i, r) in requests.iter().enumerate() {
        let key = r.key.as_ref().map(|k| (r.user.id, k.as_str()));
        if !open.contains(&bucket(r.user.id)) {
            outcomes[i] = Some(Outcome::Done(Err(ApiError::Moving)));
        } else if key.is_some_and(|k| !keys.insert(k)) {
            // A retry of an order in this batch: alone, after it, it finds that order.
            outcomes[i] = Some(Outcome::Alone);
        } else if let Ok(order) = priced(r.id, r.user.id, &r.lines, &prices) {
            placing.push((i, order));
        } else {
            outcomes[i] = Some(Outcome::Alone);
        }
    }
    if placing.is_empty() {
        return Ok(placing);
    }
    let claims: Vec<KeyClaim> = placing.iter().filter_map(|(i, _)| requests[*i].claim()).collect();
    if !claims.is_empty() {
        orders::claim_keys(tx, &claims).await?;
    }
    let rows: Vec<(&Order, i64)> = placing.iter().map(|(i, order)| (order, requests[*i].now)).collect();
    orders::insert(tx, &rows).await?;
    let mut profiles: Vec<(UserId, &str, i64)> = placing
        .iter()
        .map(|(i, _)| (requests[*i].user.id, requests[*i].user.email.as_str(), requests[*i].now))
        .collect();
    // One row per user, in ascending order (see `users::upsert`).
    profiles.sort_by_key(|(user, _, _)| *user);
    profiles.dedup_by_key(|(user, _, _)| *user);
    users::upsert(tx, shard.db.dialect(), &profiles).await?;
    Ok(placing)
}

/// After `order`'s commit: the read-your-writes mark, the counter, the log line, the answer.
fn placed(shard: &Shard<'_>, user: UserId, order: Order, now: i64) -> Placed {
    shard.db.note_write(user);
    shard.metrics.order_created();
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
fn priced(id: i64, user: UserId, lines: &OrderLines, prices: &Prices) -> Result<Order, ApiError> {
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
    shard: &Shard<'_>,
    user: UserId,
    key: &IdempotencyKey,
    fingerprint: &str,
) -> Result<Option<Order>, ApiError> {
    let earlier = orders::claim_of(shard.db.db_write(), user, key.as_str()).await?;
    let Some((request_hash, order_id)) = earlier else {
        return Ok(None);
    };
    if request_hash != fingerprint {
        return Err(ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different order; use a new key for a new order",
        ));
    }
    let order = orders::find(shard.db.db_write(), user, order_id).await?;
    if order.is_some() {
        shard.metrics.idempotent_replay();
    }
    Ok(order)
}

/// Cancels `user`'s order `id` if it is still placed; `None` if there is no such order of theirs.
pub(crate) async fn cancel(shard: &Shard<'_>, user: &AuthUser, id: i64) -> Result<Option<Order>, ApiError> {
    let mut tx = fence::begin(shard, user).await?;
    let cancelled = orders::cancel(&mut tx, user.id, id, now_secs()).await?;
    tx.commit().await?;
    if cancelled {
        shard.db.note_write(user.id);
        tracing::info!(order_id = id, "order cancelled");
    }
    Ok(orders::find(shard.db.db_write(), user.id, id).await?)
}
