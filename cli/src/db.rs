//! Operator access to the stack's databases, by the URLs in its config: SQLite (`sqlite:///…`) and
//! MySQL/MariaDB (`mysql://…`, `mariadb://…`) alike, through sqlx's Any driver.
//!
//! Every step is bounded (connect, acquire, each query: [`TIMEOUT`]), so a dead database is a clear
//! "unreachable" in seconds, never a hang. SQLite files are opened, never created: a missing file is
//! a database that is not there. URLs are only ever shown redacted, and a password is scrubbed from
//! any driver message that might echo it.

use std::future::Future;
use std::time::Duration;

use shopgate_core::config::DbUrl;
pub use shopgate_core::db::Dialect;
use shopgate_core::db::{self as core_db, Open};
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyConnection, AnyPool, Connection as _, Transaction};

/// The bound on connecting and on each query.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(3);

/// One open database.
pub struct Db {
    pub(crate) pool: AnyPool,
    pub(crate) dialect: Dialect,
    pub url: DbUrl,
}

/// A database that could not be reached or answered wrongly, said in one line without secrets.
#[derive(Debug, thiserror::Error)]
#[error("{what} ({url}): {message}")]
pub struct DbError {
    pub(crate) what: String,
    pub url: String,
    pub(crate) message: String,
}

impl Db {
    /// Connects to `url` (`what` names it in messages: "shard a's primary") and checks it answers.
    pub async fn connect(url: &DbUrl, what: &str) -> Result<Db, DbError> {
        Self::open(url, what, Open::Existing).await
    }

    /// [`Db::connect`], creating a SQLite file that is not there yet (`shopctl migrate`, which
    /// makes the stack's databases).
    pub async fn create(url: &DbUrl, what: &str) -> Result<Db, DbError> {
        Self::open(url, what, Open::Create).await
    }

    async fn open(url: &DbUrl, what: &str, open: Open) -> Result<Db, DbError> {
        let fail =
            |message: String| DbError { what: what.to_owned(), url: url.to_string(), message: scrub(&message, url) };
        if url.is_sqlite() && open == Open::Existing {
            let path = sqlite_path(url.expose());
            if !path.is_empty() && path != ":memory:" && !std::path::Path::new(path).exists() {
                return Err(fail(format!("the database file {path} does not exist (has `shopctl migrate` made it?)")));
            }
        }
        let (dialect, options) = core_db::connect_options(url, open).map_err(|e| fail(e.to_string()))?;
        // One connection first, by hand: a pool that cannot connect only says it timed out, and a
        // person needs the cause ("Connection refused", "Access denied", an unknown database).
        match tokio::time::timeout(TIMEOUT, AnyConnection::connect_with(&options)).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => return Err(fail(format!("no answer within {} s", TIMEOUT.as_secs()))),
        }
        // The services write beside us: each connection waits for their locks rather than fail.
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(TIMEOUT)
            .after_connect(move |conn, _| Box::pin(async move { core_db::prepare_connection(conn, dialect).await }))
            .connect_lazy_with(options);
        let db = Db { pool, dialect, url: url.clone() };
        bounded(sqlx::query_scalar::<_, i64>("SELECT 1").fetch_one(&db.pool)).await.map_err(|e| fail(e.to_string()))?;
        Ok(db)
    }

    /// A write transaction. On SQLite `BEGIN IMMEDIATE`, so the write lock is held from the start
    /// and the transaction cannot fail half-way because a service wrote in between.
    pub async fn begin_write(&self) -> sqlx::Result<Transaction<'static, Any>> {
        core_db::begin_write(&self.pool, self.dialect).await
    }

    /// A driver error as one line, with any password scrubbed.
    pub(crate) fn explain(&self, e: &sqlx::Error) -> String {
        scrub(&e.to_string(), &self.url)
    }

    /// Closes the pool, waiting at most [`TIMEOUT`]: a connection whose statement ran past its
    /// bound may still wait on the server (a lock, a stuck disk), and closing it waits for that.
    pub async fn close(self) {
        let _ = tokio::time::timeout(TIMEOUT, self.pool.close()).await;
    }
}

/// A shard map read or write with the [`TIMEOUT`] bound.
pub(crate) async fn bounded_control<T>(
    fut: impl Future<Output = Result<T, shopgate_core::control::ControlError>>,
) -> Result<T, shopgate_core::control::ControlError> {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(too_slow().into()),
    }
}

/// Runs a query with the [`TIMEOUT`] bound; running out is [`too_slow`].
pub(crate) async fn bounded<T>(fut: impl Future<Output = sqlx::Result<T>>) -> sqlx::Result<T> {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(too_slow()),
    }
}

/// A statement (or the connection it waited for) that took longer than [`TIMEOUT`]: the database
/// is slow or stuck, which is what an operator must hear, not that a pool timed out.
fn too_slow() -> sqlx::Error {
    let message = format!("the database did not answer within {} s: it is slow, busy or stuck", TIMEOUT.as_secs());
    sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, message))
}

/// `sqlite:///a/b.db?x` and `sqlite:b.db` -> the file path.
pub(crate) fn sqlite_path(url: &str) -> &str {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    rest.split('?').next().unwrap_or(rest)
}

/// Replaces the URL's password, wherever a message repeats it, with `***`.
fn scrub(message: &str, url: &DbUrl) -> String {
    let s = url.expose();
    let password = match (s.find("://"), s.rfind('@')) {
        (Some(start), Some(at)) if at > start => s[start + 3..at].split_once(':').map(|(_, p)| p),
        _ => None,
    };
    match password {
        Some(p) if p.len() >= 3 => message.replace(p, "***"),
        _ => message.to_owned(),
    }
}

/// The auth database's writable server, for an operator's write (a disable, an unlock): with
/// `verifier.database_replica_url`, whichever of the two is writable, as the services choose it
/// ([`shopgate_core::auth_db`]), so the commands follow `shopctl auth promote` as they do. While
/// neither is (the primary is down and nobody promoted the replica), an error that says so.
pub(crate) async fn auth_primary(config: &shopgate_core::config::Config) -> anyhow::Result<Db> {
    let v = &config.verifier;
    let Some(replica) = &v.database_replica_url else {
        return Ok(Db::connect(&v.database_url, "the auth database").await?);
    };
    let mut why = Vec::new();
    for (url, what) in [(&v.database_url, "the auth primary"), (replica, "the auth replica")] {
        match Db::connect(url, what).await {
            Ok(db) => {
                match bounded(sqlx::query_scalar::<_, i64>("SELECT CAST(@@read_only AS SIGNED)").fetch_one(&db.pool))
                    .await
                {
                    Ok(0) => return Ok(db),
                    Ok(_) => why.push(format!("{what} ({url}) is read-only")),
                    Err(e) => why.push(format!("{what} ({url}): {}", db.explain(&e))),
                }
            }
            Err(e) => why.push(e.to_string()),
        }
    }
    anyhow::bail!(
        "the auth database has no writable primary now ({}): writes wait until the primary is back, or \
         `shopctl auth promote` makes the replica the primary",
        why.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_scrubbing() {
        assert_eq!(sqlite_path("sqlite:///tmp/a.db?mode=rw"), "/tmp/a.db");
        assert_eq!(sqlite_path("sqlite:a.db"), "a.db");
        let url = DbUrl::new("mysql://shop:hunter2@db:3306/shard_a");
        assert_eq!(scrub("access denied for hunter2", &url), "access denied for ***");
        assert_eq!(url.to_string(), "mysql://shop:***@db:3306/shard_a");
    }
}
