//! Point 1: register -> token -> order -> list through nginx, under both prefixes.

use serde_json::{json, Value};
use shopgate_e2e::Shop as _;
use shopgate_e2e::{rand_hex, Stack, PASSWORD};

async fn whole_journey(stack: &Stack, auth: &str, api: &str) {
    let email = format!("journey-{}@example.com", rand_hex(6));
    let r = stack
        .http
        .post(stack.api(&format!("{auth}/register")))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let user: Value = r.json().await.unwrap();
    assert_eq!(user["email"], email.as_str());
    assert_eq!(user["is_active"], true);
    assert_eq!(user["is_admin"], false);
    let uid = user["id"].as_u64().unwrap();

    // The original design's client sends empty OAuth2 fields along.
    let r = stack
        .http
        .post(stack.api(&format!("{auth}/token")))
        .form(&[
            ("grant_type", ""),
            ("username", &email),
            ("password", PASSWORD),
            ("scope", ""),
            ("client_id", ""),
            ("client_secret", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let tok: Value = r.json().await.unwrap();
    assert_eq!(tok["token_type"], "bearer");
    assert!(tok["expires_in"].as_i64().unwrap() > 0);
    let token = tok["access_token"].as_str().unwrap();

    let me: Value =
        stack.http.get(stack.api(&format!("{auth}/me"))).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["id"].as_u64(), Some(uid));

    let products: Value = stack
        .http
        .get(stack.api(&format!("{api}/products")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = &products["products"][0];
    let (pid, price) = (first["id"].as_u64().unwrap(), first["price_cents"].as_i64().unwrap());

    let r = stack
        .http
        .post(stack.api(&format!("{api}/orders")))
        .bearer_auth(token)
        .json(&json!({"items": [{"product_id": pid, "quantity": 3}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let order: Value = r.json().await.unwrap();
    assert_eq!(order["user_id"].as_u64(), Some(uid));
    assert_eq!(order["total_cents"].as_i64(), Some(3 * price));

    let r = stack.http.get(stack.api(&format!("{api}/orders"))).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    let ids: Vec<u64> = list["orders"].as_array().unwrap().iter().map(|o| o["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![order["id"].as_u64().unwrap()]);

    let r = stack.http.get(stack.api(&format!("{api}/users/me"))).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200, "placing an order creates the shard profile");
    let profile: Value = r.json().await.unwrap();
    assert_eq!(profile["id"].as_u64(), Some(uid));
}

#[tokio::test]
async fn journey_under_the_short_prefixes() {
    let stack = Stack::start().await;
    whole_journey(&stack, "/auth", "/api").await;
}

#[tokio::test]
async fn journey_under_the_original_prefixes() {
    let stack = Stack::start().await;
    whole_journey(&stack, "/authentication/auth", "/backend/api").await;
}

#[tokio::test]
async fn the_original_users_call_creates_the_profile_from_the_token() {
    let stack = Stack::start().await;
    let (uid, token) = stack.shopper().await;
    let body = json!({"email": "someone-else@example.com", "is_active": true, "password": "Not-Stored-1!"});
    let r = stack.http.post(stack.api("/backend/api/users")).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["id"].as_u64(), Some(uid), "identity comes from the token");
    assert_ne!(p["email"], "someone-else@example.com", "email comes from the token, not the body");
    assert!(p.get("password").is_none());
    let again = stack.http.post(stack.api("/api/users")).bearer_auth(&token).json(&body).send().await.unwrap();
    assert_eq!(again.status(), 200, "a second call returns the existing profile");
    let db = std::fs::read(stack.dir.path().join(if uid % 2 == 0 { "shard-a.db" } else { "shard-b.db" })).unwrap();
    assert!(
        !db.windows(b"Not-Stored-1!".len()).any(|w| w == b"Not-Stored-1!"),
        "the password reached the shard database"
    );
}

#[tokio::test]
async fn the_check_path_is_not_reachable_from_outside() {
    let stack = Stack::start().await;
    let token = stack.mint(7);
    for path in ["/_verify", "/verify", "/auth/verify", "/authentication/auth/verify", "/auth/../_verify"] {
        let r = stack.http.get(stack.api(path)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.headers().get("x-user-id").is_none(), "{path} leaked an identity header");
    }
}

#[tokio::test]
async fn debug_headers_are_off_unless_switched_on() {
    let stack = Stack::start_with(shopgate_e2e::Options { debug_headers: false, ..Default::default() }).await;
    let r = stack.http.get(stack.api("/api/orders")).bearer_auth(stack.mint(8)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-shop-shard").is_none());
    assert!(r.headers().get("x-shop-upstream").is_none());
    assert!(r.headers().get("server").is_none_or(|s| !s.to_str().unwrap_or("").contains('/')), "server version leaked");
}
