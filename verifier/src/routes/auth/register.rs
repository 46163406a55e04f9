//! `POST /auth/register` JSON `{email, password}` -> 201 the new user; 409 if the email is taken.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use shopgate_core::Email;

use super::{parse_json, UserView};
use crate::error::ApiError;
use crate::http::{json, read_body, Body};
use crate::metrics::Metrics;
use crate::password::Password;
use crate::users::{self, Created};
use crate::AppState;

#[derive(Deserialize)]
struct RegisterBody {
    email: String,
    password: String,
}

pub async fn register(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let body: RegisterBody = parse_json(&read_body(req, "application/json").await?)?;
    let email = Email::parse(&body.email).map_err(|m| ApiError::Invalid { code: "invalid_email", message: m })?;
    let password =
        Password::parse(body.password).map_err(|m| ApiError::Invalid { code: "weak_password", message: m })?;
    let hash = state.passwords.hash(password).await?;
    match users::create(&state.db, &email, &hash, crate::now()).await? {
        Created::Ok(user) => {
            Metrics::inc(&state.metrics.registrations);
            tracing::info!(user_id = %user.id, "registered");
            Ok(json(StatusCode::CREATED, &UserView::from(&user)))
        }
        Created::DuplicateEmail => Err(ApiError::Conflict("an account with this email already exists".into())),
    }
}
