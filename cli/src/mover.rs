//! Bucket moves as a library: a [`Mover`] takes a recorded move ([`MoveRecord`]) through its
//! typed steps ([`MoveStep`]), telling a [`Progress`] of each; `shopctl shards move` drives it
//! with a progress bar or JSON events, tests drive it step by step.
//!
//! A move takes a batch of buckets from one shard (the source) to another (the target) in steps,
//! each recorded in the auth database (`shard_moves`) before the next begins, so a move killed
//! anywhere is finished by running the command again, or rolled back with `--abort`:
//!
//! | step done  | what it did                                                                   |
//! |------------|-------------------------------------------------------------------------------|
//! | `planned`  | the batch is recorded                                                         |
//! | `copied`   | the target's write fence is closed; the source's binlog position noted; the   |
//! |            | rows copied in key-ordered chunks while the shop runs                         |
//! | `caught_up`| the source's changes since, read from its binlog, copied by key, round after  |
//! |            | round; the whole batch compared once (differences only where rows changed     |
//! |            | meanwhile); rounds again until few changes are left                           |
//! | `paused`   | the source's fence is closed: writes of these buckets get 503 (reads go on)    |
//! | `verified` | the last changes copied and compared; the target's replica has them           |
//! | `switched` | new map: the target owns them, state `moving` (nobody serves them)            |
//! | `opened`   | every backend took that map; the target's fence opens; map: serving           |
//! | `routed`   | nginx reloaded with the new map; the pause is over                            |
//! | `done`     | the source's copies are deleted                                               |
//!
//! The write pause thus costs what changed since the last round, not what the batch or the shard
//! holds. Where the source's binlog cannot be read (SQLite; MariaDB without a binlog, or a user
//! without `REPLICATION SLAVE` and `BINLOG MONITOR`), `verified` copies the whole batch again by
//! difference and compares checksums: correct, with a pause that grows with the batch.
//!
//! Up to `verified`, the source alone has taken writes; up to `opened` nobody but the source has
//! served, so an abort there reopens the source and deletes the target's copies. Once the target
//! has opened, writes may have reached it: an abort then moves the buckets back the same way.
//! The fences (`shopgate_store::fence`) make sure of the one-writer rule in the databases
//! themselves; the map versions and the wait for every backend keep reads to one shard too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use shopgate_core::config::{Config, ShardConfig};
use shopgate_core::control::{self, MoveRecord, MoveStep};
use shopgate_core::shardmap::{parse_buckets, BucketState};
use shopgate_core::time::unix_now_ms;
use shopgate_core::{ShardMap, ShardName};
use shopgate_store::buckets::{self, Pace};
use shopgate_store::changes::{self, BinlogPos};
use shopgate_store::{fence, per_user};
use sqlx::AnyPool;

use crate::db::{bounded_control, Db, Dialect};
use crate::health::Internal;
use crate::UsageError;

/// Catch-up rounds end when one copies at most this many keys: what is left for the pause.
const FEW_CHANGES: usize = 200;
/// The most catch-up rounds in a row, for a source written faster than the rounds keep up with.
const MAX_ROUNDS: u32 = 30;

/// What a [`Mover`] tells of its work as it goes.
pub trait Progress {
    /// Step `m.step` of `m` is done and recorded; it took `took`; `detail` is what the step adds
    /// (`null` for nothing).
    fn step(&mut self, m: &MoveRecord, took: Duration, detail: &Value);
    /// A batch of `buckets` is done.
    fn batch_done(&mut self, _buckets: u64) {}
}

/// One finished batch, for the summary.
pub struct Finished {
    pub buckets: u64,
    pub rows: i64,
    pub pause_ms: i64,
}

/// Moves buckets: one [`MoveRecord`] at a time, each step recorded in the auth database before
/// the next begins.
pub struct Mover<'a, P: Progress> {
    config: &'a Config,
    control: Db,
    primaries: BTreeMap<String, Db>,
    replicas: BTreeMap<String, Db>,
    waits: Waits,
    /// `--pace`, as a share.
    duty: f64,
    /// Told of every step.
    pub progress: P,
    /// The batches finished so far.
    pub done: Vec<Finished>,
}

