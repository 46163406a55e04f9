//! Passwords: the policy, and argon2id hashing on a bounded pool.
//!
//! Hashing is deliberately slow and memory-hungry (12 MiB a hash), so it runs on a fixed set of
//! `workers` threads of its own (default: one less than the cores, so the check path always keeps
//! a core) fed by a queue of `queue` jobs. Past that a login gets 503 + `Retry-After` at once
//! rather than queueing without end. Logins and password changes go ahead of registrations, which
//! may take only half the queue: a registration flood slows registrations, not logins. Own threads rather than tokio's blocking pool: that pool
//! grows to hundreds of threads, and each keeps its own malloc arena with a hash's block in it.
//!
//! A login flood must not take the CPU the check path and the API need, so hashing is bounded
//! twice. Its threads rest after each hash in proportion to how long it took, so that all of them
//! together use at most `hash_cpu_percent` of the machine (`rest_after`); a hash that other
//! work slowed down counts that slowness, so the busier the machine, the less hashing. And they
//! run in the SCHED_IDLE class (`hash_sched_idle`) at nice `hash_nice` (19), so the threads they
//! share a core with go first, at once: at nice 19 alone, a woken request thread waited for the
//! rest of the hash's slice, a few ms, which set the API's p99 during a flood. Either way a busy
//! core leaves hashing a sliver (SCHED_IDLE's weight is 3, nice 19's 15: neither starves it
//! outright), and past the queue logins get 503 at once. A class or a nice value ranks a thread
//! only within its scheduling group, though (an autogroup per session, or a cgroup per service),
//! and nginx and the backends may be in other groups: the bound is what protects them there.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{rand_core::OsRng, Output, PasswordHash, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version, ARGON2ID_IDENT};
use shopgate_core::metrics::prometheus_client::collector::Collector;
use shopgate_core::metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use shopgate_core::metrics::prometheus_client::metrics::counter::ConstCounter;
use shopgate_core::metrics::prometheus_client::metrics::gauge::ConstGauge;
use shopgate_core::metrics::prometheus_client::registry::Registry;
use tokio::sync::oneshot;

use crate::error::ApiError;

/// A password that passed the policy. Never printed.
pub(crate) struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

pub(crate) const MIN_LEN: usize = 8;
pub(crate) const MAX_LEN: usize = 128;
/// zxcvbn's score (0-4) a new password must reach: 3 is "safely unguessable" for an online
/// attack and a good way into an offline one.
pub(crate) const MIN_STRENGTH: u8 = 3;
const STRENGTH_CHARS: usize = 64;

