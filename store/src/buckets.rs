//! A bucket's rows as a whole, for moving buckets between shards (`shopctl shards move`): make
//! another shard's copy the same, compare the two, delete them.
//!
//! Every table of [`PER_USER_TABLES`] is walked bucket by bucket in key order, [`CHUNK_ROWS`] rows
//! at a time, through its `(bucket, key…)` index: the work follows the rows of the buckets moved,
//! never the size of the shard, and no more than a chunk of each side is held in memory whatever
//! the batch. Copies are made by difference: the target gets the source's rows it lacks or holds
//! differently, and loses the rows the source no longer has (an idempotency key purged
//! meanwhile), so running a copy again after a crash, or once more while writes are paused,
//! converges on the source's rows and writes only what changed.

use std::cmp::Ordering;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};

pub use super::per_user::Value;
use super::per_user::{bind_all, PerUserTable, BUCKET, PER_USER_TABLES};
use crate::Dialect;

/// Rows read or compared per statement.
pub const CHUNK_ROWS: usize = 2000;
/// Rows deleted per statement: fewer than are read, as a delete writes every index of each row
/// and the replicas replay each statement in one go; a shorter statement holds the server (and
/// the shop's queries behind it) for less.
pub const DELETE_ROWS: usize = 500;

/// A row: its key's values, then the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    key: Vec<Value>,
    rest: Vec<Value>,
}

impl Row {
    /// A row of `table` as a `SELECT` of its columns in order gives it.
    fn of(table: &PerUserTable, row: &sqlx::any::AnyRow) -> sqlx::Result<Row> {
        let mut key = table.values(row, table.columns.len())?;
        let rest = key.split_off(table.key_len);
        Ok(Row { key, rest })
    }
}

/// Rows and a SHA-256 over them (in bucket and key order), per table: what "the same on both
/// shards" means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSum {
    pub table: &'static str,
    pub rows: u64,
    pub sha256: String,
}

/// What one copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    /// Rows the source has (all tables).
    pub rows: u64,
    /// The source's rows per table, as [`checksums`] gives them, from the copy's own read: what
    /// the target must now hold (compare with `checksums` of the target).
    pub source: Vec<TableSum>,
    /// Rows written to the target (new or changed).
    pub written: u64,
    /// Rows deleted from the target (gone from the source).
    pub deleted: u64,
    /// The keys written or deleted, per table, the first [`FIXED_KEPT`] of them: a copy made again
    /// to verify an earlier one must find only keys written meanwhile.
    pub fixed: super::changes::Touched,
}

/// How many written or deleted keys a [`Copied`] keeps.
pub const FIXED_KEPT: usize = 10_000;

impl Copied {
    fn note_fixed(&mut self, table: &PerUserTable, key: &[Value]) {
        if self.fixed.values().map(std::collections::BTreeSet::len).sum::<usize>() < FIXED_KEPT {
            self.fixed.entry(table.name).or_default().insert(key.to_vec());
        }
    }
}

/// How a long copy or delete leaves room for the shop: after each chunk it rests in proportion
/// to the chunk's time (a busy source answers slower, so the copy slows with it), and every
/// [`Pace::REPLICA_EVERY`] chunks it waits until a replica has replayed what its primary has
/// (MariaDB), so the replica never lags by more than those chunks.
pub struct Pace {
    /// Of the wall time, the share spent working, in (0, 1].
    duty: f64,
    /// A primary and its replica, to wait for.
    replica: Option<(AnyPool, AnyPool)>,
    chunks: u64,
    /// Time spent resting and waiting, for the report.
    pub rested: Duration,
}

impl Pace {
    /// Chunks between two waits for the replica.
    pub const REPLICA_EVERY: u64 = 10;
    /// The longest wait for the replica, after which the work goes on regardless.
    const REPLICA_WAIT: Duration = Duration::from_secs(30);

