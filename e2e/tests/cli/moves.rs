//! Issue 11, point 2: `shopctl shards move` killed at each of its steps, then run again, ends as an
//! uninterrupted move would; `--abort` at each step leaves the original map and every row where
//! it was. On the two-shard SQLite stack, moving two of shard a's buckets to shard b, with real
//! processes: the move is killed (SIGABRT, no cleanup of its own) right after recording a step.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed run

use reqwest::StatusCode;
use serde_json::{json, Value};
use shopgate_core::control::MoveStep;
use shopgate_core::shardmap::bucket;
use shopgate_core::{ShardMap, UserId};
use shopgate_e2e::cli::pool;
use shopgate_e2e::grow::step_events;
use shopgate_e2e::Shop as _;
use shopgate_e2e::{Options, Stack};
use shopgate_store::{buckets, fence};

/// A shop user with a token and the orders they were told were placed.
pub(crate) struct Shopper {
    pub(crate) id: u64,
    token: String,
    pub(crate) orders: Vec<i64>,
}

/// Everything a move changes, for the moved buckets: who owns them, each shard's rows of them
/// (count and checksum per table) and which shard's fence takes their writes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct World {
    pub(crate) owners: Vec<String>,
    pub(crate) rows_a: Vec<buckets::TableSum>,
    pub(crate) rows_b: Vec<buckets::TableSum>,
    pub(crate) open_a: Vec<u16>,
    pub(crate) open_b: Vec<u16>,
}

async fn current_map(stack: &Stack) -> ShardMap {
    let auth = pool(&stack.config.verifier.database_url).await;
    shopgate_core::control::current(&auth).await.unwrap().expect("a stored map")
}

pub(crate) async fn world(stack: &Stack, moved: &[u16]) -> World {
    let map = current_map(stack).await;
    let (a, b) = (pool(&stack.config.shards[0].primary).await, pool(&stack.config.shards[1].primary).await);
    let open = |all: Vec<u16>| all.into_iter().filter(|x| moved.contains(x)).collect::<Vec<_>>();
    World {
        owners: moved.iter().map(|&x| map.owner_of_bucket(x).unwrap().to_string()).collect(),
        rows_a: buckets::checksums(&a, moved).await.unwrap(),
        rows_b: buckets::checksums(&b, moved).await.unwrap(),
        open_a: open(fence::open_buckets(&a).await.unwrap()),
        open_b: open(fence::open_buckets(&b).await.unwrap()),
    }
}

/// Places an order with an `Idempotency-Key`, sent again (same key) if the connection drops before
/// an answer: a keep-alive connection nginx closes as it reloads can take a request with it, and
/// the key is what makes a retry safe (README, "Growing the shop").
pub(crate) async fn place(stack: &Stack, s: &Shopper) -> reqwest::Response {
    let key = shopgate_e2e::rand_hex(12);
    let send = || {
        stack
            .http
            .post(stack.api("/api/orders"))
            .bearer_auth(&s.token)
            .header("Idempotency-Key", &key)
            .json(&json!({"items": [{"product_id": 1, "quantity": 2}]}))
            .send()
    };
    match send().await {
        Ok(r) => r,
        Err(_) => send().await.unwrap(),
    }
}

pub(crate) async fn order_ids(stack: &Stack, s: &Shopper) -> (StatusCode, Vec<i64>) {
    let get = || stack.http.get(stack.api("/api/orders?limit=100")).bearer_auth(&s.token).send();
    let r = match get().await {
        Ok(r) => r,
        Err(_) => get().await.unwrap(),
    };
    let status = r.status();
    let body: Value = r.json().await.unwrap_or_default();
    let mut ids: Vec<i64> =
        body["orders"].as_array().map_or(Vec::new(), |o| o.iter().filter_map(|o| o["id"].as_i64()).collect());
    ids.sort_unstable();
    (status, ids)
}

