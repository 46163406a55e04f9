//! The stack's two schemas and their migrations: the auth database's (accounts, revocations,
//! unlocks, the shard map and moves: `store/migrations/auth/`) and every shard's
//! (`store/migrations/shard/`), each for SQLite and MySQL/MariaDB with the same versions and names.
//!
//! Migrating is a step of its own, run by an operator with the migrator's credentials before a
//! rollout (`shopctl migrate`, [`migrate`]); no service changes a schema. A service checks at start
//! that the schema is one it can run on ([`check`]): every migration it was built with applied,
//! unchanged. Migrations newer than the build are allowed, because the rule for writing them
//! (README, "Upgrades") is expand first and contract a release later: a release adds tables,
//! columns and indexes its predecessor ignores, and drops what it no longer uses only once the
//! release before it is gone. So the previous release runs on the next one's schema, and a
//! rollout can be rolled back without touching the database.

use shopgate_core::config::DbUrl;
use shopgate_core::db::{connect_options, Dialect, Open};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AnyPool, Row as _};

/// Which database a schema is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// The auth database: the verifier's, read by the backends, the shard map's home.
    Auth,
    /// A shard's primary (its replica copies it).
    Shard,
}

static AUTH_SQLITE: Migrator = sqlx::migrate!("./migrations/auth/sqlite");
static AUTH_MYSQL: Migrator = sqlx::migrate!("./migrations/auth/mysql");
static SHARD_SQLITE: Migrator = sqlx::migrate!("./migrations/shard/sqlite");
static SHARD_MYSQL: Migrator = sqlx::migrate!("./migrations/shard/mysql");

impl Schema {
    /// The migrations this build has for the schema on `dialect`.
    pub fn migrator(self, dialect: Dialect) -> &'static Migrator {
        match (self, dialect) {
            (Schema::Auth, Dialect::Sqlite) => &AUTH_SQLITE,
            (Schema::Auth, Dialect::MySql) => &AUTH_MYSQL,
            (Schema::Shard, Dialect::Sqlite) => &SHARD_SQLITE,
            (Schema::Shard, Dialect::MySql) => &SHARD_MYSQL,
        }
    }

    /// The newest migration this build has.
    pub fn latest(self) -> i64 {
        self.migrator(Dialect::Sqlite).iter().map(|m| m.version).max().unwrap_or(0)
    }

    fn name(self) -> &'static str {
        match self {
            Schema::Auth => "the auth database",
            Schema::Shard => "the shard database",
        }
    }
}

/// Why a service cannot run on a database's schema. Each says what the operator does about it.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("{0} has no schema yet: run `shopctl migrate` first (README, \"Upgrades\")")]
    Empty(&'static str),
    #[error(
        "{schema} lacks migration {version} ({description}) that this build needs: run this release's \
         `shopctl migrate` first (README, \"Upgrades\")"
    )]
    Behind { schema: &'static str, version: i64, description: String },
    #[error(
        "{schema}: migration {version} was changed after it was applied; this build's differs from the stored one"
    )]
    Changed { schema: &'static str, version: i64 },
    #[error("{schema}: migration {version} failed part-way; repair it by hand, then run `shopctl migrate` again")]
    Failed { schema: &'static str, version: i64 },
    #[error(
        "{schema}: migration {version} is neither this build's nor newer than it (another lineage of \
         the schema?)"
    )]
    Foreign { schema: &'static str, version: i64 },
    #[error("{0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Migrate(#[from] MigrateError),
}

impl SchemaError {
    /// The database did not answer (worth waiting for), not a schema it cannot run on.
    pub fn is_unavailable(&self) -> bool {
        match self {
            SchemaError::Db(e) => shopgate_core::db::is_unavailable(e),
            _ => false,
        }
    }
}

/// What [`check`] found: the schema's newest migration and whether it is newer than the build's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub newest: i64,
    pub newer_than_build: bool,
}

