//! The auth database as the services use it (feature `auth-db`): a primary, and optionally a GTID
//! replica that what the services only read (password checks, revocations, unlocks, the shard
//! map) falls back to while the primary is down.
//!
//! Roles come from the servers, not from the config's order: every [`PROBE_EVERY`] each server is
//! asked `@@read_only` and `@@gtid_binlog_pos`, and the one writable server is the primary. So
//! `shopctl auth promote` (the replica made writable, the old primary fenced read-only) is followed
//! by every process within a probe, without a restart or a config reload. Two writable servers (an
//! old primary back unfenced) is a split brain: no process writes to either, and reads stop too,
//! until an operator fences one.
//!
//! Staleness, without a table of our own: the primary's GTID position is recorded at each probe;
//! once the replica's position has reached a recorded one, the replica holds everything committed
//! before that probe. Its lag is the time since the newest such probe, measured up to the last
//! moment the primary answered: while the primary is down nothing new commits, so the lag it had
//! then is how stale the replica stays. Reads fall back only within `max_lag`
//! (`verifier.database_replica_max_lag_seconds`). A process that has never reached the primary (it
//! started during the outage) cannot measure the lag and trusts the replica: the processes that
//! watched it, and the `AuthReplicaLagging` alert, kept it within the bound while the primary ran.
//!
//! With no replica configured (and always on SQLite) there is one server, never probed: it is
//! both [`AuthDb::write`] and [`AuthDb::read`], as before.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use sqlx::{AnyPool, Row as _};

/// How often each server's role and position are looked at.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// A server that does not answer a probe within this is down for this round.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Positions of the primary kept to measure the lag against: at one a probe, a minute's worth.
const HISTORY: usize = 120;

/// A write refused because no server is the primary now (it is down, or two claim to be).
#[derive(Debug, thiserror::Error)]
#[error("the auth database's primary is unavailable; it is read-only until the primary is back or promoted")]
pub struct NoPrimary;

/// What the last probe found, for requests (which server to use) and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Roles {
    /// The one writable server that answered, by index (0: `database_url`, 1: the replica URL).
    pub primary: Option<usize>,
    /// The read-only server that answered and is within the lag bound: reads go there when the
    /// primary does not answer.
    pub standby: Option<usize>,
    /// The standby's measured lag; `None` if it did not answer or was never compared.
    pub lag: Option<Duration>,
    /// More than one server is writable: nothing is written or read until one is fenced.
    pub split: bool,
}

impl Roles {
    /// Whether reads are served by the replica because the primary is down.
    pub fn reading_from_replica(&self) -> bool {
        self.primary.is_none() && self.standby.is_some()
    }
}

/// The auth database's servers and their roles. Cheap to share (`Arc`).
pub struct AuthDb {
    pools: Vec<AnyPool>,
    max_lag: Duration,
    roles: ArcSwap<Roles>,
    track: Mutex<Track>,
    probing: AtomicBool,
}

/// The lag measurement's memory, between probes.
#[derive(Default)]
struct Track {
    /// The primary the history is of: a new primary starts a new history.
    primary: Option<usize>,
    /// Its positions, oldest first, each with when it was read.
    history: VecDeque<(Instant, Gtid)>,
    /// The newest probe whose position the standby has reached.
    caught_up_at: Option<Instant>,
    /// The last time the primary answered.
    primary_seen_at: Option<Instant>,
}

impl AuthDb {
    /// One server, never probed: the primary for writes and reads.
    pub fn single(pool: AnyPool) -> Self {
        let roles = Roles { primary: Some(0), ..Roles::default() };
        Self {
            pools: vec![pool],
            max_lag: Duration::ZERO,
            roles: ArcSwap::from_pointee(roles),
            track: Mutex::default(),
            probing: AtomicBool::new(false),
        }
    }

    /// A primary and its replica; call [`AuthDb::start_probes`] before use.
    pub fn pair(primary: AnyPool, replica: AnyPool, max_lag: Duration) -> Self {
        Self {
            pools: vec![primary, replica],
            max_lag,
            roles: ArcSwap::from_pointee(Roles::default()),
            track: Mutex::default(),
            probing: AtomicBool::new(false),
        }
    }

    pub fn has_replica(&self) -> bool {
        self.pools.len() > 1
    }

    pub fn roles(&self) -> Roles {
        **self.roles.load()
    }

    /// The primary, for a write; [`NoPrimary`] while there is none (a 503 with `Retry-After`).
    pub fn write(&self) -> Result<AnyPool, NoPrimary> {
        self.roles().primary.map(|i| self.pools[i].clone()).ok_or(NoPrimary)
    }

    /// Where a read goes now: the primary, else the standby within the lag bound.
    pub fn read_pool(&self) -> Option<AnyPool> {
        let roles = self.roles();
        roles.primary.or(roles.standby).map(|i| self.pools[i].clone())
    }

