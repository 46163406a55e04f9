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
use shopgate_store::users::{self, Profile};

use crate::service::profiles;
use shopgate_core::openapi::{
    BadRequest, Misdirected, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use shopgate_core::ErrorBody;

/// The caller's profile on their shard.
#[utoipa::path(
    get,
    path = "/api/users/me",
    operation_id = "my_profile",
    tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile.", body = Profile),
        (status = 404, description = "No profile on this shard yet: `POST /api/users` creates it (so does a first order).", body = ErrorBody),
        (status = 401, response = Unauthorized),
        (status = 421, response = Misdirected),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn me(State(state): State<AppState>, user: AuthUser) -> Result<Json<Profile>, ApiError> {
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
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(example = json!({"email": "ann@example.com", "is_active": true}))]
pub(crate) struct CreateUser {
    /// Ignored: the email comes from the token.
    #[serde(default)]
    email: Option<String>,
    /// Ignored.
    #[serde(default)]
    is_active: Option<bool>,
    /// Ignored and never stored.
    #[serde(default)]
    password: Option<String>,
}

/// 201 with the new profile, or 200 with the existing one.
#[utoipa::path(
    post,
    path = "/api/users",
    operation_id = "create_profile",
    tag = "users",
    security(("bearer" = [])),
    request_body = CreateUser,
    responses(
        (status = 201, description = "The new profile.", body = Profile),
        (status = 200, description = "The profile, which existed already.", body = Profile),
        (status = 400, response = BadRequest),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 401, response = Unauthorized),
        (status = 421, response = Misdirected),
        (status = 503, response = Unavailable),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(_body): ApiJson<CreateUser>,
) -> Result<Response, ApiError> {
    // The write runs to its end even if the client goes away meanwhile (Db::write).
    let work = {
        let state = state.clone();
        async move {
            let created = profiles::create(&state.service(), &user, now_secs()).await?;
            if created {
                state.db.note_write(user.id);
                tracing::info!("profile created");
            }
            let profile = users::find(state.db_write(), user.id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("profile of user {} missing right after insert", user.id))?;
            Ok::<_, ApiError>((created, profile))
        }
    };
    let (created, profile) = state.db.write(work).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(profile)).into_response())
}
