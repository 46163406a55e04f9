//! Asking the stack's processes how they are: each verifier's and backend's `/readyz` (ready: its
//! database answers) and nginx's `/healthz`, each bounded so a frozen process costs seconds. The
//! verifiers and backends are asked with [`Internal`], the one client of the stack's own hops.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use shopgate_core::config::{Config, ShardConfig};

/// How long one process gets to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// What a process answered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// 200: serving, with the shard map version it routes with (if it says).
    Ready { map_version: Option<u64> },
    /// It answers, but not 200 (its database is down, it is still starting): the status and why.
    NotReady(String),
    /// No answer: refused (not running), timed out (frozen, cut off).
    Down(String),
}

impl Answer {
    pub(crate) fn is_ready(&self) -> bool {
        matches!(self, Answer::Ready { .. })
    }

    pub(crate) fn map_version(&self) -> Option<u64> {
        match self {
            Answer::Ready { map_version } => *map_version,
            _ => None,
        }
    }

    /// `ready`, `not_ready` or `down`.
    pub(crate) fn state(&self) -> &'static str {
        match self {
            Answer::Ready { .. } => "ready",
            Answer::NotReady(_) => "not_ready",
            Answer::Down(_) => "down",
        }
    }

    pub(crate) fn error(&self) -> Option<&str> {
        match self {
            Answer::Ready { .. } => None,
            Answer::NotReady(why) | Answer::Down(why) => Some(why),
        }
    }
}

/// One process of the stack and its answer.
#[derive(Debug, Clone)]
pub(crate) struct Process {
    pub(crate) address: SocketAddr,
    pub(crate) answer: Answer,
}

impl Process {
    pub(crate) fn json(&self) -> Value {
        json!({
            "address": self.address.to_string(),
            "state": self.answer.state(),
            "map_version": self.answer.map_version(),
            "error": self.answer.error(),
        })
    }
}

/// shopctl's client of the stack's own hops: the verifiers' and backends' ports. Plain HTTP, or,
/// with `[tls]` set, HTTPS that trusts the stack's CA alone, checks the server's certificate for
/// [`SERVICE_NAME`](shopgate_core::config::SERVICE_NAME) as nginx does, and presents the stack's
/// certificate (`tls.certificate`), which servers that require one ask for.
#[derive(Clone)]
pub(crate) struct Internal {
    http: reqwest::Client,
    scheme: &'static str,
}

impl Internal {
    /// Each request bounded by `timeout`. A certificate, key or CA that does not load is an error
    /// naming the file.
    pub(crate) fn new(config: &Config, timeout: Duration) -> anyhow::Result<Self> {
        let builder = reqwest::Client::builder().timeout(timeout).no_proxy();
        Ok(match shopgate_core::tls::client_config(&config.tls)? {
            Some(tls) => Self { http: builder.use_preconfigured_tls(tls).build()?, scheme: "https" },
            None => Self { http: builder.build()?, scheme: "http" },
        })
    }

    /// The URL of `path` at the process listening on `address`.
    pub(crate) fn url(&self, address: SocketAddr, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, reachable(address))
    }

    pub(crate) fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.http.get(url)
    }
}

/// nginx's `/healthz` as this host reaches it: at its listen address, over HTTPS under
/// `[nginx.tls]`. The client sends no token and reads nothing secret. The edge certificate names
/// the shop's public host, not the address dialled here, so this probe does not check it;
/// shoppers' clients do (shopctl's gateway client names a bad one, exit 5), and `doctor` checks
/// its file's expiry.
pub(crate) fn nginx_health(config: &Config, timeout: Duration) -> anyhow::Result<(reqwest::Client, String)> {
    let builder = reqwest::Client::builder().timeout(timeout).no_proxy();
    let (client, scheme) = match config.nginx.tls {
        Some(_) => (builder.danger_accept_invalid_certs(true).build()?, "https"),
        None => (builder.build()?, "http"),
    };
    Ok((client, format!("{scheme}://{}/healthz", reachable(config.nginx.listen))))
}

#[derive(Clone)]
pub(crate) struct Prober {
    /// The verifiers and backends.
    internal: Internal,
    /// nginx's front door ([`nginx_health`]) and its `/healthz` URL.
    nginx: (reqwest::Client, String),
}

impl Prober {
    pub(crate) fn new(config: &Config) -> anyhow::Result<Self> {
        Ok(Self { internal: Internal::new(config, ASK_TIMEOUT)?, nginx: nginx_health(config, ASK_TIMEOUT)? })
    }

    /// GET `path` of the verifier or backend process at `address`.
    pub(crate) async fn ask(&self, address: SocketAddr, path: &str) -> Process {
        let url = self.internal.url(address, path);
        self.ask_url(self.internal.get(&url), address, url).await
    }

    async fn ask_url(&self, request: reqwest::RequestBuilder, address: SocketAddr, url: String) -> Process {
        let answer = match request.send().await {
            Ok(resp) if resp.status().is_success() => {
                let body: Value = resp.json().await.unwrap_or_default();
                Answer::Ready { map_version: body["map_version"].as_u64() }
            }
            Ok(resp) => {
                let status = resp.status();
                let body: Value = resp.json().await.unwrap_or_default();
                let why = body["error"]["message"].as_str().or(body["message"].as_str()).unwrap_or("");
                Answer::NotReady(format!("{url} answered {status}{}{why}", if why.is_empty() { "" } else { ": " }))
            }
            Err(e) if e.is_timeout() => Answer::Down(format!("{url}: no answer within {ASK_TIMEOUT:?}")),
            Err(e) if e.is_connect() => Answer::Down(format!("{url}: {}", connect_error(&e))),
            Err(e) => Answer::Down(format!("{url}: {e}")),
        };
        Process { address, answer }
    }

    /// Every backend process of every one of `shards`, at its `/readyz`, all asked at once (a
    /// frozen process costs the timeout once, not once per shard); by shard, in `shards`' order.
    pub(crate) async fn backends(&self, shards: &[ShardConfig]) -> Vec<Vec<Process>> {
        let addresses: Vec<SocketAddr> = shards.iter().flat_map(|s| s.listen.iter().copied()).collect();
        let mut answers = self.ask_all(&addresses, "/readyz").await.into_iter();
        shards.iter().map(|s| answers.by_ref().take(s.listen.len()).collect()).collect()
    }

    /// Every verifier process, at its `/readyz`.
    pub(crate) async fn verifiers(&self, config: &Config) -> Vec<Process> {
        self.ask_all(&config.verifier.listen, "/readyz").await
    }

    /// The processes at `addresses`, asked at once.
    async fn ask_all(&self, addresses: &[SocketAddr], path: &'static str) -> Vec<Process> {
        let asks: Vec<_> = addresses
            .iter()
            .map(|a| {
                let (prober, a) = (self.clone(), *a);
                tokio::spawn(async move { prober.ask(a, path).await })
            })
            .collect();
        let mut answers = Vec::new();
        for (ask, address) in asks.into_iter().zip(addresses) {
            answers
                .push(ask.await.unwrap_or_else(|e| Process { address: *address, answer: Answer::Down(e.to_string()) }));
        }
        answers
    }

    /// nginx, at its `/healthz`.
    pub(crate) async fn nginx(&self, config: &Config) -> Process {
        let (client, url) = &self.nginx;
        self.ask_url(client.get(url), config.nginx.listen, url.clone()).await
    }
}

/// The innermost cause of a failed connection ("Connection refused"), not reqwest's wrapping.
fn connect_error(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}

/// An address to connect to: a listener on every address is reached on loopback.
pub(crate) fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
}
