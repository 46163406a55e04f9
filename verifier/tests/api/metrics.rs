//! `/metrics` after known traffic: the right counts, and a latency histogram per route.

use crate::helpers::spawn_app;

/// The value of the series written exactly `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn counts_and_a_latency_histogram_per_route() {
    let app = spawn_app().await;
    let token = app.signed_up("ann@example.com").await;
    for _ in 0..3 {
        assert_eq!(app.verify(&token).await.status(), 200);
    }
    for _ in 0..2 {
        assert_eq!(app.verify("forged").await.status(), 401);
    }
    assert_eq!(app.client.get(app.url("/no/such/path")).send().await.unwrap().status(), 404);
    assert_eq!(app.client.get(app.url("/auth/register")).send().await.unwrap().status(), 405);
    let text = app.metrics().await;
    let expect = [
        ("shop_verify_ok_total", 3.0),
        ("shop_verify_rejected_total", 2.0),
        ("shop_registrations_total", 1.0),
        ("shop_logins_total{result=\"ok\"}", 1.0),
        ("shop_password_checks_total", 1.0),
        ("shop_http_requests_total{route=\"/verify\",method=\"GET\",status=\"200\"}", 3.0),
        ("shop_http_requests_total{route=\"/verify\",method=\"GET\",status=\"401\"}", 2.0),
        ("shop_http_requests_total{route=\"/auth/register\",method=\"POST\",status=\"201\"}", 1.0),
        ("shop_http_requests_total{route=\"/auth/register\",method=\"GET\",status=\"405\"}", 1.0),
        ("shop_http_requests_total{route=\"/auth/token\",method=\"POST\",status=\"200\"}", 1.0),
        ("shop_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}", 1.0),
        ("shop_http_request_duration_seconds_count{route=\"/verify\",method=\"GET\"}", 5.0),
        ("shop_http_request_duration_seconds_bucket{route=\"/verify\",method=\"GET\",le=\"+Inf\"}", 5.0),
        ("shop_http_request_duration_seconds_count{route=\"/auth/token\",method=\"POST\"}", 1.0),
        ("shop_http_request_duration_seconds_count{route=\"/auth/register\",method=\"POST\"}", 1.0),
        ("shop_http_request_duration_seconds_count{route=\"unmatched\",method=\"GET\"}", 1.0),
    ];
    for (series, want) in expect {
        assert_eq!(value(&text, series), Some(want), "{series} in\n{text}");
    }
    assert!(text.contains("# TYPE shop_http_request_duration_seconds histogram\n"), "{text}");
    let sum = value(&text, "shop_http_request_duration_seconds_sum{route=\"/auth/token\",method=\"POST\"}").unwrap();
    assert!(sum > 0.0, "{text}");
    assert!(!text.contains("/no/such/path"), "raw paths never become labels");
    assert!(!text.contains(&token), "tokens never reach metrics");
}

/// The verifier does not route, but shows the shard map version it has seen (from the auth
/// database, where it seeds version 1 from the config), so an operator sees every part agree.
#[tokio::test]
async fn the_shard_map_version_shows_in_readyz_and_metrics() {
    let app = spawn_app().await;
    let (mut ready, mut text) = (serde_json::Value::Null, String::new());
    // Seen at the verifier's first refresh, right after it starts.
    for _ in 0..100 {
        ready = app.client.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
        text = app.metrics().await;
        if ready["map_version"] == 1 && value(&text, "shop_shard_map_version") == Some(1.0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no map version 1 in /readyz ({ready}) and /metrics:\n{text}");
}
