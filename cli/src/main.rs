//! `shopctl`: the shopgate command line. See lib.rs.

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = shopctl::Cli::parse();
    match shopctl::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shopctl: {}", shopctl::error_line(&e));
            std::process::ExitCode::from(shopctl::exit_code(&e))
        }
    }
}
