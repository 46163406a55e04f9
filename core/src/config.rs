//! The stack's one config file (`shop.toml`), typed, loaded once and checked at start.
//!
//! Every part reads the same file: nginx's render, the verifier, each backend shard and shopctl.
//! Environment variables override the file: `SHOP__SECTION__KEY=value` sets `[section] key`
//! (e.g. `SHOP__VERIFIER__DATABASE_URL`, `SHOP__SHARDS__A__PRIMARY`), and `SHOP_JWT_KEY` gives the
//! HS256 key itself instead of `jwt.key_file`. Relative paths are relative to the config file.
//! Anything wrong (a weak key, a shard map with gaps, an unknown field) is one clear error here,
//! never a panic on the first request.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use base64::Engine as _;
use serde::Deserialize;

mod builder;
mod database;
mod edge;
#[cfg(test)]
mod other_files;
mod tls;

pub use builder::{ensure_dev_key, ConfigBuilder, DEV_KEYS_FILE, DEV_KEY_FILE, DEV_PUBLIC_KEYS_FILE};
pub use edge::{CorsOrigin, TrustedProxy};
pub use tls::{EdgeTls, TlsConfig, SERVICE_NAME};

use crate::ids::ShardName;
use crate::shardmap::{ShardMap, ShardMapError};
use crate::token::{Claims, EdKeys, Hs256Key, KeyError, KeyFile, Keys, Policy, Verifier};

/// A string that never prints: database URLs may carry passwords, keys are keys. (Tests serialize
/// the config's defaults to list its keys; nothing else may write one out.)
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(transparent)]
pub(crate) struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A database URL. Shown with any password masked.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(transparent)]
pub struct DbUrl(Secret);

impl DbUrl {
    pub fn new(s: impl Into<String>) -> Self {
        Self(Secret::new(s))
    }
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
    pub fn is_sqlite(&self) -> bool {
        self.expose().starts_with("sqlite:")
    }
    pub(crate) fn is_mysql(&self) -> bool {
        self.expose().starts_with("mysql:") || self.expose().starts_with("mariadb:")
    }
    /// The URL with any `user:password@` reduced to `user:***@`.
    pub(crate) fn redacted(&self) -> String {
        let s = self.expose();
        match (s.find("://"), s.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                let userinfo = &s[scheme_end + 3..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => format!("{}{}:***{}", &s[..scheme_end + 3], user, &s[at..]),
                    None => s.to_owned(),
                }
            }
            _ => s.to_owned(),
        }
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: environment override {var}: {message}")]
    Env { var: String, message: String },
    #[error("config: cannot read the JWT key file {path}: {source}")]
    KeyFile { path: PathBuf, source: std::io::Error },
    #[error("config: no JWT key: set jwt.key_file or SHOP_JWT_KEY (HS256), or jwt.keys_file (EdDSA)")]
    NoKey,
    #[error("config: the JWT key file {path}: {message}")]
    KeyFileContent { path: PathBuf, message: String },
    #[error("config: {0}")]
    Key(#[from] KeyError),
    #[error("config: jwt.algorithm {0:?} is not supported (use \"HS256\" or \"EdDSA\")")]
    Algorithm(String),
    #[error("config: shard map: {0}")]
    ShardMap(#[from] ShardMapError),
    #[error("config: {0}")]
    Invalid(String),
    /// The shard map in force gives buckets to a shard the config lacks ([`Config::check_owners`]).
    #[error(
        "config {path}: the shard map (version {version}) gives buckets {buckets} to shard {shard}, which the \
         config has no [shards.{shard}] for: put that section back (its databases and backend with it), or \
         move those buckets to a shard it has first"
    )]
    Unowned { path: PathBuf, version: u64, shard: String, buckets: String },
}

/// The file as written, one field per table. `[jwt]`, `[verifier]` and at least one
/// `[shards.NAME]` must be there; `[nginx]` and `[backend]` may be left out.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(Default, serde::Serialize))]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    nginx: NginxConfig,
    jwt: RawJwt,
    verifier: VerifierConfig,
    #[serde(default)]
    backend: BackendConfig,
    #[serde(default)]
    tls: TlsConfig,
    #[serde(default)]
    backup: BackupConfig,
    shards: BTreeMap<String, RawShard>,
}

/// `[jwt]` as written; [`Config::check`] loads the keys and makes it a [`JwtConfig`].
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
struct RawJwt {
    algorithm: String,
    /// HS256: a file holding the secret as text, or `base64url:` and the secret's bytes encoded.
    key_file: Option<PathBuf>,
    /// EdDSA: a JWK set file `{"signing_kid": .., "keys": [..]}` (the README's "Keys" says how to
    /// write one; `KeyFile::generate_jwk` makes a key).
    keys_file: Option<PathBuf>,
    /// EdDSA: the public set of `keys_file` (no `d`, no `signing_kid`; `shopctl keys` writes it),
    /// which the processes that only check tokens load instead ([`KeyUse::Verify`]), so that
    /// `keys_file` need not be on their hosts at all.
    public_keys_file: Option<PathBuf>,
    issuer: String,
    audience: String,
    ttl_seconds: i64,
    leeway_seconds: i64,
    /// How many verified tokens each process keeps, to skip their signature check (see
    /// `shopgate_core::token::Verifier::with_cache`); 0: none.
    verified_cache_entries: usize,
}

impl Default for RawJwt {
    fn default() -> Self {
        Self {
            algorithm: "HS256".into(),
            key_file: None,
            keys_file: None,
            public_keys_file: None,
            issuer: "shopgate".into(),
            audience: "shopgate-api".into(),
            ttl_seconds: 3600,
            leeway_seconds: 30,
            verified_cache_entries: 20_000,
        }
    }
}

/// The most `jwt.verified_cache_entries` a process may keep: about a gigabyte.
const MAX_VERIFIED_CACHE_ENTRIES: usize = 1_000_000;

/// `[shards.NAME]` as written; [`Config::check`] makes it a [`ShardConfig`]. `number`, `buckets`,
/// `listen` and `primary` have no default: `None` here is a key the file left out, which
/// [`Config::check`] refuses, naming the shard.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
struct RawShard {
    number: Option<u8>,
    buckets: Option<String>,
    listen: Option<Listen>,
    primary: Option<DbUrl>,
    replica: Option<DbUrl>,
    /// Past this lag reads go to the primary. monitoring/alerts.yml's `ReplicaLagging` fires at the
    /// same bound, which a test holds equal to this default.
    replica_max_lag_seconds: u64,
}

impl Default for RawShard {
    fn default() -> Self {
        Self { number: None, buckets: None, listen: None, primary: None, replica: None, replica_max_lag_seconds: 5 }
    }
}

/// `[shards.NAME] listen`: one address (one backend process, as before) or a list of them, one
/// per backend process of the shard. Parsed in [`check_listen`], which names the shard in errors.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(untagged, expecting = "an address (\"IP:port\") or a list of addresses, one per backend process")]
enum Listen {
    One(String),
    Many(Vec<String>),
}

impl Listen {
    fn into_vec(self) -> Vec<String> {
        match self {
            Listen::One(addr) => vec![addr],
            Listen::Many(addrs) => addrs,
        }
    }
}

/// The most backend processes one shard may have: each gets its own six-bit slot in order ids.
pub const MAX_PROCESSES_PER_SHARD: usize = 64;

