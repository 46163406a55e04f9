//! Real MariaDB topologies for the end-to-end tests, started and stopped by `scripts/mariadb` (the
//! same script `scripts/up --mariadb` uses), never mocked.
//!
//! [`Topology::start`] runs `scripts/mariadb run DIR` in a fresh temp folder: an auth instance with
//! its GTID replica and, per shard, a primary and a read-only GTID replica, each a local `mariadbd` on a free port. The
//! script stays in the foreground as the instances' parent; its stdin is a pipe held here, so when
//! the topology is dropped (or the test process dies) the pipe closes and the script stops every
//! instance. [`Topology::stack_options`] points a [`crate::Stack`] at it. At most
//! [`MAX_INSTANCES`] `mariadbd`s run at once (two whole topologies of six).
//!
//! [`Topology::start_with`] starts a part of one elsewhere: some shards without the auth instance,
//! inside a network namespace, bound to that namespace's address (`crate::netns`).
//!
//! [`Topology::start_in_background`] starts one the operator's way, `scripts/mariadb start DIR`
//! (background supervisors, stopped by `scripts/mariadb stop` when dropped; a test process killed
//! outright leaves them running), and
//! [`Topology::start_again`] runs `start` again on a topology that runs, as after a killed instance
//! or to add a shard.
//!
//! Every instance speaks TLS only over TCP (`require_secure_transport`): the URLs in
//! `topology.env`, which [`Topology::url`] and [`Topology::admin`] hand out, carry
//! `ssl-mode=VERIFY_IDENTITY` and the topology's CA, so every test connection is encrypted and
//! checks the instance's certificate; root over the unix socket ([`Topology::root_over_socket`])
//! needs none.
//!
//! No MariaDB on the machine is a failure with a clear message, not a skip: CI must run these.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::Options;

/// `mariadbd`s running at once in one test process: two whole topologies (two cores; ~5 s of
/// start-up each). A topology holds as many slots as it has instances.
pub(crate) const MAX_INSTANCES: usize = 12;
/// How long `scripts/mariadb run` may take to report ready.
const START_DEADLINE: Duration = Duration::from_secs(120);

static SLOTS: Semaphore = Semaphore::const_new(MAX_INSTANCES);

/// The workspace's `scripts/mariadb`.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/mariadb")
}

/// What [`Topology::start_with`] starts, and where.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The shards, each a primary and a replica (`--shards`).
    pub shards: Vec<String>,
    /// The auth instance and its replica too (without them: `--no-auth`).
    pub auth: bool,
    /// The network namespace the instances run in (`ip netns exec NETNS scripts/mariadb run`).
    pub netns: Option<String>,
    /// The address they listen on and their URLs name (`MARIADB_BIND_ADDRESS`; else 127.0.0.1).
    pub bind: Option<IpAddr>,
}

impl Default for Spec {
    /// The whole topology on 127.0.0.1: auth, shards `a` and `b`.
    fn default() -> Self {
        Self { shards: vec!["a".into(), "b".into()], auth: true, netns: None, bind: None }
    }
}

impl Spec {
    fn instances(&self) -> usize {
        2 * usize::from(self.auth) + 2 * self.shards.len()
    }

    /// `scripts/mariadb VERB DIR …` (`run` or `start`), inside the namespace if there is one.
    fn command(&self, verb: &str, root: &Path) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(script());
                c
            }
            None => Command::new(script()),
        };
        c.arg(verb).arg(root).arg("--shards").arg(self.shards.join(" "));
        if !self.auth {
            c.arg("--no-auth");
        }
        if let Some(bind) = self.bind {
            c.env("MARIADB_BIND_ADDRESS", bind.to_string());
        }
        c
    }
}

pub struct Topology {
    /// The temp folder: the script's log, and the topology itself under `db/`.
    pub dir: tempfile::TempDir,
    /// The folder handed to the script (`DIR`).
    pub(crate) root: PathBuf,
    /// What the script wrote to `DIR/topology.env`.
    env: BTreeMap<String, String>,
    supervisor: Mutex<Option<(Child, ChildStdin)>>,
    /// One per instance this topology has had.
    slots: SemaphorePermit<'static>,
}

impl Topology {
    /// An auth instance and shards `a` and `b`, each a primary and a replica.
    pub async fn start() -> Topology {
        match Self::start_with(&Spec::default()).await {
            Ok(t) => t,
            Err(e) => panic!("could not start the MariaDB topology with scripts/mariadb: {e:#}"),
        }
    }

