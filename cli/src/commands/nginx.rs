//! `shopctl nginx render`: the nginx config, generated from the stack config and its shard map.
//!
//! The template is `nginx/shopgate.conf.in`; this fills in the addresses, the switches and the
//! shard map, rendered by the same `ShardMap` the backends route with, and the timeouts that must
//! equal the services' own (`shopgate_core::timeouts`), from the same constants.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::json;
use shopgate_core::config::{Config, SERVICE_NAME};
use shopgate_core::timeouts::{REQUEST_DEADLINE, UPSTREAM_KEEPALIVE};
use shopgate_core::ShardMap;

use crate::output::{out_raw, Format};
use crate::{stack, Context};

mod edge;

const TEMPLATE: &str = include_str!("../../../nginx/shopgate.conf.in");

/// The config's njs module (header check, the access log's path), written beside the config.
const JS: &str = include_str!("../../../nginx/shopgate.js");
const JS_FILE_NAME: &str = "shopgate.js";

#[derive(Subcommand, Debug)]
pub(crate) enum NginxCommand {
    /// Print (or write) the nginx config for the stack.
    Render(RenderArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct RenderArgs {
    /// Only the shard map (two `map` blocks), for including in a config of your own.
    #[arg(long)]
    pub(crate) map_only: bool,
    /// Write to this file (atomically) instead of standard output, and the API description
    /// (`openapi.json`, served at `/openapi.json`) beside it.
    #[arg(long, short)]
    pub(crate) output: Option<PathBuf>,
}

pub async fn run(ctx: &Context, cmd: NginxCommand) -> anyhow::Result<()> {
    let NginxCommand::Render(a) = cmd;
    let config = stack::load_config(ctx)?;
    let map = stack::current_map(&config).await?;
    // The API description goes beside the config written (else into nginx's prefix).
    let openapi_file = match &a.output {
        Some(path) => std::path::absolute(path)
            .with_context(|| format!("cannot resolve {}", path.display()))?
            .with_file_name(crate::openapi::FILE_NAME),
        None => prefix_dir(&config)?.join(crate::openapi::FILE_NAME),
    };
    let text = if a.map_only { shard_map(&map) } else { render_with(&config, &map, &openapi_file)? };
    match a.output {
        Some(path) => {
            if !a.map_only {
                super::openapi::write_atomically(&openapi_file, &crate::openapi::to_json())?;
                super::openapi::write_atomically(&openapi_file.with_file_name(JS_FILE_NAME), JS)?;
            }
            super::openapi::write_atomically(&path, &text)?;
            if ctx.format == Format::Json {
                ctx.format.print(&json!({"written": path}));
            }
        }
        None if ctx.format == Format::Json => ctx.format.print(&json!({"config": text})),
        None => out_raw(&text),
    }
    Ok(())
}

/// Renders the config for `map` where the running nginx reads it (`PREFIX/nginx.conf`, as
/// `scripts/up` starts it) and has nginx reload it gracefully (SIGHUP to the master in
/// `PREFIX/nginx.pid`): new workers route by `map`, old ones finish the requests they hold.
/// Returns the worker processes that ran before the reload: they route by the old map until they
/// exit ([`old_workers_left`]).
pub(crate) fn reload(config: &Config, map: &ShardMap) -> anyhow::Result<Vec<u32>> {
    let prefix = prefix_dir(config)?;
    let conf = prefix.join("nginx.conf");
    let openapi_file = prefix.join(crate::openapi::FILE_NAME);
    super::openapi::write_atomically(&prefix.join(JS_FILE_NAME), JS)?;
    super::openapi::write_atomically(&conf, &render_with(config, map, &openapi_file)?)?;
    let pid_file = prefix.join("nginx.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("nginx is not running from {} (no {})", prefix.display(), pid_file.display()))?;
    let master: u32 = pid.trim().parse().with_context(|| format!("{} does not hold a pid", pid_file.display()))?;
    let before = children(master);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &master.to_string()])
        .status()
        .context("cannot run kill to signal nginx")?;
    anyhow::ensure!(status.success(), "nginx (pid {master}) could not be signalled to reload");
    Ok(before)
}

/// Which of `workers` still run: an old worker takes requests on the connections it holds, by the
/// old map, until it exits (at once for idle connections, after the answer for busy ones).
pub(crate) fn old_workers_left(workers: &[u32]) -> Vec<u32> {
    // An exited worker not yet reaped by the master is a zombie (state Z): gone too.
    workers.iter().copied().filter(|w| stat_field(*w, 0).is_some_and(|state| state != "Z")).collect()
}

/// Field `n` after the command name in `/proc/PID/stat` (0: state, 1: parent pid).
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces, so read after the last ')'.
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(n).map(str::to_owned)
}

/// The processes whose parent is `parent` (from `/proc`; none where there is no `/proc`).
fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| stat_field(*pid, 1).and_then(|p| p.parse::<u32>().ok()) == Some(parent))
        .collect()
}

pub fn shard_map(map: &ShardMap) -> String {
    map.render_nginx_map("shop_user_id", "shop_shard")
}

