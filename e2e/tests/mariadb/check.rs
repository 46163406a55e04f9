//! Issue 24, point 4: `shopctl shards check` names a database too slow for a statement as slow,
//! not as a pool that timed out. The primary of shard a is held by `LOCK TABLES orders WRITE` in
//! another session: the check's read of `orders` waits past its bound.

use shopgate_e2e::Shop as _;
use shopgate_e2e::Stack;

#[tokio::test]
async fn a_primary_too_slow_to_answer_is_named_slow() {
    let (topology, stack) = super::stack_on_mariadb(5).await;
    let (_, token) = stack.shopper().await;
    stack.order(&token).await;
    assert_eq!(check(&stack).code, 0, "clean before the lock");

    let admin = topology.admin("a-primary").await;
    let mut held = admin.acquire().await.unwrap();
    sqlx::query("LOCK TABLES orders WRITE").execute(&mut *held).await.unwrap();
    let run = check(&stack);
    assert_eq!(run.code, 1, "{run}");
    let errors = run.stderr.clone() + &run.stdout;
    assert!(errors.contains("shard a table orders"), "{run}");
    assert!(errors.contains("did not answer within 3 s: it is slow, busy or stuck"), "{run}");
    assert!(!errors.contains("pool timed out"), "{run}");
    sqlx::query("UNLOCK TABLES").execute(&mut *held).await.unwrap();
    drop(held);
    assert_eq!(check(&stack).code, 0, "clean once the lock is gone");
}

fn check(stack: &Stack) -> shopgate_e2e::cli::Run {
    stack.ctl(&["--json", "shards", "check"])
}
