//! Order ids: unique across shards and across the backend processes of one shard, sortable by
//! time, and below 2^53 so JSON readers that parse numbers as doubles keep them exact.
//!
//! `id = t * 4096 + instance * 64 + shard_number`, where `t` is milliseconds since [`EPOCH_MS`]
//! and strictly increases within a process (two orders in one millisecond, or a clock stepping
//! back, take the next free `t`), `instance` is the process's `--instance` (its place in
//! `[shards.NAME] listen`, 0-63) and `shard_number` the shard's `number` (0-63).
//!
//! - Two processes never share the low twelve bits (instance, shard), so no two of them can mint
//!   the same id, whatever their clocks say. Two processes given one instance number cannot run
//!   at once: each binds its own `listen` address.
//! - `id % 64` is still the shard number, as it was when the layout was `t * 64 + shard_number`
//!   (one process per shard): ids of different shards stay disjoint across both layouts.
//! - At start `t` is seeded above the largest id already stored on the shard, whichever layout
//!   minted it and whichever process, so a restart with an earlier clock, or a process that
//!   minted nothing yet, cannot reuse an id. Ids of the old layout are far below those of this one
//!   (`t * 64` against `t * 4096`), so the seed never holds the clock back after the change.
//! - `t` stays below 2^41 until 2094 (2025 + 69.7 years), so the id stays below 2^53.

use std::sync::Mutex;

use shopgate_core::time::unix_now_ms;

/// 2025-01-01T00:00:00Z in unix milliseconds.
pub(crate) const EPOCH_MS: u64 = 1_735_689_600_000;
/// Shard numbers are 0..SHARD_SLOTS (config checks 0-63): the id's low six bits.
pub(crate) const SHARD_SLOTS: u64 = 64;
/// Processes of one shard are 0..INSTANCE_SLOTS (config allows at most 64 `listen` addresses):
/// the next six bits.
pub(crate) const INSTANCE_SLOTS: u64 = 64;
/// The id's part below the time: instance and shard.
const LOW_SLOTS: u64 = SHARD_SLOTS * INSTANCE_SLOTS;

pub(crate) struct OrderIdGen {
    /// `instance * 64 + shard_number`: this process's own low bits.
    slot: u64,
    last_t: Mutex<u64>,
}

impl OrderIdGen {
    /// The generator of process `instance` of the shard numbered `shard_number`.
    pub fn new(shard_number: u8, instance: u8) -> Self {
        let slot = (u64::from(instance) % INSTANCE_SLOTS) * SHARD_SLOTS + u64::from(shard_number) % SHARD_SLOTS;
        Self { slot, last_t: Mutex::new(0) }
    }

    /// Never mint at or below `max_id` (the largest id on the shard, of either layout).
    pub(crate) fn observe_max(&self, max_id: i64) {
        let t = u64::try_from(max_id).unwrap_or(0) / LOW_SLOTS;
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
        // t < 2^41 until 2094, so the id stays below 2^53 and fits i64.
        (t * LOW_SLOTS + self.slot) as i64
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const NOW: u64 = EPOCH_MS + 500_000_000_000;

    /// The layout before several processes per shard: `t * 64 + shard_number`.
    fn old_layout(now_ms: u64, shard_number: u64) -> i64 {
        ((now_ms - EPOCH_MS) * SHARD_SLOTS + shard_number) as i64
    }

    #[test]
    fn ids_increase_even_within_one_millisecond_and_when_the_clock_steps_back() {
        let g = OrderIdGen::new(5, 3);
        let mut prev = 0;
        for now in [NOW, NOW, NOW, NOW - 10_000, NOW + 1, NOW + 1] {
            let id = g.next_at(now);
            assert!(id > prev, "{id} <= {prev}");
            assert_eq!(id % 64, 5, "the low six bits are the shard number");
            assert_eq!((id / 64) % 64, 3, "the next six are the instance");
            prev = id;
        }
    }

    #[test]
    fn shards_and_processes_never_collide_and_ids_are_json_safe() {
        let gens: Vec<OrderIdGen> =
            [(0, 0), (0, 1), (1, 0), (1, 1), (63, 63)].into_iter().map(|(s, i)| OrderIdGen::new(s, i)).collect();
        let mut seen = HashSet::new();
        for i in 0..10_000 {
            for g in &gens {
                // Every process in the same millisecond: only the low bits keep them apart.
                assert!(seen.insert(g.next_at(NOW + i / 3)));
            }
        }
        let far = OrderIdGen::new(63, 63).next_at(EPOCH_MS + 69 * 365 * 86_400_000);
        assert!(far < 1 << 53, "{far}");
    }

    #[test]
    fn seeding_from_the_stored_maximum_skips_past_it() {
        let g = OrderIdGen::new(1, 0);
        let stored = g.next_at(NOW + 60_000);
        // Restarted with an earlier clock, or another process of the shard that minted nothing yet.
        for instance in [0, 1] {
            let other = OrderIdGen::new(1, instance);
            other.observe_max(stored);
            assert!(other.next_at(NOW) > stored, "instance {instance} reused or went below {stored}");
        }
    }

    #[test]
    fn ids_of_the_new_layout_never_equal_ids_of_the_old_one() {
        // Old ids on shards 0 and 1, minted up to now (and far ahead of a slow clock).
        let old: Vec<i64> = (0..2).flat_map(|s| (0..1_000).map(move |i| old_layout(NOW + i * 1_000_000, s))).collect();
        let max_old = *old.iter().max().unwrap();
        for (shard, instance) in [(0, 0), (0, 1), (1, 0), (1, 5)] {
            let g = OrderIdGen::new(shard, instance);
            g.observe_max(max_old);
            for _ in 0..1_000 {
                let id = g.next_at(NOW);
                assert!(id > max_old, "{id} is not above the stored maximum {max_old}");
                assert!(!old.contains(&id), "{id} was minted by the old layout");
            }
        }
        // Unseeded, the same: the time part alone puts new ids above old ones of the same moment.
        assert!(OrderIdGen::new(0, 1).next_at(NOW) > old_layout(NOW + 60_000, 63));
    }

    #[test]
    fn concurrent_minting_is_unique() {
        let g = std::sync::Arc::new(OrderIdGen::new(2, 1));
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
