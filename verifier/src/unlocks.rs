//! Operator unlocks of the login throttle (`shopctl users unlock`), passed to every verifier.
//!
//! Each verifier keeps its guessing limits in memory ([`crate::throttle`]), so an unlock is a row
//! in the auth database, `login_unlocks (email, unlocked_at)`, that every verifier follows on the
//! schedule of its revocations (`revocation_refresh_ms`): an unlock is in force everywhere within
//! the config's revocation bound, which is what `shopctl` waits before it says so.
//!
//! `unlocked_at` is the auth database's clock (one clock for every writer), and a second unlock of
//! an email moves it forward by at least one, so each unlock is a new value. A verifier reads the
//! rows from the newest value it has seen minus [`COMMIT_WINDOW`] (a row that committed late is not
//! missed) and applies each value once: failures counted after an unlock are never cleared by
//! reading the same row again. A verifier that starts takes the rows there are as applied: its
//! throttle is empty anyway. Rows older than a day are purged: by then every verifier has them.

use std::collections::HashMap;
use std::sync::Mutex;

use sqlx::{AnyPool, Row as _};

use crate::throttle::GuessLimits;

/// How far back of the newest `unlocked_at` seen each read looks again.
pub(crate) const COMMIT_WINDOW: i64 = 10;
/// Rows older than this (seconds) are purged.
const KEEP_SECONDS: i64 = 24 * 3600;

/// The auth database's clock, in unix seconds, as SQL of the connection's dialect.
fn now_sql(backend: &str) -> &'static str {
    if backend == "SQLite" {
        "CAST(strftime('%s', 'now') AS INTEGER)"
    } else {
        "UNIX_TIMESTAMP()"
    }
}

/// Records an unlock of `email`'s login throttle; every verifier applies it within the revocation
/// bound. Returns the row's `unlocked_at`.
pub async fn record(db: &AnyPool, email: &str) -> Result<i64, sqlx::Error> {
    let email = email.trim().to_lowercase();
    let mut conn = db.acquire().await?;
    let now = now_sql(conn.backend_name());
    let upsert = if conn.backend_name() == "SQLite" {
        format!(
            "INSERT INTO login_unlocks (email, unlocked_at) VALUES (?, {now}) ON CONFLICT (email) \
             DO UPDATE SET unlocked_at = MAX(login_unlocks.unlocked_at + 1, excluded.unlocked_at)"
        )
    } else {
        format!(
            "INSERT INTO login_unlocks (email, unlocked_at) VALUES (?, {now}) \
             ON DUPLICATE KEY UPDATE unlocked_at = GREATEST(unlocked_at + 1, VALUES(unlocked_at))"
        )
    };
    sqlx::query(&upsert).bind(&email).execute(&mut *conn).await?;
    sqlx::query_scalar("SELECT unlocked_at FROM login_unlocks WHERE email = ?").bind(&email).fetch_one(&mut *conn).await
}

/// What one verifier has applied.
pub(crate) struct Unlocks {
    /// email -> the newest `unlocked_at` applied, for the rows a read can still return.
    applied: Mutex<HashMap<String, i64>>,
    /// The newest `unlocked_at` read; `None` before the first read.
    newest_seen: Mutex<Option<i64>>,
}

impl Unlocks {
    /// The first read: takes note of the unlocks there are, applying none (a starting verifier's
    /// throttle is empty).
    pub(crate) async fn load(db: &AnyPool) -> Result<Self, sqlx::Error> {
        let unlocks = Self { applied: Mutex::new(HashMap::new()), newest_seen: Mutex::new(None) };
        unlocks.read(db, None).await?;
        Ok(unlocks)
    }

    /// Reads the unlocks recorded since the last read and applies the new ones to `limits`.
    /// Returns how many were applied.
    pub(crate) async fn refresh(&self, db: &AnyPool, limits: &GuessLimits) -> Result<usize, sqlx::Error> {
        self.read(db, Some(limits)).await
    }

