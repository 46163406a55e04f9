//! The profile: identity from the token, never the body; no password stored.
#![allow(clippy::unwrap_used)]

use serde_json::json;

use crate::helpers::{assert_error, email_of, json, spawn_app, ANN};

#[tokio::test]
async fn post_users_creates_then_returns_the_callers_own_profile() {
    let app = spawn_app().await;
    assert_error(app.get("/api/users/me", ANN).await, 404, "not_found").await;

    let password = "Sup3r-Secret-Passw0rd!";
    let body = json!({"email": "someone.else@evil.example", "is_active": false, "password": password, "extra": 1});
    let (status, created) = json(app.post_json("/api/users", ANN, &body).await).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], ANN, "id from the token");
    assert_eq!(created["email"], email_of(ANN), "email from the token, not the body");
    assert_eq!(created["is_active"], true);
    assert!(created.get("password").is_none());

    let (status, again) = json(app.post_json("/api/users", ANN, &json!({})).await).await;
    assert_eq!((status, &again), (200, &created));
    let (status, me) = json(app.get("/api/users/me", ANN).await).await;
    assert_eq!((status, &me), (200, &created));
    assert_eq!(app.count("users").await, 1);

    // Nothing on disk holds the password: not the database file, not its write-ahead log.
    for entry in std::fs::read_dir(app.dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(password.len()).any(|w| w == password.as_bytes()), "password stored");
    }
}

#[tokio::test]
async fn post_users_checks_types() {
    let app = spawn_app().await;
    assert_error(app.post_json("/api/users", ANN, &json!({"email": 5})).await, 400, "invalid_body").await;
    assert_error(app.post_json("/api/users", ANN, &json!({"is_active": "yes"})).await, 400, "invalid_body").await;
    assert_eq!(app.count("users").await, 0);
}

#[tokio::test]
async fn placing_an_order_creates_the_profile() {
    let app = spawn_app().await;
    let res = app.create_order(ANN, json!([{"product_id": 1, "quantity": 1}]), None).await;
    assert_eq!(res.status(), 201);
    let (status, me) = json(app.get("/api/users/me", ANN).await).await;
    assert_eq!(status, 200);
    assert_eq!(me["email"], email_of(ANN));
}
