//! Point 2: every operator command on the two-shard SQLite stack, straight against its databases.

use std::time::Instant;

use serde_json::Value;
use shopgate_core::shardmap::bucket;
use shopgate_core::UserId;
use shopgate_e2e::cli::{exec, scalar, write_file};
use shopgate_e2e::Shop as _;
use shopgate_e2e::{Options, Stack, PASSWORD};

/// Registers, logs in and places one order through nginx; returns (id, email, token).
async fn customer(stack: &Stack, tag: &str) -> (u64, String, String) {
    let email = super::email(tag);
    let id = stack.register(&email).await["id"].as_u64().expect("id");
    let token = stack.login(&email).await;
    stack.order(&token).await;
    (id, email, token)
}

fn shard_of(stack: &Stack, id: u64) -> String {
    stack.config.shard_map.shard_for(UserId::new(id).expect("id")).to_string()
}

#[tokio::test]
async fn shards_status_reports_every_shard_and_fails_when_a_primary_is_down() {
    let stack = Stack::start().await;
    let (id, _, _) = customer(&stack, "cli-status").await;
    let owner = shard_of(&stack, id);

    let status = stack.ctl(&["--json", "shards", "status"]).ok().json();
    let shards = status["items"].as_array().expect("shards");
    assert_eq!(shards.len(), 2, "{status}");
    for s in shards {
        let name = s["shard"].as_str().unwrap_or_default();
        assert_eq!(s["primary"]["reachable"], true, "{s}");
        assert_eq!(s["replica"], Value::Null, "{s}");
        assert_eq!(s["replication_state"], "none", "{s}");
        assert_eq!(s["backends"][0]["state"], "ready", "{s}");
        let mine = u64::from(name == owner);
        assert_eq!(s["orders"].as_u64(), Some(mine), "{s}");
        assert_eq!(s["last_write"].is_string(), mine == 1, "{s}");
    }
    let table = stack.ctl(&["--format", "table", "shards", "status"]).ok();
    for word in ["shard", "primary", "replica", "lag", "users", "orders", "last write", "none", "n/a", "up"] {
        assert!(table.stdout.contains(word), "no {word:?} in\n{table}");
    }
    // Buckets for people: the map's even and odd halves by name, not 500 numbers per row.
    assert!(table.stdout.contains(" even ") && table.stdout.contains(" odd "), "{table}");
    assert!(table.stdout.lines().all(|l| l.chars().count() < 160), "a row too wide to read:\n{table}");

    // The same stack with shard b's primary pointing at a file that is not there.
    let text = std::fs::read_to_string(&stack.config_path).expect("config");
    let broken =
        write_file(stack.dir.path(), "broken.toml", &text.replace("sqlite:shard-b.db", "sqlite:gone/shard-b.db"));
    let down = stack.ctl(&["--config", &broken, "--format", "table", "shards", "status"]);
    let line = down.one_line_error(1);
    assert!(line.contains("shard b's primary") && line.contains("does not exist") && line.contains("503"), "{down}");
    assert!(down.stdout.contains("DOWN"), "{down}");
    let down_json = stack.ctl(&["--config", &broken, "--json", "shards", "status"]);
    assert_eq!(down_json.code, 1);
    assert_eq!(down_json.json()["items"][1]["primary"]["reachable"], false, "{down_json}");
}

#[tokio::test]
async fn shards_check_is_clean_then_names_a_planted_row_and_exits_1() {
    let stack = Stack::start().await;
    let (id, _, _) = customer(&stack, "cli-check").await;
    let clean = stack.ctl(&["--format", "table", "shards", "check"]).ok();
    assert!(clean.stdout.contains("clean"), "{clean}");
    assert_eq!(stack.ctl(&["--json", "shards", "check"]).ok().json()["clean"], true);

    // An order of this user, written by mistake on the shard that does not own them.
    let owner = shard_of(&stack, id);
    let wrong = if owner == "a" { "b" } else { "a" };
    let db = stack.shard_db(wrong).await;
    exec(&db, &format!("INSERT INTO orders (id, user_id, status, total_cents, created_at, updated_at) VALUES (777000, {id}, 'placed', 100, 1, 1)")).await;
    db.close().await;

    let found = stack.ctl(&["--format", "table", "shards", "check"]);
    let line = found.one_line_error(1);
    assert!(line.contains("1 row is on a shard that does not own its user"), "{found}");
    let row = found
        .stdout
        .lines()
        .find(|l| l.contains("777000"))
        .unwrap_or_else(|| panic!("planted row not listed:\n{found}"));
    for cell in [wrong, "orders", &id.to_string(), owner.as_str()] {
        assert!(row.contains(cell), "{cell:?} missing from {row:?}");
    }
    let json = stack.ctl(&["--json", "shards", "check"]);
    assert_eq!(json.code, 1);
    let v = json.json();
    assert_eq!(v["clean"], false);
    assert_eq!(v["items"][0]["shard"], wrong);
    assert_eq!(v["items"][0]["table"], "orders");
    assert_eq!(v["items"][0]["id"], "777000");
    assert_eq!(v["items"][0]["user_id"].as_u64(), Some(id));
    assert_eq!(v["items"][0]["owner"], owner.as_str());
}

