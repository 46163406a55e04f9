//! Reads use the replica when it is usable and fall back to the primary (counted) when not.
#![allow(clippy::unwrap_used)]

use serde_json::json;

use crate::helpers::{json, spawn_app_with, ANN};

#[tokio::test]
async fn a_dead_replica_falls_back_to_the_primary_and_counts_it() {
    let app =
        spawn_app_with("a", &[("SHOP__SHARDS__A__REPLICA", "sqlite:///nonexistent-shopgate-test-dir/replica-a.db")])
            .await;
    let (status, _) = json(app.create_order(ANN, json!([{"product_id": 1, "quantity": 1}]), None).await).await;
    assert_eq!(status, 201, "writes never need the replica");
    let (status, body) = json(app.get("/api/products", ANN).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["products"].as_array().unwrap().len(), 12);
    // ANN just wrote, so ANN reads the primary without asking the replica; another user does ask.
    let before = app.state.metrics.replica_fallbacks();
    let (status, _) = json(app.get("/api/orders", 1044).await).await;
    assert_eq!(status, 200);
    assert!(app.state.metrics.replica_fallbacks() > before, "a fallback read must be counted");
    let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
    assert!(!metrics.contains("shop_replica_fallback_total{shard=\"a\"} 0\n"), "{metrics}");
}

#[tokio::test]
async fn a_healthy_replica_serves_reads_without_fallback() {
    // The primary's own file stands in for a replica that is fully caught up.
    let app = spawn_app_with("a", &[("SHOP__SHARDS__A__REPLICA", "sqlite:shard-a.db")]).await;
    let (status, order) = json(app.create_order(ANN, json!([{"product_id": 2, "quantity": 1}]), None).await).await;
    assert_eq!(status, 201);
    let (status, shown) = json(app.get(&format!("/api/orders/{}", order["id"]), ANN).await).await;
    assert_eq!((status, &shown), (200, &order), "users read their own writes at once");
    let (status, _) = json(app.get("/api/products", 1044).await).await;
    assert_eq!(status, 200);
    assert_eq!(app.state.metrics.replica_fallbacks(), 0);
}
