//! Issue 28 on the SQLite default: points 2 and 3.
//!
//! A backup taken while a bucket move is unfinished is refused (some buckets' rows are on two
//! shards until the move is done); once the move is finished, a backup and a restore of it (the
//! services stopped, `--force` over their files) bring back every order placed before the backup,
//! nothing placed after it, every moved bucket on one shard only, and the map the move left.

use shopgate_core::control;
use shopgate_e2e::cli::{exec, pool};
use shopgate_e2e::Shop as _;

use crate::moves::{every_order_is_served_once, interrupted_at, place, run_move, world};

#[tokio::test]
async fn a_backup_waits_for_a_move_and_restores_every_bucket_on_one_shard() {
    let (stack, shoppers, moved, _) = interrupted_at("copied").await;
    let refused = stack.ctl(&["backup"]);
    let line = refused.one_line_error(1);
    assert!(line.contains("is unfinished, at step copied"), "{refused}");
    assert_eq!(stack.ctl(&["--json", "backup", "list"]).ok().json()["items"].as_array().unwrap().len(), 0);

    let finished = run_move(&stack, &moved, None);
    assert!(finished.status.success(), "{}", String::from_utf8_lossy(&finished.stderr));
    let auth = pool(&stack.config.verifier.database_url).await;
    let version = control::current_version(&auth).await.unwrap().unwrap();
    auth.close().await;
    let taken = stack.ctl(&["--json", "backup"]).ok().json();
    assert_eq!(taken["map_version"], version, "{taken}");
    assert_eq!(taken["instances"].as_array().unwrap().len(), 3, "{taken}");

    // After the backup: an order, and a bad DELETE on shard b (which now has the moved buckets).
    assert_eq!(place(&stack, &shoppers[0]).await.status(), 201);
    let b = pool(&stack.config.shards[1].primary).await;
    exec(&b, "DELETE FROM order_items").await;
    exec(&b, "DELETE FROM orders").await;
    b.close().await;

    // Without --force, into a new folder: the stack's files are left alone.
    let aside = stack.ctl(&["--json", "restore"]).ok().json();
    for row in aside["items"].as_array().unwrap() {
        assert!(row["where"].as_str().unwrap().contains("restored-"), "{row}");
    }
    // SQLite keeps no binlog: no point in time.
    let no_pitr = stack.ctl(&["restore", "--to-time", "2030-01-01T00:00:00Z"]);
    assert!(no_pitr.one_line_error(2).contains("keeps no binlog"), "{no_pitr}");

    let mut services: Vec<String> =
        stack.processes().into_iter().filter(|p| p.starts_with("verifier") || p.starts_with("backend")).collect();
    services.sort();
    for s in &services {
        stack.terminate(s).await;
    }
    let restored = stack.ctl(&["restore", "--force"]).ok();
    assert!(restored.stderr.contains("everything written to it after that point is lost"), "{restored}");
    for s in &services {
        stack.restart(s).await;
    }

    every_order_is_served_once(&stack, &shoppers, &[]).await;
    let after = world(&stack, &moved).await;
    assert_eq!(after.owners, vec!["b".to_owned(); moved.len()]);
    assert!(after.rows_a.iter().all(|t| t.rows == 0), "moved buckets' rows on a: {:?}", after.rows_a);
    assert!(after.rows_b.iter().any(|t| t.rows > 0), "moved buckets' rows nowhere: {:?}", after.rows_b);
    let check = stack.ctl(&["shards", "check"]);
    assert_eq!(check.code, 0, "{check}");
}