impl<'a, P: Progress> Mover<'a, P> {
    /// A mover for the stack of `config`, its moves recorded in `control` (the auth database):
    /// it waits up to `wait` for each part to take a new map, and copies and deletes at `pace`
    /// percent of the time (5-100).
    pub fn new(config: &'a Config, control: Db, wait: Duration, pace: u8, progress: P) -> anyhow::Result<Self> {
        Ok(Self {
            config,
            control,
            primaries: BTreeMap::new(),
            replicas: BTreeMap::new(),
            waits: Waits::new(config, wait)?,
            duty: f64::from(pace.clamp(5, 100)) / 100.0,
            progress,
            done: Vec::new(),
        })
    }

    /// The auth database, where the moves are recorded.
    pub fn control(&self) -> &AnyPool {
        &self.control.pool
    }

    /// The pace of work on shard `name`'s primary: `duty` of the time, and its replica kept close
    /// behind.
    async fn pace(&mut self, name: &str, duty: f64) -> anyhow::Result<Pace> {
        let shard = self.shard(name)?;
        let primary = self.primary(name).await?;
        if primary.dialect != Dialect::MySql {
            return Ok(Pace::new(duty, None));
        }
        let primary = primary.pool.clone();
        let Some(url) = shard.replica.clone() else { return Ok(Pace::new(duty, None)) };
        if !self.replicas.contains_key(name) {
            let db = Db::connect(&url, &format!("shard {name}'s replica")).await?;
            self.replicas.insert(name.to_owned(), db);
        }
        Ok(Pace::new(duty, Some((primary, self.replicas[name].pool.clone()))))
    }

    async fn primary(&mut self, name: &str) -> anyhow::Result<&Db> {
        if !self.primaries.contains_key(name) {
            let shard = self.shard(name)?;
            let db = Db::connect(&shard.primary, &format!("shard {name}'s primary")).await?;
            self.primaries.insert(name.to_owned(), db);
        }
        Ok(&self.primaries[name])
    }

