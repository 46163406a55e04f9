//! A load client for the tests that change a running shop (adding a shard, moving buckets): many
//! users, each looping "create an order, read" through nginx until stopped, now and then also
//! cancelling one of their orders or writing their profile, every answer recorded; then the checks
//! such a change must pass.
//!
//! Each user is registered and logged in through the stack ([`register_spread`]), with ids spread
//! evenly over the buckets, so that whatever half of a shard's buckets a move picks, some users
//! move and some stay. A create carries an `Idempotency-Key` and is sent again under the same key,
//! after a 503 or a failed connection, until it has a final answer: the client a move promises to
//! serve without losing or doubling an order. Cancels (`POST /api/orders/{id}/cancel`) and profile
//! writes (`POST /api/users`) are retried the same way: both are idempotent in effect (a second
//! cancel answers 200 with the order already cancelled; a second profile write, 200 with the
//! profile as it is). Reads (`GET /api/orders`, `GET /api/orders/{id}`) are sent once and must
//! show the user's own acknowledged orders.
//!
//! The checks read the databases directly: [`Record::check_orders`] (every acknowledged order
//! exactly once, on the shard that owns its user, with its items and its idempotency key),
//! [`Record::check_writes`] (acknowledged cancels and profiles as acknowledged, on the owning
//! shard, and no order cancelled that the load never tried to cancel) and
//! [`Record::check_errors`] (who saw which errors, and when).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shopgate_core::shardmap::{bucket, ShardMap, BUCKETS};
use shopgate_core::time::rfc3339;
use shopgate_core::UserId;
use sqlx::Row as _;

use crate::Shop;

/// One shopper of the load: a registered user and a token from `POST /auth/token`.
#[derive(Debug, Clone)]
pub struct Shopper {
    pub id: u64,
    /// The email registered, which the token carries and the shard's profile must hold.
    pub email: String,
    pub token: String,
}

/// How the load behaves.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Each user's pause after each round (a create, perhaps a cancel or a profile write, a
    /// read), so that many users make a steady load a 2-core machine can serve beside the change
    /// under test.
    pub think: Duration,
    /// The wait before a write is sent again. Shorter than the `Retry-After` a 503 asks for, on
    /// purpose: the checks measure how long the 503s lasted, which needs dense samples.
    pub retry_every: Duration,
    /// A write (create, cancel, profile) without a final answer after this long is given up (and
    /// counted as an error).
    pub give_up_after: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            think: Duration::from_millis(50),
            retry_every: Duration::from_millis(50),
            give_up_after: Duration::from_secs(60),
        }
    }
}

/// What a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `POST /api/orders` with an `Idempotency-Key`.
    Create,
    /// `GET /api/orders`.
    List,
    /// `GET /api/orders/{id}` of an order the user was acknowledged.
    Get,
    /// `POST /api/orders/{id}/cancel` of an order the user was acknowledged.
    Cancel,
    /// `POST /api/users`: the caller's profile on its shard, created or returned as it is.
    Profile,
}

/// A profile as an answer of `POST /api/users` shows it, or as a shard's `users` row holds it
/// (its `created_at`, unix seconds there, in the API's RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub email: String,
    pub is_active: bool,
    pub created_at: String,
}

/// Whether the load cancelled an order, by its answers ([`Record::cancels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// A cancel of it was acknowledged (200, the order cancelled): it must stay cancelled.
    Acknowledged,
    /// Cancels of it were sent but none was acknowledged (given up, or an error that may have
    /// come after the write): either status is right.
    Unsure,
}

/// One answer (or its absence) the load got.
#[derive(Debug, Clone)]
pub struct Answer {
    pub user: u64,
    pub kind: Kind,
    /// The HTTP status; `None` when no answer came (a connection error).
    pub status: Option<u16>,
    /// Whether the answer carried `Retry-After`.
    pub retry_after: bool,
    /// What was wrong other than the status: the connection error, or a 2xx body that does not
    /// show what it must (another user's order, a missing acknowledged order).
    pub problem: Option<String>,
    /// The connection closed before any answer and the request was sent again at once (see
    /// [`closed_unanswered`]); not an error the user sees.
    pub resent: bool,
    /// When the request was sent, from the start of the load.
    pub start: Duration,
    pub took: Duration,
    /// The order a create made or found (201 or 200), or the one a `Get` or a `Cancel` named.
    pub order_id: Option<i64>,
    /// The create's `Idempotency-Key`.
    pub key: Option<String>,
    /// The profile a 200 or 201 to a `Profile` showed.
    pub profile: Option<Profile>,
}

impl Answer {
    /// No answer yet: no status, no problem.
    pub fn new(user: u64, kind: Kind, start: Duration, took: Duration) -> Answer {
        Answer {
            user,
            kind,
            status: None,
            retry_after: false,
            problem: None,
            resent: false,
            start,
            took,
            order_id: None,
            key: None,
            profile: None,
        }
    }

    /// Whether the user saw an error: anything but a 2xx whose body is right, except a request
    /// resent because its keep-alive connection closed unanswered.
    pub fn is_error(&self) -> bool {
        !self.resent && (self.problem.is_some() || !matches!(self.status, Some(200..=299)))
    }

    /// When the answer came, from the start of the load.
    pub fn end(&self) -> Duration {
        self.start + self.took
    }

    /// Whether this is a write's success, with a body that shows it: for a create, a 201, or the
    /// 200 a retry under the same key gets once the first attempt made the order; for a cancel, a
    /// 200 (the order cancelled, now or before); for a profile, a 201 or a 200 (it existed).
    /// Reads acknowledge nothing.
    fn acknowledges(&self) -> bool {
        let ok = match self.kind {
            Kind::Create | Kind::Profile => matches!(self.status, Some(200 | 201)),
            Kind::Cancel => self.status == Some(200),
            Kind::List | Kind::Get => false,
        };
        ok && self.problem.is_none()
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.status.map_or("no answer".to_owned(), |s| s.to_string());
        write!(
            f,
            "user {} {:?} at {:.3}s (+{} ms): {status}",
            self.user,
            self.kind,
            self.start.as_secs_f64(),
            self.took.as_millis()
        )?;
        if self.retry_after {
            write!(f, " Retry-After")?;
        }
        if let Some(p) = &self.problem {
            write!(f, " ({p})")?;
        }
        Ok(())
    }
}

