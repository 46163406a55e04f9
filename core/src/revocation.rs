//! Revocations, held in memory so no token check asks the database.
//!
//! Two kinds: a single token by `jti` (logout), and every token of a user issued before a cut-off
//! (`users.tokens_valid_after`: password change, operator disable). The auth database (owned by
//! the verifier) is the record; every verifier, and every backend for tokens that reach its port
//! directly, reloads both from it every `revocation_refresh_ms`, so a revocation made anywhere is
//! in force everywhere within that interval plus one query. The verifier that takes a logout
//! applies it to its own copy at once.
//!
//! A revocation is held as long as its token could still pass a check: until `exp + leeway`
//! (plus a minute of margin for clocks), whatever `jwt.leeway_seconds` is set to.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sqlx::{AnyPool, Row as _};

use crate::config::JwtConfig;
use crate::time::unix_now;
use crate::token::Claims;

/// Kept past the last moment a token could pass, for clocks that disagree a little.
const MARGIN_SECONDS: i64 = 60;

#[derive(Default)]
struct Snapshot {
    jtis: HashSet<String>,
    /// user id -> tokens with `iat` below this are revoked.
    cutoffs: HashMap<u64, i64>,
}

pub struct Revocations {
    snapshot: ArcSwap<Snapshot>,
    /// `jwt.leeway_seconds`: a token passes until `exp + leeway`.
    leeway: i64,
    /// The longest a token can pass after it was issued: ttl + leeway.
    max_token_life: i64,
    loaded: AtomicBool,
}

impl Revocations {
    /// Empty, for tokens issued under `jwt`'s ttl and leeway; see [`Revocations::is_loaded`].
    pub fn new(jwt: &JwtConfig) -> Self {
        let leeway = jwt.policy.leeway_seconds;
        Self {
            snapshot: ArcSwap::default(),
            leeway,
            max_token_life: jwt.ttl_seconds + leeway,
            loaded: AtomicBool::new(false),
        }
    }

    pub fn is_revoked(&self, claims: &Claims) -> bool {
        let s = self.snapshot.load();
        s.jtis.contains(&claims.jti) || s.cutoffs.get(&claims.user_id).is_some_and(|&cut| claims.iat < cut)
    }

    /// Whether a refresh has succeeded at least once; until then nothing is known to be revoked.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Applies a logout to this process's copy now, ahead of the next refresh.
    pub fn revoke_local(&self, jti: &str) {
        self.snapshot.rcu(|s| {
            let mut jtis = s.jtis.clone();
            jtis.insert(jti.to_owned());
            Snapshot { jtis, cutoffs: s.cutoffs.clone() }
        });
    }

    /// Applies a user-wide cut-off to this process's copy now.
    pub fn cutoff_local(&self, user_id: u64, cutoff: i64) {
        self.snapshot.rcu(|s| {
            let mut cutoffs = s.cutoffs.clone();
            cutoffs.insert(user_id, cutoff);
            Snapshot { jtis: s.jtis.clone(), cutoffs }
        });
    }

    /// Reloads everything that could still matter at `now`: revoked tokens that could still pass
    /// (`exp + leeway` not yet reached), cut-offs younger than the longest token life.
    pub async fn refresh(&self, db: &AnyPool, now: i64) -> Result<(), sqlx::Error> {
        let jtis = sqlx::query("SELECT jti FROM revoked_tokens WHERE expires_at > ?")
            .bind(now - self.leeway - MARGIN_SECONDS)
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("jti"))
            .collect::<Result<HashSet<_>, _>>()?;
        let cutoffs = sqlx::query("SELECT id, tokens_valid_after FROM users WHERE tokens_valid_after > ?")
            .bind(now - self.max_token_life - MARGIN_SECONDS)
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>("id")? as u64, r.try_get::<i64, _>("tokens_valid_after")?)))
            .collect::<Result<HashMap<_, _>, sqlx::Error>>()?;
        self.snapshot.store(Arc::new(Snapshot { jtis, cutoffs }));
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Refreshes every `every`, forever (spawn it); `report` hears each failure. A failed refresh
    /// keeps the last snapshot: checks never wait for the database.
    pub async fn keep_fresh(self: Arc<Self>, db: AnyPool, every: Duration, report: impl Fn(&sqlx::Error) + Send) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.refresh(&db, unix_now()).await {
                report(&e);
            }
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

/// Records a logout. A second logout of the same token is not an error.
pub async fn revoke_token(db: &AnyPool, claims: &Claims, now: i64) -> Result<(), sqlx::Error> {
    let r = sqlx::query("INSERT INTO revoked_tokens (jti, user_id, expires_at, revoked_at) VALUES (?, ?, ?, ?)")
        .bind(&claims.jti)
        .bind(claims.user_id as i64)
        .bind(claims.exp)
        .bind(now)
        .execute(db)
        .await;
    match r {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(()),
        other => other.map(|_| ()),
    }
}
