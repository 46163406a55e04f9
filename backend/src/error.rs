//! The HTTP layer's one error type and its one mapping to a status and a JSON body.
//!
//! Clients get `{"error": code, "message": text}` ([`ErrorBody`]) with a stable code and a message
//! written for them; causes (database errors, bugs) go to the log in full and never to the client.

use std::error::Error as _;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shopgate_core::http::HttpError;
use shopgate_core::{ErrorBody, ShardName, UserId};

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
    /// The user's bucket is moving between shards (or has just moved away from this one): its
    /// writes, or all its requests, wait until the move's switch is over. Nothing was written.
    #[error("the user's bucket is moving between shards")]
    Moving,
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
    /// This user has as many requests in this backend process as one user may
    /// (`[backend] max_per_user`): theirs get 429, everyone else's go on.
    #[error("over the user's share of the backend")]
    OverShare,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { code, message: message.into() }
    }

    pub(crate) fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unprocessable { code, message: message.into() }
    }

    /// The answer: one both services give ([`HttpError`], the same status, body and headers
    /// everywhere), or this service's own status and body.
    fn answer(&self) -> Result<HttpError, (StatusCode, ErrorBody)> {
        use ApiError::*;
        const SHARD_UNAVAILABLE: HttpError = HttpError::Unavailable {
            code: "shard_unavailable",
            message: "this shard's database is unavailable; try again shortly",
        };
        Ok(match self {
            InvalidToken(_) => HttpError::Unauthorized,
            NotFound(what) => HttpError::NotFound(what),
            // axum's router sets `Allow` on the answer of its method-not-allowed fallback.
            MethodNotAllowed => HttpError::MethodNotAllowed { allow: None },
            BadRequest { code, message } => HttpError::bad_request(code, message.clone()),
            UnsupportedMediaType => HttpError::UnsupportedMediaType("application/json"),
            PayloadTooLarge => HttpError::PayloadTooLarge,
            NotReady | Unavailable(_) | DeadlineExceeded => SHARD_UNAVAILABLE,
            Moving => HttpError::Unavailable {
                code: "moving",
                message: "this account's data is being moved between shards; try again in a moment",
            },
            Overloaded => HttpError::Unavailable {
                code: "overloaded",
                message: "this shard is handling as many requests as it can; try again shortly",
            },
            OverShare => HttpError::TooManyRequests { retry_after: shopgate_core::http::RETRY_AFTER_SECONDS.into() },
            Misdirected { user, .. } => {
                let message =
                    format!("this shard does not serve user {user}; the request was routed to the wrong backend");
                return Err((StatusCode::MISDIRECTED_REQUEST, ErrorBody::new("misdirected", message)));
            }
            Unprocessable { code, message } => {
                return Err((StatusCode::UNPROCESSABLE_ENTITY, ErrorBody::new(*code, message.as_str())))
            }
            Unexpected(_) => {
                return Err((
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorBody::new("internal", "an unexpected error occurred"),
                ))
            }
        })
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
        let answer = self.answer();
        let (status, code) = match &answer {
            Ok(shared) => (shared.status(), shared.body().error),
            Err((status, body)) => (*status, body.error.clone()),
        };
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), code = %code, cause = %cause_chain(&self), "request failed");
        } else if let ApiError::BadRequest { .. } = self {
            // serde's messages quote the client's input, which may be a password in the wrong
            // field: the client sees it, the log does not.
            tracing::info!(status = status.as_u16(), code = %code, "request refused");
        } else {
            tracing::info!(status = status.as_u16(), code = %code, cause = %self, "request refused");
        }
        match answer {
            Ok(shared) => shared.into_response(),
            Err((status, body)) => (status, Json(body)).into_response(),
        }
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
    use axum::http::header;

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