    /// Runs the read `query` on the primary, and on the standby if the primary does not answer it
    /// (it may have gone down since the last probe); on the standby at once while the primary is
    /// known down. An "unavailable" error if neither may be used.
    pub async fn read<T, F, Fut>(&self, query: F) -> sqlx::Result<T>
    where
        F: Fn(AnyPool) -> Fut,
        Fut: Future<Output = sqlx::Result<T>>,
    {
        let roles = self.roles();
        let Some(first) = roles.primary.or(roles.standby) else { return Err(no_server()) };
        match query(self.pools[first].clone()).await {
            Err(e) if crate::db::is_unavailable(&e) && roles.primary == Some(first) => match roles.standby {
                Some(standby) => query(self.pools[standby].clone()).await,
                None => Err(e),
            },
            done => done,
        }
    }

    /// Every pool, to close at shutdown.
    pub async fn close(&self) {
        for pool in &self.pools {
            pool.close().await;
        }
    }

    /// Probes once now, then every [`PROBE_EVERY`] in a task of its own until the last `Arc` is
    /// dropped. Only the first call does anything; nothing to do with one server.
    pub async fn start_probes(self: &Arc<Self>) {
        if !self.has_replica() || self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.probe().await;
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(db) = this.upgrade() else { break };
                db.probe().await;
            }
        });
    }

    /// Asks every server its role and position and decides the roles from the answers.
    pub async fn probe(&self) {
        if !self.has_replica() {
            return;
        }
        // The primary's position is read before the replica's, so a replica found at or past it
        // holds everything the primary had committed when it was read.
        let mut seen = Vec::with_capacity(self.pools.len());
        for pool in &self.pools {
            seen.push(probe_one(pool).await);
        }
        let roles = self.decide(&seen, Instant::now());
        let before = self.roles.swap(Arc::new(roles));
        report_change(&before, &roles);
    }

    fn decide(&self, seen: &[Option<Seen>], now: Instant) -> Roles {
        let mut track = self.track.lock().unwrap_or_else(|p| p.into_inner());
        let writable: Vec<usize> =
            (0..seen.len()).filter(|&i| seen[i].as_ref().is_some_and(|s| !s.read_only)).collect();
        if writable.len() > 1 {
            return Roles { split: true, ..Roles::default() };
        }
        let primary = writable.first().copied();
        if let Some(p) = primary {
            if track.primary != Some(p) {
                *track = Track { primary: Some(p), ..Track::default() };
            }
            track.primary_seen_at = Some(now);
            if let Some(s) = &seen[p] {
                if track.history.len() == HISTORY {
                    track.history.pop_front();
                }
                track.history.push_back((now, s.position.clone()));
            }
        }
        // The other server of the pair, if it answered read-only.
        let standby = (0..seen.len()).find(|&i| Some(i) != primary && seen[i].as_ref().is_some_and(|s| s.read_only));
        let Some(standby) = standby else { return Roles { primary, ..Roles::default() } };
        let position = seen[standby].as_ref().map(|s| s.position.clone()).unwrap_or_default();
        while let Some((at, p)) = track.history.front() {
            if !position.has_reached(p) {
                break;
            }
            track.caught_up_at = Some(*at);
            track.history.pop_front();
        }
        let until = track.primary_seen_at.unwrap_or(now);
        let lag = match (track.primary_seen_at, track.caught_up_at, track.history.front()) {
            // Never saw a primary: nothing to measure against.
            (None, _, _) => None,
            (Some(_), Some(at), _) if track.history.is_empty() => Some(until.saturating_duration_since(at)),
            (Some(_), caught, Some((oldest, _))) => Some(until.saturating_duration_since(caught.unwrap_or(*oldest))),
            (Some(_), caught, None) => caught.map(|at| until.saturating_duration_since(at)),
        };
        let fresh = lag.is_none_or(|l| l <= self.max_lag);
        Roles { primary, standby: fresh.then_some(standby), lag, split: false }
    }
}

/// One server's answer to a probe.
struct Seen {
    read_only: bool,
    position: Gtid,
}

async fn probe_one(pool: &AnyPool) -> Option<Seen> {
    let query = sqlx::query("SELECT CAST(@@read_only AS SIGNED) AS ro, CAST(@@gtid_binlog_pos AS CHAR(255)) AS pos")
        .fetch_one(pool);
    match tokio::time::timeout(PROBE_TIMEOUT, query).await {
        Ok(Ok(row)) => {
            let read_only: i64 = row.try_get("ro").ok()?;
            let position: String = row.try_get("pos").ok()?;
            Some(Seen { read_only: read_only != 0, position: Gtid::parse(&position) })
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "auth database probe failed");
            None
        }
        Err(_) => None,
    }
}

fn no_server() -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "no auth database server may be read: the primary is down and the replica is down or too far behind",
    ))
}

