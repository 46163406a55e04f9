//! /healthz, /readyz, /metrics, and a dead primary: 503 fast, other shards unaffected.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use shopgate_core::config::DbUrl;
use shopgate_store::schema::{migrate_url, Schema};

use crate::helpers::{assert_error, json, spawn_app, spawn_app_with, TestApp, ANN, ODD};

/// Every request retries setting up a shard whose database is down, instead of once a second.
const NO_INIT_THROTTLE: (&str, &str) = ("SHOP__BACKEND__INIT_RETRY_MS", "0");

/// 503 `shard_unavailable`, each answer within `bound`, from the API (read and write) and
/// /readyz. The app retries setting up its database on every request (`NO_INIT_THROTTLE`), so
/// each of them really tries the database again.
async fn assert_unavailable_fast(app: &TestApp, bound: Duration) {
    let timed = Instant::now();
    assert_error(app.get("/api/orders", ANN).await, 503, "shard_unavailable").await;
    assert!(timed.elapsed() < bound, "a read took {:?}", timed.elapsed());
    let timed = Instant::now();
    let order = app.create_order(ANN, json!([{"product_id": 1, "quantity": 1}]), None).await;
    assert_error(order, 503, "shard_unavailable").await;
    assert!(timed.elapsed() < bound, "a write took {:?}", timed.elapsed());
    let timed = Instant::now();
    assert_error(app.get_anonymous("/readyz").await, 503, "shard_unavailable").await;
    assert!(timed.elapsed() < bound, "/readyz took {:?}", timed.elapsed());
    // The process itself is fine, and routes with the shard map from the auth database.
    let (status, body) = json(app.get_anonymous("/healthz").await).await;
    assert_eq!((status, &body["status"], &body["map_version"]), (200, &json!("ok"), &json!(1)), "{body}");
}

#[tokio::test]
async fn health_ready_and_metrics_need_no_auth() {
    let app = spawn_app().await;
    let (status, body) = json(app.get_anonymous("/healthz").await).await;
    assert_eq!((status, body), (200, json!({"status": "ok", "shard": "a", "map_version": 1})));
    let (status, body) = json(app.get_anonymous("/readyz").await).await;
    assert_eq!((status, &body["map_version"]), (200, &json!(1)), "{body}");
    let _ = app.get("/api/orders", ANN).await;
    let res = app.get_anonymous("/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = res.text().await.unwrap();
    assert!(text.contains("shop_shard_map_version{shard=\"a\"} 1"), "no map version in:\n{text}");
    assert!(
        text.contains("shop_http_requests_total{shard=\"a\",route=\"/api/orders\",method=\"GET\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(text.contains("shop_replica_fallback_total{shard=\"a\"} 0"), "{text}");
}

#[tokio::test]
async fn a_sqlite_primary_that_cannot_open_is_503_fast_and_serves_once_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("not-yet");
    let url = format!("sqlite://{}/shard-a.db", folder.display());
    let app = spawn_app_with("a", &[("SHOP__SHARDS__A__PRIMARY", url.as_str()), NO_INIT_THROTTLE]).await;
    assert_unavailable_fast(&app, Duration::from_secs(3)).await;
    // The database can open now (migrated, as `shopctl migrate` leaves it, and moved into place):
    // the very next request sets the shard up and is served.
    let ready = dir.path().join("ready");
    std::fs::create_dir(&ready).unwrap();
    let migrated = format!("sqlite://{}/shard-a.db", ready.display());
    migrate_url(&DbUrl::new(migrated), Schema::Shard).await.unwrap();
    std::fs::rename(&ready, &folder).unwrap();
    let (status, body) = json(app.get("/api/products", ANN).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_mysql_primary_on_a_closed_port_is_503_fast_and_other_shards_are_unaffected() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("mysql://shop:pw@127.0.0.1:{closed}/shard_a");
    let started = Instant::now();
    let down = spawn_app_with("a", &[("SHOP__SHARDS__A__PRIMARY", url.as_str()), NO_INIT_THROTTLE]).await;
    assert!(started.elapsed() < Duration::from_secs(4), "start took {:?}", started.elapsed());
    let healthy = spawn_app_with("b", &[("SHOP__SHARDS__A__PRIMARY", url.as_str())]).await;
    assert_unavailable_fast(&down, Duration::from_secs(3)).await;
    let (status, _) = json(healthy.create_order(ODD, json!([{"product_id": 1, "quantity": 1}]), None).await).await;
    assert_eq!(status, 201, "shard b does not depend on shard a's database");
}

#[tokio::test]
async fn a_primary_lost_after_start_is_503_fast() {
    let app = spawn_app().await;
    assert_eq!(app.get("/api/orders", ANN).await.status(), 200);
    app.state.db.close().await;
    let started = Instant::now();
    assert_error(app.get("/api/orders", ANN).await, 503, "shard_unavailable").await;
    assert_error(
        app.create_order(ANN, json!([{"product_id": 1, "quantity": 1}]), Some("k")).await,
        503,
        "shard_unavailable",
    )
    .await;
    assert_error(app.get_anonymous("/readyz").await, 503, "shard_unavailable").await;
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}
