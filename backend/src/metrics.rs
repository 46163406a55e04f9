//! The backend's metrics, in its own prometheus-client registry whose every series carries
//! `shard`: the per-route request counter and latency histogram shared with the verifier
//! ([`HttpMetrics`]), and the shard's own counters and gauges. Label values come from the router's
//! route templates and fixed sets, so the number of series stays bounded whatever clients send.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use shopgate_core::certs::CertificateFile;
use shopgate_core::metrics::prometheus_client::collector::Collector;
use shopgate_core::metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use shopgate_core::metrics::prometheus_client::metrics::counter::Counter;
use shopgate_core::metrics::prometheus_client::metrics::family::Family;
use shopgate_core::metrics::prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use shopgate_core::metrics::prometheus_client::registry::Registry;
use shopgate_core::metrics::{self, CertificateExpiry, HttpMetrics, TokenCacheCounts};
use shopgate_core::token::Verifier;

use crate::catalog_cache::Outcome;
use crate::replica::ReplicaState;

type Labels = [(&'static str, &'static str); 1];

pub struct Metrics {
    registry: Registry,
    http: HttpMetrics,
    /// Requests refused with 401, by reason.
    auth_failures: Family<Labels, Counter>,
    replica_fallback: Counter,
    replica_reads: Counter,
    own_write_reads: Counter,
    orders_created: Counter,
    /// Transactions that committed orders: with `orders_created`, how many orders shared each.
    order_transactions: Counter,
    idempotent_replays: Counter,
    /// Pooled connections found inside a transaction and closed: as handed out, as taken back.
    leaked_on_acquire: Counter,
    leaked_on_release: Counter,
    /// Writes that ran to the end after their request had been dropped.
    writes_outlived_request: Counter,
    /// `/api` requests answered 503 at once because the backend was at capacity.
    requests_shed: Counter,
    /// `/api` requests answered 429 at once because their user had `max_per_user` already.
    requests_over_share: Counter,
    /// `/api` requests being worked on now (admitted, not finished).
    requests_in_flight: Gauge,
    map_version: Gauge,
    /// Whether the primary answered the last probe (every second): 1 yes, 0 no.
    primary_up: Gauge,
    idempotency_keys_purged: Counter,
    idempotency_purge_batches: Counter,
    /// Catalog answers by where they came from: memory, a load, or the database past a full cache.
    catalog_hits: Counter,
    catalog_misses: Counter,
    catalog_bypasses: Counter,
    replica: Arc<ReplicaGauges>,
    /// The auth database's roles and the revocation list's age, set at each scrape.
    pub(crate) auth: metrics::AuthDbMetrics,
}

/// The replica's gauges, shown only while the shard has a replica.
#[derive(Debug, Default)]
struct ReplicaGauges {
    configured: AtomicBool,
    /// The replica's last verdict: 0 not probed yet, 1 usable, 2 lagging, 3 down.
    state: AtomicU8,
    /// The replica's last measured lag in milliseconds; -1 when it did not answer.
    lag_ms: AtomicI64,
}

impl Collector for ReplicaGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if !self.configured.load(Ordering::Relaxed) {
            return Ok(());
        }
        let state = self.state.load(Ordering::Relaxed);
        let lag_ms = self.lag_ms.load(Ordering::Relaxed);
        // NaN while the replica does not answer (or before the first probe): its lag is unknown.
        let lag = ConstGauge::new(if state == 0 || lag_ms < 0 { f64::NAN } else { lag_ms as f64 / 1000.0 });
        let help = "How far the replica's copy of the primary's heartbeat is behind, at the last probe";
        lag.encode(encoder.encode_descriptor("shop_replica_lag_seconds", help, None, lag.metric_type())?)?;
        let up = ConstGauge::new(i64::from(state == 1));
        let help = "Whether reads may go to the replica (1) or fall back to the primary (0)";
        up.encode(encoder.encode_descriptor("shop_replica_up", help, None, up.metric_type())?)
    }
}

