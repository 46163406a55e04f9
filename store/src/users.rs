//! The shard's copy of a user's profile: same id as the auth database, email from the token.
//! No password is ever stored here.

use serde::Serialize;
use shopgate_core::db::insert_unless_present;
use shopgate_core::shardmap::bucket;
use shopgate_core::time::rfc3339;
use shopgate_core::UserId;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection, AnyPool};

use crate::Dialect;

/// The caller's profile on their shard: the id of the auth database, the email from the token.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Profile {
    #[schema(minimum = 1)]
    pub id: i64,
    pub email: String,
    pub is_active: bool,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    email: String,
    is_active: i64,
    created_at: i64,
}

impl From<Row> for Profile {
    fn from(r: Row) -> Self {
        Self { id: r.id, email: r.email, is_active: r.is_active != 0, created_at: rfc3339(r.created_at) }
    }
}

pub async fn find(db: &AnyPool, user: UserId) -> sqlx::Result<Option<Profile>> {
    let row: Option<Row> = sqlx::query_as("SELECT id, email, is_active, created_at FROM users WHERE id = ?")
        .bind(user.as_i64())
        .fetch_optional(db)
        .await?;
    Ok(row.map(Profile::from))
}

/// Creates the profile unless it exists; true if this call created it. Portable: the primary key
/// decides, so two concurrent calls cannot both create. (Operators' path: no write fence.)
pub async fn create_if_missing(db: &AnyPool, user: UserId, email: &str, now: i64) -> sqlx::Result<bool> {
    insert_unless_present(db, insert(user, email, now)).await
}

/// Creates the profile inside a write transaction (behind the user's write fence: the backend's
/// `service::profiles`); false if it exists already, which leaves the transaction unusable on
/// some engines, so the caller drops it.
pub async fn create(tx: &mut AnyConnection, user: UserId, email: &str, now: i64) -> sqlx::Result<bool> {
    insert_unless_present(tx, insert(user, email, now)).await
}

/// The `INSERT` of a new, active profile.
fn insert(user: UserId, email: &str, now: i64) -> Query<'_, Any, AnyArguments<'_>> {
    sqlx::query("INSERT INTO users (id, email, is_active, created_at, bucket) VALUES (?, ?, 1, ?, ?)")
        .bind(user.as_i64())
        .bind(email)
        .bind(now)
        .bind(i64::from(bucket(user)))
}

/// Sets the profile's `is_active` (shopctl's `users disable|enable` keeps it the same as the auth
/// database's). No profile is no change.
pub async fn set_active(db: &AnyPool, user: UserId, active: bool) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET is_active = ? WHERE id = ?")
        .bind(i64::from(active))
        .bind(user.as_i64())
        .execute(db)
        .await?;
    Ok(())
}

/// Creates each profile or refreshes its email, inside an order's transaction (or a batch's):
/// `(user, email, now)`, one row per user, ascending by user so that batches running at once
/// lock their users' rows in the same order.
pub async fn upsert(conn: &mut AnyConnection, dialect: Dialect, profiles: &[(UserId, &str, i64)]) -> sqlx::Result<()> {
    let rows = vec!["(?, ?, 1, ?, ?)"; profiles.len()].join(", ");
    let sql = match dialect {
        Dialect::Sqlite => format!(
            "INSERT INTO users (id, email, is_active, created_at, bucket) VALUES {rows} \
             ON CONFLICT (id) DO UPDATE SET email = excluded.email"
        ),
        Dialect::MySql => format!(
            "INSERT INTO users (id, email, is_active, created_at, bucket) VALUES {rows} \
             ON DUPLICATE KEY UPDATE email = VALUES(email)"
        ),
    };
    let mut query = sqlx::query(&sql);
    for (user, email, now) in profiles {
        query = query.bind(user.as_i64()).bind(*email).bind(*now).bind(i64::from(bucket(*user)));
    }
    query.execute(conn).await?;
    Ok(())
}
