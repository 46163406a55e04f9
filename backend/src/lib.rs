//! One shard's shop API: the catalog, the shard's users' orders and profiles.
//!
//! nginx sends each `/api` request to the shard that owns its user (bucket = user id mod 1000,
//! via the shared [`shopgate_core::ShardMap`]). This crate checks the token again, refuses users of
//! other shards (421), writes to the shard's primary and reads from its replica when that is safe.
//!
//! [`build`] binds the listener and sets up the database; [`serve`] runs until a shutdown future
//! completes; [`router`] is the whole HTTP surface, usable without a socket in tests.

pub(crate) mod auth;
pub(crate) mod catalog_cache;
pub mod db;
pub(crate) mod domain;
pub(crate) mod error;
pub(crate) mod extract;
pub(crate) mod fill_buckets;
pub(crate) mod group_commit;
pub mod metrics;
pub(crate) mod middleware;
pub mod openapi;
pub(crate) mod order_id;
pub(crate) mod purge;
pub(crate) mod replica;
pub(crate) mod routes;
pub(crate) mod service;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use shopgate_core::config::Config;
use shopgate_core::service::tls::{Tls, TlsServer};
use shopgate_core::service::{serve_http1, Threads};
use tokio::net::TcpListener;

use crate::db::InitError;
pub use crate::error::ApiError;
use crate::routes::{catalog, health, orders, users};
pub use crate::state::AppState;

/// Request bodies larger than this get 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// How often the JWT key file is checked for a change.
pub(crate) const KEY_WATCH_EVERY: Duration = Duration::from_secs(1);
/// An `/api` request still running after this gets 503. Defined in core, beside nginx's
/// `proxy_read_timeout` for `/api`, which `shopctl nginx render` writes from the same constant.
/// A write the request started runs on to its end regardless.
pub(crate) use shopgate_core::timeouts::REQUEST_DEADLINE;
/// How long a starting backend waits for its first load of revocations before serving anyway
/// (authenticated requests get 503 until one load succeeds).
pub(crate) const FIRST_REVOCATION_LOAD: Duration = Duration::from_secs(5);
/// How often each backend checks the auth database for a new shard map version. A move waits for
/// every backend to take each of its versions, so this bounds part of a bucket's write pause.
pub(crate) const MAP_REFRESH_EVERY: Duration = Duration::from_millis(100);
/// After the shutdown signal, in-flight requests get this long before connections are dropped.
pub const SHUTDOWN_DEADLINE: Duration = shopgate_core::service::STOP_DEADLINE;

/// Where to listen: an address to bind, or a listener bound already (port 0 in tests).
pub enum Bind {
    Addr(SocketAddr),
    Listener(TcpListener),
}

impl From<SocketAddr> for Bind {
    fn from(addr: SocketAddr) -> Self {
        Self::Addr(addr)
    }
}

impl From<TcpListener> for Bind {
    fn from(listener: TcpListener) -> Self {
        Self::Listener(listener)
    }
}

/// A built shard backend: listening, not yet serving.
pub struct App {
    listener: TcpListener,
    /// `[tls]`: TLS on the port.
    tls: Option<TlsServer>,
    state: AppState,
}

impl App {
    pub fn local_addr(&self) -> SocketAddr {
        // A bound TCP listener always has a local address.
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }
}

/// Binds the listener and sets up the shard named `shard` as its process 0: see
/// [`build_instance`].
pub async fn build(config: Config, shard: &str, bind: impl Into<Bind>) -> anyhow::Result<App> {
    build_instance(config, shard, 0, bind).await
}