/// Registers and logs in `n` users through the stack. Before each registration the auth
/// database's next user id is raised (test-only SQL on the verifier's table) so that user `i`
/// falls in bucket `i * 1000 / n`: the users cover the buckets evenly, and when the step
/// `1000 / n` is odd (40 users: 25) they alternate between even and odd buckets (shards `a` and
/// `b` of the default map).
pub async fn register_spread(stack: &impl Shop, n: usize) -> Vec<Shopper> {
    let auth = stack.auth_db().await;
    // Setting the next id is schema-level SQL (`ALTER TABLE` on MariaDB): the migrator's.
    let schema = stack.auth_db_as_migrator().await;
    let sqlite = stack.config().verifier.database_url.is_sqlite();
    let mut users = Vec::with_capacity(n);
    // Ids only grow: start past every id given so far.
    let max: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM users")
        .fetch_one(&auth)
        .await
        .unwrap_or_else(|e| panic!("the largest user id: {e}"));
    let thousands = max as u64 / u64::from(BUCKETS) + 1;
    for i in 0..n {
        let wanted_bucket = (i * usize::from(BUCKETS) / n.max(1)) as u64;
        let next = (thousands + i as u64) * u64::from(BUCKETS) + wanted_bucket;
        set_next_user_id(&schema, sqlite, next).await;
        let email = format!("load-{i}-{}@example.com", crate::rand_hex(4));
        let user = stack.register(&email).await;
        let id = user["id"].as_u64().unwrap_or_else(|| panic!("no id in {user}"));
        assert_eq!(id, next, "the auth database did not take the raised next id");
        let token = stack.login(&email).await;
        users.push(Shopper { id, email, token });
    }
    auth.close().await;
    schema.close().await;
    users
}

/// Makes `next` the id the auth database gives the next account.
async fn set_next_user_id(auth: &sqlx::AnyPool, sqlite: bool, next: u64) {
    let statements = if sqlite {
        // AUTOINCREMENT keeps the last id given in sqlite_sequence (one row per table, made on
        // the first insert).
        vec![
            "DELETE FROM sqlite_sequence WHERE name = 'users'".to_owned(),
            format!("INSERT INTO sqlite_sequence (name, seq) VALUES ('users', {})", next - 1),
        ]
    } else {
        vec![format!("ALTER TABLE users AUTO_INCREMENT = {next}")]
    };
    for sql in statements {
        sqlx::query(&sql).execute(auth).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// The load while it runs.
pub struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    handles: Vec<tokio::task::JoinHandle<()>>,
    users: Vec<u64>,
}

/// What every user task shares.
struct Client {
    http: reqwest::Client,
    url: String,
    started: Instant,
    /// In every `Idempotency-Key`, so that two loads never share one.
    run: String,
    options: LoadOptions,
    answers: Arc<Mutex<Vec<Answer>>>,
}

impl Load {
    /// Starts one task per user against the stack's nginx.
    pub fn start(stack: &impl Shop, users: &[Shopper], options: LoadOptions) -> Load {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let client = Arc::new(Client {
            http: stack.http().clone(),
            url: stack.url().to_owned(),
            started,
            run: crate::rand_hex(4),
            options,
            answers: answers.clone(),
        });
        let handles = users
            .iter()
            .cloned()
            .map(|user| {
                let (client, stop) = (client.clone(), stop.clone());
                tokio::spawn(async move { client.shop(user, &stop).await })
            })
            .collect();
        Load { started, stop, answers, handles, users: users.iter().map(|u| u.id).collect() }
    }

    /// When the load started: the clock every [`Answer`] is on.
    pub fn clock(&self) -> Instant {
        self.started
    }

    /// Stops every user after its current round, each write of it with a final answer (so no
    /// order, cancel or profile is left half-acknowledged), and returns every answer.
    pub async fn stop(self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            if let Err(e) = h.await {
                panic!("a load task failed: {e}");
            }
        }
        let mut answers = std::mem::take(&mut *self.answers.lock().unwrap_or_else(|e| e.into_inner()));
        answers.sort_by_key(|a| a.start);
        Record { answers, users: self.users, elapsed: self.started.elapsed() }
    }
}

/// A request's answer before it is recorded: status, `Retry-After`, body.
type Got = Result<(u16, bool, Value), reqwest::Error>;

