//! The shard's databases and the policy for using them.
//!
//! Writes go to the primary ([`Db::db_write`]). Reads go to the replica ([`Db::read`])
//! unless no replica is configured, the replica does not answer a quick probe, it
//! lags more than `replica_max_lag_seconds` behind, or the reading user has a write the replica has
//! not applied yet (so users read their own writes at once; see [`replica`]). Falling back to the
//! primary is a `warn!` (when the replica's state changes, and every so often while it lasts) and
//! `shop_replica_fallback_total`; a read that fails on the replica is retried on the primary.
//!
//! Lag is measured the pt-heartbeat way: the backend stamps `replication_heartbeat` on the primary
//! every second and compares the replica's copy with the last stamp it wrote. Each backend process
//! of the shard stamps a row of its own (`id` = its instance + 1), so each row has one writer and
//! its stamps only grow, which read-your-writes relies on ([`replica`]). That works the same on
//! SQLite and MySQL/MariaDB, through the Any driver, without replication-admin privileges; the
//! result is `shop_replica_lag_seconds` in `/metrics` and `replica` in `/readyz`.
//!
//! Every pool has bounded acquire and connect timeouts, so a dead database is a fast 503, not a
//! hung request. The schema is the store's (`store/migrations/shard/`), made by `shopctl migrate`;
//! a backend only checks at start that it can run on it ([`schema::check`]).
//!
//! A request's database work either completes or is rolled back, whatever its client does:
//! [`Db::write`] runs it in a task of its own that a dropped request does not cancel, and no pooled
//! connection is ever handed out or taken back while inside a transaction (sqlx's `begin` is not
//! cancel-safe on MySQL: a `BEGIN` whose answer is never read leaves the connection in a
//! transaction sqlx knows nothing of, and every later autocommit statement on it, the heartbeat
//! included, would stay uncommitted). Each connection is checked as the pool takes it back, and
//! again as it hands it out if it sat idle for a second or more ([`outside_transaction`]); one
//! found inside a transaction is closed, which rolls the transaction back, and counted in
//! `shop_db_leaked_transactions_total`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shopgate_core::config::{DbUrl, ShardConfig};
use shopgate_core::db::{self, Open};
pub use shopgate_core::db::{is_unavailable, is_unique_violation, Dialect};
use shopgate_core::UserId;
use shopgate_store::heartbeat;
use shopgate_store::schema::{self, Schema, SchemaError};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection as _, Executor as _, Transaction};
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::metrics::{Handover, Metrics};
use crate::replica::{ReplicaState, Stamps, Verdict, WriteMarks};

/// How long a request waits for a primary connection, connecting included, before it gets 503.
pub(crate) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections per pool (each process of a shard has its own pools).
const POOL_SIZE: u32 = 10;
/// The same on SQLite: its statements run on the process's own CPU (a thread per connection), so
/// more connections than cores only add threads and page caches.
const SQLITE_POOL_SIZE: u32 = 4;
/// The same for the replica: shorter, since a read that cannot get one goes to the primary.
const REPLICA_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
/// A read on the replica taking longer than this is retried on the primary.
const REPLICA_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the replica probe may take before the replica counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// A probe's verdict is reused for this long, so reads do not each pay for a probe.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// While reads fall back to the primary, the warning is repeated this often.
const WARN_AGAIN_EVERY: Duration = Duration::from_secs(10);
/// How often the primary's heartbeat row is stamped (when a replica is configured).
pub(crate) const BEAT_EVERY: Duration = Duration::from_secs(1);
/// Users tracked for read-your-writes before the map is pruned.
const MAX_TRACKED_WRITERS: usize = 100_000;
/// At shutdown, writes still running get this long to finish before the pools close.
const WRITES_DRAIN: Duration = Duration::from_secs(3);
/// Permits of [`Db::writes`]: one per running write; shutdown takes them all.
const WRITE_PERMITS: u32 = u32::MAX >> 4;
/// How long a starting process waits for another process of the shard to finish setting up the
/// database (MySQL/MariaDB, [`Db::init`]).
const INIT_LOCK_WAIT: Duration = Duration::from_secs(20);

/// Why the shard could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitError {
    /// The primary did not answer; worth retrying.
    #[error("primary unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The stored schema is not one this build runs on (not migrated, or behind this build's
    /// migrations); retrying will not help: `shopctl migrate` will.
    #[error("{0}")]
    Schema(#[source] SchemaError),
    /// The shard map could not be read from the auth database; worth retrying.
    #[error("shard map: {0}")]
    Control(String),
}