/// nginx: where it listens and what the rendered config switches on. Every key has a default, so
/// a config without `[nginx]` means exactly [`NginxConfig::default`].
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct NginxConfig {
    pub listen: SocketAddr,
    /// nginx's prefix folder (pid, logs, temp files), relative to the config's folder until
    /// [`Config::load`] joins it to that folder.
    pub prefix: PathBuf,
    /// Adds `X-Shop-Shard` and `X-Shop-Upstream` to answers: which backend served.
    pub debug_headers: bool,
    /// Seconds nginx caches the verifier's 200 answers per token; 0 = off (revocation is then
    /// in force within the verifier's refresh bound alone).
    pub auth_cache_seconds: u32,
    /// Seconds nginx keeps each catalog answer (the catalog is public: one answer serves every
    /// client); 0 = off. A price change reaches clients within this plus `[backend]
    /// catalog_cache_ms`.
    pub catalog_cache_seconds: u32,
    pub worker_processes: String,
    /// Where nginx serves its own numbers (`/stub_status`, for `prometheus-nginx-exporter`), on
    /// a listener of its own that is never published; none = not served.
    pub status_listen: Option<SocketAddr>,
    /// The account nginx's worker processes run as when its master runs as root (rendered as
    /// `user NAME;`; nginx gives them the group of the same name). The verifiers' unix sockets are
    /// then that group's ([`VerifierConfig::socket_path`]), so those workers reach them and other
    /// users do not. None: nginx's own default (`nobody`, which other daemons share) for a root
    /// master, and sockets for the verifiers' own user only (an unprivileged nginx's workers are
    /// that user).
    pub user: Option<String>,
    /// HTTPS at the edge; none = plain HTTP, which is refused on an address that is not loopback
    /// unless `allow_plaintext` says so.
    pub tls: Option<EdgeTls>,
    /// nginx may listen in plaintext on an address that is not loopback (behind a load balancer
    /// that ends TLS itself, on a private network).
    pub allow_plaintext: bool,
    /// The load balancers in front of nginx (addresses or CIDRs): from these peers alone nginx
    /// takes the client's address from `X-Forwarded-For` (the last address in it that is not one
    /// of them), or from the PROXY protocol with `proxy_protocol`. Every limit, the verifiers'
    /// throttles and the access log then see the client's own address. None: the peer is the
    /// client, whatever it sends.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// The load balancers speak the PROXY protocol (v1 or v2) on `listen`, and the client's address
    /// comes from it rather than from `X-Forwarded-For`. Needs `trusted_proxies`.
    pub proxy_protocol: bool,
    /// Browser origins allowed to call the API (exact `scheme://host[:port]`); none by default.
    pub cors_origins: Vec<CorsOrigin>,
    /// Requests per minute one client address may make to `/auth/*`, past `limit_auth_burst`
    /// more at once; 0 = no limit at the door (the verifiers' own throttles stay).
    pub limit_auth_per_minute: u32,
    pub limit_auth_burst: u32,
    /// Requests per second one client address may make to `/api/*`, past `limit_api_burst` more
    /// at once; 0 = no limit.
    pub limit_api_per_second: u32,
    pub limit_api_burst: u32,
    /// Requests one client address may have in progress at once (nginx counts a connection once
    /// its request's head is read); 0 = no limit.
    pub limit_connections_per_address: u32,
    /// A client must send a request's whole head within this (a slowloris is cut then), and
    /// each part of its body within `client_body_timeout_seconds` of the last.
    pub client_header_timeout_seconds: u32,
    pub client_body_timeout_seconds: u32,
    /// Connections each nginx worker holds at once (clients and upstreams together); each worker
    /// may open twice that many files plus a margin (`worker_rlimit_nofile`).
    pub worker_connections: u32,
}

impl NginxConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError::Invalid(format!("nginx.{what}")));
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            return bad(
                "proxy_protocol needs nginx.trusted_proxies: the load balancers whose PROXY header is believed",
            );
        }
        if self.client_header_timeout_seconds == 0 || self.client_body_timeout_seconds == 0 {
            return bad("client_header_timeout_seconds and client_body_timeout_seconds must be at least 1");
        }
        if !(64..=1_000_000).contains(&self.worker_connections) {
            return bad("worker_connections must be 64-1000000");
        }
        Ok(())
    }

    /// Each worker's `worker_rlimit_nofile`: a client connection and its upstream connection per
    /// `worker_connections`, plus logs, cache and temp files.
    pub fn worker_files(&self) -> u32 {
        self.worker_connections * 2 + 256
    }

    /// The gateway's URL at the address nginx listens on: `https://` with `[nginx.tls]`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.listen)
    }
}

impl Default for NginxConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            prefix: PathBuf::from("nginx"),
            debug_headers: false,
            auth_cache_seconds: 0,
            catalog_cache_seconds: 1,
            worker_processes: "auto".into(),
            status_listen: None,
            user: None,
            tls: None,
            allow_plaintext: false,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            cors_origins: Vec::new(),
            limit_auth_per_minute: 60,
            limit_auth_burst: 60,
            limit_api_per_second: 50,
            limit_api_burst: 100,
            limit_connections_per_address: 100,
            client_header_timeout_seconds: 10,
            client_body_timeout_seconds: 10,
            worker_connections: 4096,
        }
    }
}

/// The verifiers: where they listen, their auth database, their hashing pool and login limits.
/// `listen` and `database_url` have no default: [`Config::check`] refuses a config whose file left
/// them empty (the empty values of [`VerifierConfig::default`]).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct VerifierConfig {
    /// Every verifier instance's address; nginx balances over all of them. A verifier process
    /// binds the first unless told `--listen`.
    pub listen: Vec<SocketAddr>,
    /// The auth database (accounts, revocations, the shard map).
    pub database_url: DbUrl,
    /// A GTID replica of the auth database, read while the primary is down: password checks,
    /// revocations, unlocks and the shard map go on, writes get 503 ([`crate::auth_db`]). Whichever
    /// of the two is writable is the primary, so `shopctl auth promote` needs no restart.
    pub database_replica_url: Option<DbUrl>,
    /// Reads move to the replica only if it was at most this far behind the primary when the
    /// primary was last seen: a revocation or cut-off younger than this may be missed meanwhile.
    pub database_replica_max_lag_seconds: u64,
    /// Threads that hash passwords at once; default: one less than the cores, at least one, so
    /// logins never take every core from the check path.
    pub hash_workers: Option<usize>,
    /// Password checks that may wait for a hashing thread before new ones get 503.
    pub hash_queue: usize,
    /// The nice value (0-19) the hashing threads run at: 19, the lowest priority, so a login
    /// flood hashes on what the check path and the API leave over rather than taking a core from
    /// them; 0 hashes at the same priority as everything else.
    pub hash_nice: u8,
    /// Whether the hashing threads run in the SCHED_IDLE class: any other thread that wakes on
    /// their core takes it at once, where at nice 19 it waits for the rest of the hash's slice,
    /// a few ms (the API's p99 during a login flood). Either way they get a sliver of a busy core
    /// (SCHED_IDLE's weight is 3, nice 19's 15, nice 0's 1024).
    pub hash_sched_idle: bool,
    /// The most of the machine's CPU time (all cores together), in percent, that hashing may
    /// take, whatever else wants it: after each hash a hashing thread rests in proportion to how
    /// long the hash took. Default 25 (half a core of two). Past it logins queue, then get 503.
    pub hash_cpu_percent: u8,
    /// How often each verifier reloads revocations from the auth database. A revocation is in
    /// force on every verifier within this plus one query ([`VerifierConfig::revocation_bound`]).
    pub(crate) revocation_refresh_ms: u64,
    /// Failed logins per account, and per client address, within `login_window_seconds` before
    /// further attempts get 429.
    pub login_max_failures_per_account: u32,
    pub login_max_failures_per_address: u32,
    pub login_window_seconds: u64,
    /// Registrations per client address within `register_window_seconds`; past that, 429.
    pub register_max_per_address: u32,
    pub register_window_seconds: u64,
    /// TCP peers whose `X-Real-IP` header is believed (like nginx's `set_real_ip_from`): the
    /// address nginx connects from, when it connects over TCP (a verifier on another host). Default:
    /// nginx's listen address if that is another host's ([`default_trusted_proxies`]), else none.
    /// Any other peer is itself the client address. Requests over a verifier's unix socket are
    /// nginx's and are always believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// The folder of the unix sockets nginx reaches the verifiers on its host through
    /// ([`VerifierConfig::socket_path`]); relative to the config's folder; `""`: none, nginx
    /// connects over TCP.
    pub(crate) socket_dir: PathBuf,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            database_url: DbUrl::new(""),
            database_replica_url: None,
            database_replica_max_lag_seconds: 5,
            hash_workers: None,
            hash_queue: 64,
            hash_nice: 19,
            hash_sched_idle: true,
            hash_cpu_percent: 25,
            revocation_refresh_ms: 500,
            login_max_failures_per_account: 5,
            login_max_failures_per_address: 50,
            login_window_seconds: 300,
            register_max_per_address: 20,
            register_window_seconds: 3600,
            trusted_proxies: Vec::new(),
            socket_dir: PathBuf::from("run"),
        }
    }
}

