//! Issue 31: `scripts/mariadb start` on a topology that runs starts what is down and leaves the
//! rest alone. A killed replica comes back on the port the stack's config names and catches up
//! on what its primary took meanwhile; a shard new to the topology gets its primary and replica;
//! `stop` (or the end of `run`) stops instances whichever start brought them up.

use std::path::Path;
use std::time::Duration;

use shopgate_e2e::mariadb::{Spec, Topology};
use sqlx::MySqlPool;

fn shards(names: &[&str]) -> Spec {
    Spec { shards: names.iter().map(|s| (*s).to_owned()).collect(), ..Spec::default() }
}

async fn insert(db: &MySqlPool, ids: std::ops::RangeInclusive<u32>) {
    for id in ids {
        sqlx::query("INSERT INTO probe (id) VALUES (?)").bind(id).execute(db).await.unwrap();
    }
}

async fn count(db: &MySqlPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM probe").fetch_one(db).await.unwrap()
}

async fn server_id(db: &MySqlPool) -> i64 {
    sqlx::query_scalar("SELECT CAST(@@server_id AS SIGNED)").fetch_one(db).await.unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The processes whose command line names `dir` (mariadbd's `--datadir`, the supervisors' DIR).
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = format!("{}/", dir.display());
    let needle_end = format!("{} ", dir.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = format!("{} ", text(&raw).replace('\0', " "));
        if cmdline.contains(&needle) || cmdline.contains(&needle_end) {
            found.push(format!("{}: {}", entry.file_name().to_string_lossy(), cmdline.trim_end()));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_restarts_alone_on_its_port_and_catches_up() {
    let mut topology = Topology::start_in_background(&shards(&["a"])).await.expect("scripts/mariadb start");
    let primary = topology.admin("a-primary").await;
    sqlx::query("CREATE TABLE probe (id INT PRIMARY KEY)").execute(&primary).await.unwrap();
    insert(&primary, 1..=100).await;
    topology.wait_replica_caught_up("a", Duration::from_secs(10)).await;
    let port: u16 = topology.var("MARIADB_A_REPLICA_PORT").parse().unwrap();
    let url = topology.url("a-replica").to_owned();
    let (auth, a_primary, killed) = (topology.pid("auth"), topology.pid("a-primary"), topology.pid("a-replica"));

    topology.kill("a-replica");
    // What the primary takes while its replica is down.
    insert(&primary, 101..=300).await;

    // Its port taken meanwhile: one `error:` line naming it, a non-zero exit, nothing started.
    let holder = std::net::TcpListener::bind(("127.0.0.1", port)).expect("holding the replica's old port");
    let out = topology.start_again("a").await.unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "start with the replica's port taken succeeded:\n{stderr}");
    let errors: Vec<_> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(&format!("port {port}")), "{stderr}");
    let status = text(&topology.script("status").stdout);
    assert!(status.lines().any(|l| l == "a-replica stopped"), "{status}");
    drop(holder);

    let out = topology.start_again("a").await.unwrap();
    assert!(out.status.success(), "scripts/mariadb start: {}", text(&out.stderr));
    assert_eq!(topology.var("MARIADB_A_REPLICA_PORT"), port.to_string(), "the replica's port changed");
    assert_eq!(topology.url("a-replica"), url);
    let restarted = topology.pid("a-replica");
    assert_ne!(restarted, killed, "the replica was not started again");
    assert_eq!(
        (topology.pid("auth"), topology.pid("a-primary")),
        (auth, a_primary),
        "a running instance was restarted"
    );
    let status = text(&topology.script("status").stdout);
    assert!(status.lines().any(|l| l == format!("a-replica running pid {restarted} port {port}")), "{status}");

    // Every row, also those written while it was down (MASTER_GTID_WAIT for the primary's
    // @@gtid_binlog_pos), and it keeps replicating.
    topology.wait_replica_caught_up("a", Duration::from_secs(30)).await;
    let replica = topology.admin("a-replica").await;
    assert_eq!(count(&replica).await, 300);
    insert(&primary, 301..=310).await;
    topology.wait_replica_caught_up("a", Duration::from_secs(10)).await;
    assert_eq!(count(&replica).await, 310);
    let read_only: i64 = sqlx::query_scalar("SELECT CAST(@@read_only AS SIGNED)").fetch_one(&replica).await.unwrap();
    assert_eq!(read_only, 1);
    primary.close().await;
    replica.close().await;

    // `stop` stops them all: those of the first start and the one started alone, and their
    // supervisors.
    let out = topology.script("stop");
    assert!(out.status.success(), "scripts/mariadb stop: {}", text(&out.stderr));
    let status = text(&topology.script("status").stdout);
    assert_eq!(status.lines().filter(|l| l.ends_with(" stopped")).count(), 4, "{status}");
    let left = processes_under(topology.root());
    assert!(left.is_empty(), "left running after stop:\n{}", left.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_adds_a_shard_and_leaves_the_running_ones_alone() {
    // Started as the tests start topologies (`run`), then extended as an operator would.
    let mut topology = Topology::start_with(&shards(&["a"])).await.expect("scripts/mariadb run");
    let names = ["auth", "auth-replica", "a-primary", "a-replica"];
    let pids: Vec<_> = names.iter().map(|n| topology.pid(n)).collect();
    let urls: Vec<_> = names.iter().map(|n| topology.url(n).to_owned()).collect();

    let out = topology.start_again("a c").await.unwrap();
    assert!(out.status.success(), "scripts/mariadb start: {}", text(&out.stderr));
    assert_eq!(names.iter().map(|n| topology.pid(n)).collect::<Vec<_>>(), pids, "a running instance was restarted");
    assert_eq!(names.iter().map(|n| topology.url(n).to_owned()).collect::<Vec<_>>(), urls);
    assert_eq!(topology.var("MARIADB_SHARDS"), "a c");
    assert_eq!(topology.var("MARIADB_INSTANCES"), "auth auth-replica a-primary a-replica c-primary c-replica");
    // (The URL's query is its TLS: `?ssl-mode=VERIFY_IDENTITY&ssl-ca=…`.)
    let c_url = topology.url("c-primary").split_once('?').map_or(topology.url("c-primary"), |(u, _)| u);
    assert!(c_url.ends_with("/shop_shard_c"), "{}", topology.var("MARIADB_C_PRIMARY_DATABASE"));

    // c replicates as a first start makes it: the app user's database, a read-only replica.
    let c_primary = topology.admin("c-primary").await;
    sqlx::query("CREATE TABLE probe (id INT PRIMARY KEY)").execute(&c_primary).await.unwrap();
    insert(&c_primary, 1..=20).await;
    topology.wait_replica_caught_up("c", Duration::from_secs(10)).await;
    let c_replica = topology.admin("c-replica").await;
    assert_eq!(count(&c_replica).await, 20);
    let read_only: i64 = sqlx::query_scalar("SELECT CAST(@@read_only AS SIGNED)").fetch_one(&c_replica).await.unwrap();
    assert_eq!(read_only, 1);
    // Each instance its own server id: a replica skips events that carry its own.
    let mut ids = Vec::new();
    for name in ["auth", "auth-replica", "a-primary", "a-replica", "c-primary", "c-replica"] {
        let db = topology.admin(name).await;
        ids.push(server_id(&db).await);
        db.close().await;
    }
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "server ids {ids:?}");
    c_primary.close().await;
    c_replica.close().await;

    // Dropped (the end of `run`, then `stop`), it leaves nothing running: c's supervisor either.
    let root = topology.root().to_path_buf();
    drop(topology);
    let left = processes_under(&root);
    assert!(left.is_empty(), "left running after the topology was dropped:\n{}", left.join("\n"));
}
