//! Issue 13 point 2: output scripts can rely on. Piped, every command prints tab-separated rows
//! with a header; every `--json` list is `{"items": [...], "next": ...}`; errors under `--json` are
//! JSON on standard error; a failed write to standard output exits non-zero; a terminal that
//! reports no width still gets whole columns. And `orders list --status` / `--all`.

use std::process::Stdio;

use serde_json::Value;
use shopgate_e2e::Shop as _;
use shopgate_e2e::{Stack, PASSWORD};

/// Parses `text` as TSV with a header: at least one data row, every row as wide as the header.
fn tsv(args: &str, text: &str) -> Vec<Vec<String>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_else(|| panic!("shopctl {args}: no output")).split('\t').collect();
    assert!(header.iter().all(|h| !h.is_empty() && !h.contains(' ')), "shopctl {args}: header {header:?}");
    let rows: Vec<Vec<String>> = lines.map(|l| l.split('\t').map(str::to_owned).collect()).collect();
    assert!(!rows.is_empty(), "shopctl {args}: a header and no rows:\n{text}");
    for r in &rows {
        assert_eq!(r.len(), header.len(), "shopctl {args}: a row not as wide as the header:\n{text}");
    }
    let mut all = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    all.extend(rows);
    all
}

/// A shopper with three orders, the newest cancelled; returns the order ids, newest first.
fn shopper_with_orders(stack: &Stack) -> Vec<u64> {
    let email = super::email("cli-tsv");
    let pw = format!("{PASSWORD}\n");
    stack.ctl_stdin(&["register", &email, "--password-stdin"], &pw).ok();
    stack.ctl_stdin(&["login", &email, "--password-stdin"], &pw).ok();
    let mut ids: Vec<u64> = (0..3)
        .map(|_| stack.ctl(&["--json", "orders", "create", "--item", "1:1"]).ok().json()["id"].as_u64().expect("id"))
        .collect();
    ids.reverse();
    stack.ctl(&["orders", "cancel", &ids[0].to_string()]).ok();
    ids
}

