//! The catalog through nginx: public (no token needed or looked at), spread over every shard,
//! answers with an `ETag` and `Cache-Control` that survive the proxy and its cache, a matching
//! `If-None-Match` gets 304 through it, and a price change made with the operator's `shopctl
//! catalog import` is served within the stated bound (the backends' `catalog_cache_ms` plus
//! nginx's `catalog_cache_seconds`) and never later; each shard answers from its own database.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::{json, Value};
use shopgate_e2e::cli::exec;
use shopgate_e2e::Shop as _;
use shopgate_e2e::Stack;

/// `GET url` with an optional token and `If-None-Match`.
async fn get_url(
    stack: &Stack,
    url: &str,
    token: Option<&str>,
    if_none_match: Option<&str>,
) -> (u16, HeaderMap, String) {
    let mut req = stack.http.get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.text().await.unwrap())
}

/// `GET path` through nginx, without a token.
async fn get(stack: &Stack, path: &str, if_none_match: Option<&str>) -> (u16, HeaderMap, String) {
    get_url(stack, &stack.api(path), None, if_none_match).await
}

fn header(headers: &HeaderMap, name: &str) -> String {
    let values: Vec<_> = headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert!(values.len() <= 1, "{name} more than once: {values:?}");
    values.concat()
}

/// How old a price may be through nginx, and at a backend.
fn bounds(stack: &Stack) -> (Duration, Duration) {
    (stack.config.catalog_bound(), stack.config.backend.catalog_cache())
}

