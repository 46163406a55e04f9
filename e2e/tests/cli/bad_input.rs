//! Point 4: every kind of bad input gets one clear line and the right exit code, never a panic,
//! a backtrace or a debug dump; `--json` output always parses.

use std::process::Command;

use shopgate_e2e::cli::{run, write_file};
use shopgate_e2e::Shop as _;
use shopgate_e2e::{bin, free_port, now, Stack, PASSWORD};

#[tokio::test]
async fn usage_mistakes_exit_2_with_one_line() {
    let stack = Stack::start().await;
    let cases: &[(&[&str], &str)] = &[
        (&["register"], "<EMAIL>"),
        (&["login"], "<EMAIL>"),
        (&["orders", "create"], "--item"),
        (&["orders", "create", "--item", "3"], "expected PRODUCT_ID:QUANTITY"),
        (&["orders", "create", "--item", "3:0"], "quantity must be at least 1"),
        (&["orders", "show"], "<ID>"),
        (&["orders", "show", "abc"], "invalid value 'abc'"),
        (&["users", "locate"], "<ID|EMAIL>"),
        (&["users", "disable", "not-an-email"], "neither a user id nor an email"),
        (&["users", "enable", "0"], "user id must be between 1"),
        (&["catalog", "import"], "<FILE>"),
        (&["catalog", "import", "x.csv", "--file-format", "xml"], "invalid value 'xml'"),
        (&["tokens", "mint"], "--user-id"),
        (&["tokens", "mint", "--user-id", "0"], "user id must be between 1"),
        (&["tokens", "mint", "--user-id", "5", "--ttl", "0"], "--ttl must be between 1 and"),
        (&["completions", "tcsh"], "invalid value 'tcsh'"),
        (&["ordres"], "similar subcommand exists: 'orders'"),
        (&["--jsn", "whoami"], "unexpected argument '--jsn'"),
        (&["login", "a@example.com"], "use --password-stdin"),
        (&["--url", "ftp://x", "products"], "is not an http:// or https:// URL"),
        (&["--url", "localhost:8080", "products"], "is not an http:// or https:// URL"),
    ];
    for (args, want) in cases {
        let r = stack.ctl(args);
        let line = r.one_line_error(2);
        assert!(line.contains(want), "shopctl {args:?}: {line:?} lacks {want:?}");
        assert!(r.stdout.is_empty(), "{r}");
    }
    // A group without its subcommand shows that group's help; --help and --version succeed.
    let r = stack.ctl(&["shards"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("status") && r.stderr.contains("check"), "{r}");
    assert!(stack.ctl(&["--help"]).ok().stdout.contains("Exit codes: 0 ok, 1 failure, 2 usage"));
    stack.ctl(&["--version"]).ok();
}

#[tokio::test]
async fn shop_mistakes_exit_1_with_one_line() {
    let stack = Stack::start().await;
    let email = super::email("cli-bad");
    // No login: exit 4 (as gh), so scripts can tell it from other failures.
    let r = stack.ctl(&["whoami"]);
    assert!(r.one_line_error(4).contains("not logged in to"), "{r}");
    let r = stack.ctl_stdin(&["register", "not-an-email", "--password-stdin"], PASSWORD);
    assert!(r.one_line_error(1).contains("HTTP 400"), "{r}");
    let r = stack.ctl_stdin(&["register", &email, "--password-stdin"], "short");
    assert!(r.one_line_error(1).contains("HTTP 400"), "{r}");
    stack.ctl_stdin(&["register", &email, "--password-stdin"], PASSWORD).ok();
    let r = stack.ctl_stdin(&["register", &email, "--password-stdin"], PASSWORD);
    assert!(r.one_line_error(1).contains("HTTP 409"), "{r}");
    let r = stack.ctl_stdin(&["login", &email, "--password-stdin"], "Wrong-Pass-1!");
    assert!(r.one_line_error(1).contains("wrong email or password"), "{r}");
    let r = stack.ctl_stdin(&["login", &email, "--password-stdin"], "");
    assert!(r.one_line_error(2).contains("the password is empty"), "{r}");

    stack.ctl_stdin(&["login", &email, "--password-stdin"], PASSWORD).ok();
    let r = stack.ctl(&["orders", "create", "--item", "987654:1"]);
    assert!(r.one_line_error(1).contains("product 987654 does not exist: see `shopctl products`"), "{r}");
    let r = stack.ctl(&["orders", "show", "123456"]);
    assert!(r.one_line_error(1).contains("you have no order 123456"), "{r}");
    let r = stack.ctl(&["orders", "cancel", "123456"]);
    assert!(r.one_line_error(1).contains("you have no order 123456"), "{r}");

    // A login revoked behind shopctl's back, and one past its expiry.
    let token = stack.kept_token().expect("token");
    let out = stack.http.post(stack.api("/auth/logout")).bearer_auth(&token).send().await.expect("logout");
    assert_eq!(out.status(), 200);
    let bound = stack.config.verifier.revocation_bound();
    assert!(stack.answers_within("/api/orders", &token, 401, bound).await.is_some());
    // The catalog is public: browsing it needs no valid login.
    assert!(stack.ctl(&["products"]).ok().stdout.contains("sku"));
    for args in [&["orders", "list"][..], &["whoami"]] {
        let r = stack.ctl(args);
        assert!(
            r.one_line_error(4)
                .contains(&format!("is no longer valid (expired or revoked): run `shopctl login {email}`")),
            "{r}"
        );
    }
    let minted = stack.ctl(&["--json", "tokens", "mint", "--user-id", "77", "--ttl", "1"]).ok().json();
    stack.keep_login("old@example.com", minted["access_token"].as_str().expect("token"), now() - 5);
    let r = stack.ctl(&["orders", "list"]);
    assert!(r.one_line_error(4).contains("has expired: run `shopctl login old@example.com`"), "{r}");
    let out = stack.ctl(&["--json", "logout"]).ok().json();
    assert_eq!(out["revoked"], "already_invalid", "{out}");

    // A damaged credentials file.
    std::fs::write(stack.credentials_path(), "{not json").expect("write");
    let r = stack.ctl(&["whoami"]);
    assert!(r.one_line_error(1).contains("is damaged; delete it and log in again"), "{r}");
}

#[tokio::test]
async fn an_unreachable_shop_or_database_is_one_line_and_exit_1() {
    let stack = Stack::start().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let r = stack.ctl_stdin(&["--url", &dead, "register", "x@example.com", "--password-stdin"], PASSWORD);
    assert!(r.one_line_error(1).contains(&format!("cannot reach the shop at {dead}")), "{r}");
    let r = stack.ctl_stdin(&["--url", &dead, "login", "x@example.com", "--password-stdin"], PASSWORD);
    assert!(r.one_line_error(1).contains("cannot reach the shop"), "{r}");

    let email = super::email("cli-gone");
    stack.register(&email).await;
    stack.ctl_stdin(&["login", &email, "--password-stdin"], PASSWORD).ok();
    stack.kill("nginx");
    for args in [&["products"][..], &["orders", "list"], &["whoami"], &["orders", "create", "--item", "1:1"]] {
        let r = stack.ctl(args);
        assert!(r.one_line_error(1).contains("cannot reach the shop"), "{r}");
    }

    // Operator commands against databases that are not there.
    let text = std::fs::read_to_string(&stack.config_path).expect("config");
    let gone = text
        .replace("sqlite:shard-a.db", "sqlite:gone/a.db")
        .replace("sqlite:shard-b.db", "sqlite:gone/b.db")
        .replace("sqlite:auth.db", "sqlite:gone/auth.db");
    let cfg = write_file(stack.dir.path(), "gone.toml", &gone);
    let file = write_file(stack.dir.path(), "one.csv", "sku,name,category,price_cents\nA-1,a,c,1\n");
    for args in [
        &["shards", "status"][..],
        &["shards", "check"],
        &["users", "locate", "x@example.com"],
        &["users", "disable", "5"],
        &["users", "enable", "x@example.com"],
        &["catalog", "import", &file],
    ] {
        let mut full = vec!["--config", cfg.as_str()];
        full.extend_from_slice(args);
        let r = stack.ctl(&full);
        let line = r.one_line_error(1);
        assert!(line.contains("does not exist"), "{r}");
    }
    // A MySQL URL with a password that nobody answers at: the password never shows.
    let port = free_port();
    let secret = text.replace("sqlite:shard-a.db", &format!("mysql://shop:s3cret-pw@127.0.0.1:{port}/shard_a"));
    let cfg = write_file(stack.dir.path(), "secret.toml", &secret);
    let r = stack.ctl(&["--config", &cfg, "--format", "table", "shards", "status"]);
    assert!(r.one_line_error(1).contains("shard a"), "{r}");
    assert!(r.stdout.contains("DOWN"), "{r}");
    // The cause, not the pool's "timed out".
    assert!(r.stderr.contains("Connection refused") && !r.stderr.contains("timed out"), "{r}");
    assert!(!r.stdout.contains("s3cret") && !r.stderr.contains("s3cret"), "the password leaked:\n{r}");
    assert!(r.stderr.contains("mysql://shop:***@"), "{r}");
}

#[tokio::test]
async fn a_missing_config_or_a_bad_file_is_one_line_and_exit_1() {
    let stack = Stack::start().await;
    // No --config, no SHOP_CONFIG, and no var/shop.toml above the working folder.
    let nowhere = tempfile::tempdir().expect("tempdir");
    for args in [
        &["shards", "status"][..],
        &["users", "locate", "1"],
        &["tokens", "mint", "--user-id", "1"],
        &["nginx", "render"],
    ] {
        let mut cmd = Command::new(bin("shopctl"));
        cmd.args(args).env_remove("SHOP_CONFIG").env("XDG_CONFIG_HOME", nowhere.path()).current_dir(nowhere.path());
        let r = run(cmd, None);
        assert!(
            r.one_line_error(1)
                .contains("no stack config found: start the stack with scripts/up, or pass --config FILE"),
            "{r}"
        );
    }
    let r = stack.ctl(&["--config", "/nonexistent/shop.toml", "shards", "check"]);
    assert!(r.one_line_error(1).contains("cannot read config /nonexistent/shop.toml"), "{r}");
    let bad = write_file(stack.dir.path(), "bad.toml", "[jwt\n");
    let r = stack.ctl(&["--config", &bad, "shards", "status"]);
    assert!(r.one_line_error(1).contains("bad.toml"), "{r}");

    let dir = stack.dir.path();
    let cases: Vec<(String, &str)> = vec![
        (dir.join("missing.csv").to_string_lossy().into_owned(), "cannot read"),
        (dir.to_string_lossy().into_owned(), "cannot read"),
        (write_file(dir, "empty.csv", ""), "the file is empty"),
        (write_file(dir, "header.csv", "sku,name,category,price_cents\n"), "has no products"),
        (write_file(dir, "cols.csv", "sku,title,category,price_cents\n"), "unknown column \"title\""),
        (write_file(dir, "short.csv", "sku,name,category,price_cents\nA,a,c\n"), "line 2: expected 4 fields"),
        (
            write_file(dir, "dup.csv", "sku,name,category,price_cents\nA,a,c,1\nA,b,c,2\n"),
            "row 2 (line 3): sku \"A\" already appears in row 1",
        ),
        (write_file(dir, "broken.json", "[{\"sku\": "), "not valid JSON"),
        (write_file(dir, "object.json", "{\"sku\": \"A\"}"), "expected a JSON array"),
        (
            write_file(dir, "float.json", r#"[{"sku":"A","name":"a","category":"c","price_cents":1.5}]"#),
            "row 1: price_cents must be a whole number",
        ),
    ];
    let before = stack.count_per_shard("products").await;
    for (file, want) in cases {
        let r = stack.ctl(&["catalog", "import", &file]);
        assert!(r.one_line_error(1).contains(want), "{file}: {r}");
    }
    assert_eq!(stack.count_per_shard("products").await, before);
}

#[tokio::test]
async fn every_json_output_parses() {
    let stack = Stack::start().await;
    let email = super::email("cli-json");
    let pw = format!("{PASSWORD}\n");
    let file = write_file(stack.dir.path(), "one.csv", "sku,name,category,price_cents\nJS-1,a,c,1\n");
    let runs: Vec<Vec<String>> = vec![
        vec!["register".into(), email.clone(), "--password-stdin".into()],
        vec!["login".into(), email.clone(), "--password-stdin".into()],
        vec!["whoami".into()],
        vec!["products".into(), "--limit".into(), "2".into()],
        vec!["orders".into(), "list".into()],
        vec!["shards".into(), "status".into()],
        vec!["shards".into(), "check".into()],
        vec!["users".into(), "locate".into(), email.clone()],
        vec!["catalog".into(), "import".into(), "--dry-run".into(), file.clone()],
        vec!["catalog".into(), "import".into(), file],
        vec!["tokens".into(), "mint".into(), "--user-id".into(), "9".into()],
        vec!["nginx".into(), "render".into(), "--map-only".into()],
        vec!["logout".into()],
        vec!["users".into(), "disable".into(), email.clone()],
        vec!["users".into(), "enable".into(), email],
    ];
    for args in runs {
        let mut full = vec!["--json"];
        full.extend(args.iter().map(String::as_str));
        let r = stack.ctl_stdin(&full, &pw).ok();
        let v = r.json();
        assert!(v.is_object() || v.is_array(), "shopctl {full:?}: {v}");
        assert!(!r.stdout.contains("┌") && !r.stdout.contains("│"), "a table in --json output:\n{r}");
    }
}
