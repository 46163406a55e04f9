//! Point 4: 200 orders created concurrently, each sent twice at once under one Idempotency-Key and
//! retried until acknowledged: exactly one order per key, every acknowledged order stored as
//! acknowledged, totals exact to the cent, checked with SQL on the primaries (and the replicas).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shopgate_e2e::Stack;

use crate::{create_order, get, shard_of, stack_on_mariadb, user_on};

const ORDERS: usize = 200;
/// Requests sent at once per key: the original and a retry racing it.
const COPIES: usize = 2;

struct Job {
    user: u64,
    token: String,
    key: String,
    /// (product id, quantity), one line per product.
    lines: BTreeMap<i64, i64>,
    total: i64,
}

/// Sends the job until it is acknowledged (2xx); returns every answer, failures included.
async fn until_acknowledged(stack: &Stack, job: &Job) -> Vec<(u16, Value)> {
    let items: Vec<Value> = job.lines.iter().map(|(p, q)| json!({"product_id": p, "quantity": q})).collect();
    let items = Value::Array(items);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut answers = Vec::new();
    loop {
        let (status, body) = create_order(stack, &job.token, &items, Some(&job.key)).await;
        answers.push((status, body));
        if (200..300).contains(&status) {
            return answers;
        }
        assert!(Instant::now() < deadline, "key {} never acknowledged: {answers:?}", job.key);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retried_creates_make_exactly_one_order_per_key_with_exact_totals() {
    let (topology, stack) = stack_on_mariadb(5).await;
    let stack = Arc::new(stack);
    let mut next = 40_000;
    let users: Vec<u64> = (0..8).map(|i| user_on(&stack, if i % 2 == 0 { "a" } else { "b" }, &mut next)).collect();
    let tokens: HashMap<u64, String> = users.iter().map(|&u| (u, stack.mint(u))).collect();

    // The catalog as the shop states it; prices must come from it, never from the client.
    let (status, catalog) = get(&stack, &tokens[&users[0]], "/api/products?limit=100").await;
    assert_eq!(status, 200, "{catalog}");
    let prices: HashMap<i64, i64> = catalog["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_i64().unwrap(), p["price_cents"].as_i64().unwrap()))
        .collect();
    assert_eq!(prices.len(), 12);

    // Deterministic "random" baskets: 1-4 products, quantities 1-9.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rand = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let run = shopgate_e2e::rand_hex(4);
    let jobs: Vec<Arc<Job>> = (0..ORDERS)
        .map(|i| {
            let user = users[i % users.len()];
            let mut lines = BTreeMap::new();
            for _ in 0..=rand(4) {
                *lines.entry(1 + rand(12) as i64).or_insert(0) += 1 + rand(9) as i64;
            }
            let total = lines.iter().map(|(p, q)| prices[p] * q).sum();
            Arc::new(Job { user, token: tokens[&user].clone(), key: format!("order-{run}-{i}"), lines, total })
        })
        .collect();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for job in &jobs {
        for _ in 0..COPIES {
            let (stack, job) = (stack.clone(), job.clone());
            tasks.push(tokio::spawn(async move { until_acknowledged(&stack, &job).await }));
        }
    }
    let mut answers: Vec<Vec<(u16, Value)>> = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let attempts: usize = answers.iter().map(Vec::len).sum();
    let retried: Vec<u16> = answers.iter().flatten().map(|(s, _)| *s).filter(|s| !(200..300).contains(s)).collect();
    eprintln!(
        "{} requests for {ORDERS} keys in {:?}; non-2xx answers retried: {retried:?}",
        attempts,
        started.elapsed()
    );
    assert!(retried.iter().all(|s| *s == 503), "only 503 may be retried here: {retried:?}");

    // Per key: every acknowledgement names the same order, priced from the catalog, exact total.
    let mut acknowledged: HashMap<i64, (u64, i64)> = HashMap::new(); // order id -> (user, total)
    let mut created = 0;
    for (i, job) in jobs.iter().enumerate() {
        let acks: Vec<&(u16, Value)> =
            answers[i * COPIES..(i + 1) * COPIES].iter().flatten().filter(|(s, _)| (200..300).contains(s)).collect();
        assert_eq!(acks.len(), COPIES, "key {}", job.key);
        let first = &acks[0].1;
        for (status, body) in &acks {
            assert_eq!(body, first, "key {}: two different answers ({status})", job.key);
        }
        let n_created = acks.iter().filter(|(s, _)| *s == 201).count();
        assert!(n_created <= 1, "key {} created {n_created} orders", job.key);
        created += n_created;
        assert_eq!(first["total_cents"].as_i64(), Some(job.total), "key {}: {first}", job.key);
        assert_eq!(first["user_id"].as_u64(), Some(job.user));
        let mut lines = BTreeMap::new();
        for item in first["items"].as_array().unwrap() {
            let product = item["product_id"].as_i64().unwrap();
            let (quantity, unit) = (item["quantity"].as_i64().unwrap(), item["unit_price_cents"].as_i64().unwrap());
            assert_eq!(unit, prices[&product], "key {}: unit price not the catalog's", job.key);
            assert_eq!(item["line_total_cents"].as_i64(), Some(quantity * unit));
            lines.insert(product, quantity);
        }
        assert_eq!(lines, job.lines, "key {}", job.key);
        let id = first["id"].as_i64().unwrap();
        assert!(acknowledged.insert(id, (job.user, job.total)).is_none(), "order {id} acknowledged for two keys");
    }
    assert!(created >= ORDERS - 2, "only {created} of {ORDERS} keys answered 201 even once");

    // The databases: exactly the acknowledged orders, one per key, totals exact to the cent.
    let mut seen_ids = HashSet::new();
    for (shard, number) in [("a", 0), ("b", 1)] {
        let expected: HashMap<i64, (u64, i64)> =
            acknowledged.iter().filter(|(_, (u, _))| shard_of(&stack, *u) == shard).map(|(k, v)| (*k, *v)).collect();
        assert!(expected.len() >= ORDERS / 3, "shard {shard} got only {} orders", expected.len());
        let expected_sum: i64 = expected.values().map(|(_, t)| t).sum();
        for role in ["primary", "replica"] {
            let instance = format!("{shard}-{role}");
            if role == "replica" {
                topology.wait_replica_caught_up(shard, Duration::from_secs(20)).await;
            }
            let db = topology.admin(&instance).await;
            let orders: Vec<(i64, i64, i64, i64)> =
                sqlx::query_as("SELECT id, user_id, total_cents, created_at FROM orders").fetch_all(&db).await.unwrap();
            let stored: HashMap<i64, (u64, i64)> =
                orders.iter().map(|(id, user, total, _)| (*id, (*user as u64, *total))).collect();
            assert_eq!(orders.len(), expected.len(), "{instance}: orders stored vs acknowledged");
            assert_eq!(stored, expected, "{instance}: stored orders differ from the acknowledged ones");
            let (keys, distinct): (i64, i64) =
                sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT order_id) FROM idempotency_keys")
                    .fetch_one(&db)
                    .await
                    .unwrap();
            assert_eq!(
                (keys as usize, distinct as usize),
                (expected.len(), expected.len()),
                "{instance}: one key row per order"
            );
            // Totals: each order's total is the sum of its lines, each line quantity x catalog price.
            let bad: Vec<(i64, i64, i64)> = sqlx::query_as(
                "SELECT o.id, o.total_cents, CAST(COALESCE(SUM(i.quantity * p.price_cents), -1) AS SIGNED) \
                 FROM orders o LEFT JOIN order_items i ON i.order_id = o.id LEFT JOIN products p ON p.id = i.product_id \
                 GROUP BY o.id, o.total_cents \
                 HAVING o.total_cents <> COALESCE(SUM(i.line_total_cents), -1) \
                     OR o.total_cents <> COALESCE(SUM(i.quantity * p.price_cents), -1) \
                     OR SUM(i.line_total_cents <> i.quantity * i.unit_price_cents) > 0",
            )
            .fetch_all(&db)
            .await
            .unwrap();
            assert!(bad.is_empty(), "{instance}: orders whose total is not their lines' sum: {bad:?}");
            let (sum,): (i64,) =
                sqlx::query_as("SELECT CAST(SUM(total_cents) AS SIGNED) FROM orders").fetch_one(&db).await.unwrap();
            assert_eq!(sum, expected_sum, "{instance}: the cents do not add up");
            if role == "primary" {
                for (id, _, _, created_at) in &orders {
                    assert_eq!(id % 64, number, "order {id} on shard {shard} lacks the shard's number");
                    assert!(seen_ids.insert(*id), "order id {id} on both shards");
                    // Time-sortable: the id's time part (above the instance's and the shard's six
                    // bits each) is its creation time (ms since 2025).
                    let minted_ms = 1_735_689_600_000 + (id >> 12);
                    assert!(
                        (minted_ms - created_at * 1000).abs() < 5_000,
                        "order {id}: id time vs created_at {created_at}"
                    );
                }
            }
            db.close().await;
        }
    }
}
