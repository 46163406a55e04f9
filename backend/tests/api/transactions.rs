//! No pooled connection is ever handed out inside a transaction, and a request dropped at any
//! moment (its client gone) leaves its write whole or not at all. On SQLite, and on MariaDB when
//! `SHOPGATE_TEST_MYSQL` is set.
//!
//! sqlx's `begin` is not cancel-safe on MySQL: dropped after its `BEGIN` went out and before the
//! answer was read, it leaves the server inside a transaction that sqlx does not know of, and the
//! connection goes back to the pool like that. [`leave_a_transaction_open`] makes exactly that
//! state by hand (a raw `BEGIN`, invisible to sqlx's bookkeeping), deterministically.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use rand::Rng as _;
use serde_json::json;
use shopgate_backend::db::Dialect;
use shopgate_backend::router;
use sqlx::pool::PoolConnection;
use sqlx::{Any, Connection as _, Executor as _};
use tower::ServiceExt as _;

use crate::helpers::{json, spawn_app, TestApp, ANN, BOB};
use crate::mysql::spawn_on_mysql_with;

/// Whether the server holds `conn` inside a transaction.
async fn in_transaction(conn: &mut PoolConnection<Any>, dialect: Dialect) -> bool {
    match dialect {
        Dialect::MySql => {
            sqlx::query_scalar::<_, i64>("SELECT @@in_transaction").fetch_one(&mut **conn).await.unwrap() != 0
        }
        // SQLite reports no open transaction in SQL; a ROLLBACK fails when there is none.
        Dialect::Sqlite => conn.execute("ROLLBACK").await.is_ok(),
    }
}

/// Takes every connection the primary's pool has (waiting for those in use) and checks each.
async fn assert_no_pooled_connection_in_transaction(app: &TestApp, when: &str) {
    let pool = app.state.db_write();
    let dialect = app.state.db.dialect();
    let mut held = Vec::new();
    for _ in 0..pool.options().get_max_connections() {
        let conn = tokio::time::timeout(Duration::from_secs(10), pool.acquire()).await;
        let conn = conn.unwrap_or_else(|_| panic!("{when}: the pool did not hand out all its connections within 10 s"));
        held.push(conn.unwrap());
    }
    for (i, conn) in held.iter_mut().enumerate() {
        let open = in_transaction(conn, dialect).await;
        assert!(!open, "{when}: pooled connection {i} was handed out inside a transaction");
    }
}

/// What a cancelled `BEGIN` leaves: a pooled connection the server holds inside a transaction
/// (with a row written in it), returned to the pool while sqlx believes it is outside one.
async fn leave_a_transaction_open(app: &TestApp, user: u64) {
    let mut conn = app.state.db_write().acquire().await.unwrap();
    conn.execute("BEGIN").await.unwrap();
    sqlx::query("INSERT INTO users (id, email, is_active, created_at) VALUES (?, 'left-open@example.com', 1, 0)")
        .bind(user as i64)
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
}

async fn wait_for_leak_counted(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.state.metrics.leaked_transactions() == 0 {
        assert!(Instant::now() < deadline, "the connection left in a transaction was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_connection_left_in_a_transaction_is_never_reused(app: &TestApp) {
    leave_a_transaction_open(app, ANN).await;
    assert_no_pooled_connection_in_transaction(app, "after a transaction was left open").await;

    // The row written inside it was rolled back, not committed by whoever used the connection
    // next: ANN's profile is created now (201), at once, and reads back.
    let started = Instant::now();
    let (status, profile) = json(app.post_json("/api/users", ANN, &json!({})).await).await;
    assert_eq!(status, 201, "{profile}");
    assert_eq!(profile["email"], "user42@example.com");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    for user in [ANN, BOB] {
        let (status, _) = json(app.post_json("/api/users", user, &json!({})).await).await;
        assert!(status == 200 || status == 201, "{status}");
        let (status, me) = json(app.get("/api/users/me", user).await).await;
        assert_eq!(status, 200, "{me}");
    }
    wait_for_leak_counted(app).await;
    let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("shop_db_leaked_transactions_total{shard=\"a\",at=\"release\"} 1\n"), "{metrics}");
}

/// Order creates through the router, each dropped after a random 0-5 ms (as hyper drops a
/// request whose client disconnected); after each, every pooled connection is checked. Then the
/// store holds whole orders only, and the API answers as usual.
async fn requests_dropped_at_random_moments_leave_nothing_open(app: &TestApp, rounds: usize) {
    let mut rng = rand::thread_rng();
    let token = app.token(ANN);
    let mut finished = 0;
    for i in 0..rounds {
        let body = json!({"items": [{"product_id": 1 + i % 12, "quantity": 1 + i % 3}]}).to_string();
        let req = Request::post("/api/orders")
            .header("authorization", format!("Bearer {token}"))
            .header("x-user-id", ANN.to_string())
            .header("content-type", "application/json")
            .header("idempotency-key", format!("dropped-{i}"))
            .body(Body::from(body))
            .unwrap();
        let patience = Duration::from_micros(rng.gen_range(0..5_000));
        let answered = tokio::time::timeout(patience, router(app.state.clone()).oneshot(req)).await;
        if let Ok(res) = answered {
            let status = res.unwrap().status().as_u16();
            assert!(status == 201 || status == 503, "round {i}: {status}");
            finished += 1;
        }
        assert_no_pooled_connection_in_transaction(app, &format!("round {i}")).await;
    }
    eprintln!("{finished} of {rounds} requests answered before they were dropped");
    assert!(finished < rounds, "no request was dropped: the test proves nothing");

    // Whole orders only: each has its items and its key, each key its order.
    let broken: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM order_items i WHERE i.order_id = o.id) \
         OR NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.order_id = o.id)",
    )
    .fetch_one(app.state.db_write())
    .await
    .unwrap();
    assert_eq!(broken, 0, "orders without their items or key");
    let dangling: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM idempotency_keys k WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = k.order_id)",
    )
    .fetch_one(app.state.db_write())
    .await
    .unwrap();
    assert_eq!(dangling, 0, "keys naming no order");
    // A retry of any dropped request gets its order (200) or makes it (201), never an error.
    for i in (0..rounds).step_by(rounds / 10) {
        let items = json!([{"product_id": 1 + i % 12, "quantity": 1 + i % 3}]);
        let (status, body) = json(app.create_order(ANN, items, Some(&format!("dropped-{i}"))).await).await;
        assert!(status == 200 || status == 201, "retry of round {i}: {status} {body}");
    }
    assert_eq!(app.state.metrics.leaked_transactions(), 0, "a connection was found inside a transaction");
}

