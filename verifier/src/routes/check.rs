//! The auth_request check: is this bearer token good, and whose is it?
//!
//! Pure memory: parse the header, verify the signature and claims. 200 with `X-User-Id` and
//! `X-User-Email`; otherwise 401 with one `WWW-Authenticate: Bearer error="invalid_token"`.
//! Never a 5xx, whatever the input: every failure of parsing is a plain 401.

use http::header::{HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use shopgate_core::http::BEARER_CHALLENGE;
use shopgate_core::service::RequestBody;

use crate::http::{empty, Body};
use crate::metrics::Metrics;
use crate::AppState;

pub(crate) fn check(state: &AppState, req: &Request<RequestBody>) -> Response<Body> {
    let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    match state.check_bearer(header) {
        Ok(v) => {
            Metrics::inc(&state.metrics.verify_ok);
            let mut resp = empty(StatusCode::OK);
            let h = resp.headers_mut();
            h.insert("x-user-id", HeaderValue::from(v.user.get()));
            if let Ok(email) = HeaderValue::from_str(&v.claims.email) {
                h.insert("x-user-email", email);
            }
            resp
        }
        Err(e) => {
            Metrics::inc(&state.metrics.verify_rejected);
            tracing::debug!(reason = e.label(), "token refused");
            let mut resp = empty(StatusCode::UNAUTHORIZED);
            resp.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(BEARER_CHALLENGE));
            resp
        }
    }
}
