//! The auth database: SQLite by default, MySQL/MariaDB by URL; migrations run at start.

use std::time::Duration;

use anyhow::Context as _;
use shopgate_core::config::DbUrl;
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static MYSQL: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

/// Connects with bounded timeouts and brings the schema up to date.
pub async fn connect(url: &DbUrl) -> anyhow::Result<AnyPool> {
    sqlx::any::install_default_drivers();
    let (conn_url, migrator, max) = if url.is_sqlite() {
        (sqlite_url(url.expose()), &SQLITE, 4)
    } else if url.is_mysql() {
        (url.expose().replacen("mariadb:", "mysql:", 1), &MYSQL, 16)
    } else {
        anyhow::bail!("database URL {url} is neither sqlite: nor mysql:");
    };
    let sqlite = url.is_sqlite();
    let pool = AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(3))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    // WAL lets readers run beside the one writer; sqlx's default busy timeout
                    // (5 s) makes concurrent writers wait instead of failing.
                    sqlx::query("PRAGMA journal_mode=WAL").execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect(&conn_url)
        .await
        .with_context(|| format!("cannot connect to the auth database {url}"))?;
    // Several verifiers may start at once on one database. MySQL's migrator takes a lock; SQLite's
    // does not, so a verifier that loses the race tries again and finds the work done.
    let mut attempt = 0;
    loop {
        match migrator.run(&pool).await {
            Ok(()) => return Ok(pool),
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "migration failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("migrating the auth database {url}")),
        }
    }
}

/// SQLite files are created if missing.
pub fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}mode=rwc")
}
