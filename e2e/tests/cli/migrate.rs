//! `shopctl migrate`: the schema is a step of its own, and the services only check it.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed run

use std::process::Command;

use shopgate_e2e::{bin, Stack};

/// The stack's config pointed at databases no one has made yet (SQLite files in its folder).
fn fresh(stack: &Stack) -> Vec<(String, String)> {
    let dir = stack.dir.path();
    vec![
        ("SHOP__VERIFIER__DATABASE_URL".into(), format!("sqlite://{}", dir.join("fresh-auth.db").display())),
        ("SHOP__SHARDS__A__PRIMARY".into(), format!("sqlite://{}", dir.join("fresh-a.db").display())),
        ("SHOP__SHARDS__B__PRIMARY".into(), format!("sqlite://{}", dir.join("fresh-b.db").display())),
    ]
}

fn ctl(stack: &Stack, env: &[(String, String)], args: &[&str]) -> shopgate_e2e::cli::Run {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    stack.ctl_env(args, &env)
}

/// A service started on `env`'s databases: its exit code and standard error (it must exit).
fn start(stack: &Stack, env: &[(String, String)], program: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin(program))
        .args(args)
        .env("SHOP_CONFIG", &stack.config_path)
        .env("RUST_LOG", "error")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn services_refuse_a_schema_until_shopctl_migrate_has_made_it_and_run_on_a_newer_one() {
    let stack = Stack::start().await;
    let env = fresh(&stack);

    // Before: --check says so (exit 1), and neither service starts or makes a table.
    let check = ctl(&stack, &env, &["migrate", "--check"]);
    assert_eq!(check.code, 1, "{check:?}");
    let (code, err) = start(&stack, &env, "verifier", &["--listen", "127.0.0.1:0"]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("shopctl migrate"), "the verifier does not say what to do: {err}");
    // (On a port of its own: the stack's backend has the config's.)
    let mut backend_env = env.clone();
    backend_env.push(("SHOP__SHARDS__A__LISTEN".into(), format!("[\"127.0.0.1:{}\"]", shopgate_e2e::free_port())));
    let (code, err) = start(&stack, &backend_env, "backend", &["--shard", "a"]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("shopctl migrate"), "the backend does not say what to do: {err}");

    // The step: every database gets every migration, once.
    let first = ctl(&stack, &env, &["--format", "json", "migrate"]).ok().json();
    let dbs = first["items"].as_array().unwrap();
    assert_eq!(dbs.iter().map(|d| d["database"].as_str().unwrap()).collect::<Vec<_>>(), ["auth", "a", "b"]);
    for d in dbs {
        assert!(!d["applied"].as_array().unwrap().is_empty(), "{d}");
        assert_eq!(d["newest"], d["applied"].as_array().unwrap().last().unwrap().clone(), "{d}");
    }
    let again = ctl(&stack, &env, &["--format", "json", "migrate"]).ok().json();
    assert!(again["items"].as_array().unwrap().iter().all(|d| d["applied"].as_array().unwrap().is_empty()));
    let check = ctl(&stack, &env, &["migrate", "--check"]).ok();
    assert!(check.stdout.contains("up to date"), "{check:?}");

    // A newer release's expansion (a migration this build does not have): this release's
    // services and shopctl run on it, and this shopctl leaves it alone.
    let auth = shopgate_e2e::cli::test_pool::<sqlx::Sqlite>(
        format!("sqlite://{}", stack.dir.path().join("fresh-auth.db").display()).parse().unwrap(),
        1,
        "the fresh auth database",
    )
    .await;
    sqlx::query("ALTER TABLE users ADD COLUMN nickname TEXT").execute(&auth).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (900, 'next release', 1, x'00', 1)",
    )
    .execute(&auth)
    .await
    .unwrap();
    let newer = ctl(&stack, &env, &["--format", "json", "migrate", "--check"]).ok().json();
    assert_eq!(newer["items"][0]["newest"], 900, "{newer}");
    ctl(&stack, &env, &["migrate"]).ok();
    // A migration of this build removed from the record: the services refuse, naming it.
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 2").execute(&auth).await.unwrap();
    let (code, err) = start(&stack, &env, "verifier", &["--listen", "127.0.0.1:0"]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("lacks migration 2"), "{err}");
}
