//! The end-to-end harness: a whole stack per test, from the real binaries.
//!
//! [`Stack::start`] writes a config and key into a fresh temp folder with free ports, starts the
//! `verifier` and both `backend` shards (one process each, or [`Options::backends_per_shard`])
//! from the workspace's target folder, renders nginx's config with the real `shopctl nginx
//! render`, starts the system's nginx on it and waits until all of it answers. Dropping the stack
//! stops every process. Tests run in parallel; nothing is shared but, when they run as root, the
//! account nginx's workers run as ([`NGINX_USER`]).

pub mod cli;
pub mod grow;
pub mod load;
pub mod mariadb;
pub mod netns;
pub mod processes;
pub mod shard_data;
pub mod shop;

pub use shop::Shop;

use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use shopgate_core::config::{ensure_dev_key, Config, ConfigBuilder, DEV_KEY_FILE, SERVICE_NAME};
use shopgate_core::token::new_claims;
use shopgate_core::UserId;

/// A password that meets the policy.
pub const PASSWORD: &str = "Corr3ct-Horse!";

static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port nobody in this process has been handed before, that was free a moment ago.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0);
        let mut seen = PORTS.lock().unwrap_or_else(|e| e.into_inner());
        if port != 0 && seen.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// The folder with the workspace's built binaries: `SHOPGATE_BIN_DIR`, else the one this test
/// binary was built into (`target/<profile>/deps/..`).
pub(crate) fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHOPGATE_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.is_file(), "{} is not built: run `cargo build --workspace` first (scripts/test does)", p.display());
    p
}

/// `name` from `dir` if given (another release's), else this build's.
fn service_bin(dir: &Option<PathBuf>, name: &str) -> PathBuf {
    match dir {
        Some(dir) => dir.join(name),
        None => bin(name),
    }
}

/// The previous release's verifier and backend, which `scripts/previous-release` builds from git
/// (`scripts/test` runs it first); its `RELEASE` and `COMMIT` files say which.
pub fn previous_release() -> PathBuf {
    let dir = bin_dir().parent().map(|t| t.join("previous-release/bin")).unwrap_or_default();
    assert!(
        dir.join("verifier").is_file() && dir.join("backend").is_file(),
        "{} has no previous release: run scripts/previous-release first (scripts/test does)",
        dir.display()
    );
    dir
}

pub fn nginx_bin() -> PathBuf {
    std::env::var_os("NGINX_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"))
}

/// The account nginx's workers run as (`nginx.user`) when the tests run as root, as under
/// `scripts/up`: the verifiers' sockets are its group's. An nginx master then drops its workers to
/// it; without a master (`nginx_master: false`) the one process stays root.
pub const NGINX_USER: &str = "shopgate-nginx";

