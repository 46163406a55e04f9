//! The router: one match on method and path, one file per resource.

pub mod auth;
pub mod check;
pub mod health;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use tracing::Instrument as _;

use crate::error::ApiError;
use crate::http::Body;
use crate::AppState;

/// The check path nginx's `auth_request` calls. Not under `/auth/`, so nginx's `/auth/` proxy
/// can never expose it.
pub const CHECK_PATH: &str = "/verify";

pub async fn handle(state: Arc<AppState>, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    // The hot path first, with no span and no allocation beyond the answer.
    if req.uri().path() == CHECK_PATH {
        return check::check(&state, &req);
    }
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64)
        .unwrap_or("-")
        .to_owned();
    let span = tracing::info_span!("request", request_id = %request_id, method = %req.method(), path = %req.uri().path());
    async move {
        let path = req.uri().path().to_owned();
        let result = route(&state, peer, &path, req).await;
        let resp = result.unwrap_or_else(ApiError::into_response);
        tracing::info!(status = resp.status().as_u16(), "handled");
        resp
    }
    .instrument(span)
    .await
}

/// Each path once; a known path with the wrong method is 405, an unknown path 404.
async fn route(state: &Arc<AppState>, peer: SocketAddr, path: &str, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    let allow = |want: Method| if method == want { Ok(()) } else { Err(ApiError::MethodNotAllowed { allow: want }) };
    match path {
        "/auth/register" => {
            allow(Method::POST)?;
            auth::register::register(state, client_address(state, peer, &req), req).await
        }
        "/auth/token" => {
            allow(Method::POST)?;
            auth::token::token(state, client_address(state, peer, &req), req).await
        }
        "/auth/me" => {
            allow(Method::GET)?;
            auth::me::me(state, &req).await
        }
        "/auth/logout" => {
            allow(Method::POST)?;
            auth::logout::logout(state, &req).await
        }
        "/auth/change-password" => {
            allow(Method::POST)?;
            auth::change_password::change_password(state, client_address(state, peer, &req), req).await
        }
        "/auth/jwks.json" => allow(Method::GET).map(|()| auth::jwks::jwks(state)),
        "/healthz" => allow(Method::GET).map(|()| health::healthz()),
        "/readyz" => {
            allow(Method::GET)?;
            Ok(health::readyz(state).await)
        }
        "/metrics" => allow(Method::GET).map(|()| health::metrics(state)),
        _ => Err(ApiError::NotFound),
    }
}

/// The client's address: nginx's `X-Real-IP` when the connection comes from a trusted proxy
/// (`verifier.trusted_proxies`; nginx overwrites any client-sent copy), the peer address otherwise.
fn client_address(state: &AppState, peer: SocketAddr, req: &Request<Incoming>) -> IpAddr {
    if state.config.verifier.trusted_proxies.contains(&peer.ip()) {
        if let Some(ip) = req.headers().get("x-real-ip").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()) {
            return ip;
        }
    }
    peer.ip()
}
