//! `shopctl config`: writing a stack's `shop.toml` (and its development key), as `scripts/up`
//! does on every start, and reading back its shape. The file's layout is
//! `shopgate_core::config::ConfigBuilder`'s, the one writer the tests use too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{json, Value};
use shopgate_core::config::{
    default_public_keys_file, ensure_dev_key, ConfigBuilder, DEV_KEYS_FILE, DEV_KEY_FILE, DEV_PUBLIC_KEYS_FILE,
};

use crate::commands::keys::{ensure_key_set, Algorithm};

use crate::output::Format;
use crate::{stack, Context, UsageError};

#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCommand {
    /// Write a stack config: nginx, the verifiers and the shards, with SQLite files beside it
    /// unless told otherwise, and its keys beside it if there are none: an EdDSA key set
    /// (`jwt-keys.json`, the verifiers') and its public set (`jwt-keys.public.json`, the
    /// backends'), or with `--algorithm HS256` a random key in `jwt.key`. A new file's
    /// first shard owns the even buckets and its second the odd ones (a lone shard owns them all);
    /// a shard added later owns none until `shards move`. Checks that what it wrote loads.
    Init(InitArgs),
    /// The stack's shards, one row each: name, number, backend processes, and the buckets the
    /// config started them with (the map in force is `shards status`'s).
    Shards,
    /// Check the config against the shard map in force: every shard that owns buckets must be in
    /// it. Exit 1, naming the shard and its buckets, if one is not.
    Check,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Values that must not appear on a command line (database passwords) can come from the \
environment instead, by the names every part reads at load time: SHOP__SHARDS__A__PRIMARY=mysql://… \
shopctl config init … writes that URL into the file.")]
pub(crate) struct InitArgs {
    /// The file to write (replaced if it exists, unless --keep; mode 0600).
    pub(crate) file: PathBuf,
    /// Where nginx listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub nginx: SocketAddr,
    /// Where a verifier listens (repeat for several).
    #[arg(long = "verifier", value_name = "ADDR", required = true)]
    pub verifiers: Vec<SocketAddr>,
    /// A shard and where one of its backend processes listens, `a=127.0.0.1:9001`; repeat the
    /// shard for several processes (`backend --shard a --instance N` listens on its Nth).
    #[arg(long = "shard", value_name = "NAME=ADDR", required = true, value_parser = shard_address)]
    pub(crate) shards: Vec<(String, SocketAddr)>,
    /// If FILE exists, keep it: its shards (numbers, buckets, settings) and every other setting
    /// stay; the addresses and the databases given here replace its own. Each of its shards must
    /// be given an address: a shard is never dropped.
    #[arg(long)]
    pub(crate) keep: bool,
    /// The folder, relative to the file, for the SQLite databases.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Any other setting, by its dotted key: `--set nginx.debug_headers=true`,
    /// `--set verifier.hash_workers=1` (a TOML value, else a string).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// A new file's token algorithm. EdDSA: only the verifiers hold a key that signs, the backends
    /// the public set. HS256: one secret that every process holds, so any process that checks
    /// tokens can mint them (for a single host). A kept file keeps its own.
    #[arg(long, value_enum, ignore_case = true, default_value = "EdDSA")]
    pub(crate) algorithm: Algorithm,
}

/// `--shard NAME=ADDR`.
fn shard_address(text: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) =
        text.split_once('=').ok_or_else(|| format!("{text:?}: expected NAME=ADDR, like a=127.0.0.1:9001"))?;
    let name = shopgate_core::ShardName::parse(name)?;
    let addr = addr.parse().map_err(|_| format!("{addr:?} is not an address like 127.0.0.1:9001"))?;
    Ok((name.as_str().to_owned(), addr))
}

pub async fn run(ctx: &Context, cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Init(a) => init(ctx, a),
        ConfigCommand::Shards => shards(ctx),
        ConfigCommand::Check => check(ctx).await,
    }
}

fn init(ctx: &Context, a: InitArgs) -> anyhow::Result<()> {
    // The shards in the order first given, each with its processes' addresses.
    let mut shards: Vec<(String, Vec<SocketAddr>)> = Vec::new();
    for (name, addr) in a.shards {
        match shards.iter_mut().find(|(n, _)| *n == name) {
            Some((_, addrs)) => addrs.push(addr),
            None => shards.push((name, vec![addr])),
        }
    }
    let mut builder = if a.keep && a.file.exists() {
        let kept = ConfigBuilder::from_file(&a.file)?;
        let given: BTreeMap<&str, ()> = shards.iter().map(|(n, _)| (n.as_str(), ())).collect();
        if let Some(missing) = kept.shard_names().into_iter().find(|n| !given.contains_key(n.as_str())) {
            return Err(UsageError(format!(
                "{} has shard {missing}: give it an address (--shard {missing}=ADDR); a kept shard is never dropped",
                a.file.display()
            ))
            .into());
        }
        let mut builder = kept.listen(a.nginx, &a.verifiers).forget_databases();
        for (name, addrs) in &shards {
            builder = builder.shard_listen(name, addrs);
        }
        builder
    } else {
        let mut builder = ConfigBuilder::new(a.nginx, &a.verifiers);
        if a.algorithm == Algorithm::EdDsa {
            builder = builder.eddsa(DEV_KEYS_FILE).public_keys(DEV_PUBLIC_KEYS_FILE);
        }
        let owns = |i: usize| match (shards.len(), i) {
            (1, _) => "all",
            (_, 0) => "even",
            (_, 1) => "odd",
            _ => "",
        };
        for (i, (name, addrs)) in shards.iter().enumerate() {
            let number = u8::try_from(i).map_err(|_| UsageError("at most 256 shards".into()))?;
            builder = builder.shard_processes(name, number, owns(i), addrs);
        }
        builder
    };
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
    match (builder.jwt_setting("algorithm"), builder.jwt_setting("keys_file")) {
        (Some("EdDSA"), Some(keys)) => {
            let keys = folder.join(keys);
            let public = builder
                .jwt_setting("public_keys_file")
                .map_or_else(|| default_public_keys_file(&keys), |p| folder.join(p));
            ensure_key_set(&keys, &public)?;
        }
        _ => {
            let key = folder.join(DEV_KEY_FILE);
            ensure_dev_key(&key).with_context(|| format!("writing {}", key.display()))?;
        }
    }
    let config = builder.write(&a.file)?;
    if ctx.format == Format::Json {
        ctx.format.print(&json!({ "config": a.file, "shards": config.shards.len() }));
    } else {
        println!("{}", a.file.display());
    }
    Ok(())
}