    async fn read(&self, db: &AnyPool, limits: Option<&GuessLimits>) -> Result<usize, sqlx::Error> {
        let seen = *self.newest_seen.lock().unwrap_or_else(|p| p.into_inner());
        let from = seen.map_or(i64::MIN, |s| s.saturating_sub(COMMIT_WINDOW));
        let rows = sqlx::query("SELECT email, unlocked_at FROM login_unlocks WHERE unlocked_at >= ?")
            .bind(from)
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<String, _>("email")?, r.try_get::<i64, _>("unlocked_at")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let mut newest = seen.unwrap_or(i64::MIN);
        let mut unlocked = 0;
        for (email, at) in rows {
            newest = newest.max(at);
            let before = applied.insert(email.clone(), at);
            if let Some(limits) = limits.filter(|_| before.is_none_or(|b| b < at)) {
                limits.unlock(&email);
                unlocked += 1;
            }
        }
        // What a read can no longer return need not be remembered.
        applied.retain(|_, at| *at >= newest.saturating_sub(COMMIT_WINDOW));
        *self.newest_seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(newest);
        Ok(unlocked)
    }
}

/// Drops unlocks older than a day: every verifier has applied them long since.
pub(crate) async fn purge_old(db: &AnyPool) -> Result<u64, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let now = now_sql(conn.backend_name());
    let sql = format!("DELETE FROM login_unlocks WHERE unlocked_at < {now} - ?");
    Ok(sqlx::query(&sql).bind(KEEP_SECONDS).execute(&mut *conn).await?.rows_affected())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use super::*;

    const HOME: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    async fn auth_db() -> (tempfile::TempDir, AnyPool) {
        let dir = tempfile::tempdir().unwrap();
        let url = shopgate_core::config::DbUrl::new(format!("sqlite://{}", dir.path().join("auth.db").display()));
        // As `shopctl migrate` leaves it.
        shopgate_store::schema::migrate_url(&url, shopgate_store::schema::Schema::Auth).await.unwrap();
        let db = crate::db::connect(&url).await.unwrap();
        (dir, db)
    }

    fn locked(limits: &GuessLimits, email: &str) -> bool {
        limits.reserve(email, HOME).map(|a| a.failed()).is_err()
    }

    #[tokio::test]
    async fn each_unlock_is_applied_once_by_every_follower() {
        let (_dir, db) = auth_db().await;
        record(&db, "old@example.com").await.unwrap();
        let limits = GuessLimits::new(1, 100, Duration::from_secs(60));
        let unlocks = Unlocks::load(&db).await.unwrap();
        assert_eq!(unlocks.refresh(&db, &limits).await.unwrap(), 0, "a starting verifier applies nothing");

        assert!(!locked(&limits, "ann@example.com") && locked(&limits, "ann@example.com"));
        let first = record(&db, " Ann@Example.com").await.unwrap();
        assert_eq!(unlocks.refresh(&db, &limits).await.unwrap(), 1);
        assert!(!locked(&limits, "ann@example.com"), "unlocked");
        assert!(locked(&limits, "ann@example.com"), "failures after the unlock count");
        assert_eq!(unlocks.refresh(&db, &limits).await.unwrap(), 0, "the same row read again");
        assert!(locked(&limits, "ann@example.com"), "a row read again must not unlock again");

        // A second unlock in the same second is a new value, so it is applied too.
        let second = record(&db, "ann@example.com").await.unwrap();
        assert!(second > first, "{second} after {first}");
        assert_eq!(unlocks.refresh(&db, &limits).await.unwrap(), 1);
        assert!(!locked(&limits, "ann@example.com"));

        // Far older rows are not read again; a day-old row is purged.
        sqlx::query("UPDATE login_unlocks SET unlocked_at = unlocked_at - 100000 WHERE email = 'old@example.com'")
            .execute(&db)
            .await
            .unwrap();
        assert_eq!(purge_old(&db).await.unwrap(), 1);
    }
}