/// A stack (nginx with its master, so it can reload) and shoppers: two in distinct buckets of
/// shard a (the ones to move), one elsewhere on a, one on b; each with two orders.
pub(crate) async fn setup() -> (Stack, Vec<Shopper>, Vec<u16>) {
    let stack = Stack::start_with(Options { nginx_master: true, ..Options::default() }).await;
    let map = current_map(&stack).await;
    let a = &stack.config.shards[0].name;
    let (mut movers, mut others): (Vec<Shopper>, Vec<Shopper>) = (Vec::new(), Vec::new());
    while movers.len() < 2 || others.len() < 2 {
        let (id, token) = stack.shopper().await;
        let b = bucket(UserId::new(id).unwrap());
        let mine = map.owner_of_bucket(b) == Some(a);
        let s = Shopper { id, token, orders: Vec::new() };
        if mine && movers.len() < 2 && movers.iter().all(|m| bucket(UserId::new(m.id).unwrap()) != b) {
            movers.push(s);
        } else if others.len() < 2 && (others.is_empty() == mine) {
            others.push(s);
        }
    }
    let mut all: Vec<Shopper> = movers.into_iter().chain(others).collect();
    for s in &mut all {
        for _ in 0..2 {
            let r = place(&stack, s).await;
            assert_eq!(r.status(), 201);
            s.orders.push(r.json::<Value>().await.unwrap()["id"].as_i64().unwrap());
        }
        s.orders.sort_unstable();
    }
    let moved = all[..2].iter().map(|s| bucket(UserId::new(s.id).unwrap())).collect::<Vec<_>>();
    (stack, all, moved)
}

