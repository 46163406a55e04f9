//! Shards on their own hosts: a test topology in which every "machine" is a Linux network
//! namespace with an address of its own, cabled to a switch, so a host can be cut off the network
//! the way a pulled cable or a failed switch port cuts one.
//!
//! [`Network::create`] makes this run's switch: a namespace holding a bridge. [`Network::add_host`]
//! adds a host: a namespace with loopback up and `eth0` at `10.213.0.N/24`, the other end of its
//! veth pair (its "cable") plugged into the bridge. [`Network::cut`] and [`Network::restore`] set
//! the switch's end of a host's cable down and up; the host itself is left alone, so its own
//! processes still reach each other on its address (downing `eth0` inside the host would take its
//! address's local route with it).
//!
//! [`NetnsStack::start`] puts a whole stack on such a network: a gateway host with nginx, the
//! verifier and the auth MariaDB, and per shard a host ([`ShardHost`]) with its MariaDB primary and
//! replica (`ip netns exec NS scripts/mariadb run DIR --shards a --no-auth`, bound to the host's
//! address) and its backend. Every address in its `shop.toml` is a host's own address, never
//! 127.0.0.1. [`NetnsStack::add_shard_host`] adds one more shard host to a running stack. The
//! databases are therefore remote to the services, and reached over TLS only: the instances'
//! URLs carry `ssl-mode=VERIFY_IDENTITY` and their CA (each certificate names its host's address),
//! which the config's check requires of a database that is not on loopback; replication between
//! a host's primary and replica is TLS too.
//!
//! The root namespace's networking is never touched. The test process reaches the stack through
//! files only: nginx also listens on a unix socket in the stack's folder (added to the rendered
//! config here, the one thing the harness adds to it), the instances through their sockets, and
//! anything else with `ip netns exec HOST curl` (or `shopctl`, run on the gateway host).
//!
//! Namespaces are named `sgnet-PID-RANDOM-ROLE` (PID is the test process's), so parallel runs
//! never clash: every run has its own switch, and two runs' identical addresses live on separate
//! bridges. Dropping a [`Network`] kills what still runs in its namespaces and deletes them;
//! [`Network::create`] first deletes the namespaces of runs whose process is gone (a test that was
//! killed). Without `ip netns` (not root, not Linux) [`Network::create`] fails with a message
//! saying so: these tests fail rather than skip.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use shopgate_core::config::{ensure_dev_key, Config, ConfigBuilder, DEV_KEY_FILE};
use shopgate_core::token::new_claims;
use shopgate_core::UserId;

use crate::mariadb::{Spec, Topology};
use crate::{bin, free_port, nginx_bin, now, rand_hex, set_mode};

/// Every namespace these tests make starts with this.
pub const NETNS_PREFIX: &str = "sgnet-";
/// The hosts' subnet: `10.213.0.N/24`, N = 1, 2, … in the order hosts are added.
const SUBNET: [u8; 3] = [10, 213, 0];
/// The bridge in the switch namespace.
const BRIDGE: &str = "br0";

/// One host: a network namespace with its own address.
#[derive(Debug, Clone)]
pub struct Host {
    /// What it is for: `gateway`, or a shard's name.
    pub role: String,
    pub netns: String,
    pub addr: Ipv4Addr,
    /// The switch's end of the host's cable (an interface in the switch namespace).
    port: String,
}

impl Host {
    /// `program` to be run inside this host (`ip netns exec NETNS program`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns]).arg(program);
        c
    }

    /// A fresh port on this host's address.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, free_port()))
    }

    /// `GET url` from inside this host with curl: the status (0 if there was no answer in
    /// `within`) and the body.
    pub fn curl(&self, url: &str, within: Duration) -> (u16, String) {
        let out = self
            .command("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time"])
            .arg(format!("{:.1}", within.as_secs_f64()))
            .arg(url)
            .stdin(Stdio::null())
            .output();
        let Ok(out) = out else { return (0, String::new()) };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }
}

