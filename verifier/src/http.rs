//! Small helpers for building responses and reading bodies with hyper.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use shopgate_core::service::RequestBody;

use crate::error::ApiError;

pub type Body = Full<Bytes>;

pub use shopgate_core::http::{json, MAX_BODY_BYTES};

/// For answers that carry or concern credentials (RFC 6749 section 5.1).
pub(crate) fn no_store(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut().insert("pragma", HeaderValue::from_static("no-cache"));
    resp
}

pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

/// Checks the media type (parameters such as `charset` allowed) and reads the body, at most
/// [`MAX_BODY_BYTES`].
pub(crate) async fn read_body(req: http::Request<RequestBody>, media_type: &'static str) -> Result<Bytes, ApiError> {
    let ct = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(media_type) {
        return Err(ApiError::UnsupportedMediaType(media_type));
    }
    if let Some(len) = req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()) {
        if len.parse::<u64>().map_or(true, |n| n > MAX_BODY_BYTES as u64) {
            return Err(ApiError::PayloadTooLarge);
        }
    }
    match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::PayloadTooLarge),
        Err(_) => Err(ApiError::Invalid { code: "invalid_request", message: "could not read the request body".into() }),
    }
}
