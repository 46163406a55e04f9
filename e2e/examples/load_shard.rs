//! Loads a shard's primary with generated shoppers at a real shop's size (`shopgate_e2e::shard_data`:
//! 10 orders a user, 2.5 items an order, a key an order), through the real schema: start the
//! shard's backend first, so its migrations have run.
//!
//! ```sh
//! cargo build --release -p shopgate-e2e --example load_shard
//! target/release/examples/load_shard --url "$MARIADB_A_PRIMARY_URL" --orders 1000000 --buckets even
//! ```
//! Prints what it wrote as one JSON line. Loading again with `--first-user` past the last load's
//! users adds more.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use shopgate_core::config::DbUrl;
use shopgate_core::db::{connect_options, Dialect, Open};
use shopgate_core::shardmap::parse_buckets;
use shopgate_e2e::shard_data::{load, ORDERS_PER_USER};
use sqlx::any::AnyPoolOptions;
use sqlx::Connection as _;

/// `--buckets`, parsed: one value, not a list of them to clap.
#[derive(Clone)]
struct Buckets(Vec<u16>);

#[derive(Parser)]
struct Args {
    /// The shard's primary (`mysql://…` or `sqlite://…`); also from SHOP_LOAD_URL, to keep a
    /// password off the command line.
    #[arg(long, env = "SHOP_LOAD_URL", hide_env_values = true)]
    url: String,
    /// Orders to write (users: a tenth of that).
    #[arg(long)]
    orders: u64,
    /// The buckets the users go to: the shard's (`even`, `0-499`, …).
    #[arg(long, default_value = "even", value_parser = |s: &str| parse_buckets(s).map(Buckets))]
    buckets: Buckets,
    /// The shard's number (the low bits of its order ids).
    #[arg(long, default_value_t = 0)]
    shard_number: u8,
    /// The first generated user's sequence number (to add to an earlier load).
    #[arg(long, default_value_t = 0)]
    first_user: u64,
    /// Connections writing at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    connections: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let url = DbUrl::new(args.url.clone());
    let (dialect, options) = connect_options(&url, Open::Existing)?;
    // One connection by hand first: a pool that cannot connect says only that it timed out.
    let first = sqlx::AnyConnection::connect_with(&options)
        .await
        .with_context(|| format!("connecting to the shard's primary ({url})"))?;
    let _ = first.close().await;
    let db = AnyPoolOptions::new()
        .max_connections(args.connections)
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to the shard's primary ({url})"))?;
    // The real schema, migrated by the shard's backend: the bucket column is the newest part the
    // loader writes.
    sqlx::query("SELECT bucket FROM orders LIMIT 0")
        .execute(&db)
        .await
        .context("the shard's tables are not there or not migrated: start its backend first")?;
    let users = args.orders.div_ceil(ORDERS_PER_USER);
    let loaded = load(
        &db,
        dialect == Dialect::MySql,
        &args.buckets.0,
        args.shard_number,
        args.first_user,
        users,
        args.connections as usize,
    )
    .await
    .context("writing the rows")?;
    println!(
        "{}",
        serde_json::json!({
            "users": loaded.users, "orders": loaded.orders, "items": loaded.items, "keys": loaded.keys,
            "rows": loaded.rows(), "seconds": (loaded.seconds * 10.0).round() / 10.0,
            "rows_per_second": (loaded.rows() as f64 / loaded.seconds).round(),
            "next_first_user": args.first_user + users,
        })
    );
    Ok(())
}