impl Password {
    /// The original design's rules: 8-128 characters with an upper-case letter, a lower-case
    /// letter, a digit and a special character; and, as NIST SP 800-63B asks, not a well-known
    /// or easily guessed password (`Password1!` meets the character rules): zxcvbn's estimate
    /// must reach [`MIN_STRENGTH`], with `context` (the email) counted as known to an attacker.
    /// The error names the rule broken, and for a guessable password says why.
    pub fn parse(raw: String, context: &[&str]) -> Result<Self, String> {
        let n = raw.chars().count();
        if n < MIN_LEN {
            return Err(format!("password must be at least {MIN_LEN} characters"));
        }
        if n > MAX_LEN {
            return Err(format!("password must be at most {MAX_LEN} characters"));
        }
        if !raw.chars().any(char::is_uppercase) {
            return Err("password must contain an upper-case letter".into());
        }
        if !raw.chars().any(char::is_lowercase) {
            return Err("password must contain a lower-case letter".into());
        }
        if !raw.chars().any(|c| c.is_ascii_digit()) {
            return Err("password must contain a digit".into());
        }
        if !raw.chars().any(|c| !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control()) {
            return Err("password must contain a special character".into());
        }
        if raw.chars().any(char::is_control) {
            return Err("password must not contain control characters".into());
        }
        // The estimate's cost grows with the length; a strong prefix makes a strong password.
        let head: String = raw.chars().take(STRENGTH_CHARS).collect();
        let estimate = zxcvbn::zxcvbn(&head, context);
        if u8::from(estimate.score()) < MIN_STRENGTH {
            let mut why = String::from("password is too easy to guess");
            if let Some(feedback) = estimate.feedback() {
                if let Some(warning) = feedback.warning() {
                    why.push_str(&format!(": {}", warning.to_string().trim_end_matches('.').to_lowercase()));
                }
                if let Some(tip) = feedback.suggestions().first() {
                    why.push_str(&format!("; {}", tip.to_string().trim_end_matches('.').to_lowercase()));
                }
            }
            return Err(why);
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The OWASP Password Storage Cheat Sheet's argon2id row m = 12 MiB, t = 3, p = 1: one of the five
/// it lists as "an equal level of defense" (19 MiB with t = 2 is another, and the argon2 crate's
/// default), trading a third pass for 7 MiB less memory per hashing thread.
fn params() -> Params {
    Params::new(12 * 1024, 3, 1, None).unwrap_or_default()
}

/// The most working memory a hashing thread takes on to verify a hash made with bigger parameters
/// (an older setting); a hash asking for more is verified the ordinary, allocating way.
const MAX_REUSED_BLOCKS: usize = 64 * 1024;

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

/// How long a hashing thread keeps its working memory with nothing to hash. Then it gives it back
/// to the system, and the next hash maps it afresh (some 3,000 page faults, a few percent of a
/// hash): a verifier that is not hashing holds none of it, whatever its number of threads.
pub(crate) const MEMORY_IDLE: Duration = Duration::from_secs(2);

/// What a thread's working memory reserves (see `Memory`): more than 32 MiB.
const OWN_MAPPING_BYTES: usize = 33 << 20;

/// One hashing thread's argon2 working memory, reused for every hash while hashes keep coming, so
/// the verifier's memory is bounded by workers x 12 MiB instead of by what malloc keeps (more only
/// if stored hashes were made with more: see `verify_with`). Allocated at the first hash and
/// released after `MEMORY_IDLE` without one; `held` counts its bytes for the metrics.
///
/// Released means unmapped, not kept by malloc for later: the allocation reserves (but touches
/// only what a hash uses of) `OWN_MAPPING_BYTES`, above the most glibc's malloc ever takes from
/// its arenas (its mmap threshold rises with every big block freed, up to 32 MiB on 64-bit
/// systems, `DEFAULT_MMAP_THRESHOLD_MAX`), so it is always a mapping of its own. A 12 MiB block
/// alone was not: once the first one was freed, the next came from the thread's arena, and
/// freeing it left it there, resident.
pub(crate) struct Memory {
    blocks: Vec<Block>,
    held: Arc<AtomicUsize>,
}

impl Memory {
    pub fn new(held: Arc<AtomicUsize>) -> Self {
        Self { blocks: Vec::new(), held }
    }

    /// `count` blocks, allocated or grown (never past `MAX_REUSED_BLOCKS`) as needed.
    fn blocks(&mut self, count: usize) -> Option<&mut [Block]> {
        if count > self.blocks.len() && count <= MAX_REUSED_BLOCKS {
            self.release();
            let count = count.max(params().block_count());
            let mut blocks = Vec::with_capacity(count.max(OWN_MAPPING_BYTES / std::mem::size_of::<Block>()));
            blocks.resize(count, Block::default());
            self.blocks = blocks;
            self.held.fetch_add(self.bytes(), Ordering::Relaxed);
        }
        self.blocks.get_mut(..count)
    }

    fn release(&mut self) {
        self.held.fetch_sub(self.bytes(), Ordering::Relaxed);
        self.blocks = Vec::new();
    }

    fn bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<Block>()
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        self.release();
    }
}

/// Hashes into a PHC string (`$argon2id$v=19$m=12288,t=3,p=1$salt$hash`) using `mem`.
pub(crate) fn hash_with(mem: &mut Memory, password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_buf).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    let p = params();
    let mut out = [0u8; 32];
    let blocks = mem.blocks(p.block_count()).ok_or_else(|| anyhow::anyhow!("argon2: no working memory"))?;
    argon2()
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, blocks)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    let out = Output::new(&out).map_err(|e| anyhow::anyhow!("argon2 output: {e}"))?;
    Ok(format!("${ARGON2ID_IDENT}$v=19$m={},t={},p={}${}${out}", p.m_cost(), p.t_cost(), p.p_cost(), salt.as_str()))
}

