//! The per-user tables: every table whose rows belong to one user, declared once here with all
//! its columns, its key and how a row finds its bucket. Bucket moves copy, compare and delete by
//! this list (`store::buckets`), and `shopctl shards check` looks for misplaced rows by it
//! (`store::shard`). A test compares it with the migrated schema on both engines
//! (`tests/api/per_user.rs`), so a column added by a migration and not here fails the build's
//! tests instead of being left behind by a move.
//!
//! Every such table has a `bucket` column (user id mod 1000, migration 0006), written with each
//! row and indexed with the row's key, `(bucket, key…)`: a bucket's rows are an index range.

use shopgate_core::shardmap::BUCKETS;
use sqlx::AnyPool;

use crate::Dialect;

/// A column's type as the Any driver reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Text,
}

use Kind::{Int, Text};

/// The column every per-user table has: the row's bucket.
pub const BUCKET: &str = "bucket";

/// A table whose rows belong to one user each, directly or through their order.
#[derive(Debug)]
pub struct PerUserTable {
    pub name: &'static str,
    /// Every column, in the schema's order (the key's first, `bucket` last).
    pub columns: &'static [(&'static str, Kind)],
    /// How many of `columns` make the primary key.
    pub key_len: usize,
    /// The column holding the user id, if the row has one (an item has its order's).
    pub user_column: Option<&'static str>,
    /// The column that names a row in messages (`shopctl shards check`).
    pub row_label: &'static str,
    /// SQL computing a row's bucket from its other columns (`t` is the row's table): what the
    /// column must hold, for filling it in rows written before it existed and for checking it.
    pub bucket_of: &'static str,
}

/// One column's value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    Int(i64),
    Text(String),
}

impl PerUserTable {
    /// `(k1, k2) > (?, ?)` spelled out, `k1 > ? OR (k1 = ? AND k2 > ?)`, with the values to bind
    /// in order: MariaDB makes an index range of this form, while of the row comparison it makes
    /// none and walks from the start of the index (or of the bucket) every time.
    pub fn after_key<'a>(&self, last: &'a [Value]) -> (String, Vec<&'a Value>) {
        self.compare_key(last, ">", ">")
    }

    /// `(k1, k2) <= (?, ?)` spelled out the same way.
    pub fn upto_key<'a>(&self, upto: &'a [Value]) -> (String, Vec<&'a Value>) {
        self.compare_key(upto, "<", "<=")
    }

    /// The key compared with `values` column by column: `op` on each leading column (the others
    /// before it equal), `last_op` on the last.
    fn compare_key<'a>(&self, values: &'a [Value], op: &str, last_op: &str) -> (String, Vec<&'a Value>) {
        let key = self.key();
        let mut ors = Vec::new();
        let mut binds = Vec::new();
        for i in 0..key.len() {
            let mut ands: Vec<String> = key[..i].iter().map(|(c, _)| format!("{c} = ?")).collect();
            ands.push(format!("{} {} ?", key[i].0, if i + 1 == key.len() { last_op } else { op }));
            binds.extend(values[..=i].iter());
            ors.push(format!("({})", ands.join(" AND ")));
        }
        (format!("({})", ors.join(" OR ")), binds)
    }

    /// The first `n` columns of `row` (of a `SELECT` of this table's columns in order) as values.
    pub fn values(&self, row: &sqlx::any::AnyRow, n: usize) -> sqlx::Result<Vec<Value>> {
        use sqlx::Row as _;
        let mut values = Vec::with_capacity(n);
        for (i, (_, kind)) in self.columns[..n].iter().enumerate() {
            values.push(match kind {
                Kind::Int => Value::Int(row.try_get(i)?),
                Kind::Text => Value::Text(row.try_get(i)?),
            });
        }
        Ok(values)
    }

    pub fn key(&self) -> &'static [(&'static str, Kind)] {
        &self.columns[..self.key_len]
    }

    /// The columns, comma-separated.
    pub fn column_list(&self) -> String {
        self.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
    }

    /// The key's columns, comma-separated.
    pub fn key_list(&self) -> String {
        self.key().iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
    }
}

