//! The users table: the only repository the auth API needs.

use shopgate_core::db::insert_unless_present;
use shopgate_core::{Email, UserId};
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row as _};

#[derive(Debug, Clone)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub(crate) password_hash: String,
    pub is_active: bool,
    pub(crate) is_admin: bool,
    pub(crate) created_at: i64,
    pub tokens_valid_after: i64,
}

const COLUMNS: &str = "id, email, password_hash, is_active, is_admin, created_at, tokens_valid_after";

fn from_row(row: &AnyRow) -> Result<User, sqlx::Error> {
    let id: i64 = row.try_get("id")?;
    Ok(User {
        id: UserId::new(id as u64).map_err(|e| sqlx::Error::Decode(e.into()))?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        is_active: row.try_get::<i64, _>("is_active")? != 0,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        created_at: row.try_get("created_at")?,
        tokens_valid_after: row.try_get("tokens_valid_after")?,
    })
}

pub enum Created {
    Ok(User),
    DuplicateEmail,
}

pub async fn create(db: &AnyPool, email: &Email, password_hash: &str, now: i64) -> Result<Created, sqlx::Error> {
    let insert =
        sqlx::query("INSERT INTO users (email, password_hash, is_active, is_admin, created_at) VALUES (?, ?, 1, 0, ?)")
            .bind(email.as_str())
            .bind(password_hash)
            .bind(now);
    if !insert_unless_present(db, insert).await? {
        return Ok(Created::DuplicateEmail);
    }
    // Read back by the unique email: the Any driver reports no insert id for SQLite.
    by_email(db, email).await?.map(Created::Ok).ok_or(sqlx::Error::RowNotFound)
}

pub async fn by_email(db: &AnyPool, email: &Email) -> Result<Option<User>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE email = ?"))
        .bind(email.as_str())
        .fetch_optional(db)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn by_id(db: &AnyPool, id: UserId) -> Result<Option<User>, sqlx::Error> {
    let row =
        sqlx::query(&format!("SELECT {COLUMNS} FROM users WHERE id = ?")).bind(id.as_i64()).fetch_optional(db).await?;
    row.as_ref().map(from_row).transpose()
}

/// Sets a new password hash and revokes every token issued before `tokens_valid_after`.
pub async fn set_password(db: &AnyPool, id: UserId, hash: &str, tokens_valid_after: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = ?, tokens_valid_after = ? WHERE id = ?")
        .bind(hash)
        .bind(tokens_valid_after)
        .bind(id.as_i64())
        .execute(db)
        .await?;
    Ok(())
}

/// Lets the user log in or refuses them, with `tokens_valid_after` as the new revocation cut-off;
/// false when there is no such user.
pub async fn set_active(db: &AnyPool, id: UserId, active: bool, tokens_valid_after: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE users SET is_active = ?, tokens_valid_after = ? WHERE id = ?")
        .bind(i64::from(active))
        .bind(tokens_valid_after)
        .bind(id.as_i64())
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}
