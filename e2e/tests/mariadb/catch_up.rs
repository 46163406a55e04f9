//! Issue 24, point 2, on MariaDB: a bucket move catches up from the source's binlog. The move of
//! one of shard a's buckets to b is killed after `copied`, then after `caught_up`; while it is
//! down each time, the moving user places an order and cancels another (acknowledged by a, whose
//! fence is still open). The runs that resume catch up from the position the record holds: the
//! step events say the binlog carried the changes (not a copy of the whole batch), and b ends with
//! exactly the orders, statuses and keys the user was told about.

use serde_json::Value;
use shopgate_core::shardmap::bucket;
use shopgate_core::UserId;
use shopgate_e2e::grow::step_events;
use shopgate_e2e::mariadb::Topology;
use shopgate_e2e::Shop as _;
use shopgate_e2e::Stack;
use shopgate_store::buckets;

/// `shopctl --json shards move --to b BUCKET`, killed after `die_after` if given: whether it
/// succeeded, its step events and its standard error. A run not asked to die must succeed.
fn run_move(stack: &Stack, moved: u16, die_after: Option<&str>) -> (bool, Vec<Value>, String) {
    let out = stack.shards_move("b", &moved.to_string(), die_after);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if die_after.is_none() {
        assert!(out.status.success(), "{stderr}");
    }
    (out.status.success(), step_events(&out.stdout), stderr)
}

/// A MariaDB stack (nginx with its master, to reload) and a shopper of shard a: its token and
/// bucket, the one to move.
async fn setup() -> (Topology, Stack, String, u16) {
    let topology = Topology::start().await;
    let stack = Stack::start_with(shopgate_e2e::Options { nginx_master: true, ..topology.stack_options(5) }).await;
    let map = stack.config.shard_map.clone();
    loop {
        let (id, token) = stack.shopper().await;
        let user = UserId::new(id).unwrap();
        if map.shard_for(user).as_str() == "a" {
            return (topology, stack, token, bucket(user));
        }
    }
}

/// The user's orders and their statuses through nginx, sorted. The move's reload of nginx may
/// close a kept-alive connection as the request goes out: such a read is sent again, as any
/// client would (README, "Growing the shop").
async fn orders_of(stack: &Stack, token: &str) -> Vec<(i64, String)> {
    let url = stack.api("/api/orders?limit=100");
    let mut tries = 0;
    let body: Value = loop {
        match stack.http.get(&url).bearer_auth(token).send().await {
            Ok(r) => {
                assert_eq!(r.status(), 200);
                break r.json().await.unwrap();
            }
            Err(e) if tries < 2 && shopgate_e2e::load::closed_unanswered(&e) => tries += 1,
            Err(e) => panic!("listing orders: {e}"),
        }
    };
    let mut seen: Vec<(i64, String)> = body["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["id"].as_i64().unwrap(), o["status"].as_str().unwrap().to_owned()))
        .collect();
    seen.sort();
    seen
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
    let (_topology, stack, token, moved) = setup().await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(stack.order(&token).await["id"].as_i64().unwrap());
    }
    let mut cancelled = Vec::new();

    let (ok, events, _) = run_move(&stack, moved, Some("copied"));
    assert!(!ok && events.last().unwrap()["step"] == "copied", "{events:?}");
    cancelled.push(write_meanwhile(&stack, &token, &mut open).await.1);

    let (ok, events, _) = run_move(&stack, moved, Some("caught_up"));
    assert!(!ok && events.last().unwrap()["step"] == "caught_up", "{events:?}");
    let caught_up = &event(&events, "caught_up")["detail"];
    assert_eq!(caught_up["by"], "binlog", "{caught_up}");
    // The new order and its item, and the cancelled order.
    assert!(caught_up["keys"].as_u64().unwrap() >= 3, "{caught_up}");
    assert_eq!(caught_up["differed"], 0, "the comparison found rows the catch-up had not brought: {caught_up}");
    cancelled.push(write_meanwhile(&stack, &token, &mut open).await.1);
    let a = shopgate_e2e::cli::pool(&stack.config.shards[0].primary).await;
    let on_a = buckets::checksums(&a, &[moved]).await.unwrap();

    let (_, events, _) = run_move(&stack, moved, None);
    let verified = &event(&events, "verified")["detail"];
    assert_eq!(verified["by"], "binlog", "{verified}");
    assert!(verified["keys"].as_u64().unwrap() >= 3, "{verified}");

    let b = shopgate_e2e::cli::pool(&stack.config.shards[1].primary).await;
    assert_eq!(buckets::checksums(&b, &[moved]).await.unwrap(), on_a, "b's rows of the bucket against a's before");
    let seen = orders_of(&stack, &token).await;
    let mut want: Vec<(i64, String)> = open.iter().map(|id| (*id, "placed".to_owned())).collect();
    want.extend(cancelled.iter().map(|id| (*id, "cancelled".to_owned())));
    want.sort();
    assert_eq!(seen, want, "the moved user's orders as acknowledged");
    let check = stack.ctl(&["shards", "check"]);
    assert_eq!(check.code, 0, "{check}");
}

/// The binlog the record points into is gone by the time the move resumes (purged, as
/// `expire_logs_days` would): the resumed move says so, copies the batch again from a new
/// position instead of stopping for good, and still ends with every acknowledged write on b.
#[tokio::test]
async fn a_move_whose_binlog_was_purged_copies_again_and_goes_on() {
    let (topology, stack, token, moved) = setup().await;
    let mut open = vec![stack.order(&token).await["id"].as_i64().unwrap()];
    let (ok, _, _) = run_move(&stack, moved, Some("copied"));
    assert!(!ok);
    let cancelled = write_meanwhile(&stack, &token, &mut open).await.1;

    let admin = topology.admin("a-primary").await;
    sqlx::query("FLUSH BINARY LOGS").execute(&admin).await.unwrap();
    let row = sqlx::query("SHOW MASTER STATUS").fetch_one(&admin).await.unwrap();
    let current: String = sqlx::Row::get(&row, 0);
    // The replica's reader may still hold the older file for a moment: a purge leaves a file in
    // use alone, so it is asked again until only the current file is left.
    super::wait_until("the older binlogs are purged", std::time::Duration::from_secs(10), || {
        let (admin, current) = (admin.clone(), current.clone());
        async move {
            sqlx::query(&format!("PURGE BINARY LOGS TO '{current}'")).execute(&admin).await.unwrap();
            let logs = sqlx::query("SHOW BINARY LOGS").fetch_all(&admin).await.unwrap();
            (logs.len() == 1).then_some(())
        }
    })
    .await;

    let (_, events, stderr) = run_move(&stack, moved, None);
    assert!(stderr.contains("copying the batch again from a new position"), "{stderr}\n{events:?}");
    assert_eq!(event(&events, "caught_up")["detail"]["by"], "copy", "{events:?}");
    assert_eq!(event(&events, "verified")["detail"]["by"], "binlog", "{events:?}");
    let seen = orders_of(&stack, &token).await;
    let mut want = vec![(open[0], "placed".to_owned()), (cancelled, "cancelled".to_owned())];
    want.sort();
    assert_eq!(seen, want);
}
