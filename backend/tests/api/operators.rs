//! The store functions shopctl's operator commands call (`shards status|check`, `users`): they
//! read and write this shard's tables, so their SQL lives here with the schema.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use shopgate_core::UserId;
use shopgate_store::per_user::PER_USER_TABLES;
use shopgate_store::shard::{foreign_rows, totals, ForeignRow};
use shopgate_store::{orders, users};

use crate::helpers::{spawn_app, ANN, ODD};

#[tokio::test]
async fn totals_foreign_rows_and_a_profile_switched_off() {
    let app = spawn_app().await;
    let db = app.state.db.db_write();
    let (ann, odd) = (UserId::new(ANN).unwrap(), UserId::new(ODD).unwrap());
    assert_eq!(app.create_order(ANN, json!([{"product_id": 1, "quantity": 1}]), None).await.status(), 201);
    // A profile and an order of shard b's user, planted on shard a.
    users::create_if_missing(db, odd, "odd@example.com", 1).await.unwrap();
    sqlx::query("INSERT INTO orders (id, user_id, status, total_cents, created_at, updated_at) VALUES (7, ?, 'placed', 1, 1, 1)")
        .bind(odd.as_i64())
        .execute(db)
        .await
        .unwrap();

    let t = totals(db).await.unwrap();
    assert_eq!((t.users, t.orders), (2, 2));
    assert!(t.last_write.is_some_and(|at| at > 1), "{t:?}");
    assert_eq!(orders::count_for_user(db, ann).await.unwrap(), 1);

    let even: Vec<u16> = (0..1000).filter(|b| b % 2 == 0).collect();
    let found: Vec<_> = {
        let mut all = Vec::new();
        for table in PER_USER_TABLES.iter().filter(|t| t.user_column.is_some()) {
            let chunk = foreign_rows(db, table, &even, None, 10).await.unwrap();
            assert_eq!(chunk.next, None, "a small table is one chunk");
            all.push((table.name, (chunk.count, chunk.rows)));
        }
        all
    };
    let planted = |id: &str| (1, vec![ForeignRow { id: id.into(), user_id: ODD as i64 }]);
    assert_eq!(found, [("users", planted("43")), ("orders", planted("7")), ("idempotency_keys", (0, vec![]))]);
    // A shard that owns no bucket: every row is foreign.
    let all_users = foreign_rows(db, &PER_USER_TABLES[0], &[], None, 1).await.unwrap().count;
    assert_eq!(all_users, 2);

    users::set_active(db, ann, false).await.unwrap();
    assert!(!users::find(db, ann).await.unwrap().unwrap().is_active);
}
