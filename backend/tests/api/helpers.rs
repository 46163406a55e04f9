//! `spawn_app()`: a shard backend on port 0 with a fresh stack folder (config, random key, SQLite
//! files), and a `TestApp` with typed request methods. Logs are silent unless `TEST_LOG` is set.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;

use axum::body::Body;
use http_body_util::BodyExt as _;
use serde_json::Value;
use shopgate_backend::{build, router, serve, AppState};
use shopgate_core::config::{ensure_dev_key, Config, ConfigBuilder, DEV_KEY_FILE};
use shopgate_core::token::new_claims;
use shopgate_core::UserId;
use shopgate_store::schema::{migrate_url, Schema};
use tower::ServiceExt as _;

/// Users of shard `a` (even buckets) and shard `b` (odd).
pub const ANN: u64 = 42;
/// `[backend] max_per_user` off, for the tests that send one user's requests in bursts to test
/// something else (idempotency, group commit).
pub const NO_USER_BOUND: &[(&str, &str)] = &[("SHOP__BACKEND__MAX_PER_USER", "0")];
pub const BOB: u64 = 1044;
pub const ODD: u64 = 43;

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub shard: String,
    pub config: Config,
    pub state: AppState,
    pub client: reqwest::Client,
    /// Kept so the folder lives as long as the app.
    pub dir: tempfile::TempDir,
}

/// Shard `a` with the default config.
pub async fn spawn_app() -> TestApp {
    spawn_app_with("a", &[]).await
}

/// Shard `shard`, with `SHOP__…` overrides such as `("SHOP__SHARDS__A__PRIMARY", url)`.
pub async fn spawn_app_with(shard: &str, overrides: &[(&str, &str)]) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        shopgate_core::service::init_logging("debug,sqlx=warn");
    }
    let dir = tempfile::tempdir().unwrap();
    ensure_dev_key(&dir.path().join(DEV_KEY_FILE)).unwrap();
    let path = dir.path().join("shop.toml");
    // Port 0: the listener is bound below; the config's addresses are only read by nginx's render.
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    ConfigBuilder::new(any, &[any]).shard("a", 0, "even", any).shard("b", 1, "odd", any).write(&path).unwrap();
    let env = overrides.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    let config = Config::load_with_env(&path, env).unwrap();
    // The databases as `shopctl migrate` makes them: the auth database (the backend reads
    // revocations and the map from it) and the shard's.
    migrate_url(&config.verifier.database_url, Schema::Auth).await.unwrap();
    // A test of a primary that is down at start has nothing to migrate yet.
    if let Err(e) = migrate_url(&config.shard(shard).unwrap().primary, Schema::Shard).await {
        eprintln!("the shard's database is not migrated ({e}): the backend starts on one it cannot reach");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = build(config.clone(), shard, listener).await.unwrap();
    let addr = app.local_addr();
    let state = app.state().clone();
    tokio::spawn(serve(app, std::future::pending()));
    TestApp {
        addr,
        base: format!("http://{addr}"),
        shard: shard.to_owned(),
        config,
        state,
        client: reqwest::Client::new(),
        dir,
    }
}

pub use shopgate_core::time::unix_now as now;

pub fn email_of(user: u64) -> String {
    format!("user{user}@example.com")
}

impl TestApp {
    /// A valid token for `user`, as the verifier would issue it.
    pub fn token(&self, user: u64) -> String {
        self.token_at(user, now())
    }

    /// A token for `user` issued at `iat` (an hour's lifetime).
    pub fn token_at(&self, user: u64, iat: i64) -> String {
        let claims = new_claims(UserId::new(user).unwrap(), &email_of(user), &self.config.jwt.policy, iat, 3600);
        self.config.jwt.sign(&claims).expect("stack keys sign")
    }

    /// A request with the headers nginx would send for `user`: bearer token and `X-User-Id`.
    pub fn as_user(&self, method: reqwest::Method, path: &str, user: u64) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token(user))
            .header("x-user-id", user.to_string())
            .header("x-request-id", format!("test-{user}"))
    }

    pub async fn get(&self, path: &str, user: u64) -> reqwest::Response {
        self.as_user(reqwest::Method::GET, path, user).send().await.unwrap()
    }

    pub async fn get_anonymous(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.base)).send().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, user: u64, body: &Value) -> reqwest::Response {
        self.as_user(reqwest::Method::POST, path, user).json(body).send().await.unwrap()
    }

    /// `POST /api/orders` with `items`, under `key` if given.
    pub async fn create_order(&self, user: u64, items: Value, key: Option<&str>) -> reqwest::Response {
        let mut req =
            self.as_user(reqwest::Method::POST, "/api/orders", user).json(&serde_json::json!({ "items": items }));
        if let Some(key) = key {
            req = req.header("idempotency-key", key);
        }
        req.send().await.unwrap()
    }

    pub async fn cancel(&self, user: u64, id: i64) -> reqwest::Response {
        self.as_user(reqwest::Method::POST, &format!("/api/orders/{id}/cancel"), user).send().await.unwrap()
    }

    /// Rows in `table` of this shard's primary, counted straight from the database.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(self.state.db_write()).await.unwrap()
    }

    /// Sends `req` through the router without a socket; returns status, headers and JSON body.
    pub async fn oneshot(&self, req: axum::http::Request<Body>) -> (u16, axum::http::HeaderMap, Value) {
        let res = router(self.state.clone()).oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status.as_u16(), parts.headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

/// Status and JSON body; panics with the body if it is not JSON.
pub async fn json(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("status {status}, body not JSON ({e}): {text}"));
    (status, body)
}

/// Asserts an error answer: the status, our JSON shape, and the code.
pub async fn assert_error(res: reqwest::Response, status: u16, code: &str) -> Value {
    let (got, body) = json(res).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "no message: {body}");
    body
}
