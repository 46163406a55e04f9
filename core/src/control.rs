//! The shard map's one authoritative home (feature `control`): the auth database, which every
//! verifier and backend already reads (revocations) and every operator's shopctl can reach.
//!
//! `shard_map` holds every version of the map (the highest is current); version 1 is seeded from
//! the config's `buckets` by whichever part gets there first. A new version is published only as
//! exactly one more than the current one, so two operators changing the map at once cannot both
//! win. `shard_moves` holds each bucket move's progress, so a move killed at any step can be
//! resumed or rolled back by running the command again (`shopctl shards move`).
//!
//! The tables are the auth database's migrations' (`store/migrations/auth/*/0003_control.sql`),
//! applied by `shopctl migrate`, which also seeds version 1; nothing here changes the schema.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use sqlx::{AnyPool, Row as _};

use crate::auth_db::AuthDb;
use crate::db::insert_unless_present;
use crate::shardmap::{ShardMap, ShardMapError};
use crate::time::unix_now;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the auth database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Map(#[from] ShardMapError),
    #[error("the shard map changed meanwhile (version {0} exists already); run the command again")]
    Conflict(u64),
}

impl ControlError {
    /// The database is down or refusing for now (worth retrying), not a broken map.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ControlError::Db(e) if crate::db::is_unavailable(e))
    }
}

/// The highest version number, if any map is stored: one cheap query, for polling.
pub async fn current_version(pool: &AnyPool) -> sqlx::Result<Option<u64>> {
    let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM shard_map").fetch_one(pool).await?;
    Ok(v.and_then(|v| u64::try_from(v).ok()))
}

/// The current map, if one is stored.
pub async fn current(pool: &AnyPool) -> Result<Option<ShardMap>, ControlError> {
    let row =
        sqlx::query("SELECT version, map FROM shard_map ORDER BY version DESC LIMIT 1").fetch_optional(pool).await?;
    let Some(row) = row else { return Ok(None) };
    let version: i64 = row.try_get("version")?;
    let text: String = row.try_get("map")?;
    Ok(Some(ShardMap::from_json(u64::try_from(version).unwrap_or(0), &text)?))
}

/// The current map; if none is stored yet, stores `seed` (the config's) as version 1 first.
pub async fn load_or_seed(pool: &AnyPool, seed: &ShardMap) -> Result<ShardMap, ControlError> {
    if let Some(map) = current(pool).await? {
        return Ok(map);
    }
    let insert = sqlx::query("INSERT INTO shard_map (version, map, note, created_at) VALUES (1, ?, ?, ?)")
        .bind(seed.to_json())
        .bind("seeded from the config")
        .bind(unix_now());
    // A concurrent seeder may win; either way version 1 is there now.
    insert_unless_present(pool, insert).await?;
    current(pool).await?.ok_or(ControlError::Conflict(1))
}

/// Stores `map` as the new current version. It must be exactly one more than the current one
/// (made with [`ShardMap::next_version`]); if someone else published meanwhile, nothing is stored.
pub async fn publish(pool: &AnyPool, map: &ShardMap, note: &str) -> Result<(), ControlError> {
    let version = i64::try_from(map.version()).unwrap_or(i64::MAX);
    let insert = sqlx::query("INSERT INTO shard_map (version, map, note, created_at) VALUES (?, ?, ?, ?)")
        .bind(version)
        .bind(map.to_json())
        .bind(note)
        .bind(unix_now());
    if !insert_unless_present(pool, insert).await? {
        return Err(ControlError::Conflict(map.version()));
    }
    Ok(())
}

/// A move's steps in order (`shopctl shards move` says what each does); a record holds the last
/// one done. Stored as its name ([`MoveStep::as_str`]), read back with [`MoveStep::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MoveStep {
    Planned,
    Copied,
    CaughtUp,
    Paused,
    Verified,
    Switched,
    Opened,
    Routed,
    Done,
    /// Rolled back (`--abort`); not followed by any other.
    Aborted,
}

