//! Bucket moves measured (issue 11, point 5): the time to move one bucket as a function of its
//! rows, and the write pause per bucket under a steady load of order creates.
//!
//! `cargo build --release --workspace --bins --examples && target/release/examples/move_bench [--mariadb]`
//! (scripts/bench runs it). It starts a stack of its own (real nginx, verifier, two backends; with
//! `--mariadb` on a MariaDB topology with replicas), seeds buckets of shard a with rows straight in
//! its primary, and moves them to shard b with the real `shopctl shards move`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed run

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shopgate_core::shardmap::bucket;
use shopgate_core::UserId;
use shopgate_e2e::cli::pool;
use shopgate_e2e::mariadb::Topology;
use shopgate_e2e::shard_data::{load, ROWS_PER_USER};
use shopgate_e2e::Shop as _;
use shopgate_e2e::{Options, Stack};

#[tokio::main]
async fn main() {
    let mariadb = std::env::args().any(|a| a == "--mariadb");
    let topology = if mariadb { Some(Topology::start().await) } else { None };
    // Shoppers are registered from one address: lift that throttle for the run.
    let settings = vec![("verifier.register_max_per_address", "100000")];
    let options = match &topology {
        Some(t) => Options { nginx_master: true, settings, ..t.stack_options(5) },
        None => Options { nginx_master: true, settings, ..Options::default() },
    };
    let stack = Stack::start_with(options).await;
    let engine = if mariadb { "MariaDB (primary + replica per shard)" } else { "SQLite" };
    println!("### Bucket moves, {engine}: shard a to shard b with `shopctl shards move --batch 1`");
    println!();
    let auth = pool(&stack.config.verifier.database_url).await;
    let map = shopgate_core::control::current(&auth).await.unwrap().unwrap();
    let a_buckets = map.buckets_of(&stack.config.shards[0].name);
    let primary = pool(&stack.config.shards[0].primary).await;

    println!("| rows in the bucket | move time (s) | write pause (ms) |");
    println!("|---|---|---|");
    for (i, rows) in [100usize, 1_000, 10_000, 50_000].into_iter().enumerate() {
        let b = a_buckets[a_buckets.len() - 1 - i];
        // Shoppers straight in the primary (shopgate_e2e::shard_data), about `rows` rows.
        let users = (rows as u64).div_ceil(ROWS_PER_USER);
        let seeded = load(&primary, mariadb, &[b], 0, 0, users, 1).await.unwrap().rows();
        let started = Instant::now();
        let summary = move_buckets(&stack, &b.to_string());
        println!("| {seeded} | {:.2} | {} |", started.elapsed().as_secs_f64(), summary["pause_ms_max"]);
    }

    // Under load: shoppers on a (some in the buckets that move) ordering without pause.
    let shoppers = shoppers(&stack, &map, 16).await;
    let moving: Vec<u16> = {
        let mut m: Vec<u16> = shoppers.iter().take(8).map(|(id, _)| bucket(UserId::new(*id).unwrap())).collect();
        m.sort_unstable();
        m.dedup();
        m
    };
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::<(bool, u16, Duration)>::new()));
    let resent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (id, token) in shoppers.clone() {
        let (http, url, stop, log) = (stack.http.clone(), stack.api("/api/orders"), stop.clone(), log.clone());
        let resent = resent.clone();
        let moved = moving.contains(&bucket(UserId::new(id).unwrap()));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let key = shopgate_e2e::rand_hex(12);
                let send = || {
                    http.post(&url)
                        .bearer_auth(&token)
                        .header("Idempotency-Key", &key)
                        .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}))
                        .send()
                };
                // A connection nginx closes as it reloads: sent again under the same key, as
                // clients do (README, "Growing the shop"); counted apart.
                let answer = match send().await {
                    Ok(r) => Ok(r),
                    Err(_) => {
                        resent.fetch_add(1, Ordering::Relaxed);
                        send().await
                    }
                };
                let status = answer.as_ref().map_or(0, |r| r.status().as_u16());
                if status != 201 && !moved {
                    let body = match answer {
                        Ok(r) => r.text().await.unwrap_or_default(),
                        Err(e) => e.to_string(),
                    };
                    eprintln!("an unmoved user's order got {status}: {body}");
                }
                log.lock().unwrap().push((moved, status, started.elapsed()));
                if status == 503 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spec = moving.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    let started = Instant::now();
    let summary = move_buckets(&stack, &spec);
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let log = log.lock().unwrap();
    let count = |moved: bool, ok: bool| log.iter().filter(|(m, s, _)| *m == moved && (*s == 201) == ok).count();
    println!();
    println!(
        "Under load ({} shoppers ordering without pause, {} of them in the {} buckets moved one per batch, {:.1} s):",
        shoppers.len(),
        shoppers.iter().filter(|(id, _)| moving.contains(&bucket(UserId::new(*id).unwrap()))).count(),
        moving.len(),
        took.as_secs_f64()
    );
    println!();
    println!("| write pause per bucket | p50 | p99 | max |");
    println!("|---|---|---|---|");
    println!("| ms | {} | {} | {} |", summary["pause_ms_p50"], summary["pause_ms_p99"], summary["pause_ms_max"]);
    println!();
    println!(
        "Orders placed meanwhile: unmoved users {} created, {} refused; moved users {} created, {} answered 503; \
         other answers: {:?}; sent again after nginx closed the connection at a reload: {}.",
        count(false, true),
        count(false, false),
        count(true, true),
        count(true, false),
        log.iter().filter(|(_, s, _)| *s != 201 && *s != 503).map(|(_, s, _)| *s).collect::<Vec<_>>(),
        resent.load(Ordering::Relaxed)
    );
    drop(topology);
}

/// `shopctl --json shards move --to b SPEC --batch 1`; the summary event.
fn move_buckets(stack: &Stack, spec: &str) -> Value {
    let out = stack.shopctl().args(["--json", "shards", "move", "--to", "b", spec, "--batch", "1"]).output().unwrap();
    assert!(out.status.success(), "move {spec}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "summary")
        .expect("a summary")
}

/// `n` registered shoppers whose users shard a owns, with their tokens.
async fn shoppers(stack: &Stack, map: &shopgate_core::ShardMap, n: usize) -> Vec<(u64, String)> {
    let a = &stack.config.shards[0].name;
    let mut out = Vec::new();
    while out.len() < n {
        let (id, token) = stack.shopper().await;
        if map.shard_for(UserId::new(id).unwrap()) == a {
            out.push((id, token));
        }
    }
    out
}