/// Verifies against a PHC string using `mem`. An argon2id hash made with more memory (an older
/// setting, such as the 19 MiB of earlier versions) grows `mem` to its size, up to
/// `MAX_REUSED_BLOCKS`, so that the thread's memory stays bounded; other algorithms and bigger
/// hashes are verified the ordinary, allocating way.
pub(crate) fn verify_with(mem: &mut Memory, password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let reusable = (|| {
        if parsed.algorithm != ARGON2ID_IDENT {
            return None;
        }
        let p = Params::try_from(&parsed).ok()?;
        let version = Version::try_from(parsed.version.unwrap_or(0x13)).ok()?;
        let expected = parsed.hash?;
        let mut salt_buf = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt_buf).ok()?;
        let blocks = mem.blocks(p.block_count())?;
        let mut out = vec![0u8; expected.len()];
        Argon2::new(Algorithm::Argon2id, version, p)
            .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, blocks)
            .ok()?;
        // Output's equality is constant-time.
        Some(Output::new(&out).ok()? == expected)
    })();
    reusable.unwrap_or_else(|| argon2().verify_password(password.as_bytes(), &parsed).is_ok())
}

type Job = Box<dyn FnOnce(&mut Memory) + Send>;

/// Which queue a hashing job waits in. Workers always take a `Login` job first, and `Signup` jobs
/// may fill only half the queue, so a flood of registrations never starves logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Logins and password changes: someone is waiting to get in.
    Login,
    /// Registrations.
    Signup,
}

#[derive(Default)]
struct Lanes {
    login: VecDeque<Job>,
    signup: VecDeque<Job>,
    closed: bool,
}

/// The jobs waiting for a hashing thread, by lane.
struct Queue {
    lanes: Mutex<Lanes>,
    ready: Condvar,
    capacity: usize,
}

impl Queue {
    fn push(&self, lane: Lane, job: Job) -> Result<(), ApiError> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let (queue, room) = match lane {
            Lane::Login => (&mut lanes.login, self.capacity),
            Lane::Signup => (&mut lanes.signup, (self.capacity / 2).max(1)),
        };
        if queue.len() >= room {
            return Err(ApiError::Busy);
        }
        queue.push_back(job);
        drop(lanes);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job, logins first; `None` once the pool is dropped. After `idle` without one,
    /// calls `on_idle` (once) and goes on waiting.
    fn pop(&self, idle: Duration, mut on_idle: impl FnMut()) -> Option<Job> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let mut idle_at = Some(Instant::now() + idle);
        loop {
            if let Some(job) = lanes.login.pop_front().or_else(|| lanes.signup.pop_front()) {
                return Some(job);
            }
            if lanes.closed {
                return None;
            }
            lanes = match idle_at.map(|at| at.saturating_duration_since(Instant::now())) {
                None => self.ready.wait(lanes).unwrap_or_else(|e| e.into_inner()),
                Some(left) if !left.is_zero() => {
                    self.ready.wait_timeout(lanes, left).unwrap_or_else(|e| e.into_inner()).0
                }
                Some(_) => {
                    drop(lanes);
                    on_idle();
                    idle_at = None;
                    self.lanes.lock().unwrap_or_else(|e| e.into_inner())
                }
            };
        }
    }
}

