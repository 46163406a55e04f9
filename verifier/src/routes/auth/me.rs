//! `GET /auth/me`: the account behind the bearer token.

use std::sync::Arc;

use http::header::{HeaderValue, AUTHORIZATION};
use http::{Request, Response, StatusCode};
use shopgate_core::service::RequestBody;

use super::UserView;
use crate::error::ApiError;
use crate::http::{json, Body};
use crate::users;
use crate::AppState;
use shopgate_core::openapi::{Unauthorized, Unavailable};

/// The account behind the bearer token.
#[utoipa::path(
    get,
    path = "/auth/me",
    operation_id = "me",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account.", body = UserView),
        (status = 401, response = Unauthorized),
        (status = 503, response = Unavailable),
    )
)]
pub async fn me(state: &Arc<AppState>, req: &Request<RequestBody>) -> Result<Response<Body>, ApiError> {
    let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let verified = state.check_bearer(header).map_err(|_| ApiError::Unauthorized)?;
    let user = state
        .auth
        .read(|db| async move { users::by_id(&db, verified.user).await })
        .await?
        .filter(|u| u.is_active)
        .ok_or(ApiError::Unauthorized)?;
    Ok(json(StatusCode::OK, &UserView::from(&user)))
}
