//! Order ids: unique across shards, sortable by time, and below 2^53 so JSON readers that parse
//! numbers as doubles keep them exact.
//!
//! `id = t * 64 + shard_number`, where `t` is milliseconds since [`EPOCH_MS`] and strictly
//! increases within a process (two orders in one millisecond, or a clock stepping back, take the
//! next free `t`). The low six bits make ids of different shards disjoint; at start `t` is seeded
//! above the largest id already stored, so a restart with an earlier clock cannot reuse an id.
//! One backend process per shard is assumed: two processes minting for one shard could collide
//! (the primary key would refuse the second insert).

use std::sync::Mutex;

use shopgate_core::time::unix_now_ms;

/// 2025-01-01T00:00:00Z in unix milliseconds.
pub(crate) const EPOCH_MS: u64 = 1_735_689_600_000;
/// Shard numbers are 0..SHARD_SLOTS (config checks 0-63).
pub(crate) const SHARD_SLOTS: u64 = 64;

pub(crate) struct OrderIdGen {
    shard_number: u64,
    last_t: Mutex<u64>,
}

impl OrderIdGen {
    pub fn new(shard_number: u8) -> Self {
        Self { shard_number: u64::from(shard_number) % SHARD_SLOTS, last_t: Mutex::new(0) }
    }

    /// Never mint at or below the time part of `max_id` (the largest id on the shard).
    pub(crate) fn observe_max(&self, max_id: i64) {
        let t = u64::try_from(max_id).unwrap_or(0) / SHARD_SLOTS;
        let mut last = self.last_t.lock().unwrap_or_else(|p| p.into_inner());
        *last = (*last).max(t);
    }

    pub(crate) fn next(&self) -> i64 {
        self.next_at(u64::try_from(unix_now_ms()).unwrap_or(0))
    }

    /// The id for an order placed at `now_ms` (unix milliseconds).
    pub(crate) fn next_at(&self, now_ms: u64) -> i64 {
        let mut last = self.last_t.lock().unwrap_or_else(|p| p.into_inner());
        let t = (*last + 1).max(now_ms.saturating_sub(EPOCH_MS));
        *last = t;
        // t < 2^47 until the year 6484, so the id stays below 2^53 and fits i64.
        (t * SHARD_SLOTS + self.shard_number) as i64
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const NOW: u64 = EPOCH_MS + 500_000_000_000;

    #[test]
    fn ids_increase_even_within_one_millisecond_and_when_the_clock_steps_back() {
        let g = OrderIdGen::new(5);
        let mut prev = 0;
        for now in [NOW, NOW, NOW, NOW - 10_000, NOW + 1, NOW + 1] {
            let id = g.next_at(now);
            assert!(id > prev, "{id} <= {prev}");
            assert_eq!(id % 64, 5);
            prev = id;
        }
    }

    #[test]
    fn shards_never_collide_and_ids_are_json_safe() {
        let (a, b) = (OrderIdGen::new(0), OrderIdGen::new(1));
        let mut seen = HashSet::new();
        for i in 0..10_000 {
            assert!(seen.insert(a.next_at(NOW + i / 3)));
            assert!(seen.insert(b.next_at(NOW + i / 3)));
        }
        let far = OrderIdGen::new(63).next_at(EPOCH_MS + 100 * 365 * 86_400_000);
        assert!(far < 1 << 53);
    }

    #[test]
    fn seeding_from_the_stored_maximum_skips_past_it() {
        let g = OrderIdGen::new(1);
        let stored = g.next_at(NOW + 60_000);
        let restarted = OrderIdGen::new(1);
        restarted.observe_max(stored);
        assert!(restarted.next_at(NOW) > stored, "an earlier clock after restart reused an id");
    }

    #[test]
    fn concurrent_minting_is_unique() {
        let g = std::sync::Arc::new(OrderIdGen::new(2));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..2_000).map(|_| g.next()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            for id in h.join().unwrap() {
                assert!(all.insert(id), "duplicate id {id}");
            }
        }
    }
}