impl Client {
    /// One user's loop until stopped: create; every third round cancel one of its acknowledged
    /// orders not yet tried (picked by the round, so that new and old ones are cancelled); every
    /// fourth round write its profile; read; think.
    async fn shop(&self, user: Shopper, stop: &AtomicBool) {
        let mut acknowledged: Vec<i64> = Vec::new();
        let mut tried: BTreeSet<i64> = BTreeSet::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let key = format!("load-{}-{}-{n}", self.run, user.id);
            let made = self.create(&user, &key, n).await;
            if let Some(id) = made {
                acknowledged.push(id);
            }
            if n.is_multiple_of(3) {
                let open: Vec<i64> = acknowledged.iter().copied().filter(|id| !tried.contains(id)).collect();
                if !open.is_empty() {
                    let id = open[(n as usize / 3) % open.len()];
                    tried.insert(id);
                    self.cancel(&user, id).await;
                }
            }
            if n % 4 == 2 {
                self.profile(&user).await;
            }
            if n.is_multiple_of(2) || acknowledged.is_empty() {
                self.list(&user, made).await;
            } else {
                // An earlier order, picked by n so that old and new ones are read.
                let id = acknowledged[(n as usize / 2) % acknowledged.len()];
                self.get(&user, id).await;
            }
            tokio::time::sleep(self.options.think).await;
        }
    }

    /// `POST /api/orders` under `key` until a final answer; the order id if acknowledged.
    async fn create(&self, user: &Shopper, key: &str, n: u64) -> Option<i64> {
        let body = json!({"items": [{"product_id": 1 + n % 12, "quantity": 1 + n % 3}]});
        let request = || {
            self.http
                .post(format!("{}/api/orders", self.url))
                .bearer_auth(&user.token)
                .header("Idempotency-Key", key)
                .json(&body)
        };
        let stamp = |a: &mut Answer| a.key = Some(key.to_owned());
        let judge = |a: &mut Answer, status: u16, body: &Value| {
            if matches!(status, 200 | 201) {
                a.order_id = body["id"].as_i64();
                if a.order_id.is_none() || body["user_id"].as_u64() != Some(user.id) {
                    a.problem = Some(format!("{status} with an unexpected body {body}"));
                }
            }
        };
        let last = self.write(user, Kind::Create, request, stamp, judge).await?;
        last.acknowledges().then_some(last.order_id).flatten()
    }

    /// `POST /api/orders/{id}/cancel` until a final answer: 200 with that order of the user's,
    /// cancelled, whether this request cancelled it or an earlier attempt did.
    async fn cancel(&self, user: &Shopper, id: i64) {
        let request =
            || self.http.post(format!("{}/api/orders/{id}/cancel", self.url)).bearer_auth(&user.token).json(&json!({}));
        let stamp = |a: &mut Answer| a.order_id = Some(id);
        let judge = |a: &mut Answer, status: u16, body: &Value| {
            let right = body["id"].as_i64() == Some(id)
                && body["user_id"].as_u64() == Some(user.id)
                && body["status"] == "cancelled";
            if status == 200 && !right {
                a.problem = Some(format!("cancelled order {id}, got {body}"));
            }
        };
        self.write(user, Kind::Cancel, request, stamp, judge).await;
    }

    /// `POST /api/users` until a final answer: 201 or 200 with the user's profile, its email the
    /// token's. The body is the original design's; the backend takes nothing from it.
    async fn profile(&self, user: &Shopper) {
        let body = json!({"email": user.email, "is_active": true});
        let request = || self.http.post(format!("{}/api/users", self.url)).bearer_auth(&user.token).json(&body);
        let judge = |a: &mut Answer, status: u16, body: &Value| {
            if !matches!(status, 200 | 201) {
                return;
            }
            let seen = match (body["email"].as_str(), body["is_active"].as_bool(), body["created_at"].as_str()) {
                (Some(email), Some(is_active), Some(created_at)) => {
                    Some(Profile { email: email.to_owned(), is_active, created_at: created_at.to_owned() })
                }
                _ => None,
            };
            match seen {
                Some(p) if body["id"].as_u64() == Some(user.id) && p.email == user.email => a.profile = Some(p),
                _ => a.problem = Some(format!("{status} with an unexpected profile {body}")),
            }
        };
        self.write(user, Kind::Profile, request, |_| {}, judge).await;
    }

    /// Sends the write `request` builds until it has a final answer: anything but a 503 or a
    /// failed connection, which are sent again after [`LoadOptions::retry_every`] (at once if
    /// the connection closed unanswered). Every answer is recorded as `kind`, `stamp`ed with what
    /// the write is about, and a final one is `judge`d by its status and body. Past
    /// [`LoadOptions::give_up_after`] a last answer records that it was given up, and there is
    /// no final answer (`None`).
    async fn write<R, S, J>(&self, user: &Shopper, kind: Kind, request: R, stamp: S, judge: J) -> Option<Answer>
    where
        R: Fn() -> reqwest::RequestBuilder,
        S: Fn(&mut Answer),
        J: Fn(&mut Answer, u16, &Value),
    {
        let first = Instant::now();
        loop {
            let (start, got) = self.send(request()).await;
            let mut answer = self.answer(user, kind, start, &got);
            stamp(&mut answer);
            let retry = match &got {
                Ok((503, _, _)) | Err(_) => true,
                Ok((status, _, body)) => {
                    judge(&mut answer, *status, body);
                    false
                }
            };
            let resent = answer.resent;
            if !retry {
                self.record(answer.clone());
                return Some(answer);
            }
            self.record(answer);
            if first.elapsed() > self.options.give_up_after {
                let mut gave_up = Answer::new(user.id, kind, self.started.elapsed(), Duration::ZERO);
                gave_up.problem = Some(format!("no final answer after {:?}; given up", self.options.give_up_after));
                stamp(&mut gave_up);
                self.record(gave_up);
                return None;
            }
            if !resent {
                tokio::time::sleep(self.options.retry_every).await;
            }
        }
    }

    /// `GET /api/orders`: the user's own orders, the one just `made` among them.
    async fn list(&self, user: &Shopper, made: Option<i64>) {
        let (start, got) = self.send_read(user, "/api/orders".into()).await;
        let mut answer = self.answer(user, Kind::List, start, &got);
        if let Ok((200, _, body)) = &got {
            answer.problem = check_list(body, user.id, made);
        }
        self.record(answer);
    }

    /// `GET /api/orders/{id}`: that very order, the user's.
    async fn get(&self, user: &Shopper, id: i64) {
        let (start, got) = self.send_read(user, format!("/api/orders/{id}")).await;
        let mut answer = self.answer(user, Kind::Get, start, &got);
        answer.order_id = Some(id);
        if let Ok((200, _, body)) = &got {
            if body["id"].as_i64() != Some(id) || body["user_id"].as_u64() != Some(user.id) {
                answer.problem = Some(format!("asked for order {id}, got {body}"));
            }
        }
        self.record(answer);
    }

    /// A read, sent once more only if its connection closed unanswered.
    async fn send_read(&self, user: &Shopper, path: String) -> (Duration, Got) {
        let request = || self.http.get(format!("{}{path}", self.url)).bearer_auth(&user.token);
        let (start, got) = self.send(request()).await;
        if got.as_ref().err().is_some_and(closed_unanswered) {
            let kind = if path == "/api/orders" { Kind::List } else { Kind::Get };
            self.record(self.answer(user, kind, start, &got));
            return self.send(request()).await;
        }
        (start, got)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (Duration, Got) {
        let start = self.started.elapsed();
        let got = match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = r.headers().contains_key(reqwest::header::RETRY_AFTER);
                let body = r.json::<Value>().await.unwrap_or(Value::Null);
                Ok((status, retry_after, body))
            }
            Err(e) => Err(e),
        };
        (start, got)
    }

    /// The record of `got`, before the kind's own checks of the body.
    fn answer(&self, user: &Shopper, kind: Kind, start: Duration, got: &Got) -> Answer {
        let base = Answer::new(user.id, kind, start, self.started.elapsed().saturating_sub(start));
        match got {
            Ok((status, retry_after, body)) => {
                let problem = (!(200..300).contains(status)).then(|| body["error"].as_str().unwrap_or("").to_owned());
                Answer {
                    status: Some(*status),
                    retry_after: *retry_after,
                    problem: problem.filter(|p| !p.is_empty()),
                    ..base
                }
            }
            Err(e) => Answer { resent: closed_unanswered(e), problem: Some(format!("{e:?}")), ..base },
        }
    }

    fn record(&self, answer: Answer) {
        self.answers.lock().unwrap_or_else(|e| e.into_inner()).push(answer);
    }
}

