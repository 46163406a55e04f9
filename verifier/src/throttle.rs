//! Password-guessing limits: attempts per account and per client address in a fixed window.
//!
//! An attempt is *reserved* before its password is checked, under the same lock as the "over the
//! limit?" test, so concurrent attempts cannot all pass the test together: however the attempts
//! are timed, at most `max` passwords are checked per key and window. Past that, 429 with
//! `Retry-After` and no hashing. A reservation is given back when no password was checked (the
//! hashing pool was full, the database failed) and when the password was right; a wrong password
//! keeps it. Logins and password changes count against the same limits.
//!
//! Registrations have a limit of their own per address ([`Throttle::reserve`] kept on success too).
//!
//! Per verifier process: with N verifiers an attacker gets at most N times the limit. An
//! operator's unlock of an account (`shopctl users unlock`) reaches every process through the auth
//! database ([`crate::unlocks`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most; past this, expired windows are dropped, then the map is cleared.
const MAX_ENTRIES: usize = 100_000;

/// A fixed-window counter per key.
pub(crate) struct Throttle {
    max: u32,
    window: Duration,
    counts: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Throttle {
    pub fn new(max: u32, window: Duration) -> Self {
        Self { max: max.max(1), window, counts: Mutex::new(HashMap::new()) }
    }

    /// Counts one attempt for `key`, or refuses with the seconds to wait when the key has used
    /// its limit in the current window.
    pub(crate) fn reserve(&self, key: &str) -> Result<(), u64> {
        self.reserve_at(key, Instant::now())
    }

    /// [`Throttle::reserve`] at the time `now` (tests move the clock instead of sleeping).
    fn reserve_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES && !map.contains_key(key) {
            let window = self.window;
            map.retain(|_, (_, start)| now.saturating_duration_since(*start) < window);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        let entry = map.entry(key.to_owned()).or_insert((0, now));
        let elapsed = now.saturating_duration_since(entry.1);
        if elapsed >= self.window {
            *entry = (0, now);
        } else if entry.0 >= self.max {
            return Err((self.window - elapsed).as_secs().max(1));
        }
        entry.0 += 1;
        Ok(())
    }

    /// Gives one reserved attempt back.
    pub(crate) fn release(&self, key: &str) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get_mut(key) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }

    /// Forgets the key's attempts (a right password ends the account's run of failures).
    pub(crate) fn reset(&self, key: &str) {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// The per-account and per-address limits that every password check goes through.
pub(crate) struct GuessLimits {
    account: Throttle,
    address: Throttle,
}

impl GuessLimits {
    pub fn new(per_account: u32, per_address: u32, window: Duration) -> Self {
        Self { account: Throttle::new(per_account, window), address: Throttle::new(per_address, window) }
    }

    /// Reserves one password check for `email` (known or not) from `address`. Dropping the
    /// [`Attempt`] without settling it gives the reservation back.
    pub(crate) fn reserve(&self, email: &str, address: IpAddr) -> Result<Attempt<'_>, u64> {
        let account = account_key(email);
        let address = format!("address:{address}");
        self.account.reserve(&account)?;
        if let Err(wait) = self.address.reserve(&address) {
            self.account.release(&account);
            return Err(wait);
        }
        Ok(Attempt { limits: self, account, address, settled: false })
    }

    /// Forgets the account's failures (an operator's `shopctl users unlock`); the addresses they
    /// came from keep theirs.
    pub(crate) fn unlock(&self, email: &str) {
        self.account.reset(&account_key(email));
    }
}

/// The per-account key of `email`, however it was typed.
fn account_key(email: &str) -> String {
    format!("account:{}", email.trim().to_lowercase())
}

/// One reserved password check.
#[must_use]
pub(crate) struct Attempt<'a> {
    limits: &'a GuessLimits,
    account: String,
    address: String,
    settled: bool,
}

