//! The catalog on MariaDB: a price change imported with `shopctl catalog import` (to every
//! shard's primary) is in every answer, on both shards, once the backends' bound
//! (`[backend] catalog_cache_ms`, 1 s) plus the replica's lag bound have passed (reads go to the
//! replica while it is within that bound); the `ETag` changes with it and 304 works through nginx.

use std::time::{Duration, Instant};

use serde_json::Value;
use shopgate_e2e::Shop as _;
use shopgate_e2e::Stack;

use crate::{get, stack_on_mariadb, user_on};

const MAX_LAG: u64 = 2;
/// The backends' bound plus the replica's.
const BOUND: Duration = Duration::from_millis(1000 + MAX_LAG * 1000);

/// Product `id`'s price as the token's user is shown it, and that answer's `ETag`.
async fn price(stack: &Stack, token: &str, id: i64) -> (i64, String) {
    let r = stack.http.get(stack.api(&format!("/api/products/{id}"))).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers().get("etag").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body: Value = r.json().await.unwrap();
    (body["price_cents"].as_i64().unwrap(), etag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_change_imported_on_mariadb_is_served_within_the_bound_on_every_shard() {
    let (_topology, stack) = stack_on_mariadb(MAX_LAG).await;
    let mut next = 50_000;
    let tokens = [stack.mint(user_on(&stack, "a", &mut next)), stack.mint(user_on(&stack, "b", &mut next))];
    let (status, product) = get(&stack, &tokens[0], "/api/products/6").await;
    assert_eq!(status, 200, "{product}");
    let mut old_tags = Vec::new();
    for token in &tokens {
        let (cents, etag) = price(&stack, token, 6).await;
        assert_eq!(Some(cents), product["price_cents"].as_i64());
        old_tags.push(etag);
    }

    let new_price = product["price_cents"].as_i64().unwrap() + 300;
    let committed = stack.reprice(&tokens[0], &product, new_price).await;

    // Every read that starts once the bound has passed shows the new price; earlier, either.
    loop {
        let started = Instant::now();
        for (token, old_tag) in tokens.iter().zip(&old_tags) {
            let (cents, etag) = price(&stack, token, 6).await;
            assert_eq!(cents == new_price, etag != *old_tag, "the ETag changes with the answer");
            if started.duration_since(committed) > BOUND {
                assert_eq!(cents, new_price, "stale {:?} after the import", started - committed);
            }
        }
        if started.duration_since(committed) > BOUND {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The new answer revalidates through nginx.
    let (_, etag) = price(&stack, &tokens[1], 6).await;
    let r = stack.http.get(stack.api("/api/products/6")).bearer_auth(&tokens[1]).header("if-none-match", &etag);
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.text().await.unwrap(), "");
}
