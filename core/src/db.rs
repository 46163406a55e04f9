//! What every part that opens a stack database shares (feature `db`): which engine a URL names and
//! how sqlx's Any driver is to open it, the settings each connection gets, the write transaction
//! that holds SQLite's write lock from its start, and whether an error means "the database is not
//! answering or refuses for now" (a 503 from every service) or "our query is wrong" (a 500).
//!
//! Pool sizes and timeouts stay with each part: a service, a backend and an operator's command
//! want different ones.

use std::time::Duration;

use sqlx::any::{AnyArguments, AnyConnectOptions};
use sqlx::error::DatabaseError as _;
use sqlx::{Any, AnyConnection, AnyPool, Connection as _, Executor as _, Transaction};

use crate::config::DbUrl;

/// SQLite: how long a statement waits for another writer's lock before it fails (sqlx's default
/// too; said here because concurrent writers depend on it).
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// SQLite: the page cache of each connection, in KiB (SQLite's default is 2,000). The operating
/// system caches the file as well; a pool of connections each keeping 2 MB of the same pages made
/// a backend's resident set grow by 15 MiB under load.
pub const SQLITE_CACHE_KIB: u32 = 256;
/// MySQL/MariaDB: a statement waiting this long for a row lock fails (a 503) instead of waiting
/// InnoDB's default 50 s.
pub const MYSQL_LOCK_WAIT: Duration = Duration::from_secs(3);

/// The SQL dialect, where the two engines differ (upserts, transaction start, error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    MySql,
}

/// A database URL that cannot be used. The message does not repeat the URL (which may hold a
/// password): the caller names the database.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("the URL is neither sqlite: nor mysql:/mariadb:")]
    Scheme,
    #[error("invalid URL: {0}")]
    Invalid(String),
}

impl Dialect {
    pub(crate) fn of(url: &DbUrl) -> Result<Self, UrlError> {
        if url.is_sqlite() {
            Ok(Self::Sqlite)
        } else if url.is_mysql() {
            Ok(Self::MySql)
        } else {
            Err(UrlError::Scheme)
        }
    }
}

/// Whether opening a SQLite database may create its file. (MySQL databases are never created.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// The file is created if missing: `shopctl migrate`, which then migrates it.
    Create,
    /// A missing file is a database that is not there.
    Existing,
}

/// How sqlx's Any driver is to open `url`: `mariadb:` as `mysql:` (the same protocol); SQLite in
/// `mode=rwc` or `mode=rw` by `open`, unless the URL says its own mode or is in memory.
pub fn connect_options(url: &DbUrl, open: Open) -> Result<(Dialect, AnyConnectOptions), UrlError> {
    sqlx::any::install_default_drivers();
    let dialect = Dialect::of(url)?;
    let options =
        driver_url(url.expose(), dialect, open).parse().map_err(|e: sqlx::Error| UrlError::Invalid(e.to_string()))?;
    Ok((dialect, options))
}

fn driver_url(url: &str, dialect: Dialect, open: Open) -> String {
    match dialect {
        Dialect::MySql => match url.strip_prefix("mariadb:") {
            Some(rest) => format!("mysql:{rest}"),
            None => url.to_owned(),
        },
        Dialect::Sqlite if url.contains("mode=") || url.starts_with("sqlite::memory:") => url.to_owned(),
        Dialect::Sqlite => {
            let mode = match open {
                Open::Create => "rwc",
                Open::Existing => "rw",
            };
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}mode={mode}")
        }
    }
}

/// The settings every new connection gets (a pool's `after_connect`): SQLite waits
/// [`SQLITE_BUSY_TIMEOUT`] for locks and keeps at most [`SQLITE_CACHE_KIB`] of pages in memory;
/// MySQL/MariaDB gives up a row lock after [`MYSQL_LOCK_WAIT`].
pub async fn prepare_connection(conn: &mut AnyConnection, dialect: Dialect) -> sqlx::Result<()> {
    let sql = match dialect {
        Dialect::Sqlite => format!(
            "PRAGMA busy_timeout = {}; PRAGMA cache_size = -{SQLITE_CACHE_KIB}",
            SQLITE_BUSY_TIMEOUT.as_millis()
        ),
        Dialect::MySql => format!("SET SESSION innodb_lock_wait_timeout = {}", MYSQL_LOCK_WAIT.as_secs()),
    };
    conn.execute(sql.as_str()).await.map(|_| ())
}