impl MoveStep {
    /// Every step a move goes through, in order (not [`MoveStep::Aborted`]).
    pub const ALL: [MoveStep; 9] = [
        MoveStep::Planned,
        MoveStep::Copied,
        MoveStep::CaughtUp,
        MoveStep::Paused,
        MoveStep::Verified,
        MoveStep::Switched,
        MoveStep::Opened,
        MoveStep::Routed,
        MoveStep::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MoveStep::Planned => "planned",
            MoveStep::Copied => "copied",
            MoveStep::CaughtUp => "caught_up",
            MoveStep::Paused => "paused",
            MoveStep::Verified => "verified",
            MoveStep::Switched => "switched",
            MoveStep::Opened => "opened",
            MoveStep::Routed => "routed",
            MoveStep::Done => "done",
            MoveStep::Aborted => "aborted",
        }
    }

    pub fn parse(name: &str) -> Option<MoveStep> {
        Self::ALL.into_iter().chain([MoveStep::Aborted]).find(|s| s.as_str() == name)
    }

    /// The step after this one; none after `done` or `aborted`.
    pub fn next(self) -> Option<MoveStep> {
        let i = Self::ALL.iter().position(|s| *s == self)?;
        Self::ALL.get(i + 1).copied()
    }
}

impl std::fmt::Display for MoveStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One batch of buckets moving from one shard to another, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveRecord {
    pub id: i64,
    pub source: String,
    pub target: String,
    /// A bucket spec (`"12,14-20"`).
    pub buckets: String,
    /// `move`, or `undo` (taking an aborted move's buckets back; an abort finishes it).
    pub kind: String,
    /// The last step done.
    pub step: MoveStep,
    pub rows_copied: i64,
    /// When writes were paused (unix ms), 0 if not yet.
    pub pause_started_ms: i64,
    /// How long writes were paused, -1 until they are open again.
    pub pause_ms: i64,
    /// The source's binlog position (MariaDB GTIDs) up to which the target has its changes; empty
    /// where there is none (SQLite, or a move that copies again under the pause instead).
    pub binlog_pos: String,
    /// When the last step was recorded (unix seconds).
    pub updated_at: i64,
}

/// Moves not finished: not `done` nor `aborted`, oldest first.
pub async fn unfinished_moves(pool: &AnyPool) -> sqlx::Result<Vec<MoveRecord>> {
    let rows = sqlx::query(
        "SELECT id, source, target, buckets, kind, step, rows_copied, pause_started_ms, pause_ms, binlog_pos, \
         updated_at FROM shard_moves WHERE step NOT IN ('done', 'aborted') ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(MoveRecord {
                id: r.try_get("id")?,
                source: r.try_get("source")?,
                target: r.try_get("target")?,
                buckets: r.try_get("buckets")?,
                kind: r.try_get("kind")?,
                step: {
                    let name: String = r.try_get("step")?;
                    MoveStep::parse(&name)
                        .ok_or_else(|| sqlx::Error::Decode(format!("no such move step {name:?}").into()))?
                },
                rows_copied: r.try_get("rows_copied")?,
                pause_started_ms: r.try_get("pause_started_ms")?,
                pause_ms: r.try_get("pause_ms")?,
                binlog_pos: r.try_get("binlog_pos")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect()
}

/// Records a new move at step `planned`; its id is one more than any before.
pub async fn insert_move(
    pool: &AnyPool,
    source: &str,
    target: &str,
    buckets: &str,
    kind: &str,
) -> sqlx::Result<MoveRecord> {
    let step = MoveStep::Planned;
    loop {
        let now = unix_now();
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM shard_moves").fetch_one(pool).await?;
        let id = max.unwrap_or(0) + 1;
        let insert = sqlx::query(
            "INSERT INTO shard_moves (id, source, target, buckets, kind, step, rows_copied, pause_started_ms, \
             pause_ms, started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 0, 0, -1, ?, ?)",
        )
        .bind(id)
        .bind(source)
        .bind(target)
        .bind(buckets)
        .bind(kind)
        .bind(step.as_str())
        .bind(now)
        .bind(now);
        if insert_unless_present(pool, insert).await? {
            let (source, target, buckets, kind) = (source.into(), target.into(), buckets.into(), kind.into());
            return Ok(MoveRecord {
                id,
                source,
                target,
                buckets,
                kind,
                step,
                rows_copied: 0,
                pause_started_ms: 0,
                pause_ms: -1,
                binlog_pos: String::new(),
                updated_at: now,
            });
        }
    }
}

/// Stores `m`'s step and figures.
pub async fn save_move(pool: &AnyPool, m: &MoveRecord) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE shard_moves SET step = ?, rows_copied = ?, pause_started_ms = ?, pause_ms = ?, binlog_pos = ?, \
         updated_at = ? WHERE id = ?",
    )
    .bind(m.step.as_str())
    .bind(m.rows_copied)
    .bind(m.pause_started_ms)
    .bind(m.pause_ms)
    .bind(&m.binlog_pos)
    .bind(unix_now())
    .bind(m.id)
    .execute(pool)
    .await?;
    Ok(())
}

