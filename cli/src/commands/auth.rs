//! `shopctl auth promote`: the auth database's replica becomes its primary.
//!
//! The services need no restart and no config change: each probes both servers of
//! `verifier.database_url` / `database_replica_url` twice a second and writes only to the one that
//! is writable ([`shopgate_core::auth_db`]). So the promotion is two facts on the servers:
//! 1. the old primary is fenced (`read_only`), if it answers: it takes no write from then on, and
//!    the replica is first given what it had (`MASTER_GTID_WAIT`);
//! 2. the replica stops replicating, forgets its primary (`RESET SLAVE ALL`, which `scripts/mariadb`
//!    also reads as "promoted") and becomes writable.
//!
//! An old primary that is down cannot be fenced now: `scripts/mariadb` starts it read-only after a
//! promotion, and anything else that restarts it must too (two writable servers stop every write).
//! Both steps need an account with the rights to change them (`--replica-admin-url`,
//! `--primary-admin-url`): the services' own users cannot. Running it again is harmless.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::json;
use shopgate_core::config::DbUrl;
use sqlx::Row as _;

use crate::db::{bounded, Db};
use crate::output::{out, warn, Format};
use crate::Context;

#[derive(clap::Subcommand, Debug)]
pub(crate) enum AuthCommand {
    /// Make the auth replica the primary, fencing the old primary read-only if it answers.
    Promote(PromoteArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct PromoteArgs {
    /// The replica, as a user allowed to stop replication and change `read_only` (e.g. scripts/
    /// mariadb's MARIADB_AUTH_REPLICA_ADMIN_URL).
    #[arg(long, env = "SHOP_AUTH_REPLICA_ADMIN_URL", hide_env_values = true)]
    replica_admin_url: String,
    /// The old primary, as such a user, to fence it; left out or down, it is not fenced now.
    #[arg(long, env = "SHOP_AUTH_PRIMARY_ADMIN_URL", hide_env_values = true)]
    primary_admin_url: Option<String>,
}

/// How long the replica may take to apply what a fenced old primary had.
const CATCH_UP: Duration = Duration::from_secs(30);

pub async fn run(ctx: &Context, cmd: AuthCommand) -> anyhow::Result<()> {
    match cmd {
        AuthCommand::Promote(args) => promote(ctx, args).await,
    }
}

async fn promote(ctx: &Context, args: PromoteArgs) -> anyhow::Result<()> {
    let replica = Db::connect(&DbUrl::new(args.replica_admin_url), "the auth replica").await?;
    let fenced = match &args.primary_admin_url {
        Some(url) => fence(&replica, url).await?,
        None => None,
    };
    for sql in ["STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0"] {
        bounded(sqlx::query(sql).execute(&replica.pool))
            .await
            .map_err(|e| anyhow::anyhow!("{sql} on the replica: {}", replica.explain(&e)))?;
    }
    let position = gtid_position(&replica).await?;
    replica.close().await;
    if ctx.format != Format::Table {
        ctx.format.print(&json!({
            "promoted": true, "position": position,
            "old_primary_fenced": fenced.is_some(),
        }));
    } else {
        out(format_args!(
            "The auth replica is the primary now (GTID position {position}); the services write to it within a second."
        ));
        match &fenced {
            Some(at) => out(format_args!("The old primary is fenced read-only (it had {at}).")),
            None => warn(format_args!(
                "the old primary was not fenced (down, or no --primary-admin-url): start it read-only \
                 (scripts/mariadb does), never writable, or the services stop writing to either"
            )),
        }
        out(format_args!(
            "To make the old primary the new replica: docs/operations.md, \"The auth database fails over\"."
        ));
    }
    Ok(())
}

/// Fences the old primary read-only and waits until the replica has what it had: its position,
/// or `None` if it does not answer (it is down: nothing more can reach it).
async fn fence(replica: &Db, url: &str) -> anyhow::Result<Option<String>> {
    let primary = match Db::connect(&DbUrl::new(url), "the old auth primary").await {
        Ok(db) => db,
        Err(e) => {
            warn(format_args!("{e}; going on without fencing it"));
            return Ok(None);
        }
    };
    bounded(sqlx::query("SET GLOBAL read_only = 1").execute(&primary.pool))
        .await
        .map_err(|e| anyhow::anyhow!("fencing the old primary: {}", primary.explain(&e)))?;
    let at = gtid_position(&primary).await?;
    primary.close().await;
    let waited: i64 = sqlx::query_scalar("SELECT CAST(MASTER_GTID_WAIT(?, ?) AS SIGNED)")
        .bind(&at)
        .bind(CATCH_UP.as_secs_f64())
        .fetch_one(&replica.pool)
        .await
        .map_err(|e| anyhow::anyhow!("waiting for the replica to catch up: {}", replica.explain(&e)))?;
    anyhow::ensure!(
        waited == 0,
        "the replica did not apply the old primary's position {at} within {} s; the old primary stays fenced \
         read-only and nothing is promoted: look at the replica's SHOW SLAVE STATUS, then run this again",
        CATCH_UP.as_secs()
    );
    Ok(Some(at))
}

async fn gtid_position(db: &Db) -> anyhow::Result<String> {
    let row = bounded(sqlx::query("SELECT CAST(@@gtid_binlog_pos AS CHAR(255)) AS pos").fetch_one(&db.pool))
        .await
        .map_err(|e| anyhow::anyhow!("reading the GTID position: {}", db.explain(&e)))?;
    row.try_get("pos").context("the GTID position")
}
