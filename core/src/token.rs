//! The access token: a compact JWS (JWT) with pinned algorithm and strict claim checks.
//!
//! Signing, the signature check and the published JWK set are `jsonwebtoken`'s (its
//! `rust_crypto` backend: RustCrypto's HMAC-SHA256 and ed25519-dalek). The check path verifies
//! the signature only (HS256: with the provider's verifier, kept per thread, see
//! [`Hs256Key`]; EdDSA: `jsonwebtoken::crypto::verify`), not with `jsonwebtoken::decode`: `decode`
//! would parse the header a second time into its own type and the claims twice (into ours and
//! into its own for `Validation`), 1.5x the instructions of a whole HS256 check (BENCHMARKS.md),
//! and its standard claim validation cannot be run on claims parsed once (`validate` is private
//! to the crate). So the claim checks are ours, a thin layer around the signature check:
//! - a token over 8 KiB is refused before any decoding, as is anything but three non-empty parts;
//! - the header and the claims are JSON objects, never an array of their fields in order;
//! - the one configured `alg`, compared exactly (so no `none` in any spelling, no HS256 while
//!   EdDSA is configured), and no `crit` header at all;
//! - exactly our claim set, with `sub` agreeing with `user_id` (see [`Claims`]), parsed once;
//! - the times against the caller's clock, then the issuer and the audience (see
//!   [`Verifier::verify`]).
//!
//! Base64url must be canonical (no padding, no stray bits in the last character): our decoding
//! of the header, the claims and the HS256 signature, and `jsonwebtoken`'s of the EdDSA signature,
//! all use the base64 crate's strict `URL_SAFE_NO_PAD`; `non_canonical_base64url_is_malformed`
//! pins it.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{Jwk as PublicJwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::UserId;
use crate::json::ObjectOnly;

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// By hand rather than serde's `untagged`, which first copies the value into a buffer of its own
/// to try each variant on: this is on every check's path.
impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrMany;

        impl<'de> Visitor<'de> for OneOrMany {
            type Value = Audience;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Audience, E> {
                Ok(Audience::One(v.to_owned()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Audience, A::Error> {
                let mut all = Vec::new();
                while let Some(one) = seq.next_element()? {
                    all.push(one);
                }
                Ok(Audience::Many(all))
            }
        }

        deserializer.deserialize_any(OneOrMany)
    }
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

/// The claims as the check path takes them: a JSON object (RFC 7519; serde's derive would also
/// take an array of the fields in order) with exactly our claims, a `user_id` in range that `sub`
/// spells, a token id and an email of sane length.
struct OurClaims(Verified);

impl<'de> Deserialize<'de> for OurClaims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ObjectOnly(claims) = ObjectOnly::<Claims>::deserialize(deserializer)?;
        let user = UserId::new(claims.user_id).map_err(|_| D::Error::custom("user_id out of range"))?;
        // An email no account can have (registration holds it to 254) would also overflow the
        // header nginx takes from the check's answer.
        if !is_decimal_of(&claims.sub, claims.user_id)
            || claims.jti.is_empty()
            || claims.jti.len() > 64
            || claims.email.len() > MAX_EMAIL_BYTES
        {
            return Err(D::Error::custom("sub, jti or email out of shape"));
        }
        Ok(OurClaims(Verified { user, claims }))
    }
}

/// The header fields our rules look at. Read by us rather than with `jsonwebtoken::Header`, which
/// takes an array for an object, knows no `alg` it was not built with (a JSON error rather than a
/// wrong algorithm) and accepts `crit: ["b64"]`.
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
    #[serde(default, borrow)]
    #[allow(dead_code)]
    typ: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    kid: Option<Cow<'a, str>>,
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
    #[error("unknown or missing key id")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("claims are not valid JSON of the expected shape")]
    BadClaims,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("lives longer than the stack allows")]
    Lifetime,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("revoked")]
    Revoked,
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
            TokenError::UnknownKey => "unknown_key",
            TokenError::Signature => "signature",
            TokenError::BadClaims => "bad_claims",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::Lifetime => "lifetime",
            TokenError::Issuer => "issuer",
            TokenError::Audience => "audience",
            TokenError::Revoked => "revoked",
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
    #[error("key set: {0}")]
    KeySet(String),
    /// A public key set (what a process that only checks tokens loads) with a private part.
    #[error(
        "a public key set holds {0}; a process that only checks tokens must hold no private key: give it the \
         public set that shopctl keys writes beside the private one (NAME.public.json)"
    )]
    NotPublic(String),
}

/// An HS256 signing and verification key. Its bytes never print.
#[derive(Clone)]
pub struct Hs256Key {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Tells this key from any other in [`HS256_VERIFIER`] (keys are reloaded, and tests hold several).
    id: u64,
}

thread_local! {
    /// jsonwebtoken's HS256 verifier (from its `CryptoProvider`) for the key last used on this
    /// thread. `crypto::verify` builds one per call, and building one computes the keyed HMAC
    /// state: about a sixth of a whole check. The verifier is not `Send`, so each thread keeps its
    /// own, rebuilt when the key changes.
    static HS256_VERIFIER: RefCell<Option<(u64, Box<dyn JwtVerifier>)>> = const { RefCell::new(None) };
}

