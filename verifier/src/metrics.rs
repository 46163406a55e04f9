//! The verifier's metrics, in its own prometheus-client registry: its counters, the password
//! pool's gauges, and the per-route request counter and latency histogram shared with the
//! backends ([`shopgate_core::metrics::HttpMetrics`]). The check path observes through handles
//! made at start: atomics only, no lock and no allocation per request.

use http::Method;
use shopgate_core::certs::CertificateFile;
use shopgate_core::metrics::prometheus_client::metrics::counter::Counter;
use shopgate_core::metrics::prometheus_client::metrics::family::Family;
use shopgate_core::metrics::prometheus_client::metrics::gauge::Gauge;
use shopgate_core::metrics::prometheus_client::registry::Registry;
use shopgate_core::metrics::{self, CertificateExpiry, HttpMetrics, RouteMetrics, TokenCacheCounts};
use shopgate_core::token::Verifier;

use crate::password::PasswordPool;
use crate::routes::CHECK_PATH;

pub struct Metrics {
    registry: Registry,
    /// Every request but the check's, by route template, method and status.
    pub http: HttpMetrics,
    /// The check path's series, made at start.
    pub(crate) check: RouteMetrics,
    pub(crate) verify_ok: Counter,
    pub(crate) verify_rejected: Counter,
    pub(crate) logins_ok: Counter,
    pub(crate) logins_failed: Counter,
    pub(crate) logins_throttled: Counter,
    pub(crate) registrations: Counter,
    pub(crate) hash_busy: Counter,
    pub(crate) revocation_refresh_failed: Counter,
    pub(crate) logouts: Counter,
    /// The shard map version this verifier has seen (it does not route; shown so an operator sees
    /// every part agree).
    pub(crate) map_version: Gauge,
    /// The auth database's roles and the revocation list's age, set at each scrape.
    pub(crate) auth: metrics::AuthDbMetrics,
}

impl Metrics {
    /// The verifier's metrics, with the expiry of each certificate file in `certificates` and the
    /// counts of `tokens`' cache.
    pub fn new(passwords: &PasswordPool, certificates: Vec<CertificateFile>, tokens: &Verifier) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(CertificateExpiry(certificates)));
        registry.register_collector(Box::new(TokenCacheCounts(tokens.clone())));
        let http = HttpMetrics::register(&mut registry);
        let check = http.route(CHECK_PATH, &Method::GET, &[200, 401]);
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let verify_ok = counter("shop_verify_ok", "Tokens accepted by the check path");
        let verify_rejected = counter("shop_verify_rejected", "Tokens refused by the check path");
        let logins_failed = counter("shop_login_failures", "Failed logins");
        let logins_throttled = counter("shop_login_throttled", "Logins refused with 429");
        let registrations = counter("shop_registrations", "Accounts created");
        let hash_busy = counter("shop_hash_busy", "Password checks refused because the pool was full");
        let revocation_refresh_failed = counter("shop_revocation_refresh_failures", "Revocation reloads that failed");
        let logouts = counter("shop_logouts", "Tokens revoked by logout");
        let logins = Family::<[(&'static str, &'static str); 1], Counter>::default();
        registry.register("shop_logins", "Successful logins", logins.clone());
        let logins_ok = logins.get_or_create_owned(&[("result", "ok")]);
        passwords.register_metrics(&mut registry);
        let map_version = Gauge::default();
        registry.register(
            "shop_shard_map_version",
            "The shard map version this verifier has seen",
            map_version.clone(),
        );
        let auth = metrics::AuthDbMetrics::register(&mut registry);
        Self {
            auth,
            registry,
            http,
            check,
            verify_ok,
            verify_rejected,
            logins_ok,
            logins_failed,
            logins_throttled,
            registrations,
            hash_busy,
            revocation_refresh_failed,
            logouts,
            map_version,
        }
    }

    pub(crate) fn inc(counter: &Counter) {
        counter.inc();
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        metrics::render(&self.registry)
    }
}
