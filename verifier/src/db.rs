//! The auth database: SQLite by default, MySQL/MariaDB by URL; migrations run at start.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shopgate_core::auth_db::AuthDb;
use shopgate_core::config::{DbUrl, VerifierConfig};
use shopgate_core::db::{self, Dialect, Open};
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static MYSQL: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/mysql");

/// Connects with bounded timeouts and brings the schema up to date. The SQLite file is created if
/// missing: the auth database is the verifier's own.
pub async fn connect(url: &DbUrl) -> anyhow::Result<AnyPool> {
    let (dialect, options) =
        db::connect_options(url, Open::Create).with_context(|| format!("the auth database {url}"))?;
    let (migrator, max) = match dialect {
        Dialect::Sqlite => (&SQLITE, 4),
        Dialect::MySql => (&MYSQL, 16),
    };
    let pool = AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(3))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if dialect == Dialect::Sqlite {
                    // WAL lets readers run beside the one writer.
                    sqlx::query("PRAGMA journal_mode=WAL").execute(&mut *conn).await?;
                }
                db::prepare_connection(conn, dialect).await
            })
        })
        .connect_with(options)
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

/// A pool on `url` that connects when first used and runs no migration: the auth replica (read
/// only), or the primary when it is down at start (the verifier starts from the replica and
/// writes once the primary is back).
pub fn connect_lazy(url: &DbUrl) -> anyhow::Result<AnyPool> {
    let (dialect, options) =
        db::connect_options(url, Open::Existing).with_context(|| format!("the auth database {url}"))?;
    Ok(AnyPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(3))
        .after_connect(move |conn, _| Box::pin(async move { db::prepare_connection(conn, dialect).await }))
        .connect_lazy_with(options))
}

/// The auth database: the primary (migrated) and, with `verifier.database_replica_url`, its
/// replica. A primary that does not answer at start is not fatal when there is a replica: the
/// verifier starts from it, read-only.
pub async fn connect_auth(config: &VerifierConfig) -> anyhow::Result<Arc<AuthDb>> {
    let Some(replica_url) = &config.database_replica_url else {
        return Ok(Arc::new(AuthDb::single(connect(&config.database_url).await?)));
    };
    let primary = match connect(&config.database_url).await {
        Ok(pool) => pool,
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "the auth primary does not answer; starting from the replica");
            connect_lazy(&config.database_url)?
        }
    };
    let db = Arc::new(AuthDb::pair(primary, connect_lazy(replica_url)?, config.replica_max_lag()));
    db.start_probes().await;
    Ok(db)
}
