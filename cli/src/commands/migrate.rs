//! `shopctl migrate [--check]`: the schema step of a rollout, run before the services start.
//!
//! Applies this release's migrations (`store/migrations/`) to the auth database and every shard's
//! primary (replicas copy them), and stores the config's shard map as version 1 where none is
//! stored yet. Nothing else changes a schema: the services only check at start that they can run
//! on it. Migrations are written expand first, contract a release later (README, "Upgrades"), so
//! the release before this one keeps running on the schema this leaves.
//!
//! Whose credentials: the migrator's, which the services do not have. For each database,
//! `SHOP_MIGRATOR_AUTH_URL` or `SHOP_MIGRATOR_SHARD_<NAME>_URL` (the shard's name in upper case,
//! `-` as `_`) from the environment, never the command line (which every user of the host can
//! read); where unset, the config's own URL, which is enough where the services' user may change
//! the schema (the SQLite default). `--check` changes nothing and exits 1 if any database lacks a
//! migration of this release.

use serde_json::{json, Value};
use shopgate_core::config::{Config, DbUrl};
use shopgate_store::schema::{self, Schema, SchemaError};

use crate::db::{bounded_control, Db};
use crate::output::list;
use crate::{stack, Context};

#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Change nothing: say what each database lacks (exit 1 if any lacks a migration).
    #[arg(long)]
    check: bool,
}

/// Every database of the stack: its name, schema and the URL to use (the migrator's if given,
/// else the config's own).
fn databases(config: &Config) -> anyhow::Result<Vec<(String, Schema, DbUrl)>> {
    let given = |database: &str, own: &DbUrl| stack::operator_url(config, "MIGRATOR", database, own);
    let mut all = vec![("auth".to_owned(), Schema::Auth, given("auth", &config.verifier.database_url)?)];
    for shard in &config.shards {
        let name = shard.name.to_string();
        let url = given(&name, &shard.primary)?;
        all.push((name, Schema::Shard, url));
    }
    Ok(all)
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let config = stack::load_config(ctx)?;
    let mut rows = Vec::new();
    let mut behind = Vec::new();
    for (name, schema, url) in databases(&config)? {
        let what = if name == "auth" { "the auth database".to_owned() } else { format!("shard {name}'s primary") };
        let db = if args.check { Db::connect(&url, &what).await? } else { Db::create(&url, &what).await? };
        let result = migrate_one(&db, schema, args.check).await;
        let outcome = match result {
            Ok(applied) => applied,
            Err(e) => {
                db.close().await;
                return Err(anyhow::anyhow!("{what} ({url}): {e}"));
            }
        };
        if schema == Schema::Auth && !args.check {
            // Version 1 of the map: the config's buckets, where no map is stored yet.
            bounded_control(shopgate_core::control::load_or_seed(&db.pool, &config.shard_map)).await?;
        }
        db.close().await;
        if args.check && outcome.lacking.is_some() {
            behind.push(name.clone());
        }
        rows.push((name, outcome));
    }
    print(ctx, &rows, args.check);
    if !behind.is_empty() {
        anyhow::bail!("{} lack(s) migrations of this release: run `shopctl migrate`", behind.join(", "));
    }
    Ok(())
}

/// What one database had and got.
struct Outcome {
    applied: Vec<i64>,
    newest: i64,
    /// `--check`: the first migration of this build it lacks.
    lacking: Option<i64>,
}

async fn migrate_one(db: &Db, schema: Schema, check_only: bool) -> Result<Outcome, SchemaError> {
    if check_only {
        return match schema::check(&db.pool, schema, db.dialect).await {
            Ok(a) => Ok(Outcome { applied: Vec::new(), newest: a.newest, lacking: None }),
            Err(SchemaError::Empty(_)) => Ok(Outcome { applied: Vec::new(), newest: 0, lacking: Some(1) }),
            Err(SchemaError::Behind { version, .. }) => {
                Ok(Outcome { applied: Vec::new(), newest: 0, lacking: Some(version) })
            }
            Err(e) => Err(e),
        };
    }
    let applied = schema::migrate(&db.pool, schema, db.dialect).await?;
    let now = schema::check(&db.pool, schema, db.dialect).await?;
    Ok(Outcome { applied, newest: now.newest, lacking: None })
}

fn print(ctx: &Context, rows: &[(String, Outcome)], check_only: bool) {
    let items = rows
        .iter()
        .map(|(name, o)| {
            let state = match (check_only, o.lacking, o.applied.as_slice()) {
                (true, Some(v), _) => format!("lacks migration {v}"),
                (true, None, _) | (false, _, []) => "up to date".to_owned(),
                (false, _, applied) => {
                    format!("applied {}", applied.iter().map(i64::to_string).collect::<Vec<_>>().join(", "))
                }
            };
            json!({ "database": name, "state": state, "newest": o.newest, "applied": o.applied, "lacking": o.lacking })
        })
        .collect();
    ctx.format.print_in(&list(items, Value::Null), &["database", "state", "newest"]);
}