    /// Never rests, waits for no replica: for work under the write pause, and for tests.
    pub fn flat_out() -> Self {
        Self::new(1.0, None)
    }

    /// Works `duty` of the time (clamped to 5–100%) and keeps `replica` (a primary, its replica;
    /// MariaDB) close behind.
    pub fn new(duty: f64, replica: Option<(AnyPool, AnyPool)>) -> Self {
        Self { duty: duty.clamp(0.05, 1.0), replica, chunks: 0, rested: Duration::ZERO }
    }

    /// Called after each chunk's work, which took `took`.
    async fn rest(&mut self, took: Duration) -> sqlx::Result<()> {
        self.chunks += 1;
        let started = Instant::now();
        if self.duty < 1.0 {
            tokio::time::sleep(took.mul_f64(1.0 / self.duty - 1.0)).await;
        }
        if let Some((primary, replica)) = &self.replica {
            if self.chunks.is_multiple_of(Self::REPLICA_EVERY) {
                let pos: String = sqlx::query_scalar("SELECT @@gtid_binlog_pos").fetch_one(primary).await?;
                let _: Option<i64> = sqlx::query_scalar("SELECT MASTER_GTID_WAIT(?, ?)")
                    .bind(pos)
                    .bind(Self::REPLICA_WAIT.as_secs_f64())
                    .fetch_one(replica)
                    .await?;
            }
        }
        self.rested += started.elapsed();
        Ok(())
    }
}

/// A table's rows in key order, hashed as they pass.
struct Summer {
    hash: Sha256,
    rows: u64,
}

impl Summer {
    fn new() -> Self {
        Self { hash: Sha256::new(), rows: 0 }
    }

    fn add(&mut self, row: &Row) {
        for v in row.key.iter().chain(&row.rest) {
            match v {
                Value::Int(n) => self.hash.update(format!("i{n};")),
                Value::Text(s) => self.hash.update(format!("t{}:{s};", s.len())),
            }
        }
        self.hash.update("\n");
        self.rows += 1;
    }

    fn finish(self, table: &PerUserTable) -> TableSum {
        let digest = self.hash.finalize();
        TableSum { table: table.name, rows: self.rows, sha256: digest.iter().map(|b| format!("{b:02x}")).collect() }
    }
}

/// The statement [`read_chunk`] runs: a bucket's rows in key order, after a key (`after`), up to
/// one (`upto`), `limit` of them; its values to bind are the bucket, then each key's.
fn chunk_sql(table: &PerUserTable, after: bool, upto: bool, limit: usize) -> String {
    let some_key: Vec<Value> = table.key().iter().map(|_| Value::Int(0)).collect();
    let mut conds = vec![format!("{BUCKET} = ?")];
    if after {
        conds.push(table.after_key(&some_key).0);
    }
    if upto {
        conds.push(table.upto_key(&some_key).0);
    }
    format!(
        "SELECT {} FROM {} WHERE {} ORDER BY {} LIMIT {limit}",
        table.column_list(),
        table.name,
        conds.join(" AND "),
        table.key_list()
    )
}

/// The statement [`delete`] runs for a table: up to a chunk of a bucket's rows (bound: the bucket).
fn delete_sql(table: &PerUserTable, dialect: Dialect) -> String {
    match dialect {
        Dialect::MySql => {
            format!("DELETE FROM {} WHERE {BUCKET} = ? ORDER BY {} LIMIT {DELETE_ROWS}", table.name, table.key_list())
        }
        Dialect::Sqlite => format!(
            "DELETE FROM {0} WHERE rowid IN (SELECT rowid FROM {0} WHERE {BUCKET} = ? LIMIT {DELETE_ROWS})",
            table.name
        ),
    }
}

