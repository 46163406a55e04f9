//! Placing, listing, showing and cancelling orders; idempotency; isolation between users.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};

use serde_json::json;

use crate::helpers::{assert_error, json, spawn_app, spawn_app_with, ANN, BOB, ODD};

#[tokio::test]
async fn create_list_show_cancel() {
    let app = spawn_app().await;
    let res =
        app.create_order(ANN, json!([{"product_id": 1, "quantity": 2}, {"product_id": 8, "quantity": 3}]), None).await;
    assert_eq!(res.headers()["x-shop-shard"], "a");
    let (status, order) = json(res).await;
    assert_eq!(status, 201, "{order}");
    let id = order["id"].as_i64().unwrap();
    assert_eq!(id % 64, 0, "shard a's number is 0");
    assert_eq!(order["user_id"], ANN);
    assert_eq!(order["status"], "placed");
    assert_eq!(order["total_cents"], 2 * 3999 + 3 * 349);
    assert!(order["created_at"].as_str().unwrap().ends_with('Z'), "{order}");
    assert_eq!(
        order["items"][0],
        json!({"product_id": 1, "name": "The Rust Programming Language", "quantity": 2, "unit_price_cents": 3999, "line_total_cents": 7998})
    );
    assert_eq!(order["items"].as_array().unwrap().len(), 2);

    let (status, list) = json(app.get("/api/orders", ANN).await).await;
    assert_eq!(status, 200);
    assert_eq!(list["orders"].as_array().unwrap().len(), 1);
    assert_eq!(list["orders"][0], order);
    assert_eq!(list["next_before"], json!(null));

    let (status, shown) = json(app.get(&format!("/api/orders/{id}"), ANN).await).await;
    assert_eq!((status, &shown), (200, &order));

    let (status, cancelled) = json(app.cancel(ANN, id).await).await;
    assert_eq!(status, 200);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["id"], id);
    let (status, again) = json(app.cancel(ANN, id).await).await;
    assert_eq!((status, &again), (200, &cancelled), "cancelling twice changes nothing");
    let (_, shown) = json(app.get(&format!("/api/orders/{id}"), ANN).await).await;
    assert_eq!(shown["status"], "cancelled");
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(app.count("order_items").await, 2);
}

#[tokio::test]
async fn unit_prices_come_from_the_catalog_never_the_client() {
    let app = spawn_app().await;
    let (_, product) = json(app.get("/api/products/11", ANN).await).await;
    let price = product["price_cents"].as_i64().unwrap();
    assert!(price > 1);

    // A client that sends its own price is refused, and nothing is written.
    let res = app.create_order(ANN, json!([{"product_id": 11, "quantity": 1, "unit_price_cents": 1}]), None).await;
    assert_error(res, 400, "invalid_body").await;
    let body = json!({"items": [{"product_id": 11, "quantity": 1}], "total_cents": 1});
    assert_error(app.post_json("/api/orders", ANN, &body).await, 400, "invalid_body").await;
    assert_eq!(app.count("orders").await, 0);

    let (status, order) = json(app.create_order(ANN, json!([{"product_id": 11, "quantity": 3}]), None).await).await;
    assert_eq!(status, 201);
    assert_eq!(order["items"][0]["unit_price_cents"], price);
    assert_eq!(order["total_cents"], 3 * price);
    let stored: i64 = sqlx::query_scalar("SELECT unit_price_cents FROM order_items WHERE order_id = ?")
        .bind(order["id"].as_i64().unwrap())
        .fetch_one(app.state.db_write())
        .await
        .unwrap();
    assert_eq!(stored, price);
}

#[tokio::test]
async fn duplicate_products_are_merged_into_one_line() {
    let app = spawn_app().await;
    let items =
        json!([{"product_id": 2, "quantity": 1}, {"product_id": 5, "quantity": 1}, {"product_id": 2, "quantity": 4}]);
    let (status, order) = json(app.create_order(ANN, items, None).await).await;
    assert_eq!(status, 201);
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    assert_eq!(order["items"][0]["product_id"], 2);
    assert_eq!(order["items"][0]["quantity"], 5);
    assert_eq!(order["total_cents"], 5 * 4550 + 3450);
}

