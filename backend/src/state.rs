//! What every handler shares: this shard's config, the token verifier, the databases with their
//! read/write policy, the order id generator and the metrics. Cheap to clone.

use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde::Serialize;
use shopgate_core::auth_db::AuthDb;
use shopgate_core::config::{BackendConfig, Config, ShardConfig};
use shopgate_core::control::MapWatch;
use shopgate_core::revocation::Revocations;
use shopgate_core::shardmap::Admission;
use shopgate_core::token::Verifier;
use shopgate_core::{ShardMap, ShardName, UserId};
use sqlx::AnyPool;

use crate::catalog_cache::{Answer, CatalogCache, Key};
use crate::db::{self, Db, InitError};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::service::orders::Orders;
use crate::service::Shard;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub(crate) shard: ShardConfig,
    /// Capacity and idempotency retention, the same for every shard.
    pub backend: BackendConfig,
    /// The config's map: what the auth database is seeded with if it holds none yet.
    pub(crate) seed_map: ShardMap,
    /// The current map, from the auth database ([`shopgate_core::control`]), kept fresh.
    pub(crate) map: Arc<MapWatch>,
    pub verifier: Verifier,
    pub db: Db,
    /// Order ids and the orders waiting to share a transaction ([`crate::service::orders`]).
    pub(crate) orders: Orders,
    /// The catalog's answers, each at most `[backend] catalog_cache_ms` old.
    catalog: CatalogCache,
    pub metrics: Arc<Metrics>,
    /// Revoked tokens and users' cut-offs, from the auth database: a token nginx would refuse
    /// is refused here too when a backend port is reached directly.
    pub(crate) revocations: Arc<Revocations>,
    /// The auth database, read for revocations and the shard map: its primary, or its replica
    /// while the primary is down.
    pub(crate) auth_db: Arc<AuthDb>,
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
    /// The state of process `instance` (its place in the shard's `listen` list) of `shard`.
    pub fn new(config: &Config, shard: ShardConfig, instance: u8) -> anyhow::Result<Self> {
        let verifier = config.jwt.verifier();
        let metrics = Arc::new(Metrics::new(shard.name.as_str(), shopgate_core::certs::files(config), &verifier));
        let db = Db::connect(&shard, instance, metrics.clone())?;
        Ok(Self(Arc::new(Inner {
            orders: Orders::new(shard.number, instance),
            catalog: CatalogCache::new(config.backend.catalog_cache()),
            shard,
            backend: config.backend.clone(),
            seed_map: config.shard_map.clone(),
            map: Arc::new(MapWatch::new()),
            verifier,
            db,
            metrics,
            revocations: Arc::new(Revocations::new(&config.jwt)),
            auth_db: Arc::new(auth_db(config)?),
            revocation_refresh: config.verifier.revocation_refresh(),
            init_retry_every: config.backend.init_retry(),
            ready: AtomicBool::new(false),
            last_init_attempt: tokio::sync::Mutex::new(None),
        })))
    }

    pub fn shard_name(&self) -> &ShardName {
        &self.shard.name
    }

    /// How this shard treats `user`'s request, by the current map (the one nginx's is rendered
    /// from); 503 until a map is loaded.
    pub(crate) fn admit(&self, user: UserId) -> Result<Admission, ApiError> {
        let map = self.map.get().ok_or(ApiError::NotReady)?;
        Ok(map.admit(user, &self.shard.name))
    }

    /// The map version this process routes with, if one is loaded.
    pub fn map_version(&self) -> Option<u64> {
        self.map.version()
    }

    /// The primary.
    pub fn db_write(&self) -> &AnyPool {
        self.db.db_write()
    }

    /// The parts the service layer works with, for one call ([`crate::service`]).
    pub(crate) fn service(&self) -> Shard<'_> {
        Shard { db: &self.db, metrics: &self.metrics, orders: &self.orders }
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

    /// The catalog's answer for `key`, serialized: kept in memory if it is at most
    /// `[backend] catalog_cache_ms` old, else read by `query` (on the replica when it is usable:
    /// no user's own writes change the catalog) and kept ([`crate::catalog_cache`]). `None`:
    /// there is no such thing.
    pub(crate) async fn catalog_read<T, F, Fut>(&self, key: Key, query: F) -> Result<Option<Arc<Answer>>, ApiError>
    where
        T: Serialize,
        F: Fn(AnyPool) -> Fut,
        Fut: Future<Output = sqlx::Result<Option<T>>>,
    {
        let (answer, outcome) = self
            .catalog
            .get(key, || async {
                let found = self.db.read_public(query).await?;
                let body = found.map(|v| serde_json::to_vec(&v)).transpose().map_err(anyhow::Error::from)?;
                Ok::<_, ApiError>(body.map(Bytes::from))
            })
            .await?;
        self.metrics.catalog_answer(outcome);
        Ok(answer)
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

    /// The schema check, demo catalog, order id seed, the write fences. Logged; the caller decides
    /// whether to go on.
    async fn try_init(&self) -> Result<(), InitError> {
        let initialised = async {
            let max_order_id = self.db.init().await?;
            // The fences start as the current map says (once, on a shard database that has none).
            let map = match self.map.get() {
                Some(map) => (*map).clone(),
                None => {
                    let seed = &self.seed_map;
                    let loaded = self.auth_db.read(|db| async move {
                        shopgate_core::control::load_or_seed(&db, seed).await.map_err(|e| match e {
                            shopgate_core::control::ControlError::Db(e) => e,
                            other => sqlx::Error::Protocol(other.to_string()),
                        })
                    });
                    loaded.await.map_err(|e| InitError::Control(e.to_string()))?
                }
            };
            shopgate_store::fence::fill_if_empty(self.db_write(), self.db.dialect(), &map.buckets_of(&self.shard.name))
                .await?;
            Ok::<_, InitError>(max_order_id)
        };
        match initialised.await {
            Ok(max_order_id) => {
                self.orders.ids.observe_max(max_order_id);
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

    /// Keeps the shard map fresh from the auth database (checked every [`crate::MAP_REFRESH_EVERY`])
    /// and waits up to `first_within` for the first load. Until then `/api` requests get 503.
    pub async fn spawn_map_refresh(&self, first_within: Duration) {
        let shard = self.shard.name.clone();
        self.auth_db.start_probes().await;
        let (watch, auth, seed) = (self.map.clone(), self.auth_db.clone(), self.seed_map.clone());
        tokio::spawn(watch.keep_fresh(auth, seed, crate::MAP_REFRESH_EVERY, move |e| {
            tracing::warn!(%shard, error = %e, "shard map refresh failed; keeping the map in force");
        }));
        let started = Instant::now();
        while !self.map.is_loaded() && started.elapsed() < first_within {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Keeps the revocations fresh, as every verifier does, and waits up to `first_within` for the
    /// first load (the verifier may still be creating the auth database). Until one load has
    /// succeeded, authenticated requests get 503: nothing is known about revocations yet.
    pub async fn spawn_revocation_refresh(&self, first_within: Duration) {
        let shard = self.shard.name.clone();
        self.auth_db.start_probes().await;
        tokio::spawn(self.revocations.clone().keep_fresh(self.auth_db.clone(), self.revocation_refresh, move |e| {
            tracing::warn!(%shard, error = %e, "revocation refresh failed; keeping the last snapshot");
        }));
        let started = Instant::now();
        while !self.revocations.is_loaded() && started.elapsed() < first_within {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every second: with a replica, stamps the primary's heartbeat and then probes the replica,
    /// so its lag is measured even when nobody reads; without one, pings the primary. Either way
    /// `shop_primary_up` says whether the primary answered. Stops when the state is dropped.
    pub(crate) fn spawn_heartbeat(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(db::BEAT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let primary_up = if inner.db.has_replica() && inner.ready.load(Ordering::Acquire) {
                    // Bounded: a primary that hangs must not stop the replica's probes.
                    let up = match tokio::time::timeout(db::BEAT_EVERY * 2, inner.db.beat()).await {
                        Ok(Ok(())) => true,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "heartbeat to the primary failed");
                            false
                        }
                        Err(_) => {
                            tracing::debug!("heartbeat to the primary timed out");
                            false
                        }
                    };
                    inner.db.refresh_replica().await;
                    up
                } else {
                    inner.db.ping_primary(db::BEAT_EVERY).await.is_ok()
                };
                inner.metrics.set_primary_up(primary_up);
            }
        });
    }
}

/// The auth database's URLs for the backends: its primary and, if configured, its replica.
/// The auth database as a backend reads it ([`Config::backend_auth_urls`]: its reader on the
/// primary and the replica): lazy pools, never migrated; with a
/// replica, roles probed ([`AuthDb`]) from the first refresh spawned on.
fn auth_db(config: &Config) -> anyhow::Result<AuthDb> {
    Ok(match config.backend_auth_urls() {
        (primary, None) => AuthDb::single(db::auth_pool(primary)?),
        (primary, Some(replica)) => {
            AuthDb::pair(db::auth_pool(primary)?, db::auth_pool(replica)?, config.verifier.replica_max_lag())
        }
    })
}
