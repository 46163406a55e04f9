//! Passwords: the policy, and argon2id hashing on a bounded pool.
//!
//! Hashing is deliberately slow, so it runs on blocking threads behind two limits: at most
//! `workers` hashes at once (default: one less than the cores, so the check path always keeps a
//! core) and at most `queue` waiting. Past that a login gets 503 + `Retry-After` at once rather
//! than queueing without end.

use std::sync::Arc;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// A password that passed the policy. Never printed.
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 128;

impl Password {
    /// The original design's rules: 8-128 characters with an upper-case letter, a lower-case
    /// letter, a digit and a special character. The error names the rule broken.
    pub fn parse(raw: String) -> Result<Self, String> {
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
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// OWASP Password Storage Cheat Sheet: argon2id, m = 19 MiB, t = 2, p = 1.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

pub struct PasswordPool {
    workers: Arc<Semaphore>,
    queue: Arc<Semaphore>,
    queue_size: usize,
    /// A real hash of a random password: verified against when the email is unknown, so an
    /// unknown email costs the same time as a wrong password.
    dummy_hash: String,
}

impl PasswordPool {
    pub fn new(workers: Option<usize>, queue: usize) -> anyhow::Result<Self> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let workers = workers.unwrap_or(cores.saturating_sub(1)).max(1);
        let random: [u8; 16] = rand::random();
        let dummy_hash = hash_now(&format!("{random:?}"))?;
        Ok(Self {
            workers: Arc::new(Semaphore::new(workers)),
            queue: Arc::new(Semaphore::new(workers + queue.max(1))),
            queue_size: workers + queue.max(1),
            dummy_hash,
        })
    }

    pub fn in_flight(&self) -> usize {
        self.queue_size - self.queue.available_permits()
    }

    async fn run<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let _queued = self.queue.clone().try_acquire_owned().map_err(|_| ApiError::Busy)?;
        let _running = self
            .workers
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("hash pool closed: {e}")))?;
        tokio::task::spawn_blocking(job).await.map_err(|e| ApiError::Unexpected(anyhow::anyhow!("hash task: {e}")))
    }

    pub async fn hash(&self, password: Password) -> Result<String, ApiError> {
        self.run(move || hash_now(password.expose())).await?.map_err(ApiError::Unexpected)
    }

    /// Verifies `password` against `hash`, or against the dummy hash when there is no user, so
    /// both cases take the same time. Returns true only for a real match.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        let ok = self
            .run(move || {
                PasswordHash::new(&hash).is_ok_and(|parsed| argon2().verify_password(password.as_bytes(), &parsed).is_ok())
            })
            .await?;
        Ok(ok && known)
    }
}

fn hash_now(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let err = Password::parse(pw.into()).unwrap_err();
            assert!(err.contains(rule), "{pw}: {err}");
        }
        assert!(Password::parse(format!("Aa1!{}", "x".repeat(125))).unwrap_err().contains("at most 128"));
        assert!(Password::parse("Correct-Horse-9".into()).is_ok());
        assert!(Password::parse("Ünïcödé-Pass-9".into()).is_ok());
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let pool = PasswordPool::new(Some(1), 4).unwrap();
        let h = pool.hash(Password::parse("Correct-Horse-9".into()).unwrap()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(pool.verify("Correct-Horse-9".into(), Some(h.clone())).await.unwrap());
        assert!(!pool.verify("Correct-Horse-8".into(), Some(h)).await.unwrap());
        assert!(!pool.verify("Correct-Horse-9".into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn a_full_pool_answers_busy_at_once() {
        let pool = Arc::new(PasswordPool::new(Some(1), 1).unwrap());
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
    }
}
