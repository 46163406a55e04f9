//! `POST /auth/logout`: revokes the bearer token itself. In force here at once, on every other
//! verifier within the revocation bound.

use std::sync::Arc;

use http::header::{HeaderValue, AUTHORIZATION};
use http::{Request, Response, StatusCode};
use serde_json::json;
use shopgate_core::service::RequestBody;

use crate::error::ApiError;
use crate::http::{json, no_store, Body};
use crate::metrics::Metrics;
use crate::openapi::LoggedOut;
use crate::AppState;
use shopgate_core::openapi::{Unauthorized, Unavailable};
use shopgate_core::revocation;

/// Revokes the bearer token itself.
#[utoipa::path(
    post,
    path = "/auth/logout",
    operation_id = "logout",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token is revoked.", body = LoggedOut),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
pub async fn logout(state: &Arc<AppState>, req: &Request<RequestBody>) -> Result<Response<Body>, ApiError> {
    let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let verified = state.check_bearer(header).map_err(|_| ApiError::Unauthorized)?;
    revocation::revoke_token(&state.auth.write()?, &verified.claims).await?;
    state.revocations.revoke_local(&verified.claims);
    Metrics::inc(&state.metrics.logouts);
    tracing::info!(user_id = %verified.user, "logged out");
    Ok(no_store(json(StatusCode::OK, &json!({"status": "logged_out"}))))
}
