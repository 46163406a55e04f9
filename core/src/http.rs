//! The HTTP answers the verifier and the backends share, written once: the statuses, error codes,
//! messages and headers of the errors both give (400, 401, 404, 405, 413, 415, 429, 503), and
//! the request-id rule. Each service maps its own error enum onto [`HttpError`] for these and
//! keeps only the errors that are its own (an OAuth2 error, a misdirected order).

use std::borrow::Cow;

use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, Response, StatusCode};
use rand::RngCore as _;
use serde::Serialize;

use crate::ErrorBody;

/// The one challenge every 401 carries (also when no token was sent: the contract's wording).
pub const BEARER_CHALLENGE: &str = "Bearer error=\"invalid_token\"";

/// What every 503 tells the client in `Retry-After`, as nginx's own 503 does.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// Request bodies larger than this get 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// 400: the request does not fit the API's shape (bad JSON, wrong types, unknown fields, a
    /// bad query or header value). `code` says which, `message` how.
    #[error("{message}")]
    BadRequest { code: &'static str, message: Cow<'static, str> },
    /// 401 with one `WWW-Authenticate`: missing, malformed, forged, expired or revoked token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// 404; the message names what was not found ("no such order").
    #[error("{0}")]
    NotFound(&'static str),
    /// A 405; `allow` lists the path's methods for the `Allow` header (RFC 9110, section 15.5.6),
    /// or is `None` where the router sets that header itself.
    #[error("method not allowed")]
    MethodNotAllowed { allow: Option<&'static str> },
    #[error("request body over 1 MiB")]
    PayloadTooLarge,
    /// 415; the media type the endpoint takes.
    #[error("expected Content-Type {0}")]
    UnsupportedMediaType(&'static str),
    /// 429 with `Retry-After`.
    #[error("too many attempts")]
    TooManyRequests { retry_after: u64 },
    /// 503 with `Retry-After`: worth retrying shortly. `code` says what is missing
    /// (`unavailable`, `busy`, `overloaded`, …).
    #[error("{message}")]
    Unavailable { code: &'static str, message: &'static str },
}

/// The 404 of a path no route matches.
pub const NO_ROUTE: HttpError = HttpError::NotFound("no such route");

impl HttpError {
    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self::BadRequest { code, message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON body: a stable code and a message written for the client.
    pub fn body(&self) -> ErrorBody {
        let (code, message): (&str, Cow<'_, str>) = match self {
            Self::BadRequest { code, message } => (code, message.as_ref().into()),
            Self::Unauthorized => ("invalid_token", "missing, malformed, expired or revoked bearer token".into()),
            Self::NotFound(what) => ("not_found", (*what).into()),
            Self::MethodNotAllowed { .. } => (
                "method_not_allowed",
                "this path does not answer this method; the Allow header lists those it does".into(),
            ),
            Self::PayloadTooLarge => ("payload_too_large", "the request body is larger than 1 MiB".into()),
            Self::UnsupportedMediaType(t) => {
                ("unsupported_media_type", format!("send the body with Content-Type: {t}").into())
            }
            Self::TooManyRequests { .. } => ("too_many_requests", "too many attempts; wait and try again".into()),
            Self::Unavailable { code, message } => (code, (*message).into()),
        };
        ErrorBody::new(code, message)
    }

    /// The whole answer: status, JSON body and the headers the status calls for.
    pub fn into_response<B: From<Vec<u8>>>(self) -> Response<B> {
        let mut response = json(self.status(), &self.body());
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(BEARER_CHALLENGE));
            }
            Self::MethodNotAllowed { allow: Some(allow) } => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            Self::TooManyRequests { retry_after } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ => {}
        }
        // Every 503 is worth retrying: say when.
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

/// A JSON answer (`Content-Type: application/json`).
pub fn json<B: From<Vec<u8>>, T: Serialize>(status: StatusCode, value: &T) -> Response<B> {
    // Our bodies are plain structs and maps: serialising them cannot fail.
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(B::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The request's id: the client's (nginx's) `X-Request-Id` if it is clean (1 to 128 visible
/// ASCII characters), else a fresh one, so every log line of the request has one.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .map(HeaderValue::as_bytes)
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.iter().all(|b| (0x21..=0x7e).contains(b)))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_else(new_request_id)
}

/// 32 hex digits of randomness, the shape of nginx's `$request_id`.
pub(crate) fn new_request_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sets `X-Request-Id` on an answer, once (replacing any copy a handler set).
pub fn echo_request_id(headers: &mut HeaderMap, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        headers.insert(REQUEST_ID_HEADER, v);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer(e: HttpError) -> (StatusCode, HeaderMap, serde_json::Value) {
        let r: Response<Vec<u8>> = e.into_response();
        let body = serde_json::from_slice(r.body()).unwrap();
        (r.status(), r.headers().clone(), body)
    }

    #[test]
    fn each_shared_error_has_its_status_code_and_headers() {
        let (s, h, b) = answer(HttpError::Unauthorized);
        assert_eq!((s, b["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_token")));
        assert_eq!(h.get_all(WWW_AUTHENTICATE).iter().count(), 1);
        assert_eq!(h[WWW_AUTHENTICATE], BEARER_CHALLENGE);

        let (s, h, b) = answer(HttpError::MethodNotAllowed { allow: Some("POST") });
        assert_eq!((s, b["error"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));
        assert_eq!(h[ALLOW], "POST");

        let (s, _, b) = answer(HttpError::PayloadTooLarge);
        assert_eq!((s, b["error"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));
        let (s, _, b) = answer(HttpError::UnsupportedMediaType("application/json"));
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(b["message"].as_str().unwrap().contains("application/json"), "{b}");

        let (s, h, _) = answer(HttpError::TooManyRequests { retry_after: 7 });
        assert_eq!((s, &h[RETRY_AFTER]), (StatusCode::TOO_MANY_REQUESTS, &HeaderValue::from(7)));
        let (s, h, b) = answer(HttpError::Unavailable { code: "busy", message: "retry shortly" });
        assert_eq!(
            (s, &h[RETRY_AFTER], b["error"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, &HeaderValue::from(1), Some("busy"))
        );
        let (s, h, b) = answer(NO_ROUTE);
        assert_eq!((s, b["message"].as_str()), (StatusCode::NOT_FOUND, Some("no such route")));
        assert!(h.get(RETRY_AFTER).is_none() && h.get(WWW_AUTHENTICATE).is_none());
        assert_eq!(h[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn a_clean_request_id_is_kept_and_any_other_replaced() {
        let with = |v: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(REQUEST_ID_HEADER, HeaderValue::from_bytes(v).unwrap());
            request_id(&h)
        };
        assert_eq!(with(b"0123abcd-nginx"), "0123abcd-nginx");
        let long = "a".repeat(128);
        assert_eq!(with(long.as_bytes()), long);
        for bad in [&b"a b"[..], b"", &[b'a'; 129], b"caf\xc3\xa9", b"a\tb"] {
            let id = with(bad);
            assert_eq!(id.len(), 32, "{bad:?} -> {id}");
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }
}