/// Why a 200 list is wrong, if it is: another user's order in it, or not the order just made
/// (it is the user's newest, so it is on the first page).
fn check_list(body: &Value, user: u64, made: Option<i64>) -> Option<String> {
    let Some(orders) = body["orders"].as_array() else { return Some(format!("no orders array in {body}")) };
    if let Some(other) = orders.iter().find(|o| o["user_id"].as_u64() != Some(user)) {
        return Some(format!("another user's order in the list: {other}"));
    }
    match made {
        Some(id) if !orders.iter().any(|o| o["id"].as_i64() == Some(id)) => {
            Some(format!("order {id}, acknowledged just before, is not in the list"))
        }
        _ => None,
    }
}

/// The connection closed before any answer, so the server never read the request: what an idle
/// keep-alive connection meets when nginx's old workers close it at a reload (the README's
/// "nginx reload"). Clients send such a request again (RFC 9112, section 9.3.1); so does this one.
pub fn closed_unanswered(e: &reqwest::Error) -> bool {
    let text = format!("{e:?}");
    !e.is_connect() && (text.contains("IncompleteMessage") || text.contains("ConnectionReset"))
}

/// Every answer of a finished load.
#[derive(Debug)]
pub struct Record {
    /// In the order they were sent.
    pub answers: Vec<Answer>,
    pub users: Vec<u64>,
    /// How long the load ran.
    pub elapsed: Duration,
}

/// An order the load was told exists (201, or 200 to a retry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub user: u64,
    pub key: String,
    pub order_id: i64,
}

/// What [`Record::check_orders`] looked at.
#[derive(Debug, Clone, Default)]
pub struct OrdersChecked {
    pub acknowledged: usize,
    /// Acknowledged orders per shard they were found on.
    pub per_shard: BTreeMap<String, usize>,
}

/// A bucket's write pause during a move, on the load's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// From the event that the bucket's batch was copied (the pause begins right after) to the
    /// event that nginx routes with the new map (the pause is over).
    pub during: std::ops::Range<Duration>,
    /// The pause the move measured for the batch (`pause_ms`).
    pub length: Duration,
}

/// What [`Record::check_writes`] looked at.
#[derive(Debug, Clone, Default)]
pub struct WritesChecked {
    /// Orders whose cancel was acknowledged, and those whose cancels all went unacknowledged.
    pub cancels_acknowledged: usize,
    pub cancels_unsure: usize,
    /// Acknowledged cancels that met a 503 first (sent during their bucket's pause).
    pub cancels_after_503: usize,
    /// Acknowledged cancels per shard their order is found cancelled on.
    pub cancelled_per_shard: BTreeMap<String, usize>,
    /// Acknowledged profile writes, and the users they were for.
    pub profiles_acknowledged: usize,
    pub profile_users: usize,
    /// Acknowledged profile writes that met a 503 first.
    pub profiles_after_503: usize,
}

/// What [`Record::check_errors`] found, when it passes.
#[derive(Debug, Clone, Default)]
pub struct ErrorsChecked {
    /// Users whose bucket moved / did not.
    pub moved_users: usize,
    pub unmoved_users: usize,
    /// Errors the moved users saw (503 + `Retry-After`, all of them).
    pub errors: usize,
    /// Of the moved users, how many saw at least one.
    pub users_with_errors: usize,
    /// The longest window of errors in one bucket (see [`Record::check_errors`]).
    pub longest_window: Duration,
    /// Requests resent after their connection closed unanswered (nginx reloads).
    pub resent: usize,
}

impl Record {
    /// Every acknowledged order, in the order the acknowledgements came.
    pub fn acknowledged(&self) -> Vec<Ack> {
        self.answers
            .iter()
            .filter(|a| a.acknowledges())
            .filter_map(|a| Some(Ack { user: a.user, key: a.key.clone()?, order_id: a.order_id? }))
            .collect()
    }

    /// The orders the load sent cancels of, and whether one was acknowledged. Every other order
    /// of the load's users must still be placed.
    pub fn cancels(&self) -> BTreeMap<i64, Cancel> {
        let mut out = BTreeMap::new();
        for a in self.answers.iter().filter(|a| a.kind == Kind::Cancel) {
            let Some(id) = a.order_id else { continue };
            let state = out.entry(id).or_insert(Cancel::Unsure);
            if a.acknowledges() {
                *state = Cancel::Acknowledged;
            }
        }
        out
    }

    /// Each user's last acknowledged profile: what the user's row must hold. A user's writes run
    /// one after another, so the last sent is the last acknowledged.
    pub fn profiles(&self) -> BTreeMap<u64, Profile> {
        self.answers
            .iter()
            .filter(|a| a.kind == Kind::Profile && a.acknowledges())
            .filter_map(|a| Some((a.user, a.profile.clone()?)))
            .collect()
    }

    /// The errors each user saw ([`Answer::is_error`]), users without any left out.
    pub fn errors_by_user(&self) -> BTreeMap<u64, Vec<&Answer>> {
        let mut out: BTreeMap<u64, Vec<&Answer>> = BTreeMap::new();
        for a in self.answers.iter().filter(|a| a.is_error()) {
            out.entry(a.user).or_default().push(a);
        }
        out
    }

    /// How many answers of each kind and status, for a test's log: `Create 201: 812, ...`.
    pub fn tally(&self) -> String {
        let mut counts: BTreeMap<(Kind, String), usize> = BTreeMap::new();
        for a in &self.answers {
            let what = match (a.status, a.resent) {
                (_, true) => "resent".to_owned(),
                (Some(s), _) => s.to_string(),
                (None, _) => "no answer".to_owned(),
            };
            *counts.entry((a.kind, what)).or_default() += 1;
        }
        counts.iter().map(|((k, s), n)| format!("{k:?} {s}: {n}")).collect::<Vec<_>>().join(", ")
    }