/// This run's switch and the hosts cabled to it.
pub struct Network {
    /// `sgnet-PID-RANDOM`: every namespace of this run is `{base}-{role}`.
    base: String,
    switch: String,
    hosts: Mutex<Vec<Host>>,
}

impl Network {
    /// A switch with no host yet, after deleting what killed runs left behind.
    pub fn create() -> anyhow::Result<Network> {
        remove_stale();
        let base = format!("{NETNS_PREFIX}{}-{}", std::process::id(), rand_hex(2));
        let switch = format!("{base}-switch");
        ip(&["netns", "add", &switch]).context(
            "network namespaces are not available here (`ip netns add` failed): these tests need root on Linux \
             with iproute2, as scripts/test and CI run them",
        )?;
        let net = Network { base, switch, hosts: Mutex::new(Vec::new()) };
        ip(&["-n", &net.switch, "link", "set", "lo", "up"])?;
        ip(&["-n", &net.switch, "link", "add", BRIDGE, "type", "bridge"]).context("no bridge in the switch")?;
        ip(&["-n", &net.switch, "link", "set", BRIDGE, "up"])?;
        Ok(net)
    }

    /// A new host named `role` (unique in this network), cabled to the switch, its link up.
    pub fn add_host(&self, role: &str) -> anyhow::Result<Host> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let n = hosts.len() + 1;
        if n > 254 {
            bail!("no address left on the switch for {role}");
        }
        if hosts.iter().any(|h| h.role == role) {
            bail!("there is a host {role} already");
        }
        let host = Host {
            role: role.to_owned(),
            netns: format!("{}-{role}", self.base),
            addr: Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], u8::try_from(n)?),
            port: format!("h{n}"),
        };
        ip(&["netns", "add", &host.netns])?;
        // Recorded at once, so it is deleted with the network whatever fails next.
        hosts.push(host.clone());
        ip(&["-n", &host.netns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &self.switch,
            "link",
            "add",
            &host.port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &host.netns,
        ])?;
        ip(&["-n", &self.switch, "link", "set", &host.port, "master", BRIDGE])?;
        ip(&["-n", &self.switch, "link", "set", &host.port, "up"])?;
        ip(&["-n", &host.netns, "addr", "add", &format!("{}/24", host.addr), "dev", "eth0"])?;
        ip(&["-n", &host.netns, "link", "set", "eth0", "up"])?;
        Ok(host)
    }

    /// Cuts `host` off the network: the switch's end of its cable goes down. Nothing reaches it and
    /// nothing leaves it; on the host itself everything runs on.
    pub fn cut(&self, host: &Host) -> anyhow::Result<()> {
        ip(&["-n", &self.switch, "link", "set", &host.port, "down"])
    }

    /// Plugs `host` back in.
    pub fn restore(&self, host: &Host) -> anyhow::Result<()> {
        ip(&["-n", &self.switch, "link", "set", &host.port, "up"])
    }

    fn namespaces(&self) -> Vec<String> {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.iter().map(|h| h.netns.clone()).chain([self.switch.clone()]).collect()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.namespaces() {
            remove_namespace(&ns);
        }
    }
}

/// `ip ARGS`, an error with its stderr if it fails.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().context("running ip (install iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// SIGKILL to whatever still runs in `ns` (processes this harness started there), then deletes it;
/// its veth pairs go with it.
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            crate::signal(pid.parse().unwrap_or(0), libc::SIGKILL);
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
}

/// Deletes the namespaces of earlier runs whose test process is gone (`sgnet-PID-…`, no PID).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else { continue };
        let Some(pid) = name.strip_prefix(NETNS_PREFIX).and_then(|rest| rest.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok_and(|p| p > 0 && !Path::new(&format!("/proc/{p}")).exists()) {
            eprintln!("netns: removing {name}, left by a test process ({pid}) that is gone");
            remove_namespace(name);
        }
    }
}

/// A shard's host: its address, its MariaDB primary and replica running there.
pub struct ShardHost {
    pub host: Host,
    pub db: Topology,
}

