//! Prometheus metrics, with the official `prometheus-client`: what the verifier and the backends
//! share, written once. Each service keeps its own [`Registry`] of its own counters; this module
//! gives both the per-route request counter and latency histogram ([`HttpMetrics`]), the latency
//! histogram type itself ([`Latency`]) and the rendering in the Prometheus text format
//! ([`render`], [`CONTENT_TYPE`]).
//!
//! Labels are bounded whatever clients send: `route` is the matched route template (never the raw
//! path; [`UNMATCHED`] for any path that matched none), `method` one of the standard methods or
//! `other`, `status` the status code the service answered.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use prometheus_client;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`render`] returns (the Prometheus text format, version 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `route` label of a request whose path matched no route.
pub const UNMATCHED: &str = "unmatched";

/// The registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a metric's encoding.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        out.push_str(&format!("# encoding failed: {e}\n"));
    }
    out
}

/// Upper bounds of the latency buckets, in seconds: from the check path's tens of microseconds
/// to the 10 s nginx gives a request.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram with fixed [`LATENCY_BUCKETS`], observed with plain atomics (no lock, no
/// allocation: the check path observes one per request). prometheus-client's own `Histogram`
/// takes a mutex per observation. Cheap to clone; clones share their counts.
#[derive(Debug, Clone, Default)]
pub struct Latency(Arc<LatencyInner>);

#[derive(Debug, Default)]
struct LatencyInner {
    /// Observations per bucket (not cumulative); the last is above every bound (`+Inf`).
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Latency {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS.iter().position(|&le| seconds <= le).unwrap_or(LATENCY_BUCKETS.len());
        self.0.buckets[bucket].fetch_add(1, Relaxed);
        self.0.sum_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.0.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        for (i, n) in self.0.buckets.iter().enumerate() {
            buckets.push((LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), n.load(Relaxed)));
        }
        // The count is the buckets' sum, so `+Inf` and `_count` agree even mid-observation.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_nanos.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The `method` label: the standard methods by name, anything else `other`.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    method: &'static str,
    status: u16,
}

/// Per route: `shop_http_requests_total{route,method,status}` and
/// `shop_http_request_duration_seconds{route,method}`.
#[derive(Debug, Clone, Default)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Latency>,
}

impl HttpMetrics {
    /// Registers both families in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "shop_http_requests",
            "HTTP requests answered, by route template, method and status",
            metrics.requests.clone(),
        );
        registry.register(
            "shop_http_request_duration_seconds",
            "Time from a request's arrival to its answer, by route template and method",
            metrics.duration.clone(),
        );
        metrics
    }

    /// Counts one answered request and its latency since `started`. Takes the families' read
    /// locks (a write lock for a label set seen first); fixed routes on a hot path use [`Self::route`].
    pub fn observe(&self, route: &str, method: &http::Method, status: u16, started: Instant) {
        let (route, method) = (Arc::<str>::from(route), method_label(method));
        self.duration.get_or_create(&RouteLabels { route: route.clone(), method }).observe(started.elapsed());
        self.requests.get_or_create(&RequestLabels { route, method, status }).inc();
    }

    /// Handles for one route and method answered with one of `statuses`, created now, so that
    /// observing through them is atomics only.
    pub fn route(&self, route: &str, method: &http::Method, statuses: &[u16]) -> RouteMetrics {
        let (route, method) = (Arc::<str>::from(route), method_label(method));
        RouteMetrics {
            duration: self.duration.get_or_create_owned(&RouteLabels { route: route.clone(), method }),
            statuses: statuses
                .iter()
                .map(|&status| {
                    (status, self.requests.get_or_create_owned(&RequestLabels { route: route.clone(), method, status }))
                })
                .collect(),
            all: self.clone(),
            route,
            method,
        }
    }
}

/// One route's series, created ahead (see [`HttpMetrics::route`]).
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    duration: Latency,
    statuses: Vec<(u16, Counter)>,
    all: HttpMetrics,
    route: Arc<str>,
    method: &'static str,
}

