//! Finding the stack: its config file and the gateway URL.

use std::path::{Path, PathBuf};

use shopgate_core::config::{Config, ConfigError, DbUrl};
use shopgate_core::ShardMap;

use crate::db::Db;
use crate::Context;

/// Where `scripts/up` writes the running stack's config, relative to the checkout.
pub(crate) const STACK_CONFIG: &str = "var/shop.toml";
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// `--config` / `SHOP_CONFIG`, else `var/shop.toml` in this folder or the nearest parent that has one.
pub(crate) fn config_path(ctx: &Context) -> Option<PathBuf> {
    if let Some(p) = &ctx.config {
        return Some(p.clone());
    }
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors().map(|d| d.join(STACK_CONFIG)).find(|p| p.is_file())
}

/// Loads the stack config, or says how to point at one.
pub(crate) fn load_config(ctx: &Context) -> anyhow::Result<Config> {
    let path = config_path(ctx).ok_or_else(|| {
        anyhow::anyhow!(
            "no stack config found: start the stack with scripts/up, or pass --config FILE (or SHOP_CONFIG)"
        )
    })?;
    load_from(&path)
}

pub(crate) fn load_from(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| match e {
        ConfigError::Read { .. } => {
            anyhow::anyhow!("{e}: pass --config FILE (or SHOP_CONFIG) naming the stack's shop.toml, or start the stack with scripts/up")
        }
        other => anyhow::Error::new(other),
    })
}

/// The environment variable naming an operator role's URL for `database` (`auth`, or a shard's
/// name): `SHOP_MIGRATOR_AUTH_URL`, `SHOP_BACKUP_SHARD_A_URL` (the shard's name in upper case, `-`
/// as `_`). Operator credentials come from the environment, never the command line, which every
/// user of the host can read.
pub(crate) fn operator_var(role: &str, database: &str) -> String {
    match database {
        "auth" => format!("SHOP_{role}_AUTH_URL"),
        shard => format!("SHOP_{role}_SHARD_{}_URL", shard.to_ascii_uppercase().replace('-', "_")),
    }
}

/// `role`'s URL for `database` from the environment ([`operator_var`]), checked like the config's
/// own; where unset, `own` (the config's URL: enough on SQLite, where one user does everything).
pub(crate) fn operator_url(config: &Config, role: &str, database: &str, own: &DbUrl) -> anyhow::Result<DbUrl> {
    let var = operator_var(role, database);
    match std::env::var(&var) {
        Ok(url) if !url.is_empty() => Ok(config.outside_database_url(&var, DbUrl::new(url))?),
        _ => Ok(own.clone()),
    }
}

/// The auth database, where the current shard map lives.
pub(crate) async fn control_db(config: &Config) -> anyhow::Result<Db> {
    Ok(Db::connect(&config.verifier.database_url, "the auth database").await?)
}

/// The shard map in force: the current version in the auth database (version 1 is the config's
/// `buckets`, stored there the first time any part needs it).
pub(crate) async fn current_map(config: &Config) -> anyhow::Result<ShardMap> {
    let db = control_db(config).await?;
    let map = crate::db::bounded_control(shopgate_core::control::load_or_seed(&db.pool, &config.shard_map)).await;
    db.close().await;
    Ok(map?)
}

/// `--url` / `SHOPCTL_URL`, else the running stack's nginx address, else the default. Without
/// either, the default is a guess (whatever answers there is talked to, logins sent and kept for
/// it), so shopctl says on standard error, once, where it is about to connect.
pub(crate) fn base_url(ctx: &Context) -> String {
    if let Some(u) = &ctx.url {
        return u.trim_end_matches('/').to_owned();
    }
    let why = match config_path(ctx).map(|p| Config::load(&p)) {
        Some(Ok(c)) => return c.nginx.url(),
        Some(Err(e)) => format!("the stack config is unusable ({e}) and no --url"),
        None => "no stack config found and no --url".to_owned(),
    };
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| crate::output::note(format_args!("note: {why}: using {DEFAULT_URL}")));
    DEFAULT_URL.to_owned()
}
