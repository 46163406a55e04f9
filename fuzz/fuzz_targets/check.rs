//! Fuzzes what the check path does with untrusted bytes: the Authorization header parse and the
//! token verification, under an HS256 and an EdDSA key set. Any panic is a bug; so is accepting
//! a token, since the fuzzer cannot know the keys.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shopgate_core::token::{bearer, EdKeys, Hs256Key, KeyFile, Keys, Policy, Verifier};

const NOW: i64 = 1_800_000_000;

fn verifiers() -> &'static [Verifier; 2] {
    static V: OnceLock<[Verifier; 2]> = OnceLock::new();
    V.get_or_init(|| {
        let policy = Policy { issuer: "shopgate".into(), audience: "shopgate-api".into(), leeway_seconds: 30 };
        let hs = Hs256Key::new(b"fuzz-key-0123456789abcdef0123456789abcdef").expect("key");
        let file = KeyFile { signing_kid: None, keys: vec![KeyFile::generate_jwk("k1")] };
        let ed = Keys::EdDsa(EdKeys::from_file(&file).expect("keys"));
        [Verifier::new(hs, policy.clone()), Verifier::with_keys(ed, policy)]
    })
}

fuzz_target!(|data: &[u8]| {
    for v in verifiers() {
        if let Ok(token) = bearer(Some(data)) {
            assert!(v.verify(token, NOW).is_err(), "accepted a token without the key");
        }
        if let Ok(text) = std::str::from_utf8(data) {
            assert!(v.verify(text, NOW).is_err(), "accepted a token without the key");
        }
    }
});