fn report_change(before: &Roles, after: &Roles) {
    if before.primary == after.primary && before.standby == after.standby && before.split == after.split {
        return;
    }
    if after.split {
        tracing::error!("two auth database servers are writable: no writes or reads until one is fenced read-only");
    } else if after.primary.is_none() && after.standby.is_some() {
        tracing::warn!(lag = ?after.lag, "the auth primary is down: reading from the replica, refusing writes");
    } else if after.primary.is_none() {
        tracing::error!(lag = ?after.lag, "the auth primary is down and the replica is unusable");
    } else {
        tracing::info!(primary = ?after.primary, standby = ?after.standby, "auth database roles");
    }
}

/// A GTID position (`@@gtid_binlog_pos`): per replication domain, the newest sequence number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Gtid(BTreeMap<u32, u64>);

impl Gtid {
    /// `"0-1-123,1-2-5"`; parts that do not parse are left out.
    fn parse(s: &str) -> Self {
        let domains = s
            .split(',')
            .filter_map(|part| {
                let mut it = part.trim().splitn(3, '-');
                let (domain, _server, seq) = (it.next()?, it.next()?, it.next()?);
                Some((domain.parse().ok()?, seq.parse().ok()?))
            })
            .collect();
        Self(domains)
    }

    /// Whether this position holds everything `other` does, in every domain.
    fn has_reached(&self, other: &Gtid) -> bool {
        other.0.iter().all(|(d, seq)| self.0.get(d).is_some_and(|have| have >= seq))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pair(max_lag: Duration) -> AuthDb {
        sqlx::any::install_default_drivers();
        let lazy = || sqlx::any::AnyPoolOptions::new().connect_lazy("sqlite::memory:").unwrap();
        AuthDb::pair(lazy(), lazy(), max_lag)
    }

    fn seen(read_only: bool, pos: &str) -> Option<Seen> {
        Some(Seen { read_only, position: Gtid::parse(pos) })
    }

    #[test]
    fn positions_compare_per_domain() {
        let p = Gtid::parse("0-1-10,1-2-5");
        assert!(Gtid::parse("0-2-10,1-2-6").has_reached(&p));
        assert!(!Gtid::parse("0-1-9,1-2-6").has_reached(&p));
        assert!(!Gtid::parse("0-1-10").has_reached(&p));
        assert!(Gtid::parse("").has_reached(&Gtid::parse("")));
    }

    #[tokio::test]
    async fn the_writable_server_is_the_primary_and_a_caught_up_replica_the_standby() {
        let db = pair(Duration::from_secs(5));
        let t0 = Instant::now();
        let r = db.decide(&[seen(false, "0-1-10"), seen(true, "0-1-10")], t0);
        assert_eq!((r.primary, r.standby, r.lag), (Some(0), Some(1), Some(Duration::ZERO)));
        // The primary goes down: reads move to the replica, which had everything.
        let r = db.decide(&[None, seen(true, "0-1-10")], t0 + Duration::from_secs(30));
        assert!(r.reading_from_replica() && r.lag == Some(Duration::ZERO), "{r:?}");
        // Promoted: the replica is writable, and the old primary back read-only is behind it.
        let r = db.decide(&[seen(true, "0-1-10"), seen(false, "0-2-12")], t0 + Duration::from_secs(31));
        assert_eq!((r.primary, r.standby), (Some(1), Some(0)));
        let r = db.decide(&[seen(true, "0-1-10"), seen(false, "0-2-13")], t0 + Duration::from_secs(40));
        assert_eq!((r.primary, r.standby), (Some(1), None), "a fenced old primary is not read: {r:?}");
    }

    #[tokio::test]
    async fn a_replica_behind_when_the_primary_died_is_not_read() {
        let db = pair(Duration::from_secs(5));
        let t0 = Instant::now();
        db.decide(&[seen(false, "0-1-10"), seen(true, "0-1-10")], t0);
        db.decide(&[seen(false, "0-1-11"), seen(true, "0-1-10")], t0 + Duration::from_secs(1));
        db.decide(&[seen(false, "0-1-20"), seen(true, "0-1-10")], t0 + Duration::from_secs(9));
        let r = db.decide(&[None, seen(true, "0-1-10")], t0 + Duration::from_secs(10));
        assert_eq!((r.primary, r.standby), (None, None), "{r:?}");
        // It applies what it had received: now it holds what the primary had at its last answer.
        let r = db.decide(&[None, seen(true, "0-1-20")], t0 + Duration::from_secs(11));
        assert!(r.reading_from_replica(), "{r:?}");
    }

    #[tokio::test]
    async fn two_writable_servers_take_nothing_and_no_primary_ever_seen_trusts_the_replica() {
        let db = pair(Duration::from_secs(5));
        let r = db.decide(&[None, seen(true, "0-1-10")], Instant::now());
        assert!(r.reading_from_replica() && r.lag.is_none(), "{r:?}");
        let r = db.decide(&[seen(false, "0-1-10"), seen(false, "0-2-11")], Instant::now());
        assert!(r.split && r.primary.is_none() && r.standby.is_none(), "{r:?}");
    }
}
