//! The access token: a compact JWS (JWT) with pinned algorithm and strict claim checks.
//!
//! Written here rather than taken from a general JWT library because the check path must be
//! exact about what it refuses (any `alg` but the configured one in any spelling, a `crit` header,
//! duplicate or mistyped claims, non-canonical base64url, tokens over 8 KiB) and fast: one HMAC,
//! two small JSON parses, no allocation-heavy generic machinery.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ids::UserId;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// An HS256 key shorter than this is refused at start.
pub const MIN_HS256_KEY_BYTES: usize = 32;

/// Keys that appear in tutorials and templates; a service configured with one refuses to start.
const PLACEHOLDER_KEYS: &[&str] = &[
    "secret",
    "changeme",
    "change-me",
    "your-secret-key",
    "your_secret_key",
    "your-256-bit-secret",
    "supersecretkey",
    "mysecretkey",
    "jwt-secret",
    "secret-key",
    "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
];

/// What a token says once it has passed every check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    pub sub: String,
    pub user_id: u64,
    pub email: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub jti: String,
    pub iss: String,
    pub aud: Audience,
}

/// RFC 7519 allows `aud` as one string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, want: &str) -> bool {
        match self {
            Audience::One(a) => a == want,
            Audience::Many(v) => v.iter().any(|a| a == want),
        }
    }
}

/// A token that passed every check, with its user id already parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user: UserId,
    pub claims: Claims,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    #[allow(dead_code)]
    typ: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Why a token was refused. Every variant is a plain 401 to clients; the variant goes to logs
/// and metrics only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("token longer than 8 KiB")]
    TooLong,
    #[error("not three base64url parts")]
    Malformed,
    #[error("header is not valid JSON of the expected shape")]
    BadHeader,
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("crit header present")]
    Crit,
    #[error("bad signature")]
    Signature,
    #[error("claims are not valid JSON of the expected shape")]
    BadClaims,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
}

impl TokenError {
    /// A short stable label, for metrics.
    pub fn label(self) -> &'static str {
        match self {
            TokenError::Missing => "missing",
            TokenError::TooLong => "too_long",
            TokenError::Malformed => "malformed",
            TokenError::BadHeader => "bad_header",
            TokenError::Algorithm => "algorithm",
            TokenError::Crit => "crit",
            TokenError::Signature => "signature",
            TokenError::BadClaims => "bad_claims",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::Issuer => "issuer",
            TokenError::Audience => "audience",
        }
    }
}

/// Why a key was refused at start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the HS256 key is {0} bytes; it must be at least {MIN_HS256_KEY_BYTES}")]
    TooShort(usize),
    #[error("the HS256 key is a well-known placeholder; generate a random one")]
    Placeholder,
}

/// An HS256 signing and verification key. Its bytes never print.
#[derive(Clone)]
pub struct Hs256Key {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Hs256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hs256Key(<redacted>)")
    }
}

impl Hs256Key {
    pub fn new(secret: &[u8]) -> Result<Self, KeyError> {
        if let Ok(text) = std::str::from_utf8(secret) {
            let lower = text.trim().to_ascii_lowercase();
            if PLACEHOLDER_KEYS.contains(&lower.as_str()) {
                return Err(KeyError::Placeholder);
            }
        }
        if secret.len() < MIN_HS256_KEY_BYTES {
            return Err(KeyError::TooShort(secret.len()));
        }
        if secret.iter().all(|&b| b == secret[0]) {
            return Err(KeyError::Placeholder);
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| KeyError::TooShort(0))?;
        Ok(Self { mac })
    }
}

/// The expected issuer and audience, and the allowed clock skew.
#[derive(Debug, Clone)]
pub struct Policy {
    pub issuer: String,
    pub audience: String,
    pub leeway_seconds: i64,
}

/// Checks tokens. Cheap to clone; shared by the verifier's check path and the backend.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: Hs256Key,
    policy: Policy,
}