#[tokio::test]
async fn an_idempotent_retry_returns_the_same_order_and_writes_once() {
    let app = spawn_app().await;
    let items = json!([{"product_id": 3, "quantity": 2}]);
    let (first_status, first) = json(app.create_order(ANN, items.clone(), Some("retry-me-1")).await).await;
    assert_eq!(first_status, 201);
    let (second_status, second) = json(app.create_order(ANN, items.clone(), Some("retry-me-1")).await).await;
    assert_eq!(second_status, 200, "a replay is not a creation: {second}");
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second, first);
    assert_eq!(app.count("orders").await, 1);
    assert_eq!(app.count("order_items").await, 1);
    assert_eq!(app.count("idempotency_keys").await, 1);

    // The same key with other items is refused, not a silent replay.
    let other = json!([{"product_id": 3, "quantity": 3}]);
    assert_error(app.create_order(ANN, other, Some("retry-me-1")).await, 422, "idempotency_key_reused").await;
    // Keys are per user: another user's identical key makes their own order.
    let (status, bobs) = json(app.create_order(BOB, items, Some("retry-me-1")).await).await;
    assert_eq!(status, 201);
    assert_ne!(bobs["id"], first["id"]);
    assert_eq!(app.count("orders").await, 2);
    // Without a key, every request is a new order.
    for _ in 0..2 {
        assert_eq!(app.create_order(ANN, json!([{"product_id": 3, "quantity": 2}]), None).await.status(), 201);
    }
    assert_eq!(app.count("orders").await, 4);
    let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("shop_orders_created_total{shard=\"a\"} 4\n"), "{metrics}");
    assert!(metrics.contains("shop_idempotent_replays_total{shard=\"a\"} 1\n"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_creates_with_ten_keys_make_ten_orders() {
    // One user's 50 at once: without the per-user bound, which would turn most away at once.
    let app = std::sync::Arc::new(spawn_app_with("a", crate::helpers::NO_USER_BOUND).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let app = app.clone();
        tasks.spawn(async move {
            let key = format!("key-{}", i % 10);
            // Each key has its own body, so a mix-up between keys would show as a 422.
            let items = json!([{"product_id": 1 + i % 10, "quantity": 1 + i % 10}]);
            let (status, order) = json(app.create_order(ANN, items, Some(&key)).await).await;
            (key, status, order)
        });
    }
    let mut ids_by_key: HashMap<String, HashSet<i64>> = HashMap::new();
    let mut created = 0;
    while let Some(done) = tasks.join_next().await {
        let (key, status, order) = done.unwrap();
        assert!(status == 201 || status == 200, "{status}: {order}");
        created += usize::from(status == 201);
        ids_by_key.entry(key).or_default().insert(order["id"].as_i64().unwrap());
    }
    assert_eq!(ids_by_key.len(), 10);
    assert!(ids_by_key.values().all(|ids| ids.len() == 1), "one key, one order: {ids_by_key:?}");
    assert_eq!(created, 10, "exactly one creation per key");
    assert_eq!(app.count("orders").await, 10);
    assert_eq!(app.count("idempotency_keys").await, 10);
    assert_eq!(app.count("order_items").await, 10);
}

#[tokio::test]
async fn someone_elses_order_is_404_like_a_missing_one() {
    let app = spawn_app().await;
    let (_, order) = json(app.create_order(ANN, json!([{"product_id": 4, "quantity": 1}]), None).await).await;
    let id = order["id"].as_i64().unwrap();
    let theirs = assert_error(app.get(&format!("/api/orders/{id}"), BOB).await, 404, "not_found").await;
    let missing = assert_error(app.get(&format!("/api/orders/{}", id + 64), BOB).await, 404, "not_found").await;
    assert_eq!(theirs, missing, "someone else's order must look exactly like a missing one");
    assert_error(app.cancel(BOB, id).await, 404, "not_found").await;
    let (_, list) = json(app.get("/api/orders", BOB).await).await;
    assert_eq!(list["orders"], json!([]));
    let (_, mine) = json(app.get(&format!("/api/orders/{id}"), ANN).await).await;
    assert_eq!(mine["status"], "placed", "the other user's cancel did nothing");
}

#[tokio::test]
async fn orders_page_newest_first() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for q in 1..=5 {
        let (_, o) = json(app.create_order(ANN, json!([{"product_id": 9, "quantity": q}]), None).await).await;
        ids.push(o["id"].as_i64().unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow with time: {ids:?}");
    let (_, page1) = json(app.get("/api/orders?limit=2", ANN).await).await;
    let got: Vec<i64> = page1["orders"].as_array().unwrap().iter().map(|o| o["id"].as_i64().unwrap()).collect();
    assert_eq!(got, vec![ids[4], ids[3]]);
    assert_eq!(page1["next_before"], ids[3]);
    let (_, page2) = json(app.get(&format!("/api/orders?limit=2&before={}", ids[3]), ANN).await).await;
    let got: Vec<i64> = page2["orders"].as_array().unwrap().iter().map(|o| o["id"].as_i64().unwrap()).collect();
    assert_eq!(got, vec![ids[2], ids[1]]);
    let (_, page3) = json(app.get(&format!("/api/orders?limit=2&before={}", ids[1]), ANN).await).await;
    assert_eq!(page3["orders"].as_array().unwrap().len(), 1);
    assert_eq!(page3["next_before"], json!(null));
    assert_eq!(page3["orders"][0]["items"][0]["quantity"], 1);
}

#[tokio::test]
async fn order_ids_of_two_shards_never_collide() {
    let a = spawn_app().await;
    let b = spawn_app_with("b", &[]).await;
    let mut seen = HashSet::new();
    for _ in 0..5 {
        let (_, oa) = json(a.create_order(ANN, json!([{"product_id": 1, "quantity": 1}]), None).await).await;
        let (_, ob) = json(b.create_order(ODD, json!([{"product_id": 1, "quantity": 1}]), None).await).await;
        let (ia, ib) = (oa["id"].as_i64().unwrap(), ob["id"].as_i64().unwrap());
        assert_eq!((ia % 64, ib % 64), (0, 1));
        assert!(ia < 1 << 53 && ib < 1 << 53);
        assert!(seen.insert(ia) && seen.insert(ib));
    }
}
