//! `POST /auth/change-password` JSON `{current_password, new_password}`: sets a new password and
//! revokes every token of the user issued until now, this one included. Log in again after.

use std::sync::Arc;

use http::header::{HeaderValue, AUTHORIZATION};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::parse_json;
use crate::error::ApiError;
use crate::http::{json, no_store, read_body, Body};
use crate::password::Password;
use crate::{users, AppState};

#[derive(Deserialize)]
struct ChangeBody {
    current_password: String,
    new_password: String,
}

pub async fn change_password(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let verified = state.check_bearer(header).map_err(|_| ApiError::Unauthorized)?;
    let body: ChangeBody = parse_json(&read_body(req, "application/json").await?)?;
    let new_password =
        Password::parse(body.new_password).map_err(|m| ApiError::Invalid { code: "weak_password", message: m })?;
    let user = users::by_id(&state.db, verified.user).await?.filter(|u| u.is_active).ok_or(ApiError::Unauthorized)?;
    let current: String = body.current_password.chars().take(crate::password::MAX_LEN + 1).collect();
    if !state.passwords.verify(current, Some(user.password_hash.clone())).await? {
        return Err(ApiError::OAuth {
            status: StatusCode::FORBIDDEN,
            code: "wrong_password",
            message: "the current password is wrong".into(),
        });
    }
    let hash = state.passwords.hash(new_password).await?;
    // Every token issued up to and including this second is revoked.
    let cutoff = crate::now() + 1;
    users::set_password(&state.db, user.id, &hash, cutoff).await?;
    state.revocations.cutoff_local(user.id.get(), cutoff);
    tracing::info!(user_id = %user.id, "password changed; earlier tokens revoked");
    Ok(no_store(json(StatusCode::OK, &json!({"status": "password_changed", "message": "log in again with the new password"}))))
}
