//! Prometheus counters, rendered by hand in the text exposition format (a handful of counters do
//! not justify a metrics framework). Label values come from the router's route templates, so the
//! number of series stays bounded whatever clients send.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use crate::db::replica::ReplicaState;
use crate::db::Handover;

#[derive(Default)]
pub struct Metrics {
    /// (route template, method, status) -> count.
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    /// Reason label -> count.
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    replica_fallback: AtomicU64,
    replica_reads: AtomicU64,
    own_write_reads: AtomicU64,
    orders_created: AtomicU64,
    idempotent_replays: AtomicU64,
    /// Pooled connections found inside a transaction and closed: as handed out, as taken back.
    leaked_on_acquire: AtomicU64,
    leaked_on_release: AtomicU64,
    /// Writes that ran to the end after their request had been dropped.
    writes_outlived_request: AtomicU64,
    /// `/api` requests answered 503 at once because the backend was at capacity.
    requests_shed: AtomicU64,
    /// `/api` requests being worked on now (admitted, not finished).
    requests_in_flight: AtomicI64,
    idempotency_keys_purged: AtomicU64,
    idempotency_purge_batches: AtomicU64,
    /// Whether the shard has a replica (its gauges are rendered only then).
    replica_configured: AtomicBool,
    /// The replica's last verdict: 0 not probed yet, 1 usable, 2 lagging, 3 down.
    replica_state: AtomicU8,
    /// The replica's last measured lag in milliseconds; -1 when it did not answer.
    replica_lag_ms: AtomicI64,
}

impl Metrics {
    pub fn request(&self, route: &str, method: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((route.to_owned(), method.to_owned(), status)).or_default() += 1;
    }

    pub fn auth_failure(&self, reason: &'static str) {
        let mut map = self.auth_failures.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(reason).or_default() += 1;
    }

    pub fn replica_fallback(&self) {
        self.replica_fallback.fetch_add(1, Ordering::Relaxed);
    }