/// A write transaction. On SQLite `BEGIN IMMEDIATE`: the write lock is taken (waiting up to the
/// busy timeout) before the first read, so a transaction never fails half-way because another
/// writer committed after its snapshot. Not cancel-safe on MySQL (a `BEGIN` sent whose answer is
/// never read): a caller that may be dropped runs it in a task of its own.
pub async fn begin_write(pool: &AnyPool, dialect: Dialect) -> sqlx::Result<Transaction<'static, Any>> {
    match dialect {
        Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        Dialect::MySql => pool.begin().await,
    }
}

/// [`begin_write`] on a connection of one's own.
pub async fn begin_write_on(conn: &mut AnyConnection, dialect: Dialect) -> sqlx::Result<Transaction<'_, Any>> {
    match dialect {
        Dialect::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await,
        Dialect::MySql => conn.begin().await,
    }
}

/// Whether a database error means "the database is not answering or refuses for now" (503 from
/// every service, worth retrying) rather than "our query is wrong" (500).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(_) => {
            if let Some(n) = mysql_code(e) {
                // Too many connections, access denied, unknown database, shutting down, lock wait
                // timeout, deadlock, read-only, connection killed, query interrupted or timed out;
                // 2000-2999 are the client library's own (lost connection and the like).
                matches!(n, 1040 | 1045 | 1049 | 1053 | 1205 | 1213 | 1290 | 1317 | 1836 | 1927 | 3024)
                    || (2000..3000).contains(&n)
            } else {
                // BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB.
                matches!(sqlite_code(e), Some(5 | 6 | 8 | 10 | 11 | 13 | 14 | 26))
            }
        }
        _ => false,
    }
}

/// MySQL/MariaDB chose this statement's transaction as a deadlock's victim and rolled it back
/// whole: running it again is the server's own advice ("try restarting transaction").
pub fn is_deadlock(e: &sqlx::Error) -> bool {
    mysql_code(e) == Some(1213)
}

/// How many times work that a deadlock rolled back is run again before its error stands.
pub const DEADLOCK_RETRIES: u32 = 3;

/// Whether work that failed with `e`, after `deadlocks` earlier deadlocks, is run again, and after
/// how long: only a deadlock's victim (the server rolled the whole transaction back, so running it
/// again is safe when the work can be run again), at most [`DEADLOCK_RETRIES`] times, waiting a
/// little longer each time so the transactions it met can finish.
pub fn retry_after_deadlock(e: &sqlx::Error, deadlocks: u32) -> Option<Duration> {
    (is_deadlock(e) && deadlocks < DEADLOCK_RETRIES).then(|| Duration::from_millis(50 * u64::from(deadlocks + 1)))
}

/// Runs an `INSERT` on `db` (a pool, or a connection inside a transaction): true if it stored the
/// row, false if a unique or primary key already holds one (so concurrent inserts of the same key
/// cannot both succeed, on either engine).
pub async fn insert_unless_present<'q, 'c, E>(
    db: E,
    insert: sqlx::query::Query<'q, Any, AnyArguments<'q>>,
) -> sqlx::Result<bool>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    match insert.execute(db).await {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A duplicate key (a unique or primary key constraint).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation())
}

/// The MySQL/MariaDB error number of `e`, if it is one.
pub fn mysql_code(e: &sqlx::Error) -> Option<u16> {
    e.as_database_error()?.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().map(|my| my.number())
}

