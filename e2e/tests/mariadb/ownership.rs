//! Point 5: no row on a shard belongs to a user that shard does not own, checked with SQL over
//! every user id each shard's primary and replica hold, against `shopgate_core::shardmap`.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use shopgate_core::ids::MAX_USER_ID;

use crate::{assert_no_password_logged, backend, create_order, shard_of, stack_on_mariadb};
use shopgate_e2e::Shop as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_row_on_a_shard_belongs_to_a_user_it_does_not_own() {
    let (topology, stack) = stack_on_mariadb(5).await;
    // Registered users (their ids come from the auth instance), and minted ids over many buckets.
    let mut users: Vec<(u64, String)> = Vec::new();
    for _ in 0..4 {
        users.push(stack.shopper().await);
    }
    for id in [10, 999, 1000, 1001, 2_468, 123_456_789_013, 1 << 52, MAX_USER_ID - 1, MAX_USER_ID] {
        users.push((id, stack.mint(id)));
    }
    for (i, (id, token)) in users.iter().enumerate() {
        let r = stack.http.post(stack.api("/api/users")).bearer_auth(token).json(&json!({})).send().await.unwrap();
        assert_eq!(r.status(), 201, "profile of user {id}");
        let items = json!([{"product_id": 1 + (i % 12), "quantity": 1}]);
        let (status, body) = create_order(&stack, token, &items, Some("same-key")).await;
        assert_eq!(status, 201, "user {id}: {body}");
        let (status, again) = create_order(&stack, token, &items, Some("same-key")).await;
        assert_eq!((status, &again), (200, &body), "user {id}: the retry");
    }

    // Straight to the wrong backend, with a valid token: 421, and nothing written.
    for (id, token) in &users {
        let wrong = if shard_of(&stack, *id) == "a" { "b" } else { "a" };
        let base = backend(&stack, wrong);
        for (path, body) in
            [("/api/orders", json!({"items": [{"product_id": 1, "quantity": 1}]})), ("/api/users", json!({}))]
        {
            let r = stack
                .http
                .post(format!("{base}{path}"))
                .bearer_auth(token)
                .header("X-User-Id", id.to_string())
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 421, "user {id} on shard {wrong}: POST {path}");
        }
    }

    let (registered,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM users").fetch_one(&topology.admin("auth").await).await.unwrap();
    assert_eq!(registered, 4, "the verifier's accounts are on the auth instance");

    for shard in ["a", "b"] {
        let want: BTreeSet<u64> = users.iter().map(|(id, _)| *id).filter(|id| shard_of(&stack, *id) == shard).collect();
        assert!(want.len() >= 3, "the users must cover shard {shard}");
        topology.wait_replica_caught_up(shard, Duration::from_secs(20)).await;
        for role in ["primary", "replica"] {
            let instance = format!("{shard}-{role}");
            let db = topology.admin(&instance).await;
            let ids: Vec<(i64,)> = sqlx::query_as(
                "SELECT id FROM users \
                 UNION SELECT user_id FROM orders \
                 UNION SELECT user_id FROM idempotency_keys \
                 UNION SELECT o.user_id FROM order_items i JOIN orders o ON o.id = i.order_id",
            )
            .fetch_all(&db)
            .await
            .unwrap();
            let held: BTreeSet<u64> = ids.into_iter().map(|(id,)| id as u64).collect();
            let foreign: Vec<u64> = held.iter().copied().filter(|id| shard_of(&stack, *id) != shard).collect();
            assert!(foreign.is_empty(), "{instance} holds rows of users it does not own: {foreign:?}");
            assert_eq!(held, want, "{instance}: exactly its own users' rows");
            let (orphans,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM order_items i LEFT JOIN orders o ON o.id = i.order_id WHERE o.id IS NULL",
            )
            .fetch_one(&db)
            .await
            .unwrap();
            assert_eq!(orphans, 0, "{instance}: order items without their order");
            db.close().await;
        }
    }
    assert_no_password_logged(&topology, &stack);
}
