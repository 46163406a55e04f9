//! The catalog: seeded identically on every shard, paginated, 404 for a missing product.
#![allow(clippy::unwrap_used)]

use serde_json::Value;

use crate::helpers::{assert_error, json, spawn_app, spawn_app_with, ANN, ODD};

#[tokio::test]
async fn the_demo_catalog_is_seeded_and_identical_on_every_shard() {
    let a = spawn_app().await;
    let b = spawn_app_with("b", &[]).await;
    let (status, cats_a) = json(a.get("/api/categories", ANN).await).await;
    assert_eq!(status, 200);
    assert!(cats_a["categories"].as_array().unwrap().len() >= 4);
    let (_, prods_a) = json(a.get("/api/products", ANN).await).await;
    let (_, prods_b) = json(b.get("/api/products", ODD).await).await;
    assert!(prods_a["products"].as_array().unwrap().len() >= 12);
    assert_eq!(prods_a, prods_b);
    let (_, cats_b) = json(b.get("/api/categories", ODD).await).await;
    assert_eq!(cats_a, cats_b);
    let p = &prods_a["products"][0];
    for field in ["id", "sku", "name", "category_id", "price_cents", "description"] {
        assert!(p.get(field).is_some(), "{field} missing in {p}");
    }
}

#[tokio::test]
async fn products_filter_and_page() {
    let app = spawn_app().await;
    let (_, books) = json(app.get("/api/products?category_id=1", ANN).await).await;
    let books = books["products"].as_array().unwrap().clone();
    assert!(!books.is_empty());
    assert!(books.iter().all(|p| p["category_id"] == 1));
    let (_, page) = json(app.get("/api/products?limit=2&offset=1", ANN).await).await;
    let ids: Vec<i64> = page["products"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![2, 3]);
    // Present but empty is not an integer: 400, as the API description says, not the default.
    for empty in ["category_id=", "limit=", "offset="] {
        assert_error(app.get(&format!("/api/products?{empty}"), ANN).await, 400, "invalid_query").await;
    }
    assert_error(app.get("/api/orders?limit=&before=7893", ANN).await, 400, "invalid_query").await;
    assert_error(app.get("/api/products?limit=0", ANN).await, 400, "invalid_query").await;
    assert_error(app.get("/api/products?limit=abc", ANN).await, 400, "invalid_query").await;
}

#[tokio::test]
async fn one_product_or_404() {
    let app = spawn_app().await;
    let (status, p) = json(app.get("/api/products/5", ANN).await).await;
    assert_eq!(status, 200);
    assert_eq!(p["id"], 5);
    assert!(p["price_cents"].is_i64());
    assert_error(app.get("/api/products/999", ANN).await, 404, "not_found").await;
    assert_error(app.get("/api/products/abc", ANN).await, 404, "not_found").await;
    let _: Value = p;
}
