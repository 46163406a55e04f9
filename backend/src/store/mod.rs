//! The SQL, one file per resource. Plain `?` placeholders and BIGINT/VARCHAR columns only, so each
//! query runs unchanged on SQLite and MySQL/MariaDB through the Any driver; the few statements that
//! differ by engine are chosen by [`crate::db::Dialect`].

pub mod buckets;
pub mod catalog;
pub mod changes;
pub mod fence;
pub mod orders;
pub mod per_user;
pub mod shard;
pub mod users;

/// Buckets as an SQL list (`3,17,250`) for `IN (...)`. Bucket numbers are ours (below 1000), not
/// input, so they go into the SQL as they are.
fn bucket_list(buckets: &[u16]) -> String {
    buckets.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

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
