//! The pieces of the read policy that concern the replica: heartbeat stamps, the replica's last
//! verdict, and the users whose latest write the replica may not have applied yet.
//!
//! Read-your-writes works by position, not by a timer: a user's write is marked with the newest
//! heartbeat stamp at the moment it committed; every later heartbeat gets a larger stamp and is
//! committed after it, and a replica applies the primary's commits in order. So once the replica's
//! copy of the heartbeat is larger than the user's mark, the replica holds that user's write and
//! their reads may go there again. However far behind the replica falls, no read of that user can
//! miss their own write.
//!
//! That argument needs one writer per heartbeat row (a row another process stamps could carry a
//! larger stamp committed *before* our user's write), so each backend process of a shard stamps
//! its own row; and the marks are this process's memory, so nginx sends each user to one process
//! of the shard (`hash $shop_user_id consistent`, nginx/shopgate.conf.in). A user moved to another
//! process (theirs went down) may read from the replica what it has: up to the lag bound behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use shopgate_core::UserId;

use shopgate_core::time::unix_now_ms as now_ms;

/// What the replica looked like at its last probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplicaState {
    /// Answered, within the lag bound; `beat` is the newest heartbeat stamp it has applied.
    Usable { beat: i64, lag_ms: i64 },
    /// Answered, but `lag_ms` behind the primary: past the bound.
    Lagging { beat: i64, lag_ms: i64 },
    /// Did not answer in time, or a read on it just failed.
    Down,
}

impl ReplicaState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Usable { .. } => "usable",
            Self::Lagging { .. } => "lagging",
            Self::Down => "down",
        }
    }

    /// The measured lag, if the replica answered.
    pub(crate) fn lag_ms(self) -> Option<i64> {
        match self {
            Self::Usable { lag_ms, .. } | Self::Lagging { lag_ms, .. } => Some(lag_ms),
            Self::Down => None,
        }
    }
}

/// A verdict and when it was reached.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Verdict {
    pub(crate) at: Instant,
    pub(crate) state: ReplicaState,
}

/// Heartbeat stamps: unix milliseconds, except that they strictly increase within the process and
/// never fall below a stamp already stored on the primary, so that a larger stamp always means a
/// later write, whatever the wall clock does.
#[derive(Default)]
pub(crate) struct Stamps {
    last: AtomicI64,
}

impl Stamps {
    /// A stamp larger than every stamp handed out or observed before.
    pub(crate) fn next(&self) -> i64 {
        let now = now_ms();
        let mut current = self.last.load(Ordering::SeqCst);
        loop {
            let next = now.max(current + 1);
            match self.last.compare_exchange_weak(current, next, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return next,
                Err(seen) => current = seen,
            }
        }
    }

    /// The largest stamp so far: a write that committed before this call is older than any
    /// heartbeat stamped after it.
    pub(crate) fn current(&self) -> i64 {
        self.last.load(Ordering::SeqCst)
    }

    /// Never hand out a stamp at or below `stamp` (one found on the primary at start).
    pub fn observe(&self, stamp: i64) {
        self.last.fetch_max(stamp, Ordering::SeqCst);
    }
}

/// For each user who wrote lately, the stamp their last write must be older than before the
/// replica may serve them. Bounded: marks the replica has passed are pruned; past `cap` live
/// marks, every user reads from the primary until the replica passes the newest mark.
pub(crate) struct WriteMarks {
    cap: usize,
    inner: Mutex<Marks>,
}

#[derive(Default)]
struct Marks {
    by_user: HashMap<UserId, i64>,
    /// Every user waits for the replica to pass this stamp (set when the map overflowed).
    everyone: i64,
    /// The newest stamp the replica was seen to hold.
    applied: i64,
}

impl WriteMarks {
    pub fn new(cap: usize) -> Self {
        Self { cap, inner: Mutex::new(Marks::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Marks> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `user` wrote; the write committed before the heartbeat stamp `mark` was current.
    pub fn note(&self, user: UserId, mark: i64) {
        let mut m = self.lock();
        if m.by_user.len() >= self.cap && !m.by_user.contains_key(&user) {
            let applied = m.applied;
            m.by_user.retain(|_, w| *w >= applied);
            if m.by_user.len() >= self.cap {
                let newest = m.by_user.values().copied().max().unwrap_or(0);
                m.everyone = m.everyone.max(newest).max(mark);
                m.by_user.clear();
            }
        }
        let slot = m.by_user.entry(user).or_insert(mark);
        *slot = (*slot).max(mark);
    }

    /// Whether a replica that has applied heartbeat `beat` holds every write of `user` we know of.
    pub(crate) fn replica_has(&self, user: UserId, beat: i64) -> bool {
        let m = self.lock();
        beat > m.everyone && !matches!(m.by_user.get(&user), Some(mark) if beat <= *mark)
    }

    /// The replica holds everything up to `beat`: marks it has passed are no longer needed.
    pub(crate) fn applied(&self, beat: i64) {
        let mut m = self.lock();
        if beat > m.applied {
            m.applied = beat;
            m.by_user.retain(|_, mark| *mark >= beat);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_user.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn u(n: u64) -> UserId {
        UserId::new(n).unwrap()
    }

    #[test]
    fn stamps_strictly_increase_and_respect_what_the_primary_holds() {
        let s = Stamps::default();
        let a = s.next();
        let b = s.next();
        assert!(b > a);
        assert_eq!(s.current(), b);
        s.observe(b + 1_000_000);
        assert!(s.next() > b + 1_000_000, "a stamp stored by an earlier process must stay older");
    }

    #[test]
    fn a_user_waits_for_the_replica_to_pass_their_write_however_long_it_takes() {
        let m = WriteMarks::new(100);
        m.note(u(1), 500);
        assert!(m.replica_has(u(2), 400), "other users are not held back");
        assert!(!m.replica_has(u(1), 400));
        assert!(!m.replica_has(u(1), 500), "a heartbeat stamped before the write commits says nothing");
        assert!(m.replica_has(u(1), 501));
        // A second write moves the mark forward, never back.
        m.note(u(1), 700);
        m.note(u(1), 600);
        assert!(!m.replica_has(u(1), 650));
        m.applied(701);
        assert!(m.is_empty(), "marks the replica passed are pruned");
        assert!(m.replica_has(u(1), 701));
    }

    #[test]
    fn marks_stay_bounded_and_overflow_sends_everyone_to_the_primary() {
        let m = WriteMarks::new(3);
        m.note(u(1), 10);
        m.note(u(2), 11);
        m.note(u(3), 12);
        m.applied(11); // prunes u1 (10) only: u2's 11 is not passed yet
        assert_eq!(m.len(), 2);
        m.note(u(4), 13);
        assert_eq!(m.len(), 3);
        m.note(u(5), 14); // no room and nothing passed: everyone waits for stamp 14
        assert!(m.len() <= 3);
        assert!(!m.replica_has(u(99), 14));
        assert!(!m.replica_has(u(2), 13));
        assert!(m.replica_has(u(99), 15));
        assert!(m.replica_has(u(5), 15));
    }
}