/// Binds the listener and sets up process `instance` of the shard named `shard`: pools, the
/// schema check, demo catalog, order id seed. The instance is part of every order id it mints, so
/// the processes of one shard never mint the same id. A primary that is down does not stop the
/// start (requests get 503 until it answers); an unknown shard or instance, a bad database URL, a
/// listener that cannot bind or a schema this build cannot run on (`shopctl migrate` not run) does.
pub async fn build_instance(
    config: Config,
    shard: &str,
    instance: usize,
    bind: impl Into<Bind>,
) -> anyhow::Result<App> {
    let shard_config = config.shard(shard).cloned().ok_or_else(|| anyhow::Error::msg(unknown_shard(&config, shard)))?;
    shard_config.instance_addr(instance).map_err(anyhow::Error::msg)?;
    // instance_addr bounds it by the listen list, which config caps at 64.
    let instance = u8::try_from(instance).context("instance out of range")?;
    let tls = TlsServer::load(&config.tls)?;
    let listener = match bind.into() {
        Bind::Listener(listener) => listener,
        Bind::Addr(addr) => TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?,
    };
    let state = AppState::new(&config, shard_config, instance).with_context(|| format!("shard {shard}"))?;
    watch_keys(&config);
    state.spawn_map_refresh(FIRST_REVOCATION_LOAD).await;
    match state.init().await {
        Ok(()) | Err(InitError::Unavailable(_) | InitError::Control(_)) => {}
        Err(e @ InitError::Schema(_)) => return Err(e).with_context(|| format!("shard {shard}")),
    }
    state.spawn_heartbeat();
    purge::spawn(&state);
    fill_buckets::spawn(&state);
    state.spawn_revocation_refresh(FIRST_REVOCATION_LOAD).await;
    if let Some(tls) = &tls {
        tls.watch(KEY_WATCH_EVERY);
    }
    Ok(App { listener, tls, state })
}

/// Reloads the JWT keys when the key file changes and on SIGHUP, as the verifier does: tokens
/// signed with a rotated-in key must pass here too. A bad file keeps the keys in force. The
/// state's verifier shares the live keys, so it sees every reload.
fn watch_keys(config: &Config) {
    let report = |reloaded: Result<(), shopgate_core::config::ConfigError>| match reloaded {
        Ok(()) => tracing::info!("JWT keys reloaded"),
        Err(e) => tracing::error!(error = %e, "JWT key reload failed; the keys in force stay"),
    };
    config.jwt.watch(KEY_WATCH_EVERY, report);
    #[cfg(unix)]
    if let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        let jwt = config.jwt.clone();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                report(jwt.reload());
            }
        });
    }
}

/// The address process `instance` of shard `shard` listens on, or the one-line error naming the
/// shards that exist or the instances the shard has.
pub fn shard_listen(config: &Config, shard: &str, instance: usize) -> Result<SocketAddr, String> {
    config.shard(shard).ok_or_else(|| unknown_shard(config, shard))?.instance_addr(instance)
}

fn unknown_shard(config: &Config, shard: &str) -> String {
    let known: Vec<&str> = config.shards.iter().map(|s| s.name.as_str()).collect();
    format!("unknown shard {shard:?}; {} defines: {}", config.path.display(), known.join(", "))
}

/// The whole HTTP surface of a shard, with its own admission limits (`[backend]`).
pub fn router(state: AppState) -> Router {
    let admission = Arc::new(middleware::Admission::new(&state.backend, state.metrics.clone()));
    let api = Router::new()
        .route("/api/categories", get(catalog::list_categories))
        .route("/api/products", get(catalog::list_products))
        .route("/api/products/{id}", get(catalog::show_product))
        .route("/api/orders", get(orders::list).post(orders::create))
        .route("/api/orders/{id}", get(orders::show))
        .route("/api/orders/{id}/cancel", post(orders::cancel))
        .route("/api/users", post(users::create))
        .route("/api/users/me", get(users::me))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), middleware::require_ready))
        .route_layer(axum::middleware::from_fn_with_state(admission, middleware::admit))
        .route_layer(axum::middleware::from_fn(middleware::deadline));
    let ops = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics));
    api.merge(ops)
        .fallback(routes::no_route)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::observe))
        .with_state(state)
}

/// Serves `app` until `shutdown` completes, then stops without failing a request (see
/// [`shopgate_core::service::serve_http1`]: requests in flight get up to [`SHUTDOWN_DEADLINE`]),
/// lets writes still running finish (their requests gone, they still commit or roll back whole)
/// and closes the database pools.
pub async fn serve(app: App, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let App { listener, tls, state } = app;
    let router = router(state.clone());
    let handler = move |req: axum::http::Request<_>, _peer| {
        let answer = tower::ServiceExt::oneshot(router.clone(), req.map(axum::body::Body::new));
        async move { answer.await.unwrap_or_else(|never| match never {}) }
    };
    let builder = shopgate_core::service::http1_builder();
    match tls {
        Some(tls) => serve_http1(Tls::new(listener, tls), builder, Threads::Shared, handler, shutdown).await,
        None => serve_http1(listener, builder, Threads::Shared, handler, shutdown).await,
    }
    if tokio::time::timeout(Duration::from_secs(4), state.db.close()).await.is_err() {
        tracing::warn!("database pools did not close in time");
    }
    tracing::info!("stopped");
    Ok(())
}
