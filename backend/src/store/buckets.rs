//! A bucket's rows as a whole, for moving buckets between shards (`shopctl shards move`): read
//! them, make another shard's copy the same, compare the two, delete them.
//!
//! Every per-user table is here with its columns and how its rows find their bucket. Copies are
//! made by difference: the target gets the source's rows it lacks or holds differently, and loses
//! the rows the source no longer has (an idempotency key purged meanwhile), so running a copy again
//! after a crash, or once more while writes are paused, converges on the source's rows and writes
//! only what changed.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};
use shopgate_core::shardmap::BUCKETS;
use sqlx::{AnyPool, Row as _};

use crate::db::Dialect;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
}

/// A table whose rows belong to one user each, directly or through their order.
pub struct BucketTable {
    pub name: &'static str,
    /// The key columns first.
    columns: &'static [(&'static str, Kind)],
    key_len: usize,
    /// SQL picking the rows of the buckets in `{buckets}` (a list of numbers).
    filter: &'static str,
}

use Kind::{Int, Text};

/// In the order rows are written (an item needs its order); deletes go backwards.
pub const BUCKET_TABLES: &[BucketTable] = &[
    BucketTable {
        name: "users",
        columns: &[("id", Int), ("email", Text), ("is_active", Int), ("created_at", Int)],
        key_len: 1,
        filter: "id % 1000 IN ({buckets})",
    },
    BucketTable {
        name: "orders",
        columns: &[
            ("id", Int),
            ("user_id", Int),
            ("status", Text),
            ("total_cents", Int),
            ("created_at", Int),
            ("updated_at", Int),
        ],
        key_len: 1,
        filter: "user_id % 1000 IN ({buckets})",
    },
    BucketTable {
        name: "order_items",
        columns: &[
            ("order_id", Int),
            ("product_id", Int),
            ("quantity", Int),
            ("unit_price_cents", Int),
            ("line_total_cents", Int),
        ],
        key_len: 2,
        filter: "order_id IN (SELECT id FROM orders WHERE user_id % 1000 IN ({buckets}))",
    },
    BucketTable {
        name: "idempotency_keys",
        columns: &[
            ("user_id", Int),
            ("idem_key", Text),
            ("request_hash", Text),
            ("order_id", Int),
            ("created_at", Int),
        ],
        key_len: 2,
        filter: "user_id % 1000 IN ({buckets})",
    },
];

const _: () = assert!(BUCKETS == 1000, "the filters above compute the bucket as id % 1000");

/// One column's value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Value {
    Int(i64),
    Text(String),
}

/// A table's rows of some buckets, by key.
type Rows = BTreeMap<Vec<Value>, Vec<Value>>;

/// Rows and a SHA-256 over them (in key order), per table: what "the same on both shards" means.
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
}

async fn read(db: &AnyPool, table: &BucketTable, buckets: &[u16]) -> sqlx::Result<Rows> {
    let columns = table.columns.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
    let filter = table.filter.replace("{buckets}", &super::bucket_list(buckets));
    let sql = format!("SELECT {columns} FROM {} WHERE {filter}", table.name);
    let mut rows = Rows::new();
    for row in sqlx::query(&sql).fetch_all(db).await? {
        let mut values = Vec::with_capacity(table.columns.len());
        for (i, (_, kind)) in table.columns.iter().enumerate() {
            values.push(match kind {
                Int => Value::Int(row.try_get(i)?),
                Text => Value::Text(row.try_get(i)?),
            });
        }
        let rest = values.split_off(table.key_len);
        rows.insert(values, rest);
    }
    Ok(rows)
}

fn sum(table: &BucketTable, rows: &Rows) -> TableSum {
    let mut hash = Sha256::new();
    for (key, rest) in rows {
        for v in key.iter().chain(rest) {
            match v {
                Value::Int(n) => hash.update(format!("i{n};")),
                Value::Text(s) => hash.update(format!("t{}:{s};", s.len())),
            }
        }
        hash.update("\n");
    }
    let digest = hash.finalize();
    TableSum { table: table.name, rows: rows.len() as u64, sha256: digest.iter().map(|b| format!("{b:02x}")).collect() }
}

