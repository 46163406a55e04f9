//! The service layer: the store's SQL ([`shopgate_store`]) with the shop's rules around it. A
//! write runs behind its user's write fence ([`fence`]); orders share transactions (group
//! commit) and replay an idempotent retry ([`orders`]); each outcome becomes the client's answer
//! ([`crate::error::ApiError`]), a metric and a log line here, never in the store.

pub(crate) mod fence;
pub(crate) mod orders;
pub(crate) mod profiles;

use crate::db::Db;
use crate::metrics::Metrics;

/// What the service layer works with, lent by the backend's state for one call: the shard's
/// database, its metrics, and this process's part in placing orders. The layer never sees the
/// whole state, so it depends on the parts, not on the HTTP side's `AppState`.
pub(crate) struct Shard<'a> {
    pub(crate) db: &'a Db,
    pub(crate) metrics: &'a Metrics,
    pub(crate) orders: &'a orders::Orders,
}
