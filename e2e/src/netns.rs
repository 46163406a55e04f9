//! Shards on their own hosts: a test topology in which every "machine" is a Linux network
//! namespace with an address of its own, cabled to a switch, so a host can be cut off the network
//! the way a pulled cable or a failed switch port cuts one, and what crosses the network can be
//! captured on the switch ([`Network::capture`]).
//!
//! [`Network::create`] makes this run's switch: a namespace holding a bridge. [`Network::add_host`]
//! adds a host: a namespace with loopback up and `eth0` at `10.213.0.N/24`, the other end of its
//! veth pair (its "cable") plugged into the bridge. [`Network::cut`] and [`Network::restore`] set
//! the switch's end of a host's cable down and up; the host itself is left alone, so its own
//! processes still reach each other on its address (downing `eth0` inside the host would take its
//! address's local route with it).
//!
//! [`NetnsStack::run`] puts a whole stack on such a network, encrypted on every hop as a shop
//! spread over hosts runs: a gateway host with nginx (HTTPS, a plain-HTTP port that only
//! redirects) and the auth MariaDB, a verifier host, and per shard a host ([`ShardHost`]) with its
//! MariaDB primary and replica (`ip netns exec NS scripts/mariadb run DIR --shards a --no-auth`,
//! bound to the host's address) and its backend. Every address in its `shop.toml` is a host's own,
//! never 127.0.0.1. The verifier and the backends serve TLS with their host's certificate and
//! take only clients with one from the stack's CA (nginx and shopctl present the gateway's);
//! the databases are reached over TLS only (the instances' URLs carry `ssl-mode=VERIFY_IDENTITY`
//! and their CA, each certificate naming its host's address), replication between a host's
//! primary and replica is TLS too. Tokens are EdDSA: the verifier signs with the private key set,
//! the backends on their hosts are given only the public one. The test itself runs on a client
//! host of the same network, so
//! its requests cross the switch as a shopper's would. [`NetnsStack::add_shard_host`] adds one
//! more shard host to a running stack.
//!
//! The root namespace's networking is never touched: the test's threads enter the client host's
//! namespace (`setns`), and everything else runs under `ip netns exec`. The instances are also
//! reached through their unix sockets ([`Topology::root_over_socket`]).
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
use shopgate_core::config::{Config, ConfigBuilder, SERVICE_NAME};
use shopgate_core::token::new_claims;
use shopgate_core::UserId;

use crate::mariadb::{Spec, Topology};
use crate::{bin, free_port, nginx_bin, now, rand_hex, set_mode, Shop, NO_KEYS_FILE};

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

    /// `GET url` from inside this host with curl, trusting the certificates `ca` signed: the
    /// status (0 if there was no answer in `within`) and the body.
    pub fn curl(&self, url: &str, ca: &Path, within: Duration) -> (u16, String) {
        let out = self
            .command("curl")
            .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time"])
            .arg(format!("{:.1}", within.as_secs_f64()))
            .arg("--cacert")
            .arg(ca)
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

    /// Starts recording every frame that crosses the switch (tcpdump on the bridge, in the
    /// switch's namespace) into `file`; returns once tcpdump listens. [`Capture::stop`] ends it.
    pub fn capture(&self, file: &Path) -> anyhow::Result<Capture> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.switch, "tcpdump", "-i", BRIDGE, "-n", "-U", "-s", "0", "-Z", "root", "-w"])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running tcpdump (install it: apt-get install tcpdump)")?;
        let stderr = child.stderr.take().context("tcpdump's stderr")?;
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        match lines.next() {
            Some(Ok(line)) if line.contains("listening on") => {}
            other => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("tcpdump did not start on the switch: {other:?}");
            }
        }
        Ok(Capture { child, file: file.to_owned() })
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

