//! Revocations, held in memory so no token check asks the database.
//!
//! Two kinds: a single token by `jti` (logout), and every token of a user issued before a cut-off
//! (`users.tokens_valid_after`: password change, operator disable). The auth database (owned by
//! the verifier) is the record; every verifier, and every backend for tokens that reach its port
//! directly, keeps a copy fresh from it every `revocation_refresh_ms`, so a revocation made
//! anywhere is in force everywhere within that interval plus one query. The verifier that takes a
//! logout applies it to its own copy at once.
//!
//! At a large shop's scale (a million live revocations) the copy is kept incrementally:
//! - a refresh reads only the logouts recorded since the last one: `revoked_at` is the auth
//!   database's own clock (one clock for every verifier), and each refresh reads from the newest
//!   `revoked_at` it has seen minus [`COMMIT_WINDOW`], which covers a logout whose row commits
//!   late (a statement waits at most the lock timeout, 3-5 s) — rows are inserted again
//!   harmlessly;
//! - every [`FULL_RELOAD_EVERY`] a full read drops what has expired and takes anything missed;
//! - a logout is one insert into a concurrent map (no copy of the set), and a revoked token is 12
//!   bytes (a 64-bit hash of its `jti` and its expiry). Two `jti`s with one hash would make a valid
//!   token look revoked: with a million revocations, one check in 10^13.
//!
//! Cut-offs are few (password changes and disables within one token life) and reloaded whole.
//! A revocation is held as long as its token could still pass a check: until `exp + leeway`
//! (plus a minute of margin for clocks), whatever `jwt.leeway_seconds` is set to.

use std::collections::HashMap;
use std::hash::Hasher as _;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use futures::TryStreamExt as _;
use sqlx::{AnyPool, Row as _};

use crate::auth_db::AuthDb;
use crate::config::JwtConfig;
use crate::time::unix_now;
use crate::token::Claims;

/// Kept past the last moment a token could pass, for clocks that disagree a little.
const MARGIN_SECONDS: i64 = 60;
/// How far back of the newest `revoked_at` seen each refresh reads again: longer than a logout's
/// row can take to commit after the database stamped it.
pub(crate) const COMMIT_WINDOW: i64 = 10;
/// How often the whole table is read again (and what has expired is dropped from memory).
pub(crate) const FULL_RELOAD_EVERY: Duration = Duration::from_secs(300);

pub struct Revocations {
    /// Hash of a revoked `jti` -> its `exp` (unix seconds, saturated to u32).
    jtis: DashMap<u64, u32>,
    /// user id -> tokens with `iat` below this are revoked.
    cutoffs: ArcSwap<HashMap<u64, i64>>,
    /// The newest `revoked_at` read so far; `i64::MIN` before the first read.
    newest_seen: AtomicI64,
    /// When the last full read was; `None` before the first.
    last_full: Mutex<Option<Instant>>,
    /// `jwt.leeway_seconds`: a token passes until `exp + leeway`.
    leeway: i64,
    /// The longest a token can pass after it was issued: ttl + leeway.
    max_token_life: i64,
    loaded: AtomicBool,
    /// When [`Revocations::keep_fresh`] last refreshed (unix seconds); 0 before the first.
    refreshed_at: AtomicI64,
}

/// The key a `jti` is held under.
fn jti_key(jti: &str) -> u64 {
    // SipHash with fixed keys: the same in every process of a build, which is all it needs.
    let mut h = std::hash::DefaultHasher::new();
    h.write(jti.as_bytes());
    h.finish()
}

fn expiry(exp: i64) -> u32 {
    u32::try_from(exp.max(0)).unwrap_or(u32::MAX)
}

impl Revocations {
    /// Empty, for tokens issued under `jwt`'s ttl and leeway; see [`Revocations::is_loaded`].
    pub fn new(jwt: &JwtConfig) -> Self {
        Self::with_times(jwt.policy.leeway_seconds, jwt.policy.valid_for_at_most())
    }

    /// `max_token_life`: how long after its `iat` a token can pass the check.
    fn with_times(leeway: i64, max_token_life: i64) -> Self {
        Self {
            jtis: DashMap::new(),
            cutoffs: ArcSwap::default(),
            newest_seen: AtomicI64::new(i64::MIN),
            last_full: Mutex::new(None),
            leeway,
            max_token_life,
            loaded: AtomicBool::new(false),
            refreshed_at: AtomicI64::new(0),
        }
    }

