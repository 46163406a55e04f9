//! Every /api route but the public catalog re-checks the bearer token and X-User-Id, and serves
//! only its shard's users.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use shopgate_core::token::{new_claims, sign_hs256, Hs256Key};
use shopgate_core::UserId;

use crate::helpers::{assert_error, email_of, json, now, spawn_app, TestApp, ANN, ODD};

/// `{"alg":"none","typ":"JWT"}`, base64url.
const ALG_NONE_HEADER: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";

async fn assert_401(app: &TestApp, req: reqwest::RequestBuilder, case: &str) {
    let res = req.send().await.unwrap();
    let challenges: Vec<_> = res.headers().get_all("www-authenticate").iter().cloned().collect();
    assert_eq!(challenges.len(), 1, "{case}: exactly one WWW-Authenticate");
    assert_eq!(challenges[0], r#"Bearer error="invalid_token""#, "{case}");
    assert_eq!(res.headers()["x-shop-shard"], "a", "{case}");
    let body = assert_error(res, 401, "invalid_token").await;
    assert!(!body.to_string().contains("signature"), "{case}: no internals in {body}");
    let _ = app;
}

#[tokio::test]
async fn bad_tokens_and_user_ids_get_one_plain_401() {
    let app = spawn_app().await;
    let url = format!("{}/api/orders", app.base);
    let good = app.token(ANN);
    let forged_key = Hs256Key::new(b"not-the-shop-key-0123456789abcdef-xyz").unwrap();
    let forged = sign_hs256(
        &forged_key,
        &new_claims(UserId::new(ANN).unwrap(), &email_of(ANN), &app.config.jwt.policy, now(), 3600),
    );
    let expired = app.token_at(ANN, now() - 3 * 3600);
    let payload_and_sig = good.split_once('.').unwrap().1;
    let alg_none = format!("{ALG_NONE_HEADER}.{payload_and_sig}");
    let get = || app.client.get(&url);
    let cases = [
        ("no token", get().header("x-user-id", "42")),
        ("basic auth", get().basic_auth("ann", Some("pw")).header("x-user-id", "42")),
        ("forged", get().bearer_auth(&forged).header("x-user-id", "42")),
        ("expired", get().bearer_auth(&expired).header("x-user-id", "42")),
        ("alg none", get().bearer_auth(&alg_none).header("x-user-id", "42")),
        ("garbage", get().bearer_auth("abc.def.ghi").header("x-user-id", "42")),
        ("no X-User-Id", get().bearer_auth(&good)),
        ("mismatched X-User-Id", get().bearer_auth(&good).header("x-user-id", "44")),
        ("malformed X-User-Id", get().bearer_auth(&good).header("x-user-id", "42abc")),
        ("two X-User-Id", get().bearer_auth(&good).header("x-user-id", "42").header("x-user-id", "42")),
    ];
    for (case, req) in cases {
        assert_401(&app, req, case).await;
    }
    // The good token with the right header passes.
    let res = get().bearer_auth(&good).header("x-user-id", "42").send().await.unwrap();
    assert_eq!(res.status(), 200);
    let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("reason=\"expired\"} 1"), "{metrics}");
    assert!(!metrics.contains(&good), "tokens never reach metrics");
}

#[tokio::test]
async fn every_api_route_but_the_catalog_needs_auth() {
    let app = spawn_app().await;
    for path in ["/api/orders", "/api/orders/1", "/api/users/me"] {
        assert_401(&app, app.client.get(format!("{}{path}", app.base)), path).await;
    }
    // The catalog is public (CONTRACT §4): no token needed, and a bad one is not looked at.
    for path in ["/api/categories", "/api/products", "/api/products/1"] {
        let anonymous = app.client.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(anonymous.status(), 200, "{path} without a token");
        let forged = app.client.get(format!("{}{path}", app.base)).bearer_auth("not-a-token").send().await.unwrap();
        assert_eq!(forged.status(), 200, "{path} with a bad token");
    }
    for path in ["/api/orders", "/api/orders/1/cancel", "/api/users"] {
        let req =
            app.client.post(format!("{}{path}", app.base)).json(&json!({"items": [{"product_id": 1, "quantity": 1}]}));
        assert_401(&app, req, path).await;
    }
    assert_eq!(app.count("orders").await, 0);
}

#[tokio::test]
async fn a_user_of_another_shard_gets_421_and_nothing_is_written() {
    let app = spawn_app().await;
    let res = app.create_order(ODD, json!([{"product_id": 1, "quantity": 1}]), Some("k1")).await;
    assert_eq!(res.headers()["x-shop-shard"], "a");
    assert_error(res, 421, "misdirected").await;
    assert_error(app.post_json("/api/users", ODD, &json!({})).await, 421, "misdirected").await;
    assert_error(app.get("/api/orders", ODD).await, 421, "misdirected").await;
    // The catalog is the same on every shard: any shard serves it to anyone.
    assert_eq!(app.get("/api/products", ODD).await.status(), 200);
    for table in ["orders", "order_items", "idempotency_keys", "users"] {
        assert_eq!(app.count(table).await, 0, "{table} was written for another shard's user");
    }
    // The same request for an owned user works.
    let (status, _) = json(app.create_order(ANN, json!([{"product_id": 1, "quantity": 1}]), Some("k1")).await).await;
    assert_eq!(status, 201);
}
