//! The catalog: seeded identically on every shard, paginated, 404 for a missing product; answers
//! kept in memory within their bound, with an `ETag` and 304 for a matching `If-None-Match`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{assert_error, json, spawn_app, spawn_app_with, TestApp, ANN, ODD};

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

/// `GET path` as ANN with an optional `If-None-Match`: status, `ETag`, `Cache-Control`, body.
async fn get_with(app: &TestApp, path: &str, if_none_match: Option<&str>) -> (u16, String, String, String) {
    let mut req = app.as_user(reqwest::Method::GET, path, ANN);
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    let res = req.send().await.unwrap();
    let header = |name: &str| res.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let (etag, cache_control) = (header("etag"), header("cache-control"));
    (res.status().as_u16(), etag, cache_control, res.text().await.unwrap())
}

#[tokio::test]
async fn catalog_answers_carry_an_etag_and_a_matching_if_none_match_gets_304() {
    let app = spawn_app().await;
    for path in ["/api/products", "/api/products?limit=2&offset=1", "/api/products/5", "/api/categories"] {
        let (status, etag, cache_control, body) = get_with(&app, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'), "{path}: strong ETag, got {etag:?}");
        assert_eq!(cache_control, "public, no-cache", "{path}");
        serde_json::from_str::<Value>(&body).unwrap();

        for matching in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}"), "*".to_owned()] {
            let (status, again, cache_control, body) = get_with(&app, path, Some(&matching)).await;
            assert_eq!((status, body.as_str()), (304, ""), "{path} with If-None-Match {matching}");
            assert_eq!((again.as_str(), cache_control.as_str()), (etag.as_str(), "public, no-cache"), "{path}");
        }
        let (status, again, _, body) = get_with(&app, path, Some("\"not-this-one\"")).await;
        assert_eq!((status, &again), (200, &etag), "{path}: another tag gets the answer");
        serde_json::from_str::<Value>(&body).unwrap();
    }
    // Different answers, different tags; a missing product is still 404, without a tag.
    let (_, one, _, _) = get_with(&app, "/api/products/1", None).await;
    let (_, two, _, _) = get_with(&app, "/api/products/2", None).await;
    assert_ne!(one, two);
    let (status, etag, _, _) = get_with(&app, "/api/products/999", None).await;
    assert_eq!((status, etag.as_str()), (404, ""));
}

/// Product `id`'s price on the app's primary, set as an operator would: straight SQL.
async fn set_price(app: &TestApp, id: i64, cents: i64) {
    sqlx::query(&format!("UPDATE products SET price_cents = {cents} WHERE id = {id}"))
        .execute(app.state.db_write())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_answer_is_kept_in_memory_until_its_bound() {
    // A bound long enough that the second read surely falls inside it.
    let app = spawn_app_with("a", &[("SHOP__BACKEND__CATALOG_CACHE_MS", "60000")]).await;
    let (_, before) = json(app.get("/api/products/3", ANN).await).await;
    set_price(&app, 3, before["price_cents"].as_i64().unwrap() + 1).await;
    let (_, again) = json(app.get("/api/products/3", ANN).await).await;
    assert_eq!(again, before, "served from memory within the bound");
    let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("shop_catalog_answers_total{shard=\"a\",result=\"hit\"} 1\n"), "{metrics}");
    assert!(metrics.contains("shop_catalog_answers_total{shard=\"a\",result=\"miss\"} 1\n"), "{metrics}");
}

#[tokio::test]
async fn a_price_change_is_served_within_the_bound_and_never_later() {
    const BOUND: Duration = Duration::from_millis(1000);
    let app = spawn_app_with("a", &[("SHOP__BACKEND__CATALOG_CACHE_MS", "1000")]).await;
    // Both answers are in memory before the change.
    let (status, _) = json(app.get("/api/products", ANN).await).await;
    assert_eq!(status, 200);
    let (_, old) = json(app.get("/api/products/7", ANN).await).await;
    let new_price = old["price_cents"].as_i64().unwrap() + 100;
    set_price(&app, 7, new_price).await;
    let committed = Instant::now();
    // Every read that starts once the bound has passed since the commit must show the new price,
    // on the product and on the list page that holds it; before that, either is allowed.
    loop {
        let started = Instant::now();
        let (_, product) = json(app.get("/api/products/7", ANN).await).await;
        let (_, list) = json(app.get("/api/products", ANN).await).await;
        let listed = list["products"].as_array().unwrap().iter().find(|p| p["id"] == 7).unwrap()["price_cents"].clone();
        let fresh = product["price_cents"] == new_price && listed == new_price;
        if started.duration_since(committed) > BOUND {
            assert!(fresh, "stale {:?} after the commit: product {product}, listed {listed}", started - committed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