/// [`NGINX_USER`] when the tests run as root, made as `scripts/up` makes it if missing; `None`
/// otherwise (nginx's workers are then the tests' own user).
pub fn nginx_user() -> anyhow::Result<Option<&'static str>> {
    static MADE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    let made = MADE.get_or_init(|| {
        let exists = || Command::new("id").arg(NGINX_USER).output().is_ok_and(|o| o.status.success());
        if exists() {
            return Ok(());
        }
        let out = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", NGINX_USER])
            .output()
            .map_err(|e| format!("running useradd: {e}"))?;
        // Another test run may have made it meanwhile.
        if out.status.success() || exists() {
            Ok(())
        } else {
            Err(format!("useradd {NGINX_USER}: {}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    made.clone().map(|()| Some(NGINX_USER)).map_err(anyhow::Error::msg)
}

/// nginx's log folder in its prefix (`logs/`, as the template names it), made for its master's
/// user alone; returns the error log's path, for `-e`.
pub(crate) fn nginx_logs(prefix: &Path) -> anyhow::Result<PathBuf> {
    let logs = prefix.join("logs");
    std::fs::create_dir_all(&logs)?;
    set_mode(&logs, 0o700)?;
    Ok(logs.join("error.log"))
}

#[derive(Debug, Clone)]
pub struct Options {
    pub debug_headers: bool,
    pub verifiers: usize,
    pub auth_cache_seconds: u32,
    /// EdDSA with a key file of one key `k1` (made by `shopctl keys generate`, with its public set
    /// beside it), instead of an HS256 key. The backends get the public set only
    /// (`jwt.public_keys_file`), and `jwt.keys_file` overridden to a file that does not exist
    /// ([`NO_KEYS_FILE`]): a backend that read the private set would not start.
    pub eddsa: bool,
    /// The HS256 key file's content, instead of a random key.
    pub hs256_key: Option<String>,
    /// More settings by dotted key, as [`ConfigBuilder::set`] takes them:
    /// `("verifier.hash_queue", "2")`.
    pub settings: Vec<(&'static str, &'static str)>,
    /// `SHOP__…` config overrides, set for every process the stack runs (and its `shopctl`), e.g.
    /// MariaDB URLs from [`mariadb::Topology::overrides`]. `SHOP_MIGRATOR_…` entries among them
    /// (the migrator's URLs) are given to `shopctl migrate` alone ([`Stack::migrate`]).
    pub config_overrides: Vec<(String, String)>,
    /// nginx with its master process (as `scripts/up` runs it), so [`Stack::reload_nginx`] works;
    /// otherwise one nginx process without a master.
    pub nginx_master: bool,
    /// Backend processes per shard (at least 1), each on its own port and in nginx's upstream of
    /// the shard. Instance 0 of shard `a` is the process `backend-a`, instance N `backend-a.N`
    /// ([`backend_process`]).
    pub backends_per_shard: usize,
    /// HTTPS at the edge: a CA and an edge certificate for 127.0.0.1 and localhost, made with
    /// `scripts/certs` in the stack's folder (`certs/`), in `[nginx.tls]` with a plain-HTTP
    /// `redirect_listen` ([`Stack::redirect`]). [`Stack::url`] is then `https://…`, and
    /// [`Stack::http`] and [`Stack::shopctl`] (`SHOPCTL_CA_FILE`) trust the CA.
    pub tls: bool,
    /// TLS between the stack's parts (`[tls]`), client certificates required: a CA and one
    /// certificate for every part made by `scripts/certs` in `certs/` ([`CERTS_DIR`]), the
    /// verifiers' unix sockets off so nginx reaches them over TLS too.
    pub internal_tls: bool,
    /// The verifier and backend binaries from this folder instead of this build's: the previous
    /// release's ([`previous_release`]), for the mixed-version test. nginx's config and
    /// `shopctl` (the migration included) stay this build's.
    pub services: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            debug_headers: true,
            verifiers: 1,
            auth_cache_seconds: 0,
            eddsa: false,
            hs256_key: None,
            settings: Vec::new(),
            config_overrides: Vec::new(),
            nginx_master: false,
            backends_per_shard: 1,
            tls: false,
            internal_tls: false,
            services: None,
        }
    }
}

/// The stack's name of backend process `instance` of `shard`: `backend-a` for instance 0 (a shard's
/// only process, as ever), `backend-a.1` for the next, the name [`Stack::kill`] and its kin take
/// and the log file's (`backend-a.1.log`).
pub fn backend_process(shard: &str, instance: usize) -> String {
    match instance {
        0 => format!("backend-{shard}"),
        n => format!("backend-{shard}.{n}"),
    }
}

/// How a verifier or backend of a stack is started, and where it answers when ready.
#[derive(Clone)]
struct ProcessSpec {
    program: PathBuf,
    args: Vec<String>,
    /// Environment of its own, after the stack's.
    env: Vec<(String, String)>,
    health: String,
}

/// The folder, in the stack's, of the CA and certificate of a stack started with `internal_tls`:
/// `ca.crt`, `ca.key`, `internal.crt`, `internal.key`.
pub const CERTS_DIR: &str = "certs";

/// `scripts/certs ARGS…`: a CA, or a certificate it signs.
pub fn certs(args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/certs");
    let out = Command::new(&script).args(args).stdin(Stdio::null()).output().context("running scripts/certs")?;
    if !out.status.success() {
        bail!("scripts/certs {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The EdDSA key file of a stack started with `eddsa: true`.
pub const KEYS_FILE: &str = "jwt-keys.json";
/// Its public set, which the backends load: written beside it by `shopctl keys`.
pub const PUBLIC_KEYS_FILE: &str = "jwt-keys.public.json";
/// An EdDSA key set `k1` in `root`, made as an operator makes one (`shopctl keys generate`:
/// [`KEYS_FILE`] and its public set [`PUBLIC_KEYS_FILE`]), and `file` set to use them.
pub(crate) fn eddsa_keys(root: &Path, file: ConfigBuilder) -> anyhow::Result<ConfigBuilder> {
    let out = Command::new(bin("shopctl"))
        .args(["keys", "generate", "--kid", "k1", "--out"])
        .arg(root.join(KEYS_FILE))
        .stdin(Stdio::null())
        .output()
        .context("running shopctl keys generate")?;
    if !out.status.success() {
        bail!("shopctl keys generate failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(file.eddsa(KEYS_FILE).public_keys(PUBLIC_KEYS_FILE))
}

/// What the backends of an EdDSA stack are told `jwt.keys_file` is: a file that never exists, so a
/// backend that read the private set instead of the public one fails to start.
pub const NO_KEYS_FILE: &str = "no-private-key-on-backend-hosts.json";

/// The limits per client, off: every client of a test comes from one address (127.0.0.1, or the
/// client host's), at rates no single client of a real shop has, and many tests send one user's
/// requests in bursts to race them (idempotency, moves). The tests of the limits themselves
/// (`e2e/tests/e2e/edge.rs`) set them again in their own settings.
pub const UNLIMITED: [(&str, &str); 4] = [
    ("nginx.limit_auth_per_minute", "0"),
    ("nginx.limit_api_per_second", "0"),
    ("nginx.limit_connections_per_address", "0"),
    ("backend.max_per_user", "0"),
];

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub config_path: PathBuf,
    pub config: Config,
    pub http: reqwest::Client,
    /// To the verifiers and backends themselves: [`Stack::http`], or with `internal_tls` HTTPS that
    /// trusts the stack's CA and presents its certificate, as nginx and shopctl do.
    pub internal: reqwest::Client,
    /// `http`, or `https` with `internal_tls`: how the verifiers and backends are reached.
    scheme: &'static str,
    procs: Mutex<BTreeMap<String, Child>>,
    /// How each verifier and backend was started, to start it again.
    specs: Mutex<BTreeMap<String, ProcessSpec>>,
    env: Vec<(String, String)>,
    /// `shopctl migrate`'s own environment: the migrator's URLs, which no service is given.
    migrator_env: Vec<(String, String)>,
    /// The backends' own environment, after `env` (see [`Options::eddsa`]).
    backend_env: Vec<(String, String)>,
    nginx_master: bool,
    /// The CA of the edge's certificate, with [`Options::tls`].
    pub ca_file: Option<PathBuf>,
    /// The plain-HTTP listener that redirects to HTTPS, with [`Options::tls`].
    pub redirect: Option<SocketAddr>,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Stack {
        match Self::try_start(opts).await {
            Ok(s) => s,
            Err(e) => panic!("could not start the stack: {e:#}"),
        }
    }

    async fn try_start(opts: Options) -> anyhow::Result<Stack> {
        let dir = tempfile::Builder::new().prefix("shopgate-e2e.").tempdir()?;
        let root = dir.path().to_path_buf();
        // nginx's workers run as an unprivileged user when the tests run as root.
        set_mode(&root, 0o755)?;
        std::fs::create_dir_all(root.join("nginx"))?;
        set_mode(&root.join("nginx"), 0o755)?;
        let nginx = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let verifiers: Vec<SocketAddr> =
            (0..opts.verifiers.max(1)).map(|_| SocketAddr::from(([127, 0, 0, 1], free_port()))).collect();
        let ports = |_| SocketAddr::from(([127, 0, 0, 1], free_port()));
        let shard_a: Vec<SocketAddr> = (0..opts.backends_per_shard.max(1)).map(ports).collect();
        let shard_b: Vec<SocketAddr> = (0..opts.backends_per_shard.max(1)).map(ports).collect();
        let mut file = ConfigBuilder::new(nginx, &verifiers)
            .shard_processes("a", 0, "even", &shard_a)
            .shard_processes("b", 1, "odd", &shard_b)
            .set("nginx.debug_headers", &opts.debug_headers.to_string())
            .set("nginx.auth_cache_seconds", &opts.auth_cache_seconds.to_string())
            .set("nginx.worker_processes", "\"1\"")
            .set("verifier.hash_workers", "1")
            // A running shop has each service in a scheduling group of its own (a systemd unit, a
            // container), where nice 19 ranks the hashing threads below the verifier's other
            // threads only. Every process of every stack here is in the test runner's one group,
            // where nice 19 would rank them below all the other stacks' processes too: on a busy
            // run a hash then waits seconds, past nginx's timeouts; in the SCHED_IDLE class, longer.
            .set("verifier.hash_nice", "0");
        // The previous release's services refuse a key they do not know, so its stacks get only
        // the keys it had: its hashing threads were never SCHED_IDLE, and its nginx config (this
        // build's, from the same file) keeps the door's default limits, which its test stays under.
        if opts.services.is_none() {
            file = file.set("verifier.hash_sched_idle", "false");
            for (key, value) in UNLIMITED {
                file = file.set(key, value);
            }
        }
        if let Some(user) = nginx_user()? {
            file = file.set("nginx.user", user);
        }
        if opts.internal_tls {
            let dir = root.join(CERTS_DIR);
            certs(&["ca".as_ref(), dir.as_os_str()])?;
            // The name nginx and shopctl check, and the addresses for clients that check those.
            let sans = [SERVICE_NAME, "localhost", "127.0.0.1"];
            let mut args = vec!["issue".as_ref(), dir.as_os_str(), "internal".as_ref()];
            args.extend(sans.iter().map(|s| std::ffi::OsStr::new(*s)));
            certs(&args)?;
            file = file
                .set("tls.ca", &format!("\"{CERTS_DIR}/ca.crt\""))
                .set("tls.certificate", &format!("\"{CERTS_DIR}/internal.crt\""))
                .set("tls.key", &format!("\"{CERTS_DIR}/internal.key\""))
                .set("tls.require_client_certificate", "true")
                .set("verifier.socket_dir", "\"\"");
        }
        for (key, value) in &opts.settings {
            file = file.set(key, value);
        }
        if opts.eddsa {
            file = eddsa_keys(&root, file)?;
        }
        let (mut ca_file, mut redirect) = (None, None);
        if opts.tls {
            let certs = root.join("certs");
            let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/certs"))
                .arg("issue")
                .arg(&certs)
                .args(["edge", "localhost", "127.0.0.1"])
                .stdin(Stdio::null())
                .output()
                .context("running scripts/certs")?;
            if !out.status.success() {
                bail!("scripts/certs issue failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let plain = SocketAddr::from(([127, 0, 0, 1], free_port()));
            file = file
                .set("nginx.tls.certificate", "certs/edge.crt")
                .set("nginx.tls.key", "certs/edge.key")
                .set("nginx.tls.redirect_listen", &plain.to_string());
            ca_file = Some(certs.join("ca.crt"));
            redirect = Some(plain);
        }
        match &opts.hs256_key {
            Some(key) => std::fs::write(root.join(DEV_KEY_FILE), key)?,
            None => ensure_dev_key(&root.join(DEV_KEY_FILE))?,
        }
        let config_path = root.join("shop.toml");
        file.write(&config_path)?;
        let config = Config::load_with_env(&config_path, opts.config_overrides.clone())?;
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if let Some(ca) = &ca_file {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?);
        }
        let http = http.build()?;
        let (internal, scheme) = match shopgate_core::tls::client_config(&config.tls)? {
            Some(tls) => (
                reqwest::Client::builder().timeout(Duration::from_secs(30)).use_preconfigured_tls(tls).build()?,
                "https",
            ),
            None => (http.clone(), "http"),
        };
        let backend_env = match opts.eddsa {
            true => vec![("SHOP__JWT__KEYS_FILE".to_owned(), root.join(NO_KEYS_FILE).display().to_string())],
            false => Vec::new(),
        };
        let (migrator_env, env) = split_migrator_env(opts.config_overrides);
        let stack = Stack {
            url: config.nginx.url(),
            dir,
            config_path,
            config,
            http,
            internal,
            scheme,
            procs: Mutex::new(BTreeMap::new()),
            specs: Mutex::new(BTreeMap::new()),
            env,
            migrator_env,
            backend_env,
            nginx_master: opts.nginx_master,
            ca_file,
            redirect,
        };
        stack.migrate()?;
        for (i, addr) in stack.config.verifier.listen.clone().iter().enumerate() {
            let name = format!("verifier-{i}");
            let spec = ProcessSpec {
                program: service_bin(&opts.services, "verifier"),
                args: vec!["--listen".into(), addr.to_string()],
                env: Vec::new(),
                health: format!("{scheme}://{addr}/healthz"),
            };
            stack.specs.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), spec);
            stack.start_process(&name)?;
        }
        for s in stack.config.shards.clone() {
            for (instance, addr) in s.listen.iter().enumerate() {
                let name = backend_process(s.name.as_str(), instance);
                let args = vec!["--shard".into(), s.name.as_str().into(), "--instance".into(), instance.to_string()];
                let spec = ProcessSpec {
                    program: service_bin(&opts.services, "backend"),
                    args,
                    env: stack.backend_env.clone(),
                    health: format!("{scheme}://{addr}/healthz"),
                };
                stack.specs.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), spec);
                stack.start_process(&name)?;
            }
        }
        for addr in stack.config.verifier.listen.clone() {
            stack.wait_ready(&stack.internal_url(addr, "/healthz")).await?;
        }
        for s in stack.config.shards.clone() {
            for addr in &s.listen {
                stack.wait_ready(&stack.internal_url(*addr, "/healthz")).await?;
            }
        }
        let out = stack.shopctl().args(["nginx", "render", "--output"]).arg(root.join("nginx/nginx.conf")).output()?;
        if !out.status.success() {
            bail!("shopctl nginx render failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        stack.spawn_nginx()?;
        stack.wait_ready(&format!("{}/healthz", stack.url)).await?;
        Ok(stack)
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Starts a verifier or backend as [`Stack::start`] did (its log is appended to).
    fn start_process(&self, name: &str) -> anyhow::Result<()> {
        let spec = self.specs.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned();
        let spec = spec.with_context(|| format!("no process {name} in this stack"))?;
        let args: Vec<&str> = spec.args.iter().map(String::as_str).collect();
        self.spawn(name, spec.program, &args, &spec.env)
    }

    fn spawn(&self, name: &str, program: PathBuf, args: &[&str], env: &[(String, String)]) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(name))?;
        let child = Command::new(&program)
            .args(args)
            .env("SHOP_CONFIG", &self.config_path)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), child);
        Ok(())
    }

    fn spawn_nginx(&self) -> anyhow::Result<()> {
        let prefix = self.dir.path().join("nginx");
        let conf = prefix.join("nginx.conf");
        let err = nginx_logs(&prefix)?;
        let check = Command::new(nginx_bin())
            .args(["-q", "-t", "-p"])
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&err)
            .output()
            .context("running nginx -t (is nginx installed? scripts/test installs it)")?;
        if !check.status.success() {
            bail!("nginx -t: {}", String::from_utf8_lossy(&check.stderr));
        }
        let log = std::fs::File::create(self.log_path("nginx"))?;
        let child = Command::new(nginx_bin())
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&err)
            .args([
                "-g",
                if self.nginx_master { "daemon off; master_process on;" } else { "daemon off; master_process off;" },
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).insert("nginx".into(), child);
        Ok(())
    }

    async fn wait_ready(&self, url: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        // nginx's edge certificate is not the stack's own (with both `tls` and `internal_tls`).
        let internal = url.starts_with("https:") && !url.starts_with(&self.url);
        let client = if internal { &self.internal } else { &self.http };
        loop {
            if let Ok(r) = client.get(url).timeout(Duration::from_secs(1)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("{url} not ready after 30 s; logs:\n{}", self.logs());
            }
            self.check_alive()?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn check_alive(&self) -> anyhow::Result<()> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        for (name, child) in procs.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited with {status}; logs:\n{}", self.logs());
            }
        }
        Ok(())
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for e in entries.flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    out.push_str(&log_tail(&e.path(), 30));
                }
            }
        }
        out.push_str(&std::fs::read_to_string(self.dir.path().join("nginx/logs/error.log")).unwrap_or_default());
        out
    }

    /// Sends SIGHUP to a process of the stack (the verifier and backends reload their keys).
    pub fn hangup(&self, name: &str) {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(child) = procs.get(name) {
            signal(child.id(), libc::SIGHUP);
        }
    }

    /// Freezes a process of the stack with SIGSTOP: it keeps its sockets (connections are still
    /// accepted by the kernel) but answers nothing until [`Stack::cont`].
    pub fn stop(&self, name: &str) {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let pid = procs.get(name).unwrap_or_else(|| panic!("no process {name} in the stack")).id();
        // kill(1) returning says the signal was sent, not that every thread has stopped; a test
        // that relies on the freeze waits until the kernel shows each thread stopped ('T').
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            signal(pid, libc::SIGSTOP);
            if all_threads_stopped(pid) {
                return;
            }
            assert!(Instant::now() < deadline, "{name} (pid {pid}) did not stop within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lets a process frozen by [`Stack::stop`] run again (SIGCONT).
    pub fn cont(&self, name: &str) {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(child) = procs.get(name) {
            signal(child.id(), libc::SIGCONT);
        }
    }

    /// The process id of a running process of the stack.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).get(name).map(Child::id)
    }

    /// The names of the running processes.
    pub fn processes(&self) -> Vec<String> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }

    /// Kills a process of the stack (`verifier-0`, `backend-a`, `backend-a.1`, `nginx`) at once.
    pub fn kill(&self, name: &str) {
        let child = self.procs.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        if let Some(child) = child {
            self.stop_now(name, child);
        }
    }

    /// SIGKILL, except to an nginx master: that would leave its workers serving, so it gets a
    /// fast shutdown (SIGTERM) first.
    fn stop_now(&self, name: &str, mut child: Child) {
        if name == "nginx" && self.nginx_master {
            signal(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops a process of the stack gracefully: SIGTERM, then waits for it to exit (at most 30 s,
    /// then kills it and panics). Returns how it exited. Other tasks keep running meanwhile.
    pub async fn terminate(&self, name: &str) -> std::process::ExitStatus {
        let child = self.procs.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        let mut child = child.unwrap_or_else(|| panic!("no running process {name}"));
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{name} did not exit within 30 s of SIGTERM; logs:\n{}", self.logs());
                }
            }
        }
    }

    /// Starts a verifier or backend stopped by [`Stack::terminate`] or [`Stack::kill`] again, with
    /// the same arguments, and waits until it answers its health check.
    pub async fn restart(&self, name: &str) {
        if let Err(e) = self.start_process(name) {
            panic!("restarting {name}: {e:#}");
        }
        let url = self
            .specs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map(|s| s.health.clone())
            .unwrap_or_default();
        if let Err(e) = self.wait_ready(&url).await {
            panic!("{name} did not come back: {e:#}");
        }
    }

    /// `nginx -s reload`: SIGHUP to the nginx master (a stack started with `nginx_master: true`).
    /// Returns at once; the master starts new workers and lets the old ones finish.
    pub fn reload_nginx(&self) {
        assert!(self.nginx_master, "reload_nginx needs a stack started with nginx_master: true");
        self.hangup("nginx");
    }

    /// A token for any user id, signed with the stack's key (as `shopctl tokens mint` does).
    pub fn mint(&self, user_id: u64) -> String {
        let user = UserId::new(user_id).unwrap_or_else(|e| panic!("{e}"));
        let claims = new_claims(user, &format!("user{user_id}@example.com"), &self.config.jwt.policy, now(), 600);
        self.config.jwt.sign(&claims).unwrap_or_else(|| panic!("the stack's keys cannot sign"))
    }

    /// Verifier `i`'s `/metrics` value of `series` (the name with its labels, as printed:
    /// `shop_logins_total{result="ok"}`), or `None` if it does not print that series.
    pub async fn verifier_metric(&self, i: usize, series: &str) -> Option<f64> {
        let url = self.internal_url(self.config.verifier.listen[i], "/metrics");
        let text = self.internal.get(url).send().await.ok()?.text().await.ok()?;
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
    }

    /// Places an order of one of product 1 with `token` through nginx; the order as answered
    /// (asserting 201).
    pub async fn order(&self, token: &str) -> Value {
        let r = self
            .http
            .post(self.api("/api/orders"))
            .bearer_auth(token)
            .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("placing an order: {e}"));
        assert_eq!(r.status(), 201, "placing an order");
        r.json().await.unwrap_or_else(|e| panic!("the order's answer: {e}"))
    }

    /// Registers and logs in a fresh user; returns (user id, token).
    pub async fn shopper(&self) -> (u64, String) {
        let email = format!("shopper-{}@example.com", rand_hex(8));
        let user = self.register(&email).await;
        let token = self.login(&email).await;
        (user["id"].as_u64().unwrap_or_else(|| panic!("no id in {user}")), token)
    }
}

