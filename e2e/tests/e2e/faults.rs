//! Point 5: the verifier down or erroring means 503 with a JSON error: never a pass, never 500.

use serde_json::json;
use shopgate_e2e::Stack;

#[tokio::test]
async fn verifier_killed_gives_503_never_a_pass() {
    let stack = Stack::start().await;
    let token = stack.mint(42);
    let ok = stack.http.get(stack.api("/api/orders")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);

    stack.kill("verifier-0");
    for _ in 0..3 {
        for path in ["/api/orders", "/backend/api/orders", "/api/products"] {
            let r = stack.http.get(stack.api(path)).bearer_auth(&token).send().await.unwrap();
            assert_eq!(r.status(), 503, "{path}");
            assert!(r.headers().get("x-shop-shard").is_none(), "{path} reached a backend");
            assert_eq!(crate::error_code(r).await, "unavailable");
        }
        let r = stack
            .http
            .post(stack.api("/api/orders"))
            .bearer_auth(&token)
            .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
    }
    let r = stack.http.post(stack.api("/auth/token")).form(&[("username", "a@b.io"), ("password", "x")]).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(crate::error_code(r).await, "unavailable");
}

#[tokio::test]
async fn a_backend_down_gives_503_for_its_users_only() {
    let stack = Stack::start().await;
    stack.kill("backend-b");
    let r = stack.http.get(stack.api("/api/orders")).bearer_auth(stack.mint(3)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(crate::error_code(r).await, "unavailable");
    let r = stack.http.get(stack.api("/api/orders")).bearer_auth(stack.mint(4)).send().await.unwrap();
    assert_eq!(r.status(), 200, "shard a's users are unaffected");
}
