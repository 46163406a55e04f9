//! `shopctl nginx render`: the nginx config, generated from the stack config and its shard map.
//!
//! The template is `nginx/shopgate.conf.in`; this fills in the addresses, the switches and the
//! shard map, rendered by the same `ShardMap` the backends route with.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::json;
use shopgate_core::config::Config;

use crate::output::{out_raw, print_json};
use crate::{stack, Context};

const TEMPLATE: &str = include_str!("../../../nginx/shopgate.conf.in");

#[derive(Subcommand, Debug)]
pub enum NginxCommand {
    /// Print (or write) the nginx config for the stack.
    Render(RenderArgs),
}

#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// Only the shard map (two `map` blocks), for including in a config of your own.
    #[arg(long)]
    pub map_only: bool,
    /// Write to this file (atomically) instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub async fn run(ctx: &Context, cmd: NginxCommand) -> anyhow::Result<()> {
    let NginxCommand::Render(a) = cmd;
    let config = stack::load_config(ctx)?;
    let text = if a.map_only { shard_map(&config) } else { render(&config)? };
    match a.output {
        Some(path) => {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
            if ctx.json {
                print_json(&json!({"written": path}));
            }
        }
        None if ctx.json => print_json(&json!({"config": text})),
        None => out_raw(&text),
    }
    Ok(())
}

pub fn shard_map(config: &Config) -> String {
    config.shard_map.render_nginx_map("shop_user_id", "shop_shard")
}

/// The whole nginx config.
pub fn render(config: &Config) -> anyhow::Result<String> {
    let prefix = config.nginx.prefix.clone().unwrap_or_else(|| PathBuf::from("nginx"));
    let prefix = std::path::absolute(&prefix).unwrap_or(prefix);
    let prefix = prefix.to_str().context("the nginx prefix path is not UTF-8")?.to_owned();
    if prefix.is_empty() || prefix.contains(|c: char| c.is_whitespace() || "\"';{}$#\\".contains(c)) {
        anyhow::bail!("the nginx prefix {prefix:?} has characters nginx config cannot hold unquoted");
    }
    let workers = &config.nginx.worker_processes;
    if workers != "auto" && !workers.parse::<u16>().is_ok_and(|n| n > 0) {
        anyhow::bail!("nginx.worker_processes must be \"auto\" or a positive number, not {workers:?}");
    }
    let mut verifiers = String::new();
    for addr in &config.verifier.listen {
        let _ = writeln!(verifiers, "        server {addr};");
    }
    let mut shards = String::new();
    for s in &config.shards {
        let _ = writeln!(
            shards,
            "    upstream shard_{} {{\n        server {};\n        keepalive 32;\n    }}",
            s.name, s.listen
        );
    }
    let indent = |text: &str| text.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let (cache_path, cache) = match config.nginx.auth_cache_seconds {
        0 => (String::new(), String::new()),
        secs => (
            format!("    proxy_cache_path {prefix}/auth_cache levels=1:2 keys_zone=shop_auth:10m max_size=64m inactive=60s;\n"),
            format!(
                "            # Revocation takes up to {secs} s longer to reach nginx with this cache on.\n            proxy_cache shop_auth;\n            proxy_cache_key $http_authorization;\n            proxy_cache_valid 200 {secs}s;\n            proxy_cache_lock on;\n            proxy_ignore_headers Cache-Control Expires Set-Cookie;"
            ),
        ),
    };
    let debug = if config.nginx.debug_headers {
        "            # Debug headers are on: the backend's X-Shop-Shard passes, plus the upstream address.\n            add_header X-Shop-Upstream $upstream_addr always;"
    } else {
        "            proxy_hide_header X-Shop-Shard;"
    };
    Ok(TEMPLATE
        .replace("@WORKERS@", workers)
        .replace("@PREFIX@", &prefix)
        .replace("@LISTEN@", &config.nginx.listen.to_string())
        .replace("@VERIFIER_SERVERS@\n", &verifiers)
        .replace("@SHARD_UPSTREAMS@\n", &shards)
        .replace("@SHARD_MAP@\n", &indent(&shard_map(config)))
        .replace("@AUTH_CACHE_PATH@\n", &cache_path)
        .replace("@AUTH_CACHE@\n", &if cache.is_empty() { cache } else { cache + "\n" })
        .replace("@DEBUG_HEADERS@\n", &format!("{debug}\n")))
}