/// Per table, the rows of `buckets` and their checksum.
pub async fn checksums(db: &AnyPool, buckets: &[u16]) -> sqlx::Result<Vec<TableSum>> {
    let mut out = Vec::new();
    for table in BUCKET_TABLES {
        out.push(sum(table, &read(db, table, buckets).await?));
    }
    Ok(out)
}

/// Makes `target`'s rows of `buckets` the same as `source`'s, writing only the difference, one
/// transaction per table. Safe to run again at any time.
pub async fn copy(source: &AnyPool, target: &AnyPool, dialect: Dialect, buckets: &[u16]) -> sqlx::Result<Copied> {
    let mut done = Copied::default();
    // Stale rows go first, items before their orders; new rows after, orders before their items.
    // The source is read children first, each table in its own statement while writes go on: an
    // item read then belongs to an order committed before it, which the later read of `orders`
    // holds too (read parents first, an order placed in between has its items copied without it,
    // and MariaDB's foreign key refuses them). What is written meanwhile, the copy after the
    // write pause takes.
    let mut wanted = Vec::new();
    for table in BUCKET_TABLES.iter().rev() {
        let (have, want) = (read(target, table, buckets).await?, read(source, table, buckets).await?);
        done.rows += want.len() as u64;
        wanted.push((table, have, want));
    }
    wanted.reverse();
    for (table, have, want) in wanted.iter().rev() {
        let stale: Vec<&Vec<Value>> = have.keys().filter(|k| !want.contains_key(*k)).collect();
        for chunk in stale.chunks(200) {
            delete_keys(target, table, chunk).await?;
        }
        done.deleted += stale.len() as u64;
    }
    done.source = wanted.iter().map(|(table, _, want)| sum(table, want)).collect();
    for (table, have, want) in &wanted {
        let changed: Vec<(&Vec<Value>, &Vec<Value>)> = want.iter().filter(|(k, v)| have.get(*k) != Some(*v)).collect();
        for chunk in changed.chunks(200) {
            upsert(target, dialect, table, chunk).await?;
        }
        done.written += changed.len() as u64;
    }
    Ok(done)
}

fn bind_all<'q>(
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

async fn upsert(
    db: &AnyPool,
    dialect: Dialect,
    table: &BucketTable,
    rows: &[(&Vec<Value>, &Vec<Value>)],
) -> sqlx::Result<()> {
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
            format!("ON CONFLICT ({}) DO UPDATE SET {}", names[..table.key_len].join(", "), set.join(", "))
        }
    };
    let sql = format!(
        "INSERT INTO {} ({}) VALUES {} {update}",
        table.name,
        names.join(", "),
        vec![tuple.as_str(); rows.len()].join(", ")
    );
    let q = bind_all(sqlx::query(&sql), rows.iter().flat_map(|(k, v)| k.iter().chain(v.iter())));
    q.execute(db).await?;
    Ok(())
}

async fn delete_keys(db: &AnyPool, table: &BucketTable, keys: &[&Vec<Value>]) -> sqlx::Result<()> {
    let key_names: Vec<&str> = table.columns[..table.key_len].iter().map(|(c, _)| *c).collect();
    let one = format!("({})", key_names.iter().map(|c| format!("{c} = ?")).collect::<Vec<_>>().join(" AND "));
    let sql = format!("DELETE FROM {} WHERE {}", table.name, vec![one.as_str(); keys.len()].join(" OR "));
    bind_all(sqlx::query(&sql), keys.iter().flat_map(|k| k.iter())).execute(db).await?;
    Ok(())
}

/// Deletes every row of `buckets` (items before their orders), a bounded number per statement so
/// no statement holds many locks; returns how many went.
pub async fn delete(db: &AnyPool, buckets: &[u16]) -> sqlx::Result<u64> {
    let mut deleted = 0;
    for table in BUCKET_TABLES.iter().rev() {
        let rows = read(db, table, buckets).await?;
        let keys: Vec<&Vec<Value>> = rows.keys().collect();
        for chunk in keys.chunks(200) {
            delete_keys(db, table, chunk).await?;
        }
        deleted += keys.len() as u64;
    }
    Ok(deleted)
}