impl VerifierConfig {
    pub fn revocation_refresh(&self) -> Duration {
        Duration::from_millis(self.revocation_refresh_ms)
    }

    /// [`VerifierConfig::database_replica_max_lag_seconds`] as a duration.
    pub fn replica_max_lag(&self) -> Duration {
        Duration::from_secs(self.database_replica_max_lag_seconds)
    }

    /// The promise: a revocation made on any verifier is in force on all of them within this.
    pub fn revocation_bound(&self) -> Duration {
        self.revocation_refresh() + Duration::from_millis(500)
    }

    /// The unix socket the verifier listening on `addr` also serves, `SOCKET_DIR/verifier-PORT.sock`,
    /// and that nginx connects to instead of `addr`. Only for an address on nginx's own host
    /// ([`is_own_host`]): every process there can connect from loopback, so nginx's TCP address
    /// proves nothing, while the socket is nginx's alone (its folder and mode let in only the
    /// verifier's user and nginx's workers) and so is the one place `X-Real-IP` is believed
    /// without a look at the peer. None for a verifier nginx reaches over the network, or with
    /// `socket_dir = ""`.
    pub fn socket_path(&self, addr: SocketAddr) -> Option<PathBuf> {
        if self.socket_dir.as_os_str().is_empty() || !is_own_host(addr.ip()) {
            return None;
        }
        Some(self.socket_dir.join(format!("verifier-{}.sock", addr.port())))
    }
}

/// Whether `ip` names this host as a listen address: loopback, or every address. nginx then
/// connects from loopback (or the address itself), as any other local process can.
fn is_own_host(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

/// The longest unix socket path the kernel takes (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// What every shard backend shares: its capacity and how long it keeps idempotency keys.
/// Every field has a default, so a config without `[backend]` means exactly
/// [`BackendConfig::default`].
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// `/api` requests one backend works on at once.
    pub max_in_flight: usize,
    /// Requests that may wait for one of those slots; past that, 503 with `Retry-After` at once.
    pub max_queued: usize,
    /// How long a request waits for a slot before it gets 503 with `Retry-After`.
    pub(crate) queue_wait_ms: u64,
    /// Requests one user may have in one backend process at once, worked on or waiting for a
    /// slot: past that, that user's next ones wait for one to end (up to `max_queued` of them, each
    /// at most `queue_wait_ms`), then get 429 with `Retry-After`; the slots and the queue stay for
    /// the others. 0 = no bound per user.
    pub max_per_user: usize,
    /// An `Idempotency-Key` is kept at least this long (default 24 h): a retry within it returns
    /// the original order. Older keys are purged; a retry after that makes a new order.
    pub idempotency_retention_seconds: u64,
    /// How often the purge looks for expired keys.
    pub(crate) idempotency_purge_every_seconds: u64,
    /// Keys deleted per statement, and the pause between two statements, so that a purge never
    /// holds locks or the database for long.
    pub idempotency_purge_batch: u32,
    pub(crate) idempotency_purge_pause_ms: u64,
    /// A shard whose database was down at start tries to set up its schema again, driven by
    /// requests and `/readyz`, at most this often; between tries they get 503 at once.
    pub(crate) init_retry_ms: u64,
    /// A catalog answer is served from memory until it is this old (0: never kept). This is the
    /// bound on how stale a price may be in `GET /api/products` beyond the database read.
    pub(crate) catalog_cache_ms: u64,
    /// The auth database as the backends reach it (revocations and the shard map, read only):
    /// on MariaDB a user that may read only that (docs/operations.md, "Database users"). Unset: the
    /// verifier's `database_url` ([`Config::backend_auth_urls`]).
    pub auth_database_url: Option<DbUrl>,
    /// The same user on the auth database's replica, read while the primary is down. Unset with
    /// `auth_database_url` unset: the verifier's `database_replica_url`.
    pub auth_database_replica_url: Option<DbUrl>,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 32,
            max_queued: 64,
            queue_wait_ms: 1000,
            max_per_user: 8,
            idempotency_retention_seconds: 24 * 3600,
            idempotency_purge_every_seconds: 60,
            idempotency_purge_batch: 500,
            idempotency_purge_pause_ms: 100,
            init_retry_ms: 1000,
            catalog_cache_ms: 1000,
            auth_database_url: None,
            auth_database_replica_url: None,
        }
    }
}

/// `[backup]`: where `shopctl backup` writes, where the binlog archiver keeps its copies, and how
/// long the primaries keep a binary log once it is archived. Every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// One folder per backup run, and `binlogs/INSTANCE/` for the archive; relative to the
    /// config's folder.
    pub dir: PathBuf,
    /// A primary's binary log is purged once archived and older than this (hours); never before
    /// it is archived.
    pub binlog_retention_hours: u64,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("backups"), binlog_retention_hours: 7 * 24 }
    }
}

impl BackupConfig {
    pub fn binlog_retention(&self) -> Duration {
        Duration::from_secs(self.binlog_retention_hours * 3600)
    }
}

impl BackendConfig {
    pub fn queue_wait(&self) -> Duration {
        Duration::from_millis(self.queue_wait_ms)
    }

    pub fn idempotency_retention(&self) -> Duration {
        Duration::from_secs(self.idempotency_retention_seconds)
    }

    pub fn idempotency_purge_every(&self) -> Duration {
        Duration::from_secs(self.idempotency_purge_every_seconds)
    }

    pub fn idempotency_purge_pause(&self) -> Duration {
        Duration::from_millis(self.idempotency_purge_pause_ms)
    }

    pub fn init_retry(&self) -> Duration {
        Duration::from_millis(self.init_retry_ms)
    }

    pub fn catalog_cache(&self) -> Duration {
        Duration::from_millis(self.catalog_cache_ms)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError::Invalid(format!("backend.{what}")));
        if self.max_in_flight == 0 || self.max_in_flight > 100_000 {
            return bad("max_in_flight must be 1-100000");
        }
        if self.max_per_user > 100_000 {
            return bad("max_per_user must be 0-100000");
        }
        if self.max_queued > 100_000 {
            return bad("max_queued must be 0-100000");
        }
        if self.queue_wait_ms > 60_000 {
            return bad("queue_wait_ms must be 0-60000");
        }
        if self.idempotency_retention_seconds == 0 {
            return bad("idempotency_retention_seconds must be at least 1");
        }
        if !(1..=86_400).contains(&self.idempotency_purge_every_seconds) {
            return bad("idempotency_purge_every_seconds must be 1-86400");
        }
        if !(1..=2_000).contains(&self.idempotency_purge_batch) {
            return bad("idempotency_purge_batch must be 1-2000");
        }
        if self.idempotency_purge_pause_ms > 60_000 {
            return bad("idempotency_purge_pause_ms must be 0-60000");
        }
        if self.init_retry_ms > 600_000 {
            return bad("init_retry_ms must be 0-600000");
        }
        if self.catalog_cache_ms > 60_000 {
            return bad("catalog_cache_ms must be 0-60000");
        }
        Ok(())
    }
}

/// One shard, fully checked.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub name: ShardName,
    /// 0-63, part of every order id minted on this shard, so ids never collide across shards.
    pub number: u8,
    pub buckets: String,
    /// One address per backend process of the shard (never empty): process `--instance N`
    /// listens on `listen[N]`, and nginx balances over all of them.
    pub listen: Vec<SocketAddr>,
    pub primary: DbUrl,
    pub replica: Option<DbUrl>,
    pub replica_max_lag_seconds: u64,
}

impl ShardConfig {
    /// The first process's address (instance 0): the only one of a shard with one process.
    pub fn addr(&self) -> SocketAddr {
        self.listen[0]
    }

    /// Where process `instance` of this shard listens, or the one-line error naming the range.
    pub fn instance_addr(&self, instance: usize) -> Result<SocketAddr, String> {
        self.listen.get(instance).copied().ok_or_else(|| {
            format!(
                "shard {} has {} backend process(es) (shards.{}.listen), so --instance must be 0-{}, not {instance}",
                self.name,
                self.listen.len(),
                self.name,
                self.listen.len() - 1
            )
        })
    }
}