    pub fn replica_read(&self) {
        self.replica_reads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn own_write_read(&self) {
        self.own_write_reads.fetch_add(1, Ordering::Relaxed);
    }

    pub fn replica_configured(&self) {
        self.replica_configured.store(true, Ordering::Relaxed);
    }

    pub fn set_replica(&self, state: ReplicaState) {
        let code = match state {
            ReplicaState::Usable { .. } => 1,
            ReplicaState::Lagging { .. } => 2,
            ReplicaState::Down => 3,
        };
        self.replica_state.store(code, Ordering::Relaxed);
        self.replica_lag_ms.store(state.lag_ms().unwrap_or(-1), Ordering::Relaxed);
    }

    pub fn order_created(&self) {
        self.orders_created.fetch_add(1, Ordering::Relaxed);
    }

    pub fn idempotent_replay(&self) {
        self.idempotent_replays.fetch_add(1, Ordering::Relaxed);
    }

    pub fn leaked_transaction(&self, at: Handover) {
        match at {
            Handover::Acquire => &self.leaked_on_acquire,
            Handover::Release => &self.leaked_on_release,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed because they were inside a transaction, wherever found.
    pub fn leaked_transactions(&self) -> u64 {
        self.leaked_on_acquire.load(Ordering::Relaxed) + self.leaked_on_release.load(Ordering::Relaxed)
    }

    pub fn write_outlived_request(&self) {
        self.writes_outlived_request.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_shed(&self) {
        self.requests_shed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests_shed(&self) -> u64 {
        self.requests_shed.load(Ordering::Relaxed)
    }

    /// One more (`delta` 1) or one fewer (-1) `/api` request in flight.
    pub fn in_flight(&self, delta: i64) {
        self.requests_in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn idempotency_purged(&self, keys: u64) {
        self.idempotency_keys_purged.fetch_add(keys, Ordering::Relaxed);
        self.idempotency_purge_batches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn idempotency_keys_purged(&self) -> u64 {
        self.idempotency_keys_purged.load(Ordering::Relaxed)
    }

    pub fn replica_fallbacks(&self) -> u64 {
        self.replica_fallback.load(Ordering::Relaxed)
    }


    /// The Prometheus text format; every series carries `shard`.
    pub fn render(&self, shard: &str) -> String {
        let shard = escape(shard);
        let mut out = String::new();
        out.push_str("# HELP shop_http_requests_total HTTP requests answered, by route template, method and status.\n");
        out.push_str("# TYPE shop_http_requests_total counter\n");
        for ((route, method, status), n) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "shop_http_requests_total{{shard=\"{shard}\",route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                escape(route),
                escape(method)
            );
        }
        out.push_str("# HELP shop_auth_failures_total Requests refused with 401, by reason.\n");
        out.push_str("# TYPE shop_auth_failures_total counter\n");
        for (reason, n) in self.auth_failures.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "shop_auth_failures_total{{shard=\"{shard}\",reason=\"{reason}\"}} {n}");
        }
        for (name, help, counter) in [
            (
                "shop_replica_fallback_total",
                "Reads sent to the primary because the replica was down or lagging.",
                &self.replica_fallback,
            ),
            ("shop_replica_reads_total", "Reads served by the replica.", &self.replica_reads),
            (
                "shop_read_your_writes_total",
                "Reads sent to the primary because the replica had not yet applied the reader's own write.",
                &self.own_write_reads,
            ),
            ("shop_orders_created_total", "Orders created (idempotent replays not counted).", &self.orders_created),
            (
                "shop_idempotent_replays_total",
                "Order requests answered with an order made earlier under the same Idempotency-Key.",
                &self.idempotent_replays,
            ),
            (
                "shop_writes_outlived_request_total",
                "Writes that ran to their end (commit or rollback) after their request was dropped.",
                &self.writes_outlived_request,
            ),
            (
                "shop_requests_shed_total",
                "API requests answered 503 with Retry-After at once because the backend was at capacity.",
                &self.requests_shed,
            ),
            (
                "shop_idempotency_keys_purged_total",
                "Idempotency keys deleted after their retention.",
                &self.idempotency_keys_purged,
            ),
            (
                "shop_idempotency_purge_batches_total",
                "Bounded DELETE statements the idempotency purge ran.",
                &self.idempotency_purge_batches,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", counter.load(Ordering::Relaxed));
        }
        out.push_str(
            "# HELP shop_db_leaked_transactions_total Pooled connections found inside a transaction as the pool \
             handed them out or took them back; each was closed (rolling the transaction back), never reused.\n\
             # TYPE shop_db_leaked_transactions_total counter\n",
        );
        for (at, counter) in [("acquire", &self.leaked_on_acquire), ("release", &self.leaked_on_release)] {
            let _ = writeln!(
                out,
                "shop_db_leaked_transactions_total{{shard=\"{shard}\",at=\"{at}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP shop_requests_in_flight API requests being worked on now.\n\
             # TYPE shop_requests_in_flight gauge\nshop_requests_in_flight{{shard=\"{shard}\"}} {}",
            self.requests_in_flight.load(Ordering::Relaxed)
        );
        if self.replica_configured.load(Ordering::Relaxed) {
            let state = self.replica_state.load(Ordering::Relaxed);
            let lag_ms = self.replica_lag_ms.load(Ordering::Relaxed);
            // NaN while the replica does not answer (or before the first probe): its lag is unknown.
            let lag = if state == 0 || lag_ms < 0 { "NaN".to_owned() } else { format!("{:.3}", lag_ms as f64 / 1000.0) };
            let _ = writeln!(
                out,
                "# HELP shop_replica_lag_seconds How far the replica's copy of the primary's heartbeat is behind, at the last probe.\n\
                 # TYPE shop_replica_lag_seconds gauge\nshop_replica_lag_seconds{{shard=\"{shard}\"}} {lag}"
            );
            let _ = writeln!(
                out,
                "# HELP shop_replica_up Whether reads may go to the replica (1) or fall back to the primary (0).\n\
                 # TYPE shop_replica_up gauge\nshop_replica_up{{shard=\"{shard}\"}} {}",
                u8::from(state == 1)
            );
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::default();
        m.request("/api/orders", "POST", 201);
        m.request("/api/orders", "POST", 201);
        m.replica_fallback();
        m.auth_failure("expired");
        let text = m.render("a");
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
        let text = m.render("a");
        assert!(text.contains("shop_db_leaked_transactions_total{shard=\"a\",at=\"release\"} 1\n"), "{text}");
        assert!(text.contains("shop_db_leaked_transactions_total{shard=\"a\",at=\"acquire\"} 0\n"), "{text}");
        assert!(text.contains("shop_requests_in_flight{shard=\"a\"} 1\n"), "{text}");
        m.replica_configured();
        assert!(m.render("a").contains("shop_replica_lag_seconds{shard=\"a\"} NaN\n"));
        m.set_replica(ReplicaState::Usable { beat: 10, lag_ms: 1234 });
        let text = m.render("a");
        assert!(text.contains("shop_replica_lag_seconds{shard=\"a\"} 1.234\n"), "{text}");
        assert!(text.contains("shop_replica_up{shard=\"a\"} 1\n"), "{text}");
        m.set_replica(ReplicaState::Down);
        assert!(m.render("a").contains("shop_replica_up{shard=\"a\"} 0\n"));
    }
}
