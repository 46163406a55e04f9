//! axum's extractors with their rejections turned into [`ApiError`], so a bad body, path or query
//! gets our JSON error and never axum's plain-text one; and the caller, [`AuthUser`], from the
//! request's token (the checks are `crate::auth`'s).

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;
use shopgate_core::json::ObjectOnly;
use shopgate_core::shardmap::Admission;
use shopgate_core::time::unix_now;

use crate::auth::{authenticate, AuthUser};
use crate::error::ApiError;
use crate::state::AppState;

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let verified = authenticate(&parts.headers, &state.verifier, unix_now())
            .and_then(|v| if state.revocations.is_revoked(&v.claims) { Err("revoked") } else { Ok(v) })
            .map_err(|reason| {
                state.metrics.auth_failure(reason);
                ApiError::InvalidToken(reason)
            })?;
        if !state.revocations.is_loaded() {
            return Err(ApiError::NotReady);
        }
        let writes = match state.admit(verified.user)? {
            Admission::Serve { writes } => writes,
            Admission::Moving => return Err(ApiError::Moving),
            Admission::Elsewhere(owner) => return Err(ApiError::Misdirected { user: verified.user, owner }),
        };
        tracing::Span::current().record("user_id", verified.user.get());
        Ok(Self { id: verified.user, email: verified.claims.email, writes })
    }
}

/// A JSON body, which must be an object. Syntax errors, wrong types (an array for an object too),
/// missing or unknown fields: 400; no JSON content type: 415; over the body limit: 413.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<ObjectOnly<T>>::from_request(req, state).await {
            Ok(Json(ObjectOnly(value))) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        // serde's message names the field and what was expected, which is what the client needs.
        JsonRejection::JsonDataError(e) => ApiError::bad_request("invalid_body", e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("malformed_json", e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::bad_request("invalid_body", "the request body could not be read"),
    }
}

/// A path parameter. One that does not parse (`/api/orders/abc`) names nothing: 404.
pub(crate) struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(_) => Err(ApiError::NotFound("no such resource")),
        }
    }
}

/// A query string. One that does not parse: 400.
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(e) => Err(ApiError::bad_request("invalid_query", e.body_text())),
        }
    }
}

/// For `#[serde(deserialize_with)]`: a JSON integer, also when written with a zero fraction
/// (`2.0`). JSON does not tell the two apart, nor does JSON Schema (its `integer` includes `2.0`),
/// and some clients write every number as a float. `2.5`, an integer outside i64, or a float
/// past 2^53 (where a float no longer names one integer) is refused as a wrong type.
pub(crate) fn whole_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    use serde::de::{Error, Unexpected, Visitor};

    struct Whole;
    impl Visitor<'_> for Whole {
        type Value = i64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<i64, E> {
            // Every integer up to 2^53 is exactly one f64.
            const LIMIT: f64 = 9_007_199_254_740_992.0;
            if v.fract() == 0.0 && (-LIMIT..=LIMIT).contains(&v) {
                Ok(v as i64)
            } else {
                Err(E::invalid_type(Unexpected::Float(v), &self))
            }
        }
    }
    deserializer.deserialize_any(Whole)
}

/// An optional integer query parameter in `lo..=hi`: absent is `None`; present, empty (`?limit=`)
/// or not a whole number in range, 400.
pub(crate) fn int_param(name: &str, raw: Option<&str>, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    // Absent is the default; present must be the integer the API description says, so an empty
    // `limit=` is a 400 like `limit=abc` (schemathesis found it taken as the default).
    let Some(raw) = raw else {
        return Ok(None);
    };
    match raw.parse::<i64>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(Some(v)),
        _ => Err(ApiError::bad_request("invalid_query", format!("{name} must be an integer from {lo} to {hi}"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct N(#[serde(deserialize_with = "super::whole_number")] i64);

    #[test]
    fn whole_numbers_may_be_written_as_floats() {
        for (json, want) in [
            ("2", 2),
            ("2.0", 2),
            ("-3.0", -3),
            ("9223372036854775807", i64::MAX),
            ("1e3", 1000),
            // Found by schemathesis: without serde_json's float_roundtrip this read as ...61.5.
            ("3660052386329362.0", 3_660_052_386_329_362),
            ("9007199254740992.0", 1 << 53),
        ] {
            assert_eq!(serde_json::from_str::<N>(json).unwrap().0, want, "{json}");
        }
        for bad in ["2.5", "9223372036854775808", "9007199254740994.0", "9.3e18", "1e300", "\"2\"", "null", "true"] {
            assert!(serde_json::from_str::<N>(bad).is_err(), "{bad} accepted");
        }
    }
}
