//! Issue 28: backups and point-in-time recovery on MariaDB, proven by a restore drill.
//!
//! The drill (point 1): orders and registrations under a steady load; `shopctl backup` while they
//! run; more load; then a bad `DELETE FROM orders` on shard a and a bad `UPDATE users` on the auth
//! database; the binlogs archived; `shopctl restore --to-time` of the stack to the second before
//! them. Every order and account acknowledged before that moment is there exactly once (items,
//! key), nothing written after it, the shard map as it was, `shards check` clean, each replica
//! following its restored primary, and the shop serving.
//!
//! The archiver (point 4): a primary's binlogs stay until the archiver has them; once archived
//! and past the retention, it purges them on the primary, and the archive holds every one. Run
//! continuously (as `scripts/up` runs it), it keeps up; stopped, the primary keeps its logs;
//! started again, it copies what it missed, byte for byte, before it purges.

use std::time::Duration;

use shopgate_e2e::cli::{scalar, Run};
use shopgate_e2e::load::{register_spread, Load, LoadOptions};
use shopgate_e2e::mariadb::Topology;
use shopgate_e2e::Shop as _;
use shopgate_e2e::Stack;

/// `shopctl ARGS` with the backup role's URLs and the topology's folder.
fn ctl(topology: &Topology, stack: &Stack, args: &[&str], extra: &[(&str, &str)]) -> Run {
    let mut cmd = stack.shopctl();
    cmd.args(args).envs(topology.backup_env()).envs(extra.iter().copied());
    shopgate_e2e::cli::run(cmd, None)
}

/// The UTC second after the current one has begun, as `--to-time` takes it: every write
/// acknowledged before this call has a binlog timestamp before it.
async fn next_second() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let next = now.as_secs() + 1;
    tokio::time::sleep(Duration::from_secs(next) - now + Duration::from_millis(50)).await;
    shopgate_core::time::rfc3339(next as i64)
}

#[tokio::test]
async fn the_restore_drill_brings_back_everything_before_the_bad_statements_and_nothing_after() {
    let (topology, stack) = super::stack_on_mariadb(5).await;
    let users = register_spread(&stack, 12).await;
    let map_before = stack.current_map().await;

    let load = Load::start(&stack, &users, LoadOptions::default());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let backup = ctl(&topology, &stack, &["--json", "backup"], &[]).ok();
    let taken = backup.json();
    assert_eq!(taken["instances"].as_array().unwrap().len(), 3, "{backup}");
    for m in taken["instances"].as_array().unwrap() {
        assert!(m["gtid"].as_str().is_some_and(|g| !g.is_empty()), "no GTID position in {m}");
        assert_eq!(m["map_version"], taken["map_version"], "{m}");
        assert!(!m["files"].as_object().unwrap().is_empty(), "no checksums in {m}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let record = load.stop().await;
    assert!(record.acknowledged().len() > 12, "too little load: {}", record.tally());
    let moment = next_second().await;

    // After the moment: an account and its order, which the restore must not bring back.
    let (late_user, late_token) = stack.shopper().await;
    let late_order = stack.order(&late_token).await["id"].as_i64().unwrap();
    // The bad statements.
    let shard_a = topology.root_over_socket("a-primary").await;
    let mut session = shard_a.acquire().await.unwrap();
    sqlx::query("SET foreign_key_checks = 0").execute(&mut *session).await.unwrap();
    sqlx::query("DELETE FROM orders").execute(&mut *session).await.unwrap();
    drop(session);
    let auth = topology.root_over_socket("auth").await;
    sqlx::query("UPDATE users SET is_active = 0").execute(&auth).await.unwrap();
    shard_a.close().await;
    auth.close().await;

    ctl(&topology, &stack, &["backup", "archive", "--once"], &[]).ok();
    // A running instance is not replaced without --force, and nothing changes.
    let refused = ctl(&topology, &stack, &["restore", "--to-time", &moment], &[]);
    let line = refused.one_line_error(1);
    assert!(line.contains("is running") && line.contains("--force"), "{refused}");
    let restored = ctl(&topology, &stack, &["restore", "--to-time", &moment, "--force"], &[]).ok();
    assert!(restored.stderr.contains("everything written to it after that point is lost"), "{restored}");

    // The shop serves again once its pools have reconnected.
    let mut serving = false;
    for _ in 0..120 {
        let r = stack.http().get(stack.api("/api/orders")).bearer_auth(&users[0].token).send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            serving = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(serving, "the shop does not serve after the restore:\n{}", stack.logs());

    let checked = record.check_orders(&stack, &map_before).await.unwrap_or_else(|p| panic!("{}", p.join("\n")));
    assert_eq!(checked.acknowledged, record.acknowledged().len());
    let auth = stack.auth_db().await;
    for u in &users {
        let active = scalar(&auth, &format!("SELECT COUNT(*) FROM users WHERE id = {} AND is_active = 1", u.id)).await;
        assert_eq!(active, 1, "user {} is not there once and active", u.id);
    }
    assert_eq!(scalar(&auth, &format!("SELECT COUNT(*) FROM users WHERE id = {late_user}")).await, 0, "late account");
    auth.close().await;
    for shard in ["a", "b"] {
        let db = stack.shard_db(shard).await;
        let n = scalar(&db, &format!("SELECT COUNT(*) FROM orders WHERE id = {late_order}")).await;
        assert_eq!(n, 0, "the order placed after the moment is on shard {shard}");
        db.close().await;
    }
    assert_eq!(stack.current_map().await.version(), map_before.version(), "the shard map changed");
    let check = stack.ctl(&["--json", "shards", "check"]);
    assert_eq!(check.code, 0, "{check}");

    // New writes reach the rebuilt replicas.
    for u in users.iter().take(4) {
        stack.order(&u.token).await;
    }
    for shard in ["a", "b"] {
        topology.wait_replica_caught_up(shard, Duration::from_secs(30)).await;
    }
    let auth_primary = topology.admin("auth").await;
    let pos: String = sqlx::query_scalar("SELECT @@gtid_binlog_pos").fetch_one(&auth_primary).await.unwrap();
    let auth_replica = topology.admin("auth-replica").await;
    let waited: i64 =
        sqlx::query_scalar("SELECT MASTER_GTID_WAIT(?, 30)").bind(&pos).fetch_one(&auth_replica).await.unwrap();
    assert_eq!(waited, 0, "auth-replica does not follow the restored auth");
}

#[tokio::test]
async fn the_archiver_purges_only_what_it_has_archived() {
    let (topology, stack) = super::stack_on_mariadb(5).await;
    let (_, token) = stack.shopper().await;
    let primary = topology.root_over_socket("a-primary").await;
    for _ in 0..3 {
        stack.order(&token).await;
        sqlx::query("FLUSH BINARY LOGS").execute(&primary).await.unwrap();
    }
    let before = binlogs(&primary).await.len();
    assert!(before >= 4, "{before} binlogs");
    // Retention 0: whatever is archived whole may go. Without the archiver nothing goes: the
    // primaries never expire their logs themselves.
    let retention = [("SHOP__BACKUP__BINLOG_RETENTION_HOURS", "0")];
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(binlogs(&primary).await.len(), before, "binlogs went without the archiver");
    let run = ctl(&topology, &stack, &["backup", "archive", "--once"], &retention).ok();
    let after = binlogs(&primary).await.len();
    assert_eq!(after, 1, "only the file being written stays once the rest is archived: {run}");
    let files = archived(&stack);
    assert!(files.len() >= before, "the archive holds {files:?}, the primary had {before}");
    primary.close().await;
}

/// The binlog files shard a's primary lists, with their sizes.
async fn binlogs(primary: &sqlx::MySqlPool) -> Vec<(String, u64)> {
    use sqlx::Row as _;
    let rows = sqlx::query("SHOW BINARY LOGS").fetch_all(primary).await.unwrap();
    rows.iter().map(|r| (r.get::<String, _>(0), r.get::<u64, _>(1))).collect()
}

/// The archive's copy of shard a's binlogs: name and size.
fn archived(stack: &Stack) -> std::collections::BTreeMap<String, u64> {
    let dir = stack.config().backup.dir.join("binlogs/a");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Default::default() };
    entries
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("mysql-bin."))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len()))
        .collect()
}

