//! The verifier's errors and their one mapping to HTTP answers.
//!
//! Clients get a stable JSON body `{"error", "message"}` (plus `error_description` on the token
//! endpoint's OAuth2 errors, RFC 6749 section 5.2); the cause chain goes to the log only.

use http::{Response, StatusCode};
use serde::Serialize;
use shopgate_core::auth_db::NoPrimary;
use shopgate_core::http::HttpError;
use shopgate_core::ErrorBody;

use crate::http::{json, no_store, Body};

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
    /// The answers the backends give too (404, 405, …), with the same status, body and headers.
    #[error(transparent)]
    Http(#[from] HttpError),
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
    /// A write while the auth database has no primary: it is read-only until the primary is back
    /// or the replica is promoted.
    #[error(transparent)]
    ReadOnly(#[from] NoPrimary),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // The backends' rule too: the same database error is the same status from every service.
        if shopgate_core::db::is_unavailable(&e) {
            ApiError::Unavailable(e)
        } else {
            ApiError::Unexpected(anyhow::Error::new(e).context("database"))
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
        let (status, code, message): (StatusCode, &str, String) = match self {
            ApiError::Invalid { code, message } => return HttpError::bad_request(code, message).into_response(),
            ApiError::Unauthorized => return HttpError::Unauthorized.into_response(),
            ApiError::OAuth { status, code, message } => {
                let body = OAuthBody { error: code, error_description: &message, message: &message };
                return no_store(json(status, &body));
            }
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m),
            ApiError::Http(e) => return e.into_response(),
            ApiError::UnsupportedMediaType(t) => return HttpError::UnsupportedMediaType(t).into_response(),
            ApiError::PayloadTooLarge => return HttpError::PayloadTooLarge.into_response(),
            ApiError::TooManyRequests { retry_after } => {
                return no_store(HttpError::TooManyRequests { retry_after }.into_response())
            }
            ApiError::Busy => {
                return HttpError::Unavailable { code: "busy", message: "too many logins at once; retry shortly" }
                    .into_response()
            }
            ApiError::Unavailable(e) => {
                tracing::error!(error = %e, "auth database unavailable");
                return HttpError::Unavailable {
                    code: "unavailable",
                    message: "the auth database is unavailable; retry shortly",
                }
                .into_response();
            }
            ApiError::ReadOnly(e) => {
                tracing::warn!(error = %e, "write refused");
                return HttpError::Unavailable {
                    code: "read_only",
                    message: "the account database is read-only while its primary is down: registrations, logouts \
                              and password changes are refused for now; logins and signed-in requests go on. Retry \
                              later",
                }
                .into_response();
            }
            ApiError::Unexpected(e) => {
                tracing::error!(error = format!("{e:#}"), "unexpected error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error".into())
            }
        };
        json(status, &ErrorBody::new(code, message))
    }
}