impl ShardHost {
    /// A new host `name` on `net` with the shard's primary and replica bound to its address.
    pub async fn start(net: &Network, name: &str) -> anyhow::Result<ShardHost> {
        let host = net.add_host(name)?;
        let spec = Spec {
            shards: vec![name.to_owned()],
            auth: false,
            netns: Some(host.netns.clone()),
            bind: Some(IpAddr::V4(host.addr)),
        };
        let db = Topology::start_with(&spec).await.with_context(|| format!("shard {name}'s MariaDB on its host"))?;
        Ok(ShardHost { host, db })
    }
}

/// A shard of a [`NetnsStack`]: its name, number in order ids and buckets.
#[derive(Debug, Clone)]
pub struct ShardSpec {
    pub name: &'static str,
    pub number: u8,
    pub buckets: &'static str,
}

/// Each shard's `replica_max_lag_seconds` in a [`NetnsStack`].
const MAX_LAG: u64 = 5;
/// How long a process of the stack may take to answer its health check.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A whole stack, the gateway and every shard on a host of its own (see the module's doc).
pub struct NetnsStack {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub config: Config,
    /// Requests to nginx over its unix socket; URLs from [`NetnsStack::api`].
    pub http: reqwest::Client,
    pub gateway: Host,
    procs: Mutex<BTreeMap<String, Child>>,
    /// `SHOP__…` overrides (the databases' URLs) every process of the stack gets.
    env: Mutex<Vec<(String, String)>>,
    shards: Mutex<BTreeMap<String, Arc<ShardHost>>>,
    auth_db: Topology,
    /// Last: its drop deletes the namespaces, after everything in them was stopped.
    pub net: Network,
}

impl NetnsStack {
    /// The stack with `shards`, each on its own host; panics with the reason if it cannot start.
    pub async fn start(shards: &[ShardSpec]) -> NetnsStack {
        match Self::try_start(shards).await {
            Ok(s) => s,
            Err(e) => panic!("could not start the network-namespace stack: {e:#}"),
        }
    }

    async fn try_start(specs: &[ShardSpec]) -> anyhow::Result<NetnsStack> {
        let net = Network::create()?;
        let gateway = net.add_host("gateway")?;
        let auth_spec = Spec {
            shards: Vec::new(),
            auth: true,
            netns: Some(gateway.netns.clone()),
            bind: Some(IpAddr::V4(gateway.addr)),
        };
        // Every instance starts at once (mariadbd's start is mostly waiting).
        let (auth_db, shard_hosts) = tokio::join!(
            Topology::start_with(&auth_spec),
            futures::future::join_all(specs.iter().map(|s| ShardHost::start(&net, s.name)))
        );
        let auth_db = auth_db.context("the auth MariaDB on the gateway")?;
        let shard_hosts = shard_hosts.into_iter().collect::<anyhow::Result<Vec<_>>>()?;

        let dir = tempfile::Builder::new().prefix("shopgate-netns.").tempdir_in("/tmp")?;
        let root = dir.path().to_path_buf();
        // nginx's workers run as an unprivileged user.
        set_mode(&root, 0o755)?;
        std::fs::create_dir_all(root.join("nginx"))?;
        set_mode(&root.join("nginx"), 0o755)?;
        let mut file = ConfigBuilder::new(gateway.socket_addr(), &[gateway.socket_addr()])
            // nginx listens on the gateway host's address, not loopback: plain HTTP, as the
            // clients of this network test speak it.
            .set("nginx.allow_plaintext", "true")
            .set("nginx.debug_headers", "true")
            .set("nginx.worker_processes", "\"1\"")
            .set("verifier.hash_workers", "1");
        for (spec, shard) in specs.iter().zip(&shard_hosts) {
            file = file.shard(spec.name, spec.number, spec.buckets, shard.host.socket_addr());
        }
        ensure_dev_key(&root.join(DEV_KEY_FILE))?;
        let config_path = root.join("shop.toml");
        file.write(&config_path)?;
        let mut env = auth_db.overrides(MAX_LAG);
        for shard in &shard_hosts {
            env.extend(shard.db.overrides(MAX_LAG));
        }
        let config = Config::load_with_env(&config_path, env.clone())?;
        let http = reqwest::Client::builder()
            .unix_socket(root.join("nginx/client.sock"))
            .timeout(Duration::from_secs(30))
            .build()?;
        let stack = NetnsStack {
            dir,
            config_path,
            config,
            http,
            gateway,
            procs: Mutex::new(BTreeMap::new()),
            env: Mutex::new(env),
            shards: Mutex::new(shard_hosts.into_iter().map(|s| (s.host.role.clone(), Arc::new(s))).collect()),
            auth_db,
            net,
        };
        let verifier = stack.config.verifier.listen[0];
        stack.spawn(&stack.gateway, "verifier", bin("verifier"), &["--listen".into(), verifier.to_string()])?;
        for s in specs {
            stack.start_backend(s.name)?;
        }
        stack.wait_ready(&stack.gateway, &format!("http://{verifier}/healthz")).await?;
        for s in specs {
            let host = stack.shard(s.name).host.clone();
            let listen =
                stack.config.shard(s.name).with_context(|| format!("no shard {} in the config", s.name))?.addr();
            stack.wait_ready(&host, &format!("http://{listen}/healthz")).await?;
        }
        stack.start_nginx().await?;
        Ok(stack)
    }