/// Which keys a process loads, chosen by the process that loads the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// It signs, or may: the verifiers, shopctl (`tokens mint`, `keys rotate`). It loads
    /// `jwt.keys_file` (EdDSA) or the HS256 key.
    Sign,
    /// It only checks tokens: the backends. Under EdDSA it loads `jwt.public_keys_file` (else
    /// `jwt.keys_file`) and refuses to start if that file holds any private key; `jwt.keys_file`
    /// need not exist on its host. HS256 has one key, which every process holds and can sign with.
    Verify,
}

/// Where the public set of EdDSA key set `keys_file` is written when `jwt.public_keys_file` does
/// not say: beside it, `NAME.public.json` for `NAME.json`.
pub fn default_public_keys_file(keys_file: &Path) -> PathBuf {
    let stem = keys_file.file_stem().unwrap_or(keys_file.as_os_str()).to_string_lossy();
    keys_file.with_file_name(format!("{stem}.public.json"))
}

/// Where the keys come from, so they can be read again on SIGHUP or when the file changes.
#[derive(Debug, Clone)]
pub(crate) enum KeySource {
    Hs256Env(Secret),
    Hs256File(PathBuf),
    EdDsaFile(PathBuf),
    /// A key set that must hold public keys only ([`KeyUse::Verify`]).
    EdDsaPublicFile(PathBuf),
}

impl KeySource {
    pub(crate) fn file(&self) -> Option<&Path> {
        match self {
            KeySource::Hs256Env(_) => None,
            KeySource::Hs256File(p) | KeySource::EdDsaFile(p) | KeySource::EdDsaPublicFile(p) => Some(p),
        }
    }

    pub(crate) fn load(&self) -> Result<Keys, ConfigError> {
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|source| ConfigError::KeyFile { path: p.to_owned(), source });
        match self {
            KeySource::Hs256Env(secret) => Ok(Keys::Hs256(Hs256Key::new(&decode_secret(secret.expose())?)?)),
            KeySource::Hs256File(p) => Ok(Keys::Hs256(Hs256Key::new(&decode_secret(&read(p)?)?)?)),
            KeySource::EdDsaFile(p) | KeySource::EdDsaPublicFile(p) => {
                let content =
                    |e: &dyn fmt::Display| ConfigError::KeyFileContent { path: p.clone(), message: e.to_string() };
                let file: KeyFile = serde_json::from_str(&read(p)?).map_err(|e| content(&e))?;
                let keys = match self {
                    KeySource::EdDsaPublicFile(_) => EdKeys::from_public_file(&file),
                    _ => EdKeys::from_file(&file),
                };
                Ok(Keys::EdDsa(keys.map_err(|e| content(&e))?))
            }
        }
    }
}

/// Key text is the secret's bytes, unless it starts with `base64url:`.
fn decode_secret(text: &str) -> Result<Vec<u8>, ConfigError> {
    let text = text.trim();
    match text.strip_prefix("base64url:") {
        Some(b64) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(b64.trim_end_matches('='))
            .map_err(|e| ConfigError::Invalid(format!("the JWT key is not valid base64url: {e}"))),
        None => Ok(text.as_bytes().to_vec()),
    }
}

/// The token settings, with the keys loaded and checked. Clones share the live keys.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    keys: Arc<ArcSwap<Keys>>,
    pub(crate) source: KeySource,
    /// `jwt.public_keys_file`, resolved against the config's folder.
    public_keys_file: Option<PathBuf>,
    pub policy: Policy,
    /// `jwt.verified_cache_entries`.
    verified_cache_entries: usize,
}

impl JwtConfig {
    /// A token checker over the live keys, with its own cache of verified tokens: it sees every
    /// reload. One per process: its clones share the cache.
    pub fn verifier(&self) -> Verifier {
        Verifier::shared(self.keys.clone(), self.policy.clone()).with_cache(self.verified_cache_entries)
    }

    pub fn keys(&self) -> Arc<Keys> {
        self.keys.load_full()
    }

    /// The file the keys are read from (`jwt.key_file`, `jwt.keys_file` or, for a process that
    /// only checks tokens, `jwt.public_keys_file`, resolved against the config's folder); `None`
    /// when `SHOP_JWT_KEY` gives the key.
    pub fn key_file(&self) -> Option<&Path> {
        self.source.file()
    }

    /// Where the public set of EdDSA key set `keys_file` goes: `jwt.public_keys_file` if the
    /// config names one for this very key set, else [`default_public_keys_file`].
    pub fn public_keys_file_for(&self, keys_file: &Path) -> PathBuf {
        match (&self.public_keys_file, &self.source) {
            (Some(public), KeySource::EdDsaFile(own)) if same_file(own, keys_file) => public.clone(),
            _ => default_public_keys_file(keys_file),
        }
    }

    /// Signs with the live signing key; `None` if this key set cannot sign (EdDSA, public only).
    pub fn sign(&self, claims: &Claims) -> Option<String> {
        self.keys.load().sign(claims)
    }

    /// Reads the keys again. On any error the keys in force stay as they were.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let keys = self.source.load()?;
        if keys.alg() != self.keys.load().alg() {
            return Err(ConfigError::Invalid("a key reload cannot change the algorithm; restart instead".into()));
        }
        self.keys.store(Arc::new(keys));
        Ok(())
    }

    /// Watches the key file: when its modification time changes, reloads and reports the outcome.
    /// Runs on its own thread for the life of the process.
    pub fn watch(&self, every: Duration, report: impl Fn(Result<(), ConfigError>) + Send + 'static) {
        let Some(path) = self.source.file().map(Path::to_path_buf) else { return };
        let this = self.clone();
        let mtime = move || std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let mut last: Option<SystemTime> = mtime();
        let _ = std::thread::Builder::new().name("key-watch".into()).spawn(move || loop {
            std::thread::sleep(every);
            let now = mtime();
            if now.is_some() && now != last {
                last = now;
                report(this.reload());
            }
        });
    }
}

/// The whole stack's config.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub nginx: NginxConfig,
    pub jwt: JwtConfig,
    pub verifier: VerifierConfig,
    pub backend: BackendConfig,
    /// The stack's own hops: TLS between its parts and to the databases.
    pub tls: TlsConfig,
    pub backup: BackupConfig,
    pub shards: Vec<ShardConfig>,
    pub shard_map: ShardMap,
}

