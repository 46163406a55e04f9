//! Processes stopping, restarting and reloading under load: nothing in flight is lost.
//!
//! Each test keeps requests flowing from a few tasks ([`Load`]) while a process of the stack gets
//! SIGTERM, is restarted, or nginx reloads, and then looks at every answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shopgate_e2e::Shop as _;
use shopgate_e2e::{rand_hex, Options, Stack};
use sqlx::Connection as _;
use sqlx::Executor as _;

/// What one request of a load task got: a status, the error code of a JSON error body and whether
/// the answer carried nginx's debug header `X-Shop-Upstream`; or a transport error.
#[derive(Debug, Clone)]
#[allow(dead_code)] // the error text is read through Debug, in failure messages
enum Outcome {
    Status(u16, Option<String>, bool),
    Refused,
    Failed(String),
}

/// Requests sent in a loop by `tasks` tasks until stopped; every outcome is kept.
struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
    outcomes: Arc<Mutex<Vec<(String, Outcome)>>>,
    /// Requests sent again because the keep-alive connection they went out on was closed with no
    /// answer (see [`closed_unanswered`]).
    resent: Arc<std::sync::atomic::AtomicUsize>,
}

type Request = Box<dyn Fn(u64) -> (String, reqwest::RequestBuilder) + Send + Sync>;

impl Load {
    /// `request(n)` builds the n-th request of a task and names it.
    fn start(tasks: usize, request: Request) -> Load {
        Self::start_with(tasks, false, request)
    }

    /// With `resend`, a request whose keep-alive connection was closed with no answer is sent
    /// once more, as HTTP clients do (RFC 9112 section 9.3.1; curl and browsers do it).
    fn start_with(tasks: usize, resend: bool, request: Request) -> Load {
        let (stop, outcomes, request) =
            (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())), Arc::new(request));
        let resent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handles = (0..tasks as u64)
            .map(|task| {
                let (stop, outcomes, request, resent) =
                    (stop.clone(), outcomes.clone(), request.clone(), resent.clone());
                tokio::spawn(async move {
                    let mut n = task;
                    while !stop.load(Ordering::Relaxed) {
                        let (what, rb) = request(n);
                        n += tasks as u64;
                        let again = rb.try_clone().filter(|_| resend);
                        let mut sent = rb.send().await;
                        if let (Some(again), Err(e)) = (again, &sent) {
                            if closed_unanswered(e) {
                                resent.fetch_add(1, Ordering::Relaxed);
                                sent = again.send().await;
                            }
                        }
                        let outcome = match sent {
                            Ok(r) => {
                                let status = r.status().as_u16();
                                let debug = r.headers().contains_key("x-shop-upstream");
                                let body: Option<Value> = r.json().await.ok();
                                Outcome::Status(
                                    status,
                                    body.and_then(|b| b["error"].as_str().map(str::to_owned)),
                                    debug,
                                )
                            }
                            Err(e) if e.is_connect() => Outcome::Refused,
                            Err(e) => Outcome::Failed(format!("{e:?}")),
                        };
                        outcomes.lock().unwrap().push((what, outcome));
                    }
                })
            })
            .collect();
        Load { stop, handles, outcomes, resent }
    }

    async fn stop(self) -> Vec<(String, Outcome)> {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.await.unwrap();
        }
        std::mem::take(&mut *self.outcomes.lock().unwrap())
    }
}

/// The connection closed before any answer: the server had closed it as idle (nginx does so to
/// idle keep-alive connections when its old workers stop at a reload) as the request went out,
/// so the server never read the request.
fn closed_unanswered(e: &reqwest::Error) -> bool {
    let text = format!("{e:?}");
    !e.is_connect() && (text.contains("IncompleteMessage") || text.contains("ConnectionReset"))
}

/// Outcomes other than those `allowed`, summarised for a failure message; and how many in all.
fn unexpected(outcomes: &[(String, Outcome)], allowed: impl Fn(&str, &Outcome) -> bool) -> (Vec<String>, usize) {
    let bad: Vec<String> =
        outcomes.iter().filter(|(what, o)| !allowed(what, o)).map(|(what, o)| format!("{what}: {o:?}")).collect();
    (bad, outcomes.len())
}

