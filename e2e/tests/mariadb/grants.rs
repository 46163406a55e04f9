//! Least privilege on the MariaDB topology (`scripts/mariadb`, its roles): the stack runs with a
//! user per purpose, and each is refused what its purpose does not need.

use std::time::{Duration, Instant};

use shopgate_e2e::mariadb::Topology;
use shopgate_e2e::Shop as _;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool};
use sqlx::Executor as _;

use crate::stack_on_mariadb;

/// A pool on `url` (one of topology.env's).
async fn pool(url: &str, what: &str) -> MySqlPool {
    let options: MySqlConnectOptions = url.parse().unwrap_or_else(|e| panic!("{what}: {e}"));
    shopgate_e2e::cli::test_pool(options, 2, what).await
}

/// `sql` as `who` fails with MariaDB's "denied" (1142 table, 1143 column, 1044 database, 1227
/// global privilege, 1045 login), not with anything else.
async fn denied(pool: &MySqlPool, who: &str, sql: &str) {
    match pool.execute(sql).await {
        Ok(_) => panic!("{who} may run {sql:?}"),
        Err(sqlx::Error::Database(e)) => {
            let code = e.code().unwrap_or_default();
            let number = e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().map(|m| m.number());
            assert!(
                matches!(number, Some(1142 | 1143 | 1044 | 1227 | 1045 | 1410)),
                "{who}: {sql:?} failed, but not for want of a right: {code} {e}"
            );
        }
        Err(e) => panic!("{who}: {sql:?}: {e}"),
    }
}

