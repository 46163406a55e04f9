//! The wall clock in unix units, as tokens (`iat`, `exp`), revocation cut-offs and database stamps
//! count it. A clock before 1970 reads as 0.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time in seconds.
pub fn unix_now() -> i64 {
    unix_now_ms() / 1000
}

/// Unix time in milliseconds.
pub fn unix_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
