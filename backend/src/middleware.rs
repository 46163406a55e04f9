//! Around every request: a tracing span carrying the request id nginx set (`X-Request-Id`), one
//! log line when it ends, the request counter, and the `X-Shop-Shard` header saying who served.
//! Around every `/api` request also: a 503 until the shard's schema is set up, and a 503 when the
//! request runs past its deadline.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use crate::error::ApiError;
use crate::state::AppState;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
pub const SHARD_HEADER: &str = "x-shop-shard";

pub async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id(req.headers());
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        shard = %state.shard_name(),
        method = %method,
        route = %route,
        user_id = tracing::field::Empty,
    );
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(status, latency_ms = started.elapsed().as_millis() as u64, "request finished");
    });
    state.metrics.request(&route, method.as_str(), status);
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(state.shard_name().as_str()) {
        headers.insert(SHARD_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID_HEADER, v);
    }
    response
}

pub async fn require_ready(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match state.ensure_ready().await {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Bounds every `/api` request: pool timeouts cover a database that refuses connections, this
/// covers one that accepts them and then hangs (a frozen host, a lock held elsewhere).
pub async fn deadline(req: Request, next: Next) -> Response {
    match tokio::time::timeout(crate::REQUEST_DEADLINE, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::DeadlineExceeded.into_response(),
    }
}

/// nginx's id if it is sane (1-128 visible ASCII), else a fresh one, so every line has one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .map(HeaderValue::as_bytes)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.iter().all(|b| (0x21..=0x7e).contains(b)))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(shopgate_core::token::new_jti)
}
