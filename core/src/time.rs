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

/// Unix seconds as RFC 3339 in UTC (`2025-06-01T12:00:00Z`), as the APIs and shopctl show times.
/// A time outside years 0-9999, which RFC 3339 cannot write, is shown as its number.
pub fn rfc3339(unix_secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| unix_secs.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(i64::MAX), i64::MAX.to_string());
    }
}