impl Attempt<'_> {
    /// The password was wrong: the attempt stays counted against both limits.
    pub(crate) fn failed(mut self) {
        self.settled = true;
    }

    /// The password was right: the account's failures are forgotten and the address gets its
    /// attempt back.
    pub(crate) fn succeeded(mut self) {
        self.settled = true;
        self.limits.account.reset(&self.account);
        self.limits.address.release(&self.address);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.limits.account.release(&self.account);
            self.limits.address.release(&self.address);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn reserves_up_to_the_limit_then_refuses_until_the_window_ends() {
        let t = Throttle::new(3, Duration::from_secs(300));
        let start = Instant::now();
        for _ in 0..3 {
            assert!(t.reserve_at("a", start).is_ok());
        }
        assert_eq!(t.reserve_at("a", start), Err(300));
        assert_eq!(t.reserve_at("a", start + Duration::from_secs(290)), Err(10), "Retry-After: the rest");
        assert!(t.reserve_at("b", start).is_ok(), "other keys unaffected");
        assert!(t.reserve_at("a", start + Duration::from_secs(300)).is_ok(), "window over");
        assert_eq!(t.reserve_at("a", start + Duration::from_secs(300)), Ok(()), "a fresh window");
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit_together() {
        let limits = GuessLimits::new(5, 1000, Duration::from_secs(60));
        let granted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    for _ in 0..10 {
                        if let Ok(attempt) = limits.reserve("ann@example.com", HOME) {
                            granted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            // Held across the (simulated) hashing, then counted as a failure.
                            std::thread::sleep(Duration::from_millis(1));
                            attempt.failed();
                        }
                    }
                });
            }
        });
        assert_eq!(granted.into_inner(), 5);
    }

    #[test]
    fn unsettled_attempts_are_given_back_and_successes_clear_the_account() {
        let limits = GuessLimits::new(2, 3, Duration::from_secs(60));
        for _ in 0..5 {
            drop(limits.reserve("Ann@Example.com", HOME).unwrap()); // e.g. the pool was full
        }
        limits.reserve("ann@example.com", HOME).unwrap().failed();
        limits.reserve("ann@example.com", HOME).unwrap().succeeded();
        limits.reserve("ann@example.com", HOME).unwrap().failed();
        limits.reserve("ann@example.com", HOME).unwrap().failed();
        assert!(limits.reserve("ann@example.com", HOME).is_err(), "two failures since the success");
        // The address has three failures counted: the limit.
        assert!(limits.reserve("bob@example.com", HOME).is_err(), "address over its limit");
        // An address refusal does not use up the account's attempts.
        let elsewhere: IpAddr = "192.0.2.1".parse().unwrap();
        limits.reserve("bob@example.com", elsewhere).unwrap().failed();
        limits.reserve("bob@example.com", elsewhere).unwrap().failed();
    }

    #[test]
    fn an_unlock_clears_the_account_and_nothing_else() {
        let limits = GuessLimits::new(2, 5, Duration::from_secs(60));
        let elsewhere: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..2 {
            limits.reserve("ann@example.com", HOME).unwrap().failed();
            limits.reserve("bob@example.com", elsewhere).unwrap().failed();
        }
        assert!(limits.reserve("ann@example.com", elsewhere).is_err(), "ann's account is over its limit");
        limits.unlock(" Ann@Example.COM ");
        limits.reserve("ann@example.com", elsewhere).unwrap().failed();
        limits.reserve("ann@example.com", elsewhere).unwrap().failed();
        assert!(limits.reserve("ann@example.com", elsewhere).is_err(), "an unlock is not a lasting exemption");
        assert!(limits.reserve("bob@example.com", elsewhere).is_err(), "bob's account stays over its limit");
        // HOME's address count is untouched: two of ann's failures, three more fit, then 429.
        for _ in 0..3 {
            limits.reserve("carol@example.com", HOME).unwrap().succeeded();
        }
        limits.reserve("dave@example.com", HOME).unwrap().failed();
        limits.reserve("dave@example.com", HOME).unwrap().failed();
        limits.reserve("erin@example.com", HOME).unwrap().failed();
        assert!(limits.reserve("frank@example.com", HOME).is_err(), "the address keeps ann's failures");
        limits.unlock("nobody@example.com"); // an account with no failures: nothing to do
    }
}