impl Config {
    /// Loads `path`, applies `SHOP__…` overrides from the process environment, checks it all,
    /// with the keys of a process that signs ([`KeyUse::Sign`]).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_for(path, KeyUse::Sign)
    }

    /// A database URL given from outside the config for setting `key` (an operator's, such as
    /// `shopctl migrate`'s migrator credentials), checked and completed like the config's own:
    /// a relative SQLite path is relative to the config's folder, TLS as `[tls]` says.
    pub fn outside_database_url(&self, key: &str, url: DbUrl) -> Result<DbUrl, ConfigError> {
        let base = self.path.parent().unwrap_or(Path::new("."));
        database::check(key, resolve_sqlite(url, base), &self.tls, base)
    }

    /// The auth database's primary and replica as a backend reads them: `backend.auth_database_url`
    /// and `backend.auth_database_replica_url`, else the verifier's pair.
    pub fn backend_auth_urls(&self) -> (&DbUrl, Option<&DbUrl>) {
        match &self.backend.auth_database_url {
            Some(primary) => (primary, self.backend.auth_database_replica_url.as_ref()),
            None => (&self.verifier.database_url, self.verifier.database_replica_url.as_ref()),
        }
    }

    /// [`Config::load`] with the keys that `keys` says.
    pub fn load_for(path: &Path, keys: KeyUse) -> Result<Self, ConfigError> {
        Self::load_with_env_for(path, std::env::vars(), keys)
    }

    pub fn load_with_env(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        Self::load_with_env_for(path, env, KeyUse::Sign)
    }

    pub fn load_with_env_for(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        keys: KeyUse,
    ) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut value: toml::Value = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.message().to_owned() })?;
        let mut env_key = None;
        for (var, val) in env {
            if var == "SHOP_JWT_KEY" {
                env_key = Some(Secret::new(val));
            } else if let Some(rest) = var.strip_prefix("SHOP__") {
                apply_override(&mut value, rest, &val)
                    .map_err(|message| ConfigError::Env { var: var.clone(), message })?;
            }
        }
        let raw: RawConfig = value.try_into().map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::check(raw, base, env_key, path, keys)
    }

    fn check(
        raw: RawConfig,
        base: &Path,
        env_key: Option<Secret>,
        path: &Path,
        key_use: KeyUse,
    ) -> Result<Self, ConfigError> {
        // The keys without a default first, as the parse would report them if serde knew them.
        if raw.verifier.database_url.expose().is_empty() {
            return Err(missing("verifier.database_url"));
        }
        let public_keys_file = raw.jwt.public_keys_file.as_ref().map(|f| base.join(f));
        // A process that only checks EdDSA tokens takes the public set, else the key set, and
        // holds no private key either way.
        let ed_file = match key_use {
            KeyUse::Verify => public_keys_file.clone().or_else(|| raw.jwt.keys_file.as_ref().map(|f| base.join(f))),
            KeyUse::Sign => raw.jwt.keys_file.as_ref().map(|f| base.join(f)),
        };
        let source = match (raw.jwt.algorithm.as_str(), env_key, &raw.jwt.key_file, ed_file) {
            ("HS256", _, _, _) if public_keys_file.is_some() => {
                return Err(ConfigError::Invalid(
                    "jwt.public_keys_file is for EdDSA: an HS256 key is one secret, and whoever holds it can sign"
                        .into(),
                ))
            }
            ("HS256", Some(k), _, _) => KeySource::Hs256Env(k),
            ("HS256", None, Some(file), _) => KeySource::Hs256File(base.join(file)),
            ("EdDSA", _, _, Some(file)) if key_use == KeyUse::Verify => KeySource::EdDsaPublicFile(file),
            ("EdDSA", _, _, Some(file)) => KeySource::EdDsaFile(file),
            ("HS256" | "EdDSA", ..) => return Err(ConfigError::NoKey),
            (other, ..) => return Err(ConfigError::Algorithm(other.to_owned())),
        };
        let keys = Arc::new(ArcSwap::from_pointee(source.load()?));
        if !(60..=7 * 24 * 3600).contains(&raw.jwt.ttl_seconds) {
            return Err(ConfigError::Invalid("jwt.ttl_seconds must be between 60 and 604800".into()));
        }
        if !(0..=300).contains(&raw.jwt.leeway_seconds) {
            return Err(ConfigError::Invalid("jwt.leeway_seconds must be between 0 and 300".into()));
        }
        if raw.jwt.verified_cache_entries > MAX_VERIFIED_CACHE_ENTRIES {
            return Err(ConfigError::Invalid(format!(
                "jwt.verified_cache_entries must be at most {MAX_VERIFIED_CACHE_ENTRIES} (about a kilobyte each)"
            )));
        }
        if raw.verifier.listen.is_empty() {
            return Err(ConfigError::Invalid("verifier.listen needs at least one address".into()));
        }
        if raw.verifier.hash_nice > 19 {
            return Err(ConfigError::Invalid("verifier.hash_nice must be between 0 and 19".into()));
        }
        if !(1..=100).contains(&raw.verifier.hash_cpu_percent) {
            return Err(ConfigError::Invalid("verifier.hash_cpu_percent must be between 1 and 100".into()));
        }
        raw.backend.check()?;
        if raw.shards.is_empty() {
            return Err(ConfigError::Invalid("no [shards.NAME] defined".into()));
        }
        // Before the URLs: their TLS defaults name `tls.ca`, relative to the config's folder.
        let mut tls = raw.tls;
        tls.check().map_err(ConfigError::Invalid)?;
        tls.resolve(base);
        let db_url = |key: &str, url: DbUrl| database::check(key, resolve_sqlite(url, base), &tls, base);
        let mut shards = Vec::new();
        for (name, s) in raw.shards {
            let name = ShardName::parse(&name).map_err(ConfigError::Invalid)?;
            let key = |key: &str| missing(&format!("shards.{name}.{key}"));
            let number = s.number.ok_or_else(|| key("number"))?;
            let buckets = s.buckets.ok_or_else(|| key("buckets"))?;
            let listen = s.listen.ok_or_else(|| key("listen"))?;
            let primary = s.primary.ok_or_else(|| key("primary"))?;
            if number > 63 {
                return Err(ConfigError::Invalid(format!("shards.{name}.number must be 0-63")));
            }
            if shards.iter().any(|o: &ShardConfig| o.number == number) {
                return Err(ConfigError::Invalid(format!("shards.{name}.number {number} is used twice")));
            }
            let listen = check_listen(&name, listen)?;
            let primary = db_url(&format!("shards.{name}.primary"), primary)?;
            let replica = s.replica.map(|r| db_url(&format!("shards.{name}.replica"), r)).transpose()?;
            shards.push(ShardConfig {
                name,
                number,
                buckets,
                listen,
                primary,
                replica,
                replica_max_lag_seconds: s.replica_max_lag_seconds,
            });
        }
        let shard_map = ShardMap::from_specs(shards.iter().map(|s| (&s.name, s.buckets.as_str())))?;
        let mut verifier = raw.verifier;
        verifier.database_url = db_url("verifier.database_url", verifier.database_url)?;
        verifier.database_replica_url =
            verifier.database_replica_url.map(|u| db_url("verifier.database_replica_url", u)).transpose()?;
        let mut backend = raw.backend;
        backend.auth_database_url =
            backend.auth_database_url.map(|u| db_url("backend.auth_database_url", u)).transpose()?;
        backend.auth_database_replica_url =
            backend.auth_database_replica_url.map(|u| db_url("backend.auth_database_replica_url", u)).transpose()?;
        if backend.auth_database_replica_url.is_some() && backend.auth_database_url.is_none() {
            return Err(ConfigError::Invalid(
                "backend.auth_database_replica_url needs backend.auth_database_url (the same user on the primary)"
                    .into(),
            ));
        }
        if verifier.trusted_proxies.is_empty() {
            verifier.trusted_proxies = default_trusted_proxies(raw.nginx.listen);
        }
        if !verifier.socket_dir.as_os_str().is_empty() {
            verifier.socket_dir = base.join(&verifier.socket_dir);
        }
        check_sockets(&verifier)?;
        if let Some(user) = &raw.nginx.user {
            // As nginx config holds it unquoted, and as useradd takes it.
            let valid = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
            if user.is_empty() || user.len() > 32 || user.starts_with('-') || !user.chars().all(valid) {
                return Err(ConfigError::Invalid(format!("nginx.user {user:?} is not an account name")));
            }
        }
        let mut backup = raw.backup;
        backup.dir = base.join(&backup.dir);
        raw.nginx.check()?;
        let mut nginx = raw.nginx;
        nginx.prefix = base.join(&nginx.prefix);
        if let Some(tls) = &mut nginx.tls {
            tls.resolve(base);
        }
        Ok(Self {
            path: path.to_owned(),
            nginx,
            jwt: JwtConfig {
                keys,
                source,
                public_keys_file,
                policy: Policy {
                    issuer: raw.jwt.issuer,
                    audience: raw.jwt.audience,
                    leeway_seconds: raw.jwt.leeway_seconds,
                    ttl_seconds: raw.jwt.ttl_seconds,
                },
                verified_cache_entries: raw.jwt.verified_cache_entries,
            },
            verifier,
            backend,
            tls,
            backup,
            shards,
            shard_map,
        })
    }

    /// How old a catalog answer through nginx may be: the backends' copy, then nginx's.
    pub fn catalog_bound(&self) -> Duration {
        self.backend.catalog_cache() + Duration::from_secs(self.nginx.catalog_cache_seconds.into())
    }

    pub fn shard(&self, name: &str) -> Option<&ShardConfig> {
        self.shards.iter().find(|s| s.name.as_str() == name)
    }

    /// Whether every shard `map` gives buckets to is in this config: a stack started from it
    /// would otherwise have no backend and no nginx upstream for those buckets, and their users
    /// would get errors until the config has the shard again. The error names the first shard
    /// missing and its buckets.
    pub fn check_owners(&self, map: &ShardMap) -> Result<(), ConfigError> {
        match map.summary().into_keys().find(|owner| self.shard(owner.as_str()).is_none()) {
            None => Ok(()),
            Some(shard) => Err(ConfigError::Unowned {
                path: self.path.clone(),
                version: map.version(),
                shard: shard.to_string(),
                buckets: crate::shardmap::describe_buckets(&map.buckets_of(shard)),
            }),
        }
    }
}

