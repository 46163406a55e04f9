//! Around every request: a tracing span carrying the request id nginx set (`X-Request-Id`), one
//! log line when it ends, the request counter, and the `X-Shop-Shard` header saying who served.
//! Around every `/api` request also: a 503 until the shard's schema is set up, a 503 when the
//! request runs past its deadline, and admission: at most `max_in_flight` requests worked on at
//! once and `max_queued` waiting (each at most `queue_wait_ms`); past that a quick 503. Every 503
//! carries `Retry-After`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shopgate_core::config::BackendConfig;
use shopgate_core::metrics;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::AppState;

pub const SHARD_HEADER: &str = "x-shop-shard";

pub async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = shopgate_core::http::request_id(req.headers());
    let route = req.extensions().get::<MatchedPath>().map_or(metrics::UNMATCHED, MatchedPath::as_str).to_owned();
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
    state.metrics.request(&route, &method, status, started);
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(state.shard_name().as_str()) {
        headers.insert(SHARD_HEADER, v);
    }
    shopgate_core::http::echo_request_id(headers, &request_id);
    response
}

pub(crate) async fn require_ready(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match state.ensure_ready().await {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Bounds every `/api` request: pool timeouts cover a database that refuses connections, this
/// covers one that accepts them and then hangs (a frozen host, a lock held elsewhere).
pub(crate) async fn deadline(req: Request, next: Next) -> Response {
    match tokio::time::timeout(crate::REQUEST_DEADLINE, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::DeadlineExceeded.into_response(),
    }
}

/// The backend's capacity: slots for requests being worked on, and a bounded, time-limited queue
/// for a slot. A request it turns away costs no database work and answers at once, so a backend
/// past its capacity stays responsive and recovers by itself when the load drops.
pub(crate) struct Admission {
    slots: Semaphore,
    queued: AtomicUsize,
    max_queued: usize,
    queue_wait: Duration,
    metrics: Arc<Metrics>,
}

impl Admission {
    pub fn new(config: &BackendConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Semaphore::new(config.max_in_flight),
            queued: AtomicUsize::new(0),
            max_queued: config.max_queued,
            queue_wait: config.queue_wait(),
            metrics,
        }
    }

    fn shed(&self) -> Response {
        self.metrics.request_shed();
        ApiError::Overloaded.into_response()
    }
}

/// Leaves the queue when dropped, also when the waiting request is dropped.
struct InQueue<'a>(&'a AtomicUsize);

impl Drop for InQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a request in flight while it lives.
struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight(-1);
    }
}

pub(crate) async fn admit(State(admission): State<Arc<Admission>>, req: Request, next: Next) -> Response {
    let slot = match admission.slots.try_acquire() {
        Ok(slot) => slot,
        Err(_) => {
            if admission.queued.fetch_add(1, Ordering::AcqRel) >= admission.max_queued {
                admission.queued.fetch_sub(1, Ordering::AcqRel);
                return admission.shed();
            }
            let _in_queue = InQueue(&admission.queued);
            match tokio::time::timeout(admission.queue_wait, admission.slots.acquire()).await {
                Ok(Ok(slot)) => slot,
                Ok(Err(_)) | Err(_) => return admission.shed(),
            }
        }
    };
    admission.metrics.in_flight(1);
    let _in_flight = InFlight(&admission.metrics);
    let response = next.run(req).await;
    drop(slot);
    response
}
