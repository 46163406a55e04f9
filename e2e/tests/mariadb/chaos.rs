//! Clients that vanish. Thousands of order creates (each under an Idempotency-Key) and profile
//! writes go through nginx to both MariaDB shards while a crowd of raw-TCP clients drops its socket
//! at random moments: before sending the body, half-way through it, or while waiting for the
//! answer. Normal clients beside them record every 201 they see, and retry some abandoned keys.
//!
//! Afterwards, with SQL on the instances: no transaction stays open on a primary, every 201 anyone
//! saw is stored exactly once, every stored order has its items and its idempotency row, no answer
//! was ever a 500, and the replica lag the backends report is real (small once the replica has
//! applied the primary's GTID position).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shopgate_core::time::unix_now_ms;
use shopgate_e2e::mariadb::Topology;
use shopgate_e2e::Shop as _;
use shopgate_e2e::Stack;
use sqlx::MySqlPool;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::{metric, shard_of, stack_on_mariadb, user_on};

/// Requests sent by the clients that wait for every answer, and by those that give up; each kind
/// has its own count, so that however slow the machine, thousands of requests are sent and
/// hundreds of acknowledgements are checked.
const NORMAL_REQUESTS: usize = 700;
const ABORTING_REQUESTS: usize = 1700;
const NORMAL_CLIENTS: usize = 8;
const ABORTING_CLIENTS: usize = 16;
/// Users who place orders (both shards); profile writes each use a fresh user.
const ORDER_USERS: usize = 24;
/// An aborting client that sent its whole request waits up to this long for the answer.
const MAX_PATIENCE_MS: u64 = 60;
/// At the end, bursts of this many order requests, each burst dropped all at once.
const FINALE_ROUNDS: usize = 8;
const FINALE_BURST: usize = 40;

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[derive(Clone)]
struct OrderJob {
    user: u64,
    token: String,
    key: String,
    body: String,
}

/// An order answer someone saw: (user, key) -> order id, with the status.
#[derive(Debug, Clone)]
struct SeenOrder {
    user: u64,
    key: String,
    id: i64,
    status: u16,
}

#[derive(Default)]
struct Seen {
    orders: Vec<SeenOrder>,
    /// Users whose `POST /api/users` answered 201.
    profiles: Vec<u64>,
    statuses: BTreeMap<u16, usize>,
    /// Every answer that was neither 2xx nor a 503 to retry, with what was asked.
    failures: Vec<String>,
    aborted: usize,
}

struct Plan {
    stack: Arc<Stack>,
    run: String,
    /// Requests handed out so far, to the normal clients and to the aborting ones.
    normal_tickets: AtomicUsize,
    aborting_tickets: AtomicUsize,
    next_profile_user: AtomicU64,
    order_users: Vec<(u64, String)>,
    /// Order requests an aborting client gave up on, for a normal client to retry.
    abandoned: Mutex<Vec<OrderJob>>,
    seen: Mutex<Seen>,
}

enum Job {
    Order(OrderJob),
    Profile { user: u64, token: String },
}

impl Plan {
    /// The next request of a normal client (`normal`) or an aborting one, if any is left; its
    /// number is unique over both.
    fn ticket(&self, normal: bool) -> Option<usize> {
        if normal {
            let n = self.normal_tickets.fetch_add(1, Ordering::Relaxed);
            (n < NORMAL_REQUESTS).then_some(n)
        } else {
            let n = self.aborting_tickets.fetch_add(1, Ordering::Relaxed);
            (n < ABORTING_REQUESTS).then_some(NORMAL_REQUESTS + n)
        }
    }

    fn job(&self, n: usize, rng: &mut Rng, may_retry: bool) -> Job {
        if may_retry && rng.below(10) < 2 {
            if let Some(job) = self.abandoned.lock().unwrap().pop() {
                return Job::Order(job);
            }
        }
        if rng.below(10) < 6 {
            let (user, token) = self.order_users[rng.below(ORDER_USERS as u64) as usize].clone();
            let lines = 1 + rng.below(3);
            let items: Vec<Value> =
                (0..lines).map(|_| json!({"product_id": 1 + rng.below(12), "quantity": 1 + rng.below(5)})).collect();
            let body = json!({ "items": items }).to_string();
            Job::Order(OrderJob { user, token, key: format!("chaos-{}-{n}", self.run), body })
        } else {
            let user = self.next_profile_user.fetch_add(1, Ordering::Relaxed);
            Job::Profile { user, token: self.stack.mint(user) }
        }
    }