impl Metrics {
    /// The metrics of shard `shard`, with the expiry of each certificate file in `certificates`
    /// and the counts of `tokens`' cache.
    pub fn new(shard: &str, certificates: Vec<CertificateFile>, tokens: &Verifier) -> Self {
        let mut registry = Registry::with_labels([("shard".into(), shard.to_owned().into())].into_iter());
        registry.register_collector(Box::new(CertificateExpiry(certificates)));
        registry.register_collector(Box::new(TokenCacheCounts(tokens.clone())));
        let http = HttpMetrics::register(&mut registry);
        let auth_failures = Family::<Labels, Counter>::default();
        registry.register("shop_auth_failures", "Requests refused with 401, by reason", auth_failures.clone());
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let replica_fallback =
            counter("shop_replica_fallback", "Reads sent to the primary because the replica was down or lagging");
        let replica_reads = counter("shop_replica_reads", "Reads served by the replica");
        let own_write_reads = counter(
            "shop_read_your_writes",
            "Reads sent to the primary because the replica had not yet applied the reader's own write",
        );
        let orders_created = counter("shop_orders_created", "Orders created (idempotent replays not counted)");
        let order_transactions = counter(
            "shop_order_transactions",
            "Committed transactions that created orders; orders that arrive together share one",
        );
        let idempotent_replays = counter(
            "shop_idempotent_replays",
            "Order requests answered with an order made earlier under the same Idempotency-Key",
        );
        let writes_outlived_request = counter(
            "shop_writes_outlived_request",
            "Writes that ran to their end (commit or rollback) after their request was dropped",
        );
        let requests_shed = counter(
            "shop_requests_shed",
            "API requests answered 503 with Retry-After at once because the backend was at capacity",
        );
        let requests_over_share = counter(
            "shop_requests_over_share",
            "API requests answered 429 with Retry-After at once because their user had max_per_user in the process",
        );
        let idempotency_keys_purged =
            counter("shop_idempotency_keys_purged", "Idempotency keys deleted after their retention");
        let idempotency_purge_batches =
            counter("shop_idempotency_purge_batches", "Bounded DELETE statements the idempotency purge ran");
        let leaked = Family::<Labels, Counter>::default();
        registry.register(
            "shop_db_leaked_transactions",
            "Pooled connections found inside a transaction as the pool handed them out or took them back; \
             each was closed (rolling the transaction back), never reused",
            leaked.clone(),
        );
        let catalog = Family::<Labels, Counter>::default();
        registry.register(
            "shop_catalog_answers",
            "Catalog answers (categories, products) by source: hit (kept in memory), miss (loaded and \
             kept), bypass (read past a full cache)",
            catalog.clone(),
        );
        let requests_in_flight = Gauge::default();
        registry.register("shop_requests_in_flight", "API requests being worked on now", requests_in_flight.clone());
        let map_version = Gauge::default();
        registry.register(
            "shop_shard_map_version",
            "The shard map version this backend routes with (0 until one is loaded)",
            map_version.clone(),
        );
        let primary_up = Gauge::default();
        registry.register(
            "shop_primary_up",
            "Whether the shard's primary answered this backend's last probe (every second; 0 before the first)",
            primary_up.clone(),
        );
        let replica = Arc::new(ReplicaGauges::default());
        registry.register_collector(Box::new(replica.clone()));
        let auth = metrics::AuthDbMetrics::register(&mut registry);
        Self {
            auth,
            primary_up,
            http,
            auth_failures,
            replica_fallback,
            replica_reads,
            own_write_reads,
            orders_created,
            order_transactions,
            idempotent_replays,
            leaked_on_acquire: leaked.get_or_create_owned(&[("at", "acquire")]),
            leaked_on_release: leaked.get_or_create_owned(&[("at", "release")]),
            writes_outlived_request,
            requests_shed,
            requests_over_share,
            requests_in_flight,
            map_version,
            idempotency_keys_purged,
            idempotency_purge_batches,
            catalog_hits: catalog.get_or_create_owned(&[("result", "hit")]),
            catalog_misses: catalog.get_or_create_owned(&[("result", "miss")]),
            catalog_bypasses: catalog.get_or_create_owned(&[("result", "bypass")]),
            replica,
            registry,
        }
    }

    /// One answered request: its route template (or [`metrics::UNMATCHED`]), method, status and
    /// latency since `started`.
    pub(crate) fn request(&self, route: &str, method: &axum::http::Method, status: u16, started: Instant) {
        self.http.observe(route, method, status, started);
    }

