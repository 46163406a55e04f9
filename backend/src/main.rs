//! `backend --config shop.toml --shard a [--instance N]`: serves one shard's shop API until SIGINT
//! or SIGTERM, as that shard's process N (on `[shards.a] listen[N]`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shopgate_backend::{build_instance, serve, shard_listen};
use shopgate_core::config::{Config, KeyUse};
use shopgate_core::service::{init_logging, reopen_output_on_usr1, shutdown_signal};

#[derive(Parser)]
#[command(version, about = "One shard's shop API: catalog, orders, profiles.")]
struct Args {
    /// The stack's config file.
    #[arg(long, env = "SHOP_CONFIG")]
    config: PathBuf,
    /// The `[shards.NAME]` this process serves.
    #[arg(long)]
    shard: String,
    /// Which of the shard's backend processes this is: it listens on the shard's Nth `listen`
    /// address, and N is part of every order id it mints.
    #[arg(long, default_value_t = 0, value_name = "N")]
    instance: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    shopgate_core::files::private_umask();
    let args = Args::parse();
    init_logging("info,sqlx=warn");
    reopen_output_on_usr1();
    // A backend only checks tokens: it loads the public key set and refuses any private key.
    let loaded = Config::load_for(&args.config, KeyUse::Verify).map_err(|e| e.to_string());
    let checked = loaded.and_then(|c| shard_listen(&c, &args.shard, args.instance).map(|addr| (c, addr)));
    let Ok((config, listen)) = checked.inspect_err(|e| eprintln!("backend: {e}")) else {
        return ExitCode::from(2); // a config problem: one line, like clap's usage errors
    };
    let served = match build_instance(config, &args.shard, args.instance, listen).await {
        Ok(app) => {
            tracing::info!(shard = %args.shard, instance = args.instance, addr = %app.local_addr(), "listening");
            serve(app, shutdown_signal()).await
        }
        Err(e) => Err(e),
    };
    served.map(|()| ExitCode::SUCCESS).unwrap_or_else(|e| {
        eprintln!("backend: {e:#}");
        ExitCode::FAILURE
    })
}