    fn record(&self, what: &str, status: u16, body: &Value) {
        let mut seen = self.seen.lock().unwrap();
        *seen.statuses.entry(status).or_default() += 1;
        if !(200..300).contains(&status) && status != 503 {
            seen.failures.push(format!("{what}: {status} {body}"));
        }
    }

    fn record_order(&self, job: &OrderJob, status: u16, body: &Value) {
        self.record(&format!("order {} of user {}", job.key, job.user), status, body);
        if status == 200 || status == 201 {
            let id = body["id"].as_i64().unwrap_or_else(|| panic!("{status} without an order id: {body}"));
            let seen = SeenOrder { user: job.user, key: job.key.clone(), id, status };
            self.seen.lock().unwrap().orders.push(seen);
        }
    }

    fn record_profile(&self, user: u64, status: u16, body: &Value) {
        self.record(&format!("profile of user {user}"), status, body);
        if status == 201 {
            self.seen.lock().unwrap().profiles.push(user);
        }
    }
}

/// A client that waits for every answer, retrying 503s (same key) until acknowledged.
async fn normal_client(plan: Arc<Plan>, seed: u64) {
    let mut rng = Rng(seed);
    let stack = &plan.stack;
    while let Some(n) = plan.ticket(true) {
        let deadline = Instant::now() + Duration::from_secs(30);
        match plan.job(n, &mut rng, true) {
            Job::Order(job) => send_order(&plan, &job).await,
            Job::Profile { user, token } => loop {
                let r = stack.http.post(stack.api("/api/users")).bearer_auth(&token).json(&json!({})).send();
                let r = r.await.unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                plan.record_profile(user, status, &body);
                if status != 503 || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            },
        }
    }
}

/// Sends `job` and waits for the answer, retrying 503s under the same key for up to 30 s.
async fn send_order(plan: &Plan, job: &OrderJob) {
    let stack = &plan.stack;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = stack
            .http
            .post(stack.api("/api/orders"))
            .bearer_auth(&job.token)
            .header("Idempotency-Key", &job.key)
            .header("Content-Type", "application/json")
            .body(job.body.clone())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        plan.record_order(job, status, &body);
        if status != 503 || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// When an aborting client drops its socket.
#[derive(Debug, Clone, Copy)]
enum Abort {
    /// After the headers, before any of the body.
    BeforeBody,
    /// After half of the body.
    MidBody,
    /// After the whole request, if no answer came within this long.
    Waiting(Duration),
}

/// A client on raw TCP that gives up at a random moment; an answer it does get is recorded.
async fn aborting_client(plan: Arc<Plan>, seed: u64, nginx: String) {
    let mut rng = Rng(seed);
    while let Some(n) = plan.ticket(false) {
        let abort = match rng.below(10) {
            0 => Abort::BeforeBody,
            1 => Abort::MidBody,
            _ => Abort::Waiting(Duration::from_micros(rng.below(MAX_PATIENCE_MS * 1000))),
        };
        let reset = rng.below(2) == 0;
        let linger = Duration::from_micros(rng.below(3000));
        match plan.job(n, &mut rng, false) {
            Job::Order(job) => {
                let key = [("Idempotency-Key", job.key.as_str())];
                match raw_post(&nginx, "/api/orders", &job.token, &key, &job.body, abort, reset, linger).await {
                    Some((status, body)) => plan.record_order(&job, status, &body),
                    None => {
                        plan.seen.lock().unwrap().aborted += 1;
                        plan.abandoned.lock().unwrap().push(job);
                    }
                }
            }
            Job::Profile { user, token } => {
                match raw_post(&nginx, "/api/users", &token, &[], "{}", abort, reset, linger).await {
                    Some((status, body)) => plan.record_profile(user, status, &body),
                    None => plan.seen.lock().unwrap().aborted += 1,
                }
            }
        }
    }
}

/// Sends `POST path` by hand and gives up as `abort` says (closing with a reset if `reset`);
/// `Some((status, body))` only if the whole answer came first.
#[allow(clippy::too_many_arguments)]
async fn raw_post(
    addr: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: &str,
    abort: Abort,
    reset: bool,
    linger: Duration,
) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    if reset {
        // A zero linger makes the close a reset; it never blocks (the deprecation's concern).
        #[allow(deprecated)]
        stream.set_linger(Some(Duration::ZERO)).unwrap();
    }
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    // A write may fail if nginx already answered and closed: that is an answer we did not wait for.
    if stream.write_all(head.as_bytes()).await.is_err() {
        return None;
    }
    let patience = match abort {
        Abort::BeforeBody | Abort::MidBody => {
            if let Abort::MidBody = abort {
                let _ = stream.write_all(&body.as_bytes()[..body.len() / 2]).await;
            }
            tokio::time::sleep(linger).await;
            return None;
        }
        Abort::Waiting(patience) => patience,
    };
    if stream.write_all(body.as_bytes()).await.is_err() {
        return None;
    }
    let mut answer = Vec::new();
    match tokio::time::timeout(patience, stream.read_to_end(&mut answer)).await {
        Ok(Ok(_)) => parse_answer(&answer),
        _ => None,
    }
}

