//! The verifier: a minimal hyper service with two jobs.
//!
//! 1. The check nginx's `auth_request` calls on every API request (`/verify`): verify the bearer
//!    token in memory and answer 200 with `X-User-Id` / `X-User-Email`, or 401. No database on
//!    this path, ever: it must stay fast while logins hash passwords on their bounded pool.
//! 2. The auth API under `/auth/`: register, token (OAuth2 password grant), me.
//!
//! `build` binds the listener (port 0 in tests) and, for nginx on this host, a unix socket
//! (`socket`), and prepares state; `serve` runs until the shutdown future resolves, then drains
//! connections with a deadline.

pub mod db;
pub(crate) mod error;
pub mod http;
pub mod metrics;
pub mod openapi;
pub(crate) mod password;
pub(crate) mod routes;
pub(crate) mod socket;
pub mod throttle;
pub mod unlocks;
pub mod users;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shopgate_core::auth_db::AuthDb;
use shopgate_core::config::Config;
use shopgate_core::control::MapWatch;
use shopgate_core::revocation::Revocations;
use shopgate_core::service::tls::{Tls, TlsServer};
use shopgate_core::service::{serve_http1, Threads};
use shopgate_core::token::{self, TokenError, Verified, Verifier};
use tokio::net::TcpListener;

/// How often the verifier looks at the shard map's version (shown only; it does not route).
const MAP_REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How often the TLS certificate's files are looked at for a renewal.
const TLS_WATCH_EVERY: Duration = Duration::from_secs(1);

/// Everything a request may need, shared by all connections.
pub struct AppState {
    pub config: Config,
    pub(crate) tokens: Verifier,
    /// The auth database: its primary, and its replica while the primary is down.
    pub auth: Arc<AuthDb>,
    pub(crate) passwords: password::PasswordPool,
    pub metrics: metrics::Metrics,
    pub(crate) revocations: Arc<Revocations>,
    /// The current shard map, for display only (`/readyz`, `/metrics`): the verifier answers
    /// with a user id and nginx's map routes it.
    pub(crate) map: Arc<MapWatch>,
    /// Password checks per account and per address (logins, password changes).
    pub(crate) guesses: throttle::GuessLimits,
    /// Registrations per address.
    pub(crate) registrations: throttle::Throttle,
    /// Operators' unlocks of `guesses`, followed from the auth database.
    pub(crate) unlocks: unlocks::Unlocks,
}

impl AppState {
    /// The whole check of a bearer header, from memory: format, signature, claims, revocation.
    pub fn check_bearer(&self, header: Option<&[u8]>) -> Result<Verified, TokenError> {
        let v = token::bearer(header).and_then(|t| self.tokens.verify(t, now()))?;
        if self.revocations.is_revoked(&v.claims) {
            return Err(TokenError::Revoked);
        }
        Ok(v)
    }
}

pub struct App {
    listener: TcpListener,
    /// `[tls]`: TLS on the TCP port (the unix socket stays plain: it is local, mode 0660).
    tls: Option<TlsServer>,
    /// nginx's way in on this host ([`socket`]); none for a verifier nginx reaches over the network.
    socket: Option<socket::Socket>,
    state: Arc<AppState>,
}

/// Connects the auth database (running migrations; from the replica, if there is one, while the
/// primary is down), prepares the password pool, binds `addr` and the unix socket that goes with
/// it (`verifier.socket_dir`).
pub async fn build(config: Config, addr: SocketAddr) -> anyhow::Result<App> {
    let auth = db::connect_auth(&config.verifier).await?;
    let passwords = password::PasswordPool::new(password::PoolSettings::from(&config.verifier))?;
    if !config.jwt.keys().can_sign() {
        anyhow::bail!("the JWT key set has no signing key (set signing_kid to a key with its private part)");
    }
    let revocations = Arc::new(Revocations::new(&config.jwt));
    let loaded = auth.read(|db| {
        let revocations = &revocations;
        async move { revocations.refresh(&db, now()).await }
    });
    loaded.await.context("loading revocations")?;
    let unlocks = auth.read(|db| async move { unlocks::Unlocks::load(&db).await }).await;
    let unlocks = unlocks.context("loading login unlocks")?;
    let tls = TlsServer::load(&config.tls)?;
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot bind {addr}"))?;
    // Named after the port bound (port 0 in tests), after the TCP port is ours: another verifier
    // of that port would have it.
    let bound = SocketAddr::new(addr.ip(), listener.local_addr()?.port());
    let socket = match config.verifier.socket_path(bound) {
        Some(path) => Some(socket::Socket::bind(&path, config.nginx.user.as_deref())?),
        None if config.verifier.trusted_proxies.is_empty() => {
            tracing::warn!(
                addr = %bound,
                "no unix socket and no verifier.trusted_proxies: nginx's X-Real-IP is believed from nobody, so \
                 every client through nginx shares nginx's address in the per-address limits"
            );
            None
        }
        None => None,
    };
    let tokens = config.jwt.verifier();
    let v = &config.verifier;
    let window = Duration::from_secs(v.login_window_seconds);
    let metrics = metrics::Metrics::new(&passwords, shopgate_core::certs::files(&config), &tokens);
    let state = Arc::new(AppState {
        guesses: throttle::GuessLimits::new(v.login_max_failures_per_account, v.login_max_failures_per_address, window),
        registrations: throttle::Throttle::new(
            v.register_max_per_address,
            Duration::from_secs(v.register_window_seconds),
        ),
        config,
        tokens,
        auth,
        passwords,
        metrics,
        revocations,
        unlocks,
        map: Arc::new(MapWatch::new()),
    });
    spawn_revocation_refresh(state.clone());
    spawn_map_refresh(&state);
    watch_keys(&state);
    if let Some(tls) = &tls {
        tls.watch(TLS_WATCH_EVERY);
    }
    Ok(App { listener, tls, socket, state })
}

