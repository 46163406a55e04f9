//! `shopctl config init`: writes a stack's `shop.toml` (and its development key), as `scripts/up`
//! does on every start. The file's layout is `shopgate_core::config::ConfigBuilder`'s, the one
//! writer the tests use too.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::json;
use shopgate_core::config::{ensure_dev_key, ConfigBuilder, DEV_KEY_FILE};

use crate::output::Format;
use crate::{Context, UsageError};

#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCommand {
    /// Write a stack config: nginx, the verifiers and shards `a` (even buckets) and `b` (odd), with
    /// SQLite files beside it unless told otherwise, and a random HS256 key in `jwt.key` if there is
    /// none. Checks that what it wrote loads.
    Init(InitArgs),
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Values that must not appear on a command line (database passwords) can come from the \
environment instead, by the names every part reads at load time: SHOP__SHARDS__A__PRIMARY=mysql://… \
shopctl config init … writes that URL into the file.")]
pub(crate) struct InitArgs {
    /// The file to write (replaced if it exists; mode 0600).
    pub(crate) file: PathBuf,
    /// Where nginx listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub nginx: SocketAddr,
    /// Where a verifier listens (repeat for several).
    #[arg(long = "verifier", value_name = "ADDR", required = true)]
    pub verifiers: Vec<SocketAddr>,
    /// Where shard `a` listens (repeat for several backend processes of the shard, one address
    /// each: `backend --shard a --instance N` listens on the Nth).
    #[arg(long, value_name = "ADDR", required = true)]
    pub(crate) shard_a: Vec<SocketAddr>,
    /// Where shard `b` listens (repeat for several backend processes, as for `--shard-a`).
    #[arg(long, value_name = "ADDR", required = true)]
    pub(crate) shard_b: Vec<SocketAddr>,
    /// The folder, relative to the file, for the SQLite databases.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Any other setting, by its dotted key: `--set nginx.debug_headers=true`,
    /// `--set verifier.hash_workers=1` (a TOML value, else a string).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
}

pub async fn run(ctx: &Context, cmd: ConfigCommand) -> anyhow::Result<()> {
    let ConfigCommand::Init(a) = cmd;
    let mut builder = ConfigBuilder::new(a.nginx, &a.verifiers)
        .shard_processes("a", 0, "even", &a.shard_a)
        .shard_processes("b", 1, "odd", &a.shard_b);
    if let Some(dir) = a.data_dir {
        builder = builder.data_dir(dir);
    }
    for setting in &a.settings {
        let (key, value) =
            setting.split_once('=').ok_or_else(|| UsageError(format!("--set {setting}: expected KEY=VALUE")))?;
        builder = builder.set(key.trim(), value.trim());
    }
    builder = builder.apply_env(std::env::vars())?;
    let folder = a.file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(folder).with_context(|| format!("making {}", folder.display()))?;
    let key = folder.join(DEV_KEY_FILE);
    ensure_dev_key(&key).with_context(|| format!("writing {}", key.display()))?;
    let config = builder.write(&a.file)?;
    if ctx.format == Format::Json {
        ctx.format.print(&json!({ "config": a.file, "shards": config.shards.len() }));
    } else {
        println!("{}", a.file.display());
    }
    Ok(())
}