impl Hs256Key {
    /// Checks `signature` over `message` with jsonwebtoken's HS256 verifier for this key.
    fn verify(&self, message: &[u8], signature: Vec<u8>) -> Result<(), TokenError> {
        HS256_VERIFIER.with(|cell| {
            let mut cell = cell.borrow_mut();
            let verifier = match &mut *cell {
                Some((id, verifier)) if *id == self.id => verifier,
                slot => {
                    let provider = CryptoProvider::try_get_default().ok_or(TokenError::Signature)?;
                    let verifier = (provider.verifier_factory)(&Algorithm::HS256, &self.decoding)
                        .map_err(|_| TokenError::Signature)?;
                    &mut slot.insert((self.id, verifier)).1
                }
            };
            verifier.verify(message, &signature).map_err(|_| TokenError::Signature)
        })
    }
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
        // jsonwebtoken refuses only an empty secret, which the length check above has refused.
        let too_short = |_| KeyError::TooShort(secret.len());
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret).map_err(too_short)?,
            decoding: DecodingKey::from_secret(secret).map_err(too_short)?,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }
}

/// Ed25519 keys by key id: every listed key verifies; the signing key (if this process signs)
/// is one of them. Rotation = add a key, make it the signing key, drop the old one once the
/// tokens it signed have expired.
#[derive(Clone)]
pub struct EdKeys {
    verify: Vec<(String, DecodingKey)>,
    signing: Option<(String, EncodingKey)>,
    /// The public keys as published, built once at load.
    published: JwkSet,
}

impl std::fmt::Debug for EdKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.verify.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("EdKeys").field("kids", &kids).field("signing", &self.signing.as_ref().map(|s| &s.0)).finish()
    }
}

/// A JWK of an Ed25519 key (RFC 8037), with the private part `d` when this process signs: the
/// key file's format. `jsonwebtoken`'s `Jwk` has no private part, so the file has its own type;
/// what is published is `jsonwebtoken`'s [`JwkSet`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub kid: String,
    pub x: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// The key file of EdDSA mode: a JWK set plus which key signs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_kid: Option<String>,
    pub keys: Vec<Jwk>,
}

impl KeyFile {
    /// A fresh Ed25519 key as a JWK with its private part.
    pub fn generate_jwk(kid: &str) -> Jwk {
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            kid: kid.into(),
            x: URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
            d: Some(URL_SAFE_NO_PAD.encode(key.to_bytes())),
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
        }
    }
}

impl KeyFile {
    /// The public set of this key set: every key without its private part and no signing key, what
    /// the processes that only check tokens (the backends) load: they can verify with it, never sign.
    pub fn public(&self) -> KeyFile {
        KeyFile { signing_kid: None, keys: self.keys.iter().map(|k| Jwk { d: None, ..k.clone() }).collect() }
    }
}

impl EdKeys {
    /// Checks a public key set ([`KeyFile::public`]) and takes its keys: a private part (`d`) or a
    /// signing key anywhere in it is refused, so a process that loads only public sets never holds
    /// a key that signs, even by mistake.
    pub fn from_public_file(file: &KeyFile) -> Result<Self, KeyError> {
        if let Some(jwk) = file.keys.iter().find(|k| k.d.is_some()) {
            return Err(KeyError::NotPublic(format!("the private part (d) of key {:?}", jwk.kid)));
        }
        if let Some(kid) = &file.signing_kid {
            return Err(KeyError::NotPublic(format!("a signing_kid ({kid:?})")));
        }
        Self::from_file(file)
    }

    /// Checks a key file and takes its keys. The checks of each key (a valid curve point, not of
    /// small order, `d` matching `x`) are ed25519-dalek's: `jsonwebtoken` takes key bytes as
    /// they come and would only fail on the first token.
    pub fn from_file(file: &KeyFile) -> Result<Self, KeyError> {
        let bad = |m: String| KeyError::KeySet(m);
        let mut verify: Vec<(String, DecodingKey)> = Vec::new();
        let mut published = JwkSet::default();
        let mut signing = None;
        for jwk in &file.keys {
            if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
                return Err(bad(format!("key {:?} is not an Ed25519 OKP key", jwk.kid)));
            }
            if jwk.kid.is_empty() || jwk.kid.len() > 64 || verify.iter().any(|(k, _)| k == &jwk.kid) {
                return Err(bad(format!("key id {:?} is empty, too long or used twice", jwk.kid)));
            }
            let x: [u8; 32] = URL_SAFE_NO_PAD
                .decode(&jwk.x)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad(format!("key {}: x is not 32 base64url bytes", jwk.kid)))?;
            let public =
                VerifyingKey::from_bytes(&x).map_err(|_| bad(format!("key {}: x is not a valid point", jwk.kid)))?;
            // jsonwebtoken verifies with ed25519-dalek's `verify`, not `verify_strict`. With keys
            // of small order refused here, the one difference left is a signature whose R is of
            // small order, which cannot be made without the private key either.
            if public.is_weak() {
                return Err(bad(format!("key {}: weak public key", jwk.kid)));
            }
            if let Some(d) = &jwk.d {
                let d: [u8; 32] = URL_SAFE_NO_PAD
                    .decode(d)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| bad(format!("key {}: d is not 32 base64url bytes", jwk.kid)))?;
                let private = SigningKey::from_bytes(&d);
                if private.verifying_key() != public {
                    return Err(bad(format!("key {}: d does not match x", jwk.kid)));
                }
                if file.signing_kid.as_deref() == Some(jwk.kid.as_str()) {
                    // jsonwebtoken takes an Ed25519 private key as PKCS#8 (RFC 8410) DER.
                    let der = private.to_pkcs8_der().map_err(|e| bad(format!("key {}: {e}", jwk.kid)))?;
                    signing = Some((jwk.kid.clone(), EncodingKey::from_ed_der(der.as_bytes())));
                }
            }
            let key = DecodingKey::from_ed_der(public.as_bytes());
            let mut public_jwk = PublicJwk::from_decoding_key(&key, Some(Algorithm::EdDSA))
                .map_err(|e| bad(format!("key {}: {e}", jwk.kid)))?;
            public_jwk.common.key_id = Some(jwk.kid.clone());
            public_jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            published.keys.push(public_jwk);
            verify.push((jwk.kid.clone(), key));
        }
        if verify.is_empty() {
            return Err(bad("no keys".into()));
        }
        if let Some(kid) = &file.signing_kid {
            if signing.is_none() {
                return Err(bad(format!("signing_kid {kid:?} names no key with a private part")));
            }
        }
        Ok(Self { verify, signing, published })
    }
}

