//! Mixed versions: the previous release's services start and serve on the schema and database
//! users this release made (docs/operations.md, "Upgrades"), so a rollout can run both at once
//! and a rollback is starting the old binaries again.

use std::process::Command;

use shopgate_e2e::mariadb::Topology;
use shopgate_e2e::{Options, Shop as _, Stack};
use shopgate_store::schema::Schema;
use shopgate_store::Dialect;

/// The auth schema's migration versions in the previous release's source, from git.
fn their_auth_migrations(commit: &str) -> Vec<i64> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("git")
        .args([
            "-C",
            root,
            "ls-tree",
            "-r",
            "--name-only",
            commit,
            "--",
            "store/migrations/auth/mysql",
            "verifier/migrations/mysql",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "git ls-tree {commit}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|path| path.rsplit('/').next()?.split('_').next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_releases_services_serve_on_the_schema_and_users_this_release_made() {
    let release = shopgate_e2e::previous_release();
    let commit = std::fs::read_to_string(release.join("COMMIT")).unwrap().trim().to_owned();
    // This release's auth schema has at least one migration the previous release does not know.
    let theirs = their_auth_migrations(&commit);
    assert!(!theirs.is_empty(), "no auth migrations at {commit}");
    let ours: Vec<i64> = Schema::Auth.migrator(Dialect::MySql).iter().map(|m| m.version).collect();
    let newer: Vec<i64> = ours.iter().copied().filter(|v| !theirs.contains(v)).collect();
    assert!(!newer.is_empty(), "the previous release ({commit}) has every auth migration of this one: {theirs:?}");

    let topology = Topology::start().await;
    let mut options = Options { services: Some(release.clone()), ..topology.stack_options(5) };
    // Settings newer than the previous release are not given to it (docs/operations.md,
    // "Upgrades": config keys too): the auth replica's, which a rollout adds once it is gone.
    options.config_overrides.retain(|(key, _)| !key.ends_with("DATABASE_REPLICA_URL"));
    // The harness migrates with this release's shopctl, then starts the previous release's
    // verifier and backends (as the backends' reader and the runtime users) on it.
    let stack = Stack::start_with(options).await;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&topology.admin("auth").await)
        .await
        .unwrap();
    assert_eq!(applied, ours, "the auth database is at this release's schema");
    for name in ["verifier-0", "backend-a", "backend-b"] {
        let pid = stack.pid(name).unwrap_or_else(|| panic!("{name} does not run"));
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        assert!(exe.starts_with(&release), "{name} runs {}, not the previous release's", exe.display());
    }

    // And they serve: registrations, logins, an order on each shard and its read, a logout.
    let mut served = std::collections::BTreeSet::new();
    let mut last = String::new();
    for _ in 0..40 {
        let (user, token) = stack.shopper().await;
        let order = stack.order(&token).await;
        let path = format!("/api/orders/{}", order["id"]);
        let read = stack.http.get(stack.api(&path)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(read.status(), 200, "user {user}: GET {path}");
        served.insert(crate::shard_of(&stack, user));
        last = token;
        if served.len() == 2 {
            break;
        }
    }
    assert_eq!(served.len(), 2, "orders reached only {served:?}");
    let out = stack.http.post(stack.api("/auth/logout")).bearer_auth(&last).send().await.unwrap();
    assert_eq!(out.status(), 200);
    let after = stack.http.get(stack.api("/api/orders")).bearer_auth(&last).send().await.unwrap();
    assert_eq!(after.status(), 401, "a logged-out token still works");
}
