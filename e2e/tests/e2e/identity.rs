//! Point 3: only the verifier's answer decides who the caller is.

use serde_json::{json, Value};
use shopgate_e2e::Shop as _;
use shopgate_e2e::Stack;

async fn place(stack: &Stack, token: &str) -> u64 {
    let r = stack
        .http
        .post(stack.api("/api/orders"))
        .bearer_auth(token)
        .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["id"].as_u64().unwrap()
}

#[tokio::test]
async fn a_client_sent_user_id_changes_nothing() {
    let stack = Stack::start().await;
    let (alice, alice_token) = stack.shopper().await;
    let (bob, bob_token) = stack.shopper().await;
    let bobs_order = place(&stack, &bob_token).await;
    let alices_order = place(&stack, &alice_token).await;

    for forged in [bob.to_string(), format!("{alice}, {bob}"), "1".into(), String::new()] {
        let r = stack
            .http
            .get(stack.api("/api/orders"))
            .bearer_auth(&alice_token)
            .header("X-User-Id", &forged)
            .header("X-User-Email", "bob@example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "forged X-User-Id {forged:?}");
        let list: Value = r.json().await.unwrap();
        let ids: Vec<u64> = list["orders"].as_array().unwrap().iter().map(|o| o["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, vec![alices_order], "forged X-User-Id {forged:?} showed someone else's orders");
    }
    // Without a token, a forged identity header is still a 401.
    let r = stack.http.get(stack.api("/api/orders")).header("X-User-Id", bob.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Naming Bob in the header does not open Bob's order to Alice.
    let r = stack
        .http
        .get(stack.api(&format!("/api/orders/{bobs_order}")))
        .bearer_auth(&alice_token)
        .header("X-User-Id", bob.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn someone_elses_order_is_404() {
    let stack = Stack::start().await;
    // Two users on the same shard (both even) and one on the other: both cases must be 404.
    let (_, owner_token) = stack.shopper().await;
    let order = place(&stack, &owner_token).await;
    for intruder in [2u64, 3, 4, 5] {
        let token = stack.mint(intruder);
        for (method, path) in [("GET", format!("/api/orders/{order}")), ("POST", format!("/api/orders/{order}/cancel"))]
        {
            let rb = if method == "GET" {
                stack.http.get(stack.api(&path))
            } else {
                stack.http.post(stack.api(&path)).json(&json!({}))
            };
            let r = rb.bearer_auth(&token).header("X-User-Id", "1").send().await.unwrap();
            assert_eq!(r.status(), 404, "user {intruder}: {method} {path}");
            assert_eq!(crate::error_code(r).await, "not_found");
        }
    }
    let r = stack.http.get(stack.api(&format!("/api/orders/{order}"))).bearer_auth(&owner_token).send().await.unwrap();
    let o: Value = r.json().await.unwrap();
    assert_eq!(o["status"], "placed", "the intruders' cancel must not have touched it");
}
