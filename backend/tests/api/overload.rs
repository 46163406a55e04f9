//! Past its capacity a backend answers 503 with `Retry-After` at once, never a 500 and never a
//! timeout from deep inside, and it recovers by itself when the load drops. The database is held
//! still from outside (SQLite's write lock taken by another connection), so requests stay in
//! flight as long as the test says.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{Connection as _, Executor as _, SqliteConnection};

use crate::helpers::{spawn_app_with, TestApp, ANN, BOB};

/// How long the database is held still in the capacity test.
const HOLD: Duration = Duration::from_secs(3);

/// `(status, Retry-After, error code, how long it took)` of one order create.
async fn timed_create(app: &TestApp, key: String) -> (u16, Option<String>, Value, Duration) {
    let started = Instant::now();
    let res = app.create_order(ANN, json!([{"product_id": 2, "quantity": 1}]), Some(&key)).await;
    let status = res.status().as_u16();
    let retry_after = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let body: Value = res.json().await.unwrap_or(Value::Null);
    (status, retry_after, body["error"].clone(), started.elapsed())
}

/// Holds shard a's SQLite write lock from a connection of its own until dropped or released.
async fn hold_write_lock(app: &TestApp) -> SqliteConnection {
    let url = app.config.shard("a").unwrap().primary.expose().to_owned();
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    conn.execute("BEGIN IMMEDIATE").await.unwrap();
    conn
}

async fn burst(app: &Arc<TestApp>, n: usize, tag: &str) -> Vec<(u16, Option<String>, Value, Duration)> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (app, key) = (app.clone(), format!("{tag}-{i}"));
        tasks.spawn(async move { timed_create(&app, key).await });
    }
    let mut answers = Vec::new();
    while let Some(done) = tasks.join_next().await {
        answers.push(done.unwrap());
    }
    answers
}

