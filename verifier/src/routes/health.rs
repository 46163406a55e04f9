//! `/healthz` (the process is up), `/readyz` (the auth database answers), `/metrics`.

use std::time::Duration;

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};
use serde_json::json;
use shopgate_core::http::HttpError;

use crate::http::{json, Body};
use crate::AppState;

pub(crate) fn healthz() -> Response<Body> {
    json(StatusCode::OK, &json!({"status": "ok"}))
}

pub async fn readyz(state: &AppState) -> Response<Body> {
    // Ready while reads can be served: from the primary, or from the replica while it is down.
    let ping = state.auth.read(|db| async move { sqlx::query("SELECT 1").execute(&db).await });
    match tokio::time::timeout(Duration::from_secs(1), ping).await {
        Ok(Ok(_)) => json(StatusCode::OK, &json!({"status": "ready", "map_version": state.map.version()})),
        _ => {
            HttpError::Unavailable { code: "unavailable", message: "the auth database does not answer" }.into_response()
        }
    }
}

pub fn metrics(state: &AppState) -> Response<Body> {
    state.metrics.auth.observe(&state.auth, &state.revocations);
    state.metrics.map_version.set(state.map.version().map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX)));
    let mut resp = Response::new(Body::from(state.metrics.render()));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(shopgate_core::metrics::CONTENT_TYPE));
    resp
}