impl From<sqlx::Error> for InitError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unavailable(e)
    }
}

impl From<SchemaError> for InitError {
    fn from(e: SchemaError) -> Self {
        match e {
            SchemaError::Db(e) if db::is_unavailable(&e) => Self::Unavailable(e),
            other => Self::Schema(other),
        }
    }
}

pub struct Db {
    dialect: Dialect,
    primary: AnyPool,
    replica: Option<Replica>,
    max_lag: Duration,
    stamps: Stamps,
    marks: WriteMarks,
    /// The last heartbeat stamp this process wrote to the primary; 0 before the first.
    last_beat_ms: AtomicI64,
    /// This process's row of `replication_heartbeat`: its instance + 1.
    heartbeat_row: i64,
    /// SQLite only: write transactions take turns on this pool's one connection, queued in order,
    /// instead of each waiting in SQLite's busy handler (which sleeps and retries, so under load
    /// some writers waited a second or more while others went ahead). Other processes on the
    /// same file still meet the busy timeout, as before.
    writer: Option<AnyPool>,
    /// MariaDB only: the connection the order batches' leader keeps between its transactions
    /// ([`Db::kept_writer`]), with when it was given back.
    kept: Mutex<Option<(PoolConnection<Any>, Instant)>>,
    /// Each running [`Db::write`] holds a permit; [`Db::close`] waits until it can take them all.
    writes: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

struct Replica {
    pool: AnyPool,
    /// The last probe's verdict.
    verdict: Mutex<Option<Verdict>>,
    /// Held while a probe runs, so that one probes and the others use the last verdict.
    probing: tokio::sync::Mutex<()>,
    /// When reads last started falling back (or were last warned about); `None` while usable.
    warned: Mutex<Option<Instant>>,
}

impl Replica {
    fn verdict(&self) -> Option<Verdict> {
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where one read goes.
enum Target<'a> {
    Primary,
    Replica(&'a Replica),
}

impl Db {
    /// Makes the pools of process `instance` of the shard without connecting: a database that is
    /// down at start is a 503 until it comes up, not a refusal to start. A URL of an unknown kind
    /// is refused here.
    pub fn connect(shard: &ShardConfig, instance: u8, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let (dialect, options) = db::connect_options(&shard.primary, Open::Create)
            .with_context(|| format!("shard primary {}", shard.primary))?;
        let primary =
            checked_pool(options.clone(), dialect, ACQUIRE_TIMEOUT, pool_size(dialect), Some(metrics.clone()));
        let writer = (dialect == Dialect::Sqlite)
            .then(|| checked_pool(options, dialect, db::SQLITE_BUSY_TIMEOUT, 1, Some(metrics.clone())));
        let replica = match &shard.replica {
            None => None,
            Some(url) => {
                // A replica is never created: a missing one is down, and reads use the primary.
                let (dialect, options) =
                    db::connect_options(url, Open::Existing).with_context(|| format!("shard replica {url}"))?;
                let size = pool_size(dialect);
                let pool = checked_pool(options, dialect, REPLICA_ACQUIRE_TIMEOUT, size, Some(metrics.clone()));
                metrics.replica_configured();
                Some(Replica {
                    pool,
                    verdict: Mutex::new(None),
                    probing: tokio::sync::Mutex::new(()),
                    warned: Mutex::new(None),
                })
            }
        };
        let max_lag = Duration::from_secs(shard.replica_max_lag_seconds);
        Ok(Self {
            dialect,
            primary,
            writer,
            replica,
            max_lag,
            stamps: Stamps::default(),
            marks: WriteMarks::new(MAX_TRACKED_WRITERS),
            last_beat_ms: AtomicI64::new(0),
            heartbeat_row: i64::from(instance) + 1,
            kept: Mutex::new(None),
            writes: Arc::new(Semaphore::new(WRITE_PERMITS as usize)),
            metrics,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub(crate) fn has_replica(&self) -> bool {
        self.replica.is_some()
    }

    /// The primary: every write, and reads that must see the latest state.
    pub fn db_write(&self) -> &AnyPool {
        &self.primary
    }

    /// Runs the read `query` where `user`'s reads go: the replica if it is usable and holds every
    /// write `user` made, else the primary. If it was sent to the
    /// replica and the replica does not answer (an unavailable error, or no answer within
    /// [`REPLICA_READ_TIMEOUT`]), the replica counts as down and `query` runs again on the primary.
    pub(crate) async fn read<T, F, Fut>(&self, user: UserId, query: F) -> sqlx::Result<T>
    where
        F: Fn(AnyPool) -> Fut,
        Fut: Future<Output = sqlx::Result<T>>,
    {
        self.read_as(Some(user), query).await
    }

    /// [`Db::read`] for what no user's own writes change (the catalog): the replica whenever it
    /// is usable.
    pub(crate) async fn read_public<T, F, Fut>(&self, query: F) -> sqlx::Result<T>
    where
        F: Fn(AnyPool) -> Fut,
        Fut: Future<Output = sqlx::Result<T>>,
    {
        self.read_as(None, query).await
    }

    async fn read_as<T, F, Fut>(&self, user: Option<UserId>, query: F) -> sqlx::Result<T>
    where
        F: Fn(AnyPool) -> Fut,
        Fut: Future<Output = sqlx::Result<T>>,
    {
        if let Target::Replica(replica) = self.read_target(user).await {
            match tokio::time::timeout(REPLICA_READ_TIMEOUT, query(replica.pool.clone())).await {
                Ok(Ok(rows)) => return Ok(rows),
                Ok(Err(e)) if !is_unavailable(&e) => return Err(e),
                Ok(Err(e)) => self.replica_failed(replica, &e.to_string()),
                Err(_) => self.replica_failed(replica, "no answer in time"),
            }
        }
        query(self.primary.clone()).await
    }

    async fn read_target(&self, user: Option<UserId>) -> Target<'_> {
        let Some(replica) = &self.replica else {
            return Target::Primary;
        };
        match self.replica_state(replica).await {
            ReplicaState::Usable { beat, .. } => {
                if user.is_none_or(|user| self.marks.replica_has(user, beat)) {
                    self.metrics.replica_read();
                    Target::Replica(replica)
                } else {
                    self.metrics.own_write_read();
                    Target::Primary
                }
            }
            ReplicaState::Lagging { .. } | ReplicaState::Down => {
                self.metrics.replica_fallback();
                Target::Primary
            }
        }
    }

    /// Records that `user` just committed a write, so their reads stay on the primary until the
    /// replica has applied it. Call after the commit.
    pub(crate) fn note_write(&self, user: UserId) {
        if self.replica.is_some() {
            self.marks.note(user, self.stamps.current());
        }
    }

    /// Runs a request's database work (a transaction and what follows its commit: the
    /// read-your-writes mark, the counters, the log line) in a task of its own, and waits for it.
    /// If the caller is dropped (its client went away, or the request ran past its deadline) the
    /// work still runs to the end: it commits or rolls back, never stops half-way.
    pub async fn write<T, E, Fut>(&self, work: Fut) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<sqlx::Error> + From<anyhow::Error> + Send + 'static,
    {
        let Ok(permit) = self.writes.clone().try_acquire_owned() else {
            // Taken by shutdown: the pools are closing, as a new write would find.
            return Err(sqlx::Error::PoolClosed.into());
        };
        let abandoned = Arc::new(AtomicBool::new(false));
        let (seen, metrics) = (abandoned.clone(), self.metrics.clone());
        let task = tokio::spawn(
            async move {
                let done = work.await;
                if seen.load(Ordering::Acquire) {
                    metrics.write_outlived_request();
                    tracing::info!(ok = done.is_ok(), "write finished after its request was dropped");
                }
                drop(permit);
                done
            }
            .instrument(tracing::Span::current()),
        );
        let mark = SetOnDrop::new(abandoned);
        let joined = task.await;
        mark.disarm();
        joined.unwrap_or_else(|e| Err(anyhow::anyhow!("write task failed: {e}").into()))
    }

    /// Starts a write transaction on the primary. On SQLite it is `BEGIN IMMEDIATE`: the write
    /// lock is taken (waiting up to busy_timeout) before the first read, so a transaction never
    /// fails half-way because another writer committed after its snapshot.
    ///
    /// Cancel-safe: the `BEGIN` runs in a task of its own, so a caller dropped meanwhile leaves a
    /// transaction that is dropped (rolled back) whole, never a connection whose `BEGIN` went out
    /// and whose answer nobody read.
    pub async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Any>> {
        let (pool, dialect) = (self.write_pool().clone(), self.dialect);
        let begun = tokio::spawn(async move { db::begin_write(&pool, dialect).await });
        begun.await.unwrap_or_else(|e| Err(sqlx::Error::Io(std::io::Error::other(format!("begin task failed: {e}")))))
    }

    /// Where write transactions take their connection: SQLite's one writer, else the primary's pool.
    fn write_pool(&self) -> &AnyPool {
        self.writer.as_ref().unwrap_or(&self.primary)
    }

    /// A connection to the primary for one who runs one write transaction at a time and gives the
    /// connection back with [`Db::keep`] after each commit (the order batches' leader,
    /// [`crate::service::orders`]). On MariaDB that is the connection kept from the last commit, if
    /// it was given back less than [`RECHECK_IDLE_AFTER`] ago: a busy shard pays, per batch, none
    /// of the two round trips a connection costs as it goes back to the pool (sqlx's ping, the
    /// transaction check of [`checked_pool`]), a fifth of a batch's. Otherwise it comes from the
    /// pool, checked as every pooled one is. On SQLite always from the pool: its one write
    /// connection is never kept from the other writers.
    ///
    /// Not cancel-safe, like [`db::begin_write_on`] that follows it: for a caller nothing drops
    /// ([`Db::write`]).
    pub async fn kept_writer(&self) -> sqlx::Result<PoolConnection<Any>> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner()).take();
        match kept {
            Some((conn, since)) if since.elapsed() < RECHECK_IDLE_AFTER => Ok(conn),
            // Back to the pool, which checks it, and one from the pool.
            _ => self.write_pool().acquire().await,
        }
    }

    /// Keeps `conn` for the next [`Db::kept_writer`] (MariaDB), if sqlx knows it to be outside
    /// any transaction: the caller gives back only a connection whose transaction committed.
    /// Anything else goes back to the pool, through its check.
    pub fn keep(&self, conn: PoolConnection<Any>) {
        if self.dialect != Dialect::MySql || conn.is_in_transaction() {
            drop(conn);
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        // Once [`Db::close`] has begun (it closes `writes` and then empties `kept`, under this
        // lock), nothing is kept: a connection kept then would stay open past the pools' close.
        if !self.writes.is_closed() {
            // One kept before (there is none: one leader at a time) would go back to the pool.
            *kept = Some((conn, Instant::now()));
        }
    }

    /// Checks that the schema is one this build runs on ([`schema::check`]; `shopctl migrate`
    /// makes it), seeds the demo catalog if it is empty and returns the largest order id stored
    /// (0 if none), for the order id generator. The processes of a shard start together and each
    /// does this; on MySQL/MariaDB they take turns under a named lock (the demo catalog's "is it
    /// empty?" is a read that locks nothing there). SQLite's write lock serialises the seeding.
    pub(crate) async fn init(&self) -> Result<i64, InitError> {
        if self.dialect == Dialect::Sqlite {
            return self.init_unlocked().await;
        }
        let mut conn = self.primary.acquire().await?;
        let got: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT CAST(GET_LOCK(CONCAT('shopgate_init.', DATABASE()), {}) AS SIGNED)",
            INIT_LOCK_WAIT.as_secs()
        ))
        .fetch_one(&mut *conn)
        .await?;
        if got != Some(1) {
            let waited = format!("another process held the set-up lock for {INIT_LOCK_WAIT:?}");
            return Err(InitError::Unavailable(sqlx::Error::Protocol(waited)));
        }
        let done = self.init_unlocked().await;
        if conn.execute("DO RELEASE_LOCK(CONCAT('shopgate_init.', DATABASE()))").await.is_err() {
            // Closing the session releases it too; a pooled connection must not keep it.
            let _ = conn.detach().close().await;
        }
        done
    }

    async fn init_unlocked(&self) -> Result<i64, InitError> {
        let applied = schema::check(&self.primary, Schema::Shard, self.dialect).await?;
        if applied.newer_than_build {
            tracing::info!(newest = applied.newest, "the shard's schema is newer than this build; running on it");
        }
        self.demo_catalog_if_empty().await?;
        let max_id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM orders").fetch_one(&self.primary).await?;
        if self.replica.is_some() {
            // The migration makes instance 0's row; another instance makes its own.
            let row =
                sqlx::query("INSERT INTO replication_heartbeat (id, beat_ms) VALUES (?, 0)").bind(self.heartbeat_row);
            db::insert_unless_present(&self.primary, row).await?;
            // An earlier process's stamps stay older than ours, whatever the clock did since.
            let stored = heartbeat(&self.primary).await?;
            self.stamps.observe(stored);
            self.beat().await?;
        }
        Ok(max_id.unwrap_or(0))
    }

    /// The demo catalog ([`shopgate_store::demo`]) in a write transaction of its own, if the
    /// shard has no products yet.
    async fn demo_catalog_if_empty(&self) -> sqlx::Result<()> {
        let mut tx = self.begin_write().await?;
        if shopgate_store::demo::insert_if_empty(&mut tx).await? {
            tx.commit().await?;
            let (products, categories) = (shopgate_store::demo::PRODUCTS.len(), shopgate_store::demo::CATEGORIES.len());
            tracing::info!(products, categories, "seeded the demo catalog");
        }
        Ok(())
    }

    /// Stamps the heartbeat row on the primary; replicas copy it, and their copy tells their lag
    /// and which writes they hold. Only one beat runs at a time (the heartbeat task, or `init`
    /// before that task starts), so the row only moves forward. It is one autocommit statement on
    /// a connection the pool has just checked to be outside any transaction, so it commits at
    /// once and never leaves a transaction open (which would fake a growing lag).
    pub(crate) async fn beat(&self) -> sqlx::Result<()> {
        let stamp = self.stamps.next();
        sqlx::query("UPDATE replication_heartbeat SET beat_ms = ? WHERE id = ?")
            .bind(stamp)
            .bind(self.heartbeat_row)
            .execute(&self.primary)
            .await?;
        self.last_beat_ms.fetch_max(stamp, Ordering::SeqCst);
        Ok(())
    }

    /// Probes the replica now (the heartbeat task does, each beat), so the lag in `/metrics` and
    /// the verdict reads use stay fresh without a read paying for the probe.
    pub(crate) async fn refresh_replica(&self) {
        if let Some(replica) = &self.replica {
            let _probing = replica.probing.lock().await;
            self.probe(replica).await;
        }
    }

    /// The replica's state as last probed, or `None` without a replica (or before any probe).
    pub(crate) fn replica_state_now(&self) -> Option<ReplicaState> {
        self.replica.as_ref().and_then(Replica::verdict).map(|v| v.state)
    }

    /// Ok if the primary answers `SELECT 1` within `within` (a timeout is `PoolTimedOut`).
    pub(crate) async fn ping_primary(&self, within: Duration) -> sqlx::Result<()> {
        let ping = sqlx::query_scalar::<_, i64>("SELECT 1").fetch_one(&self.primary);
        match tokio::time::timeout(within, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    /// Waits (at most [`WRITES_DRAIN`]) for running writes to finish, refusing new ones, then
    /// closes the pools.
    pub async fn close(&self) {
        let all = self.writes.acquire_many(WRITE_PERMITS);
        match tokio::time::timeout(WRITES_DRAIN, all).await {
            Ok(Ok(permits)) => permits.forget(),
            _ => tracing::warn!("writes still running at shutdown; closing the pools under them"),
        }
        self.writes.close();
        // The pools' close closes only the connections they hold: the kept one goes back first.
        drop(self.kept.lock().unwrap_or_else(|p| p.into_inner()).take());
        self.primary.close().await;
        if let Some(w) = &self.writer {
            w.close().await;
        }
        if let Some(r) = &self.replica {
            r.pool.close().await;
        }
    }

    /// The replica's verdict: the last one while it is fresh, else a new probe. While another
    /// read is probing, the last verdict stands (a read sent to a replica that has just died
    /// is retried on the primary by [`Db::read`]).
    async fn replica_state(&self, replica: &Replica) -> ReplicaState {
        let last = replica.verdict();
        if let Some(v) = last {
            if v.at.elapsed() < PROBE_EVERY {
                return v.state;
            }
        }
        match (replica.probing.try_lock(), last) {
            (Ok(_probing), _) => self.probe(replica).await,
            (Err(_), Some(v)) => v.state,
            (Err(_), None) => {
                let _probing = replica.probing.lock().await;
                match replica.verdict() {
                    Some(v) => v.state,
                    None => self.probe(replica).await,
                }
            }
        }
    }

    /// Asks the replica for its copy of the heartbeat; the caller holds `replica.probing`.
    async fn probe(&self, replica: &Replica) -> ReplicaState {
        let beat = heartbeat_row(&replica.pool, self.heartbeat_row);
        let state = match tokio::time::timeout(PROBE_TIMEOUT, beat).await {
            Ok(Ok(beat)) => {
                // Measured against the last stamp we wrote, not the wall clock, so a primary that
                // stopped taking beats does not by itself make a healthy replica "late".
                let lag_ms = self.last_beat_ms.load(Ordering::SeqCst).saturating_sub(beat).max(0);
                self.marks.applied(beat);
                if Duration::from_millis(lag_ms.unsigned_abs()) > self.max_lag {
                    ReplicaState::Lagging { beat, lag_ms }
                } else {
                    ReplicaState::Usable { beat, lag_ms }
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "replica probe failed");
                ReplicaState::Down
            }
            Err(_) => {
                tracing::debug!(timeout_ms = PROBE_TIMEOUT.as_millis() as u64, "replica probe timed out");
                ReplicaState::Down
            }
        };
        self.record(replica, state, None);
        state
    }

    /// A read on the replica failed: down until the next probe, and this read goes to the primary.
    fn replica_failed(&self, replica: &Replica, why: &str) {
        self.metrics.replica_fallback();
        self.record(replica, ReplicaState::Down, Some(why));
    }

    /// Stores a verdict, updates the gauges, and warns when reads start falling back to the
    /// primary (and every [`WARN_AGAIN_EVERY`] while they do); says so when they stop.
    fn record(&self, replica: &Replica, state: ReplicaState, why: Option<&str>) {
        *replica.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(Verdict { at: Instant::now(), state });
        self.metrics.set_replica(state);
        let mut warned = replica.warned.lock().unwrap_or_else(|p| p.into_inner());
        let bound_ms = self.max_lag.as_millis() as u64;
        match (state, *warned) {
            (ReplicaState::Usable { lag_ms, .. }, Some(_)) => {
                *warned = None;
                tracing::info!(lag_ms, "replica usable again; reads go to the replica");
            }
            (ReplicaState::Usable { .. }, None) => {}
            (_, Some(at)) if at.elapsed() < WARN_AGAIN_EVERY => {}
            (ReplicaState::Lagging { lag_ms, .. }, _) => {
                *warned = Some(Instant::now());
                let fallbacks = self.metrics.replica_fallbacks();
                tracing::warn!(lag_ms, bound_ms, fallbacks, "replica lags past its bound; reading from the primary");
            }
            (ReplicaState::Down, _) => {
                *warned = Some(Instant::now());
                let fallbacks = self.metrics.replica_fallbacks();
                let why = why.unwrap_or("no answer to the probe");
                tracing::warn!(why, fallbacks, "replica unavailable; reading from the primary");
            }
        }
    }
}

/// The stamp of heartbeat row `row` (one process's) in `db`. A replica that has not copied the
/// row yet is an error, like one that does not answer: reads go to the primary meanwhile.
async fn heartbeat_row(db: &AnyPool, row: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT beat_ms FROM replication_heartbeat WHERE id = ?").bind(row).fetch_one(db).await
}

/// The auth database (the verifier's), read here for revocations and the shard map; never
/// written, created or migrated by a backend. Lazy like the shard's pools.
pub fn auth_pool(url: &DbUrl) -> anyhow::Result<AnyPool> {
    let (dialect, options) =
        db::connect_options(url, Open::Existing).with_context(|| format!("auth database {url}"))?;
    Ok(checked_pool(options, dialect, ACQUIRE_TIMEOUT, pool_size(dialect), None))
}

/// Sets its flag when dropped, unless disarmed first: tells a spawned write its caller is gone.
/// Disarming lets go of the flag without setting it (forgetting the guard instead, as this once
/// did, leaked the flag: 24 bytes for every write the backend made).
struct SetOnDrop(Option<Arc<AtomicBool>>);

impl SetOnDrop {
    fn new(flag: Arc<AtomicBool>) -> Self {
        Self(Some(flag))
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::Release);
        }
    }
}

/// Whether a pooled connection is outside any transaction and may be handed out or kept. Asks the
/// server, not sqlx's own bookkeeping (which is what a cancelled `BEGIN` leaves wrong):
/// MariaDB's `@@in_transaction`; on SQLite, whose open transaction no SQL reports, a `ROLLBACK`,
/// which fails when there is none (and ends one if there was).
pub(crate) async fn outside_transaction(conn: &mut AnyConnection, dialect: Dialect) -> sqlx::Result<bool> {
    match dialect {
        Dialect::MySql => {
            // A ROLLBACK queued by a dropped transaction runs first: it is flushed before this.
            match sqlx::query_scalar::<_, i64>("SELECT @@in_transaction").fetch_one(&mut *conn).await {
                Ok(open) => Ok(open == 0 && !conn.is_in_transaction()),
                // MySQL proper has no @@in_transaction (error 1193): end whatever may be open.
                Err(e) if db::mysql_code(&e) == Some(1193) => {
                    conn.execute("ROLLBACK").await?;
                    Ok(!conn.is_in_transaction())
                }
                Err(e) => Err(e),
            }
        }
        Dialect::Sqlite => match conn.execute("ROLLBACK").await {
            Ok(_) => Ok(false),
            Err(e) if e.to_string().contains("no transaction is active") => Ok(!conn.is_in_transaction()),
            Err(e) => Err(e),
        },
    }
}

/// The pool hook: true keeps the connection; false closes it (the server then rolls back what was
/// open), logged and counted in `metrics` if given; an error closes it too (sqlx logs that).
async fn check_handover(
    conn: &mut AnyConnection,
    dialect: Dialect,
    at: Handover,
    metrics: Option<&Metrics>,
) -> sqlx::Result<bool> {
    let outside = outside_transaction(conn, dialect).await?;
    if !outside {
        if let Some(metrics) = metrics {
            metrics.leaked_transaction(at);
        }
        tracing::warn!(at = at.name(), "a pooled connection was inside a transaction; closed it instead of reusing it");
    }
    Ok(outside)
}

/// A pooled connection idle at least this long is checked again as it is handed out (it may have
/// died meanwhile: a restarted server, a cut link); one used more recently is handed out as is.
const RECHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Connections in each of a process's pools on `dialect`.
fn pool_size(dialect: Dialect) -> u32 {
    match dialect {
        Dialect::Sqlite => SQLITE_POOL_SIZE,
        Dialect::MySql => POOL_SIZE,
    }
}

/// A pool that connects on first use, with the transaction check at both handovers, counting the
/// connections it finds inside a transaction in `metrics` if given.
fn checked_pool(
    options: AnyConnectOptions,
    dialect: Dialect,
    acquire_timeout: Duration,
    max_connections: u32,
    metrics: Option<Arc<Metrics>>,
) -> AnyPool {
    let (on_acquire, on_release) = (metrics.clone(), metrics);
    AnyPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        // The check below answers on a live connection only, so it also does the ping's job. A
        // connection back from its last use a moment ago passed the same check then (and sqlx's
        // ping after it): a busy pool pays no round trip per request for a second check.
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            let metrics = on_acquire.clone();
            Box::pin(async move {
                if meta.idle_for < RECHECK_IDLE_AFTER {
                    return Ok(true);
                }
                check_handover(conn, dialect, Handover::Acquire, metrics.as_deref()).await
            })
        })
        .after_release(move |conn, _meta| {
            let metrics = on_release.clone();
            Box::pin(async move { check_handover(conn, dialect, Handover::Release, metrics.as_deref()).await })
        })
        .after_connect(move |conn, _meta| Box::pin(async move { db::prepare_connection(conn, dialect).await }))
        .connect_lazy_with(options)
}

pub use shopgate_core::time::{unix_now as now_secs, unix_now_ms as now_ms};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_abandoned_flag_is_set_by_a_dropped_guard_and_freed_either_way() {
        let flag = Arc::new(AtomicBool::new(false));
        let freed = Arc::downgrade(&flag);
        SetOnDrop::new(flag.clone()).disarm();
        assert!(!flag.load(Ordering::Acquire), "a disarmed guard leaves the flag alone");
        drop(SetOnDrop::new(flag.clone()));
        assert!(flag.load(Ordering::Acquire), "a dropped guard sets it");
        drop(flag);
        assert!(freed.upgrade().is_none(), "neither guard kept the flag alive");
    }
}