/// Status and JSON body of a whole HTTP/1.1 answer (`Connection: close`, so the body runs to EOF).
fn parse_answer(raw: &[u8]) -> Option<(u16, Value)> {
    let text = std::str::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        panic!("unexpected chunked answer: {head}");
    }
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// The open transactions on `db`'s instance, described for a failure message.
async fn open_transactions(db: &MySqlPool) -> Vec<String> {
    let rows: Vec<(String, String, String, String, String, String)> = sqlx::query_as(
        "SELECT CAST(t.trx_id AS CHAR), t.trx_state, CAST(t.trx_started AS CHAR), \
                CAST(t.trx_rows_modified AS CHAR), COALESCE(p.COMMAND, '?'), COALESCE(t.trx_query, '') \
         FROM information_schema.innodb_trx t \
         LEFT JOIN information_schema.processlist p ON p.ID = t.trx_mysql_thread_id",
    )
    .fetch_all(db)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(id, state, started, modified, command, query)| {
            format!("trx {id} {state} since {started}, {modified} rows modified, connection {command}, query {query:?}")
        })
        .collect()
}

/// Sum of the series in `shard`'s `/metrics` whose line starts with `prefix` and contains
/// `with` (0 if there is none).
async fn series_sum_with(stack: &Stack, shard: &str, prefix: &str, with: &str) -> f64 {
    let url = format!("http://{}/metrics", stack.config.shard(shard).unwrap().addr());
    let text = stack.http.get(url).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(with))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

async fn series_sum(stack: &Stack, shard: &str, prefix: &str) -> f64 {
    series_sum_with(stack, shard, prefix, "").await
}

