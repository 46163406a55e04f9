//! `/metrics` after known traffic: the right counts, and a latency histogram per route template
//! (never the raw path), each series labelled with the shard.

use serde_json::json;

use crate::helpers::{spawn_app, ANN};

/// The value of the series written exactly `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn counts_and_a_latency_histogram_per_route() {
    let app = spawn_app().await;
    for _ in 0..2 {
        assert_eq!(app.get("/api/orders", ANN).await.status(), 200);
    }
    assert_eq!(app.get("/api/orders/999", ANN).await.status(), 404);
    assert_eq!(app.get("/api/orders/998", ANN).await.status(), 404);
    let r = app.create_order(ANN, json!([{ "product_id": 1, "quantity": 1 }]), None).await;
    assert_eq!(r.status(), 201);
    assert_eq!(app.as_user(reqwest::Method::DELETE, "/api/orders", ANN).send().await.unwrap().status(), 405);
    assert_eq!(app.get_anonymous("/api/orders").await.status(), 401);
    assert_eq!(app.get_anonymous("/no/such/path").await.status(), 404);
    let text = app.get_anonymous("/metrics").await.text().await.unwrap();
    let series = |name: &str, labels: &str| format!("{name}{{shard=\"a\",{labels}}}");
    let expect = [
        (series("shop_http_requests_total", r#"route="/api/orders",method="GET",status="200""#), 2.0),
        (series("shop_http_requests_total", r#"route="/api/orders",method="GET",status="401""#), 1.0),
        (series("shop_http_requests_total", r#"route="/api/orders",method="POST",status="201""#), 1.0),
        (series("shop_http_requests_total", r#"route="/api/orders",method="DELETE",status="405""#), 1.0),
        (series("shop_http_requests_total", r#"route="/api/orders/{id}",method="GET",status="404""#), 2.0),
        (series("shop_http_requests_total", r#"route="unmatched",method="GET",status="404""#), 1.0),
        (series("shop_http_request_duration_seconds_count", r#"route="/api/orders",method="GET""#), 3.0),
        (series("shop_http_request_duration_seconds_bucket", r#"route="/api/orders",method="GET",le="+Inf""#), 3.0),
        (series("shop_http_request_duration_seconds_count", r#"route="/api/orders",method="POST""#), 1.0),
        (series("shop_http_request_duration_seconds_count", r#"route="/api/orders/{id}",method="GET""#), 2.0),
        (series("shop_http_request_duration_seconds_count", r#"route="unmatched",method="GET""#), 1.0),
        (series("shop_orders_created_total", "").replace(",}", "}"), 1.0),
        (series("shop_auth_failures_total", r#"reason="missing""#), 1.0),
    ];
    for (series, want) in expect {
        assert_eq!(value(&text, &series), Some(want), "{series} in\n{text}");
    }
    assert!(text.contains("# TYPE shop_http_request_duration_seconds histogram\n"), "{text}");
    for raw in ["/api/orders/999", "/no/such/path"] {
        assert!(!text.contains(raw), "raw paths never become labels: {raw}");
    }
}
