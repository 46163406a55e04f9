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
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let result = match (method.clone(), path.as_str()) {
            (Method::POST, "/auth/register") => auth::register::register(&state, req).await,
            (Method::POST, "/auth/token") => auth::token::token(&state, client_address(peer, &req), req).await,
            (Method::GET, "/auth/me") => auth::me::me(&state, &req).await,
            (Method::POST, "/auth/logout") => auth::logout::logout(&state, &req).await,
            (Method::POST, "/auth/change-password") => auth::change_password::change_password(&state, req).await,
            (Method::GET, "/auth/jwks.json") => Ok(auth::jwks::jwks(&state)),
            (Method::GET, "/healthz") => Ok(health::healthz()),
            (Method::GET, "/readyz") => Ok(health::readyz(&state).await),
            (Method::GET, "/metrics") => Ok(health::metrics(&state)),
            (
                _,
                "/auth/register" | "/auth/token" | "/auth/me" | "/auth/logout" | "/auth/change-password"
                | "/auth/jwks.json" | "/healthz" | "/readyz" | "/metrics",
            ) => {
                Err(ApiError::MethodNotAllowed)
            }
            _ => Err(ApiError::NotFound),
        };
        let resp = result.unwrap_or_else(ApiError::into_response);
        tracing::info!(status = resp.status().as_u16(), "handled");
        resp
    }
    .instrument(span)
    .await
}

/// The client's address: nginx's `X-Real-IP` when the connection comes from nginx on this host
/// (nginx overwrites any client-sent copy), the peer address otherwise.
fn client_address(peer: SocketAddr, req: &Request<Incoming>) -> IpAddr {
    if peer.ip().is_loopback() {
        if let Some(ip) = req.headers().get("x-real-ip").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()) {
            return ip;
        }
    }
    peer.ip()
}
