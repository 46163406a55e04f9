//! The per-user tables' registry (`store::per_user`) against the schema the migrations make, on
//! SQLite and on MySQL/MariaDB; the bucket queries through the bucket index (EXPLAIN); and the
//! chunked copy, checksums and delete of a bucket larger than a chunk.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use shopgate_backend::db::Dialect;
use shopgate_store::buckets::{self, Pace, Value, CHUNK_ROWS};
use shopgate_store::per_user::{fill_buckets, unfilled, Kind, PER_USER_TABLES};
use sqlx::AnyPool;
use sqlx::Row as _;

use crate::helpers::{spawn_app, spawn_app_with};
use crate::mysql::spawn_on_mysql_with;

/// Tables that are the shard's, not any user's: the catalog, the write fences, the heartbeat and
/// sqlx's own. Every other table must be in the registry.
const NOT_PER_USER: &[&str] = &["categories", "products", "bucket_fence", "replication_heartbeat", "_sqlx_migrations"];

async fn tables(db: &AnyPool, dialect: Dialect) -> BTreeSet<String> {
    let sql = match dialect {
        Dialect::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        Dialect::MySql => {
            "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = DATABASE()"
        }
    };
    sqlx::query_scalar::<_, String>(sql).fetch_all(db).await.unwrap().into_iter().collect()
}

/// The table's columns in the schema's order (the order of a binlog row image's `@1`, `@2`, …).
async fn columns(db: &AnyPool, dialect: Dialect, table: &str) -> Vec<String> {
    let sql = match dialect {
        Dialect::Sqlite => "SELECT name FROM pragma_table_info(?) ORDER BY cid",
        Dialect::MySql => {
            "SELECT CAST(column_name AS CHAR) FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? ORDER BY ordinal_position"
        }
    };
    sqlx::query_scalar::<_, String>(sql).bind(table).fetch_all(db).await.unwrap()
}

/// Every table of the migrated schema is either in the registry, with exactly the columns it
/// has, or one of the shard's own tables: a column or a table added by a migration and not
/// declared fails here.
async fn registry_matches_schema(db: &AnyPool, dialect: Dialect) {
    let mut problems = Vec::new();
    for table in tables(db, dialect).await {
        let Some(declared) = PER_USER_TABLES.iter().find(|t| t.name == table) else {
            if !NOT_PER_USER.contains(&table.as_str()) {
                problems.push(format!(
                    "table {table} is neither in store::per_user::PER_USER_TABLES nor one of the shard's own tables"
                ));
            }
            continue;
        };
        let have_in_order = columns(db, dialect, &table).await;
        let want_in_order: Vec<String> = declared.columns.iter().map(|(c, _)| (*c).to_owned()).collect();
        let have: BTreeSet<&String> = have_in_order.iter().collect();
        let want: BTreeSet<&String> = want_in_order.iter().collect();
        if have != want {
            problems.push(format!(
                "{table} ({dialect:?}): the schema has columns {:?} the registry lacks, the registry {:?} the schema lacks",
                have.difference(&want).collect::<Vec<_>>(),
                want.difference(&have).collect::<Vec<_>>()
            ));
        } else if have_in_order != want_in_order {
            // Row images in the binlog name columns by position.
            problems.push(format!(
                "{table} ({dialect:?}): the registry lists {want_in_order:?}, the schema's order is {have_in_order:?}"
            ));
        }
    }
    for t in PER_USER_TABLES {
        if !tables(db, dialect).await.contains(t.name) {
            problems.push(format!("the registry's {} is not in the schema", t.name));
        }
    }
    assert!(problems.is_empty(), "store::per_user does not match the migrations:\n{}", problems.join("\n"));
}

