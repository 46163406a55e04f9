//! Helpers for driving the real `shopctl` binary against a [`Stack`], and for looking at (and
//! tampering with) the stack's databases with plain SQL, the way an operator's mistake would.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shopgate_core::config::DbUrl;
use shopgate_core::db::{self, Open};
use sqlx::pool::PoolOptions;
use sqlx::AnyPool;

use crate::{Shop as _, Stack};

/// One finished run of `shopctl`.
#[derive(Debug)]
pub struct Run {
    pub(crate) args: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the whole run unless it exited 0.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "shopctl {} failed:\n{self}", self.args);
        self
    }

    /// stdout parsed as JSON (panics, showing the run, if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("shopctl {}: stdout is not JSON ({e}):\n{self}", self.args))
    }

    /// Asserts a failure the way users should see one: exit `code`, nothing on stdout unless
    /// `stdout_allowed`, and one line on stderr starting `shopctl: ` with no panic, backtrace or
    /// debug dump. Returns that line.
    pub fn one_line_error(&self, code: i32) -> String {
        assert_eq!(self.code, code, "shopctl {}: exit code\n{self}", self.args);
        let lines: Vec<&str> = self.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let last = lines.last().copied().unwrap_or_default();
        assert!(last.starts_with("shopctl: "), "shopctl {}: the error line is not `shopctl: ...`\n{self}", self.args);
        for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "Error:", "Error {", "Caused by", "\u{1b}["] {
            assert!(!self.stderr.contains(bad), "shopctl {}: stderr contains {bad:?}\n{self}", self.args);
        }
        last.to_owned()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// Runs a prepared command, feeding `stdin` if given.
pub fn run(mut cmd: Command, stdin: Option<&str>) -> Run {
    let args = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting shopctl {args}: {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("running shopctl {args}: {e}"));
    Run {
        args,
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Stack {
    /// `shopctl ARGS` with these environment variables set.
    pub fn ctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.shopctl();
        cmd.args(args).envs(env.iter().copied());
        run(cmd, None)
    }

    /// `shopctl ARGS` on a pseudo-terminal that reports 0 columns (script(1) with no terminal of
    /// its own): standard input and output are a terminal, as a person's would be.
    pub fn ctl_in_pty(&self, args: &[&str]) -> Run {
        let ctl = self.shopctl();
        let mut line = ctl.get_program().to_string_lossy().into_owned();
        for a in args {
            line.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
        }
        let mut script = Command::new("script");
        script.args(["-qec", &line, "/dev/null"]);
        for (k, v) in ctl.get_envs() {
            match v {
                Some(v) => script.env(k, v),
                None => script.env_remove(k),
            };
        }
        script.stdin(Stdio::null());
        run(script, None)
    }

    /// `shopctl ARGS` with `input` on standard input (`--password-stdin`).
    pub fn ctl_stdin(&self, args: &[&str], input: &str) -> Run {
        let mut cmd = self.shopctl();
        cmd.args(args);
        run(cmd, Some(input))
    }

    /// The kept-login file of this stack's `shopctl` (`$XDG_CONFIG_HOME/shopctl/credentials.json`).
    pub fn credentials_path(&self) -> std::path::PathBuf {
        self.dir.path().join("xdg/shopctl/credentials.json")
    }

    /// The token `shopctl login` kept for this stack, if any.
    pub fn kept_token(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.credentials_path()).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        v["logins"][self.url.as_str()]["access_token"].as_str().map(str::to_owned)
    }

    /// Replaces the kept login with this one (to plant stale or revoked credentials).
    pub fn keep_login(&self, email: &str, token: &str, expires_at: i64) {
        let path = self.credentials_path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        }
        let body = serde_json::json!({"logins": {self.url.as_str(): {"email": email, "access_token": token, "expires_at": expires_at}}});
        std::fs::write(&path, body.to_string()).unwrap_or_else(|e| panic!("{e}"));
    }

    /// A pool on shard `name`'s replica (the shard must have one).
    pub async fn shard_replica_db(&self, name: &str) -> AnyPool {
        let shard = self.config.shard(name).unwrap_or_else(|| panic!("no shard {name}"));
        pool(shard.replica.as_ref().unwrap_or_else(|| panic!("shard {name} has no replica"))).await
    }

    /// `SELECT COUNT(*) FROM table` on every shard's primary, by shard name.
    pub async fn count_per_shard(&self, table: &str) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for s in &self.config.shards {
            let db = self.shard_db(s.name.as_str()).await;
            out.push((s.name.to_string(), scalar(&db, &format!("SELECT COUNT(*) FROM {table}")).await));
            db.close().await;
        }
        out
    }

    /// Sets `product`'s price (an answer of `GET /api/products/{id}`) to `price_cents` the
    /// operator's way: `shopctl catalog import` of a one-line file with its SKU, name and category
    /// (the category's name read through nginx as `token`'s user). Returns when the import ended.
    pub async fn reprice(&self, token: &str, product: &Value, price_cents: i64) -> Instant {
        let r = self.http.get(self.api("/api/categories")).bearer_auth(token).send().await;
        let categories: Value = r.unwrap_or_else(|e| panic!("{e}")).json().await.unwrap_or_else(|e| panic!("{e}"));
        let category = categories["categories"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["id"] == product["category_id"]))
            .unwrap_or_else(|| panic!("no category of {product} in {categories}"));
        let line = serde_json::json!([{
            "sku": product["sku"], "name": product["name"], "category": category["name"], "price_cents": price_cents,
        }]);
        let file = write_file(self.dir.path(), "reprice.json", &line.to_string());
        self.ctl(&["catalog", "import", &file]).ok();
        Instant::now()
    }

    /// Whether a request to `path` through nginx with `token` is answered with `status` within
    /// `within`; returns how long it took, or `None`.
    pub async fn answers_within(&self, path: &str, token: &str, status: u16, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        loop {
            let got =
                self.http.get(self.api(path)).bearer_auth(token).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            if got == status {
                return Some(started.elapsed());
            }
            if started.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A small pool on any of the stack's databases (SQLite or MySQL/MariaDB URLs).
pub async fn pool(url: &DbUrl) -> AnyPool {
    let (_, options) = db::connect_options(url, Open::Existing).unwrap_or_else(|e| panic!("{url}: {e}"));
    test_pool(options, 1, &url.to_string()).await
}

/// A pool of at most `max` connections for a test, waiting up to 10 s for one; `what` names the
/// database if it cannot be reached.
pub async fn test_pool<DB: sqlx::Database>(
    options: <DB::Connection as sqlx::Connection>::Options,
    max: u32,
    what: &str,
) -> sqlx::Pool<DB> {
    PoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("connecting to {what}: {e}"))
}

/// One integer from a query.
pub async fn scalar(db: &AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql).fetch_one(db).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Runs a statement.
pub async fn exec(db: &AnyPool, sql: &str) {
    sqlx::query(sql).execute(db).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Writes `text` to `dir/name` and returns the path as a string, for command lines.
pub fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    p.to_string_lossy().into_owned()
}

/// A catalog CSV of `n` products, `SKU-00001`… in 20 categories, with descriptions.
pub fn catalog_csv(n: usize) -> String {
    let mut s = String::from("sku,name,category,price_cents,description\n");
    for i in 1..=n {
        s.push_str(&format!(
            "SKU-{i:05},\"Product {i}, imported\",Category {},{},Made for the import test\n",
            i % 20,
            100 + i
        ));
    }
    s
}