#[tokio::test]
async fn a_connection_left_inside_a_transaction_is_never_handed_out_again() {
    let app = spawn_app().await;
    a_connection_left_in_a_transaction_is_never_reused(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_dropped_mid_transaction_leave_no_connection_in_a_transaction() {
    let app = spawn_app().await;
    requests_dropped_at_random_moments_leave_nothing_open(&app, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_left_inside_a_transaction_is_never_handed_out_again_on_mysql() {
    let Some(app) = spawn_on_mysql_with(false, &[]).await else { return };
    a_connection_left_in_a_transaction_is_never_reused(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_dropped_mid_transaction_leave_no_connection_in_a_transaction_on_mysql() {
    let Some(app) = spawn_on_mysql_with(false, &[]).await else { return };
    requests_dropped_at_random_moments_leave_nothing_open(&app, 300).await;
}

/// The order batches' leader keeps its connection between commits (`Db::kept_writer`): on
/// MariaDB the next batch gets the same one, never one sqlx knows to be inside a transaction, and
/// none after a second of rest (then the pool's, checked), and closing the pools closes it; on
/// SQLite never (its one write connection would be kept from the other writers).
async fn the_leader_keeps_its_connection_between_commits(app: &TestApp) {
    let db = &app.state.db;
    let id = |mut conn: PoolConnection<Any>| async move {
        let id: i64 = sqlx::query_scalar("SELECT CONNECTION_ID()").fetch_one(&mut *conn).await.unwrap();
        (id, conn)
    };
    match db.dialect() {
        Dialect::MySql => {
            let (first, conn) = id(db.kept_writer().await.unwrap()).await;
            db.keep(conn);
            // Every other connection of the pool is free meanwhile, and busy here: the next
            // batch's can only be the kept one.
            let mut others = Vec::new();
            for _ in 1..app.state.db_write().options().get_max_connections() {
                others.push(app.state.db_write().acquire().await.unwrap());
            }
            let (again, mut conn) = id(db.kept_writer().await.unwrap()).await;
            assert_eq!(again, first, "the kept connection was not the next batch's");
            drop(others);
            // One that sqlx knows to be inside a transaction is not kept.
            let tx = conn.begin().await.unwrap();
            std::mem::forget(tx);
            assert!(conn.is_in_transaction());
            db.keep(conn);
            let (next, conn) = id(db.kept_writer().await.unwrap()).await;
            assert_ne!(next, first, "a connection inside a transaction was kept");
            // Kept, then left a second and more: it goes back to the pool, whose check finds
            // what happened to it meanwhile (here: the server closed it).
            db.keep(conn);
            sqlx::query(&format!("KILL {next}")).execute(app.state.db_write()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            let (fresh, conn) = id(db.kept_writer().await.unwrap()).await;
            assert_ne!(fresh, next);
            db.keep(conn);
            // Closing the pools closes the kept connection too.
            db.close().await;
            let server = std::env::var("SHOPGATE_TEST_MYSQL").unwrap();
            let mut admin = sqlx::mysql::MySqlConnection::connect(&server).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?")
                    .bind(fresh)
                    .fetch_one(&mut admin)
                    .await
                    .unwrap();
                if open == 0 {
                    break;
                }
                if Instant::now() >= deadline {
                    let rows: Vec<(i64, String, Option<String>)> =
                        sqlx::query_as("SELECT ID, COMMAND, DB FROM information_schema.PROCESSLIST")
                            .fetch_all(&mut admin)
                            .await
                            .unwrap();
                    panic!("the kept connection {fresh} outlived the pools' close: {rows:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Dialect::Sqlite => {
            let conn = db.kept_writer().await.unwrap();
            db.keep(conn);
            // The one write connection is free at once: another writer begins without waiting.
            let started = Instant::now();
            let tx = tokio::time::timeout(Duration::from_secs(3), db.begin_write()).await;
            assert!(tx.is_ok_and(|tx| tx.is_ok()), "the write connection was kept from other writers");
            assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
        }
    }
}

#[tokio::test]
async fn the_order_leader_keeps_its_connection_between_commits() {
    the_leader_keeps_its_connection_between_commits(&spawn_app().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_leader_keeps_its_connection_between_commits_on_mysql() {
    let Some(app) = spawn_on_mysql_with(false, &[]).await else { return };
    the_leader_keeps_its_connection_between_commits(&app).await;
}
