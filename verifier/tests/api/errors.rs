//! Bad input to the auth API: each gets its exact status and the shared JSON error (the backends
//! answer the same cases the same way, from `shopgate_core::http`); and the request id rule.

use crate::helpers::{assert_error, spawn_app, PASSWORD};

#[tokio::test]
async fn bad_bodies_are_400_with_the_reason() {
    let app = spawn_app().await;
    let post = |body: &'static str| {
        app.client.post(app.url("/auth/register")).header("content-type", "application/json").body(body).send()
    };
    assert_error(post("{\"email\":").await.unwrap(), 400, "malformed_json").await;
    assert_error(post("[]").await.unwrap(), 400, "invalid_body").await;
    assert_error(post("{\"email\": 1, \"password\": 2}").await.unwrap(), 400, "invalid_body").await;
    assert_error(post("{\"email\": \"ann@example.com\"}").await.unwrap(), 400, "invalid_body").await;
    let v = assert_error(app.register("ann@example.com", "password").await, 400, "weak_password").await;
    assert!(v["message"].as_str().unwrap().contains("upper"), "names the rule: {v}");
    assert_error(app.register("not an email", PASSWORD).await, 400, "invalid_email").await;
}

#[tokio::test]
async fn a_wrong_content_type_is_415_naming_the_right_one() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/auth/register"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let v = assert_error(r, 415, "unsupported_media_type").await;
    assert!(v["message"].as_str().unwrap().contains("application/json"), "{v}");
}

#[tokio::test]
async fn a_body_over_1_mib_is_413() {
    let app = spawn_app().await;
    let big = format!("{{\"email\":\"{}\"}}", "a".repeat(1 << 20));
    let r = app
        .client
        .post(app.url("/auth/register"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "payload_too_large").await;
}

#[tokio::test]
async fn a_wrong_method_is_405_with_allow_and_an_unknown_path_404() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        (reqwest::Method::GET, "/auth/register", "POST"),
        (reqwest::Method::PUT, "/auth/token", "POST"),
        (reqwest::Method::DELETE, "/auth/me", "GET"),
        (reqwest::Method::POST, "/metrics", "GET"),
    ] {
        let r = app.client.request(method.clone(), app.url(path)).send().await.unwrap();
        assert_eq!(r.headers().get("allow").map(|v| v.to_str().unwrap()), Some(allow), "{method} {path}");
        assert_error(r, 405, "method_not_allowed").await;
    }
    for path in ["/auth", "/auth/verify", "/_verify", "/auth/register/"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_error(r, 404, "not_found").await;
    }
}

#[tokio::test]
async fn a_clean_request_id_is_echoed_once_and_any_other_replaced() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/healthz")).header("x-request-id", "abc-123").send().await.unwrap();
    let ids: Vec<_> = r.headers().get_all("x-request-id").iter().collect();
    assert_eq!(ids, ["abc-123"]);
    for dirty in ["has space", &"x".repeat(129)] {
        let r = app.client.get(app.url("/auth/nothing")).header("x-request-id", dirty).send().await.unwrap();
        let ids: Vec<_> = r.headers().get_all("x-request-id").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert_eq!(ids.len(), 1, "{ids:?}");
        assert!(ids[0].len() == 32 && ids[0].bytes().all(|b| b.is_ascii_hexdigit()), "{dirty:?} -> {ids:?}");
    }
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.headers().get_all("x-request-id").iter().count(), 1, "one made up when none was sent");
}
