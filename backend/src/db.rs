//! The shard's databases and the policy for using them.
//!
//! Writes go to the primary ([`Db::db_write`]). Reads go to the replica ([`Db::db_read`]) unless
//! no replica is configured, the replica does not answer a quick probe, it lags more than
//! `replica_max_lag_seconds` behind, or the reading user wrote within that window (so users read
//! their own writes at once); each fallback is a `warn!` and `shop_replica_fallback_total`.
//!
//! Lag is measured the pt-heartbeat way: the backend stamps `replication_heartbeat` on the primary
//! every second and compares the replica's copy with the last stamp it wrote. That works the same on
//! SQLite and MySQL/MariaDB, through the Any driver, without replication-admin privileges.
//!
//! Every pool has bounded acquire and connect timeouts, so a dead database is a fast 503, not a
//! hung request. The schema comes from `migrations/sqlite` or `migrations/mysql` (same versions and
//! names), chosen by the URL's scheme and run on the primary at start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use shopgate_core::config::{DbUrl, ShardConfig};
use shopgate_core::UserId;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::error::DatabaseError as _;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{Any, AnyPool, Executor as _, Transaction};

use crate::metrics::Metrics;
use crate::seed;

/// How long a request waits for a connection, connecting included, before it gets 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the replica probe may take before the replica counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// A probe's verdict is reused for this long, so reads do not each pay for a probe.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How often the primary's heartbeat row is stamped (when a replica is configured).
pub const BEAT_EVERY: Duration = Duration::from_secs(1);
/// Users tracked for read-your-writes before the map is pruned.
const MAX_TRACKED_WRITERS: usize = 100_000;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static MYSQL_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/mysql");

/// The SQL dialect, where the two engines differ (upserts, transaction start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    MySql,
}

impl Dialect {
    fn of(url: &DbUrl) -> anyhow::Result<Self> {
        if url.is_sqlite() {
            Ok(Self::Sqlite)
        } else if url.is_mysql() {
            Ok(Self::MySql)
        } else {
            anyhow::bail!("database URL {url} is neither sqlite: nor mysql:/mariadb:")
        }
    }
}

/// Why the schema could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The primary did not answer; worth retrying.
    #[error("primary unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The stored schema disagrees with this build's migrations; retrying will not help.
    #[error("schema: {0}")]
    Schema(#[source] MigrateError),
}

impl From<sqlx::Error> for InitError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unavailable(e)
    }
}

impl From<MigrateError> for InitError {
    fn from(e: MigrateError) -> Self {
        match e {
            MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => Self::Unavailable(e),
            other => Self::Schema(other),
        }
    }
}

pub struct Db {
    dialect: Dialect,
    primary: AnyPool,
    replica: Option<Replica>,
    max_lag: Duration,
    recent_writers: RecentWriters,
    /// The last heartbeat (unix ms) this process wrote to the primary; 0 before the first.
    last_beat_ms: AtomicI64,
    metrics: Arc<Metrics>,
}

