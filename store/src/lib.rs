//! The databases' schemas ([`schema`]: the auth database's and a shard's migrations, and the check
//! a service makes at start) and every query the shop makes of a shard, one module per resource.
//! Functions take a pool or a connection, a [`Dialect`] where the SQL differs by engine, and plain
//! values (`UserId`, rows), and return `sqlx::Result` or a small error of their own. No HTTP: what a failure means to a client (503
//! `moving`, 422, replay of an idempotent order), group commit and metrics are the backend's
//! service layer (`backend/src/service/`). shopctl and the end-to-end tests use this crate
//! directly, without the backend.
//!
//! Plain `?` placeholders and BIGINT/VARCHAR columns only, so each query runs unchanged on SQLite
//! and MySQL/MariaDB through sqlx's Any driver; the few statements that differ by engine are
//! chosen by [`Dialect`].

pub use shopgate_core::db::Dialect;
use sqlx::AnyPool;

pub mod buckets;
pub mod catalog;
pub mod changes;
pub mod demo;
pub mod fence;
pub mod orders;
pub mod per_user;
pub mod schema;
pub mod shard;
pub mod users;

/// The newest stamp of any process's heartbeat row in `db` (a primary or its replica), in unix
/// milliseconds: how far the shard's writes have come, or the replica's copy of them.
pub async fn heartbeat(db: &AnyPool) -> sqlx::Result<i64> {
    let newest: Option<i64> =
        sqlx::query_scalar("SELECT MAX(beat_ms) FROM replication_heartbeat").fetch_one(db).await?;
    Ok(newest.unwrap_or(0))
}

/// Buckets as an SQL list (`3,17,250`) for `IN (...)`. Bucket numbers are ours (below 1000), not
/// input, so they go into the SQL as they are.
fn bucket_list(buckets: &[u16]) -> String {
    buckets.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

/// `?, ?, ?` for an `IN (...)` list of `n` values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn placeholders() {
        assert_eq!(super::placeholders(3), "?, ?, ?");
    }
}
