//! Issue 12: an order costs the primary as few round trips as its rules allow, and orders that
//! arrive together share them (group commit). Counted with the server's own counters
//! (`Questions`: statements; `Com_admin_commands`: pings) around 40 orders placed one after another
//! through nginx, less what the same stretch of time costs idle (the replication heartbeat). The
//! budget is what the backend's `service::orders::place_alone` documents: `BEGIN`, the fence and
//! the prices (one statement), the key's claim, the order, its items, the profile, `COMMIT`, and the pool's check
//! as the connection comes back: 8 statements and sqlx's ping. It was 15 and 3 when a keyed order
//! read its key first, read prices on a second pooled connection and each connection was checked
//! as it was handed out as well as when it came back; 9 and 1 while the fence and the prices were
//! two reads.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use sqlx::MySqlPool;

use crate::{create_order, stack_on_mariadb, user_on};

const ORDERS: u32 = 40;

async fn counters(pool: &MySqlPool) -> (f64, f64) {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Com_admin_commands')")
            .fetch_all(pool)
            .await
            .unwrap();
    let get = |name: &str| rows.iter().find(|(n, _)| n == name).unwrap().1.parse::<f64>().unwrap();
    (get("Questions"), get("Com_admin_commands"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_takes_eight_statements_and_one_ping_on_the_primary() {
    let (topology, stack) = stack_on_mariadb(5).await;
    let mut next = 70_000;
    let user = user_on(&stack, "a", &mut next);
    let token = stack.mint(user);
    let items = json!([{"product_id": 1, "quantity": 2}, {"product_id": 2, "quantity": 1}]);
    // The pool's connections and their prepared statements exist before counting starts.
    for i in 0..3 {
        let (status, body) = create_order(&stack, &token, &items, Some(&format!("warm-{i}"))).await;
        assert_eq!(status, 201, "{body}");
    }
    // Root over the socket: its own statements go to the same counters, and are taken out below
    // (each reading of the counters is one statement).
    let primary = topology.root_over_socket("a-primary").await;

    let before = counters(&primary).await;
    let started = Instant::now();
    for i in 0..ORDERS {
        let (status, body) = create_order(&stack, &token, &items, Some(&format!("count-{i}"))).await;
        assert_eq!(status, 201, "{body}");
    }
    let busy = started.elapsed();
    let after = counters(&primary).await;
    tokio::time::sleep(busy).await;
    let idle = counters(&primary).await;

    let per_order = |f: fn(&(f64, f64)) -> f64| {
        let placing = f(&after) - f(&before) - 1.0;
        let background = f(&idle) - f(&after) - 1.0;
        (placing - background.max(0.0)) / f64::from(ORDERS)
    };
    let statements = per_order(|c| c.0);
    let pings = per_order(|c| c.1);
    // A heartbeat more or less in either stretch moves these by a fraction of one.
    assert!(statements <= 8.5, "{statements:.2} statements per order (budget 8)");
    assert!(pings <= 1.5, "{pings:.2} pings per order (budget 1)");
}

/// Sixteen clients placing orders at once: the orders that pile up behind a commit share the next
/// transaction, so the primary sees far fewer statements and commits than orders. One order at a
/// time costs 8 statements and one commit (above); before group commit, each of these cost 9 and one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_placed_together_share_statements_and_commits() {
    const CLIENTS: u32 = 16;
    const EACH: u32 = 15;
    let (topology, stack) = stack_on_mariadb(5).await;
    let stack = Arc::new(stack);
    let mut next = 71_000;
    let users: Vec<u64> = (0..CLIENTS).map(|_| user_on(&stack, "a", &mut next)).collect();
    let items = json!([{"product_id": 1, "quantity": 2}, {"product_id": 2, "quantity": 1}]);
    for (i, user) in users.iter().enumerate() {
        let (status, body) = create_order(&stack, &stack.mint(*user), &items, Some(&format!("warm-{i}"))).await;
        assert_eq!(status, 201, "{body}");
    }
    let primary = topology.root_over_socket("a-primary").await;
    let commits = |pool: MySqlPool| async move {
        let (_, v): (String, String) =
            sqlx::query_as("SHOW GLOBAL STATUS LIKE 'Com_commit'").fetch_one(&pool).await.unwrap();
        v.parse::<f64>().unwrap()
    };

    let (before, commits_before) = (counters(&primary).await, commits(primary.clone()).await);
    let mut tasks = tokio::task::JoinSet::new();
    for user in users {
        let (stack, items) = (stack.clone(), items.clone());
        tasks.spawn(async move {
            let token = stack.mint(user);
            for i in 0..EACH {
                let (status, body) = create_order(&stack, &token, &items, Some(&format!("burst-{i}"))).await;
                assert_eq!(status, 201, "{body}");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let (after, commits_after) = (counters(&primary).await, commits(primary.clone()).await);
    let orders = f64::from(CLIENTS * EACH);
    // The heartbeat's few statements in this stretch are counted too: they only make it harder.
    let statements = (after.0 - before.0 - 2.0) / orders;
    let committed = (commits_after - commits_before) / orders;
    eprintln!("{statements:.2} statements and {committed:.2} commits per order");
    assert!(statements < 5.0, "{statements:.2} statements per order");
    assert!(committed < 0.6, "{committed:.2} commits per order");
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders").fetch_one(&primary).await.unwrap();
    assert_eq!(stored, i64::from(CLIENTS * (EACH + 1)), "every acknowledged order is stored");
}
