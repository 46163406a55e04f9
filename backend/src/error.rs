//! The HTTP layer's one error type and its one mapping to a status and a JSON body.
//!
//! Clients get `{"error": code, "message": text}` ([`ErrorBody`]) with a stable code and a message
//! written for them; causes (database errors, bugs) go to the log in full and never to the client.

use std::borrow::Cow;
use std::error::Error as _;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use shopgate_core::{ErrorBody, ShardName, UserId};

/// What every 503 tells the client in `Retry-After`, as nginx's own 503 does.
pub const RETRY_AFTER_SECONDS: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing, malformed, forged or expired token, or `X-User-Id` not matching it. The reason is
    /// for logs and metrics only: every case is the same plain 401 to the client.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// The user is owned by another shard; nothing was read or written.
    #[error("user {user} belongs to shard {owner}")]
    Misdirected { user: UserId, owner: ShardName },
    /// The message names what was not found, e.g. "no such order".
    #[error("{0}")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request does not fit the API's shape: bad JSON, wrong types, unknown fields, bad query
    /// or header values.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// Well-formed but unacceptable: an unknown product, a quantity out of range, a reused key.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("content type is not application/json")]
    UnsupportedMediaType,
    #[error("request body over 1 MiB")]
    PayloadTooLarge,
    /// The shard's schema has not been set up yet because its primary has not answered.
    #[error("shard database not initialised yet")]
    NotReady,
    #[error("shard database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The request ran past [`crate::REQUEST_DEADLINE`] (a database that accepts connections but
    /// does not answer): 503 rather than a request hanging until nginx gives up.
    #[error("no answer within the request deadline")]
    DeadlineExceeded,
    /// The backend is working on as many requests as it may and its queue is full, or the request
    /// waited in the queue as long as it may (`[backend] max_in_flight`, `max_queued`,
    /// `queue_wait_ms`).
    #[error("at capacity")]
    Overloaded,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { code, message: message.into() }
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unprocessable { code, message: message.into() }
    }

    fn parts(&self) -> (StatusCode, &'static str, Cow<'_, str>) {
        use ApiError::*;
        match self {
            InvalidToken(_) => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the bearer token is missing, invalid or expired, or X-User-Id does not match it".into(),
            ),
            Misdirected { user, .. } => (
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected",
                format!("this shard does not serve user {user}; the request was routed to the wrong backend").into(),
            ),
            NotFound(what) => (StatusCode::NOT_FOUND, "not_found", Cow::Borrowed(*what)),
            MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this method is not allowed on this path".into())
            }
            BadRequest { code, message } => (StatusCode::BAD_REQUEST, code, message.as_str().into()),
            Unprocessable { code, message } => (StatusCode::UNPROCESSABLE_ENTITY, code, message.as_str().into()),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json".into(),
            ),
            PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is larger than 1 MiB".into())
            }
            NotReady | Unavailable(_) | DeadlineExceeded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "shard_unavailable",
                "this shard's database is unavailable; try again shortly".into(),
            ),
            Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "this shard is handling as many requests as it can; try again shortly".into(),
            ),
            Unexpected(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "an unexpected error occurred".into()),
        }
    }
}

/// Database errors that mean "the database is not answering" become 503; anything else (a query
/// that cannot decode, a constraint we did not expect) is a bug: 500.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&e) {
            Self::Unavailable(e)
        } else {
            Self::Unexpected(anyhow::Error::new(e).context("database query failed"))
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), code, cause = %cause_chain(&self), "request failed");
        } else if let ApiError::BadRequest { .. } = self {
            // serde's messages quote the client's input, which may be a password in the wrong
            // field: the client sees it, the log does not.
            tracing::info!(status = status.as_u16(), code, "request refused");
        } else {
            tracing::info!(status = status.as_u16(), code, cause = %self, "request refused");
        }
        let body = ErrorBody::new(code, message);
        let mut response = (status, Json(body)).into_response();
        if let ApiError::InvalidToken(_) = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer error="invalid_token""#));
        }
        // Every 503 is worth retrying (a database down or slow, a deadline, a full queue): say when.
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        response
    }
}

/// `outer: inner: innermost`, for the log.
fn cause_chain(e: &ApiError) -> String {
    if let ApiError::Unexpected(inner) = e {
        return format!("{inner:#}");
    }
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_503_says_when_to_retry_and_nothing_else_does() {
        let timeouts = [
            ApiError::DeadlineExceeded,
            ApiError::Unavailable(sqlx::Error::PoolTimedOut),
            ApiError::NotReady,
            ApiError::Overloaded,
        ];
        for e in timeouts {
            let r = e.into_response();
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        }
        let r = ApiError::NotFound("x").into_response();
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
    }
}
