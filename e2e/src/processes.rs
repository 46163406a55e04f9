//! Several backend processes per shard (issue 11, point 3): concurrent order creates with retried
//! `Idempotency-Key`s, each key sent at once through nginx and straight to every process of its
//! user's shard. Shared by the SQLite stack (`tests/e2e`) and the MariaDB one (`tests/mariadb`).
//!
//! What must hold: every process is ready once it answers (they set up the database together);
//! every answer is the order or a 503 (retried, as a client told `Retry-After`
//! would); every answer for one key names the same order, and at most one of them is a 201; no
//! order id serves two keys; each shard's database holds exactly one order per key of its users,
//! and no id is on two shards; and each process of each shard minted some of them (else the race
//! was not run across processes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{json, Value};
use shopgate_core::UserId;

use crate::cli::scalar;
use crate::{Shop as _, Stack};

/// How a run is shaped.
#[derive(Debug, Clone, Copy)]
pub struct Race {
    /// Users per shard, each with their own token.
    pub users_per_shard: usize,
    /// Keys (orders) per user.
    pub keys_per_user: usize,
    /// Copies of each key sent straight to each process of the shard (one more goes through nginx).
    pub copies_per_process: usize,
    /// Keys in flight at once (each with all its copies).
    pub keys_at_once: usize,
}

impl Default for Race {
    fn default() -> Self {
        Self { users_per_shard: 3, keys_per_user: 20, copies_per_process: 2, keys_at_once: 12 }
    }
}

/// One key's job: its user, the shard's processes and the items.
struct Job {
    user: u64,
    token: String,
    key: String,
    items: Value,
    /// Where its copies go: nginx's `/api/orders`, then each process's.
    targets: Vec<(String, bool)>,
}

/// One answer: where it went, its status and body.
#[derive(Debug)]
struct Answer {
    target: String,
    status: u16,
    body: Value,
}

/// What a run saw, for the caller's log line.
#[derive(Debug)]
pub struct Outcome {
    pub keys: usize,
    pub requests: usize,
    pub retried_503: usize,
    /// Orders per (shard, instance that minted them, by the id's bits).
    pub minted_by: BTreeMap<(String, u64), usize>,
    pub took: Duration,
}

impl Race {
    /// Runs the race on `stack` (every shard with at least two processes) and checks it all;
    /// panics on the first thing that does not hold.
    pub async fn run(self, stack: Arc<Stack>) -> Outcome {
        all_ready(&stack).await;
        let started = Instant::now();
        let jobs = self.jobs(&stack);
        let answers: Vec<Vec<Answer>> = futures::stream::iter(jobs.iter().cloned())
            .map(|job| {
                let stack = stack.clone();
                async move { send_all_copies(&stack, &job).await }
            })
            .buffered(self.keys_at_once)
            .collect()
            .await;
        let requests = answers.iter().map(Vec::len).sum();
        let retried_503 = answers.iter().flatten().filter(|a| a.status == 503).count();
        let failed: Vec<String> = answers
            .iter()
            .flatten()
            .filter(|a| !(200..300).contains(&a.status) && a.status != 503)
            .map(|a| format!("{} from {}: {}", a.status, a.target, a.body))
            .collect();
        assert!(failed.is_empty(), "{} answers were neither the order nor a 503:\n{}", failed.len(), failed.join("\n"));

        let acknowledged = one_order_per_key(&jobs, &answers);
        let minted_by = check_databases(&stack, &jobs, &acknowledged).await;
        for shard in &stack.config.shards {
            for instance in 0..shard.listen.len() as u64 {
                let n = minted_by.get(&(shard.name.to_string(), instance)).copied().unwrap_or(0);
                assert!(
                    n > 0,
                    "process {instance} of shard {} minted no order: the race did not span processes ({minted_by:?})",
                    shard.name
                );
            }
        }
        Outcome { keys: jobs.len(), requests, retried_503, minted_by, took: started.elapsed() }
    }

    /// The keys, users taking turns, so that several users' creates race at once too.
    fn jobs(&self, stack: &Stack) -> Vec<Arc<Job>> {
        let run = crate::rand_hex(4);
        let mut users = Vec::new();
        let mut next_user = 70_000;
        for shard in &stack.config.shards {
            assert!(
                shard.listen.len() >= 2,
                "shard {} has one process: start the stack with backends_per_shard >= 2",
                shard.name
            );
            let mut targets = vec![(stack.api("/api/orders"), false)];
            for addr in &shard.listen {
                for _ in 0..self.copies_per_process {
                    targets.push((format!("http://{addr}/api/orders"), true));
                }
            }
            for _ in 0..self.users_per_shard {
                loop {
                    next_user += 1;
                    if shard_of(stack, next_user) == &shard.name {
                        break;
                    }
                }
                users.push((next_user, stack.mint(next_user), targets.clone()));
            }
        }
        let mut jobs = Vec::new();
        for k in 0..self.keys_per_user {
            for (user, token, targets) in &users {
                let items = json!([{"product_id": 1 + k % 3, "quantity": 1 + k % 5}]);
                let key = format!("race-{run}-{user}-{k}");
                jobs.push(Arc::new(Job { user: *user, token: token.clone(), key, items, targets: targets.clone() }));
            }
        }
        jobs
    }
}