/// Whether this build can run on the schema in `pool`: every one of its migrations applied,
/// successfully and unchanged; later ones (a newer release's expansions) are fine.
pub async fn check(pool: &AnyPool, schema: Schema, dialect: Dialect) -> Result<Applied, SchemaError> {
    let stored = match applied(pool).await {
        Ok(rows) => rows,
        Err(e) if missing_table(&e) => return Err(SchemaError::Empty(schema.name())),
        Err(e) => return Err(e.into()),
    };
    let name = schema.name();
    let ours = schema.migrator(dialect);
    let latest = schema.latest();
    for row in &stored {
        if !row.success {
            return Err(SchemaError::Failed { schema: name, version: row.version });
        }
        match ours.iter().find(|m| m.version == row.version) {
            Some(m) if *m.checksum != *row.checksum => {
                return Err(SchemaError::Changed { schema: name, version: row.version })
            }
            Some(_) => {}
            None if row.version > latest => {}
            None => return Err(SchemaError::Foreign { schema: name, version: row.version }),
        }
    }
    for m in ours.iter() {
        if !stored.iter().any(|row| row.version == m.version) {
            return Err(SchemaError::Behind {
                schema: name,
                version: m.version,
                description: m.description.to_string(),
            });
        }
    }
    let newest = stored.iter().map(|r| r.version).max().unwrap_or(0);
    Ok(Applied { newest, newer_than_build: newest > latest })
}

