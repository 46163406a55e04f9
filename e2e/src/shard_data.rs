//! Generated shoppers for a shard at a real shop's size, written straight into its primary through
//! the real schema (the backend's migrations must have run: start the shard's backend first):
//! per user a profile, `ORDERS_PER_USER` orders of 2 or 3 items each (2.5 on average) and an
//! idempotency key per order, every row with its bucket. Used by `examples/load_shard.rs` (the
//! benchmarks' loader) and by tests that need buckets larger than a chunk.
//!
//! Users are spread evenly over the buckets given; ids are `FIRST_USER + seq * 1000 + bucket`, so
//! a load never meets a registered user's id. Order ids keep the backend's layout (milliseconds,
//! instance, shard number) with instance 63, which no backend process uses, and "milliseconds"
//! counting up from 1 per generated user: never an id a backend mints, nor one of another load.

use std::time::Instant;

use futures::stream::{self, StreamExt as _, TryStreamExt as _};
use sqlx::AnyPool;

/// Orders a generated user has.
pub const ORDERS_PER_USER: u64 = 10;
/// Rows a generated user makes: the profile, and per order the order, 2 or 3 items (alternately)
/// and a key.
pub const ROWS_PER_USER: u64 = 1 + 2 * ORDERS_PER_USER + ORDERS_PER_USER * 5 / 2;
/// The first generated user id's base.
pub const FIRST_USER: u64 = 10_000_000_000;
/// Users written per batch of statements.
const BATCH_USERS: u64 = 200;

/// What a load wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Loaded {
    pub users: u64,
    pub orders: u64,
    pub items: u64,
    pub keys: u64,
    pub seconds: f64,
}

impl Loaded {
    pub fn rows(&self) -> u64 {
        self.users + self.orders + self.items + self.keys
    }
}

/// Writes users `first_seq..first_seq + users` of `buckets` (each user's bucket is
/// `buckets[seq % len]`) into `db`, over `connections` connections at once. `mysql` turns off the
/// session's unique and foreign-key checks for speed (the rows are made consistent here).
pub async fn load(
    db: &AnyPool,
    mysql: bool,
    buckets: &[u16],
    shard_number: u8,
    first_seq: u64,
    users: u64,
    connections: usize,
) -> sqlx::Result<Loaded> {
    assert!(!buckets.is_empty(), "no buckets to load users into");
    let started = Instant::now();
    let batches: Vec<(u64, u64)> = (first_seq..first_seq + users)
        .step_by(BATCH_USERS as usize)
        .map(|from| (from, (from + BATCH_USERS).min(first_seq + users)))
        .collect();
    let per_task = batches.len().div_ceil(connections.max(1)).max(1);
    let totals: Vec<Loaded> = stream::iter(batches.chunks(per_task).map(<[(u64, u64)]>::to_vec))
        .map(|mine| async move {
            let mut conn = db.acquire().await?;
            if mysql {
                sqlx::query("SET SESSION unique_checks = 0, foreign_key_checks = 0").execute(&mut *conn).await?;
            }
            let mut done = Loaded::default();
            for (from, to) in mine {
                write_batch(&mut conn, buckets, shard_number, from, to, &mut done).await?;
            }
            conn.detach();
            Ok::<_, sqlx::Error>(done)
        })
        .buffer_unordered(connections.max(1))
        .try_collect()
        .await?;
    let mut all = totals.into_iter().fold(Loaded::default(), |a, b| Loaded {
        users: a.users + b.users,
        orders: a.orders + b.orders,
        items: a.items + b.items,
        keys: a.keys + b.keys,
        seconds: 0.0,
    });
    all.seconds = started.elapsed().as_secs_f64();
    Ok(all)
}

/// The id of user `seq` of `buckets`.
pub fn user_id(buckets: &[u16], seq: u64) -> u64 {
    FIRST_USER + seq * 1000 + u64::from(buckets[(seq % buckets.len() as u64) as usize])
}

async fn write_batch(
    conn: &mut sqlx::AnyConnection,
    buckets: &[u16],
    shard_number: u8,
    from: u64,
    to: u64,
    done: &mut Loaded,
) -> sqlx::Result<()> {
    let (mut users, mut orders, mut items, mut keys) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for seq in from..to {
        let user = user_id(buckets, seq);
        let bucket = user % 1000;
        let created = 1_700_000_000 + (seq % 10_000_000) as i64;
        users.push(format!("({user}, 'shopper{user}@example.com', 1, {created}, {bucket})"));
        for n in 0..ORDERS_PER_USER {
            // From the user, not the sequence: loads into other buckets never share an order id.
            let ms = (user - FIRST_USER) * ORDERS_PER_USER + n + 1;
            let order = ms * 4096 + 63 * 64 + u64::from(shard_number);
            let lines = 2 + (ms % 2);
            let mut total = 0;
            for line in 0..lines {
                let product = 1 + (ms + line * 5) % 12;
                let price = 1000 + product * 250;
                total += price;
                items.push(format!("({order}, {product}, 1, {price}, {price}, {bucket})"));
            }
            orders.push(format!("({order}, {user}, 'placed', {total}, {created}, {created}, {bucket})"));
            keys.push(format!(
                "({user}, 'load-{order}', '{:064x}', {order}, {created}, {bucket})",
                order.wrapping_mul(2_654_435_761)
            ));
        }
    }
    for (sql, rows) in [
        ("INSERT INTO users (id, email, is_active, created_at, bucket) VALUES ", &users),
        ("INSERT INTO orders (id, user_id, status, total_cents, created_at, updated_at, bucket) VALUES ", &orders),
        (
            "INSERT INTO order_items (order_id, product_id, quantity, unit_price_cents, line_total_cents, bucket) VALUES ",
            &items,
        ),
        ("INSERT INTO idempotency_keys (user_id, idem_key, request_hash, order_id, created_at, bucket) VALUES ", &keys),
    ] {
        sqlx::query(&format!("{sql}{}", rows.join(","))).execute(&mut *conn).await?;
    }
    done.users += users.len() as u64;
    done.orders += orders.len() as u64;
    done.items += items.len() as u64;
    done.keys += keys.len() as u64;
    Ok(())
}