    /// The shard host `name`.
    pub fn shard(&self, name: &str) -> Arc<ShardHost> {
        let shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        shards.get(name).cloned().unwrap_or_else(|| panic!("no shard host {name}"))
    }

    /// The auth MariaDB, on the gateway host.
    pub fn auth_db(&self) -> &Topology {
        &self.auth_db
    }

    /// One more shard host (its MariaDB primary and replica, running) on this stack's network;
    /// its URLs join the `SHOP__…` overrides of every process started from now on. The shard's
    /// backend is for the caller to start ([`NetnsStack::start_backend`]) once the stack's config
    /// names the shard.
    pub async fn add_shard_host(&self, name: &str) -> anyhow::Result<Arc<ShardHost>> {
        let shard = Arc::new(ShardHost::start(&self.net, name).await?);
        self.env.lock().unwrap_or_else(|e| e.into_inner()).extend(shard.db.overrides(MAX_LAG));
        self.shards.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), shard.clone());
        Ok(shard)
    }

    /// Starts shard `name`'s backend on its host (as `backend-NAME`), without waiting for it.
    pub fn start_backend(&self, name: &str) -> anyhow::Result<()> {
        let host = self.shard(name).host.clone();
        self.spawn(&host, &format!("backend-{name}"), bin("backend"), &["--shard".into(), name.into()])
    }

    /// nginx on the gateway, on its rendered config plus a unix socket for the test's client.
    async fn start_nginx(&self) -> anyhow::Result<()> {
        let prefix = self.dir.path().join("nginx");
        let conf = prefix.join("nginx.conf");
        let out = self.shopctl().args(["nginx", "render", "--output"]).arg(&conf).output()?;
        if !out.status.success() {
            bail!("shopctl nginx render failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let listen = format!("listen {};", self.config.nginx.listen);
        let text = std::fs::read_to_string(&conf)?;
        if !text.contains(&listen) {
            bail!("the rendered nginx config has no `{listen}` line");
        }
        let socket = prefix.join("client.sock");
        std::fs::write(
            &conf,
            text.replacen(&listen, &format!("{listen}\n        listen unix:{};", socket.display()), 1),
        )?;
        let err = crate::nginx_logs(&prefix)?;
        let mut args: Vec<String> =
            vec!["-p".into(), path_arg(&prefix), "-c".into(), path_arg(&conf), "-e".into(), path_arg(&err)];
        let check = self.gateway.command(nginx_bin()).arg("-q").arg("-t").args(&args).output()?;
        if !check.status.success() {
            bail!("nginx -t: {}", String::from_utf8_lossy(&check.stderr));
        }
        args.extend(["-g".into(), "daemon off; master_process off;".into()]);
        self.spawn(&self.gateway, "nginx", nginx_bin(), &args)?;
        let started = Instant::now();
        loop {
            if let Ok(r) = self.http.get(self.api("/healthz")).timeout(Duration::from_secs(1)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            self.check_alive()?;
            if started.elapsed() > READY_WITHIN {
                bail!("nginx did not answer on {} within {READY_WITHIN:?}; logs:\n{}", socket.display(), self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Starts `program ARGS` on `host` as process `name`, its output in `NAME.log`.
    fn spawn(&self, host: &Host, name: &str, program: PathBuf, args: &[String]) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(name))?;
        let env = self.env.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let child = host
            .command(&program)
            .args(args)
            .env("SHOP_CONFIG", &self.config_path)
            .envs(env)
            .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} on {}", program.display(), host.netns))?;
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), child);
        Ok(())
    }

    /// Waits until `url` answers 200 from inside `host`.
    async fn wait_ready(&self, host: &Host, url: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let (h, u) = (host.clone(), url.to_owned());
            let (status, _) = tokio::task::spawn_blocking(move || h.curl(&u, Duration::from_secs(1))).await?;
            if status == 200 {
                return Ok(());
            }
            self.check_alive()?;
            if started.elapsed() > READY_WITHIN {
                bail!("{url} (from {}) not ready after {READY_WITHIN:?}; logs:\n{}", host.netns, self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An error naming the first process of the stack that has exited.
    pub fn check_alive(&self) -> anyhow::Result<()> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        for (name, child) in procs.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited with {status}; logs:\n{}", self.logs());
            }
        }
        Ok(())
    }

    /// Each process's pid, by name: the same pids later mean nothing was restarted.
    pub fn pids(&self) -> BTreeMap<String, u32> {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs.iter().map(|(name, child)| (name.clone(), child.id())).collect()
    }

    /// The tail of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect())
            .unwrap_or_default();
        files.push(self.dir.path().join("nginx/logs/error.log"));
        for path in files {
            out.push_str(&crate::log_tail(&path, 30));
        }
        out
    }

    /// The real `shopctl` with this stack's config, run on the gateway host, as an operator's
    /// would be: it reads the shard map from the auth database there.
    pub fn shopctl(&self) -> Command {
        let env = self.env.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut c = self.gateway.command(bin("shopctl"));
        c.env("SHOP_CONFIG", &self.config_path)
            .envs(env)
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg"))
            .env_remove("SHOP_JWT_KEY")
            .stdin(Stdio::null());
        c
    }

    /// The URL of `path` through nginx (the host part is only a name: the client's connections go
    /// to nginx's unix socket).
    pub fn api(&self, path: &str) -> String {
        format!("http://gateway{path}")
    }

    /// A token for any user id, signed with the stack's key.
    pub fn mint(&self, user_id: u64) -> String {
        let user = UserId::new(user_id).unwrap_or_else(|e| panic!("{e}"));
        let claims = new_claims(user, &format!("user{user_id}@example.com"), &self.config.jwt.policy, now(), 600);
        self.config.jwt.sign(&claims).unwrap_or_else(|| panic!("the stack's keys cannot sign"))
    }

    /// The shard that owns `user_id`, by the one routing function.
    pub fn shard_of(&self, user_id: u64) -> String {
        let user = UserId::new(user_id).unwrap_or_else(|e| panic!("{e}"));
        self.config.shard_map.shard_for(user).to_string()
    }
}

impl Drop for NetnsStack {
    fn drop(&mut self) {
        let procs = std::mem::take(&mut *self.procs.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, mut child) in procs {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os("KEEP_STACK").is_some() {
            eprintln!("keeping {}", self.dir.path().display());
            std::mem::forget(std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))));
        }
        // Then the fields: the topologies stop their instances, the network deletes the namespaces.
    }
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
