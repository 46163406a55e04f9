//! Point 5: the verifier down or erroring means 503 with a JSON error: never a pass, never 500.
//! And a database that does not answer is the same 503 from the verifier and from a backend.

use serde_json::json;
use shopgate_core::config::DbUrl;
use shopgate_core::db::{connect_options, Open};
use shopgate_e2e::Shop as _;
use shopgate_e2e::{Stack, PASSWORD};
use sqlx::{AnyConnection, Connection as _, Executor as _};

#[tokio::test]
async fn verifier_killed_gives_503_never_a_pass() {
    let stack = Stack::start().await;
    let token = stack.mint(42);
    let ok = stack.http.get(stack.api("/api/orders")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);

    stack.kill("verifier-0");
    for _ in 0..3 {
        for path in ["/api/orders", "/backend/api/orders", "/api/users/me"] {
            let r = stack.http.get(stack.api(path)).bearer_auth(&token).send().await.unwrap();
            assert_eq!(r.status(), 503, "{path}");
            assert!(r.headers().get("x-shop-shard").is_none(), "{path} reached a backend");
            assert_eq!(crate::error_code(r).await, "unavailable");
        }
        let r = stack
            .http
            .post(stack.api("/api/orders"))
            .bearer_auth(&token)
            .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        // The catalog needs no verifier: it is public.
        let r = stack.http.get(stack.api("/api/products")).send().await.unwrap();
        assert_eq!(r.status(), 200, "the catalog with the verifier down");
    }
    let r = stack
        .http
        .post(stack.api("/auth/token"))
        .form(&[("username", "a@b.io"), ("password", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(crate::error_code(r).await, "unavailable");
}

#[tokio::test]
async fn a_backend_down_gives_503_for_its_users_only() {
    let stack = Stack::start().await;
    stack.kill("backend-b");
    let r = stack.http.get(stack.api("/api/orders")).bearer_auth(stack.mint(3)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(crate::error_code(r).await, "unavailable");
    let r = stack.http.get(stack.api("/api/orders")).bearer_auth(stack.mint(4)).send().await.unwrap();
    assert_eq!(r.status(), 200, "shard a's users are unaffected");
    // The catalog is served by any healthy shard: nginx passes what backend b cannot take to a.
    // (Each URI its own, so that none is answered from nginx's copy.)
    for limit in 1..=6 {
        let r = stack.http.get(stack.api(&format!("/api/products?limit={limit}"))).send().await.unwrap();
        assert_eq!(r.status(), 200, "the catalog with backend b down");
    }
}

/// Holds `url`'s SQLite write lock until dropped: every write there waits out its busy timeout
/// (5 s), then fails with SQLITE_BUSY, as writes do while a database is locked by someone else.
async fn write_locked(url: &DbUrl) -> AnyConnection {
    let (_, options) = connect_options(url, Open::Existing).unwrap();
    let mut lock = AnyConnection::connect_with(&options).await.unwrap();
    lock.execute("BEGIN IMMEDIATE").await.unwrap();
    lock
}

/// The same database outage (a SQLite database whose write lock another process holds) answers the
/// same from the verifier's auth API and from a backend: 503, `Retry-After: 1` and the JSON error
/// body. Each service is asked on its own port: through nginx, any 500 would become nginx's 503.
#[tokio::test]
async fn a_database_outage_is_the_same_503_from_the_verifier_and_a_backend() {
    let stack = Stack::start().await;
    let shard_a = stack.config.shard("a").unwrap();
    let _auth_locked = write_locked(&stack.config.verifier.database_url).await;
    let _shard_locked = write_locked(&shard_a.primary).await;

    let verifier = stack.config.verifier.listen[0];
    let register = stack
        .http
        .post(format!("http://{verifier}/auth/register"))
        .json(&json!({"email": "outage@example.com", "password": PASSWORD}));
    let order = stack
        .http
        .post(format!("http://{}/api/orders", shard_a.addr()))
        .bearer_auth(stack.mint(2))
        .header("X-User-Id", "2")
        .header("Idempotency-Key", "outage")
        .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}));
    let (register, order) = tokio::join!(register.send(), order.send());
    for (what, r) in [("verifier: POST /auth/register", register), ("backend a: POST /api/orders", order)] {
        let r = r.unwrap();
        assert_eq!(r.status(), 503, "{what}\n{}", stack.logs());
        assert_eq!(r.headers().get_all("retry-after").iter().collect::<Vec<_>>(), ["1"], "{what}");
        crate::error_code(r).await;
    }
}