/// Whether two paths name one file: the same path, or the same file once resolved.
fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// A key the file must give (it has no default) and left out.
fn missing(key: &str) -> ConfigError {
    ConfigError::Invalid(format!("{key} is missing; it has no default"))
}

/// Which TCP peers' `X-Real-IP` is believed, when the config does not say: nginx's listen address
/// if it names another host (nginx on a host of its own address, as in the network-namespace
/// topology: it connects to a verifier on another host from that address). Loopback or every
/// address: none. Any local process can connect from loopback or from the host's addresses, so
/// an address there proves nothing; nginx on the verifiers' host reaches them over their unix
/// sockets ([`VerifierConfig::socket_path`]). A verifier nginx reaches over TCP from an address
/// other than its listen address needs `trusted_proxies` set.
fn default_trusted_proxies(nginx: SocketAddr) -> Vec<IpAddr> {
    if is_own_host(nginx.ip()) {
        return Vec::new();
    }
    vec![nginx.ip()]
}

/// Each verifier with a socket has a socket of its own (the name holds the port only) whose path
/// the kernel takes.
fn check_sockets(verifier: &VerifierConfig) -> Result<(), ConfigError> {
    let mut seen: Vec<PathBuf> = Vec::new();
    for addr in &verifier.listen {
        let Some(path) = verifier.socket_path(*addr) else { continue };
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ConfigError::Invalid(format!(
                "verifier.socket_dir: the socket {} is over {MAX_SOCKET_PATH} bytes, the most a unix socket's path may be; \
                 choose a shorter folder",
                path.display()
            )));
        }
        if addr.port() != 0 && seen.contains(&path) {
            return Err(ConfigError::Invalid(format!(
                "verifier.listen: two local verifiers on port {} would share the socket {}",
                addr.port(),
                path.display()
            )));
        }
        seen.push(path);
    }
    Ok(())
}

/// A shard's process addresses: 1 to [`MAX_PROCESSES_PER_SHARD`], each `IP:port`, none twice
/// (port 0, "any free port", may repeat: tests bind their own listeners).
fn check_listen(name: &ShardName, listen: Listen) -> Result<Vec<SocketAddr>, ConfigError> {
    let listen = listen.into_vec();
    if listen.is_empty() || listen.len() > MAX_PROCESSES_PER_SHARD {
        return Err(ConfigError::Invalid(format!(
            "shards.{name}.listen needs 1 to {MAX_PROCESSES_PER_SHARD} addresses (one per backend process), not {}",
            listen.len()
        )));
    }
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(listen.len());
    for text in listen {
        let addr: SocketAddr = text
            .parse()
            .map_err(|_| ConfigError::Invalid(format!("shards.{name}.listen: {text:?} is not an IP:port address")))?;
        if addr.port() != 0 && addrs.contains(&addr) {
            return Err(ConfigError::Invalid(format!("shards.{name}.listen lists {addr} twice")));
        }
        addrs.push(addr);
    }
    Ok(addrs)
}

/// `sqlite:relative.db` becomes relative to the config's folder, so a stack folder can move.
fn resolve_sqlite(url: DbUrl, base: &Path) -> DbUrl {
    let s = url.expose();
    let Some(rest) = s.strip_prefix("sqlite://").or_else(|| s.strip_prefix("sqlite:")) else {
        return url;
    };
    if rest.starts_with('/') || rest.starts_with(':') {
        return url;
    }
    DbUrl::new(format!("sqlite://{}", base.join(rest).display()))
}