impl RouteMetrics {
    pub fn observe(&self, status: u16, started: Instant) {
        self.duration.observe(started.elapsed());
        match self.statuses.iter().find(|(s, _)| *s == status) {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                let labels = RequestLabels { route: self.route.clone(), method: self.method, status };
                self.all.requests.get_or_create(&labels).inc();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets_per_route() {
        let mut registry = Registry::with_labels([("shard".into(), "a".into())].into_iter());
        let http = HttpMetrics::register(&mut registry);
        let started = Instant::now();
        http.observe("/api/orders/{id}", &http::Method::GET, 200, started);
        http.observe("/api/orders/{id}", &http::Method::GET, 404, started);
        let verify = http.route("/verify", &http::Method::GET, &[200, 401]);
        verify.observe(401, started);
        verify.observe(500, started);
        http.observe(UNMATCHED, &http::Method::from_bytes(b"BREW").unwrap(), 404, started);
        let text = render(&registry);
        for line in [
            "shop_http_requests_total{shard=\"a\",route=\"/api/orders/{id}\",method=\"GET\",status=\"200\"} 1\n",
            "shop_http_requests_total{shard=\"a\",route=\"/api/orders/{id}\",method=\"GET\",status=\"404\"} 1\n",
            "shop_http_requests_total{shard=\"a\",route=\"/verify\",method=\"GET\",status=\"200\"} 0\n",
            "shop_http_requests_total{shard=\"a\",route=\"/verify\",method=\"GET\",status=\"401\"} 1\n",
            "shop_http_requests_total{shard=\"a\",route=\"/verify\",method=\"GET\",status=\"500\"} 1\n",
            "shop_http_requests_total{shard=\"a\",route=\"unmatched\",method=\"other\",status=\"404\"} 1\n",
            "shop_http_request_duration_seconds_count{shard=\"a\",route=\"/api/orders/{id}\",method=\"GET\"} 2\n",
            "shop_http_request_duration_seconds_bucket{shard=\"a\",route=\"/verify\",method=\"GET\",le=\"+Inf\"} 2\n",
            "shop_http_request_duration_seconds_count{shard=\"a\",route=\"/verify\",method=\"GET\"} 2\n",
            "# TYPE shop_http_request_duration_seconds histogram\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn latency_buckets_are_cumulative_and_sum_in_seconds() {
        let mut registry = Registry::default();
        let latency = Latency::default();
        registry.register("t", "t", latency.clone());
        latency.observe(Duration::from_micros(50));
        latency.observe(Duration::from_millis(3));
        latency.observe(Duration::from_secs(60));
        let text = render(&registry);
        assert!(text.contains("t_bucket{le=\"0.0001\"} 1\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"0.0025\"} 1\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"10.0\"} 2\n") || text.contains("t_bucket{le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("t_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("t_sum 60.00305\n"), "{text}");
        assert!(text.contains("t_count 3\n"), "{text}");
        assert_eq!(latency.count(), 3);
    }
}

/// `shop_certificate_expiry_timestamp_seconds{setting}`: when each certificate file the config
/// names expires (unix seconds), read from the file at every scrape, so a renewed certificate
/// shows at once. A file this process cannot read is left out (`shopctl doctor` names it).
/// `monitoring/alerts.yml` alerts 14 days ahead.
#[cfg(feature = "certs")]
#[derive(Debug)]
pub struct CertificateExpiry(pub Vec<crate::certs::CertificateFile>);

#[cfg(feature = "certs")]
impl prometheus_client::collector::Collector for CertificateExpiry {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let readable: Vec<(&str, i64)> =
            self.0.iter().filter_map(|f| crate::certs::not_after(&f.path).ok().map(|t| (f.setting, t))).collect();
        if readable.is_empty() {
            return Ok(());
        }
        let family = encoder.encode_descriptor(
            "shop_certificate_expiry_timestamp_seconds",
            "When each certificate file the config names expires (unix seconds), by its setting",
            None,
            MetricType::Gauge,
        )?;
        let mut family = family;
        for (setting, expiry) in readable {
            let gauge = prometheus_client::metrics::gauge::ConstGauge::new(expiry);
            gauge.encode(family.encode_family(&[("setting", setting)])?)?;
        }
        Ok(())
    }
}

/// The cache of verified tokens ([`crate::token::Verifier::with_cache`]): lookups that found a
/// token (`result="hit"`) and that sent it through the signature check (`miss`), read from the
/// verifier at each scrape. Nothing while the cache is off.
pub struct TokenCacheCounts(pub crate::token::Verifier);

impl prometheus_client::collector::Collector for TokenCacheCounts {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(counts) = self.0.cache_counts() else { return Ok(()) };
        let mut family = encoder.encode_descriptor(
            "shop_token_cache_lookups",
            "Token checks by whether the cache of verified tokens had the token",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in [("hit", counts.hits), ("miss", counts.misses)] {
            let counter = prometheus_client::metrics::counter::ConstCounter::new(n);
            counter.encode(family.encode_family(&[("result", result)])?)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for TokenCacheCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCacheCounts")
    }
}

#[cfg(all(test, feature = "certs"))]
#[allow(clippy::unwrap_used)]
mod certificate_tests {
    use super::*;

    #[test]
    fn each_readable_certificate_is_a_gauge_by_setting() {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30"])
            .args(["-subj", "/CN=t", "-keyout"])
            .arg(dir.path().join("t.key"))
            .arg("-out")
            .arg(dir.path().join("t.crt"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let files = vec![
            crate::certs::CertificateFile { setting: "tls.certificate", path: dir.path().join("t.crt") },
            crate::certs::CertificateFile { setting: "tls.ca", path: dir.path().join("missing.crt") },
        ];
        let mut registry = Registry::default();
        registry.register_collector(Box::new(CertificateExpiry(files)));
        let text = render(&registry);
        let line = text.lines().find(|l| l.starts_with("shop_certificate_expiry_timestamp_seconds{")).unwrap();
        assert!(line.contains("setting=\"tls.certificate\""), "{text}");
        let value: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        let now = crate::time::unix_now();
        assert!((now + 29 * 86_400..=now + 31 * 86_400).contains(&value), "{value} is not 30 days ahead");
        assert!(!text.contains("tls.ca"), "an unreadable file is left out:\n{text}");
    }
}

/// The auth database as this process sees it ([`crate::auth_db`]), and how old its revocation
/// list is: the gauges the `AuthPrimaryDown`, `AuthReplicaLagging` and `RevocationsStale` alerts
/// watch, the same in the verifier and the backends. Set from the live state at each scrape.
#[cfg(feature = "revocation")]
#[derive(Clone, Default)]
pub struct AuthDbMetrics {
    primary_up: prometheus_client::metrics::gauge::Gauge,
    from_replica: prometheus_client::metrics::gauge::Gauge,
    replica_lag: prometheus_client::metrics::gauge::Gauge<f64, AtomicU64>,
    revocations_age: prometheus_client::metrics::gauge::Gauge<f64, AtomicU64>,
}

#[cfg(feature = "revocation")]
impl AuthDbMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "shop_auth_primary_up",
            "1 if the auth database's primary answered its last probe (always 1 without a replica)",
            m.primary_up.clone(),
        );
        registry.register(
            "shop_auth_reading_from_replica",
            "1 while reads go to the auth replica because the primary is down",
            m.from_replica.clone(),
        );
        registry.register(
            "shop_auth_replica_lag_seconds",
            "How far the auth replica is behind its primary (-1: not measured)",
            m.replica_lag.clone(),
        );
        registry.register(
            "shop_revocations_age_seconds",
            "Seconds since this process last reloaded revocations (-1: never)",
            m.revocations_age.clone(),
        );
        m
    }

    pub fn observe(&self, db: &crate::auth_db::AuthDb, revocations: &crate::revocation::Revocations) {
        let roles = db.roles();
        self.primary_up.set(i64::from(roles.primary.is_some()));
        self.from_replica.set(i64::from(roles.reading_from_replica()));
        self.replica_lag.set(roles.lag.map_or(-1.0, |l| l.as_secs_f64()));
        let age = revocations.age_seconds(crate::time::unix_now());
        self.revocations_age.set(age.map_or(-1.0, |a| a as f64));
    }
}
