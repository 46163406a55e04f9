//! `POST /auth/register` JSON `{email, password}` -> 201 the new user; 409 if the email is taken.
//! At most `register_max_per_address` registrations per client address and window (429 past
//! that), counted before the password is hashed; their hashing waits behind logins.

use std::net::IpAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use serde::Deserialize;
use shopgate_core::service::RequestBody;
use shopgate_core::Email;

use super::{parse_json, UserView};
use crate::error::ApiError;
use crate::http::{json, read_body, Body};
use crate::metrics::Metrics;
use crate::password::{Lane, Password};
use crate::users::{self, Created};
use crate::AppState;
use shopgate_core::openapi::{PayloadTooLarge, TooManyRequests, Unavailable, UnsupportedMediaType};
use shopgate_core::ErrorBody;

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"email": "ann@example.com", "password": "Corr3ct-Horse!"}))]
pub(crate) struct RegisterBody {
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// 8-128 characters, no control characters, with an upper-case letter, a lower-case letter,
    /// a digit and a special character, and not easily guessed (zxcvbn score 3 or more, the email
    /// counted as known): format `password`.
    #[schema(format = Password, min_length = 8, max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    password: String,
}

/// Creates an account.
#[utoipa::path(
    post,
    path = "/auth/register",
    operation_id = "register",
    tag = "auth",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "The new account.", body = UserView),
        (status = 400, description = "Malformed JSON (`malformed_json`), a wrong type or missing field (`invalid_body`), a bad email (`invalid_email`) or a password that breaks the policy (`weak_password`; the message names the rule).", body = ErrorBody),
        (status = 409, description = "An account with this email exists.", body = ErrorBody),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    )
)]
pub async fn register(
    state: &Arc<AppState>,
    address: IpAddr,
    req: Request<RequestBody>,
) -> Result<Response<Body>, ApiError> {
    let body: RegisterBody = parse_json(&read_body(req, "application/json").await?)?;
    let email = Email::parse(&body.email).map_err(|m| ApiError::Invalid { code: "invalid_email", message: m })?;
    let password = Password::parse(body.password, &[email.as_str()])
        .map_err(|m| ApiError::Invalid { code: "weak_password", message: m })?;
    // Refused before the hashing and the address's count: nothing can be stored meanwhile.
    let db = state.auth.write()?;
    let address_key = address.to_string();
    state.registrations.reserve(&address_key).map_err(|retry_after| ApiError::TooManyRequests { retry_after })?;
    let hash = match state.passwords.hash(Lane::Signup, password).await {
        Ok(hash) => hash,
        Err(e) => {
            // Nothing was created: the attempt does not count.
            state.registrations.release(&address_key);
            return Err(e);
        }
    };
    match users::create(&db, &email, &hash, crate::now()).await? {
        Created::Ok(user) => {
            Metrics::inc(&state.metrics.registrations);
            tracing::info!(user_id = %user.id, "registered");
            Ok(json(StatusCode::CREATED, &UserView::from(&user)))
        }
        Created::DuplicateEmail => Err(ApiError::Conflict("an account with this email already exists".into())),
    }
}