impl Shop for Stack {
    fn migrator_env(&self) -> Vec<(String, String)> {
        self.migrator_env.clone()
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
        format!("{}://{addr}{path}", self.scheme)
    }

    fn shopctl(&self) -> Command {
        let mut c = Command::new(bin("shopctl"));
        c.env("SHOP_CONFIG", &self.config_path)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("SHOPCTL_URL", &self.url)
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg"))
            .env_remove("SHOP_JWT_KEY")
            .env_remove("SHOPCTL_CA_FILE")
            .stdin(Stdio::null());
        if let Some(ca) = &self.ca_file {
            c.env("SHOPCTL_CA_FILE", ca);
        }
        c
    }

    /// The shard's database is `sqlite:shard-NAME.db` unless `overrides` say otherwise (e.g.
    /// [`mariadb::Topology::shard_overrides`]); its backend is `backend-NAME` on loopback. nginx
    /// must run with its master (`nginx_master: true`).
    async fn add_shard(&mut self, name: &str, number: u8, overrides: Vec<(String, String)>) -> anyhow::Result<()> {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        grow::add_shard_to_file(&self.config_path, name, number, listen)?;
        let (migrator_env, env) = split_migrator_env(overrides);
        self.env.extend(env);
        self.migrator_env.extend(migrator_env);
        self.config = Config::load_with_env(&self.config_path, self.env.clone())
            .with_context(|| format!("the config with shard {name} added"))?;
        self.migrate()?;
        let process = backend_process(name, 0);
        let health = self.internal_url(listen, "/healthz");
        let spec = ProcessSpec {
            program: bin("backend"),
            args: vec!["--shard".into(), name.into()],
            env: self.backend_env.clone(),
            health: health.clone(),
        };
        self.specs.lock().unwrap_or_else(|e| e.into_inner()).insert(process.clone(), spec);
        self.start_process(&process)?;
        self.wait_ready(&health).await?;
        self.ctl(&["shards", "add", name]).ok();
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let procs = std::mem::take(&mut *self.procs.lock().unwrap_or_else(|e| e.into_inner()));
        for (name, child) in procs {
            self.stop_now(&name, child);
        }
        if std::env::var_os("KEEP_STACK").is_some() {
            let path = self.dir.path().to_path_buf();
            eprintln!("keeping {}", path.display());
            std::mem::forget(std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))));
        }
    }
}

/// Environment variables, `(name, value)`.
pub(crate) type Env = Vec<(String, String)>;

/// `(SHOP_MIGRATOR_… entries, the rest)` of `overrides`.
pub(crate) fn split_migrator_env(overrides: Env) -> (Env, Env) {
    overrides.into_iter().partition(|(k, _)| k.starts_with("SHOP_MIGRATOR_"))
}

/// The last `lines` lines of the log at `path` under a `--- PATH` heading, for a failed test's
/// message (the heading alone if there is no such file).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    let mut out = format!("--- {}\n", path.display());
    for l in tail.into_iter().rev() {
        out.push_str(l);
        out.push('\n');
    }
    out
}

pub(crate) fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

pub fn rand_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read as _;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(buf);
    }
}

pub use shopgate_core::time::unix_now as now;

/// Sends a signal with kill(1): the workspace forbids unsafe code. A process that is gone already
/// is no error here (its "No such process" would only be noise in a test's output).
pub fn signal(pid: u32, sig: i32) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).stderr(Stdio::null()).status();
}

/// Whether every thread of `pid` is in the stopped state, by /proc/PID/task/*/stat.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // "pid (comm) S ...": the state follows the last ')'.
        stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) == Some("T")
    })
}