    pub fn is_revoked(&self, claims: &Claims) -> bool {
        self.jtis.contains_key(&jti_key(&claims.jti))
            || self.cutoffs.load().get(&claims.user_id).is_some_and(|&cut| claims.iat < cut)
    }

    /// Whether a refresh has succeeded at least once; until then nothing is known to be revoked.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Revoked tokens held, for tests and metrics.
    pub fn len(&self) -> usize {
        self.jtis.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jtis.is_empty()
    }

    /// Applies a logout to this process's copy now, ahead of the next refresh: one insert.
    pub fn revoke_local(&self, claims: &Claims) {
        self.jtis.insert(jti_key(&claims.jti), expiry(claims.exp));
    }

    /// Applies a user-wide cut-off to this process's copy now.
    pub fn cutoff_local(&self, user_id: u64, cutoff: i64) {
        self.cutoffs.rcu(|c| {
            let mut c = HashMap::clone(c);
            c.insert(user_id, cutoff);
            c
        });
    }

    /// Brings the copy up to date at `now`: the logouts recorded since the last refresh (or, every
    /// [`FULL_RELOAD_EVERY`] and the first time, every revoked token that could still pass, after
    /// dropping those that cannot), and the cut-offs younger than the longest token life.
    pub async fn refresh(&self, db: &AnyPool, now: i64) -> Result<(), sqlx::Error> {
        let full =
            self.last_full.lock().unwrap_or_else(|p| p.into_inner()).is_none_or(|at| at.elapsed() >= FULL_RELOAD_EVERY);
        let live_after = now - self.leeway - MARGIN_SECONDS;
        if full {
            let live_after = expiry(live_after);
            self.jtis.retain(|_, exp| *exp > live_after);
        }
        // Streamed, a row at a time into the map: a full read of a million rows never sits in
        // memory as rows.
        let from = if full { i64::MIN } else { self.newest_seen.load(Ordering::Acquire).saturating_sub(COMMIT_WINDOW) };
        let mut rows = sqlx::query(
            "SELECT jti, expires_at, revoked_at FROM revoked_tokens WHERE revoked_at >= ? AND expires_at > ?",
        )
        .bind(from)
        .bind(live_after)
        .fetch(db);
        let mut newest = self.newest_seen.load(Ordering::Acquire);
        while let Some(r) = rows.try_next().await? {
            let jti: String = r.try_get("jti")?;
            self.jtis.insert(jti_key(&jti), expiry(r.try_get("expires_at")?));
            newest = newest.max(r.try_get("revoked_at")?);
        }
        drop(rows);
        self.newest_seen.store(newest, Ordering::Release);
        let cutoffs = sqlx::query("SELECT id, tokens_valid_after FROM users WHERE tokens_valid_after > ?")
            .bind(now - self.max_token_life - MARGIN_SECONDS)
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>("id")? as u64, r.try_get::<i64, _>("tokens_valid_after")?)))
            .collect::<Result<HashMap<_, _>, sqlx::Error>>()?;
        self.cutoffs.store(Arc::new(cutoffs));
        if full {
            *self.last_full.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Refreshes every `every`, forever (spawn it), from the auth database's primary or, while it
    /// is down, its replica ([`AuthDb::read`]); `report` hears each failure. A failed refresh
    /// keeps the copy as it is: checks never wait for the database.
    pub async fn keep_fresh(self: Arc<Self>, db: Arc<AuthDb>, every: Duration, report: impl Fn(&sqlx::Error) + Send) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (now, this) = (unix_now(), &self);
            match db.read(|pool| async move { this.refresh(&pool, now).await }).await {
                Ok(()) => self.refreshed_at.store(now, Ordering::Release),
                Err(e) => report(&e),
            }
        }
    }

    /// Seconds since the last refresh that succeeded through [`Revocations::keep_fresh`]; `None`
    /// before the first. What a revocation made elsewhere may wait for here, past the bound.
    pub fn age_seconds(&self, now: i64) -> Option<i64> {
        match self.refreshed_at.load(Ordering::Acquire) {
            0 => None,
            at => Some((now - at).max(0)),
        }
    }

    /// Drops rows of tokens that can no longer pass anyway.
    pub async fn purge_expired(&self, db: &AnyPool, now: i64) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < ?")
            .bind(now - self.leeway - MARGIN_SECONDS - 3600)
            .execute(db)
            .await?
            .rows_affected())
    }
}