/// Applies this build's migrations that `pool`'s schema lacks, and returns the versions applied.
/// A schema already newer than the build (a rollback's older shopctl) is left as it is. MySQL's
/// migrator takes a lock, so two runs at once apply each migration once; SQLite's does not, and
/// the loser of a race fails on the table the winner made: it tries again and finds the work
/// done. A SQLite file is switched to WAL here, once.
pub async fn migrate(pool: &AnyPool, schema: Schema, dialect: Dialect) -> Result<Vec<i64>, SchemaError> {
    let built = schema.migrator(dialect);
    let migrator = Migrator { migrations: built.migrations.clone(), ignore_missing: true, ..Migrator::DEFAULT };
    let before: Vec<i64> = match applied(pool).await {
        Ok(rows) => rows.into_iter().map(|r| r.version).collect(),
        Err(e) if missing_table(&e) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    if dialect == Dialect::Sqlite {
        // WAL lets readers run beside the one writer; the file keeps the setting.
        sqlx::query("PRAGMA journal_mode = WAL").execute(pool).await?;
    }
    let mut tries = 1;
    loop {
        match migrator.run(pool).await {
            Err(MigrateError::ExecuteMigration(e, version)) if dialect == Dialect::Sqlite && tries < 5 => {
                tracing::info!(version, error = %e, "a migration failed; another run may be applying it, trying again");
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
            Ok(()) => break,
        }
    }
    Ok(built.iter().map(|m| m.version).filter(|v| !before.contains(v)).collect())
}

/// Connects to `url` (creating a SQLite file that is not there), applies this build's migrations
/// of `schema` and closes: [`migrate`] for one database named by its URL (tests, tools).
pub async fn migrate_url(url: &DbUrl, schema: Schema) -> Result<Vec<i64>, SchemaError> {
    let (dialect, options) = connect_options(url, Open::Create)
        .map_err(|e| SchemaError::Db(sqlx::Error::Configuration(e.to_string().into())))?;
    // One connection first: a database that is not there fails at once (a pool would retry
    // until its acquire timeout).
    sqlx::Connection::close(<sqlx::AnyConnection as sqlx::Connection>::connect_with(&options).await?).await?;
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect_with(options).await?;
    let applied = migrate(&pool, schema, dialect).await;
    pool.close().await;
    applied
}

struct AppliedRow {
    version: i64,
    success: bool,
    checksum: Vec<u8>,
}

/// The migrations sqlx has recorded as applied (its table `_sqlx_migrations`).
async fn applied(pool: &AnyPool) -> sqlx::Result<Vec<AppliedRow>> {
    // `success` is a BOOLEAN, which the Any driver does not map on SQLite: read as a number.
    let rows = sqlx::query(
        "SELECT version, CASE WHEN success THEN 1 ELSE 0 END AS ok, checksum FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let ok: i64 = r.try_get("ok")?;
            Ok(AppliedRow { version: r.try_get("version")?, success: ok != 0, checksum: r.try_get("checksum")? })
        })
        .collect()
}

/// Whether `e` says the migrations' table does not exist: a database never migrated.
fn missing_table(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let m = d.message();
            // MySQL 1146 (ER_NO_SUCH_TABLE); SQLite "no such table".
            d.code().as_deref() == Some("42S02") || m.contains("no such table") || m.contains("doesn't exist")
        }
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn sqlite(dir: &tempfile::TempDir) -> AnyPool {
        sqlx::any::install_default_drivers();
        let url = DbUrl::new(format!("sqlite://{}", dir.path().join("s.db").display()));
        let (_, options) = connect_options(&url, Open::Create).unwrap();
        sqlx::any::AnyPoolOptions::new().max_connections(1).connect_with(options).await.unwrap()
    }

    #[test]
    fn both_dialects_have_the_same_migrations() {
        for schema in [Schema::Auth, Schema::Shard] {
            let names =
                |d| schema.migrator(d).iter().map(|m| (m.version, m.description.to_string())).collect::<Vec<_>>();
            assert!(!names(Dialect::Sqlite).is_empty());
            assert_eq!(names(Dialect::Sqlite), names(Dialect::MySql), "{schema:?}");
        }
    }

    #[tokio::test]
    async fn a_service_runs_on_its_schema_or_a_newer_one_never_an_older_or_changed_one() {
        let dir = tempfile::tempdir().unwrap();
        let pool = sqlite(&dir).await;
        let e = check(&pool, Schema::Auth, Dialect::Sqlite).await.unwrap_err();
        assert!(matches!(e, SchemaError::Empty(_)) && e.to_string().contains("shopctl migrate"), "{e}");

        let applied = migrate(&pool, Schema::Auth, Dialect::Sqlite).await.unwrap();
        assert_eq!(applied.len(), Schema::Auth.migrator(Dialect::Sqlite).iter().count());
        assert!(migrate(&pool, Schema::Auth, Dialect::Sqlite).await.unwrap().is_empty(), "nothing twice");
        let ok = check(&pool, Schema::Auth, Dialect::Sqlite).await.unwrap();
        assert_eq!(ok, Applied { newest: Schema::Auth.latest(), newer_than_build: false });

        // The next release's expansion: a migration this build does not know, newer than its own.
        let next = Schema::Auth.latest() + 1;
        sqlx::query("ALTER TABLE users ADD COLUMN nickname VARCHAR(64)").execute(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?, 'next release', 1, x'00', 1)",
        )
        .bind(next)
        .execute(&pool)
        .await
        .unwrap();
        let ok = check(&pool, Schema::Auth, Dialect::Sqlite).await.unwrap();
        assert_eq!(ok, Applied { newest: next, newer_than_build: true });
        // An older shopctl's migrate leaves the newer schema alone.
        assert!(migrate(&pool, Schema::Auth, Dialect::Sqlite).await.unwrap().is_empty());

        // A migration of ours changed after it was applied, or one missing: refused.
        sqlx::query("UPDATE _sqlx_migrations SET checksum = x'01' WHERE version = 1").execute(&pool).await.unwrap();
        assert!(matches!(
            check(&pool, Schema::Auth, Dialect::Sqlite).await,
            Err(SchemaError::Changed { version: 1, .. })
        ));
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version <= 2").execute(&pool).await.unwrap();
        let e = check(&pool, Schema::Auth, Dialect::Sqlite).await.unwrap_err();
        assert!(matches!(e, SchemaError::Behind { version: 1, .. }), "{e}");
    }
}