    /// An auth instance and the space-separated `shards`, each a primary and a replica: e.g.
    /// `"c"` for a shard to add to a stack on another topology (see [`Topology::shard_overrides`]).
    pub async fn start_shards(shards: &str) -> Topology {
        let spec = Spec { shards: shards.split_whitespace().map(String::from).collect(), ..Spec::default() };
        match Self::start_with(&spec).await {
            Ok(t) => t,
            Err(e) => panic!("could not start the MariaDB topology with scripts/mariadb: {e:#}"),
        }
    }

    /// The instances `spec` names; an error if `scripts/mariadb` could not start them.
    pub async fn start_with(spec: &Spec) -> anyhow::Result<Topology> {
        let slots = u32::try_from(spec.instances().clamp(1, MAX_INSTANCES))?;
        let slot = SLOTS.acquire_many(slots).await.context("topology slots closed")?;
        // Under /tmp, short: each instance's socket path must stay under 108 bytes.
        let dir = tempfile::Builder::new().prefix("shopgate-mdb.").tempdir_in("/tmp")?;
        let root = dir.path().join("db");
        let log_path = dir.path().join("mariadb.log");
        let log = File::create(&log_path)?;
        let mut child = spec
            .command("run", &root)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", script().display()))?;
        let stdin = child.stdin.take().context("no stdin pipe")?;
        let mut topology = Topology {
            dir,
            root: root.clone(),
            env: BTreeMap::new(),
            supervisor: Mutex::new(Some((child, stdin))),
            slots: slot,
        };
        let env_file = root.join("topology.env");
        let started = Instant::now();
        loop {
            if env_file.is_file() {
                break;
            }
            let exited = {
                let mut sup = topology.supervisor.lock().unwrap_or_else(|e| e.into_inner());
                sup.as_mut().and_then(|(c, _)| c.try_wait().ok().flatten())
            };
            if let Some(status) = exited {
                bail!("scripts/mariadb run exited with {status}:\n{}", std::fs::read_to_string(&log_path)?);
            }
            if started.elapsed() > START_DEADLINE {
                bail!("not ready after {START_DEADLINE:?}:\n{}", std::fs::read_to_string(&log_path)?);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        topology.env = parse_env(&std::fs::read_to_string(&env_file)?);
        Ok(topology)
    }

    /// The instances `spec` names (not in a namespace), started by `scripts/mariadb start`: it
    /// returns once they are ready and leaves them to supervisors in the background. An error if
    /// the script could not start them.
    pub async fn start_in_background(spec: &Spec) -> anyhow::Result<Topology> {
        anyhow::ensure!(spec.netns.is_none(), "scripts/mariadb start runs here; a namespace's topology uses run");
        let slots = u32::try_from(spec.instances().clamp(1, MAX_INSTANCES))?;
        let slot = SLOTS.acquire_many(slots).await.context("topology slots closed")?;
        let dir = tempfile::Builder::new().prefix("shopgate-mdb.").tempdir_in("/tmp")?;
        let root = dir.path().join("db");
        let mut topology =
            Topology { dir, root: root.clone(), env: BTreeMap::new(), supervisor: Mutex::new(None), slots: slot };
        let command = spec.command("start", &root);
        let out = tokio::task::spawn_blocking(move || output_of(command)).await??;
        anyhow::ensure!(out.status.success(), "scripts/mariadb start: {}", String::from_utf8_lossy(&out.stderr));
        topology.env = parse_env(&std::fs::read_to_string(root.join("topology.env"))?);
        Ok(topology)
    }

    /// `scripts/mariadb start DIR --shards SHARDS` on this topology while it runs (`--no-auth` if
    /// it has no auth instance): what it answered. On success `topology.env` is read again.
    pub async fn start_again(&mut self, shards: &str) -> anyhow::Result<std::process::Output> {
        let known = self.var("MARIADB_SHARDS").split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        let new = shards.split_whitespace().filter(|s| !known.iter().any(|k| k == s)).count();
        if new > 0 {
            let more = SLOTS.acquire_many(u32::try_from(2 * new)?).await.context("topology slots closed")?;
            self.slots.merge(more);
        }
        let mut command = Command::new(script());
        command.arg("start").arg(&self.root).arg("--shards").arg(shards);
        if !self.var("MARIADB_INSTANCES").split_whitespace().any(|i| i == "auth") {
            command.arg("--no-auth");
        }
        let out = tokio::task::spawn_blocking(move || output_of(command)).await??;
        if out.status.success() {
            self.env = parse_env(&std::fs::read_to_string(self.root.join("topology.env"))?);
        }
        Ok(out)
    }

    /// `scripts/mariadb CMD DIR` (`status`, `stop`): what it answered.
    pub fn script(&self, cmd: &str) -> std::process::Output {
        let mut command = Command::new(script());
        command.arg(cmd).arg(&self.root);
        output_of(command).unwrap_or_else(|e| panic!("scripts/mariadb {cmd}: {e:#}"))
    }

    /// The folder handed to the script (`DIR`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pid in `instance`'s pid file: its `mariadbd`, or the last one if it is down.
    pub fn pid(&self, instance: &str) -> u32 {
        let path = self.instance_var(instance, "PID_FILE");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.trim().parse().unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// A value from `topology.env`, e.g. `var("MARIADB_A_PRIMARY_PORT")`.
    pub fn var(&self, key: &str) -> &str {
        self.env.get(key).map(String::as_str).unwrap_or_else(|| panic!("{key} is not in topology.env"))
    }

    fn instance_var(&self, instance: &str, what: &str) -> &str {
        self.var(&format!("MARIADB_{}_{what}", instance.to_ascii_uppercase().replace('-', "_")))
    }

    /// The services' runtime user's URL of `instance` (`auth`, `a-primary`, `a-replica`, ...):
    /// what the stack is configured with. It holds a password: never print it.
    pub fn url(&self, instance: &str) -> &str {
        self.instance_var(instance, "URL")
    }

    /// The migrator's URL of `instance` (`shopctl migrate`'s).
    pub fn migrator_url(&self, instance: &str) -> &str {
        self.instance_var(instance, "MIGRATOR_URL")
    }

    /// The backends' reader's URL of the auth instance.
    pub fn reader_url(&self) -> &str {
        self.instance_var("auth", "READER_URL")
    }

    /// The `admin` user's URL (every privilege; over the unix socket), for the tests' own SQL.
    pub fn admin_url(&self, instance: &str) -> &str {
        self.instance_var(instance, "ADMIN_URL")
    }

    /// `SHOP__…` overrides that put the auth database and its replica (if this topology has
    /// them) and every shard's primary and replica on this topology, each part with its own user (the verifier
    /// the runtime user, the backends the reader), and `SHOP_MIGRATOR_…` URLs for `shopctl
    /// migrate` (which the stacks give to it alone); `max_lag` is each shard's
    /// `replica_max_lag_seconds`.
    pub(crate) fn overrides(&self, max_lag: u64) -> Vec<(String, String)> {
        let mut v = Vec::new();
        if self.var("MARIADB_INSTANCES").split_whitespace().any(|i| i == "auth") {
            v.push(("SHOP__VERIFIER__DATABASE_URL".to_owned(), self.url("auth").to_owned()));
            v.push(("SHOP__BACKEND__AUTH_DATABASE_URL".to_owned(), self.reader_url().to_owned()));
            v.push(("SHOP_MIGRATOR_AUTH_URL".to_owned(), self.migrator_url("auth").to_owned()));
            v.push(("SHOP__VERIFIER__DATABASE_REPLICA_URL".to_owned(), self.url("auth-replica").to_owned()));
            v.push((
                "SHOP__BACKEND__AUTH_DATABASE_REPLICA_URL".to_owned(),
                self.instance_var("auth-replica", "READER_URL").to_owned(),
            ));
        }
        v.extend(self.shard_overrides(max_lag));
        v
    }

    /// `SHOP__…` overrides that put every shard of this topology on it (not the auth database),
    /// and its `SHOP_MIGRATOR_…` URLs.
    pub fn shard_overrides(&self, max_lag: u64) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for shard in self.var("MARIADB_SHARDS").split_whitespace() {
            let up = shard.to_ascii_uppercase();
            let primary = format!("{shard}-primary");
            v.push((
                format!("SHOP_MIGRATOR_SHARD_{}_URL", up.replace('-', "_")),
                self.migrator_url(&primary).to_owned(),
            ));
            v.push((format!("SHOP__SHARDS__{up}__PRIMARY"), self.url(&primary).to_owned()));
            v.push((format!("SHOP__SHARDS__{up}__REPLICA"), self.url(&format!("{shard}-replica")).to_owned()));
            v.push((format!("SHOP__SHARDS__{up}__REPLICA_MAX_LAG_SECONDS"), max_lag.to_string()));
        }
        v
    }

    /// What `shopctl backup` and `shopctl restore` need beside the stack's config: the backup
    /// role's URL of each primary (`SHOP_BACKUP_…_URL`) and this topology's folder
    /// (`SHOP_MARIADB_DIR`).
    pub fn backup_env(&self) -> Vec<(String, String)> {
        let mut v = vec![("SHOP_MARIADB_DIR".to_owned(), self.root.display().to_string())];
        for instance in self.var("MARIADB_INSTANCES").split_whitespace() {
            let Some(name) = (if instance == "auth" { Some("auth") } else { instance.strip_suffix("-primary") }) else {
                continue;
            };
            let var = if name == "auth" {
                "SHOP_BACKUP_AUTH_URL".to_owned()
            } else {
                format!("SHOP_BACKUP_SHARD_{}_URL", name.to_ascii_uppercase().replace('-', "_"))
            };
            v.push((var, self.instance_var(instance, "BACKUP_URL").to_owned()));
        }
        v
    }

    /// Stack options for a whole stack on this topology.
    pub fn stack_options(&self, max_lag: u64) -> Options {
        Options { config_overrides: self.overrides(max_lag), ..Options::default() }
    }

    /// A small pool on `instance` as `admin`.
    pub async fn admin(&self, instance: &str) -> MySqlPool {
        let options: MySqlConnectOptions =
            self.admin_url(instance).parse().unwrap_or_else(|e| panic!("admin URL of {instance}: {e}"));
        crate::cli::test_pool(options, 4, &format!("{instance} as admin")).await
    }

    /// A small pool on `instance` as root over its unix socket: it reaches an instance in another
    /// network namespace (a socket is a file), where its TCP address may be out of reach.
    pub async fn root_over_socket(&self, instance: &str) -> MySqlPool {
        let options = MySqlConnectOptions::new()
            .socket(self.instance_var(instance, "SOCKET"))
            .username("root")
            .database(self.instance_var(instance, "DATABASE"));
        crate::cli::test_pool(options, 4, &format!("{instance} as root over its socket")).await
    }

    /// SIGKILLs one instance through `scripts/mariadb kill` and returns once it is gone.
    pub fn kill(&self, instance: &str) {
        let out = Command::new(script())
            .arg("kill")
            .arg(&self.root)
            .arg(instance)
            .output()
            .unwrap_or_else(|e| panic!("scripts/mariadb kill: {e}"));
        assert!(out.status.success(), "scripts/mariadb kill {instance}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Waits (at most `within`) until `shard`'s replica has applied everything its primary has
    /// committed so far.
    pub async fn wait_replica_caught_up(&self, shard: &str, within: Duration) {
        let primary = self.admin(&format!("{shard}-primary")).await;
        let replica = self.admin(&format!("{shard}-replica")).await;
        let pos: String =
            sqlx::query_scalar("SELECT @@gtid_binlog_pos").fetch_one(&primary).await.expect("gtid_binlog_pos");
        let waited: i64 = sqlx::query_scalar("SELECT MASTER_GTID_WAIT(?, ?)")
            .bind(&pos)
            .bind(within.as_secs_f64())
            .fetch_one(&replica)
            .await
            .expect("MASTER_GTID_WAIT");
        assert_eq!(waited, 0, "{shard}'s replica did not reach the primary's GTID position {pos} within {within:?}");
        primary.close().await;
        replica.close().await;
    }

    /// The tail of every instance's error log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for instance in self.var("MARIADB_INSTANCES").split_whitespace() {
            let path = self.root.join(instance).join("error.log");
            out.push_str(&crate::log_tail(&path, 15));
        }
        out
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let sup = self.supervisor.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((mut child, stdin)) = sup {
            // End of input: the script stops every instance (SIGTERM, wait, SIGKILL) and exits.
            drop(stdin);
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Belt and braces (a no-op when the script did its job): nothing outlives the test.
        let _ = Command::new(script()).arg("stop").arg(&self.root).stderr(Stdio::null()).status();
        if std::env::var_os("KEEP_STACK").is_some() {
            eprintln!("keeping {}", self.dir.path().display());
            std::mem::forget(std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))));
        }
    }
}

/// What `command` printed, run to its end with stdin closed.
fn output_of(mut command: Command) -> anyhow::Result<std::process::Output> {
    command.stdin(Stdio::null()).output().with_context(|| format!("running {}", script().display()))
}

/// `KEY='value'` lines (comments and blank lines skipped), as `scripts/mariadb` writes them.
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('\'').to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_scripts_env_file() {
        let env = super::parse_env("# c\nMARIADB_SHARDS='a b'\nMARIADB_A_PRIMARY_PORT='3307'\n\n");
        assert_eq!(env["MARIADB_SHARDS"], "a b");
        assert_eq!(env["MARIADB_A_PRIMARY_PORT"], "3307");
        assert_eq!(env.len(), 2);
    }
}