    /// Point (a): every acknowledged order exists exactly once across all shards' primaries, on
    /// the shard that owns its user by `map`, for that user, with its items, and its
    /// `Idempotency-Key` there naming it (so a retry after the move finds it); acknowledged ids
    /// are distinct; and the load's users have no order they were not acknowledged (a retry that
    /// made a second order). Every problem found, one line each.
    pub async fn check_orders(&self, stack: &impl Shop, map: &ShardMap) -> Result<OrdersChecked, Vec<String>> {
        let acks = self.acknowledged();
        let mut problems = Vec::new();
        let mut found: BTreeMap<i64, Vec<(String, u64)>> = BTreeMap::new();
        let mut items: BTreeMap<(String, i64), i64> = BTreeMap::new();
        let mut keys: BTreeMap<(String, u64, String), i64> = BTreeMap::new();
        for shard in &stack.config().shards {
            let name = shard.name.to_string();
            let db = stack.shard_db(&name).await;
            for row in fetch(&db, "SELECT id, user_id FROM orders").await {
                found.entry(row.0).or_default().push((name.clone(), row.1 as u64));
            }
            for row in fetch(&db, "SELECT order_id, COUNT(*) FROM order_items GROUP BY order_id").await {
                items.insert((name.clone(), row.0), row.1);
            }
            let rows = sqlx::query("SELECT user_id, idem_key, order_id FROM idempotency_keys")
                .fetch_all(&db)
                .await
                .unwrap_or_else(|e| panic!("idempotency keys on shard {name}: {e}"));
            for row in rows {
                let (user, key, order): (i64, String, i64) = (row.get(0), row.get(1), row.get(2));
                keys.insert((name.clone(), user as u64, key), order);
            }
            db.close().await;
        }
        let mut checked = OrdersChecked { acknowledged: acks.len(), ..Default::default() };
        let mut seen_ids = BTreeSet::new();
        for ack in &acks {
            let owner = map.shard_for(user_id(ack.user)).to_string();
            if !seen_ids.insert(ack.order_id) {
                problems.push(format!(
                    "order {} was acknowledged twice (user {}, key {})",
                    ack.order_id, ack.user, ack.key
                ));
            }
            let places = found.get(&ack.order_id).cloned().unwrap_or_default();
            match places.as_slice() {
                [] => problems.push(format!(
                    "acknowledged order {} of user {} is on no shard (owner {owner})",
                    ack.order_id, ack.user
                )),
                [(shard, user)] => {
                    *checked.per_shard.entry(shard.clone()).or_default() += 1;
                    if *shard != owner {
                        problems.push(format!(
                            "order {} of user {} is on shard {shard}, but {owner} owns the user",
                            ack.order_id, ack.user
                        ));
                    }
                    if *user != ack.user {
                        problems.push(format!(
                            "order {} belongs to user {user} in the database, was acknowledged to {}",
                            ack.order_id, ack.user
                        ));
                    }
                    if items.get(&(shard.clone(), ack.order_id)).copied().unwrap_or(0) == 0 {
                        problems.push(format!("order {} on shard {shard} has no items", ack.order_id));
                    }
                    match keys.get(&(shard.clone(), ack.user, ack.key.clone())) {
                        Some(id) if *id == ack.order_id => {}
                        other => problems.push(format!(
                            "idempotency key {} of user {} on shard {shard} names {other:?}, not order {}",
                            ack.key, ack.user, ack.order_id
                        )),
                    }
                }
                many => problems.push(format!("acknowledged order {} is on several shards: {many:?}", ack.order_id)),
            }
        }
        let users: BTreeSet<u64> = self.users.iter().copied().collect();
        for (id, places) in &found {
            for (shard, user) in places {
                if users.contains(user) && !seen_ids.contains(id) {
                    problems.push(format!("order {id} of user {user} on shard {shard} was never acknowledged"));
                }
            }
        }
        if problems.is_empty() {
            Ok(checked)
        } else {
            Err(problems)
        }
    }

    /// The writes besides creates, on every shard's primary: each order whose cancel was
    /// acknowledged is cancelled on the shard that owns its user by `map`; no copy of an order
    /// of the load's users that the load never tried to cancel is cancelled (one whose cancels
    /// all went unacknowledged may be either); each user with an acknowledged profile write has
    /// exactly one profile row, on the owning shard, holding what the last such write showed
    /// (email, `is_active`, `created_at`); and no user of the load has a profile row on a shard
    /// that does not own it. Every problem found, one line each.
    pub async fn check_writes(&self, stack: &impl Shop, map: &ShardMap) -> Result<WritesChecked, Vec<String>> {
        let mut orders: BTreeMap<i64, Vec<OrderCopy>> = BTreeMap::new();
        let mut profiles: BTreeMap<u64, Vec<(String, Profile)>> = BTreeMap::new();
        for shard in &stack.config().shards {
            let name = shard.name.to_string();
            let db = stack.shard_db(&name).await;
            let rows = sqlx::query_as::<_, (i64, i64, String)>("SELECT id, user_id, status FROM orders")
                .fetch_all(&db)
                .await
                .unwrap_or_else(|e| panic!("orders on shard {name}: {e}"));
            for (id, user, status) in rows {
                orders.entry(id).or_default().push(OrderCopy { shard: name.clone(), user: user as u64, status });
            }
            let rows =
                sqlx::query_as::<_, (i64, String, i64, i64)>("SELECT id, email, is_active, created_at FROM users")
                    .fetch_all(&db)
                    .await
                    .unwrap_or_else(|e| panic!("profiles on shard {name}: {e}"));
            for (id, email, is_active, created_at) in rows {
                let profile = Profile { email, is_active: is_active != 0, created_at: rfc3339(created_at) };
                profiles.entry(id as u64).or_default().push((name.clone(), profile));
            }
            db.close().await;
        }
        let owner = |user: u64| map.shard_for(user_id(user)).to_string();
        let users: BTreeSet<u64> = self.users.iter().copied().collect();
        let cancels = self.cancels();
        let last = self.profiles();
        let mut problems = cancel_problems(&cancels, &orders, &users, owner);
        problems.extend(profile_problems(&last, &profiles, &users, owner));
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut checked = WritesChecked {
            profiles_acknowledged: self.answers.iter().filter(|a| a.kind == Kind::Profile && a.acknowledges()).count(),
            profile_users: last.len(),
            profiles_after_503: after_503(&self.answers, Kind::Profile),
            cancels_after_503: after_503(&self.answers, Kind::Cancel),
            ..Default::default()
        };
        for (id, state) in &cancels {
            match state {
                Cancel::Acknowledged => {
                    checked.cancels_acknowledged += 1;
                    for copy in orders.get(id).into_iter().flatten() {
                        *checked.cancelled_per_shard.entry(copy.shard.clone()).or_default() += 1;
                    }
                }
                Cancel::Unsure => checked.cancels_unsure += 1,
            }
        }
        Ok(checked)
    }

