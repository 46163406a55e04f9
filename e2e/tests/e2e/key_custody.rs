//! Issue 27, point 2: on an EdDSA stack no backend holds a private key, and a token signed with
//! anything a backend holds is refused, by nginx's check and by a backend asked directly.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use shopgate_core::config::{Config, KeyUse};
use shopgate_core::token::{EdKeys, KeyFile, Keys};
use shopgate_e2e::Shop as _;
use shopgate_e2e::{backend_process, bin, Options, Stack, KEYS_FILE, PUBLIC_KEYS_FILE};

fn eddsa_stack() -> Options {
    Options { eddsa: true, ..Default::default() }
}

/// A running process's environment, from `/proc`.
fn environ(pid: u32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|&b| b == 0)
        .filter_map(|kv| String::from_utf8_lossy(kv).split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn read_set(path: &Path) -> (String, KeyFile) {
    let text = std::fs::read_to_string(path).unwrap();
    let set = serde_json::from_str(&text).unwrap();
    (text, set)
}

#[tokio::test]
async fn backends_hold_only_the_public_set_and_refuse_a_private_one() {
    let stack = Stack::start_with(eddsa_stack()).await;
    let dir = stack.dir.path();
    let public = dir.join(PUBLIC_KEYS_FILE);

    // The public set: the private set's keys, no private part, no signing key, readable by all.
    let (text, set) = read_set(&public);
    assert!(!text.contains("\"d\"") && !text.contains("signing_kid"), "{text}");
    EdKeys::from_public_file(&set).unwrap();
    let (_, private) = read_set(&dir.join(KEYS_FILE));
    assert_eq!(serde_json::to_value(&set).unwrap(), serde_json::to_value(private.public()).unwrap());
    assert_eq!(std::fs::metadata(&public).unwrap().permissions().mode() & 0o777, 0o644);

    // Each backend process, as it runs: the config its environment gives it, loaded as a backend
    // loads it, takes the public set; the key set it is told of does not exist; no HS256 key.
    for shard in ["a", "b"] {
        let name = backend_process(shard, 0);
        let env = environ(stack.pid(&name).unwrap());
        let var = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let config_path = var("SHOP_CONFIG").unwrap();
        let shop_vars = env.iter().filter(|(k, _)| k.starts_with("SHOP")).cloned();
        let config = Config::load_with_env_for(Path::new(&config_path), shop_vars, KeyUse::Verify).unwrap();
        assert_eq!(config.jwt.key_file(), Some(public.as_path()), "{name}");
        assert!(!config.jwt.keys().can_sign(), "{name} could sign");
        let keys_file = var("SHOP__JWT__KEYS_FILE").unwrap_or_else(|| panic!("{name} is told of no keys_file"));
        assert!(!Path::new(&keys_file).exists(), "{name} is told of a key set that exists: {keys_file}");
        assert!(var("SHOP_JWT_KEY").is_none(), "{name} has an HS256 key");
    }
    // And it serves: the backends started without the private set.
    let (_, token) = stack.shopper().await;
    stack.order(&token).await;

    // A backend pointed at the private set refuses to start, in one line naming the file; so
    // does one given no public set, which would take jwt.keys_file.
    let no_public = dir.join("shop-no-public.toml");
    let toml = std::fs::read_to_string(&stack.config_path).unwrap();
    let without: String =
        toml.lines().filter(|l| !l.starts_with("public_keys_file")).map(|l| format!("{l}\n")).collect();
    assert_ne!(without, toml);
    std::fs::write(&no_public, without).unwrap();
    for (config, public) in [(&stack.config_path, Some(dir.join(KEYS_FILE))), (&no_public, None)] {
        let mut backend = Command::new(bin("backend"));
        backend.args(["--shard", "a"]).env("SHOP_CONFIG", config).env_remove("SHOP_JWT_KEY");
        if let Some(p) = public {
            backend.env("SHOP__JWT__PUBLIC_KEYS_FILE", p);
        }
        let out = backend.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(KEYS_FILE) && err.contains("must hold no private key"), "{err}");
        assert!(err.contains("(d) of key \"k1\""), "{err}");
    }
}

