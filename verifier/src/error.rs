//! The verifier's errors and their one mapping to HTTP answers.
//!
//! Clients get a stable JSON body `{"error", "message"}` (plus `error_description` on the token
//! endpoint's OAuth2 errors, RFC 6749 section 5.2); the cause chain goes to the log only.

use http::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use serde::Serialize;
use shopgate_core::ErrorBody;

use crate::http::{json, no_store, Body};

pub const BEARER_CHALLENGE: &str = "Bearer error=\"invalid_token\"";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// RFC 6749 errors of the token endpoint: `invalid_request`, `invalid_grant`,
    /// `unsupported_grant_type`.
    #[error("{code}: {message}")]
    OAuth { status: StatusCode, code: &'static str, message: String },
    #[error("{0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    /// `allow` is the one method the path has: 405 carries it as `Allow` (RFC 9110 section 15.5.6).
    #[error("method not allowed")]
    MethodNotAllowed { allow: http::Method },
    #[error("expected Content-Type {0}")]
    UnsupportedMediaType(&'static str),
    #[error("request body over 1 MiB")]
    PayloadTooLarge,
    #[error("too many attempts")]
    TooManyRequests { retry_after: u64 },
    #[error("password hashing is saturated")]
    Busy,
    #[error("auth database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                ApiError::Unavailable(e)
            }
            other => ApiError::Unexpected(anyhow::Error::new(other).context("database")),
        }
    }
}

#[derive(Serialize)]
struct OAuthBody<'a> {
    error: &'a str,
    error_description: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn into_response(self) -> Response<Body> {
        let (status, code, message): (StatusCode, &str, String) = match &self {
            ApiError::Invalid { code, message } => (StatusCode::BAD_REQUEST, code, message.clone()),
            ApiError::Unauthorized => {
                let mut r = json(
                    StatusCode::UNAUTHORIZED,
                    &ErrorBody::new("invalid_token", "missing, malformed, expired or revoked bearer token"),
                );
                r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(BEARER_CHALLENGE));
                return r;
            }
            ApiError::OAuth { status, code, message } => {
                let body = OAuthBody { error: code, error_description: message, message };
                return no_store(json(*status, &body));
            }
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such resource".into()),
            ApiError::MethodNotAllowed { allow } => {
                let mut r = json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &ErrorBody::new("method_not_allowed", format!("this path answers {allow} only")),
                );
                if let Ok(v) = HeaderValue::from_str(allow.as_str()) {
                    r.headers_mut().insert(http::header::ALLOW, v);
                }
                return r;
            }
            ApiError::UnsupportedMediaType(t) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", format!("send Content-Type: {t}"))
            }
            ApiError::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body is over 1 MiB".into())
            }
            ApiError::TooManyRequests { retry_after } => {
                let mut r = no_store(json(
                    StatusCode::TOO_MANY_REQUESTS,
                    &ErrorBody::new("too_many_requests", "too many attempts from here or at this account; wait and try again"),
                ));
                r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(*retry_after));
                return r;
            }
            ApiError::Busy => {
                let mut r =
                    json(StatusCode::SERVICE_UNAVAILABLE, &ErrorBody::new("busy", "too many logins at once; retry shortly"));
                r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(1u32));
                return r;
            }
            ApiError::Unavailable(e) => {
                tracing::error!(error = %e, "auth database unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the auth database is unavailable; retry shortly".into())
            }
            ApiError::Unexpected(e) => {
                tracing::error!(error = format!("{e:#}"), "unexpected error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error".into())
            }
        };
        json(status, &ErrorBody::new(code, message))
    }
}