/// The admin's password, from its socket URL.
fn admin_password(topology: &Topology, instance: &str) -> String {
    let v = format!("MARIADB_{}_ADMIN_URL", instance.to_ascii_uppercase().replace('-', "_"));
    let url = url::Url::parse(topology.var(&v)).unwrap();
    url.password().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_do_its_work_and_nothing_past_it() {
    let (topology, stack) = stack_on_mariadb(5).await;

    // The stack serves on these users: the verifier as the auth database's runtime user, the
    // backends reading it as the reader (SELECT on a few columns), each shard as its own.
    let (user, token) = stack.shopper().await;
    let order = stack.order(&token).await;
    assert!(order["id"].as_i64().is_some(), "{order}");

    // Shards' runtime user: rows, never the schema.
    let shard = pool(topology.url("a-primary"), "shard a as shop").await;
    for sql in [
        "CREATE TABLE not_ours (id INT PRIMARY KEY)",
        "ALTER TABLE orders ADD COLUMN not_ours INT",
        "DROP TABLE orders",
        "CREATE INDEX not_ours ON orders (user_id)",
        "GRANT SELECT ON orders TO 'shop'@'%'",
    ] {
        denied(&shard, "a shard's runtime user", sql).await;
    }
    sqlx::query("SELECT COUNT(*) FROM orders").fetch_one(&shard).await.unwrap();

    // The verifier's runtime user on the auth database: rows, never the schema.
    let verifier = pool(topology.url("auth"), "auth as shop").await;
    for sql in [
        "CREATE TABLE not_ours (id INT PRIMARY KEY)",
        "ALTER TABLE users ADD COLUMN not_ours INT",
        "DROP TABLE revoked_tokens",
        "CREATE DATABASE not_ours",
    ] {
        denied(&verifier, "the verifier's user", sql).await;
    }

    // The backends' reader: what a backend reads, nothing else; no write, no password hash.
    let reader = pool(topology.reader_url(), "auth as the backends' reader").await;
    sqlx::query("SELECT id, tokens_valid_after FROM users").fetch_all(&reader).await.unwrap();
    sqlx::query("SELECT version, map FROM shard_map").fetch_all(&reader).await.unwrap();
    sqlx::query("SELECT jti, expires_at, revoked_at FROM revoked_tokens").fetch_all(&reader).await.unwrap();
    for sql in [
        "SELECT password_hash FROM users",
        "SELECT * FROM users",
        "SELECT email FROM users",
        "SELECT COUNT(*) FROM users WHERE password_hash LIKE '$argon2%'",
        "SELECT * FROM login_unlocks",
        "UPDATE users SET tokens_valid_after = 0",
        "DELETE FROM revoked_tokens",
        "INSERT INTO shard_map (version, map, note, created_at) VALUES (999, '{}', 'x', 0)",
        "INSERT INTO shard_moves (id, source, target, buckets, kind, step, rows_copied, pause_started_ms, \
         pause_ms, started_at, updated_at) VALUES (999, 'a', 'b', '1', 'move', 'planned', 0, 0, 0, 0, 0)",
        "CREATE TABLE not_ours (id INT PRIMARY KEY)",
    ] {
        denied(&reader, "the backends' reader", sql).await;
    }

    // The migrator: its own database's schema, nothing global.
    let migrator = pool(topology.migrator_url("auth"), "auth as migrator").await;
    for sql in [
        "CREATE DATABASE not_ours",
        "SELECT * FROM mysql.user",
        "GRANT ALL ON *.* TO 'shop'@'%'",
        "SET GLOBAL read_only = 1",
    ] {
        denied(&migrator, "the migrator", sql).await;
    }

    // The admin takes no TCP login, with its own right password, on any instance.
    for instance in ["auth", "a-primary", "a-replica"] {
        let mut tcp = url::Url::parse(topology.url(instance)).unwrap();
        tcp.set_username("admin").unwrap();
        tcp.set_password(Some(&admin_password(&topology, instance))).unwrap();
        let options: MySqlConnectOptions = tcp.as_str().parse().unwrap();
        let refused = sqlx::pool::PoolOptions::<sqlx::MySql>::new()
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await;
        match refused {
            Err(sqlx::Error::Database(e)) => assert!(e.message().contains("Access denied"), "{instance}: {e}"),
            Err(e) => panic!("{instance}: admin over TCP failed for another reason: {e}"),
            Ok(_) => panic!("{instance}: admin logged in over TCP"),
        }
    }
    // ... but over the socket it is everything (the tests' own SQL goes that way).
    sqlx::query("SELECT COUNT(*) FROM mysql.user").fetch_one(&topology.admin("auth").await).await.unwrap();

    // Replication's user is bound to the replicas' address, not any host.
    let hosts: Vec<String> = sqlx::query_scalar("SELECT CAST(Host AS CHAR) FROM mysql.user WHERE User = 'repl'")
        .fetch_all(&topology.admin("a-primary").await)
        .await
        .unwrap();
    assert_eq!(hosts, vec![topology.var("MARIADB_HOST").to_owned()]);

    // One password per role and instance: no two URLs share one.
    let mut passwords: Vec<String> = Vec::new();
    for key in
        ["AUTH_URL", "AUTH_READER_URL", "AUTH_MIGRATOR_URL", "A_PRIMARY_URL", "A_PRIMARY_MIGRATOR_URL", "B_PRIMARY_URL"]
    {
        passwords
            .push(url::Url::parse(topology.var(&format!("MARIADB_{key}"))).unwrap().password().unwrap().to_owned());
    }
    let mut unique = passwords.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), passwords.len(), "a password serves two roles or instances");

    // The backends follow revocations through the reader: a logged-out token is refused at the
    // user's backend itself (not only by the verifier) within the revocation bound.
    let shard_name = crate::shard_of(&stack, user);
    let addr = stack.config.shard(&shard_name).unwrap().addr();
    let direct = stack.internal_url(addr, "/api/orders");
    let get = || stack.internal.get(&direct).bearer_auth(&token).header("X-User-Id", user.to_string()).send();
    assert_eq!(get().await.unwrap().status(), 200);
    let logout = stack.http.post(stack.api("/auth/logout")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(logout.status(), 200);
    let deadline = Instant::now() + stack.config.verifier.revocation_bound() + Duration::from_secs(2);
    loop {
        let status = get().await.unwrap().status();
        if status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "the backend still takes a logged-out token: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
