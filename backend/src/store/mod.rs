//! The SQL, one file per resource. Plain `?` placeholders and BIGINT/VARCHAR columns only, so each
//! query runs unchanged on SQLite and MySQL/MariaDB through the Any driver; the few statements that
//! differ by engine are chosen by [`crate::db::Dialect`].

pub mod buckets;
pub mod catalog;
pub mod fence;
pub mod orders;
pub mod shard;
pub mod users;

/// `?, ?, ?` for an `IN (...)` list of `n` values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders() {
        assert_eq!(super::placeholders(3), "?, ?, ?");
    }
}
