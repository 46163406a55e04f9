//! Newtypes that input is parsed into at the edge: once a value has one of these types it is valid.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest user id we hand out or accept: 2^53 - 1, so ids survive a trip through JavaScript
/// and JSON parsers that read numbers as doubles.
pub const MAX_USER_ID: u64 = (1 << 53) - 1;

/// A user id: 1 ..= 2^53 - 1, the same number in the auth database, the token and every shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct UserId(u64);

impl UserId {
    pub fn new(id: u64) -> Result<Self, String> {
        if (1..=MAX_USER_ID).contains(&id) {
            Ok(Self(id))
        } else {
            Err(format!("user id must be between 1 and {MAX_USER_ID}"))
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// As stored in the databases (BIGINT).
    pub fn as_i64(self) -> i64 {
        // MAX_USER_ID < i64::MAX, so this never wraps.
        self.0 as i64
    }

    /// Parses the decimal form nginx passes in `X-User-Id`: digits only, no sign, no spaces.
    pub fn parse_decimal(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err("user id must be a decimal number".into());
        }
        s.parse::<u64>().map_err(|e| e.to_string()).and_then(Self::new)
    }
}

impl TryFrom<u64> for UserId {
    type Error = String;
    fn try_from(v: u64) -> Result<Self, String> {
        Self::new(v)
    }
}

impl From<UserId> for u64 {
    fn from(v: UserId) -> u64 {
        v.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An email address, trimmed and lower-cased, checked for a plausible shape (RFC 5321 lengths,
/// one `@`, a dotted domain of letters, digits and hyphens). Deliverability is not our business.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let s = raw.trim().to_ascii_lowercase();
        if s.is_empty() {
            return Err("email is required".into());
        }
        if s.len() > 254 {
            return Err("email is longer than 254 characters".into());
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err("email must contain @".into());
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
        if !local_ok {
            return Err("email has an invalid part before the @".into());
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !domain_ok {
            return Err("email has an invalid domain".into());
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A shard's name as used in config, nginx upstream names and output: `[a-z0-9_]{1,32}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ShardName(String);

impl ShardName {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!("shard name {s:?} must be 1-32 of a-z, 0-9, _"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ShardName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<ShardName> for String {
    fn from(s: ShardName) -> String {
        s.0
    }
}

impl fmt::Display for ShardName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn user_id_bounds() {
        assert!(UserId::new(0).is_err());
        assert!(UserId::new(1).is_ok());
        assert!(UserId::new(MAX_USER_ID).is_ok());
        assert!(UserId::new(MAX_USER_ID + 1).is_err());
    }

    #[test]
    fn user_id_decimal_is_strict() {
        assert_eq!(UserId::parse_decimal("42").unwrap().get(), 42);
        for bad in ["", "-1", "+1", " 1", "1 ", "0x10", "1e3", "0", "99999999999999999999"] {
            assert!(UserId::parse_decimal(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn email_shapes() {
        assert_eq!(Email::parse("  Ann@Example.COM ").unwrap().as_str(), "ann@example.com");
        for bad in ["", "ann", "@x.io", "ann@", "ann@x", "a..b@x.io", "ann@-x.io", "a n@x.io", "ann@x..io", "<a>@x.io"]
        {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@x.io", "a".repeat(65))).is_err());
    }

    #[test]
    fn shard_names() {
        assert!(ShardName::parse("a").is_ok());
        assert!(ShardName::parse("eu_1").is_ok());
        for bad in ["", "A", "a-b", "a b", "a;", &"x".repeat(33)] {
            assert!(ShardName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
