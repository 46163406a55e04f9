//! `GET /auth/jwks.json`: the public keys tokens are signed with (EdDSA mode), for anyone who
//! wants to check tokens themselves. Empty under HS256, whose key is a shared secret.

use http::header::{HeaderValue, CACHE_CONTROL};
use http::{Response, StatusCode};

use crate::http::{json, Body};
use crate::openapi::Jwks;
use crate::AppState;
use shopgate_core::openapi::Unavailable;

/// The public keys tokens are signed with.
#[utoipa::path(
    get,
    path = "/auth/jwks.json",
    operation_id = "jwks",
    tag = "auth",
    responses(
        (status = 200, description = "The JWK set (empty under HS256).", body = Jwks,
            headers(("Cache-Control" = String, description = "`public, max-age=60`"))),
        (status = 503, response = Unavailable),
    )
)]
pub fn jwks(state: &AppState) -> Response<Body> {
    let mut r = json(StatusCode::OK, &state.config.jwt.keys().jwks());
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    r
}
