//! Idempotency keys are kept for the retention (`[backend] idempotency_retention_seconds`) and
//! purged after it, in bounded batches, while orders keep flowing; a retry within the retention
//! still returns the original order. On SQLite, and on MariaDB when `SHOPGATE_TEST_MYSQL` is set.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{json, now, spawn_app_with, TestApp, ANN, BOB};
use crate::mysql::spawn_on_mysql_with;

const RETENTION: i64 = 3600;
/// Synthetic keys past the retention, inserted straight into the table.
const EXPIRED: i64 = 1_050;
const BATCH: u64 = 100;

const OVERRIDES: &[(&str, &str)] = &[
    ("SHOP__BACKEND__IDEMPOTENCY_RETENTION_SECONDS", "3600"),
    ("SHOP__BACKEND__IDEMPOTENCY_PURGE_EVERY_SECONDS", "1"),
    ("SHOP__BACKEND__IDEMPOTENCY_PURGE_BATCH", "100"),
    ("SHOP__BACKEND__IDEMPOTENCY_PURGE_PAUSE_MS", "20"),
];

/// Moves `user`'s key `key` back in time by `age` seconds.
async fn age_key(app: &TestApp, user: u64, key: &str, age: i64) {
    let done = sqlx::query("UPDATE idempotency_keys SET created_at = ? WHERE user_id = ? AND idem_key = ?")
        .bind(now() - age)
        .bind(user as i64)
        .bind(key)
        .execute(app.state.db_write())
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1);
}

async fn expired_keys(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys WHERE created_at < ?")
        .bind(now() - RETENTION)
        .fetch_one(app.state.db_write())
        .await
        .unwrap()
}

async fn order(app: &TestApp, user: u64, product: i64, key: &str) -> (u16, Value) {
    json(app.create_order(user, json!([{"product_id": product, "quantity": 1}]), Some(key)).await).await
}

