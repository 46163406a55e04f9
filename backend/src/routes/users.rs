//! `GET /api/users/me` and `POST /api/users`: the caller's profile on this shard. Identity (id and
//! email) always comes from the token, never from the body.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::auth::AuthUser;
use crate::db::now_secs;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::store::users::{self, Profile};

pub async fn me(State(state): State<AppState>, user: AuthUser) -> Result<Json<Profile>, ApiError> {
    let uid = user.id;
    state
        .read(uid, |db| async move { users::find(&db, uid).await })
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("no profile on this shard yet; POST /api/users creates it"))
}

/// The original design's `POST /api/users` body, accepted for its clients' sake. Each field is
/// optional and only type-checked; unknown fields are ignored. None is used: id and email come
/// from the token, and the password is never stored. No `Debug`, so it cannot be logged.
#[derive(Deserialize)]
#[allow(dead_code)]
pub struct CreateUser {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    is_active: Option<bool>,
    #[serde(default)]
    password: Option<String>,
}

/// 201 with the new profile, or 200 with the existing one.
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(_body): ApiJson<CreateUser>,
) -> Result<Response, ApiError> {
    let created = users::create_if_missing(state.db_write(), user.id, &user.email, now_secs()).await?;
    if created {
        state.db.note_write(user.id);
        tracing::info!("profile created");
    }
    let profile = users::find(state.db_write(), user.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("profile of user {} missing right after insert", user.id))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(profile)).into_response())
}