struct Replica {
    pool: AnyPool,
    /// When the replica was last probed and whether it was usable. Behind an async mutex so
    /// that, when the verdict expires, one read probes while the others wait for its answer.
    probe: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl Db {
    /// Makes the pools without connecting: a database that is down at start is a 503 until it
    /// comes up, not a refusal to start. A URL of an unknown kind is refused here.
    pub fn connect(shard: &ShardConfig, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::of(&shard.primary).context("shard primary")?;
        let primary_url = match dialect {
            Dialect::Sqlite => sqlite_create_if_missing(shard.primary.expose()),
            Dialect::MySql => shard.primary.expose().to_owned(),
        };
        let primary = lazy_pool(&primary_url, dialect).context("shard primary")?;
        let replica = match &shard.replica {
            None => None,
            Some(url) => {
                let replica_dialect = Dialect::of(url).context("shard replica")?;
                // A replica is never created: a missing one is down, and reads use the primary.
                let pool = lazy_pool(url.expose(), replica_dialect).context("shard replica")?;
                Some(Replica { pool, probe: tokio::sync::Mutex::new(None) })
            }
        };
        let max_lag = Duration::from_secs(shard.replica_max_lag_seconds);
        Ok(Self {
            dialect,
            primary,
            replica,
            max_lag,
            recent_writers: RecentWriters::new(max_lag),
            last_beat_ms: AtomicI64::new(0),
            metrics,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn has_replica(&self) -> bool {
        self.replica.is_some()
    }

    /// The primary: every write, and reads that must see the latest state.
    pub fn db_write(&self) -> &AnyPool {
        &self.primary
    }

    /// Where `user`'s reads go: the replica if it is usable and `user` has not written lately,
    /// else the primary.
    pub async fn db_read(&self, user: UserId) -> &AnyPool {
        let Some(replica) = &self.replica else {
            return &self.primary;
        };
        if self.recent_writers.wrote_recently(user) {
            return &self.primary;
        }
        if self.replica_usable(replica).await {
            &replica.pool
        } else {
            self.metrics.replica_fallback();
            &self.primary
        }
    }

    /// Records that `user` just wrote, so their reads go to the primary for the lag window.
    pub fn note_write(&self, user: UserId) {
        if self.replica.is_some() {
            self.recent_writers.note(user);
        }
    }

    /// Starts a write transaction on the primary. On SQLite it is `BEGIN IMMEDIATE`: the write
    /// lock is taken (waiting up to busy_timeout) before the first read, so a transaction never
    /// fails half-way because another writer committed after its snapshot.
    pub async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Any>> {
        match self.dialect {
            Dialect::Sqlite => self.primary.begin_with("BEGIN IMMEDIATE").await,
            Dialect::MySql => self.primary.begin().await,
        }
    }

    /// Creates or updates the schema, seeds the demo catalog if it is empty and returns the
    /// largest order id stored (0 if none), for the order id generator.
    pub async fn init(&self) -> Result<i64, InitError> {
        match self.dialect {
            Dialect::Sqlite => {
                // WAL lets readers run beside the writer. It is stored in the file, so setting it
                // once is enough; if another process holds the file right now, a later start will.
                if let Err(e) = self.primary.execute("PRAGMA journal_mode = WAL").await {
                    if matches!(sqlite_code(&e), Some(5 | 6)) {
                        tracing::warn!(error = %e, "could not switch the shard database to WAL yet");
                    } else {
                        return Err(e.into());
                    }
                }
                SQLITE_MIGRATIONS.run(&self.primary).await?;
            }
            Dialect::MySql => MYSQL_MIGRATIONS.run(&self.primary).await?,
        }
        seed::demo_catalog_if_empty(self).await?;
        let max_id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM orders").fetch_one(&self.primary).await?;
        if self.replica.is_some() {
            self.beat().await?;
        }
        Ok(max_id.unwrap_or(0))
    }

    /// Stamps the heartbeat row on the primary; replicas copy it, and their copy tells their lag.
    pub async fn beat(&self) -> sqlx::Result<()> {
        let now = now_ms();
        sqlx::query("UPDATE replication_heartbeat SET beat_ms = ? WHERE id = 1")
            .bind(now)
            .execute(&self.primary)
            .await?;
        self.last_beat_ms.fetch_max(now, Ordering::Relaxed);
        Ok(())
    }

    /// Ok if the primary answers `SELECT 1` within `within` (a timeout is `PoolTimedOut`).
    pub async fn ping_primary(&self, within: Duration) -> sqlx::Result<()> {
        let ping = sqlx::query_scalar::<_, i64>("SELECT 1").fetch_one(&self.primary);
        match tokio::time::timeout(within, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    pub async fn close(&self) {
        self.primary.close().await;
        if let Some(r) = &self.replica {
            r.pool.close().await;
        }
    }

    async fn replica_usable(&self, replica: &Replica) -> bool {
        let mut probe = replica.probe.lock().await;
        if let Some((at, usable)) = *probe {
            if at.elapsed() < PROBE_EVERY {
                return usable;
            }
        }
        let usable = match tokio::time::timeout(PROBE_TIMEOUT, self.replica_beat(replica)).await {
            Ok(Ok(beat_ms)) => {
                // Lag is measured against what we last wrote, not the wall clock, so a primary
                // that stopped taking beats does not by itself make a healthy replica "late".
                let lag_ms = self.last_beat_ms.load(Ordering::Relaxed).saturating_sub(beat_ms);
                let bound_ms = i64::try_from(self.max_lag.as_millis()).unwrap_or(i64::MAX);
                if lag_ms > bound_ms {
                    tracing::warn!(lag_ms, bound_ms, "replica lags past its bound; reading from the primary");
                    false
                } else {
                    true
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "replica probe failed; reading from the primary");
                false
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = PROBE_TIMEOUT.as_millis() as u64,
                    "replica probe timed out; reading from the primary"
                );
                false
            }
        };
        *probe = Some((Instant::now(), usable));
        usable
    }

    async fn replica_beat(&self, replica: &Replica) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT beat_ms FROM replication_heartbeat WHERE id = 1").fetch_one(&replica.pool).await
    }
}

fn lazy_pool(url: &str, dialect: Dialect) -> anyhow::Result<AnyPool> {
    let options: AnyConnectOptions = url.parse().context("invalid database URL")?;
    let pool = AnyPoolOptions::new()
        .max_connections(10)
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .idle_timeout(Some(Duration::from_secs(300)))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if dialect == Dialect::Sqlite {
                    // sqlx's default too; said here because concurrent writers depend on it.
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                }
                Ok(())
            })
        })
        .connect_lazy_with(options);
    Ok(pool)
}

