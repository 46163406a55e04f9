//! The SQL, one file per resource. Plain `?` placeholders and BIGINT/VARCHAR columns only, so each
//! query runs unchanged on SQLite and MySQL/MariaDB through the Any driver; the few statements that
//! differ by engine are chosen by [`crate::db::Dialect`].

pub mod catalog;
pub mod orders;
pub mod users;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Unix seconds as RFC 3339 (`2025-06-01T12:00:00Z`).
pub fn rfc3339(unix_secs: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix_secs).ok().and_then(|t| t.format(&Rfc3339).ok()).unwrap_or_default()
}

/// `?, ?, ?` for an `IN (...)` list of `n` values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps() {
        assert_eq!(super::rfc3339(1_735_689_600), "2025-01-01T00:00:00Z");
        assert_eq!(super::placeholders(3), "?, ?, ?");
    }
}