/// In the order rows are written (an item needs its order); deletes go backwards.
pub const PER_USER_TABLES: &[PerUserTable] = &[
    PerUserTable {
        name: "users",
        columns: &[("id", Int), ("email", Text), ("is_active", Int), ("created_at", Int), (BUCKET, Int)],
        key_len: 1,
        user_column: Some("id"),
        row_label: "id",
        bucket_of: "t.id % 1000",
    },
    PerUserTable {
        name: "orders",
        columns: &[
            ("id", Int),
            ("user_id", Int),
            ("status", Text),
            ("total_cents", Int),
            ("created_at", Int),
            ("updated_at", Int),
            (BUCKET, Int),
        ],
        key_len: 1,
        user_column: Some("user_id"),
        row_label: "id",
        bucket_of: "t.user_id % 1000",
    },
    PerUserTable {
        name: "order_items",
        columns: &[
            ("order_id", Int),
            ("product_id", Int),
            ("quantity", Int),
            ("unit_price_cents", Int),
            ("line_total_cents", Int),
            (BUCKET, Int),
        ],
        key_len: 2,
        user_column: None,
        row_label: "order_id",
        // An item without its order (there is none: a foreign key) would get -1, which no shard
        // owns, and `shards check` names it.
        bucket_of: "COALESCE((SELECT o.user_id % 1000 FROM orders o WHERE o.id = t.order_id), -1)",
    },
    PerUserTable {
        name: "idempotency_keys",
        columns: &[
            ("user_id", Int),
            ("idem_key", Text),
            ("request_hash", Text),
            ("order_id", Int),
            ("created_at", Int),
            (BUCKET, Int),
        ],
        key_len: 2,
        user_column: Some("user_id"),
        row_label: "idem_key",
        bucket_of: "t.user_id % 1000",
    },
];

const _: () = assert!(BUCKETS == 1000, "bucket_of computes the bucket as id % 1000");

/// Fills the bucket column of up to `limit` rows per table that lack it (written before migration
/// 0006, or by a backend of an older version during a rolling upgrade); returns how many it
/// filled. Each statement takes a bounded number of rows, found through the bucket index (a
/// missing bucket is NULL, the index's first range), so it never holds many locks.
pub async fn fill_buckets(db: &AnyPool, dialect: Dialect, limit: u32) -> sqlx::Result<u64> {
    let mut filled = 0;
    for table in PER_USER_TABLES {
        let (name, bucket_of) = (table.name, table.bucket_of);
        let sql = match dialect {
            Dialect::MySql => format!("UPDATE {name} t SET {BUCKET} = {bucket_of} WHERE {BUCKET} IS NULL LIMIT {limit}"),
            // SQLite has UPDATE … LIMIT only in builds that enable it.
            Dialect::Sqlite => format!(
                "UPDATE {name} AS t SET {BUCKET} = {bucket_of} WHERE rowid IN (SELECT rowid FROM {name} WHERE {BUCKET} IS NULL LIMIT {limit})"
            ),
        };
        filled += sqlx::query(&sql).execute(db).await?.rows_affected();
    }
    Ok(filled)
}

/// Rows that still lack their bucket, all tables together (0 once [`fill_buckets`] is done).
pub async fn unfilled(db: &AnyPool) -> sqlx::Result<i64> {
    let mut n = 0;
    for table in PER_USER_TABLES {
        let sql = format!("SELECT COUNT(*) FROM {} WHERE {BUCKET} IS NULL", table.name);
        n += sqlx::query_scalar::<_, i64>(&sql).fetch_one(db).await?;
    }
    Ok(n)
}

/// Binds `values` to `q` in order.
pub fn bind_all<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    values: impl IntoIterator<Item = &'q Value>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for v in values {
        q = match v {
            Value::Int(n) => q.bind(*n),
            Value::Text(s) => q.bind(s.as_str()),
        };
    }
    q
}