#[tokio::test]
async fn users_locate_by_id_and_by_email() {
    let stack = Stack::start().await;
    let (id, email, _) = customer(&stack, "cli-locate").await;
    let owner = shard_of(&stack, id);
    let user = UserId::new(id).expect("id");

    for who in [id.to_string(), email.to_uppercase()] {
        let v = stack.ctl(&["--json", "users", "locate", &who]).ok().json();
        assert_eq!(v["id"].as_u64(), Some(id), "{v}");
        assert_eq!(v["email"], email.as_str());
        assert_eq!(v["bucket"].as_u64(), Some(u64::from(bucket(user))));
        assert_eq!(v["shard"], owner.as_str());
        assert_eq!(v["orders_on_shard"].as_u64(), Some(1));
        assert_eq!(v["is_active"], true);
    }
    let table = stack.ctl(&["--format", "table", "users", "locate", &email]).ok();
    assert!(table.stdout.contains(&format!("{:03}", bucket(user))) && table.stdout.contains("bucket"), "{table}");

    // An id nobody has fails like an email nobody has (exit 1), and says where it would live.
    let missing = stack.ctl(&["users", "locate", "424242"]);
    let line = missing.one_line_error(1);
    assert!(line.contains("there is no user 424242") && line.contains("bucket 242 is on shard a"), "{missing}");
    let missing = stack.ctl(&["users", "locate", "nobody@example.com"]);
    assert!(missing.one_line_error(1).contains("no user with email nobody@example.com"), "{missing}");
}

#[tokio::test]
async fn users_disable_revokes_tokens_within_the_bound_and_enable_restores_login() {
    let stack = Stack::start().await;
    let (id, email, token) = customer(&stack, "cli-disable").await;
    let (_, _, bystander) = customer(&stack, "cli-bystander").await;
    assert_eq!(stack.http.get(stack.api("/api/orders")).bearer_auth(&token).send().await.expect("get").status(), 200);

    let started = Instant::now();
    let v = stack.ctl(&["--json", "users", "disable", &email]).ok().json();
    let took = started.elapsed();
    assert_eq!(v["is_active"], false, "{v}");
    assert_eq!(v["id"].as_u64(), Some(id));
    let bound = stack.config.verifier.revocation_bound();
    let after = stack.answers_within("/api/orders", &token, 401, bound).await;
    assert!(
        after.is_some(),
        "the disabled user's token still works through nginx {bound:?} after the disable (which took {took:?})"
    );
    // Only that user.
    assert_eq!(
        stack.http.get(stack.api("/api/orders")).bearer_auth(&bystander).send().await.expect("get").status(),
        200
    );

    let refused = stack.ctl_stdin(&["login", &email, "--password-stdin"], PASSWORD);
    assert!(refused.one_line_error(1).contains("wrong email or password"), "{refused}");
    let auth = stack.auth_db().await;
    assert_eq!(scalar(&auth, &format!("SELECT is_active FROM users WHERE id = {id}")).await, 0);

    let enabled = stack.ctl(&["--format", "table", "users", "enable", &id.to_string()]).ok();
    assert!(enabled.stdout.contains("Enabled user"), "{enabled}");
    assert_eq!(scalar(&auth, &format!("SELECT is_active FROM users WHERE id = {id}")).await, 1);
    auth.close().await;
    stack.ctl_stdin(&["login", &email, "--password-stdin"], PASSWORD).ok();
    let fresh = stack.kept_token().expect("a new token");
    let r = stack.http.get(stack.api("/api/orders")).bearer_auth(&fresh).send().await.expect("get");
    assert_eq!(r.status(), 200, "a login after enable must work at once");
    // The token revoked by the disable stays revoked.
    assert_eq!(stack.http.get(stack.api("/api/orders")).bearer_auth(&token).send().await.expect("get").status(), 401);
    let locate = stack.ctl(&["--json", "users", "locate", &email]).ok().json();
    assert_eq!(locate["is_active"], true);
}

