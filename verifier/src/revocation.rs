//! Revocations, held in memory so the check path never asks the database.
//!
//! Two kinds: a single token by `jti` (logout), and every token of a user issued before a cut-off
//! (`users.tokens_valid_after`: password change, operator disable). Each verifier reloads both from
//! the auth database every `revocation_refresh_ms`, so a revocation made through any verifier, or
//! by an operator straight in the database, is in force everywhere within that interval plus one
//! query. The verifier that takes a logout applies it to its own copy at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use shopgate_core::token::Claims;
use sqlx::{AnyPool, Row as _};

#[derive(Default)]
struct Snapshot {
    jtis: HashSet<String>,
    /// user id -> tokens with `iat` below this are revoked.
    cutoffs: HashMap<u64, i64>,
}

#[derive(Default)]
pub struct Revocations {
    snapshot: ArcSwap<Snapshot>,
}

impl Revocations {
    pub fn is_revoked(&self, claims: &Claims) -> bool {
        let s = self.snapshot.load();
        s.jtis.contains(&claims.jti) || s.cutoffs.get(&claims.user_id).is_some_and(|&cut| claims.iat < cut)
    }

    /// Applies a logout to this verifier's copy now, ahead of the next refresh.
    pub fn revoke_local(&self, jti: &str) {
        self.snapshot.rcu(|s| {
            let mut jtis = s.jtis.clone();
            jtis.insert(jti.to_owned());
            Snapshot { jtis, cutoffs: s.cutoffs.clone() }
        });
    }

    /// Applies a user-wide cut-off to this verifier's copy now.
    pub fn cutoff_local(&self, user_id: u64, cutoff: i64) {
        self.snapshot.rcu(|s| {
            let mut cutoffs = s.cutoffs.clone();
            cutoffs.insert(user_id, cutoff);
            Snapshot { jtis: s.jtis.clone(), cutoffs }
        });
    }

    /// Reloads everything still relevant: revoked tokens not yet expired, cut-offs younger than
    /// the longest token life.
    pub async fn refresh(&self, db: &AnyPool, now: i64, max_token_life: i64) -> Result<(), sqlx::Error> {
        let jtis = sqlx::query("SELECT jti FROM revoked_tokens WHERE expires_at > ?")
            .bind(now - 60)
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("jti"))
            .collect::<Result<HashSet<_>, _>>()?;
        let cutoffs = sqlx::query("SELECT id, tokens_valid_after FROM users WHERE tokens_valid_after > ?")
            .bind(now - max_token_life)
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>("id")? as u64, r.try_get::<i64, _>("tokens_valid_after")?)))
            .collect::<Result<HashMap<_, _>, sqlx::Error>>()?;
        self.snapshot.store(Arc::new(Snapshot { jtis, cutoffs }));
        Ok(())
    }

    pub fn len(&self) -> (usize, usize) {
        let s = self.snapshot.load();
        (s.jtis.len(), s.cutoffs.len())
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

/// Drops rows of tokens that have expired anyway.
pub async fn purge_expired(db: &AnyPool, now: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < ?").bind(now - 3600).execute(db).await?.rows_affected())
}
