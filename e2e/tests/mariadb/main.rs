//! The stack on real MariaDB: each test starts its own topology with `scripts/mariadb` (an auth
//! instance; shards `a` and `b`, each a primary and a GTID replica), a whole stack on it (nginx,
//! verifier, both backends) and checks, with SQL on the instances, what the API answered.
//!
//! Nothing here is skipped: without `mariadbd` and `mariadb-install-db` the tests fail and say so.
#![allow(clippy::unwrap_used)]

mod auth_failover;
mod backups;
mod catalog;
mod catch_up;
mod cert_rotation;
mod chaos;
mod check;
mod deadlocks;
mod faults;
mod grants;
mod grow;
mod orders;
mod ownership;
mod previous_release;
mod processes;
mod replication;
mod restart;
mod round_trips;
mod tls;
mod unlock;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shopgate_core::UserId;
use shopgate_e2e::mariadb::Topology;
use shopgate_e2e::Shop as _;
use shopgate_e2e::Stack;

/// A topology and a whole stack on it; `max_lag` is every shard's `replica_max_lag_seconds`.
pub async fn stack_on_mariadb(max_lag: u64) -> (Topology, Stack) {
    let topology = Topology::start().await;
    let stack = Stack::start_with(topology.stack_options(max_lag)).await;
    (topology, stack)
}

/// The shard that owns `user`, by the one routing function.
pub fn shard_of(stack: &Stack, user: u64) -> String {
    stack.config.shard_map.shard_for(UserId::new(user).unwrap()).to_string()
}

/// `POST /api/orders` through nginx; status and body (`Value::Null` if the body is not JSON).
pub async fn create_order(stack: &Stack, token: &str, items: &Value, key: Option<&str>) -> (u16, Value) {
    let mut req = stack.http.post(stack.api("/api/orders")).bearer_auth(token).json(&json!({ "items": items }));
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `GET path` through nginx as the token's user.
pub async fn get(stack: &Stack, token: &str, path: &str) -> (u16, Value) {
    let r = stack.http.get(stack.api(path)).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The backend of `shard`, straight (not through nginx).
pub fn backend(stack: &Stack, shard: &str) -> String {
    format!("http://{}", stack.config.shard(shard).unwrap().addr())
}

/// The value of the series `name{shard="…"}` in `shard`'s `/metrics` (NaN parses as NaN).
pub async fn metric(stack: &Stack, shard: &str, name: &str) -> f64 {
    let text = stack.http.get(format!("{}/metrics", backend(stack, shard))).send().await.unwrap().text().await.unwrap();
    let prefix = format!("{name}{{shard=\"{shard}\"}} ");
    let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix} in:\n{text}"));
    line[prefix.len()..].parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// `shard`'s `/readyz` body.
pub async fn readyz(stack: &Stack, shard: &str) -> (u16, Value) {
    let r = stack.http.get(format!("{}/readyz", backend(stack, shard))).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls `check` every 100 ms until it returns `Some`, at most `within`; panics with `what`.
pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A user id not yet used in this test whose bucket belongs to `shard` (tokens are minted, so the
/// id needs no account: the check path never reads the auth database).
pub fn user_on(stack: &Stack, shard: &str, from: &mut u64) -> u64 {
    loop {
        *from += 1;
        if shard_of(stack, *from) == shard {
            return *from;
        }
    }
}

/// The lines of a backend's log file.
pub fn backend_log(stack: &Stack, shard: &str) -> String {
    std::fs::read_to_string(stack.dir.path().join(format!("backend-{shard}.log"))).unwrap_or_default()
}

/// No log of the stack holds the databases' password; the backends do name their databases, masked.
pub fn assert_no_password_logged(topology: &Topology, stack: &Stack) {
    let url = topology.url("auth");
    let password = url.split_once("shop:").and_then(|(_, rest)| rest.split_once('@')).map(|(p, _)| p).unwrap();
    assert!(password.len() >= 16, "the topology's password looks too weak to search for");
    let mut logs = Vec::new();
    for dir in [stack.dir.path().to_path_buf(), stack.dir.path().join("nginx")] {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.path().extension().is_some_and(|x| x == "log") {
                logs.push((entry.path(), std::fs::read_to_string(entry.path()).unwrap_or_default()));
            }
        }
    }
    for (path, text) in &logs {
        assert!(!text.contains(password), "{} holds the database password", path.display());
    }
    assert!(backend_log(stack, "a").contains("shop:***@127.0.0.1"), "the backend should name its database, masked");
}
