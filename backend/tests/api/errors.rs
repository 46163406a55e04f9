//! Bad input is a 4xx JSON error, never a 5xx, never axum's plain-text rejection.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::Request;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app, ANN};

#[tokio::test]
async fn malformed_bodies_get_4xx_json() {
    let app = spawn_app().await;
    let post = |body: &'static str, content_type: Option<&'static str>| {
        let mut req = app.as_user(reqwest::Method::POST, "/api/orders", ANN).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let json_ct = Some("application/json");
    assert_error(post("{\"items\": [", json_ct).await.unwrap(), 400, "malformed_json").await;
    assert_error(post("not json", json_ct).await.unwrap(), 400, "malformed_json").await;
    assert_error(post("", json_ct).await.unwrap(), 400, "malformed_json").await;
    let body = assert_error(
        post(r#"{"items":[{"product_id":1,"quantity":"two"}]}"#, json_ct).await.unwrap(),
        400,
        "invalid_body",
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("quantity"), "names the field: {body}");
    assert_error(post(r#"{"items":[{"product_id":1}]}"#, json_ct).await.unwrap(), 400, "invalid_body").await;
    assert_error(post(r#"{}"#, json_ct).await.unwrap(), 400, "invalid_body").await;
    assert_error(post(r#"{"items":{}}"#, json_ct).await.unwrap(), 400, "invalid_body").await;
    assert_error(post(r#"[]"#, json_ct).await.unwrap(), 400, "invalid_body").await;
    assert_error(
        post(r#"{"items":[{"product_id":1e400,"quantity":1}]}"#, json_ct).await.unwrap(),
        400,
        "malformed_json",
    )
    .await;
    assert_error(
        post(r#"{"items":[{"product_id":99999999999999999999,"quantity":1}]}"#, json_ct).await.unwrap(),
        400,
        "invalid_body",
    )
    .await;
    assert_error(
        post(r#"{"items":[{"product_id":1,"quantity":1}]}"#, None).await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    assert_error(
        post(r#"{"items":[{"product_id":1,"quantity":1}]}"#, Some("text/plain")).await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    assert_eq!(app.count("orders").await, 0);
}

#[tokio::test]
async fn a_body_over_one_mib_gets_413_json() {
    let app = spawn_app().await;
    let filler = "x".repeat(2 << 20);
    let body = format!(r#"{{"items":[{{"product_id":1,"quantity":1}}],"pad":"{filler}"}}"#);
    let req = Request::post("/api/orders")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", app.token(ANN)))
        .header("x-user-id", ANN.to_string())
        .body(Body::from(body))
        .unwrap();
    let (status, headers, json) = app.oneshot(req).await;
    assert_eq!(status, 413, "{json}");
    assert_eq!(json["error"], "payload_too_large");
    assert_eq!(headers["x-shop-shard"], "a");
    assert_eq!(app.count("orders").await, 0);
}

#[tokio::test]
async fn unacceptable_orders_get_422() {
    let app = spawn_app().await;
    let body = assert_error(
        app.create_order(ANN, json!([{"product_id": 1, "quantity": 1}, {"product_id": 4242, "quantity": 1}]), None)
            .await,
        422,
        "unknown_product",
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("4242"), "names the product: {body}");
    assert_error(app.create_order(ANN, json!([{"product_id": 0, "quantity": 1}]), None).await, 422, "unknown_product")
        .await;
    assert_error(app.create_order(ANN, json!([{"product_id": 1, "quantity": 0}]), None).await, 422, "invalid_quantity")
        .await;
    assert_error(
        app.create_order(ANN, json!([{"product_id": 1, "quantity": -3}]), None).await,
        422,
        "invalid_quantity",
    )
    .await;
    assert_error(
        app.create_order(ANN, json!([{"product_id": 1, "quantity": 1001}]), None).await,
        422,
        "invalid_quantity",
    )
    .await;
    assert_error(app.create_order(ANN, json!([]), None).await, 422, "invalid_items").await;
    let many: Vec<_> = (1..=101).map(|_| json!({"product_id": 1, "quantity": 1})).collect();
    assert_error(app.create_order(ANN, json!(many), None).await, 422, "invalid_items").await;
    assert_eq!(app.count("orders").await, 0);
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn bad_idempotency_keys_get_400() {
    let app = spawn_app().await;
    let items = json!([{"product_id": 1, "quantity": 1}]);
    let long = "k".repeat(129);
    for key in [long.as_str(), "has space", ""] {
        assert_error(app.create_order(ANN, items.clone(), Some(key)).await, 400, "invalid_idempotency_key").await;
    }
    // An empty header is said to be empty (it is not the same as none), and places nothing.
    let body = assert_error(app.create_order(ANN, items.clone(), Some("")).await, 400, "invalid_idempotency_key").await;
    assert!(body["message"].as_str().is_some_and(|m| m.starts_with("Idempotency-Key is empty")), "{body}");
    assert_eq!(app.count("orders").await, 0);
    let max = "k".repeat(128);
    assert_eq!(app.create_order(ANN, items, Some(&max)).await.status(), 201);
    assert_eq!(app.count("orders").await, 1);
}

#[tokio::test]
async fn unknown_routes_methods_and_ids_get_json() {
    let app = spawn_app().await;
    for path in ["/api/orders/abc", "/api/orders/1.5", "/api/orders/99999999999999999999", "/api/orders/-1"] {
        assert_error(app.get(path, ANN).await, 404, "not_found").await;
    }
    assert_error(app.get("/api/nope", ANN).await, 404, "not_found").await;
    assert_error(app.get_anonymous("/backend/api/orders").await, 404, "not_found").await;
    assert_error(
        app.as_user(reqwest::Method::DELETE, "/api/orders", ANN).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    assert_error(
        app.as_user(reqwest::Method::GET, "/api/orders/1/cancel", ANN).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    assert_error(app.get("/api/orders?limit=0", ANN).await, 400, "invalid_query").await;
    assert_error(app.get("/api/orders?limit=101", ANN).await, 400, "invalid_query").await;
    assert_error(app.get("/api/orders?before=x", ANN).await, 400, "invalid_query").await;
}
