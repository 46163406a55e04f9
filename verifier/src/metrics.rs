//! Counters in Prometheus text format. Plain atomics: the check path must not take a lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    pub verify_ok: AtomicU64,
    pub verify_rejected: AtomicU64,
    pub logins_ok: AtomicU64,
    pub logins_failed: AtomicU64,
    pub logins_throttled: AtomicU64,
    pub registrations: AtomicU64,
    pub hash_busy: AtomicU64,
    pub revocation_refresh_failed: AtomicU64,
    pub logouts: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn render(&self, hash_in_flight: usize, password_checks: u64) -> String {
        let mut s = String::new();
        let mut counter = |name: &str, help: &str, labels: &str, v: &AtomicU64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name}{labels} {}", v.load(Relaxed));
        };
        counter("shop_verify_ok_total", "Tokens accepted by the check path.", "", &self.verify_ok);
        counter("shop_verify_rejected_total", "Tokens refused by the check path.", "", &self.verify_rejected);
        counter("shop_logins_total", "Successful logins.", "{result=\"ok\"}", &self.logins_ok);
        counter("shop_login_failures_total", "Failed logins.", "", &self.logins_failed);
        counter("shop_login_throttled_total", "Logins refused with 429.", "", &self.logins_throttled);
        counter("shop_registrations_total", "Accounts created.", "", &self.registrations);
        counter("shop_hash_busy_total", "Password checks refused because the pool was full.", "", &self.hash_busy);
        counter("shop_revocation_refresh_failures_total", "Revocation reloads that failed.", "", &self.revocation_refresh_failed);
        counter("shop_logouts_total", "Tokens revoked by logout.", "", &self.logouts);
        let _ = writeln!(
            s,
            "# HELP shop_password_checks_total Passwords checked against a hash (logins, password changes).\n# TYPE shop_password_checks_total counter\nshop_password_checks_total {password_checks}"
        );
        let _ = writeln!(
            s,
            "# HELP shop_hash_in_flight Password hashes running or queued.\n# TYPE shop_hash_in_flight gauge\nshop_hash_in_flight {hash_in_flight}"
        );
        s
    }
}
