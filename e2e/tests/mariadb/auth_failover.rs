//! Issue 27, point 5: the auth database fails over. Its primary killed under a steady load of
//! checks, logins, orders, registrations and logouts: what only reads goes on from the replica,
//! what writes gets 503 + `Retry-After` and says so, a verifier and a backend restarted meanwhile
//! serve, and after `shopctl auth promote` writes succeed again. Nothing acknowledged is lost, and
//! no revoked token passes at any moment.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shopgate_e2e::mariadb::Topology;
use shopgate_e2e::{backend_process, Options, Shop as _, Stack, PASSWORD};

use crate::{create_order, get, shard_of, wait_until};

/// What the load saw: failures of what must never fail, and what the shop acknowledged.
#[derive(Default)]
struct Seen {
    failures: Vec<String>,
    /// Emails whose registration answered 201.
    registered: Vec<String>,
    /// Tokens whose logout answered 200, and when.
    logged_out: Vec<(String, Instant)>,
    /// Orders answered 201: (user, order id).
    orders: Vec<(u64, i64)>,
    /// Writes refused during the outage, each with 503 + `Retry-After` (checked as they come).
    refused_writes: u64,
}

/// `POST path` with a form or JSON body; status, `Retry-After` present, body.
async fn post(stack: &Stack, path: &str, token: Option<&str>, body: &Value) -> (u16, bool, Value) {
    let mut req = stack.http.post(stack.api(path)).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let retry_after = r.headers().contains_key("retry-after");
    (status, retry_after, r.json().await.unwrap_or(Value::Null))
}

async fn login(stack: &Stack, email: &str) -> Result<String, String> {
    let r = stack.http.post(stack.api("/auth/token")).form(&[("username", email), ("password", PASSWORD)]);
    let r = r.send().await.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    match body["access_token"].as_str() {
        Some(t) if status == 200 => Ok(t.to_owned()),
        _ => Err(format!("login {email}: {status} {body}")),
    }
}

/// A refused write as the outage must answer it: 503, `Retry-After`, a body that says why.
fn is_read_only_refusal(status: u16, retry_after: bool, body: &Value) -> bool {
    status == 503 && retry_after && body["error"].is_string() && body["message"].is_string()
}

