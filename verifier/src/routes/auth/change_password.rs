//! `POST /auth/change-password` JSON `{current_password, new_password}`: sets a new password and
//! revokes every token of the user issued until now, this one included. Log in again after.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderValue, AUTHORIZATION};
use http::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use shopgate_core::service::RequestBody;

use super::parse_json;
use crate::error::ApiError;
use crate::http::{json, no_store, read_body, Body};
use crate::openapi::{OAuthError, PasswordChanged};
use crate::password::{Lane, Password};
use crate::{users, AppState};
use shopgate_core::openapi::{PayloadTooLarge, TooManyRequests, Unauthorized, Unavailable, UnsupportedMediaType};
use shopgate_core::token;
use shopgate_core::ErrorBody;

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct ChangeBody {
    current_password: String,
    /// The same policy as at registration: format `password` (see `POST /auth/register`).
    #[schema(format = Password, min_length = 8, max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    new_password: String,
}

/// Sets a new password and revokes every token of the user issued until now, this one included.
#[utoipa::path(
    post,
    path = "/auth/change-password",
    operation_id = "change_password",
    tag = "auth",
    security(("bearer" = [])),
    request_body = ChangeBody,
    responses(
        (status = 200, description = "Changed; log in again.", body = PasswordChanged),
        (status = 400, description = "Malformed JSON, a wrong type or missing field, or a new password that breaks the policy (`weak_password`).", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 403, description = "`wrong_password`: the current password is wrong.", body = OAuthError),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn change_password(
    state: &Arc<AppState>,
    address: IpAddr,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let verified = state.check_bearer(header).map_err(|_| ApiError::Unauthorized)?;
    let body: ChangeBody = parse_json(&read_body(req, "application/json").await?)?;
    let new_password = Password::parse(body.new_password, &[verified.claims.email.as_str()])
        .map_err(|m| ApiError::Invalid { code: "weak_password", message: m })?;
    // Refused before any hashing while the primary is down: the new hash could not be stored.
    let db = state.auth.write()?;
    let user = users::by_id(&db, verified.user).await?.filter(|u| u.is_active).ok_or(ApiError::Unauthorized)?;
    // A guess at the current password counts against the same limits as a login.
    let attempt =
        state.guesses.reserve(&user.email, address).map_err(|retry_after| ApiError::TooManyRequests { retry_after })?;
    let current: String = body.current_password.chars().take(crate::password::MAX_LEN + 1).collect();
    if !state.passwords.verify(current, Some(user.password_hash.clone())).await? {
        attempt.failed();
        return Err(ApiError::OAuth {
            status: StatusCode::FORBIDDEN,
            code: "wrong_password",
            message: "the current password is wrong".into(),
        });
    }
    attempt.succeeded();
    let hash = state.passwords.hash(Lane::Login, new_password).await?;
    // Every token issued up to and including this second is revoked.
    let cutoff = token::revoke_all_cutoff(user.tokens_valid_after, crate::now());
    users::set_password(&db, user.id, &hash, cutoff).await?;
    state.revocations.cutoff_local(user.id.get(), cutoff);
    tracing::info!(user_id = %user.id, "password changed; earlier tokens revoked");
    Ok(no_store(json(
        StatusCode::OK,
        &json!({"status": "password_changed", "message": "log in again with the new password"}),
    )))
}