impl Verifier {
    pub fn new(key: Hs256Key, policy: Policy) -> Self {
        Self { key, policy }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Verifies a compact token at time `now` (unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Verified, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        if h64.is_empty() || p64.is_empty() || s64.is_empty() {
            return Err(TokenError::Malformed);
        }
        let header_bytes = URL_SAFE_NO_PAD.decode(h64).map_err(|_| TokenError::Malformed)?;
        let header: Header = serde_json::from_slice(&header_bytes).map_err(|_| TokenError::BadHeader)?;
        if header.crit.is_some() {
            return Err(TokenError::Crit);
        }
        // Exact, case-sensitive comparison: "none", "None", "NONE", "HS384", "RS256" all fail here.
        if header.alg != "HS256" {
            return Err(TokenError::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD.decode(s64).map_err(|_| TokenError::Malformed)?;
        let signing_input = &token[..h64.len() + 1 + p64.len()];
        let mut mac = self.key.mac.clone();
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;

        let payload = URL_SAFE_NO_PAD.decode(p64).map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::BadClaims)?;
        let user = UserId::new(claims.user_id).map_err(|_| TokenError::BadClaims)?;
        if claims.sub != claims.user_id.to_string() || claims.jti.is_empty() {
            return Err(TokenError::BadClaims);
        }
        let leeway = self.policy.leeway_seconds;
        if claims.exp.saturating_add(leeway) <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) || claims.iat > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iss != self.policy.issuer {
            return Err(TokenError::Issuer);
        }
        if !claims.aud.contains(&self.policy.audience) {
            return Err(TokenError::Audience);
        }
        Ok(Verified { user, claims })
    }
}

/// Signs claims with an HS256 key into a compact token.
pub fn sign_hs256(key: &Hs256Key, claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    // Claims are plain strings and integers; serialising them cannot fail.
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let mut mac = key.mac.clone();
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// A fresh random token id (128 bits, base64url).
pub fn new_jti() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// Builds the claims of a new token for `user`.
pub fn new_claims(user: UserId, email: &str, policy: &Policy, now: i64, ttl_seconds: i64) -> Claims {
    Claims {
        sub: user.to_string(),
        user_id: user.get(),
        email: email.to_owned(),
        iat: now,
        exp: now + ttl_seconds,
        nbf: None,
        jti: new_jti(),
        iss: policy.issuer.clone(),
        aud: Audience::One(policy.audience.clone()),
    }
}

/// Takes the token out of an `Authorization` header value: `Bearer <token>`, the scheme
/// case-insensitive (RFC 7235), exactly one space, no further whitespace.
pub fn bearer(header: Option<&[u8]>) -> Result<&str, TokenError> {
    let raw = header.ok_or(TokenError::Missing)?;
    if raw.len() > MAX_TOKEN_BYTES + 7 {
        return Err(TokenError::TooLong);
    }
    let text = std::str::from_utf8(raw).map_err(|_| TokenError::Malformed)?;
    let (scheme, token) = text.split_once(' ').ok_or(TokenError::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Missing);
    }
    if token.is_empty() || token.bytes().any(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')) {
        return Err(TokenError::Malformed);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn key() -> Hs256Key {
        Hs256Key::new(b"0123456789abcdef0123456789abcdef-test").unwrap()
    }

    fn policy() -> Policy {
        Policy { issuer: "shopgate".into(), audience: "shopgate-api".into(), leeway_seconds: 5 }
    }

    fn claims() -> Claims {
        new_claims(UserId::new(42).unwrap(), "ann@example.com", &policy(), NOW, 600)
    }

    fn forge(header: &str, payload: &str) -> String {
        let signing = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let mut mac = key().mac;
        mac.update(signing.as_bytes());
        format!("{signing}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn round_trip() {
        let v = Verifier::new(key(), policy());
        let c = claims();
        let got = v.verify(&sign_hs256(&key(), &c), NOW).unwrap();
        assert_eq!(got.claims, c);
        assert_eq!(got.user.get(), 42);
    }

    #[test]
    fn refuses_weak_keys() {
        assert_eq!(Hs256Key::new(b"short").unwrap_err(), KeyError::TooShort(5));
        assert_eq!(Hs256Key::new(b"your-256-bit-secret").unwrap_err(), KeyError::Placeholder);
        assert_eq!(Hs256Key::new(&[b'a'; 64]).unwrap_err(), KeyError::Placeholder);
    }

    #[test]
    fn time_checks() {
        let v = Verifier::new(key(), policy());
        let t = sign_hs256(&key(), &claims());
        assert_eq!(v.verify(&t, NOW + 600 + 5).unwrap_err(), TokenError::Expired);
        assert!(v.verify(&t, NOW + 600 + 4).is_ok(), "leeway applies");
        let mut c = claims();
        c.nbf = Some(NOW + 60);
        assert_eq!(v.verify(&sign_hs256(&key(), &c), NOW).unwrap_err(), TokenError::NotYetValid);
    }

    #[test]
    fn refuses_forgeries_and_junk() {
        let v = Verifier::new(key(), policy());
        let body = serde_json::to_string(&claims()).unwrap();
        for alg in ["none", "None", "NONE", "nOnE", "HS384", "RS256", "hs256", "EdDSA"] {
            let t = forge(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#), &body);
            assert_eq!(v.verify(&t, NOW).unwrap_err(), TokenError::Algorithm, "{alg}");
        }
        let t = forge(r#"{"alg":"HS256","crit":["exp"]}"#, &body);
        assert_eq!(v.verify(&t, NOW).unwrap_err(), TokenError::Crit);
        let t = forge(r#"{"alg":"HS256","alg":"none"}"#, &body);
        assert_eq!(v.verify(&t, NOW).unwrap_err(), TokenError::BadHeader, "duplicate alg");
        let good = sign_hs256(&key(), &claims());
        let stripped = format!("{}.", good.rsplit_once('.').unwrap().0);
        assert_eq!(v.verify(&stripped, NOW).unwrap_err(), TokenError::Malformed);
        let mut tampered = good.clone().into_bytes();
        let mid = good.find('.').unwrap() + 5;
        tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
        assert!(v.verify(std::str::from_utf8(&tampered).unwrap(), NOW).is_err());
        assert_eq!(v.verify("a.b", NOW).unwrap_err(), TokenError::Malformed);
        assert_eq!(v.verify("a.b.c.d", NOW).unwrap_err(), TokenError::Malformed);
        assert_eq!(v.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), NOW).unwrap_err(), TokenError::TooLong);
        let padded = format!("{}=", good);
        assert!(v.verify(&padded, NOW).is_err());
        // Claims of the wrong type, a sub that disagrees with user_id, an id out of range.
        for bad in [
            body.replace("\"user_id\":42", "\"user_id\":\"42\""),
            body.replace("\"sub\":\"42\"", "\"sub\":\"43\""),
            body.replace("\"user_id\":42", "\"user_id\":0").replace("\"sub\":\"42\"", "\"sub\":\"0\""),
            body.replace("\"exp\":", "\"unknown\":1,\"exp\":"),
        ] {
            let t = forge(r#"{"alg":"HS256"}"#, &bad);
            assert_eq!(v.verify(&t, NOW).unwrap_err(), TokenError::BadClaims, "{bad}");
        }
        let other = Verifier::new(key(), Policy { issuer: "evil".into(), ..policy() });
        assert_eq!(other.verify(&good, NOW).unwrap_err(), TokenError::Issuer);
        let other = Verifier::new(key(), Policy { audience: "other".into(), ..policy() });
        assert_eq!(other.verify(&good, NOW).unwrap_err(), TokenError::Audience);
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(Some(b"Bearer abc.def.ghi")).unwrap(), "abc.def.ghi");
        assert_eq!(bearer(Some(b"bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(None).unwrap_err(), TokenError::Missing);
        assert_eq!(bearer(Some(b"Basic abc")).unwrap_err(), TokenError::Missing);
        assert_eq!(bearer(Some(b"Bearer")).unwrap_err(), TokenError::Missing);
        assert_eq!(bearer(Some(b"Bearer  abc")).unwrap_err(), TokenError::Malformed);
        assert_eq!(bearer(Some(b"Bearer a b")).unwrap_err(), TokenError::Malformed);
        assert_eq!(bearer(Some(b"Bearer \xff")).unwrap_err(), TokenError::Malformed);
    }
}