#[tokio::test]
async fn anonymous_reads_etag_cache_control_and_304_through_nginx() {
    let stack = Stack::start().await;
    for path in ["/api/products", "/backend/api/products?limit=3", "/api/products/2", "/api/categories"] {
        let (status, headers, body) = get(&stack, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        let etag = header(&headers, "etag");
        assert!(etag.len() > 2 && etag.starts_with('"'), "{path}: a strong ETag, got {etag:?}");
        assert_eq!(header(&headers, "cache-control"), "public, no-cache", "{path}");

        let (status, headers, body) = get(&stack, path, Some(&etag)).await;
        assert_eq!((status, body.as_str()), (304, ""), "{path} with its ETag");
        assert_eq!(header(&headers, "etag"), etag, "{path}");
        assert_eq!(header(&headers, "cache-control"), "public, no-cache", "{path}");
        assert!(!header(&headers, "x-request-id").is_empty(), "{path}: 304 without X-Request-Id");

        let (status, headers, body) = get(&stack, path, Some("\"something-else\"")).await;
        assert_eq!((status, header(&headers, "etag")), (200, etag.clone()), "{path}: another tag gets the body");
        serde_json::from_str::<Value>(&body).unwrap();

        // A token changes nothing, a bad one included: the catalog is public.
        for token in [stack.mint(42), "not-a-token".to_owned()] {
            let (status, headers, _) = get_url(&stack, &stack.api(path), Some(&token), None).await;
            assert_eq!((status, header(&headers, "etag")), (200, etag.clone()), "{path} with a token");
        }
    }
    let (status, _, body) = get(&stack, "/api/products/999", None).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn the_catalog_is_spread_over_the_shards_and_every_other_path_needs_a_token() {
    let stack = Stack::start().await;
    // Each URI its own, so none is answered from nginx's copy of another.
    let mut shards = BTreeSet::new();
    for limit in 1..=8 {
        let (status, headers, body) = get(&stack, &format!("/api/products?limit={limit}"), None).await;
        assert_eq!(status, 200, "{body}");
        shards.insert(header(&headers, "x-shop-shard"));
    }
    assert_eq!(shards, BTreeSet::from(["a".to_owned(), "b".to_owned()]), "round robin over both shards");

    for path in ["/api/orders", "/api/orders/1", "/api/users/me", "/backend/api/orders", "/api/productsx"] {
        let (status, _, body) = get(&stack, path, None).await;
        assert_eq!(status, 401, "GET {path}: {body}");
    }
    for path in ["/api/orders", "/api/orders/1/cancel", "/api/users"] {
        let r = stack.http.post(stack.api(path)).json(&json!({"items": [{"product_id": 1, "quantity": 1}]})).send();
        assert_eq!(r.await.unwrap().status(), 401, "POST {path}");
    }
}

/// Product `id`'s price at `base` (nginx, or a backend), on the product and on the first page,
/// and the product answer's `ETag`.
async fn prices(stack: &Stack, base: &str, id: i64) -> (i64, i64, String) {
    let (status, headers, body) = get_url(stack, &format!("{base}/api/products/{id}"), None, None).await;
    assert_eq!(status, 200, "{body}");
    let product: Value = serde_json::from_str(&body).unwrap();
    let (status, _, body) = get_url(stack, &format!("{base}/api/products"), None, None).await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let listed = list["products"].as_array().unwrap().iter().find(|p| p["id"] == id).unwrap()["price_cents"].as_i64();
    (product["price_cents"].as_i64().unwrap(), listed.unwrap(), header(&headers, "etag"))
}

/// nginx, then each shard's backend, with the bound on a price's age there.
fn readers(stack: &Stack) -> Vec<(String, Duration)> {
    let (through_nginx, at_backend) = bounds(stack);
    let mut readers = vec![(stack.api(""), through_nginx)];
    for shard in ["a", "b"] {
        readers.push((format!("http://{}", stack.config.shard(shard).unwrap().addr()), at_backend));
    }
    readers
}

#[tokio::test]
async fn a_price_change_imported_by_the_operator_is_served_within_the_bound_everywhere() {
    let stack = Stack::start().await;
    let readers = readers(&stack);
    let (_, _, body) = get(&stack, "/api/products/4", None).await;
    let product: Value = serde_json::from_str(&body).unwrap();
    // nginx and both backends have the old answers before the change.
    let mut old_tags = Vec::new();
    for (base, _) in &readers {
        let (price, listed, etag) = prices(&stack, base, 4).await;
        assert_eq!((price, listed), (product["price_cents"].as_i64().unwrap(), price));
        old_tags.push(etag);
    }

    let new_price = product["price_cents"].as_i64().unwrap() + 250;
    let committed = stack.reprice(&stack.mint(42), &product, new_price).await;

    // Every read that starts once its bound has passed since the import finished shows the new
    // price, on the product and in the list; earlier reads may show either.
    let longest = readers.iter().map(|(_, bound)| *bound).max().unwrap();
    loop {
        let started = Instant::now();
        for ((base, bound), old_tag) in readers.iter().zip(&old_tags) {
            let (price, listed, etag) = prices(&stack, base, 4).await;
            assert_eq!(price == new_price, etag != *old_tag, "{base}: the product's ETag changes with its answer");
            if started.duration_since(committed) > *bound {
                assert!(
                    price == new_price && listed == new_price,
                    "{base}: stale {:?} after the import (bound {bound:?}): {price}, listed {listed}",
                    started - committed
                );
            }
        }
        if started.duration_since(committed) > longest {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn each_shard_answers_from_its_own_database() {
    let stack = Stack::start().await;
    let (_, bound) = bounds(&stack);
    let backends: Vec<String> = readers(&stack).into_iter().skip(1).map(|(base, _)| base).collect();
    for base in &backends {
        prices(&stack, base, 5).await;
    }
    // An operator's mistake: the shards' catalogs disagree. Each shard serves its own.
    for (shard, cents) in [("a", 111), ("b", 222)] {
        let db = stack.shard_db(shard).await;
        exec(&db, &format!("UPDATE products SET price_cents = {cents} WHERE id = 5")).await;
        db.close().await;
    }
    let committed = Instant::now();
    let mut tags = Vec::new();
    for (base, cents) in backends.iter().zip([111, 222]) {
        loop {
            let started = Instant::now();
            let (price, listed, etag) = prices(&stack, base, 5).await;
            if (price, listed) == (cents, cents) {
                tags.push(etag);
                break;
            }
            assert!(started.duration_since(committed) <= bound, "{base}: still {price}, listed {listed}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_ne!(tags[0], tags[1]);
    // Read in turns, each shard keeps to its own answer and its own tag.
    for _ in 0..5 {
        for ((base, cents), tag) in backends.iter().zip([111, 222]).zip(&tags) {
            assert_eq!(prices(&stack, base, 5).await, (cents, cents, tag.clone()));
        }
    }
    let url = format!("{}/api/products/5", backends[1]);
    let (status, _, _) = get_url(&stack, &url, None, Some(&tags[0])).await;
    assert_eq!(status, 200, "shard a's tag is not shard b's answer");
}

/// The second hostile round, finding 2: nginx keyed its catalog cache on the decoded path, so
/// `/api/products/1%3Fref=mail` (a 404 at the backend) was kept under the key of
/// `/api/products/1?ref=mail`, and a poisoner turned every shopper's answer for that URL into 404.
/// The key is now the URI as the client sent it: a kept answer is served only for that URI.
#[tokio::test]
async fn a_cached_answer_is_never_served_for_another_request_uri() {
    let stack = Stack::start_with(shopgate_e2e::Options {
        settings: vec![("nginx.catalog_cache_seconds", "30")],
        ..Default::default()
    })
    .await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        for poison in ["/api/products/1%3Fref=mail", "/api/products/1%3fref=mail", "/backend/api/products/1%3Fref=mail"]
        {
            let (status, _, body) = get(&stack, poison, None).await;
            assert_eq!(status, 404, "{poison}: {body}");
        }
        for path in ["/api/products/1?ref=mail", "/backend/api/products/1?ref=mail"] {
            let (status, _, body) = get(&stack, path, None).await;
            seen.push((path, status));
            assert_eq!(status, 200, "{path} after the poisoner's requests: {body}; so far {seen:?}");
        }
    }
}