/// A process's copy of the current map, kept fresh from the auth database.
#[derive(Default)]
pub struct MapWatch {
    map: ArcSwapOption<ShardMap>,
    loaded: AtomicBool,
}

impl MapWatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// The map in force here; `None` until the first load (the process must not route yet).
    pub fn get(&self) -> Option<Arc<ShardMap>> {
        self.map.load_full()
    }

    pub fn version(&self) -> Option<u64> {
        self.map.load().as_ref().map(|m| m.version())
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Loads the current map (seeding it from `seed` if none is stored), then checks the version
    /// every `every` and loads a newer one at once, from the auth database's primary or, while it
    /// is down, its replica ([`AuthDb::read`]). Failures are reported and the last map stays.
    pub async fn keep_fresh(
        self: Arc<Self>,
        db: Arc<AuthDb>,
        seed: ShardMap,
        every: Duration,
        on_error: impl Fn(&ControlError) + Send + 'static,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (this, seed) = (&self, &seed);
            // Through sqlx's error so that a primary gone since the last probe is retried on the
            // replica; a map that does not parse comes back as itself.
            let refreshed = db
                .read(|pool| async move {
                    this.refresh(&pool, seed).await.map_err(|e| match e {
                        ControlError::Db(e) => e,
                        other => sqlx::Error::Protocol(other.to_string()),
                    })
                })
                .await;
            if let Err(e) = refreshed {
                on_error(&ControlError::Db(e));
            }
        }
    }

    /// One refresh: the map if its version changed (or none is loaded yet). The first load reads
    /// before it seeds, so it works on a read-only replica of a seeded database.
    pub async fn refresh(&self, pool: &AnyPool, seed: &ShardMap) -> Result<(), ControlError> {
        let fresh = match self.version() {
            None => match current(pool).await {
                Ok(Some(map)) => Some(map),
                _ => Some(load_or_seed(pool, seed).await?),
            },
            Some(have) if current_version(pool).await? != Some(have) => current(pool).await?,
            Some(_) => None,
        };
        if let Some(map) = fresh {
            self.map.store(Some(Arc::new(map)));
            self.loaded.store(true, Ordering::Release);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite() -> (tempfile::TempDir, AnyPool) {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("auth.db").display());
        let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
        (dir, pool)
    }

    #[tokio::test]
    async fn a_move_saved_reads_back_as_it_was_with_its_binlog_position() {
        let (_dir, pool) = sqlite().await;
        // The tables as `shopctl migrate` makes them.
        sqlx::raw_sql(include_str!("../../store/migrations/auth/sqlite/0003_control.sql"))
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO shard_moves (id, source, target, buckets, kind, step, rows_copied, pause_started_ms, \
             pause_ms, started_at, updated_at) VALUES (1, 'a', 'b', '4', 'move', 'copied', 9, 0, -1, 1, 1)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let mut moves = unfinished_moves(&pool).await.unwrap();
        assert_eq!((moves.len(), moves[0].step, moves[0].binlog_pos.as_str()), (1, MoveStep::Copied, ""));
        moves[0].step = MoveStep::CaughtUp;
        moves[0].binlog_pos = "mysql-bin.000003:1234".into();
        save_move(&pool, &moves[0]).await.unwrap();
        let back = unfinished_moves(&pool).await.unwrap();
        // Saving stamps the time of the step.
        assert!(back[0].updated_at > 1, "{back:?}");
        moves[0].updated_at = back[0].updated_at;
        assert_eq!(back, moves);
    }

    #[test]
    fn each_step_is_stored_by_a_name_that_reads_back() {
        for step in MoveStep::ALL.into_iter().chain([MoveStep::Aborted]) {
            assert_eq!(MoveStep::parse(step.as_str()), Some(step));
        }
        assert_eq!(MoveStep::parse("caught-up"), None);
        assert_eq!(MoveStep::Copied.next(), Some(MoveStep::CaughtUp));
        assert_eq!((MoveStep::Done.next(), MoveStep::Aborted.next()), (None, None));
    }
}