/// Follows the shard map's version once a second, for display.
fn spawn_map_refresh(state: &Arc<AppState>) {
    let (watch, auth, seed) = (state.map.clone(), state.auth.clone(), state.config.shard_map.clone());
    tokio::spawn(watch.keep_fresh(auth, seed, MAP_REFRESH_EVERY, |e| {
        tracing::debug!(error = %e, "shard map refresh failed");
    }));
}

/// Reloads revocations every `revocation_refresh_ms` (a failed refresh keeps the last snapshot:
/// the check path never waits for the database), and operators' login unlocks on the same
/// schedule, so both are in force within the revocation bound; purges old rows of both hourly
/// (not while the primary is down: the replica takes no writes).
fn spawn_revocation_refresh(state: Arc<AppState>) {
    let every = state.config.verifier.revocation_refresh();
    let counted = state.clone();
    tokio::spawn(state.revocations.clone().keep_fresh(state.auth.clone(), every, move |e| {
        metrics::Metrics::inc(&counted.metrics.revocation_refresh_failed);
        tracing::warn!(error = %e, "revocation refresh failed; keeping the last snapshot");
    }));
    let following = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (unlocks, guesses) = (&following.unlocks, &following.guesses);
            match following.auth.read(|db| async move { unlocks.refresh(&db, guesses).await }).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(accounts = n, "login throttle unlocked by an operator"),
                Err(e) => tracing::warn!(error = %e, "reading login unlocks failed; trying again next time"),
            }
        }
    });
    tokio::spawn(async move {
        let mut hourly = tokio::time::interval(Duration::from_secs(3600));
        loop {
            hourly.tick().await;
            let Ok(db) = state.auth.write() else { continue };
            if let Err(e) = state.revocations.purge_expired(&db, now()).await {
                tracing::warn!(error = %e, "purging expired revocations failed");
            }
            if let Err(e) = unlocks::purge_old(&db).await {
                tracing::warn!(error = %e, "purging old login unlocks failed");
            }
        }
    });
}

/// Reloads keys when the key file changes and on SIGHUP; a bad file keeps the keys in force.
fn watch_keys(state: &Arc<AppState>) {
    let report = |r: Result<(), shopgate_core::config::ConfigError>| match r {
        Ok(()) => tracing::info!("JWT keys reloaded"),
        Err(e) => tracing::error!(error = %e, "JWT key reload failed; the keys in force stay"),
    };
    state.config.jwt.watch(Duration::from_secs(1), report);
    #[cfg(unix)]
    {
        let jwt = state.config.jwt.clone();
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    report(jwt.reload());
                }
            });
        }
    }
}

impl App {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// The unix socket it also serves, for nginx on this host.
    pub fn socket_path(&self) -> Option<&std::path::Path> {
        self.socket.as_ref().map(|s| s.file.path.as_path())
    }

    /// Serves, on its TCP address and its unix socket, until `shutdown` resolves, then stops both
    /// without failing a request (see [`shopgate_core::service::serve_http1`]: requests in flight
    /// get up to [`STOP_DEADLINE`](shopgate_core::service::STOP_DEADLINE)), removes the socket
    /// file and closes the database pool.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let mut builder = shopgate_core::service::http1_builder();
        builder.max_buf_size(64 * 1024);
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let stopped = |mut stopping: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        let state = self.state.clone();
        let handler = move |req, peer| routes::handle(state.clone(), routes::Peer::Tcp(peer), req);
        let (listener, tls, tcp_builder, tcp_stopped) =
            (self.listener, self.tls, builder.clone(), stopped(stopping.clone()));
        let tcp = async move {
            match tls {
                Some(tls) => {
                    serve_http1(Tls::new(listener, tls), tcp_builder, Threads::Pinned, handler, tcp_stopped).await
                }
                None => serve_http1(listener, tcp_builder, Threads::Pinned, handler, tcp_stopped).await,
            }
        };
        let state = self.state.clone();
        let unix = async move {
            let Some(socket::Socket { listener, file }) = self.socket else { return };
            let handler = move |req, ()| routes::handle(state.clone(), routes::Peer::Nginx, req);
            serve_http1(listener, builder, Threads::Pinned, handler, stopped(stopping)).await;
            file.remove();
        };
        let signal = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        tokio::join!(signal, tcp, unix);
        if tokio::time::timeout(Duration::from_secs(2), self.state.auth.close()).await.is_err() {
            tracing::warn!("the database pool did not close in time");
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Unix time in seconds.
pub use shopgate_core::time::unix_now as now;
