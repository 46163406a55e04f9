//! shopctl: one tool for shoppers (over HTTP to nginx) and operators (from the stack's config).
//!
//! A clap enum of subcommands, one file per subcommand under `commands/`, each with its `Args`
//! and `async fn run`. Exit codes: 0 ok, 1 failure, 2 usage (clap's own, and [`UsageError`]), 4 a
//! login is needed, 5 the gateway's certificate is not trusted ([`client::Untrusted`]).

pub(crate) mod archive;
pub mod backup;
pub(crate) mod catalog_file;
pub(crate) mod client;
pub(crate) mod commands;
pub mod credentials;
pub mod db;
pub(crate) mod health;
pub mod mover;
pub mod openapi;
pub mod output;
pub(crate) mod stack;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// shopgate's command line: shop from a terminal, or run the shop.
///
/// Shopper commands talk to the gateway (nginx) over HTTP; operator commands (shards, users,
/// catalog, tokens, nginx) read the stack config and go straight to its databases.
#[derive(Parser, Debug)]
#[command(
    name = "shopctl",
    version,
    propagate_version = true,
    arg_required_else_help = true,
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage, 4 a login is needed, 5 the shop's HTTPS certificate is not trusted (see --ca-file). The login is kept in $XDG_CONFIG_HOME/shopctl/credentials.json (mode 0600)."
)]
pub struct Cli {
    /// Print JSON (the same as --format json): lists as {"items": [...], "next": ...}, errors as
    /// {"error": {...}} on standard error.
    #[arg(long, global = true, conflicts_with = "format", help_heading = GLOBAL)]
    pub(crate) json: bool,
    /// table, tsv or json [default: table on a terminal, else tab-separated rows with a header].
    #[arg(long, global = true, value_enum, value_name = "FORMAT", help_heading = GLOBAL)]
    pub(crate) format: Option<output::Format>,
    /// The gateway's URL [default: the running stack's, else http://127.0.0.1:8080].
    #[arg(long, global = true, env = "SHOPCTL_URL", value_name = "URL", value_parser = gateway_url, help_heading = GLOBAL)]
    pub url: Option<String>,
    /// The stack's config file [default: var/shop.toml in this checkout or a parent folder].
    #[arg(long, global = true, env = "SHOP_CONFIG", value_name = "FILE", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// A CA certificate file (PEM) to trust for the gateway's HTTPS, besides the system's: a
    /// private or development CA (scripts/up --tls prints which).
    #[arg(long, global = true, env = "SHOPCTL_CA_FILE", value_name = "FILE", help_heading = GLOBAL)]
    pub ca_file: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The help section of the options every command takes, apart from each command's own.
const GLOBAL: &str = "Global options";

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create an account.
    Register(commands::register::Args),
    /// Log in and keep the token in your config folder (mode 0600).
    Login(commands::login::Args),
    /// Revoke the kept token on the server and forget it.
    Logout(commands::logout::Args),
    /// Show who the kept token belongs to.
    Whoami(commands::whoami::Args),
    /// Change your password: every earlier token is refused, and you are logged in again here.
    ChangePassword(commands::change_password::Args),
    /// Show or create your profile on your shard.
    #[command(subcommand)]
    Profile(commands::profile::ProfileCommand),
    /// List the catalog (no login needed).
    Products(commands::products::Args),
    /// List the catalog's categories (no login needed).
    Categories(commands::categories::Args),
    /// Place, list, show and cancel your orders.
    #[command(subcommand)]
    Orders(commands::orders::OrdersCommand),
    /// Check every part of the stack and say what is wrong and what to do (exit 1 if anything is).
    Doctor(commands::doctor::Args),
    /// Operators: shard health and misplaced rows, straight from the databases.
    #[command(subcommand)]
    Shards(commands::shards::ShardsCommand),
    /// Operators: apply this release's schema to every database (before a rollout).
    Migrate(commands::migrate::Args),
    /// Operators: a hot backup of every database (`list`: the backups; `archive`: the binlog
    /// archiver).
    Backup(commands::backup::Args),
    /// Operators: databases back to a backup, or to a time or GTID after it.
    Restore(commands::restore::Args),
    /// Operators: the auth database's replica made its primary.
    #[command(subcommand)]
    Auth(commands::auth::AuthCommand),
    /// Operators: find, disable and enable accounts.
    #[command(subcommand)]
    Users(commands::users::UsersCommand),
    /// Operators: load products into every shard.
    #[command(subcommand)]
    Catalog(commands::catalog::CatalogCommand),
    /// Mint tokens with the stack's key (operators and tests).
    #[command(subcommand)]
    Tokens(commands::tokens::TokensCommand),
    /// Operators: make JWT keys, rotate the signing key without downtime, retire old keys.
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// Operators: write a stack config (what `scripts/up` runs).
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
    /// nginx config generated from the stack config and shard map.
    #[command(subcommand)]
    Nginx(commands::nginx::NginxCommand),
    /// A Prometheus config scraping every part of the stack (for `scripts/up --monitoring`).
    #[command(subcommand)]
    Monitoring(commands::monitoring::MonitoringCommand),
    /// Print the public API's OpenAPI 3 description (what nginx serves at /openapi.json).
    Openapi(commands::openapi::Args),
    /// Print shell completions.
    Completions(commands::completions::Args),
}