#[tokio::test]
async fn tokens_mint_and_nginx_render_still_work() {
    let stack = Stack::start().await;
    let minted = stack.ctl(&["--json", "tokens", "mint", "--user-id", "4242"]).ok().json();
    let token = minted["access_token"].as_str().expect("token");
    assert_eq!(stack.http.get(stack.api("/api/orders")).bearer_auth(token).send().await.expect("get").status(), 200);
    let plain = stack.ctl(&["tokens", "mint", "--user-id", "4242"]).ok();
    assert_eq!(plain.stdout.trim().split('.').count(), 3, "{plain}");

    let map = stack.ctl(&["nginx", "render", "--map-only"]).ok();
    assert!(map.stdout.contains("    042 a;") && map.stdout.contains("    999 b;"), "{map}");
    let conf = stack.ctl(&["--json", "nginx", "render"]).ok().json();
    assert!(conf["config"].as_str().is_some_and(|c| c.contains("upstream shard_a")), "{conf}");
    let bash = stack.ctl(&["completions", "bash"]).ok();
    assert!(bash.stdout.contains("shopctl") && bash.stdout.contains("catalog"), "completions lack the new commands");
}

/// Issue 13: an account locked out by failed logins is let in at once on every verifier, each of
/// which keeps its own throttle in memory.
#[tokio::test]
async fn users_unlock_lets_a_locked_out_account_log_in_at_once_on_every_verifier() {
    // The address limit far above what the test spends, so only the account's limit throttles.
    let settings =
        vec![("verifier.login_max_failures_per_account", "3"), ("verifier.login_max_failures_per_address", "1000")];
    let stack = Stack::start_with(Options { verifiers: 2, settings, ..Default::default() }).await;
    let email = super::email("cli-unlock");
    stack.register(&email).await;
    let login = |base: String, password: &'static str| {
        let email = email.clone();
        let http = stack.http.clone();
        async move {
            let form = [("username", email.as_str()), ("password", password)];
            let r = http.post(format!("{base}/auth/token")).form(&form).send().await.expect("login");
            r.status().as_u16()
        }
    };
    let verifiers: Vec<String> = stack.config.verifier.listen.iter().map(|a| format!("http://{a}")).collect();

    // Wrong passwords through nginx until both verifiers refuse (nginx spreads logins over them).
    let mut statuses = Vec::new();
    while statuses.iter().rev().take_while(|s| **s == 429).count() < 6 {
        assert!(statuses.len() < 40, "never locked out: {statuses:?}");
        statuses.push(login(stack.url.clone(), "Not-the-Passw0rd!").await);
    }
    assert!(statuses.iter().all(|s| [401, 429].contains(s)), "{statuses:?}");
    // The right password is refused too, on each verifier (a refusal does not count or reset).
    assert_eq!(login(stack.url.clone(), PASSWORD).await, 429);
    for v in &verifiers {
        assert_eq!(login(v.clone(), PASSWORD).await, 429, "verifier {v} lets the locked account in");
    }

    let unlocked = stack.ctl(&["--json", "users", "unlock", &email.to_uppercase()]).ok().json();
    assert_eq!((&unlocked["email"], &unlocked["unlocked"]), (&Value::from(email.as_str()), &Value::from(true)));
    // At once, on every verifier and through nginx.
    for v in &verifiers {
        assert_eq!(login(v.clone(), PASSWORD).await, 200, "verifier {v} still refuses after the unlock");
    }
    assert_eq!(login(stack.url.clone(), PASSWORD).await, 200);

    // An unknown account is exit 1, as for `users locate`.
    let missing = stack.ctl(&["users", "unlock", "nobody@example.com"]);
    assert!(missing.one_line_error(1).contains("no user with email nobody@example.com"), "{missing}");
}
