//! Issue 11, point 3, on SQLite: two backend processes per shard (both on the shard's one
//! database file) under concurrent creates with retried `Idempotency-Key`s, each key sent at once
//! through nginx and straight to both processes: exactly one order per key, no duplicate id
//! (`shopgate_e2e::processes`). The same on MariaDB is `tests/mariadb/processes.rs`.

use std::sync::Arc;

use shopgate_e2e::processes::Race;
use shopgate_e2e::Shop as _;
use shopgate_e2e::{Options, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_per_shard_make_one_order_per_key_and_never_share_an_id() {
    let stack = Arc::new(Stack::start_with(Options { backends_per_shard: 2, ..Options::default() }).await);
    let outcome = Race::default().run(stack.clone()).await;
    eprintln!("{outcome:?}");
}

/// Both processes of a shard are in its nginx upstream (users hashed over them), `backend-a.1` is
/// addressable by name, and while either process is down every request through nginx is still
/// served, a POST included: a refused connection was never sent, so nginx passes it on.
#[tokio::test]
async fn a_shard_serves_through_nginx_while_either_of_its_processes_is_down() {
    let stack = Stack::start_with(Options { backends_per_shard: 2, ..Options::default() }).await;
    let conf = std::fs::read_to_string(stack.dir.path().join("nginx/nginx.conf")).unwrap();
    let a = stack.config.shard("a").unwrap();
    let upstream = format!(
        "upstream shard_a {{\n        hash $shop_user_id consistent;\n        server {} max_fails=1 fail_timeout=2s;\n        server {} max_fails=1 fail_timeout=2s;\n",
        a.listen[0], a.listen[1]
    );
    assert!(conf.contains(&upstream), "no {upstream} in:\n{conf}");
    // Passed on after a connection error or timeout; never `non_idempotent` (a POST once sent).
    let next_upstream: Vec<&str> =
        conf.lines().map(str::trim).filter(|l| l.starts_with("proxy_next_upstream ")).collect();
    assert!(next_upstream.contains(&"proxy_next_upstream error timeout;"), "{next_upstream:?}");
    assert!(conf.contains("proxy_next_upstream_timeout 3s;\n            proxy_pass http://shard_$shop_shard;"));
    assert!(next_upstream.iter().all(|l| !l.contains("non_idempotent")), "{next_upstream:?}");
    let names = stack.processes();
    assert!(names.contains(&"backend-a".to_owned()) && names.contains(&"backend-a.1".to_owned()), "{names:?}");
    let users: Vec<u64> = (2..40).step_by(2).collect(); // even: shard a's
    for down in ["backend-a", "backend-a.1"] {
        stack.kill(down);
        for &user in &users {
            let token = stack.mint(user);
            let r = stack.http.get(stack.api("/api/orders")).bearer_auth(&token).send().await.unwrap();
            assert_eq!(r.status(), 200, "GET for user {user} with {down} down");
            let r = stack
                .http
                .post(stack.api("/api/orders"))
                .bearer_auth(&token)
                .header("Idempotency-Key", format!("{down}-{user}"))
                .json(&serde_json::json!({"items": [{"product_id": 1, "quantity": 1}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "POST for user {user} with {down} down");
        }
        stack.restart(down).await;
        // nginx skips a process for fail_timeout (2 s) after it refused a connection, counted in
        // whole seconds (so up to 3 s); the next one stops only after that, as in any rolling
        // restart (README).
        tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    }
}
