//! A deadlock's victim, from a real MariaDB: what `shopctl shards move` (and anything else that
//! asks `shopgate_core::db::retry_after_deadlock`) runs again, how often, and what it does not.
//! Two transactions take two rows in opposite orders; InnoDB breaks the cycle by rolling one back
//! with error 1213, every time, whatever the timing of the second statement.

use std::time::Duration;

use shopgate_core::db::{is_deadlock, retry_after_deadlock, DEADLOCK_RETRIES};
use shopgate_e2e::mariadb::Topology;

#[tokio::test]
async fn a_deadlock_victim_is_run_again_a_bounded_number_of_times_and_nothing_else_is() {
    let topology = Topology::start_shards("").await;
    let pool = topology.admin("auth").await;
    let table = format!("deadlock_probe_{}", shopgate_e2e::rand_hex(4));
    sqlx::query(&format!("CREATE TABLE {table} (id INT PRIMARY KEY, n INT NOT NULL) ENGINE=InnoDB"))
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(&format!("INSERT INTO {table} VALUES (1, 0), (2, 0)")).execute(&pool).await.unwrap();

    let (mut first, mut second) = (pool.begin().await.unwrap(), pool.begin().await.unwrap());
    let update = |id: u32| format!("UPDATE {table} SET n = n + 1 WHERE id = {id}");
    sqlx::query(&update(1)).execute(&mut *first).await.unwrap();
    sqlx::query(&update(2)).execute(&mut *second).await.unwrap();
    // Each now asks for the row the other holds: a cycle, which InnoDB detects at once.
    let (to_second_row, to_first_row) = (update(2), update(1));
    let (a, b) = tokio::join!(sqlx::query(&to_second_row).execute(&mut *first), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sqlx::query(&to_first_row).execute(&mut *second).await
    });
    let victim = match (a, b) {
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => e,
        other => panic!("expected exactly one deadlock victim, got {other:?}"),
    };
    assert!(is_deadlock(&victim), "{victim}");
    assert_eq!(retry_after_deadlock(&victim, 0), Some(Duration::from_millis(50)));
    assert_eq!(retry_after_deadlock(&victim, DEADLOCK_RETRIES - 1), Some(Duration::from_millis(150)));
    assert_eq!(retry_after_deadlock(&victim, DEADLOCK_RETRIES), None, "retries are bounded");
    drop((first, second));

    // A failure that is not a deadlock is never run again: a duplicate key stands.
    let duplicate = sqlx::query(&format!("INSERT INTO {table} VALUES (1, 0)")).execute(&pool).await.unwrap_err();
    assert!(!is_deadlock(&duplicate), "{duplicate}");
    assert_eq!(retry_after_deadlock(&duplicate, 0), None);
}