/// Records a logout, stamped with the auth database's own clock (`revoked_at`, which every
/// copy's incremental refresh follows). A second logout of the same token is not an error.
pub async fn revoke_token(db: &AnyPool, claims: &Claims) -> Result<(), sqlx::Error> {
    let mut conn = db.acquire().await?;
    let now_sql =
        if conn.backend_name() == "SQLite" { "CAST(strftime('%s', 'now') AS INTEGER)" } else { "UNIX_TIMESTAMP()" };
    let r = sqlx::query(&format!(
        "INSERT INTO revoked_tokens (jti, user_id, expires_at, revoked_at) VALUES (?, ?, ?, {now_sql})"
    ))
    .bind(&claims.jti)
    .bind(claims.user_id as i64)
    .bind(claims.exp)
    .execute(&mut *conn)
    .await;
    match r {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(()),
        other => other.map(|_| ()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn auth_db() -> AnyPool {
        sqlx::any::install_default_drivers();
        // One connection: each SQLite in-memory connection is a database of its own.
        let db = sqlx::any::AnyPoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
        for sql in [
            "CREATE TABLE users (id BIGINT PRIMARY KEY, tokens_valid_after BIGINT NOT NULL DEFAULT 0)",
            "CREATE TABLE revoked_tokens (jti VARCHAR(64) PRIMARY KEY, user_id BIGINT NOT NULL, \
             expires_at BIGINT NOT NULL, revoked_at BIGINT NOT NULL)",
        ] {
            sqlx::query(sql).execute(&db).await.unwrap();
        }
        db
    }

    fn claims(jti: &str, exp: i64) -> Claims {
        Claims {
            sub: "7".into(),
            user_id: 7,
            email: "ann@example.com".into(),
            iat: exp - 3600,
            exp,
            nbf: None,
            jti: jti.into(),
            iss: "shopgate".into(),
            aud: crate::token::Audience::One("shopgate-api".into()),
        }
    }

    async fn insert(db: &AnyPool, jti: &str, exp: i64, revoked_at: i64) {
        sqlx::query("INSERT INTO revoked_tokens (jti, user_id, expires_at, revoked_at) VALUES (?, 7, ?, ?)")
            .bind(jti)
            .bind(exp)
            .bind(revoked_at)
            .execute(db)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn refreshes_read_only_what_is_new_and_a_full_reload_takes_the_rest() {
        let db = auth_db().await;
        let now = unix_now();
        let r = Revocations::with_times(30, 3600);
        insert(&db, "first", now + 3600, now - 100).await;
        r.refresh(&db, now).await.unwrap();
        assert!(r.is_revoked(&claims("first", now + 3600)));

        // Stamped by the database's clock now, and one that committed a few seconds late: both read.
        revoke_token(&db, &claims("second", now + 3600)).await.unwrap();
        insert(&db, "late", now + 3600, now - 100 - COMMIT_WINDOW / 2).await;
        r.refresh(&db, now).await.unwrap();
        assert!(r.is_revoked(&claims("second", now + 3600)) && r.is_revoked(&claims("late", now + 3600)));

        // A row far older than anything seen is not read again by an incremental refresh (the old
        // code reread the whole table every time), but the periodic full reload takes it.
        insert(&db, "old", now + 3600, now - 10_000).await;
        r.refresh(&db, now).await.unwrap();
        assert!(!r.is_revoked(&claims("old", now + 3600)), "an incremental refresh read the whole table");
        *r.last_full.lock().unwrap() = None;
        r.refresh(&db, now).await.unwrap();
        assert!(r.is_revoked(&claims("old", now + 3600)));
        assert!(!r.is_revoked(&claims("never", now + 3600)));
    }

    #[tokio::test]
    async fn a_full_reload_drops_what_can_no_longer_pass_and_a_logout_is_local_at_once() {
        let db = auth_db().await;
        let now = unix_now();
        let r = Revocations::with_times(30, 3600);
        r.revoke_local(&claims("gone", now - 30 - MARGIN_SECONDS - 1));
        r.revoke_local(&claims("live", now + 10));
        assert_eq!(r.len(), 2);
        assert!(r.is_revoked(&claims("live", now + 10)));
        r.refresh(&db, now).await.unwrap();
        assert_eq!(r.len(), 1, "an expired revocation was kept");
        assert!(r.is_revoked(&claims("live", now + 10)));
    }
}