/// `config shards`: what `scripts/up` reads to start every shard a config has.
fn shards(ctx: &Context) -> anyhow::Result<()> {
    let config = stack::load_config(ctx)?;
    let rows: Vec<Value> = config
        .shards
        .iter()
        .map(|s| {
            json!({
                "shard": s.name.as_str(),
                "number": s.number,
                "processes": s.listen.len(),
                "listen": s.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "config_buckets": s.buckets,
            })
        })
        .collect();
    ctx.format.print_in(&crate::output::list(rows, Value::Null), &["shard", "number", "processes", "config_buckets"]);
    Ok(())
}

/// `config check`: the config can serve the map in force.
async fn check(ctx: &Context) -> anyhow::Result<()> {
    let config = stack::load_config(ctx)?;
    let auth = &config.verifier.database_url;
    if auth.is_sqlite() && !std::path::Path::new(crate::db::sqlite_path(auth.expose())).exists() {
        // A stack never started (or its data removed): the map will be seeded from this config.
        ctx.format.print(&json!({"config": config.path, "map_version": null, "ok": true}));
        return Ok(());
    }
    let map = stack::current_map(&config).await?;
    config.check_owners(&map)?;
    if ctx.format == Format::Table {
        println!("{}: every shard of the shard map (version {}) is in it", config.path.display(), map.version());
    } else {
        ctx.format.print(&json!({"config": config.path, "map_version": map.version(), "ok": true}));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;

    use clap::Parser as _;
    use shopgate_core::config::{Config, KeyUse};

    use super::*;

    async fn init(file: &Path, more: &[&str]) -> anyhow::Result<()> {
        let f = file.to_str().unwrap();
        let mut argv = vec!["shopctl", "--json", "config", "init", f, "--verifier", "127.0.0.1:9000"];
        argv.extend_from_slice(&["--shard", "a=127.0.0.1:9001", "--shard", "b=127.0.0.1:9002"]);
        argv.extend_from_slice(more);
        crate::run(crate::Cli::try_parse_from(argv).unwrap()).await
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn a_new_stack_is_eddsa_with_its_backends_on_the_public_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shop.toml");
        init(&file, &[]).await.unwrap();
        let (keys, public) = (dir.path().join(DEV_KEYS_FILE), dir.path().join(DEV_PUBLIC_KEYS_FILE));
        assert_eq!((mode(&keys), mode(&public)), (0o600, 0o644));
        assert!(!dir.path().join(DEV_KEY_FILE).exists(), "an HS256 key beside an EdDSA stack");
        let verifier = Config::load_with_env(&file, []).unwrap();
        assert_eq!((verifier.jwt.keys().alg(), verifier.jwt.keys().can_sign()), ("EdDSA", true));
        let backend = Config::load_with_env_for(&file, [], KeyUse::Verify).unwrap();
        assert_eq!(backend.jwt.key_file(), Some(public.as_path()));
        assert!(!backend.jwt.keys().can_sign());
        // Kept across runs: the same keys, the public set in step.
        let before = std::fs::read_to_string(&keys).unwrap();
        std::fs::remove_file(&public).unwrap();
        init(&file, &["--keep"]).await.unwrap();
        assert_eq!(std::fs::read_to_string(&keys).unwrap(), before);
        assert!(Config::load_with_env_for(&file, [], KeyUse::Verify).is_ok());
    }

    #[tokio::test]
    async fn hs256_when_asked_and_a_kept_stack_keeps_its_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("shop.toml");
        init(&file, &["--algorithm", "HS256"]).await.unwrap();
        assert!(dir.path().join(DEV_KEY_FILE).exists() && !dir.path().join(DEV_KEYS_FILE).exists());
        assert_eq!(Config::load_with_env(&file, []).unwrap().jwt.keys().alg(), "HS256");
        init(&file, &["--keep"]).await.unwrap();
        assert_eq!(Config::load_with_env(&file, []).unwrap().jwt.keys().alg(), "HS256");
    }
}