/// A running capture on a [`Network`]'s switch.
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    /// Stops tcpdump (SIGINT: it writes out what it holds) and returns the capture file's bytes.
    pub fn stop(mut self) -> anyhow::Result<Vec<u8>> {
        crate::signal(self.child.id(), libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                bail!("tcpdump did not stop within 10 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::read(&self.file).with_context(|| format!("reading the capture {}", self.file.display()))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// The two shards the netns tests start with, as a new shop's: a the even buckets, b the odd.
pub const TWO_SHARDS: [ShardSpec; 2] =
    [ShardSpec { name: "a", number: 0, buckets: "even" }, ShardSpec { name: "b", number: 1, buckets: "odd" }];

/// Each shard's `replica_max_lag_seconds` in a [`NetnsStack`].
const MAX_LAG: u64 = 5;
/// How long a process of the stack may take to answer its health check.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// The folder, in the stack's, of its CA and certificates: `ca.crt`, `edge.crt` (nginx's, for the
/// gateway's address) and one per host, `ROLE.crt`, naming [`SERVICE_NAME`] and the host's
/// address, which its verifier or backend serves and presents.
const CERTS: &str = "certs";

/// A whole stack, the gateway and every shard on a host of its own (see the module's doc).
pub struct NetnsStack {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub config: Config,
    /// Requests to nginx over HTTPS, trusting the stack's CA: from the client host only (the
    /// threads of [`NetnsStack::run`]).
    pub http: reqwest::Client,
    /// nginx's URL, `https://GATEWAY:PORT`.
    pub url: String,
    /// To the verifier and backends: trusts the internal CA and presents the gateway's
    /// certificate, as nginx and shopctl do.
    pub internal: reqwest::Client,
    /// nginx's host, with the auth MariaDB; `shopctl` runs there.
    pub gateway: Host,
    /// The verifier's host.
    pub verifier: Host,
    /// The host the test's own requests come from ([`NetnsStack::run`]).
    pub client: Host,
    procs: Mutex<BTreeMap<String, Child>>,
    /// `SHOP__…` overrides (the databases' URLs) every process of the stack gets.
    env: Mutex<Vec<(String, String)>>,
    shards: Mutex<BTreeMap<String, Arc<ShardHost>>>,
    auth_db: Topology,
    /// Last: its drop deletes the namespaces, after everything in them was stopped.
    pub net: Network,
}

impl NetnsStack {
    /// Runs `body` on a stack with `shards`, each on its own host, from the stack's client host:
    /// the thread `body` runs on and every thread of its runtime (two workers) are in that host's
    /// network namespace, so the test's requests to nginx, to the parts and to the databases
    /// cross the switch as a shopper's or an operator's tools would. Panics with the reason if the
    /// stack cannot start; a panic of `body` is the caller's.
    pub fn run<F, Fut>(shards: &[ShardSpec], body: F)
    where
        F: FnOnce(NetnsStack) -> Fut + Send,
        Fut: std::future::Future<Output = ()>,
    {
        // One such stack at a time in a test process: each holds six MariaDB instances (the auth
        // pair, two shards' pairs) and a growing one takes two more, while the topologies' slots
        // (`mariadb::MAX_INSTANCES`) are two sixes: two stacks growing at once would each wait for
        // the other's slots.
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let net = Network::create().unwrap_or_else(|e| panic!("{e:#}"));
                    let client = net.add_host("client").unwrap_or_else(|e| panic!("{e:#}"));
                    enter(&client).unwrap_or_else(|e| panic!("{e:#}"));
                    let ns = client.clone();
                    let runtime = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .on_thread_start(move || enter(&ns).unwrap_or_else(|e| panic!("{e:#}")))
                        .build()
                        .unwrap_or_else(|e| panic!("a runtime for the client host: {e}"));
                    runtime.block_on(async move {
                        let stack = match Self::try_start(net, client, shards).await {
                            Ok(s) => s,
                            Err(e) => panic!("could not start the network-namespace stack: {e:#}"),
                        };
                        body(stack).await;
                    });
                })
                .join()
        });
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    async fn try_start(net: Network, client: Host, specs: &[ShardSpec]) -> anyhow::Result<NetnsStack> {
        let gateway = net.add_host("gateway")?;
        let verifier_host = net.add_host("verifier")?;
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
        let certs = root.join(CERTS);
        crate::certs(&["ca".as_ref(), certs.as_os_str()])?;
        crate::certs(&["issue".as_ref(), certs.as_os_str(), "edge".as_ref(), gateway.addr.to_string().as_ref()])?;
        for host in [&gateway, &verifier_host].into_iter().chain(shard_hosts.iter().map(|s| &s.host)) {
            issue_host_certificate(&certs, host)?;
        }
        let mut file = ConfigBuilder::new(gateway.socket_addr(), &[verifier_host.socket_addr()])
            .set("nginx.tls.certificate", &format!("{CERTS}/edge.crt"))
            .set("nginx.tls.key", &format!("{CERTS}/edge.key"))
            .set("nginx.tls.redirect_listen", &gateway.socket_addr().to_string())
            .set("tls.ca", &format!("\"{CERTS}/ca.crt\""))
            .set("tls.certificate", &format!("\"{CERTS}/gateway.crt\""))
            .set("tls.key", &format!("\"{CERTS}/gateway.key\""))
            .set("tls.require_client_certificate", "true")
            .set("verifier.socket_dir", "\"\"")
            .set("nginx.debug_headers", "true")
            .set("nginx.worker_processes", "\"1\"")
            .set("verifier.hash_workers", "1")
            // Every shopper of a test comes from the client host's one address.
            .set("verifier.register_max_per_address", "1000")
            // As in `Stack`: every process here is in the test runner's one scheduling group.
            .set("verifier.hash_nice", "0")
            .set("verifier.hash_sched_idle", "false");
        for (key, value) in crate::UNLIMITED {
            file = file.set(key, value);
        }
        if let Some(user) = crate::nginx_user()? {
            file = file.set("nginx.user", user);
        }
        for (spec, shard) in specs.iter().zip(&shard_hosts) {
            file = file.shard(spec.name, spec.number, spec.buckets, shard.host.socket_addr());
        }
        // EdDSA, as a new shop is: the verifier signs with the private set, the backends on their
        // hosts hold only the public one (`spawn`).
        let file = crate::eddsa_keys(&root, file)?;
        let config_path = root.join("shop.toml");
        file.write(&config_path)?;
        let mut env = auth_db.overrides(MAX_LAG);
        for shard in &shard_hosts {
            env.extend(shard.db.overrides(MAX_LAG));
        }
        let config = Config::load_with_env(&config_path, env.clone())?;
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(certs.join("ca.crt"))?)?)
            .timeout(Duration::from_secs(30))
            .build()?;
        let tls = shopgate_core::tls::client_config(&config.tls)?.context("the stack's config has no [tls]")?;
        let internal =
            reqwest::Client::builder().timeout(Duration::from_secs(30)).use_preconfigured_tls(tls).build()?;
        let stack = NetnsStack {
            url: format!("https://{}", config.nginx.listen),
            dir,
            config_path,
            config,
            http,
            internal,
            gateway,
            verifier: verifier_host,
            client,
            procs: Mutex::new(BTreeMap::new()),
            env: Mutex::new(env),
            shards: Mutex::new(shard_hosts.into_iter().map(|s| (s.host.role.clone(), Arc::new(s))).collect()),
            auth_db,
            net,
        };
        stack.migrate()?;
        let verifier = stack.config.verifier.listen[0];
        let host = stack.verifier.clone();
        stack.spawn(&host, "verifier", bin("verifier"), &["--listen".into(), verifier.to_string()])?;
        for s in specs {
            stack.start_backend(s.name)?;
        }
        stack.wait_ready(&stack.internal, &stack.internal_url(verifier, "/healthz")).await?;
        for s in specs {
            let listen =
                stack.config.shard(s.name).with_context(|| format!("no shard {} in the config", s.name))?.addr();
            stack.wait_ready(&stack.internal, &stack.internal_url(listen, "/healthz")).await?;
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
    pub fn auth_topology(&self) -> &Topology {
        &self.auth_db
    }

    /// The stack's CA: nginx's certificate and every host's chain to it.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join(CERTS).join("ca.crt")
    }

    /// One more shard host (its MariaDB primary and replica, running, and its certificate) on
    /// this stack's network; its URLs join the `SHOP__…` overrides of every process started from
    /// now on. The shard's backend is for the caller to start ([`NetnsStack::start_backend`])
    /// once the stack's config names the shard.
    pub async fn add_shard_host(&self, name: &str) -> anyhow::Result<Arc<ShardHost>> {
        let shard = Arc::new(ShardHost::start(&self.net, name).await?);
        issue_host_certificate(&self.dir.path().join(CERTS), &shard.host)?;
        self.env.lock().unwrap_or_else(|e| e.into_inner()).extend(shard.db.overrides(MAX_LAG));
        self.shards.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), shard.clone());
        Ok(shard)
    }

    /// Starts shard `name`'s backend on its host (as `backend-NAME`), without waiting for it.
    pub fn start_backend(&self, name: &str) -> anyhow::Result<()> {
        let host = self.shard(name).host.clone();
        self.spawn(&host, &format!("backend-{name}"), bin("backend"), &["--shard".into(), name.into()])
    }

    /// nginx on the gateway, with its master (`shopctl shards add` and `move` reload it), on the
    /// config `shopctl nginx render` writes, as it is.
    async fn start_nginx(&self) -> anyhow::Result<()> {
        let prefix = self.dir.path().join("nginx");
        let conf = prefix.join("nginx.conf");
        let out = self.shopctl().args(["nginx", "render", "--output"]).arg(&conf).output()?;
        if !out.status.success() {
            bail!("shopctl nginx render failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let err = crate::nginx_logs(&prefix)?;
        let mut args: Vec<String> =
            vec!["-p".into(), path_arg(&prefix), "-c".into(), path_arg(&conf), "-e".into(), path_arg(&err)];
        let check = self.gateway.command(nginx_bin()).arg("-q").arg("-t").args(&args).output()?;
        if !check.status.success() {
            bail!("nginx -t: {}", String::from_utf8_lossy(&check.stderr));
        }
        args.extend(["-g".into(), "daemon off; master_process on;".into()]);
        self.spawn(&self.gateway, "nginx", nginx_bin(), &args)?;
        self.wait_ready(&self.http, &format!("{}/healthz", self.url)).await
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Starts `program ARGS` on `host` as process `name`, its output in `NAME.log`. A verifier or
    /// backend serves and presents its host's certificate; a backend is told the private key set
    /// is a file that does not exist ([`NO_KEYS_FILE`]): it must start on the public set alone.
    fn spawn(&self, host: &Host, name: &str, program: PathBuf, args: &[String]) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(name))?;
        // The migrator's URLs are shopctl's alone.
        let (_, mut env) = crate::split_migrator_env(self.env.lock().unwrap_or_else(|e| e.into_inner()).clone());
        if name.starts_with("backend-") {
            env.push(("SHOP__JWT__KEYS_FILE".into(), self.dir.path().join(NO_KEYS_FILE).display().to_string()));
        }
        let certs = self.dir.path().join(CERTS);
        let child = host
            .command(&program)
            .args(args)
            .env("SHOP_CONFIG", &self.config_path)
            .envs(env)
            .env("SHOP__TLS__CERTIFICATE", certs.join(format!("{}.crt", host.role)))
            .env("SHOP__TLS__KEY", certs.join(format!("{}.key", host.role)))
            .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} on {}", program.display(), host.netns))?;
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), child);
        Ok(())
    }

    /// Waits until `url` answers 200 to `client`, from the client host.
    async fn wait_ready(&self, client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(url).timeout(Duration::from_secs(1)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            self.check_alive()?;
            if started.elapsed() > READY_WITHIN {
                bail!("{url} not ready after {READY_WITHIN:?}; logs:\n{}", self.logs());
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

impl Shop for NetnsStack {
    fn migrator_env(&self) -> Vec<(String, String)> {
        crate::split_migrator_env(self.env.lock().unwrap_or_else(|e| e.into_inner()).clone()).0
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn internal(&self) -> &reqwest::Client {
        &self.internal
    }

    fn internal_url(&self, addr: SocketAddr, path: &str) -> String {
        format!("https://{addr}{path}")
    }

    /// Run on the gateway host, as an operator's would be: it reads the shard map from the auth
    /// database there, and reaches the shards' databases and backends across the switch.
    fn shopctl(&self) -> Command {
        let env = self.env.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut c = self.gateway.command(bin("shopctl"));
        c.env("SHOP_CONFIG", &self.config_path)
            .envs(env)
            .env("SHOPCTL_URL", &self.url)
            .env("SHOPCTL_CA_FILE", self.ca_file())
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg"))
            .env_remove("SHOP_JWT_KEY")
            .stdin(Stdio::null());
        c
    }

    /// On a host of its own with its own MariaDB primary and replica ([`NetnsStack::add_shard_host`]):
    /// `overrides` are added to the host's databases' URLs.
    async fn add_shard(&mut self, name: &str, number: u8, overrides: Vec<(String, String)>) -> anyhow::Result<()> {
        let shard = self.add_shard_host(name).await?;
        let listen = shard.host.socket_addr();
        crate::grow::add_shard_to_file(&self.config_path, name, number, listen)?;
        let env = {
            let mut env = self.env.lock().unwrap_or_else(|e| e.into_inner());
            env.extend(overrides);
            env.clone()
        };
        self.config = Config::load_with_env(&self.config_path, env)
            .with_context(|| format!("the config with shard {name} added"))?;
        self.migrate()?;
        self.start_backend(name)?;
        self.wait_ready(&self.internal, &self.internal_url(listen, "/healthz")).await?;
        self.ctl(&["shards", "add", name]).ok();
        Ok(())
    }
}

impl Drop for NetnsStack {
    fn drop(&mut self) {
        let procs = std::mem::take(&mut *self.procs.lock().unwrap_or_else(|e| e.into_inner()));
        for (name, mut child) in procs {
            // An nginx master killed outright would leave its worker serving: a fast shutdown first.
            if name == "nginx" {
                crate::signal(child.id(), libc::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
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

/// `certs/ROLE.crt` and `.key` for `host`: [`SERVICE_NAME`], which nginx and shopctl check, and
/// the host's address.
fn issue_host_certificate(certs: &Path, host: &Host) -> anyhow::Result<()> {
    let addr = host.addr.to_string();
    crate::certs(&["issue".as_ref(), certs.as_os_str(), host.role.as_ref(), SERVICE_NAME.as_ref(), addr.as_ref()])
}

/// Moves the calling thread into `host`'s network namespace: its sockets from then on are the
/// host's.
fn enter(host: &Host) -> anyhow::Result<()> {
    let path = Path::new("/var/run/netns").join(&host.netns);
    let ns = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&ns),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .with_context(|| format!("entering the network namespace {}", host.netns))
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