/// HS256 over the claims, with `secret` as the HMAC key.
fn hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    use hmac::Mac as _;
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!("{}.{}", b64(header), b64(claims));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// `GET /api/orders` with `token` for `user`: through nginx, and at the user's backend directly.
async fn statuses(stack: &Stack, user: u64, token: &str) -> (u16, u16) {
    let edge = stack.http.get(stack.api("/api/orders?limit=1")).bearer_auth(token).send().await.unwrap();
    let shard = if user.is_multiple_of(2) { "a" } else { "b" }; // even buckets: a
    let addr = stack.config.shard(shard).unwrap().addr();
    let direct = stack
        .internal
        .get(format!("http://{addr}/api/orders?limit=1"))
        .bearer_auth(token)
        .header("X-User-Id", user.to_string())
        .send()
        .await
        .unwrap();
    (edge.status().as_u16(), direct.status().as_u16())
}

#[tokio::test]
async fn a_token_signed_with_anything_a_backend_holds_is_refused() {
    let stack = Stack::start_with(eddsa_stack()).await;
    let (public_text, public) = read_set(&stack.dir.path().join(PUBLIC_KEYS_FILE));
    let k1 = &public.keys[0];
    assert_eq!(k1.kid, "k1");
    let (user, token) = stack.shopper().await;
    assert_eq!(statuses(&stack, user, &token).await, (200, 200), "the verifier's token passes");
    stack.order(&token).await;
    let payload = |token: &str| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap()
    };
    // The claims of a real login, so only the signature can be wrong.
    let claims = payload(&token);
    let typed: shopgate_core::token::Claims = serde_json::from_value(claims.clone()).unwrap();

    let mut forged: Vec<(String, String)> = Vec::new();
    // Algorithm confusion: the public key, in each form a backend holds it, as an HMAC secret.
    let x = URL_SAFE_NO_PAD.decode(&k1.x).unwrap();
    let jwk = serde_json::to_vec(k1).unwrap();
    for (what, secret) in [
        ("x raw", x.clone()),
        ("x base64url", k1.x.as_bytes().to_vec()),
        ("x base64", base64::engine::general_purpose::STANDARD.encode(&x).into_bytes()),
        ("the JWK", jwk),
        ("the public set file", public_text.into_bytes()),
    ] {
        for header in [
            json!({"alg": "HS256"}),
            json!({"alg": "HS256", "kid": "k1"}),
            json!({"alg": "HS256", "typ": "JWT", "kid": "k1"}),
        ] {
            forged
                .push((format!("HS256 with {what} as the secret, header {header}"), hs256(&secret, &header, &claims)));
        }
    }
    // EdDSA with a key not in the set, under its own kid and under the set's kid.
    for kid in ["k9", "k1"] {
        let other = KeyFile { signing_kid: Some(kid.into()), keys: vec![KeyFile::generate_jwk(kid)] };
        let keys = Keys::EdDsa(EdKeys::from_file(&other).unwrap());
        forged.push((format!("EdDSA by another key, kid {kid}"), keys.sign(&typed).unwrap()));
    }
    // The set's own public key and a real signature, spliced onto other claims.
    let mut other_claims = claims.clone();
    other_claims["exp"] = json!(claims["exp"].as_i64().unwrap() - 1);
    let parts: Vec<&str> = token.split('.').collect();
    let spliced = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(other_claims.to_string()), parts[2]);
    forged.push(("a real signature over other claims".into(), spliced));

    for (what, token) in &forged {
        assert_eq!(statuses(&stack, user, token).await, (401, 401), "{what}");
    }
    // Nothing forged got through meanwhile, and the real token still does.
    assert_eq!(statuses(&stack, user, &token).await, (200, 200));
    stack.order(&token).await;
    let orders: Value =
        stack.http.get(stack.api("/api/orders")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(orders["orders"].as_array().map(Vec::len), Some(2), "{orders}");
}
