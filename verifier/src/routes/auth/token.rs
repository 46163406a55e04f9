//! `POST /auth/token`: the OAuth2 password grant (RFC 6749 sections 4.3 and 5).
//!
//! Form fields `username` (the email) and `password`; `grant_type` absent, empty or `password`
//! (the original design's client sends it empty); `scope`, `client_id`, `client_secret` accepted
//! and ignored. A wrong password and an unknown email get the same answer in about the same time:
//! both verify against a hash.

use std::net::IpAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use serde::Serialize;
use shopgate_core::service::RequestBody;
use shopgate_core::token::{issued_at, new_claims};
use shopgate_core::Email;

use crate::error::ApiError;
use crate::http::{json, no_store, read_body, Body};
use crate::metrics::Metrics;
use crate::openapi::{OAuthError, TokenForm};
use crate::users;
use crate::AppState;
use shopgate_core::openapi::{PayloadTooLarge, TooManyRequests, Unavailable};

/// A token: send it as `Authorization: Bearer <access_token>`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TokenResponse {
    /// A JWT.
    access_token: String,
    /// Always `bearer`.
    #[schema(value_type = String, pattern = "^bearer$", example = "bearer")]
    token_type: &'static str,
    /// Seconds until it expires.
    #[schema(example = 3600)]
    expires_in: i64,
}

fn oauth(status: StatusCode, code: &'static str, message: &str) -> ApiError {
    ApiError::OAuth { status, code, message: message.to_owned() }
}

fn invalid_request(message: &str) -> ApiError {
    oauth(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// Logs in: the OAuth2 password grant.
#[utoipa::path(
    post,
    path = "/auth/token",
    operation_id = "token",
    tag = "auth",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Logged in.", body = TokenResponse,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 400, description = "`invalid_request` (a missing or repeated field, or not a form) or `unsupported_grant_type`.", body = OAuthError),
        (status = 401, description = "`invalid_grant`: wrong email or password (the same answer whether or not the email exists).", body = OAuthError),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    )
)]
pub async fn token(
    state: &Arc<AppState>,
    address: IpAddr,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let body = match read_body(req, "application/x-www-form-urlencoded").await {
        Ok(b) => b,
        Err(ApiError::UnsupportedMediaType(_)) => {
            return Err(invalid_request("send the form as application/x-www-form-urlencoded"))
        }
        Err(e) => return Err(e),
    };
    let (mut username, mut password, mut grant_type) = (None, None, None);
    for (k, v) in form_urlencoded::parse(&body) {
        let slot = match k.as_ref() {
            "username" => &mut username,
            "password" => &mut password,
            "grant_type" => &mut grant_type,
            _ => continue,
        };
        if slot.replace(v.into_owned()).is_some() {
            return Err(invalid_request(&format!("parameter {k} given more than once")));
        }
    }
    match grant_type.as_deref() {
        None | Some("" | "password") => {}
        Some(_) => {
            return Err(oauth(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=password is supported",
            ))
        }
    }
    let (Some(username), Some(password)) = (username.filter(|u| !u.is_empty()), password.filter(|p| !p.is_empty()))
    else {
        return Err(invalid_request("username and password are required"));
    };

    // One password check reserved before any hashing, per account (known or not, so the answer
    // says nothing about which emails exist) and per client address.
    let attempt = state.guesses.reserve(&username, address).map_err(|retry_after| {
        Metrics::inc(&state.metrics.logins_throttled);
        ApiError::TooManyRequests { retry_after }
    })?;

    // An email that cannot exist, or a password no account can have, still costs a lookup and a
    // hash, so its answer time says nothing.
    let user = match Email::parse(&username) {
        Ok(email) => {
            let email = &email;
            state.auth.read(|db| async move { users::by_email(&db, email).await }).await?
        }
        Err(_) => None,
    };
    let password: String = password.chars().take(crate::password::MAX_LEN + 1).collect();
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let matched = state.passwords.verify(password, hash).await?;
    let user = match user {
        Some(u) if matched && u.is_active => u,
        _ => {
            Metrics::inc(&state.metrics.logins_failed);
            attempt.failed();
            return Err(oauth(StatusCode::UNAUTHORIZED, "invalid_grant", "wrong email or password"));
        }
    };
    attempt.succeeded();
    let jwt = &state.config.jwt;
    // Stamped no earlier than the user's revocation cut-off, so a token issued in the same second
    // as a password change is not caught by it.
    let iat = issued_at(crate::now(), user.tokens_valid_after);
    let claims = new_claims(user.id, &user.email, &jwt.policy, iat, jwt.policy.ttl_seconds);
    let access_token = jwt.sign(&claims).ok_or_else(|| anyhow::anyhow!("the key set has no signing key"))?;
    Metrics::inc(&state.metrics.logins_ok);
    tracing::info!(user_id = %user.id, "token issued");
    Ok(no_store(json(
        StatusCode::OK,
        &TokenResponse { access_token, token_type: "bearer", expires_in: jwt.policy.ttl_seconds },
    )))
}
