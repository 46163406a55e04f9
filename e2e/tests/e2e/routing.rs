//! Point 2: for every user id tried, the shard nginx picks is the shard the Rust routing
//! function picks. A misroute shows twice: as the wrong X-Shop-Shard and as the backend's 421.

use std::sync::Arc;

use shopgate_core::shardmap::bucket;
use shopgate_core::UserId;
use shopgate_e2e::Shop as _;
use shopgate_e2e::Stack;
use tokio::sync::Semaphore;

fn first_digit(n: u64) -> u64 {
    let mut n = n;
    while n >= 10 {
        n /= 10;
    }
    n
}

#[tokio::test]
async fn nginx_and_rust_pick_the_same_shard() {
    let stack = Arc::new(Stack::start().await);
    let mut ids: Vec<u64> = (1..=2000).collect();
    let max = shopgate_core::ids::MAX_USER_ID;
    ids.extend([max, max - 1, max - 999, 1 << 52, 1_000_000_000_000_000, 999_999_999_999_999, 1_234_567_890_123]);
    // Large ids with every last-three-digit pattern class, deterministic.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ids.push(1 + x % max);
    }
    let differing = ids.iter().filter(|&&id| first_digit(id) % 2 != id % 2).count();
    assert!(differing > 500, "the ids must include many whose first and last digits differ in parity");

    let gate = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::new();
    for id in ids {
        let stack = stack.clone();
        let permit = gate.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let uid = UserId::new(id).unwrap();
            let want = stack.config.shard_map.shard_for(uid).to_string();
            let r = stack.http.get(stack.api("/api/orders?limit=1")).bearer_auth(stack.mint(id)).send().await.unwrap();
            let status = r.status().as_u16();
            let got = r.headers().get("x-shop-shard").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            (id, bucket(uid), want, got, status)
        }));
    }
    let mut bad = Vec::new();
    for t in tasks {
        let (id, b, want, got, status) = t.await.unwrap();
        if status != 200 || got != want {
            bad.push(format!("user {id} (bucket {b}): rust says {want}, nginx sent it to {got:?} -> {status}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} misroutes, e.g.:\n{}",
        bad.len(),
        bad.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test]
async fn the_original_designs_misroute_is_fixed() {
    // The original map routed on the first digit: user 12 went to the odd shard.
    let stack = Stack::start().await;
    let r = stack.http.get(stack.api("/api/orders")).bearer_auth(stack.mint(12)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-shop-shard"], "a");
}