/// The keys in force: one HS256 secret, or a set of Ed25519 keys.
#[derive(Debug, Clone)]
pub enum Keys {
    Hs256(Hs256Key),
    EdDsa(EdKeys),
}

impl Keys {
    /// The one `alg` a token may name.
    pub fn alg(&self) -> &'static str {
        match self {
            Keys::Hs256(_) => "HS256",
            Keys::EdDsa(_) => "EdDSA",
        }
    }

    fn algorithm(&self) -> Algorithm {
        match self {
            Keys::Hs256(_) => Algorithm::HS256,
            Keys::EdDsa(_) => Algorithm::EdDSA,
        }
    }

    pub fn can_sign(&self) -> bool {
        match self {
            Keys::Hs256(_) => true,
            Keys::EdDsa(k) => k.signing.is_some(),
        }
    }

    /// The public keys as a JWK set (RFC 7517); empty for HS256, whose key is secret.
    pub fn jwks(&self) -> serde_json::Value {
        let empty = JwkSet::default();
        let set = match self {
            Keys::Hs256(_) => &empty,
            Keys::EdDsa(k) => &k.published,
        };
        // A JWK set is strings and arrays of strings; serialising it cannot fail.
        serde_json::to_value(set).unwrap_or_default()
    }

    /// Signs claims into a compact token; `None` if this key set has no signing key.
    pub fn sign(&self, claims: &Claims) -> Option<String> {
        let mut header = jsonwebtoken::Header::new(self.algorithm());
        let key = match self {
            Keys::Hs256(key) => &key.encoding,
            Keys::EdDsa(k) => {
                let (kid, key) = k.signing.as_ref()?;
                header.kid = Some(kid.clone());
                key
            }
        };
        // The key was checked at load and matches the header's algorithm; the claims are plain
        // strings and integers. Nothing is left to fail.
        jsonwebtoken::encode(&header, claims, key).ok()
    }
}

/// The expected issuer and audience, the allowed clock skew, and how long a token may live.
#[derive(Debug, Clone)]
pub struct Policy {
    pub issuer: String,
    pub audience: String,
    pub leeway_seconds: i64,
    /// The longest life a token may have, `exp - iat` (`jwt.ttl_seconds`): a login's token gets
    /// it, `shopctl tokens mint` at most it, and the check refuses a token that claims more (plus
    /// the leeway), whoever signed it. So no token outlives what a revocation is kept for.
    pub ttl_seconds: i64,
}

impl Policy {
    /// How long after its `iat` a token can pass the check at the latest: its life, at most
    /// `ttl + leeway`, then the leeway past `exp`. A user-wide revocation cut-off is kept at least
    /// this long, and a retired key's tokens are gone after it.
    pub fn valid_for_at_most(&self) -> i64 {
        self.ttl_seconds.saturating_add(self.leeway_seconds.saturating_mul(2))
    }
}

/// Checks tokens. Cheap to clone; clones share the live keys, so a key reload reaches every
/// clone at once (the verifier's check path and the backend alike), and the cache of verified
/// tokens if it has one ([`Verifier::with_cache`]).
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Arc<ArcSwap<Keys>>,
    policy: Policy,
    cache: Option<Arc<VerifiedCache>>,
}

/// Tokens that passed every check, by the whole token (`jwt.verified_cache_entries`). A shopper's
/// token serves its hour of requests, and its Ed25519 check costs about 45 µs of CPU at the
/// verifier and again at the backend (BENCHMARKS.md), a lookup well under one. What a hit still
/// gets, at every request:
/// - the claim checks (the times above all: a cached token expires as any other);
/// - the keys: a hit counts only under the very key set it was checked with, so a reload (a key
///   retired or added) sends every token through the signature check again;
/// - revocation, which is the caller's, after [`Verifier::verify`], with or without the cache.
///
/// Only tokens that passed are kept, so forged or broken ones cannot push out real ones, and the
/// key is the whole token compared byte for byte, so no two tokens ever share an entry. Bounded in
/// entries, each about a kilobyte (the token, its claims); quick_cache evicts by S3-FIFO.
struct VerifiedCache {
    entries: quick_cache::sync::Cache<Box<str>, Arc<CachedToken>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct CachedToken {
    /// The key set the token was checked under; holding it keeps its address from being reused.
    keys: Arc<Keys>,
    verified: Verified,
}

impl fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedCache").field("capacity", &self.entries.capacity()).finish_non_exhaustive()
    }
}

/// How often a verifier's cache answered: tokens found (and still valid under the same keys),
/// and tokens that went through the signature check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheCounts {
    pub hits: u64,
    pub misses: u64,
}

impl Verifier {
    pub fn new(key: Hs256Key, policy: Policy) -> Self {
        Self::with_keys(Keys::Hs256(key), policy)
    }