/// `--url`: an http:// or https:// URL with a host, without its trailing slashes.
fn gateway_url(text: &str) -> Result<String, String> {
    let bad = || format!("{text:?} is not an http:// or https:// URL (like http://127.0.0.1:8080)");
    let url = reqwest::Url::parse(text).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// A mistake in how the command was called, found after parsing: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Context {
        format: output::Format::choose(cli.format, cli.json),
        url: cli.url,
        config: cli.config,
        ca_file: cli.ca_file,
    };
    match cli.command {
        Command::Register(a) => commands::register::run(&ctx, a).await,
        Command::Login(a) => commands::login::run(&ctx, a).await,
        Command::Logout(a) => commands::logout::run(&ctx, a).await,
        Command::Whoami(a) => commands::whoami::run(&ctx, a).await,
        Command::ChangePassword(a) => commands::change_password::run(&ctx, a).await,
        Command::Profile(c) => commands::profile::run(&ctx, c).await,
        Command::Products(a) => commands::products::run(&ctx, a).await,
        Command::Categories(a) => commands::categories::run(&ctx, a).await,
        Command::Orders(c) => commands::orders::run(&ctx, c).await,
        Command::Doctor(a) => commands::doctor::run(&ctx, a).await,
        Command::Shards(c) => commands::shards::run(&ctx, c).await,
        Command::Migrate(a) => commands::migrate::run(&ctx, a).await,
        Command::Backup(a) => commands::backup::run(&ctx, a).await,
        Command::Restore(a) => commands::restore::run(&ctx, a).await,
        Command::Users(c) => commands::users::run(&ctx, c).await,
        Command::Auth(c) => commands::auth::run(&ctx, c).await,
        Command::Catalog(c) => commands::catalog::run(&ctx, c).await,
        Command::Tokens(c) => commands::tokens::run(&ctx, c).await,
        Command::Keys(c) => commands::keys::run(&ctx, c).await,
        Command::Config(c) => commands::config::run(&ctx, c).await,
        Command::Nginx(c) => commands::nginx::run(&ctx, c).await,
        Command::Monitoring(c) => commands::monitoring::run(&ctx, c).await,
        Command::Openapi(a) => commands::openapi::run(a),
        Command::Completions(a) => commands::completions::run(a),
    }
}

/// What every command may need from the global flags.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// How answers are printed; commands with a table of their own print it under `Table`.
    pub(crate) format: output::Format,
    pub url: Option<String>,
    pub config: Option<PathBuf>,
    /// `--ca-file`: a CA trusted for the gateway's certificate besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// One line for the user: the error and its causes, without a backtrace.
pub fn error_line(e: &anyhow::Error) -> String {
    one_line(&format!("{e:#}"))
}

/// A clap error (bad usage) as one line: the message, clap's tip if any, and where to read more.
pub fn usage_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut parts = Vec::new();
    let mut usage = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(u) = line.strip_prefix("Usage:") {
            usage = Some(u.trim().to_owned());
        } else if line.starts_with("For more information") {
            continue;
        } else {
            parts.push(line.strip_prefix("error:").map_or(line, str::trim).to_owned());
        }
    }
    let mut line = one_line(&parts.join("; ")).replace(":;", ":");
    if let Some(u) = usage {
        line.push_str(&format!(" (usage: {u}; see --help)"));
    }
    line
}

/// Collapses newlines and runs of spaces, so an error is always one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// 2 for a usage mistake, 4 when a login is needed (none, expired or refused), 5 when the
/// gateway's certificate is not trusted, 1 for the rest.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<UsageError>().is_some() {
        2
    } else if e.downcast_ref::<client::LoginNeeded>().is_some() {
        4
    } else if e.downcast_ref::<client::Untrusted>().is_some() {
        5
    } else {
        1
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    #[test]
    fn cli_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn global_options_have_a_help_section_of_their_own() {
        for args in
            [&["shopctl", "register", "--help"][..], &["shopctl", "orders", "list", "--help"], &["shopctl", "--help"]]
        {
            let help = super::Cli::try_parse_from(args).unwrap_err().render().to_string();
            let (own, global) = help.split_once("\nGlobal options:\n").unwrap_or_else(|| panic!("{args:?}:\n{help}"));
            for flag in ["--json", "--format <FORMAT>", "--url <URL>", "--config <FILE>", "--ca-file <FILE>"] {
                assert!(global.contains(flag) && !own.contains(flag), "{args:?}: {flag} not apart:\n{help}");
            }
            assert!(own.contains("-h, --help"), "{args:?}: the command's own options:\n{help}");
        }
    }

    #[test]
    fn usage_errors_are_one_line() {
        let e = super::Cli::try_parse_from(["shopctl", "register"]).unwrap_err();
        let line = super::usage_line(&e);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("<EMAIL>") && line.contains("usage: shopctl register"), "{line}");
        let e = super::Cli::try_parse_from(["shopctl", "ordres"]).unwrap_err();
        assert!(super::usage_line(&e).contains("orders"), "{}", super::usage_line(&e));
    }
}