async fn expired_keys_are_purged_while_orders_flow(app: TestApp) {
    let app = Arc::new(app);
    // Within the retention (50 minutes old), and past it (2 hours old).
    let (status, kept) = order(&app, ANN, 3, "kept").await;
    assert_eq!(status, 201, "{kept}");
    age_key(&app, ANN, "kept", RETENTION - 600).await;
    let (status, expired) = order(&app, ANN, 4, "expired").await;
    assert_eq!(status, 201, "{expired}");
    age_key(&app, ANN, "expired", 2 * RETENTION).await;
    // Many more past it, two days old, written straight into the table.
    let mut tx = app.state.db.begin_write().await.unwrap();
    for chunk in 0..EXPIRED / 150 {
        let sql = format!(
            "INSERT INTO idempotency_keys (user_id, idem_key, request_hash, order_id, created_at) VALUES {}",
            vec!["(?, ?, 'x', ?, ?)"; 150].join(", ")
        );
        let mut insert = sqlx::query(&sql);
        for i in chunk * 150..(chunk + 1) * 150 {
            insert = insert.bind(BOB as i64).bind(format!("old-{i}")).bind(i + 1).bind(now() - 2 * 86_400 + i);
        }
        insert.execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();

    // Orders flow while the purge runs: every one is created at once, and the key within the
    // retention keeps answering with its original order.
    let flow_until = Instant::now() + Duration::from_millis(2500);
    let mut flows = tokio::task::JoinSet::new();
    for f in 0..3i64 {
        let app = app.clone();
        flows.spawn(async move {
            let (mut created, mut slowest) = (0, Duration::ZERO);
            while Instant::now() < flow_until {
                let started = Instant::now();
                let (status, body) = order(&app, ANN, 1 + (created + f) % 12, &format!("flow-{f}-{created}")).await;
                assert_eq!(status, 201, "an order beside the purge: {body}");
                slowest = slowest.max(started.elapsed());
                created += 1;
            }
            (created, slowest)
        });
    }
    let replays = {
        let (app, kept) = (app.clone(), kept.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < flow_until {
                let (status, again) = order(&app, ANN, 3, "kept").await;
                assert_eq!((status, &again), (200, &kept), "a retry within the retention");
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            n
        })
    };
    let (mut flowed, mut slowest) = (0, Duration::ZERO);
    while let Some(done) = flows.join_next().await {
        let (n, s) = done.unwrap();
        flowed += n;
        slowest = slowest.max(s);
    }
    let replayed = replays.await.unwrap();
    eprintln!("{flowed} orders beside the purge, the slowest in {slowest:?}; {replayed} replays");
    assert!(flowed >= 20, "only {flowed} orders in 2.5 s");
    // Below the 5 s request deadline: no order ever waited on the purge for long.
    assert!(slowest < Duration::from_secs(4), "an order took {slowest:?} beside the purge");

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = expired_keys(&app).await;
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} keys past the retention are still stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bounded batches: at most BATCH keys per statement.
    let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
    assert_eq!(app.state.metrics.idempotency_keys_purged(), EXPIRED as u64 + 1, "{metrics}");
    let batches = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shop_idempotency_purge_batches_total{shard=\"a\"} "))
        .map(|n| n.parse::<u64>().unwrap())
        .unwrap();
    assert!(batches >= (EXPIRED as u64 + 1).div_ceil(BATCH), "{batches} batches for {EXPIRED} keys");

    // The key within the retention is still there and still answers with its order; every key of
    // the flow is kept; the expired key is gone, so its retry makes a new order.
    let (status, again) = order(&app, ANN, 3, "kept").await;
    assert_eq!((status, &again), (200, &kept));
    let flow_keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys WHERE idem_key LIKE 'flow-%'")
        .fetch_one(app.state.db_write())
        .await
        .unwrap();
    assert_eq!(flow_keys, flowed);
    let (status, new) = order(&app, ANN, 4, "expired").await;
    assert_eq!(status, 201, "{new}");
    assert_ne!(new["id"], expired["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_past_the_retention_are_purged_in_batches_while_orders_flow() {
    expired_keys_are_purged_while_orders_flow(spawn_app_with("a", OVERRIDES).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_past_the_retention_are_purged_in_batches_while_orders_flow_on_mysql() {
    let Some(app) = spawn_on_mysql_with(false, OVERRIDES).await else { return };
    expired_keys_are_purged_while_orders_flow(app).await;
}

/// Keys of a bucket whose writes are closed here (a move's target before it opens, or its source
/// in the write pause) are the move's, not the purge's: purging them would make the two shards'
/// copies differ under the move's checksums (seen at 5M orders: generated keys are old). They are
/// purged once the bucket opens again.
async fn a_fenced_buckets_keys_wait_for_it_to_open(app: TestApp) {
    let db = app.state.db_write();
    shopgate_store::fence::set(db, &[46], false).await.unwrap();
    for (user, bucket) in [(1044_i64, 44), (1046, 46)] {
        let sql = format!(
            "INSERT INTO idempotency_keys (user_id, idem_key, request_hash, order_id, created_at, bucket) VALUES {}",
            vec!["(?, ?, 'x', ?, ?, ?)"; 50].join(", ")
        );
        let mut insert = sqlx::query(&sql);
        for i in 0..50 {
            insert = insert.bind(user).bind(format!("old-{i}")).bind(i + 1).bind(now() - 2 * 86_400).bind(bucket);
        }
        insert.execute(db).await.unwrap();
    }
    let left = |bucket: i64| async move {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM idempotency_keys WHERE bucket = ?")
            .bind(bucket)
            .fetch_one(db)
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while left(44).await > 0 {
        assert!(Instant::now() < deadline, "bucket 44's expired keys were not purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The purge has run (44's are gone); 46's are all there.
    assert_eq!(left(46).await, 50);
    shopgate_store::fence::set(db, &[46], true).await.unwrap();
    while left(46).await > 0 {
        assert!(Instant::now() < deadline, "bucket 46's expired keys were not purged once it opened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_buckets_expired_keys_are_left_to_the_move() {
    a_fenced_buckets_keys_wait_for_it_to_open(spawn_app_with("a", OVERRIDES).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_buckets_expired_keys_are_left_to_the_move_on_mysql() {
    let Some(app) = spawn_on_mysql_with(false, OVERRIDES).await else { return };
    a_fenced_buckets_keys_wait_for_it_to_open(app).await;
}