/// Every statement this module runs that picks rows of `table` by bucket, with its values to
/// bind for `bucket` and two of its keys, `first` and `last`: for checking that each goes through
/// the bucket index (EXPLAIN, in the backend's tests).
pub fn statements(
    dialect: Dialect,
    table: &PerUserTable,
    bucket: u16,
    first: &[Value],
    last: &[Value],
) -> Vec<(String, Vec<Value>)> {
    let b = Value::Int(i64::from(bucket));
    let mut out = Vec::new();
    for (after, upto) in [(false, false), (true, false), (true, true), (false, true)] {
        let mut binds = vec![b.clone()];
        if after {
            binds.extend(table.after_key(first).1.into_iter().cloned());
        }
        if upto {
            binds.extend(table.upto_key(last).1.into_iter().cloned());
        }
        out.push((chunk_sql(table, after, upto, CHUNK_ROWS), binds));
    }
    out.push((delete_sql(table, dialect), vec![b]));
    out
}

/// Up to `limit` rows of `bucket` after `last` (from the start if `None`), at most up to `upto`
/// (inclusive), in key order.
async fn read_chunk(
    db: &mut AnyConnection,
    table: &PerUserTable,
    bucket: u16,
    last: Option<&[Value]>,
    upto: Option<&[Value]>,
    limit: usize,
) -> sqlx::Result<Vec<Row>> {
    let bucket = Value::Int(i64::from(bucket));
    let mut binds: Vec<&Value> = vec![&bucket];
    if let Some(last) = last {
        binds.extend(table.after_key(last).1);
    }
    if let Some(upto) = upto {
        binds.extend(table.upto_key(upto).1);
    }
    let sql = chunk_sql(table, last.is_some(), upto.is_some(), limit);
    let rows = bind_all(sqlx::query(&sql), binds).fetch_all(db).await?;
    rows.iter().map(|row| Row::of(table, row)).collect()
}

/// Calls `each` with every chunk of `bucket`'s rows of `table`, in key order.
async fn each_chunk<F>(db: &mut AnyConnection, table: &PerUserTable, bucket: u16, mut each: F) -> sqlx::Result<()>
where
    F: FnMut(&[Row]),
{
    let mut last: Option<Vec<Value>> = None;
    loop {
        let chunk = read_chunk(db, table, bucket, last.as_deref(), None, CHUNK_ROWS).await?;
        each(&chunk);
        match chunk.last() {
            Some(row) if chunk.len() == CHUNK_ROWS => last = Some(row.key.clone()),
            _ => return Ok(()),
        }
    }
}

/// Per table, the rows of `buckets` and their checksum, read a chunk at a time.
pub async fn checksums(db: &AnyPool, buckets: &[u16]) -> sqlx::Result<Vec<TableSum>> {
    let mut conn = db.acquire().await?;
    let mut out = Vec::new();
    let buckets = sorted(buckets);
    for table in PER_USER_TABLES {
        let mut sum = Summer::new();
        for &bucket in &buckets {
            each_chunk(&mut conn, table, bucket, |rows| rows.iter().for_each(|r| sum.add(r))).await?;
        }
        out.push(sum.finish(table));
    }
    Ok(out)
}

fn sorted(buckets: &[u16]) -> Vec<u16> {
    let mut b = buckets.to_vec();
    b.sort_unstable();
    b.dedup();
    b
}

/// A connection to the target that does not check foreign keys: an item may arrive before the
/// order the source committed just before it (each chunk is read while writes go on). The
/// target takes no writes for these buckets (their fence is closed) and the copy under the write
/// pause makes the two the same, the final checksums proving it. The connection is closed after
/// use, never handed back to the pool with the check off.
async fn unchecked(db: &AnyPool, dialect: Dialect) -> sqlx::Result<PoolConnection<Any>> {
    let mut conn = db.acquire().await?;
    let sql = match dialect {
        Dialect::MySql => "SET SESSION foreign_key_checks = 0",
        Dialect::Sqlite => "PRAGMA foreign_keys = OFF",
    };
    sqlx::query(sql).execute(&mut *conn).await?;
    Ok(conn)
}

