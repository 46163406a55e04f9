//! The idempotency purge: keys older than `[backend] idempotency_retention_seconds` (default 24 h)
//! are deleted from the primary every `idempotency_purge_every_seconds`, in batches of
//! `idempotency_purge_batch` with `idempotency_purge_pause_ms` between them, so the purge never
//! holds the database or its locks for long and order traffic goes on beside it. A retry within
//! the retention always finds its key and gets the original order back; a retry after the purge
//! makes a new order.

use shopgate_core::config::BackendConfig;
use sqlx::AnyPool;

use crate::db::{is_unavailable, now_secs, Dialect};
use crate::metrics::Metrics;
use crate::state::AppState;
use shopgate_store::orders::purge_expired_keys;

/// Starts the purge for `state`'s shard; it stops when the primary's pool is closed.
pub fn spawn(state: &AppState) {
    let (pool, metrics, config) = (state.db_write().clone(), state.metrics.clone(), state.backend.clone());
    let dialect = state.db.dialect();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(config.idempotency_purge_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if pool.is_closed() {
                break;
            }
            purge_once(&pool, dialect, &metrics, &config).await;
        }
    });
}

/// Deletes every key past the retention, batch by batch; returns how many went.
pub async fn purge_once(pool: &AnyPool, dialect: Dialect, metrics: &Metrics, config: &BackendConfig) -> u64 {
    let retention = i64::try_from(config.idempotency_retention_seconds).unwrap_or(i64::MAX);
    let cutoff = now_secs().saturating_sub(retention);
    let batch = config.idempotency_purge_batch;
    let (mut purged, mut batches) = (0u64, 0u64);
    loop {
        match purge_expired_keys(pool, dialect, cutoff, batch).await {
            Ok(0) => break,
            Ok(n) => {
                metrics.idempotency_purged(n);
                purged += n;
                batches += 1;
                if n < u64::from(batch) {
                    break;
                }
            }
            Err(e) => {
                // Not ready yet, or the primary is down or busy: the next round tries again.
                if is_unavailable(&e) {
                    tracing::debug!(error = %e, "idempotency purge postponed");
                } else {
                    tracing::warn!(error = %e, "idempotency purge failed");
                }
                break;
            }
        }
        tokio::time::sleep(config.idempotency_purge_pause()).await;
    }
    if purged > 0 {
        tracing::info!(purged, batches, retention_seconds = retention, "purged expired idempotency keys");
    }
    purged
}
