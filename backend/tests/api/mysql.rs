//! The same flows on MySQL/MariaDB, when `SHOPGATE_TEST_MYSQL` names a server whose user may
//! create databases (`mysql://user:pass@127.0.0.1:3306`); skipped otherwise. Each test gets its
//! own database.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use sqlx::Connection as _;

use crate::helpers::{assert_error, json, spawn_app_with, TestApp, ANN, BOB};

async fn spawn_on_mysql(with_replica: bool) -> Option<TestApp> {
    spawn_on_mysql_with(with_replica, &[]).await
}

/// A shard on a fresh database of `SHOPGATE_TEST_MYSQL`, with more `SHOP__…` overrides; `None`
/// (and a note) when the variable is unset.
pub async fn spawn_on_mysql_with(with_replica: bool, extra: &[(&str, &str)]) -> Option<TestApp> {
    let Ok(server) = std::env::var("SHOPGATE_TEST_MYSQL") else {
        eprintln!("SHOPGATE_TEST_MYSQL unset: skipping the MySQL test");
        return None;
    };
    let server = server.trim_end_matches('/');
    let name = format!("shopgate_test_{}", rand::random::<u32>());
    let mut conn = sqlx::mysql::MySqlConnection::connect(server).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    let url = format!("{server}/{name}");
    let mut overrides = vec![("SHOP__SHARDS__A__PRIMARY", url.as_str())];
    if with_replica {
        // The primary itself stands in for a replica that is fully caught up.
        overrides.push(("SHOP__SHARDS__A__REPLICA", url.as_str()));
    }
    overrides.extend_from_slice(extra);
    Some(spawn_app_with("a", &overrides).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_idempotency_and_profiles_on_mysql() {
    // One user's burst of 30 below: without the per-user bound, which would turn most away.
    let Some(app) = spawn_on_mysql_with(false, crate::helpers::NO_USER_BOUND).await else { return };
    let (status, products) = json(app.get("/api/products?limit=3", ANN).await).await;
    assert_eq!(status, 200, "{products}");
    assert_eq!(products["products"].as_array().unwrap().len(), 3);
    let (status, cats) = json(app.get("/api/categories", ANN).await).await;
    assert_eq!(status, 200, "{cats}");

    let items = json!([{"product_id": 1, "quantity": 2}, {"product_id": 12, "quantity": 1}]);
    let (status, order) = json(app.create_order(ANN, items.clone(), Some("Key-1")).await).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["total_cents"], 2 * 3999 + 24999);
    let (status, again) = json(app.create_order(ANN, items.clone(), Some("Key-1")).await).await;
    assert_eq!((status, &again), (200, &order));
    // Keys compare byte for byte: "key-1" is another key.
    let (status, other) = json(app.create_order(ANN, items.clone(), Some("key-1")).await).await;
    assert_eq!(status, 201);
    assert_ne!(other["id"], order["id"]);
    assert_error(
        app.create_order(ANN, json!([{"product_id": 1, "quantity": 1}]), Some("Key-1")).await,
        422,
        "idempotency_key_reused",
    )
    .await;

    let app = std::sync::Arc::new(app);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let app = app.clone();
        tasks.spawn(async move {
            let key = format!("burst-{}", i % 5);
            json(app.create_order(BOB, json!([{"product_id": 3, "quantity": 1 + i % 5}]), Some(&key)).await).await
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (status, body) = done.unwrap();
        assert!(status == 201 || status == 200, "{status}: {body}");
    }
    assert_eq!(app.count("orders").await, 2 + 5);

    let (status, list) = json(app.get("/api/orders?limit=1", ANN).await).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["orders"][0]["id"], other["id"]);
    assert_eq!(list["next_before"], other["id"]);
    let (status, cancelled) = json(app.cancel(ANN, order["id"].as_i64().unwrap()).await).await;
    assert_eq!((status, cancelled["status"].as_str()), (200, Some("cancelled")));
    assert_error(app.get(&format!("/api/orders/{}", order["id"]), BOB).await, 404, "not_found").await;

    let (status, me) = json(app.get("/api/users/me", ANN).await).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["is_active"], true);
    let (status, _) = json(app.post_json("/api/users", ANN, &json!({"password": "x"})).await).await;
    assert_eq!(status, 200);
    let (status, readyz) = json(app.get_anonymous("/readyz").await).await;
    assert_eq!(status, 200, "{readyz}");
}

#[tokio::test]
async fn reads_use_a_caught_up_replica_on_mysql() {
    let Some(app) = spawn_on_mysql(true).await else { return };
    let (status, order) = json(app.create_order(ANN, json!([{"product_id": 2, "quantity": 1}]), None).await).await;
    assert_eq!(status, 201, "{order}");
    let (status, list) = json(app.get("/api/orders", BOB).await).await;
    assert_eq!((status, list["orders"].as_array().map(Vec::len)), (200, Some(0)));
    let beat: i64 = sqlx::query_scalar("SELECT beat_ms FROM replication_heartbeat WHERE id = 1")
        .fetch_one(app.state.db_write())
        .await
        .unwrap();
    assert!(beat > 0, "the primary's heartbeat is stamped");
    assert_eq!(app.state.metrics.replica_fallbacks(), 0);
}
