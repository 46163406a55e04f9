//! Who is asking. nginx forwards only requests the verifier accepted, with `X-User-Id` set from its
//! answer; the backend checks both again itself, so a backend port reached directly grants nothing.
//!
//! [`AuthUser`] (extracted from a request in `crate::extract`) requires a bearer token that verifies with the shared key and policy, exactly one
//! `X-User-Id` equal to the token's user, and that user to belong to this shard (else 421, before
//! anything is read or written), and the token not revoked (logout, password change, disabled
//! user: the same list every verifier holds, see [`shopgate_core::revocation`]). Tokens are
//! never logged; only the refusal reason is.

use axum::http::{header, HeaderMap};
use shopgate_core::token::{bearer, TokenError, Verified, Verifier};
use shopgate_core::UserId;

use crate::error::ApiError;

pub(crate) const USER_ID_HEADER: &str = "x-user-id";

/// An authenticated user of this shard.
#[derive(Debug, Clone)]
pub(crate) struct AuthUser {
    pub id: UserId,
    /// From the token's claims, as the verifier issued it.
    pub email: String,
    /// False while the user's bucket has its writes paused for a move: writes get 503.
    pub(crate) writes: bool,
}

impl AuthUser {
    /// Ok if this user's writes may go ahead (the shard's write fence still decides, in the
    /// write's transaction: `service::fence`).
    pub(crate) fn may_write(&self) -> Result<(), ApiError> {
        if self.writes {
            Ok(())
        } else {
            Err(ApiError::Moving)
        }
    }
}

/// The checks, apart from HTTP plumbing; the error is a reason label for logs and metrics.
pub(crate) fn authenticate(headers: &HeaderMap, verifier: &Verifier, now: i64) -> Result<Verified, &'static str> {
    let authorization = single(headers, header::AUTHORIZATION.as_str()).map_err(|()| "several_authorization")?;
    let token = bearer(authorization).map_err(TokenError::label)?;
    let verified = verifier.verify(token, now).map_err(TokenError::label)?;
    let claimed = single(headers, USER_ID_HEADER).map_err(|()| "several_user_ids")?.ok_or("missing_user_id")?;
    let claimed =
        std::str::from_utf8(claimed).ok().and_then(|s| UserId::parse_decimal(s).ok()).ok_or("malformed_user_id")?;
    if claimed != verified.user {
        return Err("user_id_mismatch");
    }
    Ok(verified)
}

/// The header's value if it is present at most once.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h [u8]>, ()> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().map(|v| v.as_bytes());
    if values.next().is_some() {
        return Err(());
    }
    Ok(first)
}
