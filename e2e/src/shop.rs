//! What the load ([`crate::load`]) and the growth check ([`crate::grow::grow_under_load`]) need
//! of a running shop, whichever topology runs it: every part on loopback ([`crate::Stack`]) or
//! each on a host of its own ([`crate::netns::NetnsStack`]). A topology gives the few things that
//! differ (its config, its clients, where `shopctl` runs, how a shard joins); the rest is written
//! here once, in terms of those.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shopgate_core::config::Config;
use shopgate_core::shardmap::ShardMap;
use shopgate_core::ShardName;
use sqlx::AnyPool;

use crate::cli::{pool, run, Run};
use crate::grow::{run_stamped, MoveRun};
use crate::PASSWORD;

/// A running shop under test (see the module's doc).
// The futures are awaited where they are made, never sent to another task.
#[allow(async_fn_in_trait)]
pub trait Shop: Sync {
    /// The config every part reads (the stack's `shop.toml` with its overrides).
    fn config(&self) -> &Config;

    /// A client of the front door, nginx: it trusts the edge's certificate if there is one.
    fn http(&self) -> &reqwest::Client;

    /// nginx's URL, `http://…` or `https://…`, without a path.
    fn url(&self) -> &str;

    /// A client of the verifiers and backends themselves: with TLS between the parts, one that
    /// trusts the internal CA and presents a certificate it signed, as nginx and shopctl do.
    fn internal(&self) -> &reqwest::Client;

    /// The URL of `path` at the verifier or backend listening on `addr`, for [`Shop::internal`].
    fn internal_url(&self, addr: SocketAddr, path: &str) -> String;

    /// The real `shopctl` with the shop's config, run where an operator's would run.
    fn shopctl(&self) -> Command;

    /// The migrator's URLs (`SHOP_MIGRATOR_…`), which only `shopctl migrate` is given; none on
    /// SQLite, where the config's own URLs may change the schema.
    fn migrator_env(&self) -> Vec<(String, String)>;

    /// Adds shard `name` (order-id `number`) to the running shop as an operator would: its
    /// `[shards.NAME]` owning no bucket in the config (on the database `overrides` name, or the
    /// topology's own), its backend started and answering, then `shopctl shards add NAME`, which
    /// renders nginx's config with the new upstream and reloads nginx. [`Shop::config`] is the new
    /// config afterwards.
    async fn add_shard(&mut self, name: &str, number: u8, overrides: Vec<(String, String)>) -> anyhow::Result<()>;

