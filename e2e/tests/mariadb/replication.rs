//! Point 1: what a shard's primary commits reaches its replica; the replica's lag is measured and
//! shown (`/metrics`, `/readyz`); a replica that falls behind its bound is read around, and a user
//! reads their own writes at once even while the replica does not have them.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::mysql::{MySqlDatabaseError, MySqlPoolOptions};
use sqlx::MySqlPool;

use crate::{backend_log, create_order, get, metric, readyz, shard_of, stack_on_mariadb, user_on, wait_until};

/// `(rows, total_cents, items)` of order `id` as the instance behind `db` holds it.
async fn order_on(db: &MySqlPool, id: i64) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(total_cents), 0) AS SIGNED), \
         (SELECT COUNT(*) FROM order_items WHERE order_id = ?) FROM orders WHERE id = ?",
    )
    .bind(id)
    .bind(id)
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_reach_the_replica_and_its_lag_is_measured_and_shown() {
    const MAX_LAG: u64 = 2;
    let (topology, stack) = stack_on_mariadb(MAX_LAG).await;
    let stack = &stack;
    // A registered user: the verifier's accounts live on the topology's auth instance.
    let (ann, ann_token) = loop {
        let (id, token) = stack.shopper().await;
        if shard_of(stack, id) == "a" {
            break (id, token);
        }
    };
    let ann_token = &ann_token;
    let mut next = 10_000;
    let bob_token = stack.mint(user_on(stack, "a", &mut next));
    let primary = &topology.admin("a-primary").await;
    let replica = &topology.admin("a-replica").await;

    // The heartbeat makes the lag visible before anyone reads.
    let lag = wait_until("shard a reports a measured lag under its bound", Duration::from_secs(10), || async move {
        let lag = metric(stack, "a", "shop_replica_lag_seconds").await;
        (lag < MAX_LAG as f64 && metric(stack, "a", "shop_replica_up").await == 1.0).then_some(lag)
    })
    .await;
    assert!(lag >= 0.0, "lag {lag}");
    let (status, ready) = readyz(stack, "a").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["replica"]["state"], "usable", "{ready}");
    assert!(ready["replica"]["lag_seconds"].as_f64().is_some(), "{ready}");

    // An order on the primary appears on the replica, items and total included.
    let items = json!([{"product_id": 2, "quantity": 3}, {"product_id": 8, "quantity": 7}]);
    let (status, first) = create_order(stack, ann_token, &items, Some("ann-1")).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["total_cents"], 3 * 4550 + 7 * 349);
    let first_id = first["id"].as_i64().unwrap();
    assert_eq!(order_on(primary, first_id).await, (1, 3 * 4550 + 7 * 349, 2));
    let on_replica = wait_until("the order reaches shard a's replica", Duration::from_secs(10), || async move {
        let row = order_on(replica, first_id).await;
        (row.0 == 1).then_some(row)
    })
    .await;
    assert_eq!(on_replica, (1, 3 * 4550 + 7 * 349, 2));

    // The replica is a real read-only replica: the app user cannot write there.
    let app_on_replica = MySqlPoolOptions::new().max_connections(1).connect(topology.url("a-replica")).await.unwrap();
    let refused = sqlx::query("INSERT INTO users (id, email, is_active, created_at) VALUES (2, 'x@y.io', 1, 0)")
        .execute(&app_on_replica)
        .await
        .expect_err("a write on the replica must fail");
    let number =
        refused.as_database_error().and_then(|e| e.try_downcast_ref::<MySqlDatabaseError>()).map(|e| e.number());
    assert_eq!(number, Some(1290), "read_only refusal expected, got {refused}");
    let (read_only,): (i64,) = sqlx::query_as("SELECT @@read_only").fetch_one(replica).await.unwrap();
    assert_eq!(read_only, 1);

    // The replica stops applying: it falls behind while the primary goes on.
    sqlx::query("STOP SLAVE SQL_THREAD").execute(replica).await.unwrap();
    let (status, second) =
        create_order(stack, ann_token, &json!([{"product_id": 12, "quantity": 1}]), Some("ann-2")).await;
    let second = &second;
    assert_eq!(status, 201, "{second}");
    let second_id = second["id"].as_i64().unwrap();
    // Ann reads her write at once, although the replica does not have it.
    let (status, shown) = get(stack, ann_token, &format!("/api/orders/{second_id}")).await;
    assert_eq!((status, &shown), (200, second), "own write not readable at once");
    let (status, list) = get(stack, ann_token, "/api/orders").await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<i64> = list["orders"].as_array().unwrap().iter().map(|o| o["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![second_id, first_id], "newest first, both present");
    assert_eq!(order_on(replica, second_id).await.0, 0, "the replica must not have it yet (else this proves nothing)");
    assert!(metric(stack, "a", "shop_read_your_writes_total").await >= 1.0);

    // The lag grows past the bound and shows; reads fall back to the primary, counted and logged.
    wait_until("shard a's lag passes its bound", Duration::from_secs(15), || async move {
        let lag = metric(stack, "a", "shop_replica_lag_seconds").await;
        (lag > MAX_LAG as f64 && metric(stack, "a", "shop_replica_up").await == 0.0).then_some(())
    })
    .await;
    let (_, ready) = readyz(stack, "a").await;
    assert_eq!(ready["replica"]["state"], "lagging", "{ready}");
    assert!(ready["replica"]["lag_seconds"].as_f64().unwrap() >= MAX_LAG as f64, "{ready}");
    let fallbacks = metric(stack, "a", "shop_replica_fallback_total").await;
    for path in ["/api/orders", "/api/orders?limit=1", "/api/orders?limit=2"] {
        let (status, body) = get(stack, &bob_token, path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert!(metric(stack, "a", "shop_replica_fallback_total").await >= fallbacks + 3.0);
    assert!(backend_log(stack, "a").contains("replica lags past its bound"), "no warning in the log");
    // Shard b's replica is unaffected.
    assert_eq!(metric(stack, "b", "shop_replica_up").await, 1.0);

    // Replication resumes: the lag drops back, the second order arrives, reads return to the replica.
    sqlx::query("START SLAVE SQL_THREAD").execute(replica).await.unwrap();
    wait_until("shard a's lag is back under its bound", Duration::from_secs(15), || async move {
        let lag = metric(stack, "a", "shop_replica_lag_seconds").await;
        (lag < MAX_LAG as f64 && metric(stack, "a", "shop_replica_up").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(order_on(replica, second_id).await, (1, 24999, 1));
    wait_until("ann's reads are served by the replica again", Duration::from_secs(10), || async move {
        let before = metric(stack, "a", "shop_replica_reads_total").await;
        let (status, body) = get(stack, ann_token, &format!("/api/orders/{second_id}")).await;
        assert_eq!((status, &body), (200, second));
        (metric(stack, "a", "shop_replica_reads_total").await > before).then_some(())
    })
    .await;
    let (status, me): (u16, Value) = get(stack, ann_token, "/api/users/me").await;
    assert_eq!((status, me["id"].as_u64()), (200, Some(ann)), "{me}");
}