    pub(crate) fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&[("reason", reason)]).inc();
    }

    pub(crate) fn replica_fallback(&self) {
        self.replica_fallback.inc();
    }

    pub(crate) fn replica_read(&self) {
        self.replica_reads.inc();
    }

    pub(crate) fn own_write_read(&self) {
        self.own_write_reads.inc();
    }

    pub(crate) fn replica_configured(&self) {
        self.replica.configured.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_replica(&self, state: ReplicaState) {
        let code = match state {
            ReplicaState::Usable { .. } => 1,
            ReplicaState::Lagging { .. } => 2,
            ReplicaState::Down => 3,
        };
        self.replica.state.store(code, Ordering::Relaxed);
        self.replica.lag_ms.store(state.lag_ms().unwrap_or(-1), Ordering::Relaxed);
    }

    pub(crate) fn order_created(&self) {
        self.orders_created.inc();
    }

    /// A transaction that created orders committed.
    pub(crate) fn order_transaction(&self) {
        self.order_transactions.inc();
    }

    pub(crate) fn idempotent_replay(&self) {
        self.idempotent_replays.inc();
    }

    pub(crate) fn leaked_transaction(&self, at: Handover) {
        match at {
            Handover::Acquire => &self.leaked_on_acquire,
            Handover::Release => &self.leaked_on_release,
        }
        .inc();
    }

    /// Connections closed because they were inside a transaction, wherever found.
    pub fn leaked_transactions(&self) -> u64 {
        self.leaked_on_acquire.get() + self.leaked_on_release.get()
    }

    pub(crate) fn write_outlived_request(&self) {
        self.writes_outlived_request.inc();
    }

    pub fn request_shed(&self) {
        self.requests_shed.inc();
    }

    pub fn requests_shed(&self) -> u64 {
        self.requests_shed.get()
    }

    pub(crate) fn request_over_share(&self) {
        self.requests_over_share.inc();
    }

    pub fn requests_over_share(&self) -> u64 {
        self.requests_over_share.get()
    }

    /// One more (`delta` 1) or one fewer (-1) `/api` request in flight.
    pub(crate) fn in_flight(&self, delta: i64) {
        self.requests_in_flight.inc_by(delta);
    }

    pub fn idempotency_purged(&self, keys: u64) {
        self.idempotency_keys_purged.inc_by(keys);
        self.idempotency_purge_batches.inc();
    }

    pub fn idempotency_keys_purged(&self) -> u64 {
        self.idempotency_keys_purged.get()
    }

    pub fn replica_fallbacks(&self) -> u64 {
        self.replica_fallback.get()
    }

    pub(crate) fn catalog_answer(&self, outcome: Outcome) {
        match outcome {
            Outcome::Hit => &self.catalog_hits,
            Outcome::Miss => &self.catalog_misses,
            Outcome::Bypass => &self.catalog_bypasses,
        }
        .inc();
    }

    pub(crate) fn set_primary_up(&self, up: bool) {
        self.primary_up.set(i64::from(up));
    }

    pub(crate) fn set_map_version(&self, version: Option<u64>) {
        self.map_version.set(version.and_then(|v| i64::try_from(v).ok()).unwrap_or(0));
    }

    /// The Prometheus text format; every series carries `shard`.
    pub fn render(&self) -> String {
        metrics::render(&self.registry)
    }
}

/// Where the pool checks a connection: as it hands one out, or as one comes back.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Handover {
    Acquire,
    Release,
}

impl Handover {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Acquire => "acquire",
            Self::Release => "release",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier() -> (Verifier, String) {
        use shopgate_core::token::{new_claims, sign_hs256, Hs256Key, Policy};
        let key = Hs256Key::new(b"metrics-test-key-0123456789abcdef-0123").unwrap();
        let policy = Policy { issuer: "i".into(), audience: "a".into(), leeway_seconds: 0, ttl_seconds: 600 };
        let now = shopgate_core::time::unix_now();
        let token = sign_hs256(&key, &new_claims(shopgate_core::UserId::new(7).unwrap(), "e@x.org", &policy, now, 600));
        (Verifier::new(key, policy).with_cache(8), token)
    }

    #[test]
    fn counts_the_token_cache_at_each_scrape() {
        let (tokens, token) = verifier();
        let m = Metrics::new("a", Vec::new(), &tokens);
        let now = shopgate_core::time::unix_now();
        for _ in 0..3 {
            tokens.verify(&token, now).unwrap();
        }
        let text = m.render();
        assert!(text.contains("shop_token_cache_lookups_total{shard=\"a\",result=\"hit\"} 2\n"), "{text}");
        assert!(text.contains("shop_token_cache_lookups_total{shard=\"a\",result=\"miss\"} 1\n"), "{text}");
    }

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new("a", Vec::new(), &verifier().0);
        m.request("/api/orders", &axum::http::Method::POST, 201, Instant::now());
        m.request("/api/orders", &axum::http::Method::POST, 201, Instant::now());
        m.replica_fallback();
        m.auth_failure("expired");
        let text = m.render();
        assert!(
            text.contains(
                "shop_http_requests_total{shard=\"a\",route=\"/api/orders\",method=\"POST\",status=\"201\"} 2\n"
            ),
            "{text}"
        );
        assert!(text.contains("shop_replica_fallback_total{shard=\"a\"} 1\n"), "{text}");
        assert!(text.contains("shop_auth_failures_total{shard=\"a\",reason=\"expired\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE shop_orders_created_total counter\n"));
        assert!(!text.contains("shop_replica_lag_seconds"), "no replica, no lag gauge: {text}");
        m.leaked_transaction(Handover::Release);
        m.in_flight(1);
        let text = m.render();
        assert!(text.contains("shop_db_leaked_transactions_total{shard=\"a\",at=\"release\"} 1\n"), "{text}");
        assert!(text.contains("shop_db_leaked_transactions_total{shard=\"a\",at=\"acquire\"} 0\n"), "{text}");
        assert!(text.contains("shop_requests_in_flight{shard=\"a\"} 1\n"), "{text}");
        m.replica_configured();
        assert!(m.render().contains("shop_replica_lag_seconds{shard=\"a\"} NaN\n"));
        m.set_replica(ReplicaState::Usable { beat: 10, lag_ms: 1234 });
        let text = m.render();
        assert!(text.contains("shop_replica_lag_seconds{shard=\"a\"} 1.234\n"), "{text}");
        assert!(text.contains("shop_replica_up{shard=\"a\"} 1\n"), "{text}");
        m.set_replica(ReplicaState::Down);
        assert!(m.render().contains("shop_replica_up{shard=\"a\"} 0\n"));
    }
}