    /// Point (b): users in buckets that did not move saw no error at all; users in the `moved`
    /// buckets saw only 503 with `Retry-After`, during their bucket's pause (up to `margin`
    /// after it), and for no longer than that pause's length plus `margin`.
    ///
    /// How long a bucket's errors lasted is measured from below, so a slow answer never widens
    /// it: each error was produced somewhere between its request's start and its answer, so the
    /// server answered errors for at least `latest start - earliest answer`.
    pub fn check_errors(&self, moved: &BTreeMap<u16, Pause>, margin: Duration) -> Result<ErrorsChecked, Vec<String>> {
        let mut problems = Vec::new();
        let mut checked =
            ErrorsChecked { resent: self.answers.iter().filter(|a| a.resent).count(), ..Default::default() };
        let bucket_of = |user: u64| bucket(user_id(user));
        for user in &self.users {
            if moved.contains_key(&bucket_of(*user)) {
                checked.moved_users += 1;
            } else {
                checked.unmoved_users += 1;
            }
        }
        let mut per_bucket: BTreeMap<u16, Vec<&Answer>> = BTreeMap::new();
        for (user, errors) in self.errors_by_user() {
            let b = bucket_of(user);
            let Some(pause) = moved.get(&b) else {
                problems.push(format!(
                    "user {user} (bucket {b}, not moved) saw {} error(s): {}",
                    errors.len(),
                    list(&errors)
                ));
                continue;
            };
            checked.users_with_errors += 1;
            checked.errors += errors.len();
            let wrong: Vec<&Answer> =
                errors.iter().copied().filter(|a| a.status != Some(503) || !a.retry_after).collect();
            if !wrong.is_empty() {
                problems.push(format!(
                    "user {user} (bucket {b}, moved) saw errors other than 503 + Retry-After: {}",
                    list(&wrong)
                ));
            }
            let (from, to) = (pause.during.start, pause.during.end + margin);
            let outside: Vec<&Answer> = errors.iter().copied().filter(|a| a.end() < from || a.start > to).collect();
            if !outside.is_empty() {
                problems.push(format!(
                    "user {user} (bucket {b}, moved) saw errors outside its pause ({:.3}s to {:.3}s with the margin): {}",
                    from.as_secs_f64(),
                    to.as_secs_f64(),
                    list(&outside)
                ));
            }
            per_bucket.entry(b).or_default().extend(errors);
        }
        for (b, errors) in per_bucket {
            let latest_start = errors.iter().map(|a| a.start).max().unwrap_or_default();
            let earliest_end = errors.iter().map(|a| a.end()).min().unwrap_or_default();
            let span = latest_start.saturating_sub(earliest_end);
            checked.longest_window = checked.longest_window.max(span);
            let allowed = moved.get(&b).map(|p| p.length).unwrap_or_default() + margin;
            if span > allowed {
                problems.push(format!(
                    "bucket {b}: errors for at least {} ms, more than its pause and margin, {} ms: {}",
                    span.as_millis(),
                    allowed.as_millis(),
                    list(&errors)
                ));
            }
        }
        if problems.is_empty() {
            Ok(checked)
        } else {
            Err(problems)
        }
    }
}

/// One copy of an order on a shard, as [`Record::check_writes`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCopy {
    pub shard: String,
    pub user: u64,
    /// `placed` or `cancelled`.
    pub status: String,
}

/// What is wrong with the orders' statuses (`orders`: every copy of every order, by id) against
/// the load's `cancels`: an acknowledged cancel's order not cancelled on the shard that `owner`
/// says owns its user; a copy of an order of the load's `users` cancelled though the load never
/// sent a cancel of it.
fn cancel_problems(
    cancels: &BTreeMap<i64, Cancel>,
    orders: &BTreeMap<i64, Vec<OrderCopy>>,
    users: &BTreeSet<u64>,
    owner: impl Fn(u64) -> String,
) -> Vec<String> {
    let mut problems = Vec::new();
    let none = Vec::new();
    for (id, state) in cancels {
        let copies = orders.get(id).unwrap_or(&none);
        if *state == Cancel::Acknowledged {
            let owned = copies.iter().find(|c| c.shard == owner(c.user));
            match owned {
                Some(c) if c.status == "cancelled" => {}
                Some(c) => problems.push(format!(
                    "order {id} of user {} is {} on shard {}, but its cancel was acknowledged",
                    c.user, c.status, c.shard
                )),
                None => problems.push(format!("order {id}, cancel acknowledged, is on no owning shard: {copies:?}")),
            }
        }
    }
    for (id, copies) in orders {
        if cancels.contains_key(id) {
            continue;
        }
        for c in copies.iter().filter(|c| users.contains(&c.user) && c.status != "placed") {
            problems.push(format!(
                "order {id} of user {} is {} on shard {}, but no cancel of it was sent",
                c.user, c.status, c.shard
            ));
        }
    }
    problems
}