/// Makes `target`'s rows of `buckets` the same as `source`'s, writing only the difference, a chunk
/// at a time at `pace`. Safe to run again at any time.
pub async fn copy(
    source: &AnyPool,
    target: &AnyPool,
    dialect: Dialect,
    buckets: &[u16],
    pace: &mut Pace,
) -> sqlx::Result<Copied> {
    let mut done = Copied::default();
    let mut src = source.acquire().await?;
    let mut tgt = unchecked(target, dialect).await?;
    let buckets = sorted(buckets);
    let result = async {
        for table in PER_USER_TABLES {
            let mut sum = Summer::new();
            for &bucket in &buckets {
                copy_bucket(&mut src, &mut tgt, dialect, table, bucket, &mut sum, &mut done, pace).await?;
            }
            let sum = sum.finish(table);
            done.rows += sum.rows;
            done.source.push(sum);
        }
        Ok(())
    }
    .await;
    tgt.detach();
    result.map(|()| done)
}

/// [`copy`] of one table's rows of one bucket: the source's chunks in key order, each against the
/// target's rows of the same key range.
#[allow(clippy::too_many_arguments)] // one call site, each argument a different part of the walk
async fn copy_bucket(
    src: &mut AnyConnection,
    tgt: &mut AnyConnection,
    dialect: Dialect,
    table: &PerUserTable,
    bucket: u16,
    sum: &mut Summer,
    done: &mut Copied,
    pace: &mut Pace,
) -> sqlx::Result<()> {
    let mut last: Option<Vec<Value>> = None;
    loop {
        let started = Instant::now();
        let want = read_chunk(src, table, bucket, last.as_deref(), None, CHUNK_ROWS).await?;
        want.iter().for_each(|r| sum.add(r));
        // The whole rest of the bucket when the source has no more; else up to its last key.
        let upto = (want.len() == CHUNK_ROWS).then(|| want[want.len() - 1].key.clone());
        let mut have_last = last.clone();
        let mut want_i = 0;
        loop {
            let have = read_chunk(tgt, table, bucket, have_last.as_deref(), upto.as_deref(), CHUNK_ROWS).await?;
            // The source's rows up to the last of this target chunk (all the rest if it is the
            // range's last chunk) against it.
            let bound = if have.len() == CHUNK_ROWS { have.last().map(|r| r.key.clone()) } else { None };
            let end = match &bound {
                Some(k) => want_i + want[want_i..].iter().take_while(|r| r.key <= *k).count(),
                None => want.len(),
            };
            let (changed, stale) = diff(&want[want_i..end], &have);
            for chunk in stale.chunks(200) {
                delete_keys(tgt, table, chunk).await?;
            }
            for chunk in changed.chunks(200) {
                upsert(tgt, dialect, table, chunk).await?;
            }
            done.deleted += stale.len() as u64;
            done.written += changed.len() as u64;
            stale.iter().for_each(|k| done.note_fixed(table, k));
            changed.iter().for_each(|r| done.note_fixed(table, &r.key));
            want_i = end;
            match bound {
                Some(k) => have_last = Some(k),
                None => break,
            }
        }
        pace.rest(started.elapsed()).await?;
        match upto {
            Some(k) => last = Some(k),
            None => return Ok(()),
        }
    }
}

