//! The catalog through nginx: answers carry an `ETag` and `Cache-Control` that survive the proxy, a
//! matching `If-None-Match` gets 304 through it, a price change made with the operator's
//! `shopctl catalog import` is served by every shard within the backends' bound
//! (`[backend] catalog_cache_ms`, 1 s by default) and never later, and each shard answers from its
//! own database.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::Value;
use shopgate_e2e::cli::exec;
use shopgate_e2e::Stack;

/// The default `[backend] catalog_cache_ms`.
const BOUND: Duration = Duration::from_millis(1000);
/// Users of shard `a` (even bucket) and shard `b` (odd).
const ON_A: u64 = 42;
const ON_B: u64 = 43;

/// `GET path` through nginx with `token` and an optional `If-None-Match`.
async fn get(stack: &Stack, token: &str, path: &str, if_none_match: Option<&str>) -> (u16, HeaderMap, String) {
    let mut req = stack.http.get(stack.api(path)).bearer_auth(token);
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

fn header(headers: &HeaderMap, name: &str) -> String {
    let values: Vec<_> = headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert!(values.len() <= 1, "{name} more than once: {values:?}");
    values.concat()
}

#[tokio::test]
async fn etag_cache_control_and_304_pass_through_nginx() {
    let stack = Stack::start().await;
    let (a, b) = (stack.mint(ON_A), stack.mint(ON_B));
    for path in ["/api/products", "/backend/api/products?limit=3", "/api/products/2", "/api/categories"] {
        let (status, headers, body) = get(&stack, &a, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        let etag = header(&headers, "etag");
        assert!(etag.len() > 2 && etag.starts_with('"'), "{path}: a strong ETag, got {etag:?}");
        assert_eq!(header(&headers, "cache-control"), "private, no-cache", "{path}");
        assert_eq!(header(&headers, "x-shop-shard"), "a");

        let (status, headers, body) = get(&stack, &a, path, Some(&etag)).await;
        assert_eq!((status, body.as_str()), (304, ""), "{path} with its ETag");
        assert_eq!(header(&headers, "etag"), etag, "{path}");
        assert_eq!(header(&headers, "cache-control"), "private, no-cache", "{path}");
        assert!(!header(&headers, "x-request-id").is_empty(), "{path}: 304 without X-Request-Id");

        // Shard b holds the same catalog, so its answer has the same tag: a client whose bucket
        // moves keeps its copy.
        let (status, headers, _) = get(&stack, &b, path, Some(&etag)).await;
        assert_eq!((status, header(&headers, "x-shop-shard")), (304, "b".to_owned()), "{path} on shard b");

        let (status, headers, body) = get(&stack, &a, path, Some("\"something-else\"")).await;
        assert_eq!((status, header(&headers, "etag")), (200, etag.clone()), "{path}: another tag gets the body");
        serde_json::from_str::<Value>(&body).unwrap();
    }
    // A matching tag is no way around the token.
    let (_, headers, _) = get(&stack, &a, "/api/products", None).await;
    let (status, _, _) = get(&stack, "not-a-token", "/api/products", Some(&header(&headers, "etag"))).await;
    assert_eq!(status, 401);
}

/// Product `id`'s price as the user of `token` is shown it, on the product and on the first page,
/// and the product answer's `ETag`.
async fn prices(stack: &Stack, token: &str, id: i64) -> (i64, i64, String) {
    let (status, headers, body) = get(stack, token, &format!("/api/products/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    let product: Value = serde_json::from_str(&body).unwrap();
    let (status, _, body) = get(stack, token, "/api/products", None).await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let listed = list["products"].as_array().unwrap().iter().find(|p| p["id"] == id).unwrap()["price_cents"].as_i64();
    (product["price_cents"].as_i64().unwrap(), listed.unwrap(), header(&headers, "etag"))
}

#[tokio::test]
async fn a_price_change_imported_by_the_operator_is_served_within_the_bound_on_every_shard() {
    let stack = Stack::start().await;
    let tokens = [stack.mint(ON_A), stack.mint(ON_B)];
    let (_, _, body) = get(&stack, &tokens[0], "/api/products/4", None).await;
    let product: Value = serde_json::from_str(&body).unwrap();
    // Both shards have the old answers in memory before the change.
    let mut old_tags = Vec::new();
    for token in &tokens {
        let (price, listed, etag) = prices(&stack, token, 4).await;
        assert_eq!((price, listed), (product["price_cents"].as_i64().unwrap(), price));
        old_tags.push(etag);
    }

    let new_price = product["price_cents"].as_i64().unwrap() + 250;
    let committed = stack.reprice(&tokens[0], &product, new_price).await;

    // Every read that starts once the bound has passed since the import finished shows the new
    // price, on both shards, on the product and in the list; earlier reads may show either.
    loop {
        let started = Instant::now();
        let mut fresh = true;
        for (token, old_tag) in tokens.iter().zip(&old_tags) {
            let (price, listed, etag) = prices(&stack, token, 4).await;
            let new = price == new_price && listed == new_price;
            assert_eq!(price == new_price, etag != *old_tag, "the product's ETag changes with its answer");
            if started.duration_since(committed) > BOUND {
                assert!(new, "stale {:?} after the import: {price}, listed {listed}", started - committed);
            }
            fresh &= new;
        }
        if started.duration_since(committed) > BOUND {
            assert!(fresh);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn each_shard_answers_from_its_own_database() {
    let stack = Stack::start().await;
    let tokens = [stack.mint(ON_A), stack.mint(ON_B)];
    for token in &tokens {
        prices(&stack, token, 5).await;
    }
    // An operator's mistake: the shards' catalogs disagree. Each shard serves its own.
    for (shard, cents) in [("a", 111), ("b", 222)] {
        let db = stack.shard_db(shard).await;
        exec(&db, &format!("UPDATE products SET price_cents = {cents} WHERE id = 5")).await;
        db.close().await;
    }
    let committed = Instant::now();
    let mut tags = Vec::new();
    for (token, cents) in tokens.iter().zip([111, 222]) {
        loop {
            let started = Instant::now();
            let (price, listed, etag) = prices(&stack, token, 5).await;
            if (price, listed) == (cents, cents) {
                tags.push(etag);
                break;
            }
            assert!(started.duration_since(committed) <= BOUND, "still {price}, listed {listed}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_ne!(tags[0], tags[1]);
    // Read in turns, each shard keeps to its own answer and its own tag.
    for _ in 0..5 {
        for ((token, cents), tag) in tokens.iter().zip([111, 222]).zip(&tags) {
            assert_eq!(prices(&stack, token, 5).await, (cents, cents, tag.clone()));
        }
    }
    let (status, _, _) = get(&stack, &tokens[1], "/api/products/5", Some(&tags[0])).await;
    assert_eq!(status, 200, "shard a's tag is not shard b's answer");
}
