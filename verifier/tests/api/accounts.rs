//! The auth API end to end against a real verifier: register, log in with the form, `me`, the
//! check, change password and logout, each one's success and its refusals.

use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, token_of, PASSWORD};

#[tokio::test]
async fn register_then_login_then_me_and_the_check() {
    let app = spawn_app().await;
    let r = app.register("ann@example.com", PASSWORD).await;
    assert_eq!(r.status(), 201);
    let user: Value = r.json().await.unwrap();
    assert_eq!(user["email"], "ann@example.com");
    let id = user["id"].as_u64().unwrap();

    let r = app.login("ann@example.com", PASSWORD).await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    let token = token_of(r).await;

    let me: Value = app.me(&token).await.json().await.unwrap();
    assert_eq!((me["id"].as_u64(), me["email"].as_str()), (Some(id), Some("ann@example.com")));

    let r = app.verify(&token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-user-id"], id.to_string().as_str());
    assert_eq!(r.headers()["x-user-email"], "ann@example.com");
}

#[tokio::test]
async fn a_second_account_with_the_same_email_is_409() {
    let app = spawn_app().await;
    assert_eq!(app.register("ann@example.com", PASSWORD).await.status(), 201);
    assert_error(app.register("ann@example.com", PASSWORD).await, 409, "conflict").await;
}

#[tokio::test]
async fn a_wrong_password_is_the_oauth2_invalid_grant() {
    let app = spawn_app().await;
    app.signed_up("ann@example.com").await;
    let r = app.login("ann@example.com", "Wrong-Horse-9!").await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!((v["error"].as_str(), v["error_description"].is_string()), (Some("invalid_grant"), true), "{v}");
    // An unknown email answers exactly the same.
    let r = app.login("nobody@example.com", PASSWORD).await;
    assert_eq!(r.status(), 401);
    let w: Value = r.json().await.unwrap();
    assert_eq!(v, w);
}

#[tokio::test]
async fn me_and_the_check_refuse_a_missing_or_forged_token_with_one_challenge() {
    let app = spawn_app().await;
    let token = app.signed_up("ann@example.com").await;
    let forged = format!("{}x", &token[..token.len() - 1]);
    for r in [app.client.get(app.url("/auth/me")).send().await.unwrap(), app.me(&forged).await, app.me("abc").await] {
        assert_eq!(r.headers().get_all("www-authenticate").iter().count(), 1);
        assert_eq!(r.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
        assert_error(r, 401, "invalid_token").await;
    }
    for r in [app.client.get(app.url("/verify")).send().await.unwrap(), app.verify(&forged).await] {
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
    }
}

#[tokio::test]
async fn changing_the_password_revokes_earlier_tokens() {
    let app = spawn_app().await;
    let token = app.signed_up("ann@example.com").await;
    let change = |current: &str, new: &str| {
        app.client
            .post(app.url("/auth/change-password"))
            .bearer_auth(&token)
            .json(&json!({ "current_password": current, "new_password": new }))
            .send()
    };
    let r = change("Not-The-Password-1", "Batt3ry-Staple-Green!").await.unwrap();
    assert_error(r, 403, "wrong_password").await;
    let r = change(PASSWORD, "Batt3ry-Staple-Green!").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.verify(&token).await.status(), 401, "the old token is revoked at once");
    assert_eq!(app.me(&token).await.status(), 401);
    assert_eq!(app.login("ann@example.com", PASSWORD).await.status(), 401);
    let fresh = token_of(app.login("ann@example.com", "Batt3ry-Staple-Green!").await).await;
    assert_eq!(app.verify(&fresh).await.status(), 200);
}

#[tokio::test]
async fn logout_revokes_that_token_only() {
    let app = spawn_app().await;
    let token = app.signed_up("ann@example.com").await;
    let other = token_of(app.login("ann@example.com", PASSWORD).await).await;
    let r = app.client.post(app.url("/auth/logout")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.verify(&token).await.status(), 401);
    assert_eq!(app.me(&token).await.status(), 401);
    assert_eq!(app.verify(&other).await.status(), 200, "another login of the same user stays valid");
    let r = app.client.post(app.url("/auth/logout")).send().await.unwrap();
    assert_error(r, 401, "invalid_token").await;
}
