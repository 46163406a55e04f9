//! The auth database: SQLite by default, MySQL/MariaDB by URL. Its schema is the store's
//! (`store/migrations/auth/`), applied by `shopctl migrate` before the verifier starts; the
//! verifier only checks at start that it can run on it.

use std::time::Duration;

use anyhow::Context as _;
use shopgate_core::config::DbUrl;
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