/// Makes `target`'s rows of the `touched` keys the same as `source`'s: each key's current row is
/// read from the source and written to the target, or deleted there if the source has none. What a
/// move's catch-up does with the keys the source's binlog shows written since its last look
/// (`store::changes`); the rows need not be in key order or in one bucket. Returns the rows
/// written and deleted.
pub async fn copy_keys(
    source: &AnyPool,
    target: &AnyPool,
    dialect: Dialect,
    touched: &super::changes::Touched,
) -> sqlx::Result<(u64, u64)> {
    let (mut written, mut deleted) = (0, 0);
    let mut src = source.acquire().await?;
    let mut tgt = unchecked(target, dialect).await?;
    let result = async {
        // Parents first, as the copy writes them.
        for table in PER_USER_TABLES {
            let Some(keys) = touched.get(table.name) else { continue };
            let keys: Vec<&Vec<Value>> = keys.iter().collect();
            for chunk in keys.chunks(200) {
                let present = read_keys(&mut src, table, chunk).await?;
                let gone: Vec<&[Value]> =
                    chunk.iter().filter(|k| !present.iter().any(|r| r.key == ***k)).map(|k| k.as_slice()).collect();
                if !gone.is_empty() {
                    delete_keys(&mut tgt, table, &gone).await?;
                }
                if !present.is_empty() {
                    upsert(&mut tgt, dialect, table, &present.iter().collect::<Vec<_>>()).await?;
                }
                written += present.len() as u64;
                deleted += gone.len() as u64;
            }
        }
        Ok(())
    }
    .await;
    tgt.detach();
    result.map(|()| (written, deleted))
}

/// The rows of `table` with these keys, in key order.
async fn read_keys(db: &mut AnyConnection, table: &PerUserTable, keys: &[&Vec<Value>]) -> sqlx::Result<Vec<Row>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE {} ORDER BY {}",
        table.column_list(),
        table.name,
        keys_match(table, keys.len()),
        table.key_list()
    );
    let rows = bind_all(sqlx::query(&sql), keys.iter().flat_map(|k| k.iter())).fetch_all(db).await?;
    rows.iter().map(|row| Row::of(table, row)).collect()
}

/// The `touched` keys whose rows differ between `source` and `target` (one side lacks the row,
/// or holds it differently), as `table (key…)`: what a move checks of the rows it copied under
/// the write pause.
pub async fn differing_keys(
    source: &AnyPool,
    target: &AnyPool,
    touched: &super::changes::Touched,
) -> sqlx::Result<Vec<String>> {
    let (mut src, mut tgt) = (source.acquire().await?, target.acquire().await?);
    let mut out = Vec::new();
    for table in PER_USER_TABLES {
        let Some(keys) = touched.get(table.name) else { continue };
        let keys: Vec<&Vec<Value>> = keys.iter().collect();
        for chunk in keys.chunks(200) {
            let (a, b) = (read_keys(&mut src, table, chunk).await?, read_keys(&mut tgt, table, chunk).await?);
            let (changed, stale) = diff(&a, &b);
            let keys = changed.iter().map(|r| r.key.as_slice()).chain(stale);
            out.extend(keys.map(|k| format!("{} {k:?}", table.name)));
        }
    }
    Ok(out)
}

/// Of two runs of rows sorted by key: the wanted rows the other lacks or holds differently, and
/// the keys it holds that are not wanted.
fn diff<'a>(want: &'a [Row], have: &'a [Row]) -> (Vec<&'a Row>, Vec<&'a [Value]>) {
    let (mut changed, mut stale) = (Vec::new(), Vec::new());
    let (mut w, mut h) = (want.iter().peekable(), have.iter().peekable());
    loop {
        match (w.peek(), h.peek()) {
            (None, None) => break,
            (Some(a), None) => {
                changed.push(*a);
                w.next();
            }
            (None, Some(b)) => {
                stale.push(b.key.as_slice());
                h.next();
            }
            (Some(a), Some(b)) => match a.key.cmp(&b.key) {
                Ordering::Less => {
                    changed.push(*a);
                    w.next();
                }
                Ordering::Greater => {
                    stale.push(b.key.as_slice());
                    h.next();
                }
                Ordering::Equal => {
                    if a.rest != b.rest {
                        changed.push(*a);
                    }
                    w.next();
                    h.next();
                }
            },
        }
    }
    (changed, stale)
}