/// How many requests `shard` answered with 500.
async fn answered_500(stack: &Stack, shard: &str) -> f64 {
    series_sum_with(stack, shard, "shop_http_requests_total{", "status=\"500\"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_request_lose_nothing_and_leave_no_transaction_open() {
    const MAX_LAG: u64 = 5;
    let (topology, stack) = stack_on_mariadb(MAX_LAG).await;
    let stack = Arc::new(stack);
    let mut next = 50_000;
    let order_users: Vec<(u64, String)> = (0..ORDER_USERS)
        .map(|i| {
            let user = user_on(&stack, if i % 2 == 0 { "a" } else { "b" }, &mut next);
            (user, stack.mint(user))
        })
        .collect();
    let seed = u64::from_str_radix(&shopgate_e2e::rand_hex(8), 16).unwrap() | 1;
    eprintln!("chaos seed {seed:#x}");
    let plan = Arc::new(Plan {
        stack: stack.clone(),
        run: shopgate_e2e::rand_hex(4),
        normal_tickets: AtomicUsize::new(0),
        aborting_tickets: AtomicUsize::new(0),
        next_profile_user: AtomicU64::new(600_000),
        order_users,
        abandoned: Mutex::new(Vec::new()),
        seen: Mutex::new(Seen::default()),
    });
    let nginx = stack.url.trim_start_matches("http://").to_owned();

    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..NORMAL_CLIENTS as u64 {
        clients.spawn(normal_client(plan.clone(), seed.wrapping_mul(i + 1)));
    }
    for i in 0..ABORTING_CLIENTS as u64 {
        clients.spawn(aborting_client(plan.clone(), seed.wrapping_mul(i + 101), nginx.clone()));
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    // The load stops mid-flight, the way a load generator does when its time is up: every request
    // of a burst is dropped at the same moment, and nothing comes after it.
    for round in 0..FINALE_ROUNDS {
        let mut burst = tokio::task::JoinSet::new();
        // Long enough for most of the burst to be inside a backend when it is dropped.
        let patience = Duration::from_millis(30 + 40 * round as u64 / FINALE_ROUNDS as u64);
        for i in 0..FINALE_BURST {
            let (plan, nginx) = (plan.clone(), nginx.clone());
            let (user, token) = plan.order_users[i % ORDER_USERS].clone();
            let body = json!({"items": [{"product_id": 1 + i % 12, "quantity": 1}]}).to_string();
            let key = format!("chaos-{}-finale-{round}-{i}", plan.run);
            burst.spawn(async move {
                let job = OrderJob { user, token, key, body };
                let header = [("Idempotency-Key", job.key.as_str())];
                let abort = Abort::Waiting(patience);
                let (path, token, no_linger) = ("/api/orders", &job.token, Duration::ZERO);
                let answer = raw_post(&nginx, path, token, &header, &job.body, abort, false, no_linger);
                match answer.await {
                    Some((status, body)) => plan.record_order(&job, status, &body),
                    None => plan.seen.lock().unwrap().aborted += 1,
                }
            });
        }
        while let Some(done) = burst.join_next().await {
            done.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    let access_log = std::fs::read_to_string(stack.dir.path().join("nginx/logs/access.log")).unwrap_or_default();
    let backends: Vec<String> = stack.config.shards.iter().map(|s| s.addr().to_string()).collect();
    let abandoned_at_backend = access_log
        .lines()
        .filter(|l| l.contains("\"status\":499") && backends.iter().any(|b| l.contains(b.as_str())))
        .count();
    {
        let seen = plan.seen.lock().unwrap();
        eprintln!(
            "{} requests in {took:?}: answers {:?}, {} given up by their client ({abandoned_at_backend} \
             of them after nginx had passed them to a backend), {} orders and {} profiles seen created",
            NORMAL_REQUESTS + ABORTING_REQUESTS + FINALE_ROUNDS * FINALE_BURST,
            seen.statuses,
            seen.aborted,
            seen.orders.iter().filter(|o| o.status == 201).count(),
            seen.profiles.len(),
        );
    }

    assert!(
        abandoned_at_backend >= 20,
        "only {abandoned_at_backend} requests were given up while a backend had them: the test proves little"
    );
    // Every check runs and reports, so one failure does not hide another.
    let mut problems: Vec<String> = Vec::new();

    // No transaction stays open on a primary once the shop is idle.
    for shard in ["a", "b"] {
        let primary = topology.admin(&format!("{shard}-primary")).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let open = open_transactions(&primary).await;
            if open.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                problems.push(format!("{shard}-primary still has open transactions when idle:\n{}", open.join("\n")));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        primary.close().await;
    }

    check_lag_is_real(&topology, &stack, MAX_LAG, &mut problems).await;

    // A quarter of what the aborting clients gave up on, retried to the end under the same key.
    let leftovers: Vec<OrderJob> = std::mem::take(&mut *plan.abandoned.lock().unwrap());
    let leftovers: Arc<Vec<OrderJob>> = Arc::new(leftovers.into_iter().step_by(4).collect());
    let mut retries = tokio::task::JoinSet::new();
    for first in 0..NORMAL_CLIENTS {
        let (plan, leftovers) = (plan.clone(), leftovers.clone());
        retries.spawn(async move {
            for job in leftovers.iter().skip(first).step_by(NORMAL_CLIENTS) {
                send_order(&plan, job).await;
            }
        });
    }
    while let Some(done) = retries.join_next().await {
        done.unwrap();
    }
    let seen = std::mem::take(&mut *plan.seen.lock().unwrap());
    check_stored(&topology, &stack, &seen, &mut problems).await;

    // No 500, ever: not in any answer a client read, not in any answer a backend gave.
    if !seen.failures.is_empty() {
        problems.push(format!("answers that are neither 2xx nor 503: {:#?}", seen.failures));
    }
    for shard in ["a", "b"] {
        let n = answered_500(&stack, shard).await;
        if n > 0.0 {
            problems.push(format!("shard {shard} answered {n} requests with 500"));
        }
    }
    let mut outlived = 0.0;
    for shard in ["a", "b"] {
        outlived += series_sum(&stack, shard, "shop_writes_outlived_request_total{").await;
    }
    eprintln!("{outlived} writes ran to their end after their request was dropped");
    if outlived == 0.0 {
        problems.push("no write outlived its request: the clients never left at the moment that matters".into());
    }
    let access_log = std::fs::read_to_string(stack.dir.path().join("nginx/logs/access.log")).unwrap_or_default();
    let nginx_500s = access_log.lines().filter(|l| l.contains("\"status\":500")).count();
    if nginx_500s > 0 {
        problems.push(format!("nginx logged {nginx_500s} answers with 500"));
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// Every 201 seen is stored exactly once; every stored order has its items and its key.
async fn check_stored(topology: &Topology, stack: &Stack, seen: &Seen, problems: &mut Vec<String>) {
    let mut by_key: HashMap<(u64, String), i64> = HashMap::new();
    for o in &seen.orders {
        if let Some(earlier) = by_key.insert((o.user, o.key.clone()), o.id) {
            if earlier != o.id {
                problems.push(format!("key {} was answered with order {earlier} and order {}", o.key, o.id));
            }
        }
    }
    let mut profiles: HashMap<u64, usize> = HashMap::new();
    for u in &seen.profiles {
        *profiles.entry(*u).or_default() += 1;
    }
    for (user, n) in &profiles {
        if *n > 1 {
            problems.push(format!("the profile of user {user} answered 201 {n} times"));
        }
    }
    for shard in ["a", "b"] {
        let db = topology.admin(&format!("{shard}-primary")).await;
        let orders: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT o.id, o.user_id, o.total_cents, \
                    (SELECT COUNT(*) FROM order_items i WHERE i.order_id = o.id), \
                    CAST((SELECT COALESCE(SUM(i.line_total_cents), -1) FROM order_items i \
                          WHERE i.order_id = o.id) AS SIGNED) \
             FROM orders o",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        let keys: Vec<(i64, String, i64)> =
            sqlx::query_as("SELECT user_id, CAST(idem_key AS CHAR), order_id FROM idempotency_keys")
                .fetch_all(&db)
                .await
                .unwrap();
        let users: Vec<(i64,)> = sqlx::query_as("SELECT id FROM users").fetch_all(&db).await.unwrap();
        db.close().await;
        let stored_orders: HashMap<i64, (i64, i64, i64, i64)> =
            orders.iter().map(|(id, user, total, items, sum)| (*id, (*user, *total, *items, *sum))).collect();
        let mut keys_of_order: HashMap<i64, usize> = HashMap::new();
        for (_, _, order) in &keys {
            *keys_of_order.entry(*order).or_default() += 1;
        }
        let stored_keys: HashMap<(u64, String), i64> =
            keys.iter().map(|(u, k, o)| ((*u as u64, k.clone()), *o)).collect();
        let stored_users: HashSet<u64> = users.iter().map(|(u,)| *u as u64).collect();
        let (o, k, u) = (stored_orders.len(), stored_keys.len(), stored_users.len());
        eprintln!("shard {shard}: {o} orders, {k} keys, {u} users stored");

        for (id, (user, total, items, sum)) in &stored_orders {
            if *items == 0 || *sum != *total {
                let what = format!("{items} items summing to {sum}, total {total}");
                problems.push(format!("{shard}: order {id} of user {user} has {what}"));
            }
            if keys_of_order.get(id) != Some(&1) {
                problems.push(format!("{shard}: order {id} has {:?} idempotency rows, not one", keys_of_order.get(id)));
            }
        }
        for ((user, key), order) in &stored_keys {
            if !stored_orders.contains_key(order) {
                problems.push(format!("{shard}: key {key} of user {user} names a missing order {order}"));
            }
        }
        for ((user, key), id) in by_key.iter().filter(|((u, _), _)| shard_of(stack, *u) == shard) {
            if !stored_orders.contains_key(id) {
                problems.push(format!("{shard}: order {id} (key {key}) was acknowledged but is not stored"));
            } else if stored_keys.get(&(*user, key.clone())) != Some(id) {
                problems.push(format!("{shard}: key {key} of user {user} does not name order {id}"));
            }
        }
        for user in profiles.keys().filter(|u| shard_of(stack, **u) == shard) {
            if !stored_users.contains(user) {
                problems.push(format!("{shard}: the profile of user {user} answered 201 but is not stored"));
            }
        }
    }
}

/// Once a replica has applied its primary's GTID position, the backend reports a small lag, and
/// the primary holds a recent heartbeat (a heartbeat stuck in an open transaction does neither).
async fn check_lag_is_real(topology: &Topology, stack: &Stack, max_lag: u64, problems: &mut Vec<String>) {
    for shard in ["a", "b"] {
        topology.wait_replica_caught_up(shard, Duration::from_secs(20)).await;
        let primary = topology.admin(&format!("{shard}-primary")).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let beat: i64 = sqlx::query_scalar("SELECT beat_ms FROM replication_heartbeat WHERE id = 1")
                .fetch_one(&primary)
                .await
                .unwrap();
            let behind_ms = unix_now_ms() - beat;
            let lag = metric(stack, shard, "shop_replica_lag_seconds").await;
            if lag < 2.0 && behind_ms < 3_000 {
                break;
            }
            if Instant::now() > deadline {
                problems.push(format!(
                    "{shard}: the replica has caught up, yet the backend reports a lag of {lag} s (bound {max_lag}) \
                     and the primary's committed heartbeat is {behind_ms} ms old"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        primary.close().await;
    }
}