pub(crate) fn spec(moved: &[u16]) -> String {
    moved.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

/// `shopctl shards move --to b BUCKETS`, killed right after `step` if given.
pub(crate) fn run_move(stack: &Stack, moved: &[u16], die_after: Option<&str>) -> std::process::Output {
    stack.shards_move("b", &spec(moved), die_after)
}

fn steps_of(out: &std::process::Output) -> Vec<String> {
    step_events(&out.stdout).iter().map(|e| e["step"].as_str().unwrap_or_default().to_owned()).collect()
}

/// What the moved users see at a kill point: what the issue allows, nothing else. Returns the id
/// of an order the write made, if it was accepted.
pub(crate) async fn users_see(stack: &Stack, shoppers: &[Shopper], step: &str) -> Option<i64> {
    let (mover, other) = (&shoppers[0], &shoppers[2]);
    // Before the pause a's, after the routing b's: served. Paused: reads only. Switching: 503.
    // `None`: either (right after `switched`, the source may not have taken the map yet; it
    // still holds every row and nobody writes, so its read is the right one). Every step says
    // what it promises: a step added without its line here does not compile.
    let step = MoveStep::parse(step).unwrap_or_else(|| panic!("no step {step:?}"));
    let (writes, reads) = match step {
        MoveStep::Planned | MoveStep::Copied | MoveStep::CaughtUp | MoveStep::Routed | MoveStep::Done => {
            (true, Some(true))
        }
        MoveStep::Paused | MoveStep::Verified => (false, Some(true)),
        MoveStep::Switched => (false, None),
        MoveStep::Opened => (false, Some(false)),
        MoveStep::Aborted => panic!("users_see is for the steps of a move under way"),
    };
    let r = place(stack, mover).await;
    let status = r.status();
    let made = if writes {
        assert_eq!(status, 201, "a write of a moving bucket after step {step}");
        r.json::<Value>().await.unwrap()["id"].as_i64()
    } else {
        assert_eq!(status, 503, "a write of a moving bucket after step {step}");
        assert!(r.headers().contains_key("retry-after"), "503 without Retry-After after {step}");
        None
    };
    let (status, _) = order_ids(stack, mover).await;
    match reads {
        Some(true) => assert_eq!(status, 200, "a read of a moving bucket after step {step}"),
        Some(false) => assert_eq!(status, 503, "a read of a moving bucket after step {step}"),
        None => assert!(status == 200 || status == 503, "a read of a moving bucket after {step} got {status}"),
    }
    assert_eq!(place(stack, other).await.status(), 201, "a user of an unmoved bucket was disturbed at {step}");
    made
}

/// Every order each shopper was told about (plus `extra`), read back through nginx, exactly.
pub(crate) async fn every_order_is_served_once(stack: &Stack, shoppers: &[Shopper], extra: &[(usize, i64)]) {
    for (i, s) in shoppers.iter().enumerate() {
        let mut want = s.orders.clone();
        want.extend(extra.iter().filter(|(j, _)| *j == i).map(|(_, id)| *id));
        want.sort_unstable();
        let (status, got) = order_ids(stack, s).await;
        assert_eq!((status.as_u16(), got), (200, want), "user {} orders", s.id);
    }
}

/// A stack whose move of two of a's buckets to b was killed right after `step`, what the users
/// saw checked; the shoppers (with every order they were told about), the moved buckets and the
/// buckets' rows as they are complete right now (on a until the routing, then on b).
pub(crate) async fn interrupted_at(step: &str) -> (Stack, Vec<Shopper>, Vec<u16>, Vec<buckets::TableSum>) {
    let (stack, mut shoppers, moved) = setup().await;
    let killed = run_move(&stack, &moved, Some(step));
    assert!(!killed.status.success(), "the move was to die after {step}");
    assert_eq!(steps_of(&killed).last().map(String::as_str), Some(step), "{killed:?}");
    if let Some(id) = users_see(&stack, &shoppers, step).await {
        shoppers[0].orders.push(id);
    }
    for s in &mut shoppers[2..] {
        // users_see placed one order for the unmoved shopper 2.
        let (_, ids) = order_ids(&stack, s).await;
        s.orders = ids;
    }
    let mid = world(&stack, &moved).await;
    let rows = if step == "routed" { mid.rows_b } else { mid.rows_a };
    (stack, shoppers, moved, rows)
}

async fn kill_then_rerun(step: &str) {
    let (stack, shoppers, moved, expected) = interrupted_at(step).await;
    let rerun = run_move(&stack, &moved, None);
    assert!(rerun.status.success(), "rerun after {step}: {}", String::from_utf8_lossy(&rerun.stderr));
    let after = world(&stack, &moved).await;
    // As an uninterrupted move leaves it: b owns them and has exactly their rows, a has none,
    // only b's fence is open for them.
    assert_eq!(after.owners, vec!["b".to_owned(); moved.len()], "after a kill at {step}");
    assert!(after.rows_a.iter().all(|t| t.rows == 0), "rows left on a after a kill at {step}: {:?}", after.rows_a);
    assert_eq!((after.open_a.clone(), after.open_b.clone()), (vec![], moved.clone()), "fences after {step}");
    assert_eq!(after.rows_b, expected, "b's rows after a kill at {step}");
    every_order_is_served_once(&stack, &shoppers, &[]).await;
    // And the moved users write again, on b.
    assert_eq!(place(&stack, &shoppers[0]).await.status(), 201, "a moved user cannot order after a resume from {step}");
    let check = stack.ctl(&["shards", "check"]);
    assert_eq!(check.code, 0, "{check}");
}

async fn abort_at(step: &str) {
    let (stack, shoppers, moved, expected) = interrupted_at(step).await;
    let abort = stack.ctl(&["--json", "shards", "move", "--abort", "--wait-seconds", "20"]);
    assert_eq!(abort.code, 0, "abort at {step}: {abort}");
    let after = world(&stack, &moved).await;
    assert_eq!(after.owners, vec!["a".to_owned(); moved.len()], "abort at {step} left the map changed");
    assert_eq!(after.rows_a, expected, "a's rows after an abort at {step}");
    assert!(after.rows_b.iter().all(|t| t.rows == 0), "copies left on b after an abort at {step}: {:?}", after.rows_b);
    assert_eq!(
        (after.open_a.clone(), after.open_b.clone()),
        (moved.clone(), vec![]),
        "fences after an abort at {step}"
    );
    every_order_is_served_once(&stack, &shoppers, &[]).await;
    assert_eq!(place(&stack, &shoppers[0]).await.status(), 201, "a moved user cannot order after an abort at {step}");
    let check = stack.ctl(&["shards", "check"]);
    assert_eq!(check.code, 0, "{check}");
}

macro_rules! per_step {
    ($($kill:ident, $abort:ident => $step:literal;)*) => {$(
        #[tokio::test]
        async fn $kill() {
            kill_then_rerun($step).await;
        }
        #[tokio::test]
        async fn $abort() {
            abort_at($step).await;
        }
    )*};
}

per_step! {
    killed_after_planned_then_rerun, aborted_after_planned => "planned";
    killed_after_copied_then_rerun, aborted_after_copied => "copied";
    killed_after_caught_up_then_rerun, aborted_after_caught_up => "caught_up";
    killed_after_paused_then_rerun, aborted_after_paused => "paused";
    killed_after_verified_then_rerun, aborted_after_verified => "verified";
    killed_after_switched_then_rerun, aborted_after_switched => "switched";
    killed_after_opened_then_rerun, aborted_after_opened => "opened";
    killed_after_routed_then_rerun, aborted_after_routed => "routed";
}

#[tokio::test]
async fn an_uninterrupted_move_reports_its_pause_and_moves_every_row() {
    let (stack, shoppers, moved) = setup().await;
    let before = world(&stack, &moved).await;
    let out = run_move(&stack, &moved, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        steps_of(&out),
        ["planned", "copied", "caught_up", "paused", "verified", "switched", "opened", "routed", "done"]
    );
    let summary: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "summary")
        .expect("a summary event");
    assert_eq!(summary["buckets_moved"], moved.len());
    assert!(summary["rows"].as_i64().unwrap() >= 4 * 2, "{summary}");
    assert!(summary["pause_ms_max"].as_i64().is_some_and(|p| p >= 0), "{summary}");
    let after = world(&stack, &moved).await;
    assert_eq!(after.rows_b, before.rows_a);
    every_order_is_served_once(&stack, &shoppers, &[]).await;
    // Every part routes with the final version.
    let version = current_map(&stack).await.version();
    let health: Value = stack.http.get(format!("{}/healthz", stack.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["map_version"], version, "nginx");
    // shards status: the version in force, and every part routing with it; b's buckets include them.
    let status = stack.ctl(&["--json", "shards", "status"]).ok().json();
    assert_eq!((&status["map_version"], &status["nginx_map_version"]), (&json!(version), &json!(version)), "{status}");
    for shard in status["items"].as_array().unwrap() {
        assert_eq!(shard["backend_map_version"], version, "{shard}");
    }
    let b_buckets = shopgate_core::shardmap::parse_buckets(status["items"][1]["buckets"].as_str().unwrap()).unwrap();
    assert!(moved.iter().all(|m| b_buckets.contains(m)), "{status}");
    // Run again: nothing left to move.
    let again = run_move(&stack, &moved, None);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("nothing to move"));
}