/// One round of the load for `user`: a login, an order, a check, a registration and a logout, and
/// every token logged out earlier refused.
async fn round(stack: &Stack, seen: &Mutex<Seen>, user: (u64, &str), n: u64, down: bool, bound: Duration) {
    let fail = |what: String| seen.lock().unwrap().failures.push(what);
    let token = match login(stack, user.1).await {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let (status, order) = create_order(stack, &token, &json!([{"product_id": 1, "quantity": 1}]), None).await;
    match (status, order["id"].as_i64()) {
        (201, Some(id)) => seen.lock().unwrap().orders.push((user.0, id)),
        _ => fail(format!("order by {}: {status} {order}", user.0)),
    }
    let (status, body) = get(stack, &token, "/api/orders?limit=1").await;
    if status != 200 {
        fail(format!("check by {}: {status} {body}", user.0));
    }
    let email = format!("fo-{n}-{}@example.com", shopgate_e2e::rand_hex(4));
    let (status, retry_after, body) =
        post(stack, "/auth/register", None, &json!({"email": email, "password": PASSWORD})).await;
    match status {
        201 => seen.lock().unwrap().registered.push(email),
        _ if is_read_only_refusal(status, retry_after, &body) => seen.lock().unwrap().refused_writes += 1,
        _ => fail(format!("register: {status} {body}")),
    }
    let (status, retry_after, body) = post(stack, "/auth/logout", Some(&token), &json!({})).await;
    match status {
        200 => seen.lock().unwrap().logged_out.push((token, Instant::now())),
        _ if is_read_only_refusal(status, retry_after, &body) => seen.lock().unwrap().refused_writes += 1,
        _ => fail(format!("logout by {}: {status} {body}", user.0)),
    }
    if down && status == 200 {
        fail(format!("a logout was acknowledged while the auth primary was down: {body}"));
    }
    // Tokens logged out longer than the revocation bound ago are refused, on every verifier.
    let revoked: Vec<String> = {
        let seen = seen.lock().unwrap();
        let old = seen.logged_out.iter().rev().filter(|(_, at)| at.elapsed() > bound);
        old.take(3).map(|(t, _)| t.clone()).collect()
    };
    for t in revoked {
        let (status, body) = get(stack, &t, "/api/orders?limit=1").await;
        if status != 401 {
            fail(format!("a logged-out token was accepted: {status} {body}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_primary_killed_under_load_fails_over_to_its_replica() {
    let topology = Topology::start().await;
    // A registration per round: more than the per-address limit's default allows in an hour.
    let settings = vec![("verifier.register_max_per_address", "100000")];
    let options = Options { verifiers: 2, backends_per_shard: 2, settings, ..topology.stack_options(5) };
    let stack = Arc::new(Stack::start_with(options).await);
    // Existing users, on both shards.
    let mut users = Vec::new();
    for i in 0..6 {
        let email = format!("existing-{i}@example.com");
        let id = stack.register(&email).await["id"].as_u64().unwrap();
        users.push((id, email));
    }
    let on_a = users.iter().find(|(id, _)| shard_of(&stack, *id) == "a").expect("a user on shard a").clone();
    assert!(users.iter().any(|(id, _)| shard_of(&stack, *id) == "b"), "no user on shard b");
    // A token of a user on shard a logged out before everything: refused throughout.
    let before = stack.login(&on_a.1).await;
    assert_eq!(post(&stack, "/auth/logout", Some(&before), &json!({})).await.0, 200);
    let bound = stack.config.verifier.revocation_bound() + Duration::from_millis(500);
    tokio::time::sleep(bound).await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let down = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let load = {
        let (stack, seen, stop, down, rounds, users, before) =
            (stack.clone(), seen.clone(), stop.clone(), down.clone(), rounds.clone(), users.clone(), before.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (id, email) = &users[(n as usize) % users.len()];
                round(&stack, &seen, (*id, email), n, down.load(Ordering::Relaxed), bound).await;
                let (status, _) = get(&stack, &before, "/api/orders?limit=1").await;
                if status != 401 {
                    seen.lock().unwrap().failures.push(format!("the token logged out first answered {status}"));
                }
                n += 1;
                rounds.store(n, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    topology.kill("auth");
    // Within a probe or two, writes are refused with 503 + Retry-After, saying why.
    let st = stack.clone();
    let refusal = wait_until("registrations get 503 + Retry-After", Duration::from_secs(10), || {
        let st = st.clone();
        async move {
            let (status, retry_after, body) =
                post(&st, "/auth/register", None, &json!({"email": "refused@example.com", "password": PASSWORD})).await;
            // (The first may still have reached the dying primary: "unavailable", 503 too.)
            (is_read_only_refusal(status, retry_after, &body) && body["error"] == "read_only").then_some(body)
        }
    })
    .await;
    assert!(refusal["message"].as_str().unwrap().contains("read-only"), "{refusal}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    down.store(true, Ordering::Relaxed);

    // shopctl logout keeps its token when the logout did not happen.
    let kept = stack.login(&users[1].1).await;
    stack.keep_login(&users[1].1, &kept, shopgate_core::time::unix_now() + 600);
    let run = stack.ctl(&["logout"]);
    assert_ne!(run.code, 0, "shopctl logout succeeded while the auth primary was down:\n{run}");
    assert_eq!(stack.kept_token().as_deref(), Some(kept.as_str()), "shopctl forgot a token it could not revoke");
    assert_eq!(get(&stack, &kept, "/api/orders?limit=1").await.0, 200);

    // A verifier and a backend restarted during the outage start from the replica and serve.
    for name in ["verifier-1".to_owned(), backend_process("a", 1)] {
        assert!(stack.terminate(&name).await.success(), "{name} did not stop cleanly");
        stack.restart(&name).await;
    }
    let verifier = stack.internal_url(stack.config.verifier.listen[1], "/auth/token");
    let r = stack.internal.post(&verifier).form(&[("username", on_a.1.as_str()), ("password", PASSWORD)]);
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200, "the restarted verifier does not log in: {}", r.text().await.unwrap());
    let token = stack.login(&on_a.1).await;
    let backend = stack.internal_url(stack.config.shard("a").unwrap().listen[1], "/api/orders?limit=1");
    for (t, want) in [(&token, 200), (&before, 401)] {
        let r = stack.internal.get(&backend).bearer_auth(t).header("X-User-Id", on_a.0.to_string());
        let r = r.send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "the restarted backend: {}", r.text().await.unwrap());
    }
    let at = rounds.load(Ordering::Relaxed);
    wait_until("three more rounds of load during the outage", Duration::from_secs(60), || {
        let rounds = rounds.clone();
        async move { (rounds.load(Ordering::Relaxed) >= at + 3).then_some(()) }
    })
    .await;

    // Promoted: registrations and logouts succeed again, within a probe or two.
    let run =
        stack.ctl_env(&["auth", "promote"], &[("SHOP_AUTH_REPLICA_ADMIN_URL", topology.admin_url("auth-replica"))]);
    assert_eq!(run.code, 0, "shopctl auth promote:\n{run}");
    down.store(false, Ordering::Relaxed);
    let st = stack.clone();
    wait_until("a registration succeeds after the promotion", Duration::from_secs(10), || {
        let st = st.clone();
        async move {
            let email = format!("after-{}@example.com", shopgate_e2e::rand_hex(4));
            let (status, _, _) =
                post(&st, "/auth/register", None, &json!({"email": email, "password": PASSWORD})).await;
            (status == 201).then_some(())
        }
    })
    .await;
    let run = stack.ctl(&["logout"]);
    assert_eq!(run.code, 0, "shopctl logout after the promotion:\n{run}");
    let at = rounds.load(Ordering::Relaxed);
    wait_until("three more rounds of load after the promotion", Duration::from_secs(60), || {
        let rounds = rounds.clone();
        async move { (rounds.load(Ordering::Relaxed) >= at + 3).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    tokio::time::sleep(bound).await;

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(
        seen.failures.is_empty(),
        "{} failures, first: {:#?}",
        seen.failures.len(),
        &seen.failures[..seen.failures.len().min(5)]
    );
    assert!(seen.refused_writes >= 2, "no write was refused during the outage");
    assert!(!seen.registered.is_empty() && !seen.logged_out.is_empty(), "nothing was acknowledged");
    // Nothing acknowledged is lost: every registered account logs in, every logged-out token and
    // the one shopctl revoked are refused, every order is there.
    for email in &seen.registered {
        login(&stack, email).await.unwrap_or_else(|e| panic!("an acknowledged registration was lost: {e}"));
    }
    for t in seen.logged_out.iter().map(|(t, _)| t).chain([&kept]) {
        assert_eq!(get(&stack, t, "/api/orders?limit=1").await.0, 401, "an acknowledged logout was lost");
    }
    let mut tokens = BTreeMap::new();
    for (id, email) in &users {
        tokens.insert(*id, stack.login(email).await);
    }
    for (user, id) in &seen.orders {
        let (status, body) = get(&stack, &tokens[user], &format!("/api/orders/{id}")).await;
        assert_eq!(status, 200, "an acknowledged order of user {user} was lost: {body}");
    }
    eprintln!(
        "{} orders, {} registrations, {} logouts acknowledged; {} writes refused during the outage",
        seen.orders.len(),
        seen.registered.len(),
        seen.logged_out.len(),
        seen.refused_writes
    );
}
