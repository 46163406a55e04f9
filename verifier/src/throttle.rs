//! Login throttling: failed attempts per account and per client address in a fixed window.
//! Past the limit, attempts get 429 with `Retry-After` before any password is hashed.
//!
//! Per verifier process: with N verifiers an attacker gets at most N times the limit.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most; past this, expired windows are dropped, then the map is cleared.
const MAX_ENTRIES: usize = 100_000;

pub struct Throttle {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self { max_failures: max_failures.max(1), window, failures: Mutex::new(HashMap::new()) }
    }

    /// `Some(seconds to wait)` when `key` is over its limit.
    pub fn blocked(&self, key: &str) -> Option<u64> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (count, start) = map.get(key)?;
        let elapsed = start.elapsed();
        (*count >= self.max_failures && elapsed < self.window).then(|| (self.window - elapsed).as_secs().max(1))
    }

    pub fn failed(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            let window = self.window;
            map.retain(|_, (_, start)| start.elapsed() < window);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        let entry = map.entry(key.to_owned()).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, key: &str) {
        self.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let t = Throttle::new(3, Duration::from_millis(200));
        for _ in 0..3 {
            assert!(t.blocked("a").is_none());
            t.failed("a");
        }
        assert_eq!(t.blocked("a"), Some(1));
        assert!(t.blocked("b").is_none(), "other keys unaffected");
        std::thread::sleep(Duration::from_millis(210));
        assert!(t.blocked("a").is_none(), "window over");
        t.failed("a");
        t.succeeded("a");
        assert!(t.blocked("a").is_none());
    }
}
