//! The router: one table of paths and their methods, one file per resource.

pub(crate) mod auth;
pub(crate) mod check;
pub(crate) mod health;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response};
use shopgate_core::http::{HttpError, NO_ROUTE};
use shopgate_core::metrics;
use shopgate_core::service::RequestBody;
use tracing::Instrument as _;

use crate::error::ApiError;
use crate::http::Body;
use crate::metrics::Metrics;
use crate::AppState;

/// The check path nginx's `auth_request` calls. Not under `/auth/`, so nginx's `/auth/` proxy
/// can never expose it.
pub(crate) const CHECK_PATH: &str = "/verify";

/// Each path the verifier serves once, with the one method it answers (the check path is
/// matched first, in [`handle`]). These paths are also the `route` label of the metrics.
static ROUTES: [(&str, Method); 9] = [
    ("/auth/register", Method::POST),
    ("/auth/token", Method::POST),
    ("/auth/me", Method::GET),
    ("/auth/logout", Method::POST),
    ("/auth/change-password", Method::POST),
    ("/auth/jwks.json", Method::GET),
    ("/healthz", Method::GET),
    ("/readyz", Method::GET),
    ("/metrics", Method::GET),
];

/// Where a request came from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Peer {
    /// nginx, over the verifier's unix socket: nobody else can connect there (crate::socket).
    Nginx,
    /// A TCP peer: nginx on another host, or any process that can reach the port.
    Tcp(SocketAddr),
}

pub(crate) async fn handle(state: Arc<AppState>, peer: Peer, req: Request<RequestBody>) -> Response<Body> {
    let started = Instant::now();
    // The hot path first: no span, no request id, no allocation beyond the answer, and metrics
    // through handles made at start. It answers any method (nginx sends GET: `proxy_method GET`),
    // all counted as GET.
    if req.uri().path() == CHECK_PATH {
        let resp = check::check(&state, &req);
        state.metrics.check.observe(resp.status().as_u16(), started);
        return resp;
    }
    let request_id = shopgate_core::http::request_id(req.headers());
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %req.method(), path = %req.uri().path());
    async move {
        let method = req.method().clone();
        let found = ROUTES.iter().find(|(path, _)| *path == req.uri().path());
        let result = match found {
            None => Err(ApiError::Http(NO_ROUTE)),
            Some((_, allow)) if *allow != method => {
                Err(ApiError::Http(HttpError::MethodNotAllowed { allow: Some(allow.as_str()) }))
            }
            Some((path, _)) => route(&state, peer, path, req).await,
        };
        if matches!(result, Err(ApiError::Busy)) {
            Metrics::inc(&state.metrics.hash_busy);
        }
        let mut resp = result.unwrap_or_else(ApiError::into_response);
        let route = found.map_or(metrics::UNMATCHED, |(path, _)| path);
        state.metrics.http.observe(route, &method, resp.status().as_u16(), started);
        shopgate_core::http::echo_request_id(resp.headers_mut(), &request_id);
        tracing::info!(status = resp.status().as_u16(), "handled");
        resp
    }
    .instrument(span)
    .await
}

/// Runs the handler of `path`, one of [`ROUTES`], whose method the request has.
async fn route(
    state: &Arc<AppState>,
    peer: Peer,
    path: &str,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    match path {
        "/auth/register" => auth::register::register(state, client_address(state, peer, &req), req).await,
        "/auth/token" => auth::token::token(state, client_address(state, peer, &req), req).await,
        "/auth/me" => auth::me::me(state, &req).await,
        "/auth/logout" => auth::logout::logout(state, &req).await,
        "/auth/change-password" => {
            auth::change_password::change_password(state, client_address(state, peer, &req), req).await
        }
        "/auth/jwks.json" => Ok(auth::jwks::jwks(state)),
        "/healthz" => Ok(health::healthz()),
        "/readyz" => Ok(health::readyz(state).await),
        "/metrics" => Ok(health::metrics(state)),
        _ => Err(ApiError::Http(NO_ROUTE)),
    }
}

/// The client's address: nginx's `X-Real-IP` (nginx overwrites any client-sent copy) when the
/// request is nginx's: it came over the unix socket, or from a TCP peer in
/// `verifier.trusted_proxies` (nginx on another host). Otherwise the TCP peer's address: loopback
/// is never believed by address, as any local process connects from there.
fn client_address(state: &AppState, peer: Peer, req: &Request<RequestBody>) -> IpAddr {
    let real_ip = || req.headers().get("x-real-ip").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    match peer {
        // Without the header: a process on this host.
        Peer::Nginx => real_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        Peer::Tcp(peer) if state.config.verifier.trusted_proxies.contains(&peer.ip()) => real_ip().unwrap_or(peer.ip()),
        Peer::Tcp(peer) => peer.ip(),
    }
}
