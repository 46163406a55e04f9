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

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed run

use clap::Parser;
use shopgate_core::config::DbUrl;
use shopgate_core::shardmap::parse_buckets;
use shopgate_e2e::shard_data::{load, ORDERS_PER_USER};

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
    #[arg(long, default_value = "even")]
    buckets: String,
    /// The shard's number (the low bits of its order ids).
    #[arg(long, default_value_t = 0)]
    shard_number: u8,
    /// The first generated user's sequence number (to add to an earlier load).
    #[arg(long, default_value_t = 0)]
    first_user: u64,
    /// Connections writing at once.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let buckets = parse_buckets(&args.buckets).unwrap_or_else(|e| panic!("--buckets {:?}: {e}", args.buckets));
    let url = DbUrl::new(args.url.clone());
    let mysql = args.url.starts_with("mysql");
    let (_, options) = shopgate_core::db::connect_options(&url, shopgate_core::db::Open::Existing).unwrap();
    let db = shopgate_e2e::cli::test_pool::<sqlx::Any>(options, args.connections as u32, "the shard's primary").await;
    let users = args.orders.div_ceil(ORDERS_PER_USER);
    let loaded = load(&db, mysql, &buckets, args.shard_number, args.first_user, users, args.connections).await.unwrap();
    println!(
        "{}",
        serde_json::json!({
            "users": loaded.users, "orders": loaded.orders, "items": loaded.items, "keys": loaded.keys,
            "rows": loaded.rows(), "seconds": (loaded.seconds * 10.0).round() / 10.0,
            "rows_per_second": (loaded.rows() as f64 / loaded.seconds).round(),
            "next_first_user": args.first_user + users,
        })
    );
}
