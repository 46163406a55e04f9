//! Orders that arrive together share a transaction (group commit), and each still gets exactly the
//! answer it would have had alone: new orders 201, retries under a key 200 with the first order,
//! an unknown product 422, a user whose bucket's fence is closed 503, and nothing written for
//! any of those. On SQLite, and on MariaDB when `SHOPGATE_TEST_MYSQL` is set.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};
use shopgate_store::fence;

use crate::helpers::{json, spawn_app_with, TestApp};
use crate::mysql::spawn_on_mysql_with;

/// Users of shard `a` (even buckets); the last one's bucket gets its fence closed.
const USERS: [u64; 6] = [42, 44, 46, 48, 50, 52];
const FENCED: u64 = 52;
const UNKNOWN_PRODUCT: i64 = 987_654;
/// The whole burst is admitted at once: none waits for a slot while the test holds the lock.
const ALL_IN_FLIGHT: &[(&str, &str)] = &[("SHOP__BACKEND__MAX_IN_FLIGHT", "64"), ("SHOP__BACKEND__MAX_PER_USER", "0")];

/// What each request of the burst is, and so what it must get.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    New,
    Keyed,
    /// One key, the same items, sent by many at once: one order.
    SharedKey,
    UnknownProduct,
    Fenced,
}

fn counter(metrics: &str, name: &str) -> f64 {
    let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {metrics}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Until `n` API requests are being worked on, and a moment more for the last to reach the queue;
/// at most 1.5 s, below the pool's 2 s acquire timeout the first order waits in behind the lock.
async fn wait_in_flight(app: &TestApp, n: usize) {
    let since = std::time::Instant::now();
    while since.elapsed() < std::time::Duration::from_millis(1500) {
        let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
        if counter(&metrics, "shop_requests_in_flight") >= n as f64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

async fn a_burst_shares_transactions_and_answers_each_as_alone(app: TestApp) {
    let app = Arc::new(app);
    fence::set(app.state.db_write(), &[(FENCED % 1000) as u16], false).await.unwrap();
    let mut plan = Vec::new();
    for i in 0..60u64 {
        let kind = match i % 10 {
            0..=3 => Kind::New,
            4..=6 => Kind::Keyed,
            7 => Kind::SharedKey,
            8 => Kind::UnknownProduct,
            _ => Kind::Fenced,
        };
        plan.push((i, kind));
    }
    // Hold the shard's write lock (SQLite) and every fence row (MariaDB: orders share-lock theirs)
    // while the burst arrives: its first transaction waits, the rest queue behind it, and sharing
    // does not depend on how fast this machine happens to run the requests. The first is a plain
    // order, sent alone before the others: a batch holding a retry of a key an earlier transaction
    // claimed fails its claims whole and places every order alone (by design, see
    // `service::orders::write_batch`), so a shared-key order leading alone, as one did on a
    // loaded machine when the burst was sent at once, left none shared.
    let mut hold = app.state.db.begin_write().await.unwrap();
    sqlx::query("UPDATE bucket_fence SET writes_open = writes_open").execute(&mut *hold).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    let (first, rest) = plan.split_first().unwrap();
    assert_eq!(first.1, Kind::New);
    for (n, &(i, kind)) in std::iter::once(first).chain(rest).enumerate() {
        let client = app.clone();
        tasks.spawn(async move {
            let user = match kind {
                Kind::Fenced => FENCED,
                Kind::SharedKey => USERS[0],
                _ => USERS[(i % 5) as usize],
            };
            let product = match kind {
                Kind::UnknownProduct => UNKNOWN_PRODUCT,
                Kind::SharedKey => 1,
                _ => 1 + (i % 7) as i64,
            };
            let quantity = if kind == Kind::SharedKey { 3 } else { 1 + (i % 4) as i64 };
            let items = json!([{"product_id": product, "quantity": quantity}, {"product_id": 12, "quantity": 1}]);
            let key = match kind {
                Kind::Keyed => Some(format!("burst-{i}")),
                Kind::SharedKey => Some("burst-shared".to_owned()),
                _ => None,
            };
            let (status, body) = json(client.create_order(user, items, key.as_deref()).await).await;
            (kind, user, status, body)
        });
        if n == 0 {
            wait_in_flight(&app, 1).await;
        }
    }
    // Let go once the whole burst is in (the first waiting for the lock, the rest queued behind
    // it), not after a fixed time, which a loaded machine can outlast.
    wait_in_flight(&app, 60).await;
    hold.commit().await.unwrap();
    let mut created: Vec<Value> = Vec::new();
    let mut shared_ids = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (kind, user, status, body) = done.unwrap();
        match kind {
            Kind::New | Kind::Keyed => {
                assert_eq!(status, 201, "{kind:?}: {body}");
                assert_eq!(body["user_id"], user, "{body}");
                created.push(body);
            }
            Kind::SharedKey => {
                assert!(status == 201 || status == 200, "{status}: {body}");
                if status == 201 {
                    created.push(body.clone());
                }
                shared_ids.push(body["id"].as_i64().unwrap());
            }
            Kind::UnknownProduct => {
                assert_eq!((status, body["error"].as_str()), (422, Some("unknown_product")), "{body}")
            }
            Kind::Fenced => assert_eq!((status, body["error"].as_str()), (503, Some("moving")), "{body}"),
        }
    }
    // 24 new, 18 keyed, and one for the six requests under the shared key.
    assert_eq!(created.len(), 24 + 18 + 1);
    assert!(shared_ids.windows(2).all(|w| w[0] == w[1]), "one key, one order: {shared_ids:?}");
    assert_eq!(app.count("orders").await, 43);
    assert_eq!(app.count("order_items").await, 86);
    assert_eq!(app.count("idempotency_keys").await, 19);

    // Each acknowledged order is stored as it was answered, items and all.
    let by_id: HashMap<i64, &Value> = created.iter().map(|o| (o["id"].as_i64().unwrap(), o)).collect();
    assert_eq!(by_id.len(), 43, "ids are unique");
    for (id, answered) in &by_id {
        let user = answered["user_id"].as_u64().unwrap();
        let (status, stored) = json(app.get(&format!("/api/orders/{id}"), user).await).await;
        assert_eq!(status, 200, "{stored}");
        assert_eq!(&&stored, answered);
    }
    // The fenced user got no profile, and each of the others has one.
    let profiles: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE id IN (42, 44, 46, 48, 50, 52)")
        .fetch_one(app.state.db_write())
        .await
        .unwrap();
    assert_eq!(profiles, 5);

    // And they shared: fewer transactions than orders.
    let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
    let orders = counter(&metrics, "shop_orders_created_total");
    let transactions = counter(&metrics, "shop_order_transactions_total");
    assert_eq!(orders, 43.0);
    assert!(transactions < orders, "{transactions} transactions for {orders} orders: none shared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_orders_on_sqlite() {
    a_burst_shares_transactions_and_answers_each_as_alone(spawn_app_with("a", ALL_IN_FLIGHT).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_orders_on_mysql() {
    let Some(app) = spawn_on_mysql_with(false, ALL_IN_FLIGHT).await else { return };
    a_burst_shares_transactions_and_answers_each_as_alone(app).await;
}