/// Point 4, the archiver as `scripts/up` runs it (continuously, not `--once`): while it runs,
/// every binlog the primary closes is copied whole and then purged there (retention 0 here), the
/// primary keeping only the file it writes and at most one more; stopped, nothing is purged and
/// the primary's logs pile up; started again, it copies what it missed, byte for byte, and only
/// then purges.
#[tokio::test]
async fn the_running_archiver_keeps_up_and_a_stopped_one_keeps_the_primary_s_logs() {
    let (topology, stack) = super::stack_on_mariadb(5).await;
    let (_, token) = stack.shopper().await;
    let primary = topology.root_over_socket("a-primary").await;
    let start = || {
        let mut cmd = stack.shopctl();
        cmd.args(["backup", "archive"])
            .envs(topology.backup_env())
            .env("SHOP__BACKUP__BINLOG_RETENTION_HOURS", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd.spawn().unwrap()
    };
    let flushes = |n: usize| {
        let (primary, token, stack) = (primary.clone(), token.clone(), &stack);
        async move {
            for _ in 0..n {
                stack.order(&token).await;
                sqlx::query("FLUSH BINARY LOGS").execute(&primary).await.unwrap();
            }
        }
    };
    let within = |secs: u64| std::time::Instant::now() + Duration::from_secs(secs);

    // Running: the closed files are archived whole and purged.
    let mut archiver = start();
    flushes(4).await;
    let deadline = within(30);
    loop {
        let on_primary = binlogs(&primary).await;
        if on_primary.len() <= 2 && archived(&stack).len() >= 5 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the running archiver left {on_primary:?} on the primary");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Stopped (SIGTERM, as scripts/down stops it): the primary keeps every file.
    shopgate_e2e::signal(archiver.id(), libc::SIGTERM);
    archiver.wait().unwrap();
    let before = binlogs(&primary).await.len();
    flushes(4).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // more than the archiver's round
    let kept = binlogs(&primary).await;
    assert_eq!(kept.len(), before + 4, "with the archiver stopped the primary kept {kept:?}");
    let missed: Vec<_> = kept[..kept.len() - 1].to_vec(); // the closed ones
    assert!(missed.iter().any(|(name, _)| !archived(&stack).contains_key(name)), "nothing was left to catch up");

    // Started again: it copies what it missed, whole, then purges it.
    let mut archiver = start();
    let deadline = within(30);
    loop {
        let copy = archived(&stack);
        let caught_up = missed.iter().all(|(name, size)| copy.get(name) == Some(size));
        if caught_up && binlogs(&primary).await.len() <= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after a restart the archive has {copy:?}, the primary had {missed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    shopgate_e2e::signal(archiver.id(), libc::SIGTERM);
    archiver.wait().unwrap();
    primary.close().await;
}
