//! A shard as an operator sees it (`shopctl shards status|check`): what it holds, and the rows
//! whose user another shard owns.

use sqlx::{AnyPool, Row as _};

use super::per_user::{bind_all, Kind, PerUserTable, Value, BUCKET};

/// What a shard's primary holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub users: i64,
    pub orders: i64,
    /// When an order last changed (unix seconds); `None` with no orders.
    pub last_write: Option<i64>,
}

pub async fn totals(db: &AnyPool) -> sqlx::Result<Totals> {
    let users = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(db).await?;
    let orders = sqlx::query_scalar("SELECT COUNT(*) FROM orders").fetch_one(db).await?;
    let last_write = sqlx::query_scalar("SELECT MAX(updated_at) FROM orders").fetch_one(db).await?;
    Ok(Totals { users, orders, last_write })
}

/// A row whose user is not in the shard's buckets: its id (as text) and its user id as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignRow {
    pub id: String,
    pub user_id: i64,
}

/// Rows a statement of [`foreign_rows`] walks at most: well within a statement's time limit at
/// any shard size (the walk goes by the primary key).
pub const CHECK_CHUNK: u64 = 50_000;

/// What one chunk of [`foreign_rows`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignChunk {
    /// Misplaced rows in the chunk.
    pub count: i64,
    /// The first of them (at most the `limit` asked for).
    pub rows: Vec<ForeignRow>,
    /// Where the next chunk starts (after this key); `None`: this was the table's last.
    pub next: Option<Vec<Value>>,
}

/// One chunk of [`CHECK_CHUNK`] rows of `table` after `after` (from the start if `None`), in key
/// order: its rows whose user's bucket is not in `owned`, or whose stored bucket is not their
/// user's, or that are not a user's at all (user id 0 or below); how many, and the first `limit`.
/// Call again with the returned `next` until it is `None`: each call is three short statements,
/// so a whole shard is checked whatever its size without any statement running long.
pub async fn foreign_rows(
    db: &AnyPool,
    table: &PerUserTable,
    owned: &[u16],
    after: Option<&[Value]>,
    limit: u32,
) -> sqlx::Result<ForeignChunk> {
    let Some(user_column) = table.user_column else {
        return Ok(ForeignChunk { count: 0, rows: Vec::new(), next: None });
    };
    let name = table.name;
    let stored = format!("t.{BUCKET}");
    let computed = table.bucket_of;
    let cond = if owned.is_empty() {
        "1 = 1".to_owned()
    } else {
        let owned = super::bucket_list(owned);
        format!("(t.{user_column} <= 0 OR {stored} IS NULL OR {stored} <> {computed} OR ({computed}) NOT IN ({owned}))")
    };
    let key = table.key_list();
    // This chunk's end: the CHECK_CHUNK-th key after `after`, or the table's end.
    let (after_sql, after_binds) = match after {
        Some(last) => {
            let (sql, binds) = table.after_key(last);
            (format!("AND {sql}"), binds)
        }
        None => (String::new(), Vec::new()),
    };
    let boundary_sql =
        format!("SELECT {key} FROM {name} t WHERE 1 = 1 {after_sql} ORDER BY {key} LIMIT 1 OFFSET {}", CHECK_CHUNK - 1);
    let end = match bind_all(sqlx::query(&boundary_sql), after_binds.iter().copied()).fetch_optional(db).await? {
        Some(row) => Some(table.values(&row, table.key_len)?),
        None => None,
    };
    let (upto_sql, upto_binds) = match &end {
        Some(end) => {
            let (sql, binds) = table.upto_key(end);
            (format!("AND {sql}"), binds)
        }
        None => (String::new(), Vec::new()),
    };
    let range = format!("FROM {name} t WHERE 1 = 1 {after_sql} {upto_sql} AND {cond}");
    let binds: Vec<&Value> = after_binds.iter().chain(&upto_binds).copied().collect();
    let count: i64 = bind_all(sqlx::query(&format!("SELECT COUNT(*) {range}")), binds.iter().copied())
        .fetch_one(db)
        .await?
        .try_get(0)?;
    let mut found = Vec::new();
    if count > 0 && limit > 0 {
        let label = table.row_label;
        let id_is_text = table.columns.iter().any(|(c, k)| *c == label && *k == Kind::Text);
        let sql =
            format!("SELECT t.{label} AS row_id, t.{user_column} AS row_user {range} ORDER BY {key} LIMIT {limit}");
        for row in bind_all(sqlx::query(&sql), binds.iter().copied()).fetch_all(db).await? {
            let id = if id_is_text {
                row.try_get::<String, _>("row_id")?
            } else {
                row.try_get::<i64, _>("row_id")?.to_string()
            };
            found.push(ForeignRow { id, user_id: row.try_get("row_user")? });
        }
    }
    Ok(ForeignChunk { count, rows: found, next: end })
}