/// The pool's threads, their queue, and what they may take from the machine
/// (`[verifier] hash_*` in the config).
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Hashing threads; default one less than the cores.
    pub workers: Option<usize>,
    /// Jobs that may wait for a thread.
    pub queue: usize,
    /// The threads' nice value, 0-19.
    pub nice: u8,
    /// Whether the threads run in the SCHED_IDLE class (`hash_sched_idle`).
    pub sched_idle: bool,
    /// The most of the machine's CPU time, in percent of all its cores, the threads may use.
    pub cpu_percent: u8,
    /// How long a thread keeps its working memory with nothing to hash (`MEMORY_IDLE`).
    pub memory_idle: Duration,
}

impl From<&shopgate_core::config::VerifierConfig> for PoolSettings {
    fn from(v: &shopgate_core::config::VerifierConfig) -> Self {
        Self {
            workers: v.hash_workers,
            queue: v.hash_queue,
            nice: v.hash_nice,
            sched_idle: v.hash_sched_idle,
            cpu_percent: v.hash_cpu_percent,
            memory_idle: MEMORY_IDLE,
        }
    }
}

/// The share of its time (0 to 1) each of `workers` hashing threads may hash, so that together
/// they use at most `cpu_percent` of `cores`.
fn duty(cpu_percent: u8, cores: usize, workers: usize) -> f64 {
    (f64::from(cpu_percent) / 100.0 * cores as f64 / workers.max(1) as f64).min(1.0)
}

/// How long a hashing thread rests after a hash that took `busy`, so that it hashes for at most
/// `duty` (0 to 1) of its time.
fn rest_after(busy: Duration, duty: f64) -> Duration {
    if duty >= 1.0 || duty <= 0.0 {
        return Duration::ZERO;
    }
    busy.mul_f64(1.0 / duty - 1.0)
}

pub struct PasswordPool {
    queue: Arc<Queue>,
    /// The hashing threads' kernel thread ids.
    #[cfg_attr(not(test), allow(dead_code))]
    threads: Vec<rustix::process::Pid>,
    in_flight: Arc<AtomicUsize>,
    /// Password checks made (verifications run, whatever their result).
    checks: Arc<AtomicU64>,
    /// Bytes of working memory the threads hold.
    memory: Arc<AtomicUsize>,
    /// A real hash of a random password: verified against when the email is unknown, so an
    /// unknown email costs the same time as a wrong password.
    dummy_hash: String,
}

/// The pool's own counts, as metrics.
#[derive(Debug)]
struct PoolMetrics {
    in_flight: Arc<AtomicUsize>,
    checks: Arc<AtomicU64>,
    memory: Arc<AtomicUsize>,
}

impl Collector for PoolMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let checks = ConstCounter::new(self.checks.load(Ordering::Relaxed));
        let help = "Passwords checked against a hash (logins, password changes)";
        checks.encode(encoder.encode_descriptor("shop_password_checks", help, None, checks.metric_type())?)?;
        let gauge =
            |value: &AtomicUsize| ConstGauge::new(i64::try_from(value.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        let in_flight = gauge(&self.in_flight);
        let help = "Password hashes running or queued";
        in_flight.encode(encoder.encode_descriptor("shop_hash_in_flight", help, None, in_flight.metric_type())?)?;
        let memory = gauge(&self.memory);
        let help = "Bytes of argon2 working memory the hashing threads hold (none after 2 s without a hash)";
        memory.encode(encoder.encode_descriptor("shop_hash_memory_bytes", help, None, memory.metric_type())?)
    }
}