fn apply_override(root: &mut toml::Value, path: &str, val: &str) -> Result<(), String> {
    let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    if keys.iter().any(String::is_empty) {
        return Err("empty key segment".into());
    }
    let (last, parents) = keys.split_last().ok_or("empty key")?;
    let mut cur = root;
    for k in parents {
        let table = cur.as_table_mut().ok_or_else(|| format!("{k} is not a table"))?;
        cur = table.entry(k.clone()).or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let table = cur.as_table_mut().ok_or_else(|| format!("{last} is not inside a table"))?;
    // A value that parses as TOML (number, bool, array) is taken as such; anything else is a string.
    let parsed = toml::from_str::<toml::Table>(&format!("v = {val}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(val.to_owned()));
    table.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[jwt]
key_file = "jwt.key"
[verifier]
listen = ["127.0.0.1:8090"]
database_url = "sqlite:data/auth.db"
[shards.a]
number = 0
buckets = "even"
listen = "127.0.0.1:8091"
primary = "sqlite:data/a.db"
[shards.b]
number = 1
buckets = "odd"
listen = "127.0.0.1:8092"
primary = "mysql://shop:hunter2@127.0.0.1:3306/shard_b"
"#;

    fn write(dir: &Path, config: &str, key: &str) -> PathBuf {
        std::fs::write(dir.join("jwt.key"), key).unwrap();
        let p = dir.join("shop.toml");
        std::fs::write(&p, config).unwrap();
        p
    }

    /// A folder of the test's own, removed when it is dropped (it holds a key).
    fn tmp() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("shopgate-cfg-").tempdir().unwrap()
    }

    #[test]
    fn loads_and_resolves() {
        let dir = tmp();
        let d = dir.path();
        let p = write(d, SAMPLE, "k3y-0123456789abcdef0123456789abcdef\n");
        let c = Config::load_with_env(&p, []).unwrap();
        assert_eq!(c.shards.len(), 2);
        assert_eq!(c.shard("a").unwrap().primary.expose(), format!("sqlite://{}/data/a.db", d.display()));
        assert_eq!(c.shard("b").unwrap().primary.to_string(), "mysql://shop:***@127.0.0.1:3306/shard_b");
        assert!(!format!("{c:?}").contains("hunter2"), "password leaked into Debug");
        assert!(!format!("{c:?}").contains("k3y-0123"), "key leaked into Debug");
        assert_eq!(c.nginx.listen.port(), 8080);
        // No [backend] section: the defaults, among them a day's idempotency retention.
        assert_eq!(
            (c.backend.max_in_flight, c.backend.max_queued, c.backend.queue_wait()),
            (32, 64, Duration::from_secs(1))
        );
        assert_eq!(c.backend.idempotency_retention(), Duration::from_secs(86_400));
        assert_eq!(c.backend.idempotency_purge_batch, 500);
    }

    /// An EdDSA stack whose backends take the public set: `keys.json` (private) and
    /// `keys.public.json` beside it.
    fn eddsa_stack(dir: &Path) -> (PathBuf, KeyFile) {
        let private = KeyFile { signing_kid: Some("k1".into()), keys: vec![KeyFile::generate_jwk("k1")] };
        std::fs::write(dir.join("keys.json"), serde_json::to_string(&private).unwrap()).unwrap();
        let public = default_public_keys_file(&dir.join("keys.json"));
        assert_eq!(public, dir.join("keys.public.json"));
        std::fs::write(&public, serde_json::to_string(&private.public()).unwrap()).unwrap();
        let config = SAMPLE.replace(
            "key_file = \"jwt.key\"",
            "algorithm = \"EdDSA\"\nkeys_file = \"keys.json\"\npublic_keys_file = \"keys.public.json\"",
        );
        (write(dir, &config, "unused"), private)
    }

    #[test]
    fn a_process_that_only_checks_tokens_loads_the_public_set_and_never_a_private_key() {
        let dir = tmp();
        let d = dir.path();
        let (p, private) = eddsa_stack(d);
        let signer = Config::load_with_env(&p, []).unwrap();
        assert_eq!(signer.jwt.key_file(), Some(d.join("keys.json").as_path()));
        assert!(signer.jwt.keys().can_sign());
        assert_eq!(signer.jwt.public_keys_file_for(&d.join("keys.json")), d.join("keys.public.json"));
        let token = signer.jwt.sign(&crate::token::new_claims(
            crate::UserId::new(7).unwrap(),
            "a@example.com",
            &signer.jwt.policy,
            crate::time::unix_now(),
            600,
        ));
        let token = token.unwrap();

        // The private set is not on this host: a backend starts on the public set alone.
        std::fs::rename(d.join("keys.json"), d.join("elsewhere.json")).unwrap();
        let checker = Config::load_with_env_for(&p, [], KeyUse::Verify).unwrap();
        assert_eq!(checker.jwt.key_file(), Some(d.join("keys.public.json").as_path()));
        assert!(!checker.jwt.keys().can_sign());
        let now = crate::time::unix_now();
        assert_eq!(checker.jwt.verifier().verify(&token, now).unwrap().user.get(), 7);
        assert!(Config::load_with_env(&p, []).is_err(), "a signer does need the private set");

        // A reload reads the public file again, and keeps its rule.
        std::fs::write(d.join("keys.public.json"), serde_json::to_string(&private).unwrap()).unwrap();
        let e = checker.jwt.reload().unwrap_err().to_string();
        assert!(e.contains("keys.public.json") && e.contains("(d) of key \"k1\""), "{e}");
        assert!(checker.jwt.verifier().verify(&token, now).is_ok(), "the keys in force stay");

        // Started on a file with a private part: one line, naming the file and the fix.
        let e = Config::load_with_env_for(&p, [], KeyUse::Verify).unwrap_err().to_string();
        assert!(!e.contains('\n') && e.contains("must hold no private key") && e.contains("public.json"), "{e}");
        // Without jwt.public_keys_file it would take jwt.keys_file, and refuses its private part.
        std::fs::rename(d.join("elsewhere.json"), d.join("keys.json")).unwrap();
        let env = [("SHOP__JWT__KEYS_FILE".to_owned(), "keys.public.json".to_owned())];
        assert!(Config::load_with_env_for(&p, env.clone(), KeyUse::Verify).is_err());
        let text = std::fs::read_to_string(&p).unwrap().replace("public_keys_file = \"keys.public.json\"\n", "");
        std::fs::write(&p, text).unwrap();
        let e = Config::load_with_env_for(&p, [], KeyUse::Verify).unwrap_err().to_string();
        assert!(e.contains("keys.json") && e.contains("must hold no private key"), "{e}");
        std::fs::write(d.join("keys.public.json"), serde_json::to_string(&private.public()).unwrap()).unwrap();
        assert!(Config::load_with_env_for(&p, env, KeyUse::Verify).is_ok(), "a key set of public keys only");
    }

    #[test]
    fn a_public_key_file_is_for_eddsa_only() {
        let dir = tmp();
        let p = write(
            dir.path(),
            &SAMPLE.replace("[jwt]\n", "[jwt]\npublic_keys_file = \"x.json\"\n"),
            "k3y-0123456789abcdef0123456789abcdef",
        );
        let e = Config::load_with_env(&p, []).unwrap_err().to_string();
        assert!(e.contains("jwt.public_keys_file is for EdDSA"), "{e}");
    }

    #[test]
    fn a_map_owner_the_config_lacks_is_named_with_its_buckets() {
        let dir = tmp();
        let p = write(dir.path(), SAMPLE, "k3y-0123456789abcdef0123456789abcdef");
        let config = Config::load_with_env(&p, []).unwrap();
        assert!(config.check_owners(&config.shard_map).is_ok());
        // Shard c took buckets 500-749 in a move; a config without [shards.c] cannot serve them.
        let c = ShardName::parse("c").unwrap();
        let mut grown = config.shard_map.next_version();
        grown.set_owner(&(500..750).collect::<Vec<u16>>(), &c);
        let err = config.check_owners(&grown).unwrap_err().to_string();
        assert!(err.contains("(version 2) gives buckets 500-749 to shard c,"), "{err}");
        assert!(err.contains("[shards.c]") && err.contains(&p.display().to_string()), "{err}");
    }

    #[test]
    fn trusted_proxies_default_to_nginx_on_another_host_only() {
        let addr = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(default_trusted_proxies(addr("10.213.0.1:8080")), [ip("10.213.0.1")]);
        // Loopback or every address: any local process connects from there too.
        for local in ["127.0.0.1:8080", "127.0.0.2:8080", "[::1]:8080", "0.0.0.0:8080", "[::]:8080"] {
            assert_eq!(default_trusted_proxies(addr(local)), Vec::<IpAddr>::new(), "{local}");
        }
        let dir = tmp();
        let d = dir.path();
        let p = write(d, SAMPLE, "k3y-0123456789abcdef0123456789abcdef");
        assert_eq!(Config::load_with_env(&p, []).unwrap().verifier.trusted_proxies, Vec::<IpAddr>::new());
        // Set, it is kept as it is, loopback included.
        let text = SAMPLE.replace(
            "database_url = \"sqlite:data/auth.db\"",
            "database_url = \"sqlite:data/auth.db\"\ntrusted_proxies = [\"127.0.0.1\"]",
        );
        let p = write(d, &text, "k3y-0123456789abcdef0123456789abcdef");
        assert_eq!(Config::load_with_env(&p, []).unwrap().verifier.trusted_proxies, [ip("127.0.0.1")]);
    }

    #[test]
    fn local_verifiers_have_a_socket_in_the_socket_dir() {
        let dir = tmp();
        let d = dir.path();
        let text = SAMPLE.replace(
            "listen = [\"127.0.0.1:8090\"]",
            "listen = [\"127.0.0.1:8090\", \"0.0.0.0:8093\", \"10.0.0.2:8090\"]",
        );
        let p = write(d, &text, "k3y-0123456789abcdef0123456789abcdef");
        let c = Config::load_with_env(&p, []).unwrap();
        let sockets: Vec<_> = c.verifier.listen.iter().map(|a| c.verifier.socket_path(*a)).collect();
        // Relative to the config's folder, like the SQLite files; none for a verifier on another host.
        assert_eq!(sockets, [Some(d.join("run/verifier-8090.sock")), Some(d.join("run/verifier-8093.sock")), None]);
        let env = |dir: &str| [("SHOP__VERIFIER__SOCKET_DIR".to_string(), dir.to_string())];
        let c = Config::load_with_env(&p, env("/srv/sockets")).unwrap();
        assert_eq!(
            c.verifier.socket_path(c.verifier.listen[0]),
            Some(PathBuf::from("/srv/sockets/verifier-8090.sock"))
        );
        let c = Config::load_with_env(&p, env("")).unwrap();
        assert_eq!(c.verifier.socket_path(c.verifier.listen[0]), None, "\"\" turns the sockets off");
        let err = Config::load_with_env(&p, env(&format!("/{}", "s".repeat(100)))).unwrap_err().to_string();
        assert!(err.contains("over 107 bytes"), "{err}");
        let twice =
            SAMPLE.replace("listen = [\"127.0.0.1:8090\"]", "listen = [\"127.0.0.1:8090\", \"127.0.0.2:8090\"]");
        let p = write(d, &twice, "k3y-0123456789abcdef0123456789abcdef");
        let err = Config::load_with_env(&p, []).unwrap_err().to_string();
        assert!(err.contains("share the socket"), "{err}");
        assert!(Config::load_with_env(&p, env("")).is_ok(), "without sockets, one port on two addresses is fine");
    }

    #[test]
    fn nginx_user_is_an_account_name() {
        let dir = tmp();
        let d = dir.path();
        let with = |user: &str| SAMPLE.replace("[jwt]", &format!("[nginx]\nuser = {user:?}\n[jwt]"));
        let p = write(d, &with("shopgate-nginx"), "k3y-0123456789abcdef0123456789abcdef");
        assert_eq!(Config::load_with_env(&p, []).unwrap().nginx.user.as_deref(), Some("shopgate-nginx"));
        assert_eq!(
            Config::load_with_env(&write(d, SAMPLE, "k3y-0123456789abcdef0123456789abcdef"), []).unwrap().nginx.user,
            None
        );
        for bad in ["", "a b", "root;", "-x", "nginx\nuser"] {
            let p = write(d, &with(bad), "k3y-0123456789abcdef0123456789abcdef");
            let err = Config::load_with_env(&p, []).unwrap_err().to_string();
            assert!(err.contains("is not an account name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn env_overrides_the_file() {
        let dir = tmp();
        let d = dir.path();
        let p = write(d, SAMPLE, "k3y-0123456789abcdef0123456789abcdef");
        let env = [
            ("SHOP__NGINX__LISTEN".to_string(), "127.0.0.1:9999".to_string()),
            ("SHOP__SHARDS__A__NUMBER".to_string(), "7".to_string()),
            ("SHOP_JWT_KEY".to_string(), "short".to_string()),
        ];
        let err = Config::load_with_env(&p, env.clone()).unwrap_err();
        assert!(matches!(err, ConfigError::Key(KeyError::TooShort(5))), "{err}");
        let c = Config::load_with_env(&p, env.into_iter().take(2)).unwrap();
        assert_eq!(c.nginx.listen.port(), 9999);
        let backend = [
            ("SHOP__BACKEND__MAX_IN_FLIGHT".to_string(), "4".to_string()),
            ("SHOP__BACKEND__IDEMPOTENCY_RETENTION_SECONDS".to_string(), "60".to_string()),
        ];
        let c2 = Config::load_with_env(&p, backend).unwrap();
        assert_eq!((c2.backend.max_in_flight, c2.backend.idempotency_retention_seconds), (4, 60));
        assert_eq!(c.shard("a").unwrap().number, 7);
    }

    #[test]
    fn refuses_bad_configs_with_one_line() {
        let dir = tmp();
        let d = dir.path();
        let cases = [
            (SAMPLE.replace("buckets = \"odd\"", "buckets = \"1,3\""), "assigned to no shard"),
            (SAMPLE.replace("number = 1", "number = 0"), "used twice"),
            (SAMPLE.replace("[jwt]", "[jwt]\nalgorithm = \"none\""), "not supported"),
            (SAMPLE.replace("[jwt]", "[jwt]\nsurprise = 1"), "unknown field"),
            (SAMPLE.replace("listen = \"127.0.0.1:8091\"", "listen = []"), "shards.a.listen needs 1 to 64"),
            (
                SAMPLE.replace("listen = \"127.0.0.1:8091\"", "listen = [\"127.0.0.1:8091\", \"127.0.0.1:8091\"]"),
                "shards.a.listen lists 127.0.0.1:8091 twice",
            ),
            (
                SAMPLE.replace("listen = \"127.0.0.1:8091\"", "listen = \"localhost\""),
                "\"localhost\" is not an IP:port",
            ),
            (SAMPLE.replace("listen = \"127.0.0.1:8091\"", "listen = 8091"), "or a list of addresses"),
            // The keys without a default, left out.
            (SAMPLE.replace("database_url = \"sqlite:data/auth.db\"", ""), "verifier.database_url is missing"),
            (SAMPLE.replace("listen = [\"127.0.0.1:8090\"]", ""), "verifier.listen needs at least one address"),
            (SAMPLE.replace("primary = \"sqlite:data/a.db\"", ""), "shards.a.primary is missing"),
            (SAMPLE.replace("number = 1\n", ""), "shards.b.number is missing"),
            (SAMPLE.replace("buckets = \"even\"", ""), "shards.a.buckets is missing"),
            (SAMPLE.replace("listen = \"127.0.0.1:8092\"", ""), "shards.b.listen is missing"),
            (
                SAMPLE
                    .replace("[verifier]\nlisten = [\"127.0.0.1:8090\"]\ndatabase_url = \"sqlite:data/auth.db\"\n", ""),
                "missing field `verifier`",
            ),
        ];
        for (text, want) in cases {
            let p = write(d, &text, "k3y-0123456789abcdef0123456789abcdef");
            let err = Config::load_with_env(&p, []).unwrap_err().to_string();
            assert!(err.contains(want), "{err} lacks {want}");
        }
        let no_capacity = SAMPLE.replace("[jwt]", "[backend]\nmax_in_flight = 0\n[jwt]");
        let p = write(d, &no_capacity, "k3y-0123456789abcdef0123456789abcdef");
        let err = Config::load_with_env(&p, []).unwrap_err().to_string();
        assert!(err.contains("backend.max_in_flight"), "{err}");
        let p = write(d, SAMPLE, "changeme");
        assert!(Config::load_with_env(&p, []).unwrap_err().to_string().contains("placeholder"));
    }

    /// A database on another host in plaintext is refused at load, in one line naming the setting
    /// and not the password; the flag lets it be; with `tls.ca`, TLS with the certificate checked is
    /// its default.
    #[test]
    fn plaintext_to_a_remote_database_is_refused_at_load() {
        let dir = tmp();
        let p = write(dir.path(), SAMPLE, "k3y-0123456789abcdef0123456789abcdef");
        let remote = ("SHOP__SHARDS__B__REPLICA".to_owned(), "mysql://shop:hunter2@10.0.0.7:3306/shard_b".to_owned());
        let err = Config::load_with_env(&p, [remote.clone()]).unwrap_err().to_string();
        assert!(err.starts_with("config: shards.b.replica: the database on 10.0.0.7 "), "{err}");
        assert!(!err.contains("hunter2") && !err.contains('\n'), "{err}");
        let allow = ("SHOP__TLS__ALLOW_PLAINTEXT_DATABASES".to_owned(), "true".to_owned());
        let c = Config::load_with_env(&p, [remote.clone(), allow]).unwrap();
        assert_eq!(c.shard("b").unwrap().replica.as_ref().unwrap().expose(), remote.1);
        let ca = ("SHOP__TLS__CA".to_owned(), "certs/ca.crt".to_owned());
        let c = Config::load_with_env(&p, [remote, ca]).unwrap();
        let want = format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", dir.path().join("certs/ca.crt").display());
        let got = c.shard("b").unwrap().replica.as_ref().unwrap().expose().replace("%2F", "/");
        assert!(got.ends_with(&want), "{got}");
        // The sample's own loopback MySQL URL stays as it is.
        assert_eq!(c.shard("b").unwrap().primary.expose(), "mysql://shop:hunter2@127.0.0.1:3306/shard_b");
    }

    #[test]
    fn a_shard_listens_on_one_address_or_one_per_process() {
        let dir = tmp();
        let d = dir.path();
        let two = SAMPLE.replace("listen = \"127.0.0.1:8091\"", "listen = [\"127.0.0.1:8091\", \"127.0.0.1:8093\"]");
        let p = write(d, &two, "k3y-0123456789abcdef0123456789abcdef");
        let c = Config::load_with_env(&p, []).unwrap();
        let (a, b) = (c.shard("a").unwrap(), c.shard("b").unwrap());
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!((a.listen.clone(), a.addr()), (vec![addr(8091), addr(8093)], addr(8091)));
        assert_eq!(a.instance_addr(1), Ok(addr(8093)));
        assert_eq!(b.listen, vec![addr(8092)], "the single-address form is one process");
        let err = b.instance_addr(1).unwrap_err();
        assert_eq!(err, "shard b has 1 backend process(es) (shards.b.listen), so --instance must be 0-0, not 1");
        // A list from the environment, as `SHOP__…` values are read: TOML.
        let env = [("SHOP__SHARDS__B__LISTEN".to_string(), "[\"127.0.0.1:7001\", \"127.0.0.1:7002\"]".to_string())];
        let c = Config::load_with_env(&p, env).unwrap();
        assert_eq!(c.shard("b").unwrap().listen, vec![addr(7001), addr(7002)]);
        let many: Vec<String> = (0..65).map(|i| format!("\"127.0.0.1:{}\"", 10_000 + i)).collect();
        let too_many = SAMPLE.replace("listen = \"127.0.0.1:8091\"", &format!("listen = [{}]", many.join(", ")));
        let p = write(d, &too_many, "k3y-0123456789abcdef0123456789abcdef");
        assert!(Config::load_with_env(&p, []).unwrap_err().to_string().contains("not 65"));
    }
}
