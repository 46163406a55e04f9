//! Around every request: a tracing span carrying the request id nginx set (`X-Request-Id`), one
//! log line when it ends, the request counter, and the `X-Shop-Shard` header saying who served.
//! Around every `/api` request also: a 503 until the shard's schema is set up, a 503 when the
//! request runs past its deadline, and admission: at most `max_in_flight` requests worked on at
//! once and `max_queued` waiting (each at most `queue_wait_ms`); past that a quick 503. Every 503
//! carries `Retry-After`. Before that, each user's share: at most `max_per_user` of one user's
//! requests in the process, worked on or waiting for a slot; the user's next ones wait for one of
//! those to end (up to `max_queued` of them, each at most `queue_wait_ms`), and past that get 429
//! for that user alone. So one client hammering its shard cannot fill the slots and the queue its
//! other users need, and, held waiting rather than refused at once, does not spin on refusals
//! that cost the shard's CPU as much as answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shopgate_core::config::BackendConfig;
use shopgate_core::metrics;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
    /// Each user's requests in the process (by the `X-User-Id` nginx sent): their turns (permits
    /// of `max_per_user`) and how many hold or wait for one. 0: no bound per user.
    per_user: Mutex<HashMap<Box<str>, UserShare>>,
    max_per_user: usize,
    metrics: Arc<Metrics>,
}

/// One user's share of a process.
struct UserShare {
    turns: Arc<Semaphore>,
    /// The user's requests in the process: with a turn, or waiting for one.
    requests: usize,
}

impl Admission {
    pub fn new(config: &BackendConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Semaphore::new(config.max_in_flight),
            queued: AtomicUsize::new(0),
            max_queued: config.max_queued,
            queue_wait: config.queue_wait(),
            per_user: Mutex::new(HashMap::new()),
            max_per_user: config.max_per_user,
            metrics,
        }
    }

    /// Counts one more request of `user` while the share lives, or None if the user already has
    /// as many as may be worked on and wait (`max_per_user` + `max_queued`). Counted before the
    /// request waits or works, so a burst cannot pass the check together.
    fn share(&self, user: &str) -> Option<Share<'_>> {
        let mut users = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let entry = users
            .entry(user.into())
            .or_insert_with(|| UserShare { turns: Arc::new(Semaphore::new(self.max_per_user)), requests: 0 });
        if entry.requests >= self.max_per_user + self.max_queued {
            return None;
        }
        entry.requests += 1;
        Some(Share { admission: self, user: user.into(), turns: entry.turns.clone() })
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

/// One request of a user, counted in [`Admission::per_user`] until dropped (also when the request
/// is dropped mid-way).
struct Share<'a> {
    admission: &'a Admission,
    user: Box<str>,
    turns: Arc<Semaphore>,
}

impl Share<'_> {
    /// The user's turn: at once if the user has fewer than `max_per_user` requests worked on,
    /// else when one of them ends, or None after `queue_wait`.
    async fn turn(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(turn) = self.turns.clone().try_acquire_owned() {
            return Some(turn);
        }
        tokio::time::timeout(self.admission.queue_wait, self.turns.clone().acquire_owned()).await.ok()?.ok()
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        let mut users = self.admission.per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = users.get_mut(&self.user) {
            entry.requests -= 1;
            if entry.requests == 0 {
                users.remove(&self.user);
            }
        }
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
    // The user nginx names (a request without one is refused by the token check after this).
    let user = req.headers().get(crate::auth::USER_ID_HEADER).and_then(|v| v.to_str().ok());
    let over_share = || {
        admission.metrics.request_over_share();
        ApiError::OverShare.into_response()
    };
    let share = match user {
        Some(user) if admission.max_per_user > 0 => match admission.share(user) {
            Some(share) => Some(share),
            None => return over_share(),
        },
        _ => None,
    };
    let _turn = match &share {
        Some(share) => match share.turn().await {
            Some(turn) => Some(turn),
            None => return over_share(),
        },
        None => None,
    };
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