    fn shard(&self, name: &str) -> anyhow::Result<&'a ShardConfig> {
        self.config.shard(name).with_context(|| format!("the move names shard {name:?}, which the config lacks"))
    }

    async fn map(&self) -> anyhow::Result<ShardMap> {
        let map = bounded_control(control::current(&self.control.pool)).await?;
        map.context("the auth database holds no shard map")
    }

    async fn publish(&self, map: &ShardMap, note: &str) -> anyhow::Result<()> {
        bounded_control(control::publish(&self.control.pool, map, note)).await?;
        Ok(())
    }

    async fn save(&self, m: &MoveRecord) -> anyhow::Result<()> {
        crate::db::bounded(control::save_move(&self.control.pool, m)).await?;
        Ok(())
    }

    /// Takes `m` from its last step to `done`, recording each step.
    pub async fn drive(&mut self, mut m: MoveRecord) -> anyhow::Result<()> {
        let list = parse_buckets(&m.buckets).map_err(anyhow::Error::msg)?;
        if m.step == MoveStep::Planned {
            self.progress.step(&m, Duration::ZERO, &Value::Null);
        }
        while m.step != MoveStep::Done {
            m = self.advance(m).await?;
        }
        self.done.push(Finished { buckets: list.len() as u64, rows: m.rows_copied, pause_ms: m.pause_ms });
        self.progress.batch_done(list.len() as u64);
        Ok(())
    }

    /// Does `m`'s next step and records it; `m` as recorded then.
    pub async fn advance(&mut self, mut m: MoveRecord) -> anyhow::Result<MoveRecord> {
        let list = parse_buckets(&m.buckets).map_err(anyhow::Error::msg)?;
        let Some(next) = m.step.next() else { bail!("move {} is at step {}, which has no next", m.id, m.step) };
        let started = Instant::now();
        let mut deadlocks = 0;
        let detail = loop {
            // On a copy: a step that fails leaves nothing of its own behind in `m`.
            let mut attempt = m.clone();
            match self.step(&mut attempt, next, &list).await {
                Ok(detail) => {
                    m = attempt;
                    break detail;
                }
                // Orders running beside the move take locks too; the server rolled the step's
                // transaction back whole, and each step can be run again (that is what resuming
                // a move does), so a deadlock's victim is run again.
                Err(e) => match deadlock_retry(&e, deadlocks) {
                    Some(wait) => {
                        deadlocks += 1;
                        tokio::time::sleep(wait).await;
                    }
                    None => {
                        return Err(e.context(format!(
                            "move {} ({} -> {}, buckets {}) stopped before step {next}; run the command again to resume, or with --abort",
                            m.id, m.source, m.target, m.buckets
                        )))
                    }
                },
            }
        };
        m.step = next;
        self.save(&m).await?;
        self.progress.step(&m, started.elapsed(), &detail);
        Ok(m)
    }

    /// The work of one step; each can run again after a crash and ends in the same state. Returns
    /// what the step's event adds (`--json`'s `detail`), `null` for nothing.
    async fn step(&mut self, m: &mut MoveRecord, next: MoveStep, list: &[u16]) -> anyhow::Result<Value> {
        let (source, target) = (m.source.clone(), m.target.clone());
        match next {
            MoveStep::Planned | MoveStep::Aborted => bail!("no move goes to step {next}"),
            MoveStep::Copied => {
                // A bucket's rows are found by their bucket column: all of them must have it.
                let s = self.primary(&source).await?.pool.clone();
                let unfilled = per_user::unfilled(&s).await?;
                if unfilled > 0 {
                    bail!(
                        "shard {source} has {unfilled} rows without their bucket yet (written before migration 0006); \
                         its backends fill them in the background, a few thousand a second: run the command again shortly"
                    );
                }
                let t = self.primary(&target).await?.pool.clone();
                fence::set(&t, list, false).await?;
                // Noted before the copy reads anything: every change the copy may miss is after it.
                m.binlog_pos = self.binlog_position(&source).await?.map(|p| p.to_string()).unwrap_or_default();
                let mut pace = self.pace(&target, self.duty).await?;
                let copied = self.copy(&source, &target, list, &mut pace).await?;
                m.rows_copied = copied.rows as i64;
                Ok(json!({"written": copied.written, "rested_ms": pace.rested.as_millis() as u64}))
            }
            MoveStep::CaughtUp => self.catch_up(m, list).await,
            MoveStep::Paused => {
                let s = self.primary(&source).await?.pool.clone();
                if m.pause_started_ms == 0 {
                    m.pause_started_ms = unix_now_ms();
                    self.save(m).await?;
                }
                // Returns once the writes running for these buckets have committed.
                fence::set(&s, list, false).await?;
                let map = self.map().await?;
                if list.iter().any(|&b| map.state(b) == BucketState::Serving) {
                    let mut next = map.next_version();
                    next.set_state(list, BucketState::WritesPaused);
                    self.publish(&next, &format!("move {}: writes paused", m.id)).await?;
                }
                Ok(Value::Null)
            }
            MoveStep::Verified => {
                // Writes are paused: the source's rows hold still.
                let detail = match BinlogPos::parse(&m.binlog_pos) {
                    Some(from) => match self.round(&source, &target, list, &from).await {
                        Ok(round) => {
                            let (s, t) =
                                (self.primary(&source).await?.pool.clone(), self.primary(&target).await?.pool.clone());
                            let differ = buckets::differing_keys(&s, &t, &round.touched).await?;
                            if !differ.is_empty() {
                                bail!(
                                    "after the last changes, the two shards differ in {}: {}",
                                    differ.len(),
                                    first_few(&differ)
                                );
                            }
                            m.binlog_pos = round.to.to_string();
                            Some(json!({"by": "binlog", "keys": round.keys()}))
                        }
                        Err(e) => {
                            crate::output::warn(format_args!(
                                "shard {source}'s binlog cannot be read ({e:#}); copying the whole batch again under the pause"
                            ));
                            None
                        }
                    },
                    None => None,
                };
                let detail = match detail {
                    Some(d) => d,
                    None => {
                        let copied = self.copy(&source, &target, list, &mut Pace::flat_out()).await?;
                        m.rows_copied = copied.rows as i64;
                        let t = self.primary(&target).await?.pool.clone();
                        let (a, b) = (copied.source, buckets::checksums(&t, list).await?);
                        if a != b {
                            bail!("after the copy, the two shards differ: {a:?} against {b:?}");
                        }
                        json!({"by": "copy", "written": copied.written})
                    }
                };
                self.replica_caught_up(&target).await?;
                Ok(detail)
            }
            MoveStep::Switched => {
                let map = self.map().await?;
                if list.iter().any(|&b| map.owner_of_bucket(b).map(ShardName::as_str) != Some(target.as_str())) {
                    let mut next = map.next_version();
                    next.set_owner(list, &known_shard(self.config, &target)?);
                    next.set_state(list, BucketState::Moving);
                    self.publish(&next, &format!("move {}: switched to {target}", m.id)).await?;
                }
                Ok(Value::Null)
            }
            MoveStep::Opened => {
                let map = self.map().await?;
                let names = [known_shard(self.config, &source)?, known_shard(self.config, &target)?];
                self.waits.backends(self.config, &names, map.version(), true).await?;
                let t = self.primary(&target).await?.pool.clone();
                fence::set(&t, list, true).await?;
                if list.iter().any(|&b| map.state(b) != BucketState::Serving) {
                    let mut next = map.next_version();
                    next.set_state(list, BucketState::Serving);
                    self.publish(&next, &format!("move {}: {target} serves", m.id)).await?;
                }
                Ok(Value::Null)
            }
            MoveStep::Routed => {
                let map = self.map().await?;
                // The target serves them before nginx sends it their users.
                let names = [known_shard(self.config, &target)?];
                self.waits.backends(self.config, &names, map.version(), true).await?;
                self.waits.reload_nginx(self.config, &map).await?;
                m.pause_ms = (unix_now_ms() - m.pause_started_ms).max(0);
                Ok(Value::Null)
            }
            MoveStep::Done => {
                // Nothing waits for the deletes, and they weigh most on the source (every index of
                // every row, replayed by its replica): half the pace.
                let mut pace = self.pace(&source, self.duty / 2.0).await?;
                let s = self.primary(&source).await?;
                let (pool, dialect) = (s.pool.clone(), s.dialect);
                let deleted = buckets::delete(&pool, dialect, list, &mut pace).await?;
                Ok(json!({"deleted": deleted, "rested_ms": pace.rested.as_millis() as u64}))
            }
        }
    }

    /// Step `caught_up`: catch-up rounds from the position `copied` noted until few changes are
    /// left; then the whole batch compared (by a copy of the difference), which may find only
    /// rows the binlog shows written since the comparison began; then rounds again. Without a
    /// position, or a binlog that cannot be read from it, a second copy instead (from a new
    /// position where there is one, which `verified` then catches up from).
    async fn catch_up(&mut self, m: &mut MoveRecord, list: &[u16]) -> anyhow::Result<Value> {
        let (source, target) = (m.source.clone(), m.target.clone());
        let first = match BinlogPos::parse(&m.binlog_pos) {
            Some(from) => self.rounds(&source, &target, list, from).await.map_err(|e| {
                // A binlog purged meanwhile, a grant taken away: the copy starts over instead.
                crate::output::warn(format_args!("{e:#}; copying the batch again from a new position"));
            }),
            None => Err(()),
        };
        let Ok((mark, mut rounds, mut keys)) = first else {
            m.binlog_pos = self.binlog_position(&source).await?.map(|p| p.to_string()).unwrap_or_default();
            let mut pace = self.pace(&target, self.duty).await?;
            let copied = self.copy(&source, &target, list, &mut pace).await?;
            m.rows_copied = copied.rows as i64;
            return Ok(json!({"by": "copy", "written": copied.written}));
        };
        let mut pace = self.pace(&target, self.duty).await?;
        let compared = self.copy(&source, &target, list, &mut pace).await?;
        let since = self.round(&source, &target, list, &mark).await?;
        let unexplained: Vec<String> = compared
            .fixed
            .iter()
            .flat_map(|(table, ks)| ks.iter().map(move |k| (*table, k)))
            .filter(|(table, k)| !since.touched.get(table).is_some_and(|t| t.contains(*k)))
            .map(|(table, k)| format!("{table} {k:?}"))
            .collect();
        if !unexplained.is_empty() {
            bail!(
                "comparing the copy with the source found {} rows that differed although the source's binlog shows \
                 no write of them since the last catch-up ({}); the move stops rather than trust the catch-up",
                unexplained.len(),
                first_few(&unexplained)
            );
        }
        let (to, more_rounds, more_keys) = self.rounds(&source, &target, list, since.to.clone()).await?;
        rounds += more_rounds + 1;
        keys += more_keys + since.keys();
        m.binlog_pos = to.to_string();
        m.rows_copied = compared.rows as i64;
        Ok(json!({
            "by": "binlog", "rounds": rounds, "keys": keys, "compared_rows": compared.rows,
            "differed": compared.written + compared.deleted, "rested_ms": pace.rested.as_millis() as u64,
        }))
    }

    /// Catch-up rounds from `from` until one copies at most [`FEW_CHANGES`] keys (or
    /// [`MAX_ROUNDS`] went by); the position reached, the rounds and the keys copied.
    async fn rounds(
        &mut self,
        source: &str,
        target: &str,
        list: &[u16],
        mut from: BinlogPos,
    ) -> anyhow::Result<(BinlogPos, u32, usize)> {
        let (mut rounds, mut keys) = (0, 0);
        loop {
            let round = self.round(source, target, list, &from).await?;
            rounds += 1;
            keys += round.keys();
            from = round.to.clone();
            if round.keys() <= FEW_CHANGES || rounds >= MAX_ROUNDS {
                return Ok((from, rounds, keys));
            }
        }
    }

    /// One catch-up round ([`changes::catch_up`]) from `from`.
    async fn round(
        &mut self,
        source: &str,
        target: &str,
        list: &[u16],
        from: &BinlogPos,
    ) -> anyhow::Result<changes::Round> {
        let url = self.shard(source)?.primary.clone();
        let s = self.primary(source).await?.pool.clone();
        let t = self.primary(target).await?;
        let (t, dialect) = (t.pool.clone(), t.dialect);
        changes::catch_up(&s, &url, &t, dialect, list, from)
            .await
            .with_context(|| format!("catching up from shard {source}'s binlog at {from}"))
    }

    /// Where shard `name`'s primary writes its binlog now, if the move can read it from there;
    /// otherwise `None`, with a warning saying why and what the pause then costs.
    async fn binlog_position(&mut self, name: &str) -> anyhow::Result<Option<BinlogPos>> {
        let db = self.primary(name).await?;
        if db.dialect != Dialect::MySql {
            return Ok(None);
        }
        let why = match changes::position(&db.pool).await {
            Ok(Some(pos)) => return Ok(Some(pos)),
            Ok(None) => "it writes no binlog".to_owned(),
            Err(e) => format!("{e}; its user needs REPLICATION SLAVE and BINLOG MONITOR"),
        };
        crate::output::warn(format_args!(
            "the move cannot follow shard {name}'s binlog ({why}): the write pause will copy the whole batch again"
        ));
        Ok(None)
    }

    async fn copy(
        &mut self,
        source: &str,
        target: &str,
        list: &[u16],
        pace: &mut Pace,
    ) -> anyhow::Result<buckets::Copied> {
        let s = self.primary(source).await?.pool.clone();
        let t_db = self.primary(target).await?;
        let (t, dialect) = (t_db.pool.clone(), t_db.dialect);
        Ok(buckets::copy(&s, &t, dialect, list, pace).await?)
    }

    /// The target's replica holds every row just copied to its primary (MariaDB GTIDs), so its
    /// first reads after the switch see them.
    async fn replica_caught_up(&mut self, target: &str) -> anyhow::Result<()> {
        let shard = self.shard(target)?;
        let Some(replica_url) = shard.replica.clone() else { return Ok(()) };
        let primary = self.primary(target).await?;
        if primary.dialect != Dialect::MySql {
            return Ok(());
        }
        let pos: String = sqlx::query_scalar("SELECT @@gtid_binlog_pos").fetch_one(&primary.pool).await?;
        let replica = Db::connect(&replica_url, &format!("shard {target}'s replica")).await?;
        let waited: Option<i64> = sqlx::query_scalar("SELECT MASTER_GTID_WAIT(?, ?)")
            .bind(&pos)
            .bind(self.waits.wait.as_secs_f64())
            .fetch_one(&replica.pool)
            .await?;
        replica.close().await;
        if waited != Some(0) {
            bail!("shard {target}'s replica did not reach the primary's position {pos} in time");
        }
        Ok(())
    }

    /// Rolls `m` back: before the target opened, by reopening the source and deleting the target's
    /// copies; after, by moving the buckets back. An undo being aborted is finished instead.
    pub async fn abort(&mut self, mut m: MoveRecord) -> anyhow::Result<()> {
        if m.kind == "undo" {
            return self.drive(m).await;
        }
        let list = parse_buckets(&m.buckets).map_err(anyhow::Error::msg)?;
        let (source, target) = (m.source.clone(), m.target.clone());
        if matches!(m.step, MoveStep::Opened | MoveStep::Routed) {
            if m.step == MoveStep::Opened {
                // nginx first learns the target serves them, as a finished move would leave it.
                let map = self.map().await?;
                self.waits.reload_nginx(self.config, &map).await?;
            }
            let undo =
                crate::db::bounded(control::insert_move(&self.control.pool, &target, &source, &m.buckets, "undo"))
                    .await?;
            m.step = MoveStep::Aborted;
            self.save(&m).await?;
            self.progress.step(&m, Duration::ZERO, &Value::Null);
            return self.drive(undo).await;
        }
        let map = self.map().await?;
        let source_name = known_shard(self.config, &source)?;
        let moved =
            list.iter().any(|&b| map.owner_of_bucket(b) != Some(&source_name) || map.state(b) != BucketState::Serving);
        let mut version = map.version();
        if moved {
            let mut next = map.next_version();
            next.set_owner(&list, &source_name);
            next.set_state(&list, BucketState::Serving);
            self.publish(&next, &format!("move {} aborted", m.id)).await?;
            version = next.version();
        }
        let s = self.primary(&source).await?.pool.clone();
        fence::set(&s, &list, true).await?;
        // Done when the source serves them again, writes included.
        let names = [source_name.clone(), known_shard(self.config, &target)?];
        self.waits.backends(self.config, &names, version, true).await?;
        let t = self.primary(&target).await?;
        let (t, dialect) = (t.pool.clone(), t.dialect);
        fence::set(&t, &list, false).await?;
        buckets::delete(&t, dialect, &list, &mut Pace::flat_out()).await?;
        m.step = MoveStep::Aborted;
        self.save(&m).await?;
        self.progress.step(&m, Duration::ZERO, &Value::Null);
        Ok(())
    }
}