/// `sqlite:///x/shard.db` -> `sqlite:///x/shard.db?mode=rwc`, so the primary's file is created on
/// first start. A URL with its own query string is left alone.
pub fn sqlite_create_if_missing(url: &str) -> String {
    if url.contains('?') {
        url.to_owned()
    } else {
        format!("{url}?mode=rwc")
    }
}

/// Whether a database error means "the database is not answering or refuses for now" (503)
/// rather than "our query is wrong" (500).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
                // Too many connections, access denied, unknown database, shutting down, lock wait
                // timeout, deadlock, read-only, connection killed, query interrupted or timed out.
                matches!(my.number(), 1040 | 1045 | 1049 | 1053 | 1205 | 1213 | 1290 | 1317 | 1836 | 1927 | 3024)
                    || my.number() >= 2000 && my.number() < 3000
            } else {
                // BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB.
                matches!(sqlite_code(e), Some(5 | 6 | 8 | 10 | 11 | 13 | 14 | 26))
            }
        }
        _ => false,
    }
}

/// A duplicate key: on the idempotency row, a concurrent request with the same key won the race.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation())
}

/// SQLite's primary result code (the low byte of the extended code), if `e` is a SQLite error.
fn sqlite_code(e: &sqlx::Error) -> Option<i32> {
    let lite = e.as_database_error()?.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    Some(lite.code()?.parse::<i32>().ok()? & 0xff)
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub fn now_secs() -> i64 {
    now_ms() / 1000
}

/// Users who wrote within the lag window, whose reads must see the primary. Bounded: past
/// [`MAX_TRACKED_WRITERS`] expired entries are pruned, and if that is not enough the map is
/// dropped and every read goes to the primary for one window instead.
struct RecentWriters {
    window: Duration,
    inner: Mutex<RecentInner>,
}

#[derive(Default)]
struct RecentInner {
    by_user: HashMap<UserId, Instant>,
    everyone_until: Option<Instant>,
}

impl RecentWriters {
    fn new(window: Duration) -> Self {
        Self { window, inner: Mutex::new(RecentInner::default()) }
    }

    fn note(&self, user: UserId) {
        self.note_at(user, Instant::now(), MAX_TRACKED_WRITERS);
    }

    fn note_at(&self, user: UserId, now: Instant, cap: usize) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.by_user.len() >= cap {
            let window = self.window;
            inner.by_user.retain(|_, at| now.saturating_duration_since(*at) < window);
            if inner.by_user.len() >= cap {
                inner.by_user.clear();
                inner.everyone_until = Some(now + window);
            }
        }
        inner.by_user.insert(user, now);
    }

    fn wrote_recently(&self, user: UserId) -> bool {
        self.wrote_recently_at(user, Instant::now())
    }

    fn wrote_recently_at(&self, user: UserId, now: Instant) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.everyone_until.is_some_and(|until| now < until)
            || inner.by_user.get(&user).is_some_and(|at| now.saturating_duration_since(*at) < self.window)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(dir: &str) -> Vec<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dir);
        let mut v: Vec<String> =
            std::fs::read_dir(path).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn both_migration_folders_list_the_same_files() {
        let (lite, my) = (names("sqlite"), names("mysql"));
        assert!(!lite.is_empty());
        assert_eq!(lite, my, "migrations/sqlite and migrations/mysql must have the same versions and names");
        assert_eq!(SQLITE_MIGRATIONS.iter().count(), MYSQL_MIGRATIONS.iter().count());
    }

    #[test]
    fn sqlite_primary_urls_create_the_file() {
        assert_eq!(sqlite_create_if_missing("sqlite:///d/a.db"), "sqlite:///d/a.db?mode=rwc");
        assert_eq!(sqlite_create_if_missing("sqlite:///d/a.db?mode=rw"), "sqlite:///d/a.db?mode=rw");
    }

    #[test]
    fn recent_writers_expire_and_stay_bounded() {
        let w = RecentWriters::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let u = |n| UserId::new(n).unwrap();
        w.note_at(u(1), t0, 3);
        assert!(w.wrote_recently_at(u(1), t0 + Duration::from_secs(4)));
        assert!(!w.wrote_recently_at(u(1), t0 + Duration::from_secs(5)));
        assert!(!w.wrote_recently_at(u(2), t0));
        // Expired entries make room.
        w.note_at(u(2), t0, 3);
        w.note_at(u(3), t0, 3);
        w.note_at(u(4), t0 + Duration::from_secs(6), 3);
        assert!(w.inner.lock().unwrap().by_user.len() <= 3);
        // Live entries over the cap: everyone reads from the primary for one window.
        w.note_at(u(5), t0 + Duration::from_secs(6), 3);
        w.note_at(u(6), t0 + Duration::from_secs(6), 3);
        w.note_at(u(7), t0 + Duration::from_secs(6), 3);
        assert!(w.wrote_recently_at(u(99), t0 + Duration::from_secs(7)));
        assert!(w.inner.lock().unwrap().by_user.len() <= 3);
    }
}
