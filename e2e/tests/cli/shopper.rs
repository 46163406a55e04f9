//! Point 1: a shopper's whole session with shopctl, ending in a logout the server enforces.

use std::os::unix::fs::PermissionsExt as _;

use shopgate_e2e::Shop as _;
use shopgate_e2e::{Stack, PASSWORD};

use super::pty::Pty;

#[tokio::test]
async fn a_shoppers_whole_session_from_register_to_logout() {
    let stack = Stack::start().await;
    let email = super::email("cli-shopper");
    let pw = format!("{PASSWORD}\n");

    // Browsing comes first: the catalog is public, no account or login needed.
    let browsed = stack.ctl(&["products", "--limit", "2"]).ok();
    assert!(browsed.stdout.contains("BK-0001"), "{browsed}");
    let categories = stack.ctl(&["--json", "categories"]).ok().json();
    let first = &categories["items"].as_array().expect("an array of categories")[0];
    let in_first = stack.ctl(&["--json", "products", "--category", &first["id"].to_string()]).ok().json();
    let in_first = in_first["items"].as_array().expect("products");
    assert!(!in_first.is_empty() && in_first.iter().all(|p| p["category_id"] == first["id"]), "{in_first:?}");
    let table = stack.ctl(&["--format", "table", "categories"]).ok();
    assert!(table.stdout.contains(first["name"].as_str().expect("a name")), "{table}");

    let user = stack.ctl_stdin(&["--json", "register", &email, "--password-stdin"], &pw).ok().json();
    assert_eq!(user["email"], email.as_str());
    let user_id = user["id"].as_u64().expect("an id");

    let login = stack.ctl_stdin(&["--format", "table", "login", &email, "--password-stdin"], &pw).ok();
    assert!(login.stdout.contains(&format!("Logged in to {} as {email}", stack.url)), "{login}");
    let token = stack.kept_token().expect("login kept a token");
    assert!(!login.stdout.contains(&token) && !login.stderr.contains(&token), "the token was printed");
    let mode = std::fs::metadata(stack.credentials_path()).expect("credentials file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "credentials file mode {mode:o}");

    let me = stack.ctl(&["--json", "whoami"]).ok().json();
    assert_eq!(me["id"].as_u64(), Some(user_id));

    // People get a table, scripts get JSON.
    let table = stack.ctl(&["--format", "table", "products"]).ok();
    assert!(table.stdout.contains("sku") && table.stdout.contains("BK-0001"), "{table}");
    let products = stack.ctl(&["--json", "products"]).ok().json();
    let list = products["items"].as_array().expect("an array of products");
    assert!(list.len() >= 3, "{products}");
    let (p1, p3) = (&list[0], &list[2]);

    let order = stack
        .ctl(&[
            "--json",
            "orders",
            "create",
            "--item",
            &format!("{}:2", p1["id"]),
            "--item",
            &format!("{}:1", p3["id"]),
        ])
        .ok()
        .json();
    let order_id = order["id"].as_u64().expect("order id");
    let want = 2 * p1["price_cents"].as_i64().unwrap_or(0) + p3["price_cents"].as_i64().unwrap_or(0);
    assert_eq!(order["total_cents"].as_i64(), Some(want), "{order}");
    assert_eq!(order["status"], "placed");

    let listed = stack.ctl(&["--json", "orders", "list"]).ok().json();
    let ids: Vec<u64> = listed["items"].as_array().expect("orders").iter().filter_map(|o| o["id"].as_u64()).collect();
    assert_eq!(ids, vec![order_id]);
    let list_table = stack.ctl(&["--format", "table", "orders", "list"]).ok();
    assert!(list_table.stdout.contains(&order_id.to_string()), "{list_table}");

    let shown = stack.ctl(&["--json", "orders", "show", &order_id.to_string()]).ok().json();
    assert_eq!(shown["items"].as_array().map(Vec::len), Some(2), "{shown}");
    let show_table = stack.ctl(&["--format", "table", "orders", "show", &order_id.to_string()]).ok();
    assert!(show_table.stdout.contains(&format!("Order {order_id}: placed")), "{show_table}");

    let cancelled = stack.ctl(&["--json", "orders", "cancel", &order_id.to_string()]).ok().json();
    assert_eq!(cancelled["status"], "cancelled");

    // Logout revokes the token on the server, then forgets it here.
    let out = stack.ctl(&["--json", "logout"]).ok().json();
    assert_eq!(out["revoked"], true, "{out}");
    assert_eq!(stack.kept_token(), None);
    let bound = stack.config.verifier.revocation_bound();
    assert!(
        stack.answers_within("/api/orders", &token, 401, bound).await.is_some(),
        "the logged-out token still works through nginx after {bound:?}"
    );
    let after = stack.ctl(&["whoami"]);
    assert!(after.one_line_error(4).contains("not logged in"), "{after}");
    let again = stack.ctl(&["--format", "table", "logout"]).ok();
    assert!(again.stdout.contains("Not logged in"), "{again}");
}

#[tokio::test]
async fn logout_with_the_shop_down_keeps_the_token_unless_told_to_forget_it() {
    let stack = Stack::start().await;
    let email = super::email("cli-down");
    stack.register(&email).await;
    stack.ctl_stdin(&["login", &email, "--password-stdin"], PASSWORD).ok();
    let token = stack.kept_token();
    stack.kill("nginx");
    // The token is still valid on the server: keeping it is the only way to revoke it later.
    let kept = stack.ctl(&["logout"]);
    let line = kept.one_line_error(1);
    assert!(line.contains("could not be revoked") && line.contains("still kept here"), "{kept}");
    assert!(line.contains("shopctl logout --forget"), "{kept}");
    assert_eq!(stack.kept_token(), token);
    let out = stack.ctl(&["--format", "table", "logout", "--forget"]).ok();
    assert!(out.stdout.contains("Forgot the login"), "{out}");
    assert!(
        out.stderr.contains("warning: the server did not revoke the token") && out.stderr.contains("cannot reach"),
        "{out}"
    );
    assert_eq!(stack.kept_token(), None);
}

#[tokio::test]
async fn scripts_can_pass_a_token_in_shopctl_token_instead_of_logging_in() {
    let stack = Stack::start().await;
    let user = 4242;
    let token = stack.mint(user);
    let order =
        stack.ctl_env(&["--json", "orders", "create", "--item", "1:1"], &[("SHOPCTL_TOKEN", &token)]).ok().json();
    assert_eq!(order["user_id"].as_u64(), Some(user), "{order}");
    let listed = stack.ctl_env(&["--json", "orders", "list"], &[("SHOPCTL_TOKEN", &token)]).ok().json();
    assert_eq!(listed["items"][0]["id"], order["id"], "{listed}");
    assert_eq!(stack.kept_token(), None, "nothing was kept");
    // A refused one says which token it was, and exits 4 like a missing login.
    let r = stack.ctl_env(&["orders", "list"], &[("SHOPCTL_TOKEN", "not-a-token")]);
    assert!(r.one_line_error(4).contains("SHOPCTL_TOKEN was refused"), "{r}");
    // Without it, there is no login.
    assert!(stack.ctl(&["orders", "list"]).one_line_error(4).contains("not logged in"));
}

#[tokio::test]
async fn too_many_failed_logins_say_how_long_to_wait() {
    let settings = vec![("verifier.login_max_failures_per_account", "2")];
    let stack = Stack::start_with(shopgate_e2e::Options { settings, ..Default::default() }).await;
    let email = super::email("cli-throttled");
    stack.register(&email).await;
    for _ in 0..2 {
        let r = stack.ctl_stdin(&["login", &email, "--password-stdin"], "not-the-password\n");
        assert!(r.one_line_error(1).contains("wrong email or password"), "{r}");
    }
    let r = stack.ctl_stdin(&["login", &email, "--password-stdin"], "not-the-password\n");
    let line = r.one_line_error(1);
    let secs: u64 = line
        .split("try again in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no wait in {line:?}"));
    assert!((1..=stack.config.verifier.login_window_seconds).contains(&secs), "{line}");
}

