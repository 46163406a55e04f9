//! End-to-end tests: each starts a whole stack (real nginx, verifier, two backend shards) with
//! `shopgate_e2e::Stack` and talks to it over 127.0.0.1 only.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod accounts;
mod bad_input;
mod catalog;
mod direct_backend;
mod edge;
mod edge_tls;
mod faults;
mod gateway_statuses;
mod grow;
mod hostile;
mod identity;
mod internal_tls;
mod key_custody;
mod lifecycle;
mod openapi;
mod processes;
mod request_path;
mod routing;
mod tokens;
mod unread_bodies;

use reqwest::Response;
use serde_json::Value;

/// Asserts the answer is JSON `{"error": .., "message": ..}` and returns the error code.
pub async fn error_code(resp: Response) -> String {
    let status = resp.status();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let text = resp.text().await.unwrap_or_default();
    assert!(ct.starts_with("application/json"), "{status}: content-type {ct:?}, body {text}");
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text}"));
    assert!(v["message"].is_string(), "{status}: no message in {text}");
    v["error"].as_str().unwrap_or_else(|| panic!("{status}: no error code in {text}")).to_owned()
}
