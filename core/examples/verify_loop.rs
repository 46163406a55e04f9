//! Verifies one good token N times, for counting the check path's instructions under callgrind:
//! `valgrind --tool=callgrind target/release/examples/verify_loop hs256 N` at two values of N;
//! the difference divided by the difference in N is the cost of one verification. `hs256-cached`
//! and `eddsa-cached` do the same through the cache of verified tokens (`jwt.verified_cache_entries`):
//! the cost of a hit.

use shopgate_core::token::{new_claims, EdKeys, Hs256Key, KeyFile, Keys, Policy, Verifier};
use shopgate_core::UserId;

fn main() {
    let mut args = std::env::args().skip(1);
    let alg = args.next().unwrap_or_else(|| "hs256".into());
    let n: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let policy =
        Policy { issuer: "shopgate".into(), audience: "shopgate-api".into(), leeway_seconds: 30, ttl_seconds: 3600 };
    let now = 1_800_000_000;
    let (name, cached) = match alg.strip_suffix("-cached") {
        Some(name) => (name, true),
        None => (alg.as_str(), false),
    };
    let keys = match name {
        "eddsa" => {
            let file = KeyFile { signing_kid: Some("k1".into()), keys: vec![KeyFile::generate_jwk("k1")] };
            Keys::EdDsa(EdKeys::from_file(&file).expect("key file"))
        }
        _ => Keys::Hs256(Hs256Key::new(b"bench-key-0123456789abcdef0123456789abcdef").expect("key")),
    };
    let user = UserId::new(4242).expect("user id");
    let token = keys.sign(&new_claims(user, "bench@example.com", &policy, now, 600)).expect("signing key");
    let verifier = Verifier::with_keys(keys, policy).with_cache(if cached { 1024 } else { 0 });
    let mut ok = 0u64;
    for _ in 0..n {
        ok += u64::from(verifier.verify(std::hint::black_box(&token), now).is_ok());
    }
    assert_eq!(ok, n, "every verification passes");
    println!("{alg}: {n} verifications");
}