/// What is wrong with the profiles (`rows`: every shard's `users` rows, by user) against each
/// user's `last` acknowledged profile: a user of `users` on several shards or on one that `owner`
/// says does not own it; a user with an acknowledged profile without its row, or whose row holds
/// something else.
fn profile_problems(
    last: &BTreeMap<u64, Profile>,
    rows: &BTreeMap<u64, Vec<(String, Profile)>>,
    users: &BTreeSet<u64>,
    owner: impl Fn(u64) -> String,
) -> Vec<String> {
    let mut problems = Vec::new();
    let none = Vec::new();
    for user in users {
        let owned = owner(*user);
        let copies = rows.get(user).unwrap_or(&none);
        match copies.as_slice() {
            [] | [_] => {}
            many => problems.push(format!("user {user} has a profile on several shards: {many:?}")),
        }
        for (shard, _) in copies.iter().filter(|(shard, _)| *shard != owned) {
            problems.push(format!("user {user} has a profile on shard {shard}, but {owned} owns the user"));
        }
        let Some(want) = last.get(user) else { continue };
        match copies.iter().find(|(shard, _)| *shard == owned) {
            Some((_, have)) if have == want => {}
            Some((_, have)) => problems.push(format!(
                "user {user}'s profile on shard {owned} is {have:?}, the last acknowledged was {want:?}"
            )),
            None => problems.push(format!("user {user}'s acknowledged profile is not on its shard {owned}")),
        }
    }
    problems
}

/// How many writes of `kind` met a 503 and then were acknowledged: writes are told apart by user
/// and, for a cancel, by order; a user's writes of one kind run one after another, so a 503
/// belongs to the next final answer of its user (and order).
fn after_503(answers: &[Answer], kind: Kind) -> usize {
    let mut waiting: BTreeSet<(u64, Option<i64>)> = BTreeSet::new();
    let mut n = 0;
    for a in answers.iter().filter(|a| a.kind == kind) {
        let write = (a.user, a.order_id.filter(|_| kind == Kind::Cancel));
        if a.status == Some(503) {
            waiting.insert(write);
        } else if a.status.is_some() && waiting.remove(&write) && a.acknowledges() {
            n += 1;
        }
    }
    n
}

/// The buckets whose owner differs between two maps.
pub fn moved_buckets(before: &ShardMap, after: &ShardMap) -> BTreeSet<u16> {
    (0..BUCKETS).filter(|b| before.owner_of_bucket(*b) != after.owner_of_bucket(*b)).collect()
}

fn user_id(id: u64) -> UserId {
    UserId::new(id).unwrap_or_else(|e| panic!("user id {id}: {e}"))
}