/// `$shop_allow`: the methods each public path has, from the API description, for the `Allow`
/// header of the 405s nginx gives itself (a TRACE, refused before any location is chosen; a POST
/// to `/openapi.json`). The services' own 405s carry their own.
pub(crate) fn allow_map() -> String {
    let doc = crate::openapi::document();
    let mut out = String::from(
        "# Allow for nginx's own 405s: each public path's methods, from the API description.\nmap $uri $shop_allow {\n    default \"\";\n    /openapi.json \"GET, HEAD\";\n",
    );
    for (path, item) in &doc.paths.paths {
        let mut methods = methods_of(item);
        // The backends (axum) answer HEAD wherever they answer GET; the verifier does not.
        if path.starts_with("/api/") && methods.iter().any(|m| m == "GET") {
            methods.push("HEAD".into());
            methods.sort();
        }
        let _ = writeln!(out, "    \"~^{}$\" \"{}\";", path_pattern(path), methods.join(", "));
    }
    out.push_str("}\n");
    out
}

/// The regular expression (without anchors) for the URIs nginx takes for an API description path:
/// `{id}` is any one segment, `/auth/` and `/api/` also under the original design's prefixes.
fn path_pattern(path: &str) -> String {
    let mut pattern = String::new();
    for segment in path.split('/').skip(1) {
        pattern.push('/');
        if segment.starts_with('{') {
            pattern.push_str("[^/]+");
        } else {
            pattern.push_str(&segment.replace('.', "\\."));
        }
    }
    if let Some(rest) = pattern.strip_prefix("/auth/") {
        format!("(/authentication)?/auth/{rest}")
    } else if let Some(rest) = pattern.strip_prefix("/api/") {
        format!("(/backend)?/api/{rest}")
    } else {
        pattern
    }
}

/// An upstream's `server` line: a server that refuses a connection is skipped for 2 s, then tried
/// again (the template says why; the verifiers', each shard's and the catalog's upstreams alike).
fn server_line(target: impl std::fmt::Display) -> String {
    format!("        server {target} max_fails=1 fail_timeout=2s;")
}

/// nginx's prefix folder, absolute.
fn prefix_dir(config: &Config) -> anyhow::Result<PathBuf> {
    let prefix = &config.nginx.prefix;
    Ok(std::path::absolute(prefix).unwrap_or_else(|_| prefix.clone()))
}

/// A path as nginx config can hold it unquoted.
fn nginx_path(what: &str, path: &std::path::Path) -> anyhow::Result<String> {
    let text = path.to_str().with_context(|| format!("the {what} path is not UTF-8"))?.to_owned();
    if text.is_empty() || text.contains(|c: char| c.is_whitespace() || "\"';{}$#\\".contains(c)) {
        anyhow::bail!("the {what} {text:?} has characters nginx config cannot hold unquoted");
    }
    Ok(text)
}

/// The ciphers of Mozilla's "intermediate" configuration for TLS 1.2 (TLS 1.3's own suites are all
/// good and OpenSSL's default): ECDHE with AES-GCM or ChaCha20-Poly1305, ECDSA or RSA keys. The
/// guideline's DHE suites are left out: they need a dhparam file, and every client the
/// intermediate level serves has ECDHE.
pub(crate) const INTERMEDIATE_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// The file in nginx's prefix that holds the edge certificate followed by `chain`, written at each
/// render when `[nginx.tls] chain` is set: nginx takes one file.
pub(crate) const FULLCHAIN_FILE: &str = "edge-fullchain.pem";

/// nginx serving plaintext on an address other hosts reach, which the config did not ask for.
fn check_plaintext(config: &Config) -> anyhow::Result<()> {
    let nginx = &config.nginx;
    if nginx.tls.is_none() && !nginx.listen.ip().is_loopback() && !nginx.allow_plaintext {
        anyhow::bail!(
            "nginx.listen {} is not a loopback address and the config has no [nginx.tls]: tokens and passwords \
             would cross the network in plaintext; add [nginx.tls] (docs/operations.md, Certificates), or set \
             nginx.allow_plaintext = true if a load balancer in front ends TLS",
            nginx.listen
        );
    }
    Ok(())
}