impl PasswordPool {
    /// Starts the hashing threads; returns once every one runs at its priority.
    pub fn new(settings: PoolSettings) -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let workers = settings.workers.unwrap_or(cores.saturating_sub(1)).max(1);
        let duty = duty(settings.cpu_percent, cores, workers);
        let (nice, sched_idle) = (settings.nice, settings.sched_idle);
        let queue = Arc::new(Queue { lanes: Mutex::default(), ready: Condvar::new(), capacity: settings.queue.max(1) });
        let memory = Arc::new(AtomicUsize::new(0));
        let (started, threads) = std::sync::mpsc::channel();
        for i in 0..workers {
            let queue = queue.clone();
            let started = started.clone();
            let held = memory.clone();
            let idle = settings.memory_idle;
            std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
                let _ = started.send(lower_priority(nice, sched_idle));
                drop(started);
                let mut memory = Memory::new(held);
                while let Some(job) = queue.pop(idle, || memory.release()) {
                    let start = Instant::now();
                    // The waiter has its answer when the job returns; the rest delays the next.
                    job(&mut memory);
                    std::thread::sleep(rest_after(start.elapsed(), duty));
                }
            })?;
        }
        drop(started);
        // Ends when every thread has sent its word and dropped its sender.
        let threads = threads
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("lowering the hashing threads' priority: {e}"))?;
        let random: [u8; 16] = rand::random();
        let dummy_hash = hash_with(&mut Memory::new(Arc::default()), &format!("{random:?}"))?;
        Ok(Self {
            queue,
            threads,
            in_flight: Arc::new(AtomicUsize::new(0)),
            checks: Arc::new(AtomicU64::new(0)),
            memory,
            dummy_hash,
        })
    }

    /// Hashes running or queued.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Adds `shop_password_checks_total`, `shop_hash_in_flight` and `shop_hash_memory_bytes` to
    /// `registry`, read at each scrape.
    pub(crate) fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(PoolMetrics {
            in_flight: self.in_flight.clone(),
            checks: self.checks.clone(),
            memory: self.memory.clone(),
        }));
    }

    async fn run<T: Send + 'static>(
        &self,
        lane: Lane,
        job: impl FnOnce(&mut Memory) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let in_flight = self.in_flight.clone();
        in_flight.fetch_add(1, Ordering::Relaxed);
        let wrapped: Job = Box::new(move |mem| {
            let result = job(mem);
            // Count the job done before its waiter can see the result.
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = tx.send(result);
        });
        if let Err(e) = self.queue.push(lane, wrapped) {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(e);
        }
        rx.await.map_err(|_| ApiError::Unexpected(anyhow::anyhow!("a hashing job was dropped")))
    }

    pub(crate) async fn hash(&self, lane: Lane, password: Password) -> Result<String, ApiError> {
        self.run(lane, move |mem| hash_with(mem, password.expose())).await?.map_err(ApiError::Unexpected)
    }

    /// Verifies `password` against `hash`, or against the dummy hash when there is no user, so
    /// both cases take the same time. Returns true only for a real match.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        let checks = self.checks.clone();
        let ok = self
            .run(Lane::Login, move |mem| {
                checks.fetch_add(1, Ordering::Relaxed);
                verify_with(mem, &password, &hash)
            })
            .await?;
        Ok(ok && known)
    }
}

impl Drop for PasswordPool {
    fn drop(&mut self) {
        self.queue.lanes.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.queue.ready.notify_all();
    }
}

/// Lowers the calling thread: into the SCHED_IDLE class if `sched_idle`, and to nice value
/// `nice`, unless it runs lower already (raising a priority needs privileges, and an operator's
/// `nice` on the whole process is kept). On Linux a thread id names that one thread: only the
/// caller changes. Returns its thread id.
fn lower_priority(nice: u8, sched_idle: bool) -> Result<rustix::process::Pid, String> {
    if sched_idle {
        idle_class().map_err(|e| format!("moving a hashing thread to SCHED_IDLE: {e}"))?;
    }
    let tid = rustix::thread::gettid();
    let set_nice = || -> rustix::io::Result<()> {
        if rustix::process::getpriority_process(Some(tid))? < i32::from(nice) {
            rustix::process::setpriority_process(Some(tid), i32::from(nice))?;
        }
        Ok(())
    };
    set_nice().map_err(|e| format!("setting a hashing thread's nice value to {nice}: {e}"))?;
    Ok(tid)
}