/// After a burst: everything answers 2xx again, and nothing is counted in flight.
async fn assert_recovered(app: &TestApp) {
    for i in 0..20 {
        let (status, _, body, _) = timed_create(app, format!("after-{i}")).await;
        assert_eq!(status, 201, "after the burst: {body}");
    }
    assert_eq!(app.get("/api/orders", ANN).await.status(), 200);
    let metrics = app.get_anonymous("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("shop_requests_in_flight{shard=\"a\"} 0\n"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_capacity_a_backend_answers_503_with_retry_after_at_once_and_recovers() {
    // One user's burst: without the per-user bound, so that it is the capacity that turns it away.
    let capacity = [
        ("SHOP__BACKEND__MAX_IN_FLIGHT", "4"),
        ("SHOP__BACKEND__MAX_QUEUED", "4"),
        ("SHOP__BACKEND__QUEUE_WAIT_MS", "100"),
        ("SHOP__BACKEND__MAX_PER_USER", "0"),
    ];
    let app = Arc::new(spawn_app_with("a", &capacity).await);
    assert_eq!(timed_create(&app, "warm".into()).await.0, 201);

    let lock = hold_write_lock(&app).await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(HOLD).await;
        let mut lock = lock;
        lock.execute("ROLLBACK").await.unwrap();
        lock.close().await.unwrap();
    });
    let answers = burst(&app, 40, "burst").await;
    release.await.unwrap();

    let shed: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    let created = answers.iter().filter(|a| a.0 == 201).count();
    let others: Vec<_> = answers.iter().filter(|a| a.0 != 503 && a.0 != 201).collect();
    let slowest_shed = shed.iter().map(|a| a.3).max().unwrap_or_default();
    eprintln!("40 at once, capacity 4 + 4 queued: {created} created, {} shed (slowest {slowest_shed:?})", shed.len());
    assert!(others.is_empty(), "neither 201 nor 503: {others:?}");
    assert!(shed.len() >= 30, "only {} of 40 were turned away past a capacity of 8", shed.len());
    for (status, retry_after, code, took) in &shed {
        assert_eq!(retry_after.as_deref(), Some("1"), "{status} {code} without Retry-After");
        assert_eq!(code, "overloaded");
        // Long before the database moved again: it was not waited for.
        assert!(*took < HOLD / 2, "a 503 took {took:?}: not at once");
    }
    assert!(created >= 1, "the requests in flight never completed");
    assert!(app.state.metrics.requests_shed() >= 30);
    assert_recovered(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_too_slow_to_answer_gives_503_with_retry_after_never_500() {
    // Default capacity: the pool (10 connections, 2 s acquire timeout), SQLite's 5 s busy timeout
    // and the 5 s request deadline are what stop these requests.
    // (One user's 16: without the per-user bound, which would turn 8 of them away at once.)
    let app = Arc::new(spawn_app_with("a", &[("SHOP__BACKEND__MAX_PER_USER", "0")]).await);
    assert_eq!(timed_create(&app, "warm".into()).await.0, 201);
    let lock = hold_write_lock(&app).await;
    let answers = burst(&app, 16, "stuck").await;
    drop(lock);

    let mut seen = std::collections::BTreeMap::new();
    for (status, retry_after, code, took) in &answers {
        assert_eq!(*status, 503, "{code} after {took:?}");
        assert_eq!(retry_after.as_deref(), Some("1"), "{status} {code} after {took:?} without Retry-After");
        assert!(*took < Duration::from_secs(8), "{code} took {took:?}: past the request deadline");
        *seen.entry(code.as_str().unwrap_or("?").to_owned()).or_insert(0) += 1;
    }
    eprintln!("16 creates against a locked database: {seen:?}");
    assert_recovered(&app).await;
}

/// One user's burst takes at most their share of a process (`max_per_user`): as many again as the
/// queue holds wait for the user's turn, the rest gets 429 with `Retry-After` at once, and another
/// user of the same shard is served meanwhile (before, the burst filled the slots and the queue,
/// and the other user's request got 503 `overloaded`). The waiting ones are served once the
/// user's first ones end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_s_burst_takes_only_their_share_and_another_user_is_served() {
    let capacity = [
        ("SHOP__BACKEND__MAX_IN_FLIGHT", "4"),
        ("SHOP__BACKEND__MAX_QUEUED", "4"),
        ("SHOP__BACKEND__QUEUE_WAIT_MS", "5000"),
        ("SHOP__BACKEND__MAX_PER_USER", "2"),
    ];
    let app = Arc::new(spawn_app_with("a", &capacity).await);
    assert_eq!(timed_create(&app, "warm".into()).await.0, 201);
    assert_eq!(app.get("/api/orders", BOB).await.status(), 200, "bob is a user of shard a too");

    let lock = hold_write_lock(&app).await;
    let burst = {
        let app = app.clone();
        tokio::spawn(async move { burst(&app, 20, "greedy").await })
    };
    // Ann's burst is in: her two requests hold their slots on the locked database, four wait
    // for her turn (a bounded wait: without shares, the burst never counts any).
    for _ in 0..300 {
        if app.state.metrics.requests_over_share() >= 14 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bob = app.get("/api/orders", BOB).await;
    let bob_status = bob.status().as_u16();
    let mut lock = lock;
    lock.execute("ROLLBACK").await.unwrap();
    lock.close().await.unwrap();
    let answers = burst.await.unwrap();

    assert_eq!(bob_status, 200, "another user of the shard was not served during ann's burst");
    let refused: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    let created = answers.iter().filter(|a| a.0 == 201).count();
    assert_eq!((refused.len(), created), (14, 6), "ann's 20 at once, a share of 2 and a queue of 4: {answers:?}");
    for (_, retry_after, code, _) in refused {
        assert_eq!((retry_after.as_deref(), code.as_str()), (Some("1"), Some("too_many_requests")));
    }
    assert_recovered(&app).await;
}
