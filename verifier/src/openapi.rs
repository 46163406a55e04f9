//! The auth API's OpenAPI 3 description, generated from the handlers' `#[utoipa::path]`
//! attributes and the request and response types. `shopctl openapi` merges it with the shop
//! API's (`shopgate_backend::openapi`) into the one document nginx serves at `/openapi.json`.
//!
//! Statuses are the ones a client of the gateway can get: the handler's own, plus nginx's in front
//! of it (413 over 1 MiB, 503 when the verifier is down). The check path (`/verify`) is internal
//! and not part of it.

use serde::Serialize;
use shopgate_core::openapi::{
    BadRequest, BearerScheme, DoorLimits, PayloadTooLarge, TooManyRequests, Unauthorized, Unavailable,
    UnsupportedMediaType,
};
use shopgate_core::ErrorBody;
use utoipa::{OpenApi, ToSchema};

use crate::routes::auth;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shopgate auth API",
        description = "Accounts and tokens (the verifier), under `/auth/` (also `/authentication/auth/`).",
    ),
    paths(
        auth::register::register,
        auth::token::token,
        auth::me::me,
        auth::logout::logout,
        auth::change_password::change_password,
        auth::jwks::jwks,
    ),
    components(
        schemas(ErrorBody, OAuthError),
        responses(BadRequest, Unauthorized, PayloadTooLarge, UnsupportedMediaType, TooManyRequests, Unavailable),
    ),
    modifiers(&BearerScheme, &DoorLimits),
    tags((name = "auth", description = "Accounts and tokens: register, log in, who am I, log out, change the password, public keys.")),
)]
pub struct ApiDoc;

/// The token endpoint's errors (RFC 6749 section 5.2): the usual `{error, message}` plus
/// `error_description`, the same text.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": "invalid_grant", "error_description": "wrong email or password", "message": "wrong email or password"}))]
pub(crate) struct OAuthError {
    /// `invalid_request`, `invalid_grant`, `unsupported_grant_type` (or `wrong_password` from
    /// `POST /auth/change-password`).
    pub error: String,
    pub(crate) error_description: String,
    pub(crate) message: String,
}

/// The form of `POST /auth/token` (the OAuth2 password grant).
#[derive(ToSchema)]
#[allow(dead_code)] // described, not parsed: the handler reads the form itself
pub(crate) struct TokenForm {
    /// The account's email.
    #[schema(min_length = 1, example = "ann@example.com")]
    username: String,
    #[schema(min_length = 1, example = "Corr3ct-Horse!")]
    password: String,
    /// Absent, empty or `password`.
    #[schema(nullable = false, pattern = "^(password)?$")]
    grant_type: Option<String>,
    /// Accepted and ignored.
    #[schema(nullable = false)]
    scope: Option<String>,
    /// Accepted and ignored.
    #[schema(nullable = false)]
    client_id: Option<String>,
    /// Accepted and ignored.
    #[schema(nullable = false)]
    client_secret: Option<String>,
}

/// `{"status": "logged_out"}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct LoggedOut {
    #[schema(pattern = "^logged_out$", example = "logged_out")]
    pub(crate) status: String,
}

/// `{"status": "password_changed", "message": …}`.
#[derive(Serialize, ToSchema)]
pub(crate) struct PasswordChanged {
    #[schema(pattern = "^password_changed$", example = "password_changed")]
    pub(crate) status: String,
    pub(crate) message: String,
}

/// A JWK set: the public keys tokens are signed with under EdDSA; empty under HS256.
#[derive(Serialize, ToSchema)]
pub(crate) struct Jwks {
    pub(crate) keys: Vec<Jwk>,
}

/// One Ed25519 public key (RFC 8037).
#[derive(Serialize, ToSchema)]
pub struct Jwk {
    #[schema(example = "OKP")]
    pub(crate) kty: String,
    #[schema(example = "Ed25519")]
    pub(crate) crv: String,
    /// The `kid` in the header of tokens it signs.
    pub kid: String,
    #[schema(example = "EdDSA")]
    pub(crate) alg: String,
    #[schema(example = "sig")]
    pub r#use: String,
    /// The public key, base64url without padding.
    pub x: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_auth_operation_is_described() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for (path, method) in [
            ("/auth/register", "post"),
            ("/auth/token", "post"),
            ("/auth/me", "get"),
            ("/auth/logout", "post"),
            ("/auth/change-password", "post"),
            ("/auth/jwks.json", "get"),
        ] {
            assert!(doc["paths"][path][method].is_object(), "{method} {path} missing");
        }
        assert_eq!(doc["components"]["securitySchemes"][shopgate_core::openapi::BEARER]["scheme"], "bearer");
    }
}