/// Buckets of many chunks (issue 24): two of shard a's buckets loaded with generated shoppers
/// (600 users, 6,000 orders, 15,000 items and 6,000 keys each: several chunks of every table but
/// users),
/// and a third bucket of a, which stays; the move takes the two whole to b and leaves nothing
/// behind, and `shards check` finds every row where the map says.
#[tokio::test]
async fn buckets_of_many_chunks_move_whole() {
    let stack = Stack::start_with(Options { nginx_master: true, ..Options::default() }).await;
    let a = pool(&stack.config.shards[0].primary).await;
    let moved = [10u16, 12];
    let loaded = shopgate_e2e::shard_data::load(&a, false, &[10, 12, 14], 0, 0, 1800, 1).await.unwrap();
    assert_eq!(loaded.orders, 18_000);
    let before = world(&stack, &moved).await;
    let stays = buckets::checksums(&a, &[14]).await.unwrap();
    assert!(before.rows_a.iter().skip(1).all(|t| t.rows as usize > 2 * buckets::CHUNK_ROWS), "{:?}", before.rows_a);
    let out = run_move(&stack, &moved, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = world(&stack, &moved).await;
    assert_eq!(after.rows_b, before.rows_a);
    assert!(after.rows_a.iter().all(|t| t.rows == 0), "{:?}", after.rows_a);
    assert_eq!(buckets::checksums(&a, &[14]).await.unwrap(), stays);
    let check = stack.ctl(&["--json", "shards", "check"]).ok().json();
    assert_eq!(check["misplaced_total"], 0, "{check}");
}

/// Issue 31 point 2: a move killed while its buckets' writes are paused is shown by `shards status`
/// (which batch, which step, whom it holds up, the commands) and by `doctor` (exit 1, naming the
/// resume command, not a reload of nginx); a bare `shards move` resumes and finishes it.
#[tokio::test]
async fn an_interrupted_move_is_shown_and_a_bare_move_resumes_it() {
    let (stack, shoppers, moved, _) = interrupted_at("paused").await;
    let status = stack.ctl(&["--json", "shards", "status"]).ok().json();
    let unfinished = &status["unfinished_moves"];
    let batch = &unfinished["batches"][0];
    assert_eq!((batch["step"].as_str(), batch["held_up"].as_str()), (Some("paused"), Some("writes")), "{status}");
    assert_eq!((batch["source"].as_str(), batch["target"].as_str()), (Some("a"), Some("b")), "{status}");
    assert_eq!(batch["buckets"].as_str(), Some(spec(&moved).as_str()), "{status}");
    assert!(batch["since_unix"].as_i64().is_some(), "{status}");
    assert_eq!(unfinished["resume"], "shopctl shards move", "{status}");
    // For people (and piped): the same, with the commands.
    let tsv = stack.ctl(&["--format", "tsv", "shards", "status"]).ok();
    assert!(tsv.stderr.contains("stopped after step `paused`"), "{tsv}");
    assert!(tsv.stderr.contains("resume it with `shopctl shards move`"), "{tsv}");
    // One scalar per cell: bucket counts and specs, never a list.
    assert!(!tsv.stdout.contains('[') && !tsv.stdout.contains('{'), "{tsv}");

    let doctor = stack.ctl(&["--json", "doctor"]);
    assert_eq!(doctor.code, 1, "{doctor}");
    let checks = doctor.json();
    let failed: Vec<&Value> = checks["items"].as_array().unwrap().iter().filter(|c| c["ok"] != true).collect();
    let moves = failed.iter().find(|c| c["part"] == "moves").unwrap_or_else(|| panic!("no moves check:\n{doctor}"));
    assert!(moves["fix"].as_str().unwrap().contains("`shopctl shards move`"), "{doctor}");
    assert!(
        failed.iter().all(|c| !c["fix"].as_str().unwrap_or_default().contains("nginx -s reload")),
        "doctor advises a reload for an unfinished move:\n{doctor}"
    );

    // A dry run says what resuming, or rolling back, would work on, and changes nothing.
    for (args, action) in [
        (vec!["--json", "shards", "move", "--dry-run"], "resume"),
        (vec!["--json", "shards", "move", "--abort", "--dry-run"], "roll back"),
    ] {
        let plan = stack.ctl(&args).ok().json();
        assert_eq!(plan["items"][0]["action"], action, "{plan}");
        assert_eq!(plan["items"][0]["buckets"].as_str(), Some(spec(&moved).as_str()), "{plan}");
    }
    let still = stack.ctl(&["--json", "shards", "status"]).ok().json();
    assert_eq!(still["unfinished_moves"]["batches"][0]["step"], "paused", "a dry run changed the move: {still}");

    let resumed = stack.ctl(&["shards", "move"]);
    assert_eq!(resumed.code, 0, "a bare shards move did not resume:\n{resumed}");
    let after = world(&stack, &moved).await;
    assert_eq!(after.owners, vec!["b".to_owned(); moved.len()], "after the bare resume");
    every_order_is_served_once(&stack, &shoppers, &[]).await;
    let status = stack.ctl(&["--json", "shards", "status"]).ok().json();
    assert_eq!(status["unfinished_moves"], Value::Null, "{status}");
    // With nothing to resume, a bare move says what it needs; a dry run of a new move, its plan.
    let nothing = stack.ctl(&["shards", "move"]);
    assert!(nothing.one_line_error(2).contains("nothing to resume"), "{nothing}");
    let plan = stack.ctl(&["--json", "shards", "move", "--dry-run", "--to", "a", &spec(&moved)]).ok().json();
    let batch = &plan["items"][0];
    assert_eq!(
        (batch["action"].as_str(), batch["source"].as_str(), batch["target"].as_str()),
        (Some("move"), Some("b"), Some("a")),
        "{plan}"
    );
    let status = stack.ctl(&["--json", "shards", "status"]).ok().json();
    assert_eq!(status["unfinished_moves"], Value::Null, "a dry run recorded a move: {status}");
}
