//! Issue 11, point 1, on SQLite shards: a shard added and half of a's and b's buckets moved to
//! it under load (`shopgate_e2e::grow::grow_under_load`); and the load's checks themselves, shown
//! to catch a lost order, a misplaced one, a lost cancel, a made-up one, a changed profile, and
//! an error an unmoved user saw.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shopgate_e2e::cli::exec;
use shopgate_e2e::load::{register_spread, Cancel, Load, LoadOptions};
use shopgate_e2e::Shop as _;
use shopgate_e2e::{Options, Stack};

/// nginx with its master (shards are added with a graceful reload); 40 registrations from one
/// address.
fn options() -> Options {
    Options { nginx_master: true, settings: vec![("verifier.register_max_per_address", "1000")], ..Options::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_added_and_half_the_buckets_moved_under_load() {
    let mut stack = Stack::start_with(options()).await;
    shopgate_e2e::grow::grow_under_load(&mut stack, Vec::new()).await;
}

/// The checks fail when they should: on a stack where nothing moves, shard b's backend killed
/// for a moment makes b's users see 503s, which users of a bucket that did not move must never
/// see; an acknowledged order deleted, or copied to the other shard, is found; so are an
/// acknowledged cancel undone, an order cancelled that the load never cancelled, and a profile
/// that no longer holds what was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_checks_catch_errors_and_lost_or_misplaced_orders() {
    let stack = Stack::start_with(options()).await;
    let users = register_spread(&stack, 8).await;
    let load = Load::start(&stack, &users, LoadOptions::default());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let record = load.stop().await;
    let map = stack.config.shard_map.clone();
    let none = BTreeMap::new();
    let orders = record.check_orders(&stack, &map).await.unwrap_or_else(|p| panic!("a quiet load: {p:#?}"));
    record.check_errors(&none, Duration::ZERO).unwrap_or_else(|p| panic!("a quiet load: {p:#?}"));
    assert!(orders.acknowledged >= users.len(), "{orders:?}: {}", record.tally());
    let writes = record.check_writes(&stack, &map).await.unwrap_or_else(|p| panic!("a quiet load: {p:#?}"));
    assert!(writes.cancels_acknowledged > 0 && writes.profiles_acknowledged > 0, "{writes:?}: {}", record.tally());
    eprintln!("quiet load: {}", record.tally());

    // Other users: the check wants every order of the load's users acknowledged by that load.
    let users = register_spread(&stack, 8).await;
    let load = Load::start(&stack, &users, LoadOptions::default());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.kill("backend-b");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack.restart("backend-b").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let record = load.stop().await;
    eprintln!("load with b killed: {}", record.tally());
    let problems = record.check_errors(&none, Duration::ZERO).unwrap_err();
    assert!(problems.iter().all(|p| p.contains("not moved")), "{problems:#?}");
    let users_of_b: BTreeSet<u64> = users.iter().map(|u| u.id).filter(|id| id % 2 == 1).collect();
    let complaining: BTreeSet<u64> = record.errors_by_user().into_keys().collect();
    assert!(!complaining.is_empty() && complaining.is_subset(&users_of_b), "{complaining:?} of b's {users_of_b:?}");
    record.check_orders(&stack, &map).await.unwrap_or_else(|p| panic!("retried under their keys: {p:#?}"));
    record.check_writes(&stack, &map).await.unwrap_or_else(|p| panic!("cancels retried: {p:#?}"));

    let a = stack.shard_db("a").await;
    let b = stack.shard_db("b").await;
    // Users of even buckets, on shard a: a cancel undone, one made up, a profile changed.
    let (acks, cancels) = (record.acknowledged(), record.cancels());
    let on_a = |want: Option<Cancel>| {
        acks.iter().find(|a| a.user % 2 == 0 && cancels.get(&a.order_id).copied() == want).unwrap().clone()
    };
    let (undone, made_up) = (on_a(Some(Cancel::Acknowledged)), on_a(None));
    let profiled = *record.profiles().keys().find(|u| *u % 2 == 0).unwrap();
    let set_status = |id: i64, status: &str| format!("UPDATE orders SET status = '{status}' WHERE id = {id}");
    let set_email = |email: &str| format!("UPDATE users SET email = '{email}' WHERE id = {profiled}");
    exec(&a, &set_status(undone.order_id, "placed")).await;
    exec(&a, &set_status(made_up.order_id, "cancelled")).await;
    exec(&a, &set_email("changed@example.com")).await;
    let problems = record.check_writes(&stack, &map).await.unwrap_err();
    assert_eq!(problems.len(), 3, "{problems:#?}");
    let undone_is =
        format!("order {} of user {} is placed on shard a, but its cancel was", undone.order_id, undone.user);
    let made_up_is =
        format!("order {} of user {} is cancelled on shard a, but no cancel", made_up.order_id, made_up.user);
    assert!(problems[0].starts_with(&undone_is), "{problems:#?}");
    assert!(problems[1].starts_with(&made_up_is), "{problems:#?}");
    assert!(problems[2].starts_with(&format!("user {profiled}'s profile on shard a is")), "{problems:#?}");
    exec(&a, &set_status(undone.order_id, "cancelled")).await;
    exec(&a, &set_status(made_up.order_id, "placed")).await;
    let email = record.profiles()[&profiled].email.clone();
    exec(&a, &set_email(&email)).await;
    record.check_writes(&stack, &map).await.unwrap_or_else(|p| panic!("restored: {p:#?}"));

    let ack = record.acknowledged().into_iter().find(|a| a.user % 2 == 0).unwrap();
    let copy = "INSERT INTO orders (id, user_id, status, total_cents, created_at, updated_at) VALUES";
    exec(&b, &format!("{copy} ({}, {}, 'placed', 100, 0, 0)", ack.order_id, ack.user)).await;
    let copied = format!("acknowledged order {} is on several shards", ack.order_id);
    let problems = record.check_orders(&stack, &map).await.unwrap_err();
    assert!(problems.iter().any(|p| p.starts_with(&copied)), "{problems:#?}");
    exec(&b, &format!("DELETE FROM orders WHERE id = {}", ack.order_id)).await;
    exec(&a, &format!("DELETE FROM order_items WHERE order_id = {}", ack.order_id)).await;
    exec(&a, &format!("DELETE FROM orders WHERE id = {}", ack.order_id)).await;
    let lost = format!("acknowledged order {} of user {} is on no shard", ack.order_id, ack.user);
    let problems = record.check_orders(&stack, &map).await.unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].starts_with(&lost), "{problems:#?}");
}
