//! `spawn_app()`: a verifier on port 0 with a fresh stack folder (config, random key, SQLite auth
//! database), and a `TestApp` with typed request methods. Logs are silent unless `TEST_LOG` is set.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use shopgate_core::config::{ensure_dev_key, Config, ConfigBuilder, DEV_KEY_FILE};
use shopgate_store::schema::{migrate_url, Schema};
use shopgate_verifier::AppState;

/// A password the policy takes.
pub const PASSWORD: &str = "Corr3ct-Horse!";

pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub config: Config,
    pub state: Arc<AppState>,
    pub client: reqwest::Client,
    /// The unix socket it serves too (nginx's way in on its host).
    pub socket: Option<PathBuf>,
    /// Kept so the folder lives as long as the app.
    pub dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// [`spawn_app`] with more settings by dotted key: `("verifier.register_max_per_address", "2")`.
pub async fn spawn_app_with(settings: &[(&str, &str)]) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        shopgate_core::service::init_logging("debug,sqlx=warn");
    }
    let dir = tempfile::tempdir().unwrap();
    ensure_dev_key(&dir.path().join(DEV_KEY_FILE)).unwrap();
    // Port 0: the verifier is bound below; the other addresses are never reached.
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut builder = ConfigBuilder::new(any, &[any]).shard("a", 0, "all", any).set("verifier.hash_workers", "1");
    for (key, value) in settings {
        builder = builder.set(key, value);
    }
    let config = builder.write(&dir.path().join("shop.toml")).unwrap();
    // The auth database as `shopctl migrate` makes it.
    migrate_url(&config.verifier.database_url, Schema::Auth).await.unwrap();
    let app = shopgate_verifier::build(config.clone(), SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = app.local_addr();
    let state = app.state();
    let socket = app.socket_path().map(PathBuf::from);
    tokio::spawn(app.serve(std::future::pending()));
    TestApp { addr, base: format!("http://{addr}"), config, state, client: reqwest::Client::new(), socket, dir }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn register(&self, email: &str, password: &str) -> reqwest::Response {
        let body = json!({ "email": email, "password": password });
        self.client.post(self.url("/auth/register")).json(&body).send().await.unwrap()
    }

    /// `POST /auth/token` with the original design's form (empty OAuth2 fields and all).
    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        let form = [("grant_type", ""), ("username", email), ("password", password), ("scope", ""), ("client_id", "")];
        self.client.post(self.url("/auth/token")).form(&form).send().await.unwrap()
    }

    /// Registers `email` with [`PASSWORD`] and logs in: the access token.
    pub async fn signed_up(&self, email: &str) -> String {
        assert_eq!(self.register(email, PASSWORD).await.status(), 201);
        token_of(self.login(email, PASSWORD).await).await
    }

    /// The check nginx's `auth_request` makes.
    pub async fn verify(&self, token: &str) -> reqwest::Response {
        self.client.get(self.url("/verify")).bearer_auth(token).send().await.unwrap()
    }

    pub async fn me(&self, token: &str) -> reqwest::Response {
        self.client.get(self.url("/auth/me")).bearer_auth(token).send().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        let r = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }
}

pub async fn token_of(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 200, "login failed");
    let v: Value = r.json().await.unwrap();
    v["access_token"].as_str().unwrap().to_owned()
}

/// Asserts the project's JSON error with `status` and `code`; returns the body.
pub async fn assert_error(r: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status(), status, "{:?}", r.headers());
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "no message: {v}");
    v
}