#[tokio::test]
async fn register_on_a_terminal_asks_for_the_password_twice_without_echo() {
    let stack = Stack::start().await;
    let email = super::email("cli-typo");
    // Two different answers: refused before anything is sent.
    let mut t = Pty::spawn(stack.shopctl(), &["register", &email], 100);
    t.expect("Password: ");
    t.type_password(PASSWORD);
    t.expect("Repeat the password: ");
    t.type_password("Corr3ct-Horse?");
    let (code, screen) = t.finish();
    assert_eq!(code, 1, "{screen}");
    assert!(screen.contains("shopctl: the two passwords differ: nothing was sent"), "{screen}");
    assert!(!screen.contains("Corr3ct"), "a password was echoed:\n{screen}");
    let r = stack.ctl_stdin(&["login", &email, "--password-stdin"], &format!("{PASSWORD}\n"));
    assert!(r.one_line_error(1).contains("wrong email or password"), "registered after all: {r}");

    // The same answer twice: registered, with that password.
    let mut t = Pty::spawn(stack.shopctl(), &["register", &email], 100);
    t.expect("Password: ");
    t.type_password(PASSWORD);
    t.expect("Repeat the password: ");
    t.type_password(PASSWORD);
    let (code, screen) = t.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains(&format!("Next: shopctl login {email}")), "{screen}");
    assert!(!screen.contains("Corr3ct"), "a password was echoed:\n{screen}");
    stack.ctl_stdin(&["login", &email, "--password-stdin"], &format!("{PASSWORD}\n")).ok();

    // From standard input it stays one line: a second line is not asked for.
    let other = super::email("cli-stdin");
    let user = stack.ctl_stdin(&["--json", "register", &other, "--password-stdin"], &format!("{PASSWORD}\n")).ok();
    assert_eq!(user.json()["email"], other.as_str());
}

