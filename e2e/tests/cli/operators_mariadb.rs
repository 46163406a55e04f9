//! Point 2 on MariaDB: every operator command against a whole stack (nginx, verifier, backends)
//! whose auth database and shards are real MariaDB primaries with GTID replicas (`scripts/mariadb`
//! through `shopgate_e2e::mariadb::Topology`).

use std::time::{Duration, Instant};

use shopgate_core::UserId;
use shopgate_e2e::cli::{catalog_csv, exec, scalar, write_file};
use shopgate_e2e::mariadb::Topology;
use shopgate_e2e::Shop as _;
use shopgate_e2e::{Stack, PASSWORD};

#[tokio::test]
async fn every_operator_command_on_mariadb_with_replicas() {
    let topology = Topology::start().await;
    let stack = Stack::start_with(topology.stack_options(5)).await;
    let email = super::email("cli-mdb");
    let pw = format!("{PASSWORD}\n");
    let id = stack.ctl_stdin(&["--json", "register", &email, "--password-stdin"], &pw).ok().json()["id"]
        .as_u64()
        .expect("id");
    stack.ctl_stdin(&["login", &email, "--password-stdin"], &pw).ok();
    let token = stack.kept_token().expect("token");
    let order = stack.ctl(&["--json", "orders", "create", "--item", "1:2"]).ok().json();
    assert_eq!(order["status"], "placed", "{order}");
    let owner = stack.config.shard_map.shard_for(UserId::new(id).expect("id")).to_string();
    let other = if owner == "a" { "b" } else { "a" };

    // shards status: every primary and replica up, a measured lag, the counts, no password shown.
    let status = stack.ctl(&["--json", "shards", "status"]).ok();
    for s in status.json()["items"].as_array().expect("shards") {
        assert_eq!(s["primary"]["reachable"], true, "{s}");
        assert_eq!(s["replica"]["reachable"], true, "{s}");
        assert!(s["replica"]["url"].as_str().is_some_and(|u| u.starts_with("mysql://shop:***@")), "{s}");
        let lag = s["replication_lag_seconds"].as_f64().unwrap_or_else(|| panic!("no lag measured: {s}"));
        assert!(lag < 30.0, "{s}");
        let mine = s["shard"] == owner.as_str();
        assert_eq!((s["users"].as_i64(), s["orders"].as_i64()), (Some(i64::from(mine)), Some(i64::from(mine))), "{s}");
    }
    let table = stack.ctl(&["--format", "table", "shards", "status"]).ok();
    assert!(table.stdout.contains(" up ") && table.stdout.contains(" s "), "{table}");
    for s in &stack.config.shards {
        assert!(
            !status.stdout.contains(s.primary.expose()) && !table.stdout.contains(s.primary.expose()),
            "a password leaked"
        );
    }

    // shards check: clean, then a planted row on the wrong shard is named and exits 1.
    stack.ctl(&["shards", "check"]).ok();
    let db = stack.shard_db(other).await;
    let plant = format!(
        "INSERT INTO idempotency_keys (user_id, idem_key, request_hash, order_id, created_at) VALUES ({id}, 'planted-key', 'h', 1, 1)"
    );
    exec(&db, &plant).await;
    let found = stack.ctl(&["--json", "shards", "check"]);
    assert_eq!(found.code, 1, "{found}");
    let v = found.json();
    let row = &v["items"][0];
    assert_eq!(
        (row["shard"].as_str(), row["table"].as_str(), row["id"].as_str()),
        (Some(other), Some("idempotency_keys"), Some("planted-key")),
        "{v}"
    );
    assert_eq!((row["user_id"].as_u64(), row["owner"].as_str()), (Some(id), Some(owner.as_str())), "{v}");
    assert!(stack
        .ctl(&["shards", "check"])
        .one_line_error(1)
        .contains("1 row is on a shard that does not own its user"));
    exec(&db, "DELETE FROM idempotency_keys WHERE idem_key = 'planted-key'").await;
    db.close().await;
    stack.ctl(&["shards", "check"]).ok();

    // users locate, by email and by id.
    for who in [email.clone(), id.to_string()] {
        let v = stack.ctl(&["--json", "users", "locate", &who]).ok().json();
        assert_eq!((v["id"].as_u64(), v["shard"].as_str()), (Some(id), Some(owner.as_str())), "{v}");
        assert_eq!((v["profile_on_shard"].as_bool(), v["orders_on_shard"].as_i64()), (Some(true), Some(1)), "{v}");
    }

    // users disable: the token is refused through nginx within the bound, and so is a login.
    stack.ctl(&["users", "disable", &email]).ok();
    let bound = stack.config.verifier.revocation_bound();
    assert!(
        stack.answers_within("/api/orders", &token, 401, bound).await.is_some(),
        "token still works after {bound:?}"
    );
    assert!(stack
        .ctl_stdin(&["login", &email, "--password-stdin"], &pw)
        .one_line_error(1)
        .contains("wrong email or password"));
    stack.ctl(&["users", "enable", &id.to_string()]).ok();
    stack.ctl_stdin(&["login", &email, "--password-stdin"], &pw).ok();
    stack.ctl(&["orders", "list"]).ok();

    // catalog import: 10,000 products onto every primary, and by replication onto every replica.
    let before = stack.count_per_shard("products").await;
    let file = write_file(stack.dir.path(), "catalog.csv", &catalog_csv(10_000));
    let run = stack.ctl(&["catalog", "import", &file]).ok();
    assert!(run.stderr.contains("shard a: 10000/10000 products written"), "{run}");
    assert!(run.stderr.contains("shard b: 10000/10000 products written"), "{run}");
    let after = stack.count_per_shard("products").await;
    for ((shard, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(*a, b + 10_000, "shard {shard}");
        topology.wait_replica_caught_up(shard, Duration::from_secs(30)).await;
        let replica = stack.shard_replica_db(shard).await;
        assert_eq!(scalar(&replica, "SELECT COUNT(*) FROM products").await, *a, "shard {shard}'s replica");
        replica.close().await;
    }
    // A file with one bad row: nothing changes anywhere.
    let bad =
        write_file(stack.dir.path(), "bad.csv", &catalog_csv(50).replace(",Category 7,107,", ",Category 7,1.07,"));
    let started = Instant::now();
    let run = stack.ctl(&["catalog", "import", &bad]);
    assert!(run.one_line_error(1).contains("row 7 (line 8)"), "{run}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(stack.count_per_shard("products").await, after);

    // tokens mint and nginx render read the same config.
    let minted = stack.ctl(&["--json", "tokens", "mint", "--user-id", &id.to_string()]).ok().json();
    let r = stack
        .http
        .get(stack.api("/api/orders"))
        .bearer_auth(minted["access_token"].as_str().expect("token"))
        .send()
        .await;
    assert_eq!(r.expect("get").status(), 200);
    assert!(stack.ctl(&["nginx", "render"]).ok().stdout.contains("upstream shard_b"));
}
