//! Fills the bucket column (migration 0006) of rows written before it existed, or by a backend of
//! an older version during a rolling upgrade: at start and every minute, a few thousand rows a
//! statement with a pause between, so order traffic goes on beside it. A move refuses to start
//! while any row of its source lacks its bucket (`shopgate_store::per_user::unfilled`).

use std::time::Duration;

use crate::db::is_unavailable;
use crate::state::AppState;
use shopgate_store::per_user::fill_buckets;

/// Rows per table and statement.
const BATCH: u32 = 5000;
const EVERY: Duration = Duration::from_secs(60);
const PAUSE: Duration = Duration::from_millis(20);

/// Starts the filling for `state`'s shard; it stops when the primary's pool is closed.
pub fn spawn(state: &AppState) {
    let (pool, dialect) = (state.db_write().clone(), state.db.dialect());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if pool.is_closed() {
                break;
            }
            let mut filled = 0u64;
            loop {
                match fill_buckets(&pool, dialect, BATCH).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        if is_unavailable(&e) {
                            tracing::debug!(error = %e, "filling bucket columns postponed");
                        } else {
                            tracing::warn!(error = %e, "filling bucket columns failed");
                        }
                        break;
                    }
                }
                tokio::time::sleep(PAUSE).await;
            }
            if filled > 0 {
                tracing::info!(filled, "filled the bucket column of rows written before it");
            }
        }
    });
}