const NEW_PASSWORD: &str = "N3w-Battery-Staple!";

#[tokio::test]
async fn change_password_from_stdin_refuses_every_old_token_and_keeps_this_login() {
    let stack = Stack::start().await;
    let email = super::email("cli-newpw");
    stack.register(&email).await;
    // Without a login, it says so before asking anything.
    assert!(stack.ctl(&["change-password"]).one_line_error(4).contains("not logged in"));
    let elsewhere = stack.login(&email).await;
    stack.ctl_stdin(&["login", &email, "--password-stdin"], &format!("{PASSWORD}\n")).ok();
    let old = stack.kept_token().expect("login kept a token");

    let wrong = stack.ctl_stdin(&["change-password", "--password-stdin"], &format!("Wrong-0ne!\n{NEW_PASSWORD}\n"));
    assert!(wrong.one_line_error(1).contains("the current password is wrong"), "{wrong}");
    let one_line = stack.ctl_stdin(&["change-password", "--password-stdin"], &format!("{PASSWORD}\n"));
    assert!(
        one_line.one_line_error(2).contains("reads two lines: the current password, then the new one"),
        "{one_line}"
    );
    let weak = stack.ctl_stdin(&["change-password", "--password-stdin"], &format!("{PASSWORD}\nshort\n"));
    assert!(weak.one_line_error(1).contains("weak_password"), "{weak}");
    assert_eq!(stack.kept_token().as_ref(), Some(&old), "a refused change touched the login");

    let changed =
        stack.ctl_stdin(&["--json", "change-password", "--password-stdin"], &format!("{PASSWORD}\n{NEW_PASSWORD}\n"));
    let changed = changed.ok().json();
    assert_eq!(
        (&changed["changed"], &changed["logged_in"], &changed["email"]),
        (&true.into(), &true.into(), &email.as_str().into())
    );
    let new = stack.kept_token().expect("the new login is kept");
    assert_ne!(new, old);
    // Every token issued before is refused, as the API promises: this one's and another session's.
    let bound = stack.config.verifier.revocation_bound();
    for token in [&old, &elsewhere] {
        assert!(stack.answers_within("/api/orders", token, 401, bound).await.is_some(), "an old token still works");
    }
    assert_eq!(stack.ctl(&["--json", "whoami"]).ok().json()["email"], email.as_str());
    let r = stack.ctl_stdin(&["login", &email, "--password-stdin"], &format!("{PASSWORD}\n"));
    assert!(r.one_line_error(1).contains("wrong email or password"), "{r}");
    stack.ctl_stdin(&["login", &email, "--password-stdin"], &format!("{NEW_PASSWORD}\n")).ok();
}