async fn upsert(db: &mut AnyConnection, dialect: Dialect, table: &PerUserTable, rows: &[&Row]) -> sqlx::Result<()> {
    let names: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let tuple = format!("({})", vec!["?"; names.len()].join(", "));
    let rest = &names[table.key_len..];
    let update = match dialect {
        Dialect::MySql => {
            let set: Vec<String> = rest.iter().map(|c| format!("{c} = VALUES({c})")).collect();
            format!("ON DUPLICATE KEY UPDATE {}", set.join(", "))
        }
        Dialect::Sqlite => {
            let set: Vec<String> = rest.iter().map(|c| format!("{c} = excluded.{c}")).collect();
            format!("ON CONFLICT ({}) DO UPDATE SET {}", table.key_list(), set.join(", "))
        }
    };
    let sql = format!(
        "INSERT INTO {} ({}) VALUES {} {update}",
        table.name,
        names.join(", "),
        vec![tuple.as_str(); rows.len()].join(", ")
    );
    bind_all(sqlx::query(&sql), rows.iter().flat_map(|r| r.key.iter().chain(r.rest.iter()))).execute(db).await?;
    Ok(())
}

async fn delete_keys(db: &mut AnyConnection, table: &PerUserTable, keys: &[&[Value]]) -> sqlx::Result<()> {
    let sql = format!("DELETE FROM {} WHERE {}", table.name, keys_match(table, keys.len()));
    bind_all(sqlx::query(&sql), keys.iter().flat_map(|k| k.iter())).execute(db).await?;
    Ok(())
}

/// Deletes every row of `buckets` (items before their orders), [`DELETE_ROWS`] per statement
/// through the bucket index, so no statement holds many locks, at `pace`; returns how many went.
pub async fn delete(db: &AnyPool, dialect: Dialect, buckets: &[u16], pace: &mut Pace) -> sqlx::Result<u64> {
    let mut deleted = 0;
    let buckets = sorted(buckets);
    for table in PER_USER_TABLES.iter().rev() {
        let sql = delete_sql(table, dialect);
        for &bucket in &buckets {
            loop {
                let started = Instant::now();
                let n = sqlx::query(&sql).bind(i64::from(bucket)).execute(db).await?.rows_affected();
                pace.rest(started.elapsed()).await?;
                deleted += n;
                if n < DELETE_ROWS as u64 {
                    break;
                }
            }
        }
    }
    Ok(deleted)
}

/// `(k1 = ? AND k2 = ?) OR …` for `n` keys of `table`, their values to bind in order.
fn keys_match(table: &PerUserTable, n: usize) -> String {
    let one = format!("({})", table.key().iter().map(|(c, _)| format!("{c} = ?")).collect::<Vec<_>>().join(" AND "));
    vec![one.as_str(); n].join(" OR ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(k: i64, v: &str) -> Row {
        Row { key: vec![Value::Int(k)], rest: vec![Value::Text(v.into())] }
    }

    #[test]
    fn diff_finds_new_changed_and_stale_rows() {
        let want = [row(1, "a"), row(2, "b"), row(4, "d")];
        let have = [row(2, "B"), row(3, "c"), row(4, "d"), row(5, "e")];
        let (changed, stale) = diff(&want, &have);
        assert_eq!(changed.iter().map(|r| r.key[0].clone()).collect::<Vec<_>>(), [Value::Int(1), Value::Int(2)]);
        assert_eq!(stale, [&[Value::Int(3)][..], &[Value::Int(5)][..]]);
    }

    #[test]
    fn after_key_spells_out_the_row_comparison() {
        let t = PER_USER_TABLES.iter().find(|t| t.name == "order_items").unwrap();
        let last = [Value::Int(7), Value::Int(3)];
        let (sql, binds) = t.after_key(&last);
        assert_eq!(sql, "((order_id > ?) OR (order_id = ? AND product_id > ?))");
        assert_eq!(binds, [&Value::Int(7), &Value::Int(7), &Value::Int(3)]);
    }
}