/// The edge's `listen` and TLS lines, and the redirecting server, from `[nginx.tls]` (plain
/// `listen ADDR` and nothing else without it).
fn edge(config: &Config, prefix: &std::path::Path) -> anyhow::Result<(String, String, String, String)> {
    let listen = config.nginx.listen;
    let Some(tls) = &config.nginx.tls else {
        return Ok((listen.to_string(), String::new(), String::new(), String::new()));
    };
    if tls.redirect_listen == Some(listen) {
        anyhow::bail!("nginx.tls.redirect_listen {listen} is nginx.listen itself: give the redirect a port of its own");
    }
    let certificate = match &tls.chain {
        None => tls.certificate.clone(),
        Some(chain) => {
            let read = |path: &std::path::Path| {
                std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
            };
            let mut full = read(&tls.certificate)?;
            if !full.ends_with('\n') {
                full.push('\n');
            }
            full.push_str(&read(chain)?);
            std::fs::create_dir_all(prefix).with_context(|| format!("cannot make {}", prefix.display()))?;
            let path = prefix.join(FULLCHAIN_FILE);
            shopgate_core::files::replace_private(&path, full.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            path
        }
    };
    let certificate = nginx_path("edge certificate", &std::path::absolute(&certificate)?)?;
    let key = nginx_path("edge key", &std::path::absolute(&tls.key)?)?;
    // nginx 1.22 (Debian 12) has no `http2 on;` (1.25.1): HTTP/2 is a flag of `listen`.
    let lines = format!(
        "        # HTTPS ([nginx.tls]): TLS 1.2 and 1.3, Mozilla's \"intermediate\" suites, HTTP/2 by ALPN.\n\
         \x20       ssl_certificate {certificate};\n\
         \x20       ssl_certificate_key {key};\n\
         \x20       ssl_protocols TLSv1.2 TLSv1.3;\n\
         \x20       ssl_ciphers {INTERMEDIATE_CIPHERS};\n\
         \x20       ssl_ecdh_curve X25519:prime256v1:secp384r1;\n\
         \x20       ssl_prefer_server_ciphers off;\n\
         \x20       # Resumption from a cache all workers share (about 40000 sessions), for a day. No session\n\
         \x20       # tickets: nginx would keep one ticket key for as long as it runs, and whoever got it could\n\
         \x20       # decrypt every session it resumed (no forward secrecy); TLS 1.3 resumes from the cache too.\n\
         \x20       ssl_session_cache shared:shop_tls:10m;\n\
         \x20       ssl_session_timeout 1d;\n\
         \x20       ssl_session_tickets off;\n"
    );
    let hsts = match tls.hsts_max_age_seconds {
        0 => String::new(),
        secs => format!("max-age={secs}"),
    };
    let redirect = match tls.redirect_listen {
        None => String::new(),
        Some(plain) => {
            let port = match listen.port() {
                443 => String::new(),
                port => format!(":{port}"),
            };
            format!(
                "\n    # [nginx.tls] redirect_listen: plain HTTP that answers every request with a 301 to HTTPS.\n    \
                 server {{\n        listen {plain};\n        return 301 https://$host{port}$request_uri;\n    }}\n"
            )
        }
    };
    Ok((format!("{listen} ssl http2"), lines, hsts, redirect))
}

/// The whole nginx config, serving the API description at `/openapi.json` from `openapi_file`.
/// The whole nginx config routing by `map` (the current one, from the auth database). With
/// `[nginx.tls] chain`, writes the certificate and its chain into one file in nginx's prefix.
pub fn render_with(config: &Config, map: &ShardMap, openapi_file: &std::path::Path) -> anyhow::Result<String> {
    // A bucket whose owner has no upstream here would fail every request of its users.
    config.check_owners(map)?;
    check_plaintext(config)?;
    let (listen, edge_tls, hsts, redirect) = edge(config, &prefix_dir(config)?)?;
    let prefix = nginx_path("nginx prefix", &prefix_dir(config)?)?;
    let js_file = nginx_path("njs module file", &openapi_file.with_file_name(JS_FILE_NAME))?;
    let openapi_file = nginx_path("API description file", openapi_file)?;
    let workers = &config.nginx.worker_processes;
    if workers != "auto" && !workers.parse::<u16>().is_ok_and(|n| n > 0) {
        anyhow::bail!("nginx.worker_processes must be \"auto\" or a positive number, not {workers:?}");
    }
    let (internal_tls, verifier_scheme, backend_scheme) = internal_tls(config)?;
    let mut verifiers = String::new();
    for addr in &config.verifier.listen {
        // Skipped for 2 s after a refused connection, then tried again (see the template). A
        // verifier on this host through its unix socket, where its `X-Real-IP` is believed
        // (`VerifierConfig::socket_path`): over TCP from loopback it would not be.
        let target = match config.verifier.socket_path(*addr) {
            Some(socket) => format!("unix:{}", nginx_path("verifier socket", &std::path::absolute(&socket)?)?),
            None => addr.to_string(),
        };
        let _ = writeln!(verifiers, "{}", server_line(target));
    }
    let mut shards = String::new();
    let mut catalog_servers = String::new();
    for s in &config.shards {
        let _ = writeln!(shards, "    upstream shard_{} {{", s.name);
        if s.listen.len() > 1 {
            // Each user to one process of the shard (see the template).
            let _ = writeln!(shards, "        hash $shop_user_id consistent;");
        }
        for addr in &s.listen {
            // One line per backend process of the shard; a process that refuses a connection is
            // skipped for 2 s (see the template). A lone server is never skipped (nginx ignores
            // max_fails when a group has one).
            let _ = writeln!(shards, "{}", server_line(addr));
            // The catalog's upstream has every process of every shard.
            let _ = writeln!(catalog_servers, "{}", server_line(addr));
        }
        let _ = writeln!(
            shards,
            "        keepalive 32;\n        keepalive_timeout {};\n    }}",
            nginx_time(UPSTREAM_KEEPALIVE)
        );
    }
    let indent = |text: &str| text.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let (cache_path, cache) = match config.nginx.auth_cache_seconds {
        0 => (String::new(), String::new()),
        secs => (
            format!("    proxy_cache_path {prefix}/auth_cache levels=1:2 keys_zone=shop_auth:10m max_size=64m inactive=60s;\n"),
            format!(
                "            # Revocation takes up to {secs} s longer to reach nginx with this cache on. Keyed by\n            # the token's SHA-256 (shopgate.js), never the token: a cache file holds its key.\n            proxy_cache shop_auth;\n            proxy_cache_key $shop_token_hash;\n            proxy_cache_valid 200 {secs}s;\n            proxy_cache_lock on;\n            proxy_ignore_headers Cache-Control Expires Set-Cookie;"
            ),
        ),
    };
    let (catalog_path, catalog_cache) = match config.nginx.catalog_cache_seconds {
        0 => (String::new(), "            proxy_no_cache 1;".to_owned()),
        secs => (
            format!("    proxy_cache_path {prefix}/catalog_cache levels=1 keys_zone=shop_catalog:1m max_size=32m inactive=60s;\n"),
            format!(
                "            proxy_cache shop_catalog;\n            # The URI as the client sent it: $uri is decoded, so /api/products/1%3Fref=mail (a 404)\n            # and /api/products/1?ref=mail shared a key.\n            proxy_cache_key $request_uri;\n            proxy_cache_valid 200 404 {secs}s;\n            proxy_ignore_headers Cache-Control Expires Set-Cookie;"
            ),
        ),
    };
    let debug = if config.nginx.debug_headers {
        "            # Debug headers are on: the backend's X-Shop-Shard passes, plus the upstream address.\n            add_header X-Shop-Upstream $upstream_addr always;"
    } else {
        "            proxy_hide_header X-Shop-Shard;"
    };
    // nginx's own numbers for prometheus-nginx-exporter: connections and requests. Per-shard
    // traffic, statuses and latencies are the backends' and the verifiers' own /metrics.
    let status = match config.nginx.status_listen {
        None => String::new(),
        Some(addr) => format!(
            "\n    # nginx's own numbers (stub_status) for prometheus-nginx-exporter, on a listener of their own.\n    server {{\n        listen {addr};\n        access_log off;\n        location = /stub_status {{\n            stub_status;\n        }}\n        location / {{\n            return 404;\n        }}\n    }}\n"
        ),
    };
    let nginx = &config.nginx;
    let edge = edge::http_lines(nginx, &api_methods());
    let (worker_connections, worker_files) = edge::worker_lines(nginx);
    let (header_timeout, body_timeout) = edge::client_timeouts(nginx);
    let listen = if nginx.proxy_protocol { format!("{listen} proxy_protocol") } else { listen };
    let text = TEMPLATE
        .replace("@WORKER_CONNECTIONS@", &worker_connections)
        .replace("@WORKER_FILES@", &worker_files)
        .replace("@REAL_IP@\n", &edge.real_ip)
        .replace("@DOOR_LIMITS@\n", &edge.door_limits)
        .replace("@CORS@\n", &edge.cors)
        .replace("@CLIENT_HEADER_TIMEOUT@", &header_timeout)
        .replace("@CLIENT_BODY_TIMEOUT@", &body_timeout)
        .replace("@STATUS_SERVER@\n", &status)
        .replace("@USER@\n", &config.nginx.user.as_ref().map(|user| format!("user {user};\n")).unwrap_or_default())
        .replace("@WORKERS@", workers)
        .replace("@PREFIX@", &prefix)
        .replace("@OPENAPI_FILE@", &openapi_file)
        .replace("@JS_FILE@", &js_file)
        .replace("@LISTEN@", &listen)
        .replace("@EDGE_TLS@\n", &edge_tls)
        .replace("@HSTS@", &hsts)
        .replace("@REDIRECT_SERVER@\n", &redirect)
        .replace("@INTERNAL_TLS@\n", &internal_tls)
        .replace("@VERIFIER_SCHEME@", verifier_scheme)
        .replace("@BACKEND_SCHEME@", backend_scheme)
        .replace("@VERIFIER_SERVERS@\n", &verifiers)
        .replace("@SHARD_UPSTREAMS@\n", &shards)
        .replace("@SHARD_MAP@\n", &indent(&shard_map(map)))
        .replace("@MAP_VERSION@", &map.version().to_string())
        .replace("@ALLOW_MAP@\n", &indent(&allow_map()))
        .replace("@AUTH_CACHE_PATH@\n", &cache_path)
        .replace("@AUTH_CACHE@\n", &if cache.is_empty() { cache } else { cache + "\n" })
        .replace("@CATALOG_SERVERS@\n", &catalog_servers)
        .replace("@CATALOG_CACHE_PATH@\n", &catalog_path)
        .replace("@CATALOG_CACHE_SECONDS@", &config.nginx.catalog_cache_seconds.to_string())
        .replace("@CATALOG_CACHE@\n", &format!("{catalog_cache}\n"))
        .replace("@DEBUG_HEADERS@\n", &format!("{debug}\n"))
        .replace("@REQUEST_DEADLINE@", &nginx_time(REQUEST_DEADLINE))
        .replace("@UPSTREAM_KEEPALIVE@", &nginx_time(UPSTREAM_KEEPALIVE));
    let text = edge::expand(&text, "EDGE_HEADERS", &edge::headers(nginx, true));
    let text = edge::expand(&text, "PUBLIC_HEADERS", &edge::headers(nginx, false));
    let text = edge::expand(&text, "LIMIT_CONN", &edge::limit_conn(nginx));
    let text = edge::expand(&text, "LIMIT_API", &edge::limit_api(nginx));
    Ok(edge::expand(&text, "LIMIT_AUTH", &edge::limit_auth(nginx)))
}

/// Every method of the public API, for a preflight's `Access-Control-Allow-Methods`.
fn api_methods() -> Vec<String> {
    let mut methods: Vec<String> = crate::openapi::document().paths.paths.values().flat_map(methods_of).collect();
    methods.push("HEAD".into());
    methods.sort();
    methods.dedup();
    methods
}

/// The methods the API description gives one path, upper case.
fn methods_of(item: &utoipa::openapi::PathItem) -> Vec<String> {
    let value = serde_json::to_value(item).unwrap_or_default();
    ["get", "put", "post", "delete", "patch"]
        .iter()
        .filter(|m| value.get(**m).is_some())
        .map(|m| m.to_uppercase())
        .collect()
}

/// With `[tls]` set, nginx's side of the stack's own hops: the http-level `proxy_ssl_*` lines
/// (nginx checks each verifier's and backend's certificate against `tls.ca` and for
/// [`SERVICE_NAME`], and presents `tls.certificate` as its client certificate, sessions reused),
/// and the schemes of the verifiers' and the backends' `proxy_pass`. Verifiers on nginx's host
/// are reached on their unix sockets, which stay plain (local, mode 0660): their scheme is http.
fn internal_tls(config: &Config) -> anyhow::Result<(String, &'static str, &'static str)> {
    let tls = &config.tls;
    let (Some(certificate), Some(key), Some(ca)) = (&tls.certificate, &tls.key, &tls.ca) else {
        return Ok((String::new(), "http", "http"));
    };
    let sockets = config.verifier.listen.iter().filter(|a| config.verifier.socket_path(**a).is_some()).count();
    let verifier_scheme = match sockets {
        0 => "https",
        n if n == config.verifier.listen.len() => "http",
        _ => anyhow::bail!(
            "with [tls], nginx reaches the verifiers on its host by their unix sockets (plain) and the others over \
             TLS: one upstream cannot do both; put them all on nginx's host, all elsewhere, or set verifier.socket_dir = \"\""
        ),
    };
    let path = |what: &str, path: &std::path::Path| nginx_path(what, &std::path::absolute(path)?);
    let lines = format!(
        "    # [tls]: the verifiers and backends serve TLS. nginx checks each one's certificate against\n\
         \x20   # the stack's CA and for the name every one of them carries, whatever its address, and\n\
         \x20   # presents the stack's certificate, which they require when require_client_certificate is\n\
         \x20   # set. Sessions are resumed, and the upstreams' keep-alive keeps each connection for many\n\
         \x20   # requests (docs/operations.md, \"TLS between the stack's parts\").\n\
         \x20   proxy_ssl_protocols TLSv1.2 TLSv1.3;\n\
         \x20   proxy_ssl_trusted_certificate {ca};\n\
         \x20   proxy_ssl_verify on;\n\
         \x20   proxy_ssl_verify_depth 2;\n\
         \x20   proxy_ssl_name {SERVICE_NAME};\n\
         \x20   proxy_ssl_certificate {certificate};\n\
         \x20   proxy_ssl_certificate_key {key};\n\
         \x20   proxy_ssl_session_reuse on;\n",
        ca = path("tls.ca", ca)?,
        certificate = path("tls.certificate", certificate)?,
        key = path("tls.key", key)?,
    );
    Ok((lines, verifier_scheme, "https"))
}

/// `d` as nginx config writes a time: whole seconds as `5s`, anything finer in milliseconds.
fn nginx_time(d: std::time::Duration) -> String {
    match d.subsec_millis() {
        0 => format!("{}s", d.as_secs()),
        _ => format!("{}ms", d.as_millis()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::SocketAddr;
    use std::time::Duration;

    use shopgate_core::config::{ensure_dev_key, ConfigBuilder, DEV_KEY_FILE};
    use shopgate_core::timeouts::{IDLE_GRACE, IDLE_TIMEOUT};

    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// The config nginx would run for two shards, the second with two backend processes.
    fn rendered() -> String {
        let dir = tempfile::tempdir().unwrap();
        ensure_dev_key(&dir.path().join(DEV_KEY_FILE)).unwrap();
        let config = ConfigBuilder::new(addr(8080), &[addr(9000)])
            .shard("a", 0, "even", addr(9001))
            .shard_processes("b", 1, "odd", &[addr(9002), addr(9012)])
            .write(&dir.path().join("shop.toml"))
            .unwrap();
        render_with(&config, &config.shard_map, &dir.path().join("openapi.json")).unwrap()
    }

    /// With `[tls]`: every proxy_pass to a verifier or backend is https, nginx checks their
    /// certificates against the CA for SERVICE_NAME and presents the stack's; without, all http and
    /// no proxy_ssl line. Verifiers on nginx's host stay on their plain unix sockets; a mix of
    /// local and remote verifiers is refused in one line.
    #[test]
    fn internal_tls_makes_every_upstream_https_with_nginxs_certificate() {
        let dir = tempfile::tempdir().unwrap();
        ensure_dev_key(&dir.path().join(DEV_KEY_FILE)).unwrap();
        let remote = SocketAddr::from(([10, 0, 0, 5], 9000));
        let render = |verifiers: &[SocketAddr], tls: bool| {
            let mut b = ConfigBuilder::new(addr(8080), verifiers).shard("a", 0, "even", addr(9001)).shard(
                "b",
                1,
                "odd",
                addr(9002),
            );
            if tls {
                b = b
                    .set("tls.ca", "\"certs/ca.crt\"")
                    .set("tls.certificate", "\"certs/internal.crt\"")
                    .set("tls.key", "\"certs/internal.key\"");
            }
            let config = b.write(&dir.path().join("shop.toml")).unwrap();
            render_with(&config, &config.shard_map, &dir.path().join("openapi.json"))
        };
        let passes = |text: &str| -> Vec<String> {
            text.lines().filter_map(|l| l.trim().strip_prefix("proxy_pass ")).map(str::to_owned).collect()
        };
        let plain = render(&[remote], false).unwrap();
        assert!(passes(&plain).iter().all(|p| p.starts_with("http://")), "{:?}", passes(&plain));
        assert!(!plain.contains("proxy_ssl"));

        let tls = render(&[remote], true).unwrap();
        let https = passes(&tls);
        assert_eq!(https.len(), 4, "{https:?}");
        assert!(https.iter().all(|p| p.starts_with("https://")), "{https:?}");
        let ca = dir.path().join("certs/ca.crt");
        for line in [
            format!("proxy_ssl_trusted_certificate {};", ca.display()),
            "proxy_ssl_verify on;".to_owned(),
            format!("proxy_ssl_name {SERVICE_NAME};"),
            format!("proxy_ssl_certificate {};", dir.path().join("certs/internal.crt").display()),
            format!("proxy_ssl_certificate_key {};", dir.path().join("certs/internal.key").display()),
            "proxy_ssl_session_reuse on;".to_owned(),
        ] {
            assert!(tls.lines().any(|l| l.trim() == line), "no {line:?} in:\n{tls}");
        }
        // Upstream keep-alive stays.
        assert!(tls.contains("proxy_http_version 1.1;") && tls.contains("keepalive 64;"));

        let local = render(&[addr(9000)], true).unwrap();
        let local_passes = passes(&local);
        assert!(local_passes.iter().filter(|p| p.contains("://verifier")).all(|p| p.starts_with("http://")));
        assert!(local_passes.iter().filter(|p| !p.contains("://verifier")).all(|p| p.starts_with("https://")));
        let mixed = render(&[addr(9000), remote], true).unwrap_err().to_string();
        assert!(mixed.contains("unix sockets") && !mixed.contains('\n'), "{mixed}");
    }

    /// The location block that opens with `opening`, up to its closing brace.
    fn location<'a>(text: &'a str, opening: &str) -> &'a str {
        let start = text.find(opening).unwrap_or_else(|| panic!("no {opening:?} in the render"));
        let len = text[start..].find("\n        }\n").unwrap();
        &text[start..start + len]
    }

    /// An nginx time (`5s`, `500ms`).
    fn parse_time(text: &str) -> Duration {
        let bad = || panic!("{text:?} is not an nginx time in s or ms");
        match text.strip_suffix("ms") {
            Some(ms) => Duration::from_millis(ms.parse().unwrap_or_else(|_| bad())),
            None => Duration::from_secs(text.strip_suffix('s').and_then(|s| s.parse().ok()).unwrap_or_else(bad)),
        }
    }

    /// The times set by every `directive` line of `block`.
    fn times(block: &str, directive: &str) -> Vec<Duration> {
        block
            .lines()
            .filter_map(|l| l.trim().strip_prefix(directive)?.strip_prefix(' ')?.strip_suffix(';'))
            .map(parse_time)
            .collect()
    }

    #[test]
    fn nginx_writes_times_as_it_reads_them() {
        for d in [Duration::from_secs(5), Duration::from_millis(2500), Duration::from_millis(40)] {
            assert_eq!(parse_time(&nginx_time(d)), d);
        }
        assert_eq!(nginx_time(Duration::from_secs(3)), "3s");
    }

    /// nginx waits for a shard's answer exactly as long as the backend works on it before its own
    /// 503: the API's and the catalog's `proxy_read_timeout` are the backend's REQUEST_DEADLINE.
    /// And a late answer cannot make nginx send the request to another process: the API's
    /// `proxy_next_upstream_timeout` ends first.
    #[test]
    fn nginx_waits_for_a_shard_as_long_as_its_request_deadline() {
        let text = rendered();
        let api = location(&text, "location ~ ^(/backend)?/api/ {");
        let catalog = location(&text, "location ~ \"^(/backend)?/api/(products|categories)(/|$)\" {");
        for block in [api, catalog] {
            assert_eq!(times(block, "proxy_read_timeout"), [REQUEST_DEADLINE], "{block}");
        }
        let retry_window = times(api, "proxy_next_upstream_timeout");
        assert!(retry_window.len() == 1 && retry_window[0] < REQUEST_DEADLINE, "{api}");
    }

    /// Every upstream (the verifiers, each shard, the catalog) closes idle connections after
    /// UPSTREAM_KEEPALIVE, before the services close them (IDLE_TIMEOUT, IDLE_GRACE).
    #[test]
    fn nginx_closes_idle_upstream_connections_before_the_services_do() {
        let text = rendered();
        let keepalives = times(&text, "keepalive_timeout");
        assert_eq!(keepalives, [UPSTREAM_KEEPALIVE; 4], "verifier, shard_a, shard_b, shop_catalog");
        assert!(UPSTREAM_KEEPALIVE < IDLE_GRACE && UPSTREAM_KEEPALIVE < IDLE_TIMEOUT);
    }

    /// A stack config in `dir` with `settings`, nginx on `listen`.
    fn config_with(dir: &std::path::Path, listen: SocketAddr, settings: &[(&str, &str)]) -> Config {
        ensure_dev_key(&dir.join(DEV_KEY_FILE)).unwrap();
        let mut builder = ConfigBuilder::new(listen, &[addr(9000)]).shard("a", 0, "even", addr(9001)).shard(
            "b",
            1,
            "odd",
            addr(9002),
        );
        for (key, value) in settings {
            builder = builder.set(key, value);
        }
        builder.write(&dir.join("shop.toml")).unwrap()
    }

    fn render(config: &Config) -> anyhow::Result<String> {
        render_with(config, &config.shard_map, &config.path.with_file_name("openapi.json"))
    }

    /// Every block (the server, each location) that has an add_header of its own, and so inherits
    /// none from the server, sends Strict-Transport-Security with `always`.
    #[test]
    fn every_block_with_headers_of_its_own_sends_hsts() {
        let text = rendered();
        let edge = &text[text.find("    server {\n        listen 127.0.0.1:8080").unwrap()..];
        let edge = &edge[..edge.find("\n    }\n").unwrap()];
        let blocks: Vec<&str> = edge.split("\n        location ").collect();
        assert!(blocks.len() > 15, "{edge}");
        for block in blocks {
            // Only the block's own lines (a server's, up to its first location).
            if block.contains("add_header ") {
                assert!(
                    block.contains("add_header Strict-Transport-Security $shop_hsts always;"),
                    "a block without HSTS:\n{block}"
                );
            }
        }
    }

    #[test]
    fn nginx_tls_renders_https_with_http2_intermediate_suites_hsts_and_a_redirect() {
        let dir = tempfile::tempdir().unwrap();
        let settings = [
            ("nginx.tls.certificate", "certs/edge.crt"),
            ("nginx.tls.key", "certs/edge.key"),
            ("nginx.tls.redirect_listen", "127.0.0.1:8081"),
            ("nginx.tls.hsts_max_age_seconds", "600"),
        ];
        let config = config_with(dir.path(), addr(8443), &settings);
        let text = render(&config).unwrap();
        let certs = dir.path().join("certs");
        for line in [
            "listen 127.0.0.1:8443 ssl http2;".to_owned(),
            format!("ssl_certificate {};", certs.join("edge.crt").display()),
            format!("ssl_certificate_key {};", certs.join("edge.key").display()),
            "ssl_protocols TLSv1.2 TLSv1.3;".to_owned(),
            format!("ssl_ciphers {INTERMEDIATE_CIPHERS};"),
            "ssl_session_cache shared:shop_tls:10m;".to_owned(),
            "ssl_session_tickets off;".to_owned(),
            "on \"max-age=600\";".to_owned(),
            "listen 127.0.0.1:8081;".to_owned(),
            "return 301 https://$host:8443$request_uri;".to_owned(),
        ] {
            assert!(text.contains(&line), "no {line:?} in:\n{text}");
        }
        // The redirecting server does that and nothing else.
        let redirect = &text[text.find("listen 127.0.0.1:8081;").unwrap()..];
        assert_eq!(redirect[..redirect.find('}').unwrap()].lines().count(), 3, "{redirect}");
        // Without [nginx.tls]: plain HTTP, no TLS line, no redirect, an empty HSTS value.
        let plain = rendered();
        assert!(plain.contains("listen 127.0.0.1:8080;") && !plain.contains("ssl_") && !plain.contains("return 301"));
        assert!(plain.contains("on \"\";"), "{plain}");
    }

    #[test]
    fn a_chain_is_written_after_the_certificate_into_one_private_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("edge.crt"), "CERT").unwrap();
        std::fs::write(dir.path().join("chain.crt"), "CHAIN\n").unwrap();
        let settings =
            [("nginx.tls.certificate", "edge.crt"), ("nginx.tls.key", "edge.key"), ("nginx.tls.chain", "chain.crt")];
        let config = config_with(dir.path(), addr(8443), &settings);
        let text = render(&config).unwrap();
        let full = dir.path().join("nginx").join(FULLCHAIN_FILE);
        assert!(text.contains(&format!("ssl_certificate {};", full.display())), "{text}");
        assert_eq!(std::fs::read_to_string(&full).unwrap(), "CERT\nCHAIN\n");
        assert_eq!(std::fs::metadata(&full).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn plaintext_beyond_loopback_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let everywhere = SocketAddr::from(([0, 0, 0, 0], 8080));
        let e = render(&config_with(dir.path(), everywhere, &[])).unwrap_err().to_string();
        assert!(e.contains("nginx.listen 0.0.0.0:8080 is not a loopback address") && !e.contains('\n'), "{e}");
        assert!(e.contains("[nginx.tls]") && e.contains("nginx.allow_plaintext = true"), "{e}");
        render(&config_with(dir.path(), everywhere, &[("nginx.allow_plaintext", "true")])).unwrap();
        let tls = [("nginx.tls.certificate", "e.crt"), ("nginx.tls.key", "e.key")];
        render(&config_with(dir.path(), everywhere, &tls)).unwrap();
        render(&config_with(dir.path(), "[::1]:8080".parse().unwrap(), &[])).unwrap();
    }

    /// The edge's keys: trusted proxies become `set_real_ip_from` (none: nothing believed), each
    /// limit set to 0 renders no line of its own, and the CORS headers are there only with origins.
    #[test]
    fn the_edge_renders_from_its_keys_and_each_limit_turns_off() {
        let dir = tempfile::tempdir().unwrap();
        let on = [
            ("nginx.trusted_proxies", "[\"10.0.0.0/8\", \"192.0.2.7\"]"),
            ("nginx.cors_origins", "[\"https://shop.example\"]"),
            ("nginx.worker_connections", "1000"),
        ];
        let text = render(&config_with(dir.path(), addr(8080), &on)).unwrap();
        for line in [
            "set_real_ip_from 10.0.0.0/8;",
            "set_real_ip_from 192.0.2.7;",
            "real_ip_header X-Forwarded-For;",
            "real_ip_recursive on;",
            "worker_connections 1000;",
            "worker_rlimit_nofile 2256;",
            "limit_conn shop_conns 100;",
            "limit_req zone=shop_rate_auth burst=60 nodelay;",
            "limit_req zone=shop_rate_api burst=200 delay=100;",
            "\"https://shop.example\" \"https://shop.example\";",
            "add_header Access-Control-Allow-Origin $shop_cors_origin always;",
        ] {
            assert!(text.lines().any(|l| l.trim() == line), "no {line:?} in:\n{text}");
        }
        let proxy = [("nginx.trusted_proxies", "[\"10.0.0.1\"]"), ("nginx.proxy_protocol", "true")];
        let text = render(&config_with(dir.path(), addr(8080), &proxy)).unwrap();
        assert!(
            text.contains("listen 127.0.0.1:8080 proxy_protocol;") && text.contains("real_ip_header proxy_protocol;")
        );

        let off = [
            ("nginx.limit_auth_per_minute", "0"),
            ("nginx.limit_api_per_second", "0"),
            ("nginx.limit_connections_per_address", "0"),
        ];
        let text = render(&config_with(dir.path(), addr(8080), &off)).unwrap();
        for gone in
            ["set_real_ip_from", "limit_req ", "limit_req_zone", "limit_conn ", "limit_conn_zone", "Access-Control"]
        {
            assert!(
                !text.lines().any(|l| l.trim().starts_with(gone) || l.contains(&format!("add_header {gone}"))),
                "{gone} in:\n{text}"
            );
        }
        assert!(text.contains("add_header X-Content-Type-Options nosniff always;"));
        let cached = [("nginx.auth_cache_seconds", "5")];
        let text = render(&config_with(dir.path(), addr(8080), &cached)).unwrap();
        assert!(text.contains("proxy_cache_key $shop_token_hash;") && !text.contains("$http_authorization"), "{text}");
    }

    /// No `@NAME@` placeholder of the template is left for nginx to trip over.
    #[test]
    fn every_placeholder_is_filled() {
        let text = rendered();
        // Every text between two `@`s (named locations such as `@unauthorized` have one `@`).
        let parts: Vec<&str> = text.split('@').collect();
        let between = parts.get(1..parts.len() - 1).unwrap_or_default();
        let left: Vec<&&str> = between
            .iter()
            .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect();
        assert!(left.is_empty(), "unfilled: {left:?}");
    }
}
