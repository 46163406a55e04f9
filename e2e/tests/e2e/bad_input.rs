//! Point 4: bad credentials are a 401 with one `WWW-Authenticate: Bearer` header and a JSON body;
//! malformed, mistyped, oversized and hostile input is a 4xx with a JSON body; nothing is a 5xx.

use base64::Engine as _;
use reqwest::Method;
use serde_json::json;
use shopgate_e2e::Shop as _;
use shopgate_e2e::Stack;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn bad_tokens_get_one_bearer_challenge_and_json() {
    let stack = Stack::start().await;
    let good = stack.mint(10);
    let (h, p, s) = {
        let mut it = good.split('.');
        (it.next().unwrap().to_owned(), it.next().unwrap().to_owned(), it.next().unwrap().to_owned())
    };
    let payload = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&p).unwrap()).unwrap();
    let other_user = payload.replace("\"user_id\":10", "\"user_id\":12").replace("\"sub\":\"10\"", "\"sub\":\"12\"");
    let expired = {
        let mut c = shopgate_core::token::new_claims(
            shopgate_core::UserId::new(10).unwrap(),
            "e@x.io",
            &stack.config.jwt.policy,
            1_000_000,
            60,
        );
        c.exp = 1_000_060;
        stack.config.jwt.sign(&c).unwrap()
    };
    let headers: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("empty", Some(String::new())),
        ("scheme only", Some("Bearer".into())),
        ("basic", Some(format!("Basic {}", b64("a:b")))),
        ("garbage", Some("Bearer not-a-token".into())),
        ("two parts", Some(format!("Bearer {h}.{p}"))),
        ("stripped signature", Some(format!("Bearer {h}.{p}."))),
        ("payload swapped under the old signature", Some(format!("Bearer {h}.{}.{s}", b64(&other_user)))),
        ("alg none", Some(format!("Bearer {}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), p))),
        ("alg None with signature", Some(format!("Bearer {}.{p}.{s}", b64(r#"{"alg":"None"}"#)))),
        ("expired", Some(format!("Bearer {expired}"))),
        ("non-base64", Some(format!("Bearer {h}.{p}.!!!!"))),
        ("json junk header", Some(format!("Bearer {}.{p}.{s}", b64("{\"alg\":")))),
        ("latin-1 bytes", Some("Bearer \u{e9}t\u{e9}".into())),
        ("4 KiB of dots", Some(format!("Bearer {}", ".".repeat(4096)))),
    ];
    for (what, value) in headers {
        for path in ["/api/orders", "/backend/api/orders", "/auth/me"] {
            let mut rb = stack.http.get(stack.api(path));
            if let Some(v) = &value {
                rb = rb.header("Authorization", v.as_str());
            }
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), 401, "{what} at {path}");
            let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
            assert_eq!(challenges.len(), 1, "{what} at {path}: {challenges:?}");
            assert!(challenges[0].to_str().unwrap().starts_with("Bearer"), "{what}: {challenges:?}");
            assert_eq!(crate::error_code(r).await, "invalid_token", "{what} at {path}");
        }
    }
    // Over nginx's header buffer: still a 4xx with JSON, never a 5xx.
    let r = stack
        .http
        .get(stack.api("/api/orders"))
        .header("Authorization", format!("Bearer {}", "a".repeat(9000)))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    crate::error_code(r).await;
}

#[tokio::test]
async fn malformed_and_hostile_bodies_are_4xx_with_json() {
    let stack = Stack::start().await;
    let (_, token) = stack.shopper().await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let big = format!("{{\"items\":[{{\"product_id\":1,\"quantity\":1}}],\"pad\":\"{}\"}}", "x".repeat(2 << 20));
    let json_cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("not json", "hello".into()),
        ("truncated", "{\"email\":".into()),
        ("array", "[]".into()),
        ("null", "null".into()),
        ("wrong types", r#"{"email": 5, "password": ["x"], "items": "many"}"#.into()),
        ("missing fields", "{}".into()),
        ("deep nesting", deep),
        ("nul bytes", "{\"email\":\"a\\u0000@x.io\",\"password\":\"P4ss\\u0000word!\"}".into()),
        ("huge numbers", r#"{"items":[{"product_id":18446744073709551616,"quantity":1e300}]}"#.into()),
        ("negative", r#"{"items":[{"product_id":-1,"quantity":-5}]}"#.into()),
        ("zero quantity", r#"{"items":[{"product_id":1,"quantity":0}]}"#.into()),
        ("unknown product", r#"{"items":[{"product_id":999999,"quantity":1}]}"#.into()),
        ("no items", r#"{"items":[]}"#.into()),
        ("invalid utf-8", String::from_utf8_lossy(b"{\"email\":\"\xff\xfe\"}").into_owned()),
        ("2 MiB", big),
    ];
    for path in ["/auth/register", "/api/orders", "/api/users", "/backend/api/orders"] {
        for (what, body) in &json_cases {
            let r = stack
                .http
                .post(stack.api(path))
                .bearer_auth(&token)
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            // Syntax, shape and type errors are 400 everywhere; an order that parses but asks
            // for something impossible is 422; over 1 MiB is 413. The original `POST /api/users`
            // ignores the body fields it does not need, so a well-formed object is its success.
            let unprocessable = ["negative", "zero quantity", "unknown product", "no items"].contains(what);
            let not_an_object_or_not_json =
                ["empty", "not json", "truncated", "array", "null", "wrong types", "deep nesting"].contains(what);
            let want = match (*what, path) {
                ("2 MiB", _) => 413,
                (_, "/api/users") if !not_an_object_or_not_json => {
                    assert!([200, 201].contains(&status), "{what} at {path}: {status}");
                    continue;
                }
                (_, "/api/orders" | "/backend/api/orders") if unprocessable => 422,
                _ => 400,
            };
            assert_eq!(status, want, "{what} at {path}");
            crate::error_code(r).await;
        }
    }
    // Wrong content types and methods.
    let r = stack
        .http
        .post(stack.api("/auth/register"))
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    crate::error_code(r).await;
    let r = stack
        .http
        .post(stack.api("/api/orders"))
        .bearer_auth(&token)
        .header("Content-Type", "application/xml")
        .body("<x/>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    crate::error_code(r).await;
    for (method, path) in
        [(Method::DELETE, "/api/orders"), (Method::PUT, "/auth/token"), (Method::GET, "/auth/register")]
    {
        let r = stack.http.request(method.clone(), stack.api(path)).bearer_auth(&token).send().await.unwrap();
        // The backend's 405 (DELETE /api/orders) and the verifier's (the other two).
        assert_eq!(r.status(), 405, "{method} {path}");
        assert!(r.headers().get("allow").is_some(), "{method} {path}: 405 without Allow");
        crate::error_code(r).await;
    }
    // Hostile paths and ids.
    for (path, want) in [
        ("/api/orders/abc", 404),
        ("/api/orders/-1", 404),
        ("/api/orders/99999999999999999999999", 404),
        ("/api/orders/1%00", 400),
        ("/api/products/%2e%2e%2f%2e%2e%2fetc%2fpasswd", 404),
        ("/nope", 404),
        ("/auth/nope", 404),
    ] {
        let r = stack.http.get(stack.api(path)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), want, "{path}");
        crate::error_code(r).await;
    }
}

#[tokio::test]
async fn token_and_register_reject_bad_forms_by_the_rules() {
    let stack = Stack::start().await;
    let email = format!("rules-{}@example.com", shopgate_e2e::rand_hex(4));
    stack.register(&email).await;
    let r = stack
        .http
        .post(stack.api("/auth/register"))
        .json(&json!({"email": email, "password": shopgate_e2e::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "duplicate email");
    crate::error_code(r).await;
    for (pw, rule) in
        [("Sh0rt!", "at least 8"), ("alllower1!", "upper-case"), ("NoDigits!!", "digit"), ("NoSpecial12", "special")]
    {
        let r = stack
            .http
            .post(stack.api("/auth/register"))
            .json(&json!({"email": "new@example.com", "password": pw}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{pw}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["message"].as_str().unwrap().contains(rule), "{pw}: {v}");
    }
    let r = stack
        .http
        .post(stack.api("/auth/register"))
        .json(&json!({"email": "not-an-email", "password": shopgate_e2e::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(crate::error_code(r).await, "invalid_email");

    // (form fields, expected status, expected error code)
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str);
    let forms: Vec<Case> = vec![
        (vec![("username", &email), ("password", "Wrong-Pass-1!")], 401, "invalid_grant"),
        (vec![("username", "nobody@example.com"), ("password", "Wrong-Pass-1!")], 401, "invalid_grant"),
        (vec![("username", &email)], 400, "invalid_request"),
        (vec![("password", "x")], 400, "invalid_request"),
        (
            vec![("grant_type", "client_credentials"), ("username", &email), ("password", "x")],
            400,
            "unsupported_grant_type",
        ),
        (vec![("username", &email), ("username", "b@x.io"), ("password", "x")], 400, "invalid_request"),
    ];
    for (form, status, code) in forms {
        let r = stack.http.post(stack.api("/auth/token")).form(&form).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{form:?}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(crate::error_code(r).await, code, "{form:?}");
    }
    let r = stack.http.post(stack.api("/auth/token")).json(&json!({"username": email})).send().await.unwrap();
    assert_eq!(r.status(), 400, "JSON instead of a form");
}
