//! shopctl: one tool for shoppers (over HTTP to nginx) and operators (from the stack's config).
//!
//! A clap enum of subcommands, one file per subcommand under `commands/`, each with its `Args`
//! and `async fn run`. Exit codes: 0 ok, 1 failure, 2 usage (clap's own, and [`UsageError`]).

pub mod client;
pub mod commands;
pub mod credentials;
pub mod output;
pub mod stack;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// shopgate's command line: shop from a terminal, or run the shop.
#[derive(Parser, Debug)]
#[command(name = "shopctl", version, propagate_version = true, arg_required_else_help = true)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// The gateway's URL [default: the running stack's, else http://127.0.0.1:8080].
    #[arg(long, global = true, env = "SHOPCTL_URL", value_name = "URL")]
    pub url: Option<String>,
    /// The stack's config file [default: var/shop.toml in this checkout or a parent folder].
    #[arg(long, global = true, env = "SHOP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an account.
    Register(commands::register::Args),
    /// Log in and keep the token in your config folder (mode 0600).
    Login(commands::login::Args),
    /// Forget the kept token.
    Logout(commands::logout::Args),
    /// Show who the kept token belongs to.
    Whoami(commands::whoami::Args),
    /// List the catalog.
    Products(commands::products::Args),
    /// Place, list, show and cancel your orders.
    #[command(subcommand)]
    Orders(commands::orders::OrdersCommand),
    /// Mint tokens with the stack's key (operators and tests).
    #[command(subcommand)]
    Tokens(commands::tokens::TokensCommand),
    /// nginx config generated from the stack config and shard map.
    #[command(subcommand)]
    Nginx(commands::nginx::NginxCommand),
    /// Print shell completions.
    Completions(commands::completions::Args),
}

/// A mistake in how the command was called, found after parsing: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Context { json: cli.json, url: cli.url, config: cli.config };
    match cli.command {
        Command::Register(a) => commands::register::run(&ctx, a).await,
        Command::Login(a) => commands::login::run(&ctx, a).await,
        Command::Logout(a) => commands::logout::run(&ctx, a).await,
        Command::Whoami(a) => commands::whoami::run(&ctx, a).await,
        Command::Products(a) => commands::products::run(&ctx, a).await,
        Command::Orders(c) => commands::orders::run(&ctx, c).await,
        Command::Tokens(c) => commands::tokens::run(&ctx, c).await,
        Command::Nginx(c) => commands::nginx::run(&ctx, c).await,
        Command::Completions(a) => commands::completions::run(a),
    }
}

/// What every command may need from the global flags.
#[derive(Debug, Clone)]
pub struct Context {
    pub json: bool,
    pub url: Option<String>,
    pub config: Option<PathBuf>,
}

/// One line for the user: the error and its causes, without a backtrace.
pub fn error_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
}

pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<UsageError>().is_some() {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