/// Moves the calling thread into the SCHED_IDLE class: a thread of any other class that wakes on
/// its core takes the core at once, where a nice-19 thread would keep it for the rest of its
/// slice first (a few ms on the kernel's EEVDF scheduler), and the API's p99 pays for that
/// (BENCHMARKS.md, the login flood). Any thread may move itself there without privileges.
fn idle_class() -> Result<(), thread_priority::Error> {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, thread_schedule_policy, NormalThreadSchedulePolicy,
        ThreadSchedulePolicy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    let set = set_thread_priority_and_policy(thread_native_id(), thread_priority::ThreadPriority::Min, idle);
    // The crate then sets the nice value 0, which fails without privileges in a process an
    // operator started niced; the class is set by then, and it is what counts.
    if thread_schedule_policy()? == idle {
        return Ok(());
    }
    set
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordHasher;

    /// `workers` threads at nice `nice`, unbounded in CPU.
    fn settings(workers: usize, queue: usize, nice: u8) -> PoolSettings {
        PoolSettings {
            workers: Some(workers),
            queue,
            nice,
            sched_idle: false,
            cpu_percent: 100,
            memory_idle: MEMORY_IDLE,
        }
    }

    /// The argon2 crate's own, allocating hash.
    fn hash_now(password: &str) -> String {
        argon2().hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng)).unwrap().to_string()
    }

    #[test]
    fn a_thread_rests_so_that_it_hashes_at_most_its_share_of_the_time() {
        let ms = Duration::from_millis;
        assert_eq!(rest_after(ms(30), 0.5), ms(30));
        assert_eq!(rest_after(ms(30), 0.25), ms(90));
        // A hash that other work slowed down to 60 ms rests twice as long.
        assert_eq!(rest_after(ms(60), 0.25), ms(180));
        assert_eq!(rest_after(ms(30), 1.0), Duration::ZERO, "a whole core: no rest");
        // The default, 25% of the machine: half a core of two for the one thread,
        assert_eq!(duty(25, 2, 1), 0.5);
        // two cores of eight shared by seven threads,
        assert!((duty(25, 8, 7) - 2.0 / 7.0).abs() < 1e-9);
        // and 100%: as many cores as there are threads, never a rest.
        assert_eq!(duty(100, 2, 1), 1.0);
        assert_eq!(duty(100, 8, 7), 1.0);
    }

    #[test]
    fn policy_names_the_rule() {
        let cases = [
            ("Ab1!", "at least 8"),
            ("abcdefg1!", "upper-case"),
            ("ABCDEFG1!", "lower-case"),
            ("Abcdefgh!", "digit"),
            ("Abcdefgh1", "special"),
        ];
        for (pw, rule) in cases {
            let err = Password::parse(pw.into(), &[]).unwrap_err();
            assert!(err.contains(rule), "{pw}: {err}");
        }
        assert!(Password::parse(format!("Aa1!{}", "x".repeat(125)), &[]).unwrap_err().contains("at most 128"));
        assert!(Password::parse("Correct-Horse-9".into(), &[]).is_ok());
        assert!(Password::parse("Ünïcödé-Pass-9".into(), &[]).is_ok());
    }

    #[test]
    fn well_known_passwords_that_meet_the_character_rules_are_refused_with_a_reason() {
        for pw in ["Password1!", "Passw0rd!", "Welcome1!", "Qwerty123!", "Summer2024!", "Letmein1!", "Admin123!"] {
            let err = Password::parse(pw.into(), &[]).unwrap_err();
            assert!(err.starts_with("password is too easy to guess: "), "{pw}: {err}");
            assert!(err.contains("common"), "{pw}: {err}");
        }
        // The user's own email is known to an attacker.
        assert!(Password::parse("Ann.smith@example.com9".into(), &["ann.smith@example.com"]).is_err());
        assert!(Password::parse("Blue-Kettle-42!".into(), &["ann.smith@example.com"]).is_ok());
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let pool = PasswordPool::new(settings(1, 4, 0)).unwrap();
        let h = pool.hash(Lane::Login, Password::parse("Correct-Horse-9".into(), &[]).unwrap()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=12288,t=3,p=1$"), "{h}");
        assert!(pool.verify("Correct-Horse-9".into(), Some(h.clone())).await.unwrap());
        assert!(!pool.verify("Correct-Horse-8".into(), Some(h)).await.unwrap());
        assert!(!pool.verify("Correct-Horse-9".into(), None).await.unwrap());
    }

    #[test]
    fn reused_memory_hashes_agree_with_the_standard_implementation() {
        let mut mem = Memory::new(Arc::default());
        let ours = hash_with(&mut mem, "Correct-Horse-9").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(argon2().verify_password(b"Correct-Horse-9", &parsed).is_ok(), "{ours}");
        assert!(argon2().verify_password(b"Correct-Horse-8", &parsed).is_err());
        let standard = hash_now("Correct-Horse-9");
        assert!(verify_with(&mut mem, "Correct-Horse-9", &standard));
        assert!(!verify_with(&mut mem, "Correct-Horse-8", &standard));
        // Other parameters (an older, cheaper setting) still verify, the allocating way.
        let cheap = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8 * 1024, 1, 1, None).unwrap());
        let old = cheap.hash_password(b"Old-Pass-1!", &SaltString::generate(&mut OsRng)).unwrap().to_string();
        assert!(verify_with(&mut mem, "Old-Pass-1!", &old));
        assert!(!verify_with(&mut mem, "Old-Pass-2!", &old));
        assert!(!verify_with(&mut mem, "x", "not a phc string"));
        assert_eq!(mem.blocks.len(), 12 * 1024, "smaller hashes use a part of the thread's memory");
    }

    #[tokio::test]
    async fn a_thread_gives_its_memory_back_when_idle_and_takes_it_again_for_the_next_hash() {
        let pool =
            PasswordPool::new(PoolSettings { memory_idle: Duration::from_millis(300), ..settings(1, 4, 0) }).unwrap();
        assert_eq!(pool.memory.load(Ordering::Relaxed), 0, "nothing held before the first hash");
        let h = pool.hash(Lane::Login, Password::parse("Correct-Horse-9".into(), &[]).unwrap()).await.unwrap();
        let block = 12 * 1024 * 1024;
        assert_eq!(pool.memory.load(Ordering::Relaxed), block);
        // Hashes that follow one another keep it.
        assert!(pool.verify("Correct-Horse-9".into(), Some(h.clone())).await.unwrap());
        assert_eq!(pool.memory.load(Ordering::Relaxed), block);
        let released = async {
            while pool.memory.load(Ordering::Relaxed) != 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), released).await.expect("released after the idle time");
        assert!(pool.verify("Correct-Horse-9".into(), Some(h)).await.unwrap());
        assert_eq!(pool.memory.load(Ordering::Relaxed), block, "taken again for the next hash");
    }

    #[test]
    fn hashes_of_the_earlier_19_mib_setting_verify_in_the_threads_memory_grown_once() {
        let mut mem = Memory::new(Arc::default());
        let earlier = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(19 * 1024, 2, 1, None).unwrap());
        let old = earlier.hash_password(b"Old-Pass-1!", &SaltString::generate(&mut OsRng)).unwrap().to_string();
        assert!(verify_with(&mut mem, "Old-Pass-1!", &old));
        assert_eq!(mem.blocks.len(), 19 * 1024, "grown to the stored hash's size, and kept");
        assert!(!verify_with(&mut mem, "Old-Pass-2!", &old));
        // Beyond the bound: verified, but in memory of its own.
        let huge = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(80 * 1024, 1, 1, None).unwrap());
        let old = huge.hash_password(b"Old-Pass-1!", &SaltString::generate(&mut OsRng)).unwrap().to_string();
        assert!(verify_with(&mut mem, "Old-Pass-1!", &old));
        assert_eq!(mem.blocks.len(), 19 * 1024);
    }

    #[test]
    fn logins_go_first_and_signups_take_half_the_queue() {
        let queue = Queue { lanes: Mutex::default(), ready: Condvar::new(), capacity: 4 };
        let order = Arc::new(Mutex::new(Vec::new()));
        let job = |name: &'static str| -> Job {
            let order = order.clone();
            Box::new(move |_| order.lock().unwrap().push(name))
        };
        assert!(queue.push(Lane::Signup, job("s1")).is_ok());
        assert!(queue.push(Lane::Signup, job("s2")).is_ok());
        assert!(matches!(queue.push(Lane::Signup, job("s3")), Err(ApiError::Busy)), "signups may fill half");
        for name in ["l1", "l2", "l3", "l4"] {
            assert!(queue.push(Lane::Login, job(name)).is_ok(), "logins still have the whole queue");
        }
        assert!(matches!(queue.push(Lane::Login, job("l5")), Err(ApiError::Busy)));
        let mut mem = Memory::new(Arc::default());
        for _ in 0..6 {
            queue.pop(MEMORY_IDLE, || {}).unwrap()(&mut mem);
        }
        assert_eq!(*order.lock().unwrap(), ["l1", "l2", "l3", "l4", "s1", "s2"]);
    }

    /// A thread's `/proc` stat line: its name (in parentheses, and it may hold spaces) and the
    /// fields after it, field 3 (the state) first.
    fn task_stat(tid: rustix::process::Pid) -> (String, Vec<String>) {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{}/stat", tid.as_raw_nonzero())).unwrap();
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_owned();
        (name, rest.split_whitespace().map(str::to_owned).collect())
    }

    /// A thread's name and nice value (field 19).
    fn nice_of(tid: rustix::process::Pid) -> (String, i32) {
        let (name, fields) = task_stat(tid);
        (name, fields[16].parse().unwrap())
    }

    #[tokio::test]
    async fn hashing_threads_run_at_the_lowered_priority_and_nothing_else_does() {
        let (_, before) = nice_of(rustix::thread::gettid());
        let pool = PasswordPool::new(settings(2, 4, 19)).unwrap();
        assert_eq!(pool.threads.len(), 2);
        for &tid in &pool.threads {
            let (name, nice) = nice_of(tid);
            assert!(name.starts_with("argon2-"), "{name}");
            assert_eq!(nice, 19, "{name}");
        }
        // They still hash.
        assert!(!pool.verify("Correct-Horse-9".into(), None).await.unwrap());
        assert_eq!(nice_of(rustix::thread::gettid()).1, before, "the caller's own priority is untouched");
        let normal = PasswordPool::new(settings(1, 4, 0)).unwrap();
        assert_eq!(nice_of(normal.threads[0]).1, before, "nice 0: the process's own priority");
        assert_eq!(policy_of(normal.threads[0]), SCHED_OTHER);
    }

    const SCHED_OTHER: u32 = 0;
    const SCHED_IDLE: u32 = 5;

    /// A thread's scheduling class (field 41).
    fn policy_of(tid: rustix::process::Pid) -> u32 {
        task_stat(tid).1[38].parse().unwrap()
    }

    #[tokio::test]
    async fn hashing_threads_can_run_in_the_idle_class_and_still_hash() {
        let pool = PasswordPool::new(PoolSettings { sched_idle: true, ..settings(2, 4, 19) }).unwrap();
        for &tid in &pool.threads {
            assert_eq!(policy_of(tid), SCHED_IDLE);
            assert_eq!(nice_of(tid).1, 19, "the nice value is kept for a switch back");
        }
        assert_eq!(policy_of(rustix::thread::gettid()), SCHED_OTHER, "the caller's class is untouched");
        let h = pool.hash(Lane::Login, Password("Correct-Horse-9".into())).await.unwrap();
        assert!(pool.verify("Correct-Horse-9".into(), Some(h)).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_pool_answers_busy_at_once() {
        let pool = Arc::new(PasswordPool::new(settings(1, 1, 0)).unwrap());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let p = pool.clone();
            tasks.push(tokio::spawn(async move { p.verify("Correct-Horse-9".into(), None).await }));
        }
        let mut busy = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Err(ApiError::Busy)) {
                busy += 1;
            }
        }
        assert!(busy >= 5, "only {busy} of 8 refused with a pool of 1 + queue 1");
        assert_eq!(pool.in_flight(), 0, "every job accounted for");
    }
}