fn ok(o: &Outcome) -> bool {
    matches!(o, Outcome::Status(200..=299, _, _))
}

/// The documented answer while a shard's only backend is down: 503 `unavailable`.
fn unavailable(o: &Outcome) -> bool {
    matches!(o, Outcome::Status(503, Some(code), _) if code == "unavailable")
}

/// Lines of nginx's error log that tell of a request cut off mid-way (as opposed to a connection
/// refused, which nginx retries elsewhere or answers with the documented 503).
fn cut_requests(stack: &Stack) -> Vec<String> {
    let log = std::fs::read_to_string(stack.dir.path().join("nginx/logs/error.log")).unwrap_or_default();
    log.lines()
        .filter(|l| ["prematurely closed", "reset by peer", "broken pipe", "timed out"].iter().any(|p| l.contains(p)))
        .map(str::to_owned)
        .collect()
}

fn order(stack: &Stack, user: u64, key: &str) -> reqwest::RequestBuilder {
    stack
        .http
        .post(stack.api("/api/orders"))
        .bearer_auth(stack.mint(user))
        .header("Idempotency-Key", key)
        .json(&json!({"items": [{"product_id": 1, "quantity": 1}]}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_a_backend_fails_no_request_in_flight() {
    let stack = Arc::new(Stack::start().await);
    let shard_a = stack.config.shard("a").unwrap().addr();

    // An order certainly in flight when the signal comes: shard a's database is write-locked, so
    // the backend waits on it (busy_timeout 5 s) until the lock is let go, after the signal.
    let db = stack.dir.path().join("shard-a.db");
    let mut lock = sqlx::SqliteConnection::connect(&format!("sqlite:{}", db.display())).await.unwrap();
    lock.execute("BEGIN IMMEDIATE").await.unwrap();
    let held = tokio::spawn({
        let stack = stack.clone();
        async move { order(&stack, 2, "held-order").send().await.map(|r| r.status().as_u16()).map_err(|e| format!("{e:?}")) }
    });

    // Shard a's users through nginx (GETs and orders), shard b's users, and a client of its own
    // with keep-alive connections straight to backend a.
    let via_nginx = Load::start(4, {
        let stack = stack.clone();
        Box::new(move |n| match n % 3 {
            0 => ("GET shard a".into(), stack.http.get(stack.api("/api/orders")).bearer_auth(stack.mint(4))),
            1 => ("POST shard a".into(), order(&stack, 6, &format!("k-{n}"))),
            _ => ("GET shard b".into(), stack.http.get(stack.api("/api/orders")).bearer_auth(stack.mint(3))),
        })
    });
    let direct = Load::start(4, {
        let (stack, client) = (stack.clone(), reqwest::Client::new());
        Box::new(move |_| {
            let rb = client
                .get(format!("http://{shard_a}/api/products"))
                .bearer_auth(stack.mint(2))
                .header("X-User-Id", "2");
            ("GET backend a directly".into(), rb)
        })
    });
    tokio::time::sleep(Duration::from_millis(400)).await;

    let started = Instant::now();
    let (status, ()) = tokio::join!(stack.terminate("backend-a"), async {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        lock.execute("ROLLBACK").await.unwrap();
    });
    let took = started.elapsed();
    let via_nginx = via_nginx.stop().await;
    let direct = direct.stop().await;

    assert!(status.success(), "backend-a exited with {status}; logs:\n{}", stack.logs());
    assert!(took < Duration::from_secs(10), "backend-a took {took:?} to stop");
    assert_eq!(held.await.unwrap(), Ok(201), "the order in flight at SIGTERM; logs:\n{}", stack.logs());

    // Through nginx: an answer from the backend, or the documented 503 once it no longer
    // accepts; shard b's users see nothing of it.
    let (bad, n) = unexpected(&via_nginx, |what, o| ok(o) || (what.ends_with("shard a") && unavailable(o)));
    assert!(bad.is_empty(), "{} of {n} requests through nginx failed otherwise: {bad:?}", bad.len());
    assert!(via_nginx.iter().any(|(w, o)| w.ends_with("shard a") && ok(o)), "no request reached shard a");
    // Straight to the backend: every request sent on an open connection was answered; the only
    // failures are connections refused after the listener closed.
    let (bad, n) = unexpected(&direct, |_, o| ok(o) || matches!(o, Outcome::Refused));
    assert!(bad.is_empty(), "{} of {n} requests straight to the backend failed: {bad:?}", bad.len());
    assert!(direct.iter().any(|(_, o)| ok(o)), "no direct request was answered");
    let cut = cut_requests(&stack);
    assert!(cut.is_empty(), "nginx saw requests cut off: {cut:#?}");
    let log = std::fs::read_to_string(stack.dir.path().join("backend-a.log")).unwrap();
    assert!(log.contains("\"stopped\""), "backend-a did not log its stop:\n{log}");
    assert!(!log.contains("stop deadline"), "requests ran past the deadline:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_verifier_fails_no_request_in_flight() {
    let stack = Arc::new(Stack::start().await);
    // Four accounts, two logins each: at most 5 password checks per account run at once.
    let mut emails = Vec::new();
    for _ in 0..4 {
        let email = format!("stop-{}@example.com", rand_hex(4));
        stack.register(&email).await;
        emails.push(email);
    }

    let load = Load::start(3, {
        let stack = stack.clone();
        Box::new(move |n| {
            ("GET /api/orders".into(), stack.http.get(stack.api("/api/orders")).bearer_auth(stack.mint(2 + n % 2)))
        })
    });
    // And the check path straight from a client of its own, on keep-alive connections, as nginx
    // calls it.
    let direct = Load::start(3, {
        let (stack, client) = (stack.clone(), reqwest::Client::new());
        let check = format!("http://{}/verify", stack.config.verifier.listen[0]);
        Box::new(move |_| ("GET /verify directly".into(), client.get(&check).bearer_auth(stack.mint(2))))
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Logins queue on the verifier's one hashing thread: once all have reached it, some are still
    // running or waiting when the signal comes.
    const LOGINS: usize = 8;
    let logins: Vec<_> = (0..LOGINS)
        .map(|i| {
            let email = emails[i % emails.len()].as_str();
            let rb = stack
                .http
                .post(stack.api("/auth/token"))
                .form(&[("username", email), ("password", shopgate_e2e::PASSWORD)]);
            tokio::spawn(async move { rb.send().await.map(|r| r.status().as_u16()).map_err(|e| format!("{e:?}")) })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let in_flight = loop {
        let in_flight = stack.verifier_metric(0, "shop_hash_in_flight").await.unwrap_or(0.0);
        let done = stack.verifier_metric(0, "shop_logins_total{result=\"ok\"}").await.unwrap_or(0.0);
        if in_flight + done >= LOGINS as f64 {
            break in_flight;
        }
        assert!(Instant::now() < deadline, "the logins did not all reach the verifier");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let status = stack.terminate("verifier-0").await;
    let load = load.stop().await;
    let direct = direct.stop().await;

    assert!(status.success(), "verifier-0 exited with {status}; logs:\n{}", stack.logs());
    assert!(in_flight > 0.0, "every login had finished before the signal; nothing was in flight");
    for login in logins {
        assert_eq!(
            login.await.unwrap(),
            Ok(200),
            "a login in flight at SIGTERM ({in_flight} were); logs:\n{}",
            stack.logs()
        );
    }
    let (bad, n) = unexpected(&load, |_, o| ok(o) || unavailable(o));
    assert!(bad.is_empty(), "{} of {n} requests failed other than with the documented 503: {bad:?}", bad.len());
    let (bad, n) = unexpected(&direct, |_, o| ok(o) || matches!(o, Outcome::Refused));
    assert!(bad.is_empty(), "{} of {n} checks straight to the verifier failed: {bad:?}", bad.len());
    assert!(direct.iter().any(|(_, o)| ok(o)), "no direct check was answered");
    let cut = cut_requests(&stack);
    assert!(cut.is_empty(), "nginx saw requests cut off: {cut:#?}");
}

/// Checks (GET /api/orders, through nginx's auth_request), logouts (a POST nginx never retries
/// once sent), the odd login, and orders to both shards, all through nginx.
fn mixed_load(stack: &Arc<Stack>, email: String, resend: bool) -> Load {
    let stack = stack.clone();
    Load::start_with(
        4,
        resend,
        Box::new(move |n| match n % 10 {
            0 => (
                "POST /auth/token".into(),
                stack
                    .http
                    .post(stack.api("/auth/token"))
                    .form(&[("username", email.as_str()), ("password", shopgate_e2e::PASSWORD)]),
            ),
            1..=3 => (
                "POST /auth/logout".into(),
                stack.http.post(stack.api("/auth/logout")).bearer_auth(stack.mint(1000 + n)),
            ),
            4 => ("POST /api/orders".into(), order(&stack, 2 + n % 2, &format!("order-{n}"))),
            _ => {
                ("GET /api/orders".into(), stack.http.get(stack.api("/api/orders")).bearer_auth(stack.mint(2 + n % 2)))
            }
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_two_verifiers_fails_no_request() {
    let stack = Arc::new(Stack::start_with(Options { verifiers: 2, ..Default::default() }).await);
    let email = format!("roll-{}@example.com", rand_hex(4));
    stack.register(&email).await;
    let load = mixed_load(&stack, email, false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for name in ["verifier-0", "verifier-1"] {
        let status = stack.terminate(name).await;
        assert!(status.success(), "{name} exited with {status}");
        stack.restart(name).await;
        // nginx skips a verifier for fail_timeout (2 s) after it refused a connection; the next
        // one may stop only once nginx sends to this one again (README: rolling restart).
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    let outcomes = load.stop().await;
    let (bad, n) = unexpected(&outcomes, |_, o| ok(o));
    assert!(
        bad.is_empty(),
        "{} of {n} requests failed during the rolling restart: {bad:?}\n{}",
        bad.len(),
        stack.logs()
    );
    assert!(n > 100, "only {n} requests during the restart");
    for what in ["POST /auth/logout", "POST /auth/token", "POST /api/orders", "GET /api/orders"] {
        assert!(outcomes.iter().any(|(w, _)| w == what), "no {what} sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nginx_reloads_under_load_fail_no_request() {
    let stack =
        Arc::new(Stack::start_with(Options { nginx_master: true, debug_headers: false, ..Default::default() }).await);
    let email = format!("reload-{}@example.com", rand_hex(4));
    stack.register(&email).await;
    let load = mixed_load(&stack, email, true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let config = std::fs::read_to_string(&stack.config_path).unwrap();
    for i in 0..10 {
        // A real change each time: debug headers on, off, on, ... (X-Shop-Upstream on answers
        // shows which config served them).
        let debug = i % 2 == 0;
        std::fs::write(
            &stack.config_path,
            config.replace("debug_headers = false", &format!("debug_headers = {debug}")),
        )
        .unwrap();
        let out = stack
            .shopctl()
            .args(["nginx", "render", "--output"])
            .arg(stack.dir.path().join("nginx/nginx.conf"))
            .output()
            .unwrap();
        assert!(out.status.success(), "render: {}", String::from_utf8_lossy(&out.stderr));
        stack.reload_nginx();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let resent = load.resent.clone();
    let outcomes = load.stop().await;
    let (bad, n) = unexpected(&outcomes, |_, o| ok(o));
    assert!(bad.is_empty(), "{} of {n} requests failed across 10 reloads: {bad:?}\n{}", bad.len(), stack.logs());
    assert!(n > 100, "only {n} requests during the reloads");
    let with_debug =
        outcomes.iter().filter(|(w, o)| w.contains("/api/") && matches!(o, Outcome::Status(_, _, true))).count();
    let without =
        outcomes.iter().filter(|(w, o)| w.contains("/api/") && matches!(o, Outcome::Status(_, _, false))).count();
    assert!(
        with_debug > 0 && without > 0,
        "the reloads did not take effect: {with_debug} answers with debug headers, {without} without"
    );
    let cut = cut_requests(&stack);
    assert!(cut.is_empty(), "nginx saw requests cut off: {cut:#?}");
    eprintln!("{n} requests, {} resent after nginx closed their idle connection", resent.load(Ordering::Relaxed));
}