    pub fn with_keys(keys: Keys, policy: Policy) -> Self {
        Self::shared(Arc::new(ArcSwap::from_pointee(keys)), policy)
    }

    /// A verifier over shared, swappable keys.
    pub fn shared(keys: Arc<ArcSwap<Keys>>, policy: Policy) -> Self {
        Self { keys, policy, cache: None }
    }

    /// This checker with a cache of up to `entries` verified tokens, which its clones share
    /// (see `VerifiedCache`); 0 keeps it without one.
    pub fn with_cache(self, entries: usize) -> Self {
        let cache = (entries > 0).then(|| {
            Arc::new(VerifiedCache {
                entries: quick_cache::sync::Cache::new(entries),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            })
        });
        Self { cache, ..self }
    }

    /// The cache's counts since start; `None` without a cache.
    pub fn cache_counts(&self) -> Option<CacheCounts> {
        self.cache
            .as_ref()
            .map(|c| CacheCounts { hits: c.hits.load(Ordering::Relaxed), misses: c.misses.load(Ordering::Relaxed) })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The keys in force right now.
    pub fn keys(&self) -> Arc<Keys> {
        self.keys.load_full()
    }

    /// Verifies a compact token at time `now` (unix seconds): the whole token and its header,
    /// then the signature (`jsonwebtoken::crypto::verify`), then the claims' shape (see
    /// `OurClaims`), the times, the issuer and the audience, in that order. A token in the cache,
    /// checked under the keys in force, skips to the claims' checks.
    pub fn verify(&self, token: &str, now: i64) -> Result<Verified, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let keys = self.keys.load();
        let Some(cache) = &self.cache else {
            return self.verify_with(&keys, token, now);
        };
        if let Some(hit) = cache.entries.get(token).filter(|hit| Arc::ptr_eq(&hit.keys, &keys)) {
            cache.hits.fetch_add(1, Ordering::Relaxed);
            self.check_claims(&hit.verified.claims, now)?;
            return Ok(hit.verified.clone());
        }
        cache.misses.fetch_add(1, Ordering::Relaxed);
        let verified = self.verify_with(&keys, token, now)?;
        let entry = CachedToken { keys: Arc::clone(&keys), verified: verified.clone() };
        cache.entries.insert(token.into(), Arc::new(entry));
        Ok(verified)
    }

    /// The whole check of `token` under `keys`, the cache aside.
    fn verify_with(&self, keys: &Keys, token: &str, now: i64) -> Result<Verified, TokenError> {
        let mut parts = token.split('.');
        let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        if h64.is_empty() || p64.is_empty() || s64.is_empty() {
            return Err(TokenError::Malformed);
        }
        let header_bytes = URL_SAFE_NO_PAD.decode(h64).map_err(|_| TokenError::Malformed)?;
        // RFC 7515/7519: the header and the claims are JSON objects, never an array of their
        // fields in order (`["HS256"]`), which serde's derive would also take.
        let ObjectOnly(header): ObjectOnly<Header> =
            serde_json::from_slice(&header_bytes).map_err(|_| TokenError::BadHeader)?;
        if header.crit.is_some() {
            return Err(TokenError::Crit);
        }
        // Exact, case-sensitive comparison with the one configured algorithm: "none", "None",
        // "HS384", and HS256 while EdDSA is configured (a public key used as an HMAC secret) fail.
        if header.alg != keys.alg() {
            return Err(TokenError::Algorithm);
        }
        let signing_input = &token[..h64.len() + 1 + p64.len()];
        match keys {
            Keys::Hs256(key) => {
                let signature = URL_SAFE_NO_PAD.decode(s64).map_err(|_| TokenError::Malformed)?;
                key.verify(signing_input.as_bytes(), signature)?;
            }
            Keys::EdDsa(ed) => {
                let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
                let key = ed.verify.iter().find(|(k, _)| k == kid).map(|(_, key)| key).ok_or(TokenError::UnknownKey)?;
                match jsonwebtoken::crypto::verify(s64, signing_input.as_bytes(), key, Algorithm::EdDSA) {
                    Ok(true) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::Base64(_)) => return Err(TokenError::Malformed),
                    // A key jsonwebtoken cannot use does not happen with keys checked at load.
                    Ok(false) | Err(_) => return Err(TokenError::Signature),
                }
            }
        }

        let payload = URL_SAFE_NO_PAD.decode(p64).map_err(|_| TokenError::Malformed)?;
        let OurClaims(verified) = serde_json::from_slice(&payload).map_err(|_| TokenError::BadClaims)?;
        self.check_claims(&verified.claims, now)?;
        Ok(verified)
    }

    /// The claims against the clock `now` and the policy: expiry, not-before, issued-at, the
    /// token's life, the issuer, the audience.
    fn check_claims(&self, claims: &Claims, now: i64) -> Result<(), TokenError> {
        let leeway = self.policy.leeway_seconds;
        if claims.exp.saturating_add(leeway) <= now {
            return Err(TokenError::Expired);
        }
        // iat may run up to 2 s ahead: a token issued right after a revocation cut-off is
        // stamped just past it (see the verifier's token endpoint).
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway))
            || claims.iat > now.saturating_add(leeway.max(2))
        {
            return Err(TokenError::NotYetValid);
        }
        if claims.exp.saturating_sub(claims.iat) > self.policy.ttl_seconds.saturating_add(leeway) {
            return Err(TokenError::Lifetime);
        }
        if claims.iss != self.policy.issuer {
            return Err(TokenError::Issuer);
        }
        if !claims.aud.contains(&self.policy.audience) {
            return Err(TokenError::Audience);
        }
        Ok(())
    }
}

