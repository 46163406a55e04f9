//! `verifier`: the auth_request check and the auth API. See the crate docs in lib.rs.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use shopgate_core::config::Config;

/// The shopgate verifier: answers nginx's auth_request check and serves /auth/*.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The stack's config file.
    #[arg(long, env = "SHOP_CONFIG")]
    config: PathBuf,
    /// Address to bind, one of `verifier.listen` in the config (default: the first).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shopgate_core::files::private_umask();
    shopgate_core::service::init_logging("info,sqlx=warn");
    shopgate_core::service::reopen_output_on_usr1();
    let args = Args::parse();
    let run = async {
        let config = Config::load(&args.config)?;
        let addr = args.listen.unwrap_or(config.verifier.listen[0]);
        let app = shopgate_verifier::build(config, addr).await?;
        tracing::info!(addr = %app.local_addr(), socket = ?app.socket_path(), "verifier listening");
        app.serve(shopgate_core::service::shutdown_signal()).await
    };
    match run.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "verifier stopped");
            eprintln!("verifier: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