fn shard_of(stack: &Stack, user: u64) -> &shopgate_core::ShardName {
    stack.config.shard_map.shard_for(UserId::new(user).unwrap_or_else(|e| panic!("{e}")))
}

/// Every process of every shard is ready as soon as it answers at all: processes of one shard
/// that started together (and migrated their database together) all set it up.
async fn all_ready(stack: &Stack) {
    for shard in &stack.config.shards {
        for (instance, addr) in shard.listen.iter().enumerate() {
            let r = stack.http.get(format!("http://{addr}/readyz")).send().await.unwrap_or_else(|e| panic!("{e}"));
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            assert_eq!(
                status,
                200,
                "process {instance} of shard {} is not ready: {body}\n{}",
                shard.name,
                stack.logs()
            );
        }
    }
}

/// Sends every copy of `job` at once, each retried on 503 until it gets the order (at most 90 s).
async fn send_all_copies(stack: &Stack, job: &Job) -> Vec<Answer> {
    let copies = job.targets.iter().map(|(url, direct)| async move {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut answers = Vec::new();
        loop {
            let mut req = stack
                .http
                .post(url)
                .bearer_auth(&job.token)
                .header("Idempotency-Key", &job.key)
                .json(&json!({ "items": job.items }));
            if *direct {
                // What nginx would add: the backend checks it against the token.
                req = req.header("X-User-Id", job.user.to_string());
            }
            let (status, body) = match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    (status, r.json().await.unwrap_or(Value::Null))
                }
                Err(e) => (0, Value::String(e.to_string())),
            };
            let done = status != 503;
            answers.push(Answer { target: url.clone(), status, body });
            if done {
                return answers;
            }
            assert!(Instant::now() < deadline, "key {} never got past 503: {answers:?}", job.key);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    futures::future::join_all(copies).await.into_iter().flatten().collect()
}

/// Per key: every acknowledgement names the same order (the same body), at most one is a 201, and
/// no order serves two keys. Returns the acknowledged order ids with their users.
fn one_order_per_key(jobs: &[Arc<Job>], answers: &[Vec<Answer>]) -> HashMap<i64, u64> {
    let mut acknowledged: HashMap<i64, u64> = HashMap::new();
    for (job, answers) in jobs.iter().zip(answers) {
        let acks: Vec<&Answer> = answers.iter().filter(|a| (200..300).contains(&a.status)).collect();
        assert_eq!(acks.len(), job.targets.len(), "key {}: every copy is acknowledged in the end", job.key);
        let first = &acks[0].body;
        for a in &acks {
            assert_eq!(&a.body, first, "key {}: {} answered another order than {}", job.key, a.target, acks[0].target);
        }
        let created = acks.iter().filter(|a| a.status == 201).count();
        assert!(created <= 1, "key {}: {created} answers said 201 (created)", job.key);
        assert_eq!(first["user_id"].as_u64(), Some(job.user), "key {}: {first}", job.key);
        let id = first["id"].as_i64().unwrap_or_else(|| panic!("key {}: no id in {first}", job.key));
        assert!(acknowledged.insert(id, job.user).is_none(), "order {id} acknowledged for two keys");
    }
    acknowledged
}

/// Each shard's primary holds exactly the acknowledged orders of its users, one per key (no
/// other order of theirs), and an idempotency row per key naming it; ids end in the shard's
/// number and no id is on two shards. Returns how many orders each process minted.
async fn check_databases(
    stack: &Stack,
    jobs: &[Arc<Job>],
    acknowledged: &HashMap<i64, u64>,
) -> BTreeMap<(String, u64), usize> {
    let mut minted_by = BTreeMap::new();
    let mut everywhere = BTreeSet::new();
    for shard in &stack.config.shards {
        let users: BTreeSet<u64> = jobs.iter().map(|j| j.user).filter(|u| shard_of(stack, *u) == &shard.name).collect();
        let in_list = users.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        let db = stack.shard_db(shard.name.as_str()).await;
        let stored: Vec<(i64, i64)> =
            sqlx::query_as(&format!("SELECT id, user_id FROM orders WHERE user_id IN ({in_list})"))
                .fetch_all(&db)
                .await
                .unwrap_or_else(|e| panic!("orders of shard {}: {e}", shard.name));
        let expected: BTreeSet<i64> =
            acknowledged.iter().filter(|(_, u)| users.contains(u)).map(|(id, _)| *id).collect();
        let got: BTreeSet<i64> = stored.iter().map(|(id, _)| *id).collect();
        let keys = jobs.iter().filter(|j| users.contains(&j.user)).count();
        assert_eq!(stored.len(), keys, "shard {}: orders stored for {keys} keys", shard.name);
        assert_eq!(got, expected, "shard {}: the stored orders are not the acknowledged ones", shard.name);
        let key_rows =
            scalar(&db, &format!("SELECT COUNT(DISTINCT order_id) FROM idempotency_keys WHERE user_id IN ({in_list})"))
                .await;
        assert_eq!(key_rows as usize, keys, "shard {}: one idempotency row, one order, per key", shard.name);
        for id in got {
            assert_eq!(id % 64, i64::from(shard.number), "order {id} on shard {} lacks its number", shard.name);
            assert!(everywhere.insert(id), "order id {id} is on two shards");
            *minted_by.entry((shard.name.to_string(), ((id / 64) % 64) as u64)).or_insert(0) += 1;
        }
        db.close().await;
    }
    minted_by
}