/// The longest email a token may carry: RFC 5321's limit, the one registration enforces.
pub const MAX_EMAIL_BYTES: usize = 254;

/// Signs claims with an HS256 key into a compact token.
pub fn sign_hs256(key: &Hs256Key, claims: &Claims) -> String {
    Keys::Hs256(key.clone()).sign(claims).unwrap_or_default()
}

/// The revocation rule, one half: revoking every token of a user at `now` (password change,
/// operator disable) moves the user's cut-off to `now + 1`, so tokens issued up to and including
/// this second are revoked (`iat` has whole seconds), and never moves it back.
pub fn revoke_all_cutoff(current_cutoff: i64, now: i64) -> i64 {
    current_cutoff.max(now + 1)
}

/// The revocation rule, other half: a token issued at `now` is stamped no earlier than its user's
/// cut-off, so a token issued in the same second as a revocation is not born revoked.
pub fn issued_at(now: i64, cutoff: i64) -> i64 {
    now.max(cutoff)
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

/// Whether `text` is `n` as `n.to_string()` writes it (no sign, no leading zero), without writing it.
fn is_decimal_of(text: &str, n: u64) -> bool {
    text.bytes().all(|b| b.is_ascii_digit())
        && (text.len() == 1 || !text.starts_with('0'))
        && text.parse::<u64>().is_ok_and(|parsed| parsed == n)
}

/// A base64url character or the dot between a token's parts. Without branches, so that the check
/// of a whole token ([`bearer`], every request) compiles to a few vector instructions.
fn is_token_byte(b: u8) -> bool {
    let lower = b | 0x20;
    (b.is_ascii_digit()) | (lower.wrapping_sub(b'a') < 26) | (b == b'-') | (b == b'_') | (b == b'.')
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
    if token.is_empty() || !token.bytes().fold(true, |ok, b| ok & is_token_byte(b)) {
        return Err(TokenError::Malformed);
    }
    Ok(token)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use jsonwebtoken::Validation;

    const NOW: i64 = 1_800_000_000;

    fn key() -> Hs256Key {
        Hs256Key::new(b"0123456789abcdef0123456789abcdef-test").unwrap()
    }

    fn policy() -> Policy {
        Policy { issuer: "shopgate".into(), audience: "shopgate-api".into(), leeway_seconds: 5, ttl_seconds: 600 }
    }

    fn claims() -> Claims {
        new_claims(UserId::new(42).unwrap(), "ann@example.com", &policy(), NOW, 600)
    }

    fn forge(header: &str, payload: &str) -> String {
        let signing = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let sig = jsonwebtoken::crypto::sign(signing.as_bytes(), &key().encoding, Algorithm::HS256).unwrap();
        format!("{signing}.{sig}")
    }

    #[test]
    fn the_revocation_rule_revokes_this_second_and_never_issues_revoked_tokens() {
        let cut = revoke_all_cutoff(0, NOW);
        assert_eq!(cut, NOW + 1, "tokens of this very second are revoked");
        assert_eq!(revoke_all_cutoff(NOW + 50, NOW), NOW + 50, "a cut-off never moves back");
        let iat = issued_at(NOW, cut);
        assert!(iat >= cut, "a token issued right after is not caught by the cut-off");
        assert_eq!(issued_at(NOW + 9, cut), NOW + 9);
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
    fn each_hs256_key_is_checked_with_its_own_verifier_on_one_thread() {
        // The verifier kept per thread must follow the key: a key swapped in (a reload) or another
        // stack's key on the same thread never checks with the previous key's verifier.
        let other = Hs256Key::new(b"another-key-0123456789abcdef-0123456789").unwrap();
        let (mine, theirs) = (Verifier::new(key(), policy()), Verifier::new(other.clone(), policy()));
        let (t_mine, t_theirs) = (sign_hs256(&key(), &claims()), sign_hs256(&other, &claims()));
        for _ in 0..3 {
            assert!(mine.verify(&t_mine, NOW).is_ok());
            assert_eq!(mine.verify(&t_theirs, NOW).unwrap_err(), TokenError::Signature);
            assert!(theirs.verify(&t_theirs, NOW).is_ok());
            assert_eq!(theirs.verify(&t_mine, NOW).unwrap_err(), TokenError::Signature);
        }
        let live = Arc::new(ArcSwap::from_pointee(Keys::Hs256(key())));
        let shared = Verifier::shared(live.clone(), policy());
        assert!(shared.verify(&t_mine, NOW).is_ok());
        live.store(Arc::new(Keys::Hs256(other)));
        assert_eq!(shared.verify(&t_mine, NOW).unwrap_err(), TokenError::Signature, "after the reload");
        assert!(shared.verify(&t_theirs, NOW).is_ok());
    }

    #[test]
    fn a_cached_token_skips_the_signature_check_but_not_the_clock() {
        let v = Verifier::new(key(), policy()).with_cache(16);
        let c = claims();
        let token = sign_hs256(&key(), &c);
        assert_eq!(v.verify(&token, NOW).unwrap().user.get(), 42);
        assert_eq!(v.cache_counts(), Some(CacheCounts { hits: 0, misses: 1 }));
        let again = v.verify(&token, NOW + 1).unwrap();
        assert_eq!((again.user.get(), again.claims), (42, c));
        assert_eq!(v.cache_counts(), Some(CacheCounts { hits: 1, misses: 1 }), "the second check is a hit");
        let clone = v.clone();
        assert!(clone.verify(&token, NOW + 2).is_ok());
        assert_eq!(v.cache_counts().unwrap().hits, 2, "clones share the cache");
        // exp is NOW + 600, the leeway 5: a cached token expires as any other.
        assert_eq!(v.verify(&token, NOW + 605).unwrap_err(), TokenError::Expired);
        assert_eq!(v.verify(&token, NOW - 100).unwrap_err(), TokenError::NotYetValid);
        assert_eq!(Verifier::new(key(), policy()).with_cache(0).cache_counts(), None);
    }

    #[test]
    fn the_cache_keeps_only_good_tokens_and_forgets_them_on_a_key_reload() {
        let other = Hs256Key::new(b"another-key-0123456789abcdef-0123456789").unwrap();
        let live = Arc::new(ArcSwap::from_pointee(Keys::Hs256(key())));
        let v = Verifier::shared(live.clone(), policy()).with_cache(16);
        let (mine, theirs) = (sign_hs256(&key(), &claims()), sign_hs256(&other, &claims()));
        for _ in 0..2 {
            assert_eq!(v.verify(&theirs, NOW).unwrap_err(), TokenError::Signature);
        }
        // The same claims and header with the last signature character changed: another token.
        let mut tampered = mine.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'Q' } else { 'A' });
        assert!(v.verify(&mine, NOW).is_ok());
        assert!(v.verify(&tampered, NOW).is_err(), "one byte off a cached token is another token");
        assert_eq!(v.cache_counts().unwrap().hits, 0, "refused tokens are never cached");
        live.store(Arc::new(Keys::Hs256(other)));
        assert_eq!(v.verify(&mine, NOW).unwrap_err(), TokenError::Signature, "checked again after the reload");
        assert!(v.verify(&theirs, NOW).is_ok());
        assert_eq!(v.cache_counts(), Some(CacheCounts { hits: 0, misses: 6 }));
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
    fn a_token_living_longer_than_the_policy_allows_is_refused_whoever_signed_it() {
        let v = Verifier::new(key(), policy());
        let (ttl, leeway) = (v.policy().ttl_seconds, v.policy().leeway_seconds);
        let mut c = claims();
        c.exp = c.iat + ttl + leeway;
        let longest = sign_hs256(&key(), &c);
        assert!(v.verify(&longest, NOW).is_ok(), "ttl + leeway is allowed");
        // It passes until valid_for_at_most after its iat, and not a second longer.
        assert!(v.verify(&longest, c.iat + v.policy().valid_for_at_most() - 1).is_ok());
        assert_eq!(v.verify(&longest, c.iat + v.policy().valid_for_at_most()).unwrap_err(), TokenError::Expired);
        c.exp += 1;
        assert_eq!(v.verify(&sign_hs256(&key(), &c), NOW).unwrap_err(), TokenError::Lifetime);
        // A day-long token, a second old: refused at once, not only when it expires.
        c.exp = c.iat + 86_400;
        assert_eq!(v.verify(&sign_hs256(&key(), &c), NOW + 1).unwrap_err(), TokenError::Lifetime);
    }

    #[test]
    fn header_and_claims_must_be_json_objects_not_arrays() {
        let v = Verifier::new(key(), policy());
        let c = claims();
        let body = serde_json::to_string(&c).unwrap();
        // The claims' fields in declaration order: what serde would take for the struct.
        let positional =
            serde_json::json!([c.sub, c.user_id, c.email, c.iat, c.exp, null, c.jti, c.iss, c.aud]).to_string();
        assert!(v.verify(&forge(r#"{"alg":"HS256"}"#, &body), NOW).is_ok(), "the control passes");
        assert_eq!(v.verify(&forge(r#"["HS256"]"#, &body), NOW).unwrap_err(), TokenError::BadHeader);
        assert_eq!(v.verify(&forge(r#" ["HS256", "JWT"]"#, &body), NOW).unwrap_err(), TokenError::BadHeader);
        assert_eq!(v.verify(&forge(r#"{"alg":"HS256"}"#, &positional), NOW).unwrap_err(), TokenError::BadClaims);
        for junk in ["\"HS256\"", "null", "42", ""] {
            assert!(v.verify(&forge(junk, &body), NOW).is_err(), "{junk}");
        }
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
        // A validly signed email too long for any account (and for nginx's header buffers).
        let mut long = claims();
        long.email = format!("{}@example.com", "a".repeat(5000));
        assert_eq!(v.verify(&sign_hs256(&key(), &long), NOW).unwrap_err(), TokenError::BadClaims);
        let other = Verifier::new(key(), Policy { issuer: "evil".into(), ..policy() });
        assert_eq!(other.verify(&good, NOW).unwrap_err(), TokenError::Issuer);
        let other = Verifier::new(key(), Policy { audience: "other".into(), ..policy() });
        assert_eq!(other.verify(&good, NOW).unwrap_err(), TokenError::Audience);
    }

    fn ed_keys(signing: &str, kids: &[&str]) -> (KeyFile, Keys) {
        let file = KeyFile {
            signing_kid: Some(signing.into()),
            keys: kids.iter().map(|k| KeyFile::generate_jwk(k)).collect(),
        };
        let keys = Keys::EdDsa(EdKeys::from_file(&file).unwrap());
        (file, keys)
    }

    #[test]
    fn eddsa_round_trip_and_kid_checks() {
        let (file, keys) = ed_keys("k1", &["k1", "k2"]);
        let v = Verifier::with_keys(keys.clone(), policy());
        let t = keys.sign(&claims()).unwrap();
        assert_eq!(v.verify(&t, NOW).unwrap().user.get(), 42);
        // The same claims under an unknown kid, or no kid, fail.
        let (_, other) = ed_keys("k1", &["k1"]);
        assert_eq!(v.verify(&other.sign(&claims()).unwrap(), NOW).unwrap_err(), TokenError::Signature);
        let body = serde_json::to_string(&claims()).unwrap();
        let no_kid = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA"}"#),
            URL_SAFE_NO_PAD.encode(&body),
            t.rsplit('.').next().unwrap()
        );
        assert_eq!(v.verify(&no_kid, NOW).unwrap_err(), TokenError::UnknownKey);
        // A public key used as an HMAC secret: HS256 is not the configured algorithm.
        let x = URL_SAFE_NO_PAD.decode(&file.keys[0].x).unwrap();
        let mut secret = x.clone();
        secret.extend_from_slice(&x);
        let hs = sign_hs256(&Hs256Key::new(&secret).unwrap(), &claims());
        assert_eq!(v.verify(&hs, NOW).unwrap_err(), TokenError::Algorithm);
        // JWKS carries the public parts only.
        let jwks = keys.jwks().to_string();
        assert!(jwks.contains("\"kid\":\"k2\"") && !jwks.contains("\"d\""), "{jwks}");
    }

    #[test]
    fn rotation_through_shared_keys() {
        let (mut file, old) = ed_keys("k1", &["k1"]);
        let live = Arc::new(ArcSwap::from_pointee(old.clone()));
        let v = Verifier::shared(live.clone(), policy());
        let t_old = old.sign(&claims()).unwrap();
        file.keys.push(KeyFile::generate_jwk("k2"));
        file.signing_kid = Some("k2".into());
        let both = Keys::EdDsa(EdKeys::from_file(&file).unwrap());
        live.store(Arc::new(both.clone()));
        let t_new = both.sign(&claims()).unwrap();
        assert!(v.verify(&t_old, NOW).is_ok() && v.verify(&t_new, NOW).is_ok(), "overlap: both pass");
        file.keys.remove(0);
        live.store(Arc::new(Keys::EdDsa(EdKeys::from_file(&file).unwrap())));
        assert_eq!(v.verify(&t_old, NOW).unwrap_err(), TokenError::UnknownKey, "retired key");
        assert!(v.verify(&t_new, NOW).is_ok());
    }

    #[test]
    fn key_files_are_checked() {
        let (mut file, _) = ed_keys("k1", &["k1"]);
        let mut wrong_d = file.clone();
        wrong_d.keys[0].d = KeyFile::generate_jwk("x").d;
        assert!(EdKeys::from_file(&wrong_d).unwrap_err().to_string().contains("does not match"));
        file.signing_kid = Some("nope".into());
        assert!(EdKeys::from_file(&file).is_err());
        file.signing_kid = None;
        file.keys[0].d = None;
        let verify_only = Keys::EdDsa(EdKeys::from_file(&file).unwrap());
        assert!(!verify_only.can_sign() && verify_only.sign(&claims()).is_none());
    }

    #[test]
    fn a_public_set_verifies_never_signs_and_refuses_any_private_part() {
        let (mut file, keys) = ed_keys("k2", &["k1", "k2"]);
        file.keys[0].d = None; // k1 verifies only, as after a rotation
        let public = file.public();
        assert!(public.signing_kid.is_none() && public.keys.iter().all(|k| k.d.is_none()), "{public:?}");
        let text = serde_json::to_string(&public).unwrap();
        assert!(!text.contains("\"d\"") && !text.contains("signing_kid"), "{text}");
        let kids: Vec<(&str, &str)> = public.keys.iter().map(|k| (k.kid.as_str(), k.x.as_str())).collect();
        assert_eq!(kids, file.keys.iter().map(|k| (k.kid.as_str(), k.x.as_str())).collect::<Vec<_>>());
        // Read back from its text, it checks every token the private set signs, and signs none.
        let read: KeyFile = serde_json::from_str(&text).unwrap();
        let verify_only = Keys::EdDsa(EdKeys::from_public_file(&read).unwrap());
        assert!(!verify_only.can_sign() && verify_only.sign(&claims()).is_none());
        let v = Verifier::with_keys(verify_only, policy());
        assert_eq!(v.verify(&keys.sign(&claims()).unwrap(), NOW).unwrap().user.get(), 42);
        // The private set itself, a single private part, or a signing key named: refused.
        let e = EdKeys::from_public_file(&file).unwrap_err();
        assert_eq!(e, KeyError::NotPublic("the private part (d) of key \"k2\"".into()));
        assert!(e.to_string().contains("must hold no private key"), "{e}");
        let mut one_d = public.clone();
        one_d.keys[0].d = KeyFile::generate_jwk("x").d;
        assert!(matches!(EdKeys::from_public_file(&one_d), Err(KeyError::NotPublic(_))));
        let mut named = public.clone();
        named.signing_kid = Some("k2".into());
        assert!(matches!(EdKeys::from_public_file(&named), Err(KeyError::NotPublic(_))));
    }

    /// RFC 7515 appendix A.1: a valid HS256 signature under its own key, long expired, with
    /// none of our claims. Refused whatever the reason, never accepted.
    #[test]
    fn rfc7515_a1_is_refused() {
        let key = URL_SAFE_NO_PAD
            .decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
            .unwrap();
        let v = Verifier::new(Hs256Key::new(&key).unwrap(), policy());
        let err = v.verify(RFC7515_A1, NOW).unwrap_err();
        assert_eq!(err, TokenError::BadClaims, "signature is valid; the claims are not ours");
    }

    pub const RFC7515_A1: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    /// Each byte string has one base64url spelling; another spelling (padding, the standard
    /// alphabet, stray bits in the last character) is refused in every part, even under a valid
    /// signature over that spelling.
    #[test]
    fn non_canonical_base64url_is_malformed() {
        let v = Verifier::new(key(), policy());
        let sign = |h64: &str, p64: &str| {
            let input = format!("{h64}.{p64}");
            let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key().encoding, Algorithm::HS256).unwrap();
            format!("{input}.{sig}")
        };
        // The last character's unused low bit set: the same bytes to a lax decoder.
        let stray = |part: &str| {
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let (head, last) = part.split_at(part.len() - 1);
            let i = alphabet.iter().position(|&c| c == last.as_bytes()[0]).unwrap();
            format!("{head}{}", alphabet[i | 1] as char)
        };
        // A header whose encoding has unused bits in its last character, as have the claims'.
        let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256", "typ":"JWT"}"#);
        assert_ne!(h.len() % 4, 0);
        let p = (1..4)
            .map(|n| {
                let mut c = claims();
                c.email = format!("{}@example.com", "a".repeat(n));
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap())
            })
            .find(|p| p.len() % 4 != 0)
            .unwrap();
        let good = sign(&h, &p);
        assert!(v.verify(&good, NOW).is_ok(), "the control passes");
        let s = good.rsplit('.').next().unwrap();
        let cut = |part: &str| part[..part.len() - part.len() % 4].to_owned();
        let pad = |part: &str| format!("{part}{}", "=".repeat((4 - part.len() % 4) % 4));
        for (what, token) in [
            ("stray bits in the header", sign(&stray(&h), &p)),
            ("stray bits in the claims", sign(&h, &stray(&p))),
            ("stray bits in the signature", format!("{h}.{p}.{}", stray(s))),
            ("padded claims", sign(&h, &pad(&p))),
            ("padded signature", format!("{h}.{p}.{}", pad(s))),
            ("standard alphabet in the claims", sign(&h, &format!("{}+/", cut(&p)))),
            ("standard alphabet in the signature", format!("{h}.{p}.{}+/", cut(s))),
        ] {
            assert_eq!(v.verify(&token, NOW).unwrap_err(), TokenError::Malformed, "{what}: {token}");
        }
    }

    /// What `/auth/jwks.json` publishes is enough for anyone to check our tokens with a JWT
    /// library: here `jsonwebtoken` itself, taking the key out of the published set by `kid`.
    #[test]
    fn the_published_jwk_set_verifies_our_tokens() {
        let (_, keys) = ed_keys("k2", &["k1", "k2"]);
        let token = keys.sign(&claims()).unwrap();
        let set: JwkSet = serde_json::from_value(keys.jwks()).unwrap();
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        assert_eq!(kid, "k2");
        let key = DecodingKey::from_jwk(set.find(&kid).unwrap()).unwrap();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.set_audience(&["shopgate-api"]);
        let got = jsonwebtoken::decode::<Claims>(&token, &key, &validation).unwrap();
        assert_eq!(got.claims, claims_with_jti(&got.claims.jti));
        assert!(jsonwebtoken::decode::<Claims>(
            &token,
            &DecodingKey::from_jwk(set.find("k1").unwrap()).unwrap(),
            &validation
        )
        .is_err());
    }

    fn claims_with_jti(jti: &str) -> Claims {
        Claims { jti: jti.into(), ..claims() }
    }

    #[test]
    fn a_subject_is_the_user_id_exactly_as_written_in_decimal() {
        for n in [1u64, 7, 10, 42, 1_000_000, u64::MAX] {
            assert!(is_decimal_of(&n.to_string(), n), "{n}");
        }
        for (text, n) in [("07", 7), ("+7", 7), ("7 ", 7), ("", 0), ("8", 7), ("18446744073709551616", 0), ("-1", 1)] {
            assert!(!is_decimal_of(text, n), "{text:?} taken for {n}");
        }
    }

    #[test]
    fn an_audience_is_one_string_or_an_array_of_strings() {
        let one: Audience = serde_json::from_str(r#""shopgate-api""#).unwrap();
        assert_eq!(one, Audience::One("shopgate-api".into()));
        let many: Audience = serde_json::from_str(r#"["a", "shopgate-api"]"#).unwrap();
        assert_eq!(many, Audience::Many(vec!["a".into(), "shopgate-api".into()]));
        assert!(many.contains("shopgate-api") && !many.contains("b"));
        for bad in ["1", "null", r#"{"a":1}"#, r#"["a", 1]"#, "true"] {
            assert!(serde_json::from_str::<Audience>(bad).is_err(), "{bad}");
        }
        // Written back as it came.
        assert_eq!(serde_json::to_string(&many).unwrap(), r#"["a","shopgate-api"]"#);
        assert_eq!(serde_json::to_string(&one).unwrap(), r#""shopgate-api""#);
    }

    #[test]
    fn a_token_byte_is_exactly_base64url_or_a_dot() {
        for b in 0..=u8::MAX {
            let expected = b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
            assert_eq!(is_token_byte(b), expected, "byte {b:#04x}");
            let token = format!("Bearer ab{}cd", char::from(b));
            if b.is_ascii() && b != b' ' {
                assert_eq!(bearer(Some(token.as_bytes())).is_ok(), expected, "byte {b:#04x}");
            }
        }
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