/// Pairs of integers from a query.
async fn fetch(db: &sqlx::AnyPool, sql: &str) -> Vec<(i64, i64)> {
    sqlx::query_as::<_, (i64, i64)>(sql).fetch_all(db).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// At most five answers on one line, and how many more.
fn list(answers: &[&Answer]) -> String {
    let mut s = answers.iter().take(5).map(|a| a.to_string()).collect::<Vec<_>>().join("; ");
    if answers.len() > 5 {
        let _ = write!(s, "; and {} more", answers.len() - 5);
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer(user: u64, status: u16, retry_after: bool, start_ms: u64, took_ms: u64) -> Answer {
        let mut a = Answer::new(user, Kind::Create, Duration::from_millis(start_ms), Duration::from_millis(took_ms));
        (a.status, a.retry_after) = (Some(status), retry_after);
        a
    }

    fn record(answers: Vec<Answer>) -> Record {
        let users = answers.iter().map(|a| a.user).collect::<BTreeSet<_>>().into_iter().collect();
        Record { answers, users, elapsed: Duration::from_secs(10) }
    }

    /// Bucket 1 paused from 100 ms to 700 ms (the move measured 500 ms of it).
    fn bucket_1_moved() -> BTreeMap<u16, Pause> {
        let during = Duration::from_millis(100)..Duration::from_millis(700);
        BTreeMap::from([(1, Pause { during, length: Duration::from_millis(500) })])
    }

    #[test]
    fn an_unmoved_user_may_see_no_error() {
        let r = record(vec![answer(1001, 201, false, 0, 5), answer(1002, 503, true, 110, 5)]);
        let problems = r.check_errors(&bucket_1_moved(), Duration::from_secs(1)).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("user 1002 (bucket 2, not moved)"), "{problems:?}");
    }

    #[test]
    fn a_moved_user_may_see_only_503_with_retry_after_within_its_pause() {
        let moved = bucket_1_moved();
        let ok = record(vec![
            answer(1001, 503, true, 100, 50),
            answer(1001, 503, true, 600, 50),
            answer(1001, 201, false, 700, 5),
        ]);
        let checked = ok.check_errors(&moved, Duration::ZERO).unwrap();
        // Produced between 150 ms (the first answer) and 600 ms (the last start) at least.
        assert_eq!(checked.longest_window, Duration::from_millis(450));
        assert_eq!((checked.errors, checked.users_with_errors, checked.moved_users), (2, 1, 1));
        let longer = record(vec![answer(1001, 503, true, 100, 20), answer(1001, 503, true, 690, 5)]);
        let problems = longer.check_errors(&moved, Duration::from_millis(50)).unwrap_err();
        assert!(
            problems[0].starts_with("bucket 1: errors for at least 570 ms, more than its pause and margin, 550 ms"),
            "{problems:?}"
        );
        let no_header = record(vec![answer(1001, 503, false, 100, 5)]);
        assert!(no_header.check_errors(&moved, Duration::ZERO).is_err());
        let not_503 = record(vec![answer(1001, 421, false, 100, 5)]);
        assert!(not_503.check_errors(&moved, Duration::ZERO).is_err());
        let late = record(vec![answer(1001, 503, true, 760, 5)]);
        assert!(late.check_errors(&moved, Duration::from_millis(50)).unwrap_err()[0].contains("outside its pause"));
        assert!(late.check_errors(&moved, Duration::from_millis(60)).is_ok(), "within the margin after the pause");
    }

    #[test]
    fn a_resent_request_is_not_an_error_but_a_wrong_body_is() {
        let mut resent = answer(1002, 0, false, 0, 1);
        (resent.status, resent.resent) = (None, true);
        let mut wrong = answer(1002, 200, false, 5, 1);
        wrong.problem = Some("another user's order".into());
        assert!(!resent.is_error());
        assert!(wrong.is_error());
    }

    /// A cancel of `order` (or a profile write) answered `status`, sent at `start_ms`.
    fn write(user: u64, kind: Kind, status: Option<u16>, order: Option<i64>, start_ms: u64) -> Answer {
        let mut a = Answer::new(user, kind, Duration::from_millis(start_ms), Duration::from_millis(1));
        (a.status, a.order_id, a.retry_after) = (status, order, status == Some(503));
        if kind == Kind::Profile && matches!(status, Some(200 | 201)) {
            a.profile = Some(profile(&format!("u{user}@example.com"), start_ms as i64));
        }
        a
    }

    fn profile(email: &str, created_at: i64) -> Profile {
        Profile { email: email.into(), is_active: true, created_at: rfc3339(created_at) }
    }

    /// Even users on shard a, odd ones on b.
    fn owner(user: u64) -> String {
        if user.is_multiple_of(2) { "a" } else { "b" }.to_owned()
    }

    fn copy(shard: &str, user: u64, status: &str) -> OrderCopy {
        OrderCopy { shard: shard.into(), user, status: status.into() }
    }

    #[test]
    fn a_cancel_is_acknowledged_by_a_200_after_any_number_of_retries_else_unsure() {
        let mut wrong_body = write(1, Kind::Cancel, Some(200), Some(9), 40);
        wrong_body.problem = Some("cancelled order 9, got {}".into());
        let mut gave_up = write(1, Kind::Cancel, None, Some(8), 30);
        gave_up.problem = Some("no final answer after 60s; given up".into());
        let r = record(vec![
            write(1, Kind::Cancel, Some(503), Some(7), 0),
            write(1, Kind::Cancel, None, Some(7), 10),
            write(1, Kind::Cancel, Some(200), Some(7), 20),
            write(1, Kind::Cancel, Some(503), Some(8), 25),
            gave_up,
            wrong_body,
            write(1, Kind::Cancel, Some(404), Some(10), 50),
            write(1, Kind::Get, Some(200), Some(11), 60),
        ]);
        let want =
            BTreeMap::from([(7, Cancel::Acknowledged), (8, Cancel::Unsure), (9, Cancel::Unsure), (10, Cancel::Unsure)]);
        assert_eq!(r.cancels(), want);
        assert_eq!(after_503(&r.answers, Kind::Cancel), 1, "order 7 only: 8 was given up");
        assert!(r.acknowledged().is_empty(), "a cancel acknowledges no order");
    }

    #[test]
    fn only_an_acknowledged_cancel_must_show_and_only_a_sent_one_may() {
        let users = BTreeSet::from([2, 3]);
        let cancels = BTreeMap::from([(10, Cancel::Acknowledged), (11, Cancel::Unsure), (12, Cancel::Unsure)]);
        let orders = BTreeMap::from([
            (10, vec![copy("a", 2, "cancelled")]),
            (11, vec![copy("b", 3, "cancelled")]),
            (12, vec![copy("b", 3, "placed")]),
            (13, vec![copy("a", 2, "placed")]),
            // Not a user of the load: its orders are someone else's business.
            (14, vec![copy("a", 4, "cancelled")]),
        ]);
        assert_eq!(cancel_problems(&cancels, &orders, &users, owner), Vec::<String>::new());

        let mut wrong = orders.clone();
        wrong.insert(10, vec![copy("a", 2, "placed")]);
        wrong.insert(13, vec![copy("a", 2, "cancelled")]);
        let problems = cancel_problems(&cancels, &wrong, &users, owner);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("order 10 of user 2 is placed on shard a, but its cancel was"), "{problems:?}");
        assert!(problems[1].starts_with("order 13 of user 2 is cancelled on shard a, but no cancel"), "{problems:?}");

        // Cancelled only on a shard that does not own the user (a move that lost the update).
        wrong = orders.clone();
        wrong.insert(10, vec![copy("b", 2, "cancelled")]);
        let problems = cancel_problems(&cancels, &wrong, &users, owner);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("is on no owning shard"), "{problems:?}");
    }

    #[test]
    fn a_profile_must_be_once_on_its_shard_as_last_acknowledged() {
        let r = record(vec![
            write(2, Kind::Profile, Some(201), None, 5),
            write(2, Kind::Profile, Some(503), None, 6),
            write(2, Kind::Profile, Some(200), None, 7),
            write(3, Kind::Profile, Some(503), None, 8),
            write(3, Kind::Create, Some(201), Some(1), 9),
        ]);
        let last = r.profiles();
        assert_eq!(last, BTreeMap::from([(2, profile("u2@example.com", 7))]));
        assert_eq!(after_503(&r.answers, Kind::Profile), 1);
        let users = BTreeSet::from([2, 3]);
        let good = BTreeMap::from([
            (2, vec![("a".to_owned(), profile("u2@example.com", 7))]),
            (3, vec![("b".to_owned(), profile("u3@example.com", 1))]),
        ]);
        assert_eq!(profile_problems(&last, &good, &users, owner), Vec::<String>::new());

        let mut changed = good.clone();
        changed.insert(2, vec![("a".to_owned(), profile("u2@example.com", 5))]);
        let problems = profile_problems(&last, &changed, &users, owner);
        assert!(problems[0].starts_with("user 2's profile on shard a is"), "{problems:?}");

        let mut gone = good.clone();
        gone.remove(&2);
        let problems = profile_problems(&last, &gone, &users, owner);
        assert_eq!(problems, vec!["user 2's acknowledged profile is not on its shard a".to_owned()]);

        let mut twice = good.clone();
        twice.insert(
            3,
            vec![("b".to_owned(), profile("u3@example.com", 1)), ("c".to_owned(), profile("u3@example.com", 1))],
        );
        let problems = profile_problems(&last, &twice, &users, owner);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("user 3 has a profile on several shards"), "{problems:?}");
        assert_eq!(problems[1], "user 3 has a profile on shard c, but b owns the user");
    }

    #[test]
    fn a_list_must_hold_the_order_just_made_and_only_the_users_orders() {
        let body = json!({"orders": [{"id": 7, "user_id": 5}], "next_before": null});
        assert_eq!(check_list(&body, 5, Some(7)), None);
        assert!(check_list(&body, 5, Some(8)).unwrap().contains("not in the list"));
        assert!(check_list(&body, 6, None).unwrap().contains("another user's"));
    }
}