#[tokio::test]
async fn piped_output_is_tsv_json_lists_have_one_shape_and_errors_are_json() {
    let stack = Stack::start().await;
    let ids = shopper_with_orders(&stack);
    let order = ids[1].to_string();
    let email = stack.ctl(&["--json", "whoami"]).ok().json()["email"].as_str().expect("email").to_owned();

    // Piped (not a terminal): TSV with a header, for every command that prints data.
    let commands: Vec<Vec<&str>> = vec![
        vec!["products"],
        vec!["categories"],
        vec!["whoami"],
        vec!["orders", "list"],
        vec!["orders", "show", &order],
        vec!["users", "locate", &email],
        vec!["shards", "status"],
        vec!["doctor"],
    ];
    for args in &commands {
        let r = stack.ctl(args).ok();
        let rows = tsv(&args.join(" "), &r.stdout);
        assert!(!r.stdout.contains('│') && !r.stdout.contains("\u{1b}["), "a table, not TSV:\n{r}");
        if args[0] == "products" {
            let sku = rows[0].iter().position(|h| h == "sku").expect("a sku column");
            assert_eq!(rows[1][sku], "BK-0001", "{r}");
            let price = rows[0].iter().position(|h| h == "price_cents").expect("a price_cents column");
            rows[1][price].parse::<i64>().unwrap_or_else(|_| panic!("price_cents is not a number:\n{r}"));
        }
        // The columns a person reads first come first.
        let leading: &[&str] = match args[0] {
            "products" => &["id", "sku", "name", "price_cents"],
            "doctor" => &["part", "ok", "detail", "fix"],
            "orders" => &["id", "status", "total_cents", "created_at"],
            "shards" => &["shard", "number", "buckets"],
            _ => &[],
        };
        assert_eq!(&rows[0][..leading.len()], leading, "shopctl {args:?}: columns\n{r}");
    }

    // And the commands that act: what they did, as one row.
    let other = super::email("cli-tsv-acts");
    let pw = format!("{PASSWORD}\n");
    let file =
        shopgate_e2e::cli::write_file(stack.dir.path(), "one.csv", "sku,name,category,price_cents\nTSV-1,a,c,1\n");
    let acts: Vec<Vec<&str>> = vec![
        vec!["register", &other, "--password-stdin"],
        vec!["catalog", "import", "--dry-run", &file],
        vec!["catalog", "import", &file],
        vec!["users", "disable", &other],
        vec!["users", "enable", &other],
        vec!["login", &other, "--password-stdin"],
        vec!["logout"],
    ];
    for args in &acts {
        let r = stack.ctl_stdin(args, &pw).ok();
        tsv(&args.join(" "), &r.stdout);
    }
    stack.ctl_stdin(&["login", &email, "--password-stdin"], &pw).ok();

    // --json lists: one shape.
    for args in [
        &["products"][..],
        &["categories"],
        &["orders", "list"],
        &["shards", "status"],
        &["shards", "check"],
        &["doctor"],
    ] {
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        let v = stack.ctl(&full).ok().json();
        assert!(v["items"].is_array() && v.get("next").is_some(), "shopctl {full:?}: not {{items, next}}: {v}");
    }
    // Numbers are numbers.
    let status = stack.ctl(&["--json", "shards", "status"]).ok().json();
    assert!(status["items"][0]["users"].is_number() && status["items"][0]["backends_ready"].is_number(), "{status}");
    // A page that is not the last says where the next one starts; the hint goes to stderr.
    let page = stack.ctl(&["--json", "products", "--limit", "1"]).ok();
    assert_eq!(page.json()["next"], 1, "{page}");
    assert!(page.stderr.contains("More: shopctl products --limit 1 --offset 1"), "{page}");

    // Errors under --json: JSON on stderr, nothing on stdout, the same exit codes.
    for (args, code) in [
        (&["--json", "orders", "show", "99999999"][..], 1),
        (&["--json", "ordres"], 2),
        (&["--format", "json", "orders", "create"], 2),
    ] {
        let r = stack.ctl(args);
        assert_eq!(r.code, code, "{r}");
        assert!(r.stdout.is_empty(), "{r}");
        let e: Value =
            serde_json::from_str(r.stderr.trim()).unwrap_or_else(|e| panic!("stderr is not JSON ({e}):\n{r}"));
        assert_eq!(e["error"]["exit_code"], code, "{r}");
        assert!(e["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{r}");
    }
    let r = stack.ctl_env(&["--json", "whoami"], &[("SHOPCTL_TOKEN", "not-a-token")]);
    assert_eq!(r.code, 4, "{r}");
    let e: Value = serde_json::from_str(r.stderr.trim()).unwrap_or_else(|e| panic!("stderr is not JSON ({e}):\n{r}"));
    assert!(e["error"]["message"].as_str().is_some_and(|m| m.contains("SHOPCTL_TOKEN")), "{r}");
}

#[tokio::test]
async fn a_full_disk_fails_and_a_terminal_of_no_width_keeps_whole_columns() {
    let stack = Stack::start().await;

    // shopctl products >/dev/full
    let mut cmd = stack.shopctl();
    cmd.args(["products"]).stdout(std::fs::File::create("/dev/full").expect("/dev/full")).stderr(Stdio::piped());
    let out = cmd.output().expect("shopctl");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writing to standard output") && stderr.contains("No space left"), "{stderr}");

    // A pseudo-terminal that reports 0 columns (script(1) with no terminal of its own).
    let r = stack.ctl_in_pty(&["--format", "table", "products", "--limit", "3"]).ok();
    assert!(r.stdout.contains("BK-0001") && r.stdout.contains("BK-0003"), "columns collapsed:\n{r}");
    assert!(r.stdout.lines().filter(|l| !l.trim().is_empty()).count() < 15, "columns collapsed:\n{r}");
}

#[tokio::test]
async fn orders_list_filters_by_status_and_follows_every_page() {
    let stack = Stack::start().await;
    let ids = shopper_with_orders(&stack);
    let listed = |args: &[&str]| -> (Vec<u64>, Value) {
        let mut full = vec!["--json", "orders", "list"];
        full.extend_from_slice(args);
        let v = stack.ctl(&full).ok().json();
        (
            v["items"].as_array().expect("items").iter().map(|o| o["id"].as_u64().expect("id")).collect(),
            v["next"].clone(),
        )
    };
    assert_eq!(listed(&["--status", "cancelled"]), (vec![ids[0]], Value::Null));
    assert_eq!(listed(&["--status", "placed"]), (vec![ids[1], ids[2]], Value::Null));
    // One placed order per page: the cursor of the next page, which holds the other.
    let (first, next) = listed(&["--status", "placed", "--limit", "1"]);
    assert_eq!(first, vec![ids[1]]);
    let next = next.as_u64().expect("a next cursor");
    assert_eq!(listed(&["--status", "placed", "--limit", "1", "--before", &next.to_string()]).0, vec![ids[2]]);
    // --all follows the pages (of at most 100) to the end.
    assert_eq!(listed(&["--all"]), (ids.clone(), Value::Null));
    let token = stack.kept_token().expect("token");
    for _ in 0..100 {
        let r = stack
            .http
            .post(stack.api("/api/orders"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"items": [{"product_id": 2, "quantity": 1}]}))
            .send()
            .await
            .expect("order");
        assert_eq!(r.status(), 201);
    }
    let (all, next) = listed(&["--all"]);
    assert_eq!((all.len(), next), (103, Value::Null));
    assert!(all.windows(2).all(|w| w[0] > w[1]), "newest first, each once");
    assert_eq!(&all[100..], &ids[..]);
    assert_eq!(listed(&["--all", "--status", "cancelled"]).0, vec![ids[0]]);
    let r = stack.ctl(&["orders", "list", "--all", "--limit", "2"]);
    r.one_line_error(2);
}
