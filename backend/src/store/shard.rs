//! A shard as an operator sees it (`shopctl shards status|check`): what it holds, and the rows
//! whose user another shard owns.

use shopgate_core::shardmap::BUCKETS;
use sqlx::{AnyPool, Row as _};

use super::per_user::{Kind, PerUserTable};

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

/// The rows of `table` whose user's bucket is not in `owned` (and users ids that are no user id):
/// how many there are, and the first `limit` by user id.
pub async fn foreign_rows(
    db: &AnyPool,
    table: &PerUserTable,
    owned: &[u16],
    limit: u32,
) -> sqlx::Result<(i64, Vec<ForeignRow>)> {
    let Some(user_column) = table.user_column else { return Ok((0, Vec::new())) };
    let (id_column, table) = (table.row_label, table.name);
    let id_is_text = table_kind(table, id_column) == Some(Kind::Text);
    let cond = if owned.is_empty() {
        "1 = 1".to_owned()
    } else {
        let owned = super::bucket_list(owned);
        format!("{user_column} <= 0 OR ({user_column} % {BUCKETS}) NOT IN ({owned})")
    };
    let count = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {cond}")).fetch_one(db).await?;
    let rows = sqlx::query(&format!(
        "SELECT {id_column} AS row_id, {user_column} AS row_user FROM {table} WHERE {cond} ORDER BY {user_column} LIMIT {limit}"
    ))
    .fetch_all(db)
    .await?;
    let found = rows
        .iter()
        .map(|row| {
            let id = if id_is_text {
                row.try_get::<String, _>("row_id")?
            } else {
                row.try_get::<i64, _>("row_id")?.to_string()
            };
            Ok(ForeignRow { id, user_id: row.try_get("row_user")? })
        })
        .collect::<sqlx::Result<_>>()?;
    Ok((count, found))
}

fn table_kind(table: &str, column: &str) -> Option<Kind> {
    let t = super::per_user::PER_USER_TABLES.iter().find(|t| t.name == table)?;
    t.columns.iter().find(|(c, _)| *c == column).map(|(_, k)| *k)
}
