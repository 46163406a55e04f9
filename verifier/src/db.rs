//! The auth database: SQLite by default, MySQL/MariaDB by URL. Its schema is the store's
//! (`store/migrations/auth/`), applied by `shopctl migrate` before the verifier starts; the
//! verifier only checks at start that it can run on it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shopgate_core::auth_db::AuthDb;
use shopgate_core::config::{DbUrl, VerifierConfig};
use shopgate_core::db::{self, Dialect, Open};
use shopgate_store::schema::{self, Schema};
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

/// Connects with bounded timeouts and checks that the schema is one this build runs on. The
/// database must exist and be migrated (`shopctl migrate`); nothing here creates or changes it.
pub async fn connect(url: &DbUrl) -> anyhow::Result<AnyPool> {
    let (dialect, options) =
        db::connect_options(url, Open::Existing).with_context(|| format!("the auth database {url}"))?;
    let max = match dialect {
        Dialect::Sqlite => 4,
        Dialect::MySql => 16,
    };
    let pool = AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(3))
        .after_connect(move |conn, _| Box::pin(async move { db::prepare_connection(conn, dialect).await }))
        .connect_with(options)
        .await
        .with_context(|| match dialect {
            // A SQLite file that is not there yet is the usual cause: `shopctl migrate` makes it.
            Dialect::Sqlite => format!("cannot open the auth database {url} (has `shopctl migrate` made it?)"),
            Dialect::MySql => format!("cannot connect to the auth database {url}"),
        })?;
    let applied = schema::check(&pool, Schema::Auth, dialect).await?;
    if applied.newer_than_build {
        tracing::info!(newest = applied.newest, "the auth database's schema is newer than this build; running on it");
    }
    Ok(pool)
}

/// A pool on `url` that connects when first used, unchecked: the auth replica (read only), or the
/// primary when it is down at start (the verifier starts from the replica and
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

/// The auth database: the primary (its schema checked) and, with `verifier.database_replica_url`, its
/// replica. A primary that does not answer at start is not fatal when there is a replica: the
/// verifier starts from it, read-only.
pub async fn connect_auth(config: &VerifierConfig) -> anyhow::Result<Arc<AuthDb>> {
    let Some(replica_url) = &config.database_replica_url else {
        return Ok(Arc::new(AuthDb::single(connect(&config.database_url).await?)));
    };
    let primary = match connect(&config.database_url).await {
        Ok(pool) => pool,
        // A schema this build cannot run on is the operator's to fix (`shopctl migrate`), not an
        // outage to ride out on the replica.
        Err(e) if e.downcast_ref::<schema::SchemaError>().is_some_and(|s| !s.is_unavailable()) => return Err(e),
        Err(e) => {
            tracing::warn!(error = format!("{e:#}"), "the auth primary does not answer; starting from the replica");
            connect_lazy(&config.database_url)?
        }
    };
    let db = Arc::new(AuthDb::pair(primary, connect_lazy(replica_url)?, config.replica_max_lag()));
    db.start_probes().await;
    Ok(db)
}