/// If `e` is, or was caused by, a deadlock the server broke by rolling back our transaction, and
/// it may be run again: after how long ([`shopgate_core::db::retry_after_deadlock`]).
fn deadlock_retry(e: &anyhow::Error, deadlocks: u32) -> Option<Duration> {
    let db_error = e.chain().find_map(|c| c.downcast_ref::<sqlx::Error>())?;
    shopgate_core::db::retry_after_deadlock(db_error, deadlocks)
}

/// The first few of `items`, for an error message.
fn first_few(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(5).map(String::as_str).collect();
    let more = items.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

pub(crate) fn known_shard(config: &Config, name: &str) -> Result<ShardName, UsageError> {
    config.shard(name).map(|s| s.name.clone()).ok_or_else(|| {
        let known: Vec<&str> = config.shards.iter().map(|s| s.name.as_str()).collect();
        UsageError(format!("unknown shard {name:?}; {} defines: {}", config.path.display(), known.join(", ")))
    })
}

/// Waiting for the parts to take a map version.
pub(crate) struct Waits {
    wait: Duration,
    /// The backends, as [`Internal`] reaches them (HTTPS with the stack's certificate under `[tls]`).
    internal: Internal,
    /// nginx's front door and its `/healthz` URL ([`crate::health::nginx_health`]).
    nginx: (reqwest::Client, String),
}

impl Waits {
    pub(crate) fn new(config: &Config, wait: Duration) -> anyhow::Result<Self> {
        let ask = Duration::from_secs(1);
        Ok(Self { wait, internal: Internal::new(config, ask)?, nginx: crate::health::nginx_health(config, ask)? })
    }

    /// Until every backend process of `shards` routes with `version` or later. A process that
    /// refuses the connection is not running, and one that starts loads the current map before it
    /// serves, so it counts as done when `refused_is_done`.
    pub(crate) async fn backends(
        &self,
        config: &Config,
        shards: &[ShardName],
        version: u64,
        refused_is_done: bool,
    ) -> anyhow::Result<()> {
        for name in shards {
            let Some(shard) = config.shard(name.as_str()) else { continue };
            for addr in backend_addrs(shard) {
                let what = format!("shard {name}'s backend at {addr}");
                let url = self.internal.url(addr, "/healthz");
                self.until(&what, self.internal.get(&url), version, refused_is_done).await?;
            }
        }
        Ok(())
    }

    /// Reloads nginx with `map`, then waits until its `/healthz` says it routes with that version
    /// and the workers that ran before the reload have exited: until then they route requests on
    /// the connections they hold by the old map. One still busy past the wait is reported, not
    /// waited for: the requests it routes to the old shard get 503 with `Retry-After`.
    pub(crate) async fn reload_nginx(&self, config: &Config, map: &ShardMap) -> anyhow::Result<()> {
        let old = crate::commands::nginx::reload(config, map)?;
        let (client, url) = &self.nginx;
        self.until("nginx", client.get(url), map.version(), false).await?;
        let deadline = Instant::now() + self.wait;
        loop {
            let left = crate::commands::nginx::old_workers_left(&old);
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                crate::output::warn(format_args!(
                    "nginx workers {left:?} of the old config are still finishing requests"
                ));
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn until(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
        version: u64,
        refused_is_done: bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.wait;
        loop {
            let last;
            let Some(request) = request.try_clone() else { bail!("asking {what}: the request cannot be repeated") };
            match request.send().await {
                Ok(resp) => {
                    let body: Value = resp.json().await.unwrap_or_default();
                    match body["map_version"].as_u64() {
                        Some(v) if v >= version => return Ok(()),
                        other => {
                            last = format!("it routes with version {}", other.map_or("none".into(), |v| v.to_string()))
                        }
                    }
                }
                Err(e) if e.is_connect() && refused_is_done && is_refused(&e) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                bail!("{what} did not take shard map version {version} within {:?} ({last})", self.wait);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn is_refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = s.source();
    }
    false
}

/// The backend processes of `shard`.
fn backend_addrs(shard: &ShardConfig) -> Vec<SocketAddr> {
    shard.listen.clone()
}
