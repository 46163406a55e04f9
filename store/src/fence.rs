//! Write fences: for each bucket, whether this shard's primary accepts writes for its users.
//!
//! The shard map says who serves a bucket; the fence makes sure of it where the rows are. Every
//! write transaction reads its user's fence row first (on MariaDB with a shared lock), so closing
//! a fence (`shopctl shards move`, one `UPDATE`) waits for the writes already running for that
//! bucket to commit, and every later one sees it closed and gets 503 with nothing written. A move
//! closes the source's fence before its last copy and opens the target's only after every backend
//! has stopped serving the bucket, so at no moment can two shards take writes for one user.
//!
//! The table has a row per bucket, filled once from the current map when the shard is set up.

use shopgate_core::shardmap::{bucket, BUCKETS};
use shopgate_core::UserId;
use sqlx::{AnyConnection, AnyPool};

use crate::{placeholders, Dialect};

/// Inside a write transaction, before anything is written: whether `user`'s bucket is open here.
/// On MariaDB the row stays share-locked until the transaction ends (see the module doc), so a
/// move's closing of the fence waits for this transaction.
pub async fn is_open(tx: &mut AnyConnection, dialect: Dialect, user: UserId) -> sqlx::Result<bool> {
    let b = bucket(user);
    Ok(open_among(tx, dialect, &[b]).await?.contains(&b))
}

/// Those of `buckets` whose writes are open here, read with [`select_sql`] (share-locked on
/// MariaDB). Orders read theirs together with the prices ([`crate::orders`]).
pub async fn open_among(tx: &mut AnyConnection, dialect: Dialect, buckets: &[u16]) -> sqlx::Result<Vec<u16>> {
    let sql = select_sql(dialect, buckets.len());
    let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(&sql);
    for b in buckets {
        query = query.bind(i64::from(*b));
    }
    Ok(open_of(query.fetch_all(tx).await?.into_iter().map(|(_, b, open, _)| (b, open))))
}

/// The read of [`open_among`] for `n` buckets (bound in order): rows `(0, bucket, writes_open,
/// '')`, share-locked on MariaDB. Its shape lets an order's transaction send it with the prices
/// (`catalog::prices_sql`) as one `UNION ALL`.
pub(crate) fn select_sql(dialect: Dialect, n: usize) -> String {
    // Placeholders, not the numbers: one prepared statement per list length, not per bucket.
    let select = format!(
        "SELECT 0 AS part, bucket AS id, writes_open AS value, '' AS name FROM bucket_fence WHERE bucket IN ({})",
        placeholders(n)
    );
    match dialect {
        // SQLite's write transactions (BEGIN IMMEDIATE) already run one at a time.
        Dialect::Sqlite => select,
        Dialect::MySql => format!("{select} LOCK IN SHARE MODE"),
    }
}

/// The open buckets among `(bucket, writes_open)` rows.
pub(crate) fn open_of(rows: impl Iterator<Item = (i64, i64)>) -> Vec<u16> {
    rows.filter(|(_, open)| *open == 1).filter_map(|(b, _)| u16::try_from(b).ok()).collect()
}

/// Fills the table on its first use: open for `owned`, closed for every other bucket. A table that
/// has rows is left as it is (it is the state moves left).
pub async fn fill_if_empty(db: &AnyPool, dialect: Dialect, owned: &[u16]) -> sqlx::Result<()> {
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bucket_fence").fetch_one(db).await?;
    if rows > 0 {
        return Ok(());
    }
    let values: Vec<String> =
        (0..BUCKETS).map(|b| format!("({b}, {})", i32::from(owned.binary_search(&b).is_ok()))).collect();
    // Two processes of one shard may both find it empty: the second one's rows are ignored.
    let insert = match dialect {
        Dialect::Sqlite => "INSERT OR IGNORE INTO bucket_fence (bucket, writes_open) VALUES",
        Dialect::MySql => "INSERT IGNORE INTO bucket_fence (bucket, writes_open) VALUES",
    };
    sqlx::query(&format!("{insert} {}", values.join(","))).execute(db).await?;
    Ok(())
}

/// Opens or closes `buckets` (a move's steps). Returns once the writes running for them are done.
pub async fn set(db: &AnyPool, buckets: &[u16], open: bool) -> sqlx::Result<()> {
    if buckets.is_empty() {
        return Ok(());
    }
    let list = super::bucket_list(buckets);
    sqlx::query(&format!("UPDATE bucket_fence SET writes_open = ? WHERE bucket IN ({list})"))
        .bind(i64::from(open))
        .execute(db)
        .await?;
    Ok(())
}

/// The buckets whose writes are open here, ascending.
pub async fn open_buckets(db: &AnyPool) -> sqlx::Result<Vec<u16>> {
    let rows: Vec<i64> = sqlx::query_scalar("SELECT bucket FROM bucket_fence WHERE writes_open = 1 ORDER BY bucket")
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().filter_map(|b| u16::try_from(b).ok()).collect())
}