#[tokio::test]
async fn the_registry_matches_the_migrated_schema_on_sqlite() {
    let app = spawn_app().await;
    registry_matches_schema(app.state.db_write(), app.state.db.dialect()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_matches_the_migrated_schema_on_mysql() {
    let Some(app) = spawn_on_mysql_with(false, &[]).await else { return };
    registry_matches_schema(app.state.db_write(), app.state.db.dialect()).await;
}

async fn exec(db: &AnyPool, sql: &str) {
    sqlx::query(sql).execute(db).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// `users` users of bucket `bucket` (ids bucket + 1000 k), each with `orders` orders of two items
/// and a key; with the bucket column, or without it (`NULL`: a row from before migration 0006).
async fn seed(db: &AnyPool, bucket: u64, users: u64, orders: u64, with_bucket: bool) {
    let b = if with_bucket { bucket.to_string() } else { "NULL".into() };
    for u in 0..users {
        let user = 1_000_000 + u * 1000 + bucket;
        exec(db, &format!("INSERT INTO users (id, email, is_active, created_at, bucket) VALUES ({user}, 'u{user}@example.com', 1, 1, {b})")).await;
        for chunk in (0..orders).collect::<Vec<_>>().chunks(500) {
            let (mut o, mut i, mut k) = (Vec::new(), Vec::new(), Vec::new());
            for n in chunk {
                let id = user * 100_000 + n;
                o.push(format!("({id}, {user}, 'placed', 300, 1, 1, {b})"));
                i.push(format!("({id}, 1, 1, 100, 100, {b}), ({id}, 2, 1, 200, 200, {b})"));
                k.push(format!("({user}, 'key-{n}', 'h', {id}, 1, {b})"));
            }
            exec(
                db,
                &format!(
                    "INSERT INTO orders (id, user_id, status, total_cents, created_at, updated_at, bucket) VALUES {}",
                    o.join(",")
                ),
            )
            .await;
            exec(db, &format!("INSERT INTO order_items (order_id, product_id, quantity, unit_price_cents, line_total_cents, bucket) VALUES {}", i.join(","))).await;
            exec(db, &format!("INSERT INTO idempotency_keys (user_id, idem_key, request_hash, order_id, created_at, bucket) VALUES {}", k.join(","))).await;
        }
    }
}

/// Copies bucket 42 (more rows than a chunk in every table) between two shards, changes both
/// sides, copies again: the target ends with the source's rows exactly (the stale ones on either
/// side of chunk boundaries gone), and a delete takes them all, a chunk at a time.
#[tokio::test]
async fn a_bucket_larger_than_a_chunk_is_copied_compared_and_deleted() {
    let (a, b) = (spawn_app().await, spawn_app_with("b", &[]).await);
    let (source, target, dialect) = (a.state.db_write(), b.state.db_write(), a.state.db.dialect());
    let per_user = CHUNK_ROWS as u64 * 3 / 4;
    seed(source, 42, 3, per_user, true).await;
    // Another bucket on both sides, which nothing may touch.
    seed(source, 44, 1, 10, true).await;
    seed(target, 44, 1, 10, true).await;
    let before_44 = buckets::checksums(target, &[44]).await.unwrap();

    let first = buckets::copy(source, target, dialect, &[42], &mut Pace::flat_out()).await.unwrap();
    assert_eq!(first.rows, 3 + 3 * per_user * 4, "{first:?}");
    assert_eq!((first.written, first.deleted), (first.rows, 0));
    assert_eq!(first.source, buckets::checksums(target, &[42]).await.unwrap());

    // The source moves on; the target gains rows the source never had, around chunk boundaries.
    exec(source, "UPDATE orders SET status = 'cancelled' WHERE id = 1000042 * 100000 + 7").await;
    exec(source, "DELETE FROM idempotency_keys WHERE user_id = 1001042 AND idem_key = 'key-1'").await;
    // Keys that sort between the source's, in the first, second and last chunk of the walk.
    let stale = [
        "(1000042, 'key-0a', 'h', 1, 1, 42)",
        "(1001042, 'key-5a', 'h', 1, 1, 42)",
        "(1002042, 'key-9a', 'h', 1, 1, 42)",
    ];
    exec(
        target,
        &format!(
            "INSERT INTO idempotency_keys (user_id, idem_key, request_hash, order_id, created_at, bucket) VALUES {}",
            stale.join(",")
        ),
    )
    .await;
    let again = buckets::copy(source, target, dialect, &[42], &mut Pace::flat_out()).await.unwrap();
    assert_eq!((again.written, again.deleted), (1, 4), "{again:?}");
    assert_eq!(again.source, buckets::checksums(target, &[42]).await.unwrap());
    assert_ne!(again.source, first.source);
    assert_eq!(buckets::checksums(target, &[44]).await.unwrap(), before_44, "bucket 44 was touched");

    let deleted = buckets::delete(source, dialect, &[42], &mut Pace::flat_out()).await.unwrap();
    assert_eq!(deleted, again.rows);
    assert!(buckets::checksums(source, &[42]).await.unwrap().iter().all(|s| s.rows == 0));
    assert_eq!(buckets::checksums(source, &[44]).await.unwrap(), before_44);
}

/// Rows from before migration 0006 get their bucket filled, a bounded number per statement; the
/// backends write it on every insert of their own.
#[tokio::test]
async fn rows_written_before_the_bucket_column_get_it_filled() {
    let app = spawn_app().await;
    let (db, dialect) = (app.state.db_write(), app.state.db.dialect());
    seed(db, 42, 2, 30, false).await;
    assert_eq!(unfilled(db).await.unwrap(), 2 + 2 * 30 * 4);
    let mut rounds = 0;
    while fill_buckets(db, dialect, 25).await.unwrap() > 0 {
        rounds += 1;
    }
    assert!(rounds >= 3, "filled in {rounds} rounds of at most 25 rows a table");
    assert_eq!(unfilled(db).await.unwrap(), 0);
    for t in PER_USER_TABLES {
        let wrong: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {} WHERE bucket <> 42", t.name))
            .fetch_one(db)
            .await
            .unwrap();
        assert_eq!(wrong, 0, "{}", t.name);
    }
    // An order through the API carries its bucket.
    let items = serde_json::json!([{"product_id": 1, "quantity": 1}]);
    let (status, _) = crate::helpers::json(app.create_order(crate::helpers::ANN, items, Some("k")).await).await;
    assert_eq!(status, 201);
    assert_eq!(unfilled(db).await.unwrap(), 0, "the API wrote a row without its bucket");
}

/// On MariaDB, every statement a move runs for a bucket reads through the bucket index, never the
/// whole table (EXPLAIN's `key`), with enough rows that a scan would not be chosen for its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bucket_query_uses_the_bucket_index_on_mysql() {
    let Some(app) = spawn_on_mysql_with(false, &[]).await else { return };
    let db = app.state.db_write();
    for bucket in 0..40 {
        seed(db, bucket, 2, 20, true).await;
    }
    for t in PER_USER_TABLES {
        exec(db, &format!("ANALYZE TABLE {}", t.name)).await;
    }
    let mut problems = Vec::new();
    for t in PER_USER_TABLES {
        // The first and the last key of bucket 7, for the chunks' bounds.
        let key = t.key().iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
        let desc = t.key().iter().map(|(c, _)| format!("{c} DESC")).collect::<Vec<_>>().join(", ");
        let mut ends = Vec::new();
        for order in [key.clone(), desc] {
            let row = sqlx::query(&format!("SELECT {key} FROM {} WHERE bucket = 7 ORDER BY {order} LIMIT 1", t.name))
                .fetch_one(db)
                .await
                .unwrap();
            let values: Vec<Value> = t
                .key()
                .iter()
                .enumerate()
                .map(|(i, (_, kind))| match kind {
                    Kind::Int => Value::Int(row.try_get(i).unwrap()),
                    Kind::Text => Value::Text(row.try_get(i).unwrap()),
                })
                .collect();
            ends.push(values);
        }
        for (sql, binds) in buckets::statements(Dialect::MySql, t, 7, &ends[0], &ends[1]) {
            let explain = format!("EXPLAIN {sql}");
            let mut q = sqlx::query(&explain);
            for v in &binds {
                q = match v {
                    Value::Int(n) => q.bind(*n),
                    Value::Text(s) => q.bind(s.clone()),
                };
            }
            let rows = q.fetch_all(db).await.unwrap_or_else(|e| panic!("{explain}: {e}"));
            let plan: Vec<(Option<String>, Option<String>)> =
                rows.iter().map(|r| (r.try_get("key").unwrap(), r.try_get("type").unwrap())).collect();
            let index = format!("{}_bucket", t.name);
            // The bucket index, as a range or a lookup of its first column: never a scan of the
            // table (ALL) or of another index.
            // With a key bound, a range of it: a lookup of the bucket alone would walk the bucket
            // from its start for every chunk.
            let types: &[&str] = if binds.len() > 1 { &["range"] } else { &["range", "ref"] };
            let ok = matches!(plan.first(), Some((Some(k), Some(ty))) if *k == index && types.contains(&ty.as_str()));
            if !ok {
                problems.push(format!("{sql} {binds:?}\n  plan {plan:?}, not {index}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `shards check`'s walk (store::shard::foreign_rows) over a table of several chunks: rows of
/// another shard's user in the first and the last chunk, and a row whose stored bucket is not its
/// user's, are all found, counted and listed.
#[tokio::test]
async fn the_check_walks_a_table_of_several_chunks_and_finds_every_misplaced_row() {
    use shopgate_store::shard::{foreign_rows, CHECK_CHUNK};
    let app = spawn_app().await;
    let db = app.state.db_write();
    seed(db, 42, 2, CHECK_CHUNK * 3 / 4, true).await;
    let planted = [(1i64, 43i64, 43i64), (9_000_000_000_000_000, 1043, 43), (2, 1000042, 44)];
    for (id, user, bucket) in planted {
        exec(db, &format!("INSERT INTO orders (id, user_id, status, total_cents, created_at, updated_at, bucket) VALUES ({id}, {user}, 'placed', 1, 1, 1, {bucket})")).await;
    }
    let even: Vec<u16> = (0..1000).filter(|b| b % 2 == 0).collect();
    let orders = PER_USER_TABLES.iter().find(|t| t.name == "orders").unwrap();
    let (mut count, mut ids, mut chunks, mut after) = (0, Vec::new(), 0, None);
    loop {
        let chunk = foreign_rows(db, orders, &even, after.as_deref(), 10).await.unwrap();
        chunks += 1;
        count += chunk.count;
        ids.extend(chunk.rows.into_iter().map(|r| r.id));
        match chunk.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert!(chunks >= 2, "{chunks} chunk(s)");
    assert_eq!(count, 3);
    ids.sort();
    assert_eq!(ids, ["1", "2", "9000000000000000"]);
}

/// The catch-up's mechanics on MariaDB: a bucket copied, the source's binlog position noted, then
/// orders placed, cancelled and keys deleted on the source in the copied bucket and another; the
/// changes since the position, read from the server's binlog with `mariadb-binlog` and reduced to
/// the copied bucket's keys, copied again by key, make the target the same as the source for that
/// bucket, and leave the other bucket alone; a round from where that one ended finds nothing.
/// A binary value in the binlog (no UTF-8) is read past.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_since_a_binlog_position_copied_by_key_catch_a_bucket_up_on_mysql() {
    use shopgate_store::changes::{catch_up, position};
    let Some(a) = spawn_on_mysql_with(false, &[]).await else { return };
    // Another database on the same server stands in for the target shard.
    let Some(b) = spawn_on_mysql_with(false, &[]).await else { return };
    let (source, target) = (a.state.db_write(), b.state.db_write());
    seed(source, 42, 2, 50, true).await;
    seed(source, 44, 1, 10, true).await;
    buckets::copy(source, target, Dialect::MySql, &[42], &mut Pace::flat_out()).await.unwrap();
    let target_44 = buckets::checksums(target, &[44]).await.unwrap();
    let from = position(source).await.unwrap().expect("the server writes a binlog");

    // Writes while the copy's result ages: new rows, changed rows, deleted rows; in bucket 44 too.
    // And a binary value, no UTF-8, in a table the move does not know: the binlog shows it as is.
    exec(source, "CREATE TABLE binary_notes (note VARBINARY(8))").await;
    exec(source, "INSERT INTO binary_notes VALUES (X'FFFE00C3')").await;
    exec(
        source,
        "INSERT INTO users (id, email, is_active, created_at, bucket) VALUES (1002042, 'n@example.com', 1, 1, 42)",
    )
    .await;
    for n in 1..=5 {
        let id = 1_002_042_i64 * 100_000 + n;
        exec(source, &format!("INSERT INTO orders (id, user_id, status, total_cents, created_at, updated_at, bucket) VALUES ({id}, 1002042, 'placed', 300, 1, 1, 42)")).await;
        exec(source, &format!("INSERT INTO order_items (order_id, product_id, quantity, unit_price_cents, line_total_cents, bucket) VALUES ({id}, 1, 1, 100, 100, 42), ({id}, 2, 1, 200, 200, 42)")).await;
        exec(source, &format!("INSERT INTO idempotency_keys (user_id, idem_key, request_hash, order_id, created_at, bucket) VALUES (1002042, 'new-{n}', 'h', {id}, 1, 42)")).await;
    }
    exec(source, "UPDATE orders SET status = 'cancelled', updated_at = 2 WHERE user_id = 1000042").await;
    exec(source, "DELETE FROM idempotency_keys WHERE user_id = 1001042 AND idem_key IN ('key-1', 'key-2')").await;
    exec(source, "UPDATE users SET email = 'new@example.com' WHERE id = 1000044").await;
    assert_ne!(buckets::checksums(source, &[42]).await.unwrap(), buckets::checksums(target, &[42]).await.unwrap());

    let url = &a.config.shard("a").unwrap().primary;
    let round = catch_up(source, url, target, Dialect::MySql, &[42], &from).await.unwrap();
    let keys = &round.touched;
    assert_eq!(keys["orders"].len(), 50 + 5, "{:?}", keys.keys());
    assert_eq!(keys["idempotency_keys"].len(), 5 + 2);
    assert_eq!(round.deleted, 2);
    assert_eq!(round.written, 1 + 55 + 10 + 5);
    assert_eq!(buckets::checksums(source, &[42]).await.unwrap(), buckets::checksums(target, &[42]).await.unwrap());
    assert_eq!(buckets::differing_keys(source, target, keys).await.unwrap(), Vec::<String>::new());
    let again = catch_up(source, url, target, Dialect::MySql, &[42], &round.to).await.unwrap();
    assert_eq!(again.keys(), 0, "{:?}", again.touched);
    // And the comparison sees a difference in a touched key.
    exec(target, "UPDATE orders SET status = 'placed' WHERE user_id = 1000042 LIMIT 1").await;
    let differ = buckets::differing_keys(source, target, keys).await.unwrap();
    assert!(differ.len() == 1 && differ[0].starts_with("orders "), "{differ:?}");
    assert_eq!(buckets::checksums(target, &[44]).await.unwrap(), target_44, "bucket 44 was touched");
}
