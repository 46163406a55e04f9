//! Issue 24, point 2, on MariaDB: a bucket move catches up from the source's binlog. The move of
//! one of shard a's buckets to b is killed after `copied`, then after `caught_up`; while it is
//! down each time, the moving user places an order and cancels another (acknowledged by a, whose
//! fence is still open). The runs that resume catch up from the position the record holds: the
//! step events say the binlog carried the changes (not a copy of the whole batch), and b ends with
//! exactly the orders, statuses and keys the user was told about.

use serde_json::Value;
use shopgate_backend::store::buckets;
use shopgate_core::shardmap::bucket;
use shopgate_core::UserId;
use shopgate_e2e::mariadb::Topology;
use shopgate_e2e::Stack;

/// `shopctl --json shards move --to b BUCKET`, killed after `die_after` if given; its step events.
fn run_move(stack: &Stack, moved: u16, die_after: Option<&str>) -> (bool, Vec<Value>) {
    let mut cmd = stack.shopctl();
    cmd.args(["--json", "shards", "move", "--to", "b", &moved.to_string(), "--wait-seconds", "20"]);
    if let Some(step) = die_after {
        cmd.env("SHOPCTL_MOVE_DIE_AFTER", step);
    }
    let out = cmd.output().unwrap();
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "step")
        .collect();
    if die_after.is_none() {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), events)
}

fn event<'a>(events: &'a [Value], step: &str) -> &'a Value {
    events.iter().find(|e| e["step"] == step).unwrap_or_else(|| panic!("no {step} event in {events:?}"))
}

/// Places an order and cancels the user's oldest open one; returns the new order's id and the
/// cancelled one's.
async fn write_meanwhile(stack: &Stack, token: &str, open: &mut Vec<i64>) -> (i64, i64) {
    let made = stack.order(token).await["id"].as_i64().unwrap();
    let cancelled = open.remove(0);
    let r = stack
        .http
        .post(stack.api(&format!("/api/orders/{cancelled}/cancel")))
        .bearer_auth(token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "cancelling order {cancelled}");
    open.push(made);
    (made, cancelled)
}

#[tokio::test]
async fn a_resumed_move_catches_up_from_the_binlog_position_it_recorded() {
    let topology = Topology::start().await;
    let stack = Stack::start_with(shopgate_e2e::Options { nginx_master: true, ..topology.stack_options(5) }).await;
    let map = stack.config.shard_map.clone();
    let (user, token) = loop {
        let (id, token) = stack.shopper().await;
        if map.shard_for(UserId::new(id).unwrap()).as_str() == "a" {
            break (id, token);
        }
    };
    let moved = bucket(UserId::new(user).unwrap());
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(stack.order(&token).await["id"].as_i64().unwrap());
    }
    let mut cancelled = Vec::new();

    let (ok, events) = run_move(&stack, moved, Some("copied"));
    assert!(!ok && events.last().unwrap()["step"] == "copied", "{events:?}");
    cancelled.push(write_meanwhile(&stack, &token, &mut open).await.1);

    let (ok, events) = run_move(&stack, moved, Some("caught_up"));
    assert!(!ok && events.last().unwrap()["step"] == "caught_up", "{events:?}");
    let caught_up = &event(&events, "caught_up")["detail"];
    assert_eq!(caught_up["by"], "binlog", "{caught_up}");
    // The new order and its item, and the cancelled order.
    assert!(caught_up["keys"].as_u64().unwrap() >= 3, "{caught_up}");
    assert_eq!(caught_up["differed"], 0, "the comparison found rows the catch-up had not brought: {caught_up}");
    cancelled.push(write_meanwhile(&stack, &token, &mut open).await.1);
    let a = shopgate_e2e::cli::pool(&stack.config.shards[0].primary).await;
    let on_a = buckets::checksums(&a, &[moved]).await.unwrap();

    let (_, events) = run_move(&stack, moved, None);
    let verified = &event(&events, "verified")["detail"];
    assert_eq!(verified["by"], "binlog", "{verified}");
    assert!(verified["keys"].as_u64().unwrap() >= 3, "{verified}");

    let b = shopgate_e2e::cli::pool(&stack.config.shards[1].primary).await;
    assert_eq!(buckets::checksums(&b, &[moved]).await.unwrap(), on_a, "b's rows of the bucket against a's before");
    let (status, body) = super::get(&stack, &token, "/api/orders?limit=100").await;
    assert_eq!(status, 200, "{body}");
    let mut seen: Vec<(i64, String)> = body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["id"].as_i64().unwrap(), o["status"].as_str().unwrap().to_owned()))
        .collect();
    seen.sort();
    let mut want: Vec<(i64, String)> = open.iter().map(|id| (*id, "placed".to_owned())).collect();
    want.extend(cancelled.iter().map(|id| (*id, "cancelled".to_owned())));
    want.sort();
    assert_eq!(seen, want, "the moved user's orders as acknowledged");
    let check = stack.ctl(&["shards", "check"]);
    assert_eq!(check.code, 0, "{check}");
}