#[tokio::test]
async fn change_password_on_a_terminal_asks_the_new_one_twice_without_echo() {
    let stack = Stack::start().await;
    let email = super::email("cli-newpw-tty");
    stack.register(&email).await;
    stack.ctl_stdin(&["login", &email, "--password-stdin"], &format!("{PASSWORD}\n")).ok();
    let old = stack.kept_token();

    let mut t = Pty::spawn(stack.shopctl(), &["change-password"], 100);
    t.expect("Current password: ");
    t.type_password(PASSWORD);
    t.expect("New password: ");
    t.type_password(NEW_PASSWORD);
    t.expect("Repeat the new password: ");
    t.type_password("N3w-Battery-Stapel!");
    let (code, screen) = t.finish();
    assert_eq!(code, 1, "{screen}");
    assert!(screen.contains("the two passwords differ: nothing was sent"), "{screen}");
    assert_eq!(stack.kept_token(), old);
    stack.ctl(&["whoami"]).ok();

    let mut t = Pty::spawn(stack.shopctl(), &["change-password"], 100);
    t.expect("Current password: ");
    t.type_password(PASSWORD);
    t.expect("New password: ");
    t.type_password(NEW_PASSWORD);
    t.expect("Repeat the new password: ");
    t.type_password(NEW_PASSWORD);
    let (code, screen) = t.finish();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains(&format!("Logged in again to {} as {email}", stack.url)), "{screen}");
    for pw in [PASSWORD, NEW_PASSWORD, "Battery", "Horse"] {
        assert!(!screen.contains(pw), "{pw:?} was echoed:\n{screen}");
    }
    assert_ne!(stack.kept_token(), old);
    stack.ctl(&["whoami"]).ok();
    stack.ctl_stdin(&["login", &email, "--password-stdin"], &format!("{NEW_PASSWORD}\n")).ok();
}

#[tokio::test]
async fn profile_show_and_create_on_the_users_shard() {
    let stack = Stack::start().await;
    let email = super::email("cli-profile");
    let user = stack.register(&email).await;
    assert!(stack.ctl(&["profile", "show"]).one_line_error(4).contains("not logged in"));
    stack.ctl_stdin(&["login", &email, "--password-stdin"], &format!("{PASSWORD}\n")).ok();

    let none = stack.ctl(&["profile", "show"]);
    assert!(none.one_line_error(1).contains("no profile on your shard yet: `shopctl profile create`"), "{none}");
    let created = stack.ctl(&["--format", "table", "profile", "create"]).ok();
    assert!(created.stdout.contains(&email) && created.stdout.contains("Created."), "{created}");
    let again = stack.ctl(&["--format", "table", "profile", "create"]).ok();
    assert!(again.stdout.contains("It was there already."), "{again}");

    let shown = stack.ctl(&["--json", "profile", "show"]).ok().json();
    assert_eq!((&shown["id"], &shown["email"], &shown["is_active"]), (&user["id"], &user["email"], &true.into()));
    let tsv = stack.ctl(&["profile", "show"]).ok();
    assert_eq!(tsv.stdout.lines().next(), Some("id\temail\tis_active\tcreated_at"), "{tsv}");
}

#[tokio::test]
async fn register_and_whoami_print_the_account_with_the_same_columns() {
    let stack = Stack::start().await;
    let (a, b) = (super::email("cli-cols-a"), super::email("cli-cols-b"));
    let pw = format!("{PASSWORD}\n");
    let registered = stack.ctl_stdin(&["register", &a, "--password-stdin"], &pw).ok();
    let table = stack.ctl_stdin(&["--format", "table", "register", &b, "--password-stdin"], &pw).ok();
    stack.ctl_stdin(&["login", &a, "--password-stdin"], &pw).ok();
    let me = stack.ctl(&["whoami"]).ok();
    let me_table = stack.ctl(&["--format", "table", "whoami"]).ok();
    let header = |out: &str, n: usize| out.lines().nth(n).unwrap_or_default().to_owned();
    assert_eq!(header(&registered.stdout, 0), "id\temail\tis_active\tis_admin\tcreated_at", "{registered}");
    assert_eq!(header(&me.stdout, 0), header(&registered.stdout, 0), "{me}");
    // The table's header is its second line, under the top border.
    let names = |out: &str| {
        header(out, 1).split(['│', '┆']).map(str::trim).filter(|c| !c.is_empty()).collect::<Vec<_>>().join(",")
    };
    assert_eq!(names(&me_table.stdout), "id,email,active,admin,created", "{me_table}");
    assert_eq!(names(&table.stdout), names(&me_table.stdout), "{table}");
}

