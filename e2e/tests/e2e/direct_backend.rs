//! Point 6: a backend port reached directly, not through nginx, grants nothing.

use serde_json::json;
use shopgate_e2e::Stack;

#[tokio::test]
async fn a_forged_user_id_without_a_valid_token_serves_nothing() {
    let stack = Stack::start().await;
    let shard_a = stack.config.shard("a").unwrap().addr();
    let base = format!("http://{shard_a}");
    let other_key_token = {
        // Signed with a different key.
        let key = shopgate_core::token::Hs256Key::new(b"another-key-0123456789abcdef-0123456789").unwrap();
        let c = shopgate_core::token::new_claims(
            shopgate_core::UserId::new(2).unwrap(),
            "x@y.io",
            &stack.config.jwt.policy,
            shopgate_e2e::now(),
            600,
        );
        shopgate_core::token::sign_hs256(&key, &c)
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("garbage token", Some("garbage".into())),
        ("token of another key", Some(other_key_token)),
        ("token of user 4, header says 2", Some(stack.mint(4))),
    ];
    for (what, token) in cases {
        for path in ["/api/orders", "/api/users/me"] {
            let mut rb = stack.http.get(format!("{base}{path}")).header("X-User-Id", "2");
            if let Some(t) = &token {
                rb = rb.bearer_auth(t);
            }
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), 401, "{what}: GET {path}");
            assert_eq!(r.headers().get_all("www-authenticate").iter().count(), 1, "{what}: {path}");
        }
        let mut rb = stack
            .http
            .post(format!("{base}/api/orders"))
            .header("X-User-Id", "2")
            .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}));
        if let Some(t) = &token {
            rb = rb.bearer_auth(t);
        }
        assert_eq!(rb.send().await.unwrap().status(), 401, "{what}: POST /api/orders");
    }
    // A valid token and matching header, but for a user shard a does not own: 421, nothing written.
    let r = stack
        .http
        .post(format!("{base}/api/orders"))
        .bearer_auth(stack.mint(3))
        .header("X-User-Id", "3")
        .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421);
    assert_eq!(crate::error_code(r).await, "misdirected");
    let r = stack
        .http
        .get(format!("{base}/api/orders"))
        .bearer_auth(stack.mint(2))
        .header("X-User-Id", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the right token and header do work directly");
    let list: serde_json::Value = r.json().await.unwrap();
    assert_eq!(list["orders"].as_array().map(Vec::len), Some(0));
}