/// SQLite's primary result code (the low byte of the extended code), if `e` is a SQLite error.
pub fn sqlite_code(e: &sqlx::Error) -> Option<i32> {
    let lite = e.as_database_error()?.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    Some(lite.code()?.parse::<i32>().ok()? & 0xff)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use sqlx::Connection as _;

    use super::*;

    #[test]
    fn urls_for_the_driver() {
        let url = |s: &str, open| {
            let u = DbUrl::new(s);
            driver_url(u.expose(), Dialect::of(&u).unwrap(), open)
        };
        assert_eq!(url("sqlite:///d/a.db", Open::Create), "sqlite:///d/a.db?mode=rwc");
        assert_eq!(url("sqlite:///d/a.db", Open::Existing), "sqlite:///d/a.db?mode=rw");
        assert_eq!(url("sqlite:a.db?cache=shared", Open::Create), "sqlite:a.db?cache=shared&mode=rwc");
        assert_eq!(url("sqlite:///d/a.db?mode=ro", Open::Create), "sqlite:///d/a.db?mode=ro");
        assert_eq!(url("sqlite::memory:", Open::Create), "sqlite::memory:");
        assert_eq!(url("mariadb://u:p@h:3306/d", Open::Create), "mysql://u:p@h:3306/d");
        assert_eq!(url("mysql://u:p@h/d", Open::Existing), "mysql://u:p@h/d");
        assert!(matches!(Dialect::of(&DbUrl::new("postgres://u:hunter2@h/d")), Err(UrlError::Scheme)));
        assert!(connect_options(&DbUrl::new("mysql://u:hunter2@h:port/d"), Open::Existing)
            .is_err_and(|e| !e.to_string().contains("hunter2")));
    }

    #[test]
    fn pool_and_connection_failures_are_unavailable_query_mistakes_are_not() {
        for e in
            [sqlx::Error::PoolTimedOut, sqlx::Error::PoolClosed, sqlx::Error::Io(std::io::ErrorKind::BrokenPipe.into())]
        {
            assert!(is_unavailable(&e), "{e}");
        }
        for e in [sqlx::Error::RowNotFound, sqlx::Error::ColumnNotFound("x".into())] {
            assert!(!is_unavailable(&e), "{e}");
        }
    }

    /// A new SQLite file in a folder of its own (kept while the folder lives), and how to open it.
    fn temp_sqlite() -> (tempfile::TempDir, Dialect, AnyConnectOptions) {
        let dir = tempfile::tempdir().unwrap();
        let url = DbUrl::new(format!("sqlite://{}", dir.path().join("t.db").display()));
        let (dialect, options) = connect_options(&url, Open::Create).unwrap();
        (dir, dialect, options)
    }

    /// A database another writer holds: SQLITE_BUSY is "unavailable"; a missing table is our bug.
    #[tokio::test]
    async fn a_locked_sqlite_database_is_unavailable() {
        let (_dir, _, options) = temp_sqlite();
        let mut holder = AnyConnection::connect_with(&options).await.unwrap();
        holder.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)").await.unwrap();
        holder.execute("BEGIN IMMEDIATE").await.unwrap();
        let mut other = AnyConnection::connect_with(&options).await.unwrap();
        other.execute("PRAGMA busy_timeout = 0").await.unwrap();
        let busy = other.execute("INSERT INTO t (id) VALUES (1)").await.unwrap_err();
        assert_eq!(sqlite_code(&busy), Some(5), "{busy}");
        assert!(is_unavailable(&busy), "{busy}");
        let mistake = other.execute("SELECT * FROM no_such_table").await.unwrap_err();
        assert!(!is_unavailable(&mistake), "{mistake}");
        holder.execute("ROLLBACK").await.unwrap();
        holder.execute("INSERT INTO t (id) VALUES (1)").await.unwrap();
        let duplicate = other.execute("INSERT INTO t (id) VALUES (1)").await.unwrap_err();
        assert!(is_unique_violation(&duplicate) && !is_unavailable(&duplicate), "{duplicate}");
    }

    /// Every pooled SQLite connection waits for locks and keeps a small page cache.
    #[tokio::test]
    async fn a_prepared_sqlite_connection_has_our_settings() {
        let (_dir, dialect, options) = temp_sqlite();
        let mut conn = AnyConnection::connect_with(&options).await.unwrap();
        prepare_connection(&mut conn, dialect).await.unwrap();
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(&mut conn).await.unwrap();
        let cache: i64 = sqlx::query_scalar("PRAGMA cache_size").fetch_one(&mut conn).await.unwrap();
        assert_eq!((busy, cache), (SQLITE_BUSY_TIMEOUT.as_millis() as i64, -i64::from(SQLITE_CACHE_KIB)));
    }
}
