//! Points 2 and 3: instances killed under the stack. A dead replica costs its shard nothing but a
//! counted fallback; a dead primary costs its shard's writes a fast 503 and the other shard nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    assert_no_password_logged, backend_log, create_order, get, metric, readyz, stack_on_mariadb, user_on, wait_until,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_leaves_its_shards_reads_answering_from_the_primary() {
    let (topology, stack) = stack_on_mariadb(5).await;
    let stack = &stack;
    let mut next = 20_000;
    let writer = stack.mint(user_on(stack, "a", &mut next));
    let reader = &stack.mint(user_on(stack, "a", &mut next));
    let (status, order) = create_order(stack, &writer, &json!([{"product_id": 4, "quantity": 2}]), Some("w-1")).await;
    assert_eq!(status, 201, "{order}");
    let order_path = format!("/api/orders/{}", order["id"]);
    topology.wait_replica_caught_up("a", Duration::from_secs(10)).await;
    // Before the kill, reads are served by the replica (so the kill below takes something away).
    wait_until("shard a's reads are served by its replica", Duration::from_secs(10), || async move {
        let before = metric(stack, "a", "shop_replica_reads_total").await;
        assert_eq!(get(stack, reader, "/api/products").await.0, 200);
        (metric(stack, "a", "shop_replica_reads_total").await > before).then_some(())
    })
    .await;
    let fallbacks = metric(stack, "a", "shop_replica_fallback_total").await;

    topology.kill("a-replica");
    let killed = Instant::now();
    let mut reads = 0;
    // From the moment of the kill, every read of shard a's users answers 200, with the data.
    while killed.elapsed() < Duration::from_secs(4) {
        for (token, path) in [
            (reader, "/api/products"),
            (reader, "/api/orders"),
            (reader, "/api/categories"),
            (&writer, order_path.as_str()),
            (&writer, "/api/orders"),
        ] {
            let started = Instant::now();
            let (status, body) = get(stack, token, path).await;
            assert_eq!(status, 200, "{path}, {:?} after the replica was killed: {body}", killed.elapsed());
            assert!(started.elapsed() < Duration::from_secs(3), "{path} took {:?}", started.elapsed());
            if path == order_path {
                assert_eq!(body, order);
            }
            if token == reader && path == "/api/products" {
                assert_eq!(body["products"].as_array().map(Vec::len), Some(12), "{body}");
            }
            reads += 1;
        }
    }
    assert!(reads >= 10, "only {reads} reads in 4 s");
    let now = metric(stack, "a", "shop_replica_fallback_total").await;
    assert!(now > fallbacks, "fallback reads not counted: {fallbacks} -> {now}");
    assert_eq!(metric(stack, "a", "shop_replica_up").await, 0.0);
    assert!(metric(stack, "a", "shop_replica_lag_seconds").await.is_nan(), "a dead replica's lag is unknown");
    let (status, ready) = readyz(stack, "a").await;
    assert_eq!(status, 200, "the shard still serves everything: {ready}");
    assert_eq!(ready["replica"]["state"], "down", "{ready}");
    assert!(backend_log(stack, "a").contains("replica unavailable; reading from the primary"), "no warning logged");
    // Writes never needed the replica; shard b's replica is untouched.
    let (status, body) = create_order(stack, &writer, &json!([{"product_id": 5, "quantity": 1}]), Some("w-2")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(metric(stack, "b", "shop_replica_up").await, 1.0);
    assert_no_password_logged(&topology, stack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_fails_its_shards_writes_fast_and_leaves_the_other_shard_alone() {
    let (topology, stack) = stack_on_mariadb(5).await;
    let stack = Arc::new(stack);
    let mut next = 30_000;
    let a_user = stack.mint(user_on(&stack, "a", &mut next));
    let b_user = stack.mint(user_on(&stack, "b", &mut next));
    let b_reader = stack.mint(user_on(&stack, "b", &mut next));
    for token in [&a_user, &b_user] {
        let (status, body) = create_order(&stack, token, &json!([{"product_id": 1, "quantity": 1}]), None).await;
        assert_eq!(status, 201, "{body}");
    }
    topology.wait_replica_caught_up("b", Duration::from_secs(10)).await;

    // Shard a under steady traffic from before the kill to the end: any answer but 2xx is a failure.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let traffic = {
        let (stack, stop, failures, token) = (stack.clone(), stop.clone(), failures.clone(), a_user.clone());
        tokio::spawn(async move {
            let mut ok = 0u32;
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("a-{i}");
                let (status, body) =
                    create_order(&stack, &token, &json!([{"product_id": 3, "quantity": 1}]), Some(&key)).await;
                let (list_status, _) = get(&stack, &token, "/api/orders?limit=5").await;
                if status == 201 && list_status == 200 {
                    ok += 1;
                } else {
                    failures.lock().unwrap().push(format!("create {status} {body}, list {list_status}"));
                }
            }
            ok
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    topology.kill("b-primary");
    let mut slowest = Duration::ZERO;
    for i in 0..4 {
        let started = Instant::now();
        let (status, body) =
            create_order(&stack, &b_user, &json!([{"product_id": 2, "quantity": 1}]), Some(&format!("b-{i}"))).await;
        let took = started.elapsed();
        assert_eq!(status, 503, "write {i} on shard b after its primary died: {body}");
        assert!(body["error"].is_string() && body["message"].is_string(), "{body}");
        assert!(took < Duration::from_secs(5), "write {i} took {took:?} to fail; the bound is 5 s");
        slowest = slowest.max(took);
    }
    eprintln!("shard b's writes failed in at most {slowest:?}");
    // Reads of shard b's users with nothing pending keep being answered, by the replica.
    let (status, body) = get(&stack, &b_reader, "/api/products").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = readyz(&stack, "b").await;
    assert_eq!(status, 503, "shard b's readiness must say its primary is gone");
    // What the ShardPrimaryDown alert reads: b's backend says its primary is down, a's that its is up.
    let st = stack.clone();
    wait_until("shop_primary_up 0 on shard b", Duration::from_secs(5), || {
        let st = st.clone();
        async move { (metric(&st, "b", "shop_primary_up").await == 0.0).then_some(()) }
    })
    .await;
    assert_eq!(metric(&stack, "a", "shop_primary_up").await, 1.0);

    stop.store(true, Ordering::Relaxed);
    let ok = traffic.await.unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "shard a's users saw errors while shard b's primary was down: {failures:?}");
    assert!(ok >= 5, "only {ok} rounds of shard a traffic while shard b failed");
    let (status, ready) = readyz(&stack, "a").await;
    assert_eq!(status, 200, "{ready}");
}
