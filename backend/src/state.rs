//! What every handler shares: this shard's config, the token verifier, the databases with their
//! read/write policy, the order id generator and the metrics. Cheap to clone.

use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use shopgate_core::config::{BackendConfig, Config, ShardConfig};
use shopgate_core::revocation::Revocations;
use shopgate_core::token::Verifier;
use shopgate_core::{ShardMap, ShardName, UserId};
use sqlx::AnyPool;

use crate::db::{self, Db, InitError};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::order_id::OrderIdGen;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub(crate) shard: ShardConfig,
    /// Capacity and idempotency retention, the same for every shard.
    pub backend: BackendConfig,
    pub shard_map: ShardMap,
    pub verifier: Verifier,
    pub db: Db,
    pub(crate) order_ids: OrderIdGen,
    pub metrics: Arc<Metrics>,
    /// Revoked tokens and users' cut-offs, from the auth database: a token nginx would refuse
    /// is refused here too when a backend port is reached directly.
    pub(crate) revocations: Arc<Revocations>,
    auth_db: AnyPool,
    revocation_refresh: Duration,
    /// A shard whose primary was down at start retries setting up its schema at most this often,
    /// driven by requests and `/readyz` (`backend.init_retry_ms`).
    init_retry_every: Duration,
    ready: AtomicBool,
    last_init_attempt: tokio::sync::Mutex<Option<Instant>>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(config: &Config, shard: ShardConfig) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new(shard.name.as_str()));
        let db = Db::connect(&shard, metrics.clone())?;
        Ok(Self(Arc::new(Inner {
            order_ids: OrderIdGen::new(shard.number),
            shard,
            backend: config.backend.clone(),
            shard_map: config.shard_map.clone(),
            verifier: config.jwt.verifier(),
            db,
            metrics,
            revocations: Arc::new(Revocations::new(&config.jwt)),
            auth_db: db::auth_pool(&config.verifier.database_url)?,
            revocation_refresh: config.verifier.revocation_refresh(),
            init_retry_every: config.backend.init_retry(),
            ready: AtomicBool::new(false),
            last_init_attempt: tokio::sync::Mutex::new(None),
        })))
    }

    pub fn shard_name(&self) -> &ShardName {
        &self.shard.name
    }

    /// The shard that owns `user`, by the one routing function nginx's map is generated from.
    pub fn shard_for(&self, user: UserId) -> &ShardName {
        self.shard_map.shard_for(user)
    }

    /// The primary.
    pub fn db_write(&self) -> &AnyPool {
        self.db.db_write()
    }

    /// Runs the read `query` on the replica when that is safe for `user` (else on the primary),
    /// and again on the primary if the replica fails to answer it.
    pub(crate) async fn read<T, F, Fut>(&self, user: UserId, query: F) -> Result<T, ApiError>
    where
        F: Fn(AnyPool) -> Fut,
        Fut: Future<Output = sqlx::Result<T>>,
    {
        Ok(self.db.read(user, query).await?)
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Ok once the schema is set up; until then tries (at most once per `init_retry_every`) and
    /// answers 503.
    pub(crate) async fn ensure_ready(&self) -> Result<(), ApiError> {
        if self.is_ready() {
            return Ok(());
        }
        let Ok(mut last) = self.last_init_attempt.try_lock() else {
            return Err(ApiError::NotReady);
        };
        if self.is_ready() {
            return Ok(());
        }
        if last.is_some_and(|at| at.elapsed() < self.init_retry_every) {
            return Err(ApiError::NotReady);
        }
        let result = self.try_init().await;
        // Measured from the end of the attempt: requests right after a slow failure answer at once.
        *last = Some(Instant::now());
        result.map_err(|_| ApiError::NotReady)
    }

    /// The first attempt, at start: like a request's, but waits for the lock and reports why.
    pub(crate) async fn init(&self) -> Result<(), InitError> {
        let mut last = self.last_init_attempt.lock().await;
        let result = self.try_init().await;
        *last = Some(Instant::now());
        result
    }

    /// Migrations, demo catalog, order id seed. Logged; the caller decides whether to go on.
    async fn try_init(&self) -> Result<(), InitError> {
        match self.db.init().await {
            Ok(max_order_id) => {
                self.order_ids.observe_max(max_order_id);
                self.ready.store(true, Ordering::Release);
                // DbUrl's Display masks any password.
                let primary = &self.shard.primary;
                let replica = self.shard.replica.as_ref().map_or_else(|| "none".to_owned(), ToString::to_string);
                tracing::info!(shard = %self.shard.name, %primary, %replica, "shard database ready");
                Ok(())
            }
            Err(e) => {
                // DbUrl's Display masks any password.
                let primary = &self.shard.primary;
                tracing::warn!(shard = %self.shard.name, %primary, error = %e, "shard database not ready");
                Err(e)
            }
        }
    }

    /// Keeps the revocations fresh, as every verifier does, and waits up to `first_within` for the
    /// first load (the verifier may still be creating the auth database). Until one load has
    /// succeeded, authenticated requests get 503: nothing is known about revocations yet.
    pub async fn spawn_revocation_refresh(&self, first_within: Duration) {
        let shard = self.shard.name.clone();
        tokio::spawn(self.revocations.clone().keep_fresh(self.auth_db.clone(), self.revocation_refresh, move |e| {
            tracing::warn!(%shard, error = %e, "revocation refresh failed; keeping the last snapshot");
        }));
        let started = Instant::now();
        while !self.revocations.is_loaded() && started.elapsed() < first_within {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// While a replica is configured, stamps the primary's heartbeat every second and then probes
    /// the replica, so its lag is measured even when nobody reads. Stops when the state is dropped.
    pub(crate) fn spawn_heartbeat(&self) {
        if !self.db.has_replica() {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(db::BEAT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                if inner.ready.load(Ordering::Acquire) {
                    // Bounded: a primary that hangs must not stop the replica's probes.
                    match tokio::time::timeout(db::BEAT_EVERY * 2, inner.db.beat()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!(error = %e, "heartbeat to the primary failed"),
                        Err(_) => tracing::debug!("heartbeat to the primary timed out"),
                    }
                    inner.db.refresh_replica().await;
                }
            }
        });
    }
}