    /// The URL of `path` through nginx.
    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }

    /// `shopctl ARGS` against this shop.
    fn ctl(&self, args: &[&str]) -> Run {
        let mut cmd = self.shopctl();
        cmd.args(args);
        run(cmd, None)
    }

    /// Registers `email` with [`PASSWORD`] through nginx; the answer's body (asserting 201).
    async fn register(&self, email: &str) -> Value {
        let r = self
            .http()
            .post(self.api("/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("register: {e}"));
        assert_eq!(r.status(), 201, "register {email}");
        r.json().await.unwrap_or_else(|e| panic!("register body: {e}"))
    }

    /// Logs `email` in through nginx; its token (asserting 200).
    async fn login(&self, email: &str) -> String {
        let r = self
            .http()
            .post(self.api("/auth/token"))
            .form(&[("username", email), ("password", PASSWORD)])
            .send()
            .await
            .unwrap_or_else(|e| panic!("login: {e}"));
        assert_eq!(r.status(), 200, "login {email}");
        let v: Value = r.json().await.unwrap_or_else(|e| panic!("login body: {e}"));
        v["access_token"].as_str().unwrap_or_else(|| panic!("no token in {v}")).to_owned()
    }

    /// A pool on shard `name`'s primary.
    async fn shard_db(&self, name: &str) -> AnyPool {
        let shard = self.config().shard(name).unwrap_or_else(|| panic!("no shard {name}"));
        pool(&shard.primary).await
    }

    /// A pool on the auth database.
    async fn auth_db(&self) -> AnyPool {
        pool(&self.config().verifier.database_url).await
    }

    /// `shopctl migrate`, as an operator runs it before a rollout: where shopctl runs, with the
    /// migrator's URLs ([`Shop::migrator_env`]), which no service is given.
    fn migrate(&self) -> anyhow::Result<()> {
        let out = self.shopctl().arg("migrate").envs(self.migrator_env()).output()?;
        if !out.status.success() {
            anyhow::bail!("shopctl migrate failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// A pool on the auth database as its migrator, for a test's own schema-level SQL (the
    /// services' user may not run it).
    async fn auth_db_as_migrator(&self) -> AnyPool {
        let given = self.migrator_env().into_iter().find(|(k, _)| k == "SHOP_MIGRATOR_AUTH_URL");
        match given {
            Some((key, url)) => {
                pool(
                    &self
                        .config()
                        .outside_database_url(&key, shopgate_core::config::DbUrl::new(url))
                        .unwrap_or_else(|e| panic!("{key}: {e}")),
                )
                .await
            }
            None => self.auth_db().await,
        }
    }

    /// The shard map in force: the current version in its one home, the auth database (read
    /// with the same `shopgate_core::control` functions every part uses; version 1, the
    /// config's, is stored there first if no part has yet).
    async fn current_map(&self) -> ShardMap {
        let auth = self.auth_db().await;
        let map = shopgate_core::control::load_or_seed(&auth, &self.config().shard_map).await;
        auth.close().await;
        map.unwrap_or_else(|e| panic!("the current shard map: {e}"))
    }

    /// The map as `shopctl --json shards status` shows it: its version, and the map its
    /// shards' `buckets` make.
    fn status_map(&self) -> (u64, ShardMap) {
        let status = self.ctl(&["--json", "shards", "status"]).ok().json();
        let version = status["map_version"].as_u64().unwrap_or_else(|| panic!("no map_version in {status}"));
        let shards = status["items"].as_array().unwrap_or_else(|| panic!("no shards in {status}"));
        let specs: Vec<(ShardName, String)> = shards
            .iter()
            .map(|s| {
                let name = s["shard"].as_str().unwrap_or_else(|| panic!("no shard name in {s}"));
                let buckets = s["buckets"].as_str().unwrap_or_else(|| panic!("no buckets in {s}"));
                (ShardName::parse(name).unwrap_or_else(|e| panic!("{e}")), buckets.to_owned())
            })
            .filter(|(_, buckets)| !buckets.is_empty())
            .collect();
        let map = ShardMap::from_specs(specs.iter().map(|(n, b)| (n, b.as_str())))
            .unwrap_or_else(|e| panic!("shards status shows no whole map ({e}): {status}"));
        (version, map)
    }

    /// Runs `shopctl --json shards move ARGS` to its end (off the async workers, so a load keeps
    /// running), stamping each event as it comes; panics, showing the run, unless it exits 0 with
    /// a summary. `clock` is the instant the returned times count from.
    async fn move_buckets(&self, args: &[&str], clock: Instant) -> MoveRun {
        let mut cmd = self.shopctl();
        cmd.args(["--json", "shards", "move"]).args(args);
        let started = clock.elapsed();
        let (run, lines) = tokio::task::spawn_blocking(move || run_stamped(cmd, clock))
            .await
            .unwrap_or_else(|e| panic!("shopctl shards move: {e}"));
        MoveRun::new(run.ok(), lines, started, clock.elapsed())
    }

    /// Every backend and nginx report (`/healthz`'s `map_version`) that they route with `version`,
    /// within 2 s: a backend the move's last step did not wait for takes it at its next refresh.
    async fn assert_parts_route_with(&self, version: u64) {
        let mut parts: Vec<(String, String)> = self
            .config()
            .shards
            .iter()
            .flat_map(|s| {
                let name = s.name.as_str();
                s.listen.iter().enumerate().map(move |(i, addr)| (crate::backend_process(name, i), *addr))
            })
            .map(|(part, addr)| (part, self.internal_url(addr, "/healthz")))
            .collect();
        parts.push(("nginx".into(), self.api("/healthz")));
        let deadline = Instant::now() + Duration::from_secs(2);
        for (part, url) in parts {
            let client = if part == "nginx" { self.http() } else { self.internal() };
            loop {
                let got = match client.get(&url).send().await {
                    Ok(r) => r.json::<Value>().await.map(|b| b["map_version"].clone()).unwrap_or_default(),
                    Err(e) => Value::String(e.to_string()),
                };
                if got.as_u64() == Some(version) {
                    break;
                }
                assert!(Instant::now() < deadline, "{part} routes with map version {got}, not {version}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