#[tokio::test]
async fn tables_fit_an_80_column_terminal_without_cutting_a_header() {
    let stack = Stack::start().await;
    let email = super::email("cli-a-rather-long-address-for-a-shopper-of-this");
    stack.register(&email).await;
    stack.ctl_stdin(&["login", &email, "--password-stdin"], &format!("{PASSWORD}\n")).ok();
    // On a terminal, without colour (NO_COLOR): the table still knows the terminal's width.
    let (code, screen) = Pty::spawn(stack.shopctl(), &["whoami"], 80).finish();
    assert_eq!(code, 0, "{screen}");
    for line in screen.lines() {
        assert!(line.trim_end_matches('\r').chars().count() <= 80, "a line over 80 columns:\n{screen}");
    }
    for header in ["id", "email", "active", "admin", "created"] {
        let whole = screen.lines().any(|l| l.split(['│', '┆']).any(|c| c.trim() == header));
        assert!(whole, "the header {header:?} is cut:\n{screen}");
    }
}

#[tokio::test]
async fn without_a_config_or_url_shopctl_says_where_it_connects() {
    let stack = Stack::start().await;
    let nowhere = tempfile::tempdir().expect("tempdir");
    // No --config, SHOP_CONFIG or var/shop.toml above the working folder, and no --url or SHOPCTL_URL.
    let bare = |args: &[&str]| {
        let mut cmd = std::process::Command::new(shopgate_e2e::bin("shopctl"));
        cmd.args(args)
            .env_remove("SHOP_CONFIG")
            .env_remove("SHOPCTL_URL")
            .env("XDG_CONFIG_HOME", nowhere.path())
            .current_dir(nowhere.path());
        shopgate_e2e::cli::run(cmd, None)
    };
    let notes = |stderr: &str| stderr.lines().filter(|l| l.starts_with("note:")).map(str::to_owned).collect::<Vec<_>>();
    // logout without a kept login needs the URL and nothing else: it connects nowhere. The note
    // comes once, although logout looks the URL up twice.
    let r = bare(&["--format", "table", "logout"]).ok();
    assert_eq!(notes(&r.stderr), ["note: no stack config found and no --url: using http://127.0.0.1:8080"], "{r}");
    assert!(r.stdout.contains("Not logged in to http://127.0.0.1:8080"), "{r}");
    let r = bare(&["--config", "/nonexistent/shop.toml", "--json", "logout"]).ok();
    let said = notes(&r.stderr).join("\n");
    assert!(said.contains("the stack config is unusable (cannot read config /nonexistent/shop.toml"), "{r}");
    assert!(said.ends_with("and no --url: using http://127.0.0.1:8080"), "{r}");
    assert_eq!(r.json()["url"], "http://127.0.0.1:8080", "{r}");
    // Told where, by --url or by a config: not a word.
    let r = bare(&["--url", &stack.url, "logout"]).ok();
    assert!(notes(&r.stderr).is_empty(), "{r}");
    let mut cmd = stack.shopctl();
    cmd.env_remove("SHOPCTL_URL").args(["--json", "products", "--limit", "1"]);
    let r = shopgate_e2e::cli::run(cmd, None).ok();
    assert!(notes(&r.stderr).is_empty(), "{r}");
}

#[tokio::test]
async fn an_empty_idempotency_key_through_nginx_is_400_and_places_nothing() {
    let stack = Stack::start().await;
    let token = stack.mint(4242);
    let order = serde_json::json!({"items": [{"product_id": 1, "quantity": 1}]});
    // The header sent with an empty value (what curl sends for `-H 'Idempotency-Key;'`): nginx
    // passes it on, and the backend refuses it rather than take it for no key.
    let r = stack.http.post(stack.api("/api/orders")).bearer_auth(&token).header("Idempotency-Key", "").json(&order);
    let r = r.send().await.expect("POST /api/orders");
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("a JSON error");
    assert_eq!(body["error"], "invalid_idempotency_key", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.starts_with("Idempotency-Key is empty")), "{body}");
    let r =
        stack.ctl_env(&["orders", "create", "--item", "1:1", "--idempotency-key", ""], &[("SHOPCTL_TOKEN", &token)]);
    assert!(r.one_line_error(1).contains("Idempotency-Key is empty"), "{r}");
    let placed: i64 = stack.count_per_shard("orders").await.iter().map(|(_, n)| n).sum();
    assert_eq!(placed, 0, "an order was placed");
}
