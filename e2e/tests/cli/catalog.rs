//! Point 3: `catalog import` of 10,000 products, to every shard, all or nothing.

use std::time::{Duration, Instant};

use shopgate_e2e::cli::{catalog_csv, exec, scalar, write_file};
use shopgate_e2e::Shop as _;
use shopgate_e2e::Stack;

#[tokio::test]
async fn importing_ten_thousand_products_shows_progress_and_lands_on_every_shard() {
    let stack = Stack::start().await;
    let before = stack.count_per_shard("products").await;
    let file = write_file(stack.dir.path(), "catalog.csv", &catalog_csv(10_000));

    let started = Instant::now();
    let run = stack.ctl(&["--format", "table", "catalog", "import", &file]).ok();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "10,000 products took {took:?}");
    // Not a terminal here: plain progress lines on stderr, one table on stdout.
    for shard in ["a", "b"] {
        assert!(run.stderr.contains(&format!("shard {shard}: importing 10000 products")), "{run}");
        assert!(run.stderr.contains(&format!("shard {shard}: 10000/10000 products written")), "{run}");
    }
    assert!(
        run.stdout.contains("Imported 10000 products (10000 new, 0 updated, 0 unchanged, 20 new categories)"),
        "{run}"
    );

    let after = stack.count_per_shard("products").await;
    for ((shard, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(*a, b + 10_000, "shard {shard}: {b} products before, {a} after");
    }
    // The same ids on every shard, so an order's product ids mean the same everywhere.
    let (da, db) = (stack.shard_db("a").await, stack.shard_db("b").await);
    let sql = "SELECT id FROM products WHERE sku = 'SKU-07777'";
    assert_eq!(scalar(&da, sql).await, scalar(&db, sql).await);
    let sql = "SELECT COUNT(*) FROM categories WHERE name LIKE 'Category %'";
    assert_eq!((scalar(&da, sql).await, scalar(&db, sql).await), (20, 20));
    // The shop serves it.
    let id = scalar(&da, "SELECT id FROM products WHERE sku = 'SKU-00042'").await;
    let (_, token) = stack.shopper().await;
    let p: serde_json::Value = stack
        .http
        .get(stack.api(&format!("/api/products/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(p["name"], "Product 42, imported");
    assert_eq!(p["price_cents"].as_i64(), Some(142));

    // Again, with a changed price, as JSON: updates in place, nothing new.
    let json_file = write_file(
        stack.dir.path(),
        "update.json",
        r#"[{"sku": "SKU-00042", "name": "Product 42, repriced", "category": "Category 2", "price_cents": 4200}]"#,
    );
    let summary = stack.ctl(&["--json", "catalog", "import", &json_file]).ok().json();
    assert_eq!(summary["new_products"].as_u64(), Some(0), "{summary}");
    assert_eq!(summary["updated_products"].as_u64(), Some(1), "{summary}");
    assert_eq!(summary["shards"].as_array().map(Vec::len), Some(2), "{summary}");
    assert_eq!(stack.count_per_shard("products").await, after);
    let sql = format!("SELECT price_cents FROM products WHERE id = {id}");
    assert_eq!((scalar(&da, &sql).await, scalar(&db, &sql).await), (4200, 4200));
    // No description in that file: the stored one is kept.
    let desc: String = sqlx::query_scalar(&format!("SELECT description FROM products WHERE id = {id}"))
        .fetch_one(&db)
        .await
        .expect("desc");
    assert_eq!(desc, "Made for the import test");
}

#[tokio::test]
async fn a_file_with_one_bad_row_changes_nothing_and_names_the_row() {
    let stack = Stack::start().await;
    let before = stack.count_per_shard("products").await;
    let categories = stack.count_per_shard("categories").await;

    let mut csv = catalog_csv(200);
    csv = csv.replace(
        "SKU-00150,\"Product 150, imported\",Category 10,250,",
        "SKU-00150,\"Product 150, imported\",Category 10,2.50,",
    );
    let file = write_file(stack.dir.path(), "bad.csv", &csv);
    let run = stack.ctl(&["catalog", "import", &file]);
    let line = run.one_line_error(1);
    assert!(
        line.contains("row 150 (line 151)") && line.contains("price_cents") && line.contains("nothing was imported"),
        "{run}"
    );

    let json = write_file(
        stack.dir.path(),
        "bad.json",
        r#"[{"sku": "J-1", "name": "one", "category": "C", "price_cents": 1},
            {"sku": "J-2", "category": "C", "price_cents": 2}]"#,
    );
    let run = stack.ctl(&["--json", "catalog", "import", &json]);
    assert_eq!(run.code, 1, "{run}");
    let error: serde_json::Value = serde_json::from_str(run.stderr.trim()).expect("a JSON error");
    assert!(error["error"]["message"].as_str().is_some_and(|m| m.contains("row 2: name is missing")), "{run}");
    assert!(run.stdout.is_empty(), "{run}");

    assert_eq!(stack.count_per_shard("products").await, before);
    assert_eq!(stack.count_per_shard("categories").await, categories);
}

#[tokio::test]
async fn a_shard_that_fails_mid_import_is_rolled_back_whole() {
    let stack = Stack::start().await;
    let before = stack.count_per_shard("products").await;
    // Shard b refuses one row half-way through the file, as a full disk or a constraint would.
    let db = stack.shard_db("b").await;
    exec(&db, "CREATE TRIGGER planted BEFORE INSERT ON products WHEN NEW.sku = 'SKU-01500' BEGIN SELECT RAISE(ABORT, 'planted failure'); END").await;
    db.close().await;

    let file = write_file(stack.dir.path(), "catalog.csv", &catalog_csv(2_000));
    let run = stack.ctl(&["catalog", "import", &file]);
    let line = run.one_line_error(1);
    assert!(line.contains("shard b") && line.contains("planted failure") && line.contains("rolled back"), "{run}");
    assert!(line.contains("shard a already has the new catalog"), "{run}");
    let after = stack.count_per_shard("products").await;
    assert_eq!(after[0].1, before[0].1 + 2_000, "shard a committed");
    assert_eq!(after[1].1, before[1].1, "shard b must have none of the 2,000 rows");
    let db = stack.shard_db("b").await;
    assert_eq!(scalar(&db, "SELECT COUNT(*) FROM categories WHERE name LIKE 'Category %'").await, 0);
    exec(&db, "DROP TRIGGER planted").await;
    db.close().await;

    // Fixed: the same import again completes shard b and leaves shard a as it was.
    stack.ctl(&["catalog", "import", &file]).ok();
    let fixed = stack.count_per_shard("products").await;
    assert_eq!(fixed[0].1, after[0].1);
    assert_eq!(fixed[1].1, before[1].1 + 2_000);
}

/// Issue 13 point 5: every bad row is named (here four, of different kinds) and nothing is
/// written; `-` reads the file from standard input; a second import counts unchanged rows apart
/// from updated ones.
#[tokio::test]
async fn every_bad_row_is_named_stdin_is_read_and_unchanged_rows_are_counted() {
    let stack = Stack::start().await;
    let before = stack.count_per_shard("products").await;
    let mut csv = catalog_csv(50);
    for (good, bad) in [
        ("SKU-00007,\"Product 7, imported\",Category 7,107,", "SKU-00007,\"Product 7, imported\",Category 7,1.07,"),
        ("SKU-00012,\"Product 12, imported\"", "SKU-00012,\"\""),
        ("SKU-00020,\"Product 20, imported\",Category 0,120,", "SKU-00020,\"Product 20, imported\",Category 0,-5,"),
        ("SKU-00031,", "SKU-00030,"),
    ] {
        assert!(csv.contains(good), "{good}");
        csv = csv.replace(good, bad);
    }
    let file = write_file(stack.dir.path(), "four-bad.csv", &csv);
    let run = stack.ctl(&["catalog", "import", &file]);
    let line = run.one_line_error(1);
    assert!(line.contains("4 bad rows"), "{run}");
    for named in [
        "row 7 (line 8): price_cents",
        "row 12 (line 13): name is empty",
        "row 20 (line 21): price_cents -5",
        "row 31 (line 32): sku \"SKU-00030\" already appears in row 30",
    ] {
        assert!(line.contains(named), "{named:?} not named:\n{run}");
    }
    assert!(line.contains("nothing was imported"), "{run}");
    assert_eq!(stack.count_per_shard("products").await, before);

    // `-` with a terminal on standard input would wait for a person to type a file: refused.
    let tty = stack.ctl_in_pty(&["catalog", "import", "-"]);
    assert!(tty.code == 2 && tty.stdout.contains("pipe the file in"), "{tty}");

    // The same bad file on standard input names the same rows.
    let piped = stack.ctl_stdin(&["catalog", "import", "-"], &csv);
    assert!(piped.one_line_error(1).contains("4 bad rows") && piped.stderr.contains("standard input"), "{piped}");

    // A good file on standard input (CSV guessed from the content), then again with one change.
    let good = catalog_csv(50);
    let first = stack.ctl_stdin(&["--json", "catalog", "import", "-"], &good).ok().json();
    assert_eq!((first["new_products"].as_u64(), first["unchanged_products"].as_u64()), (Some(50), Some(0)), "{first}");
    let changed = good.replace(
        "SKU-00009,\"Product 9, imported\",Category 9,109,",
        "SKU-00009,\"Product 9, imported\",Category 9,999,",
    );
    let second = stack.ctl_stdin(&["--json", "catalog", "import", "-"], &changed).ok().json();
    assert_eq!(
        (second["new_products"].as_u64(), second["updated_products"].as_u64(), second["unchanged_products"].as_u64()),
        (Some(0), Some(1), Some(49)),
        "{second}"
    );
    let after = stack.count_per_shard("products").await;
    for ((shard, b), (_, a)) in before.iter().zip(&after) {
        assert_eq!(*a, b + 50, "shard {shard}");
    }
}
