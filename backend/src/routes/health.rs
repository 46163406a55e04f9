//! `/healthz` (the process runs), `/readyz` (the primary answers), `/metrics` (Prometheus).
//! No authentication: they say nothing about users.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::AppState;

const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// The process runs; also the shard map version it routes with (`null` until one is loaded),
/// which `shopctl shards move` waits on.
pub(crate) async fn healthz(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "status": "ok", "shard": state.shard_name(), "map_version": state.map_version() }))
}

/// 200 when the schema is set up and the primary answers `SELECT 1` within a second, else 503.
/// With a replica, also its state at the last probe (`usable`, `lagging`, `down`) and its lag:
/// informative only, since a shard whose replica is down still serves everything.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.ensure_ready().await?;
    state.db.ping_primary(READY_TIMEOUT).await.map_err(ApiError::Unavailable)?;
    let mut body = json!({ "status": "ready", "shard": state.shard_name(), "map_version": state.map_version() });
    if state.db.has_replica() {
        body["replica"] = match state.db.replica_state_now() {
            Some(r) => json!({
                "state": r.name(),
                "lag_seconds": r.lag_ms().map(|ms| ms as f64 / 1000.0),
            }),
            None => json!({ "state": "unknown", "lag_seconds": null }),
        };
    }
    Ok(Json(body))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.set_map_version(state.map_version());
    state.metrics.auth.observe(&state.auth_db, &state.revocations);
    ([(header::CONTENT_TYPE, shopgate_core::metrics::CONTENT_TYPE)], state.metrics.render())
}
