//! The API description: nginx serves it at /openapi.json, no token needed, and it lists every
//! public operation (scripts/fuzz-api then holds the running stack to it with schemathesis).

use serde_json::Value;
use shopgate_core::openapi::PUBLIC_OPERATIONS;
use shopgate_e2e::Shop as _;
use shopgate_e2e::Stack;

#[tokio::test]
async fn openapi_json_is_served_without_a_token_and_lists_every_operation() {
    let stack = Stack::start().await;
    let r = stack.http.get(stack.api("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let doc: Value = r.json().await.unwrap();

    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    for (method, path) in PUBLIC_OPERATIONS {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not described");
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}: no responses");
        if op["security"].is_array() {
            assert!(op["responses"]["401"].is_object(), "{method} {path} needs a token but documents no 401");
        }
    }
    let described: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(described, PUBLIC_OPERATIONS.len(), "operations described beyond the public API");

    // Every /api operation needs the bearer token; the error body and Idempotency-Key are there.
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["required"], serde_json::json!(["error", "message"]));
    let create = &doc["paths"]["/api/orders"]["post"];
    assert!(create["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"));
    let unauthorized = &doc["components"]["responses"]["Unauthorized"];
    assert_eq!(unauthorized["headers"]["WWW-Authenticate"]["required"], true);

    // Every reference resolves.
    let text = doc.to_string();
    for (i, _) in text.match_indices("\"$ref\":\"#/") {
        let target = &text[i + 9..];
        let target = &target[..target.find('"').unwrap()];
        assert!(doc.pointer(target).is_some(), "dangling $ref {target}");
    }
}

#[tokio::test]
async fn nginx_own_405s_name_the_allowed_methods() {
    let stack = Stack::start().await;
    let r = stack.http.post(stack.api("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    // nginx refuses TRACE itself, before any location (and before the token check).
    let trace = reqwest::Method::from_bytes(b"TRACE").unwrap();
    let r = stack.http.request(trace.clone(), stack.api("/api/orders")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD, POST");
    let r = stack.http.request(trace, stack.api("/authentication/auth/me")).send().await.unwrap();
    assert_eq!(r.headers()["allow"], "GET");
    // The verifier's own 405 says the same.
    let r = stack.http.delete(stack.api("/auth/me")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
}
