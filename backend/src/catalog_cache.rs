//! The catalog's answers, kept in memory for at most `[backend] catalog_cache_ms` (default 1 s).
//!
//! The catalog is the same on every shard and changes only when an operator imports one
//! (`shopctl catalog import`, straight to the databases), while every shopper reads it. So each
//! answer of `GET /api/categories`, `/api/products` and `/api/products/{id}` is kept once
//! serialized, with its `ETag`, and served again until it is `catalog_cache_ms` old, counted from
//! the moment its load began. The bound on staleness follows: an answer sent at time `t` was read
//! from the database at or after `t - catalog_cache_ms`, so a price change committed there is in
//! every answer to a request that arrives more than `catalog_cache_ms` after the commit. (The
//! database a read goes to is the read policy's, as for every read: the replica while it is within
//! its lag bound, else the primary.) Orders never read prices from here: they take them from the
//! database inside their own transaction.
//!
//! Concurrent requests for an answer that is missing or expired wait for one load rather than
//! each running the query. Memory is bounded: at most [`MAX_ENTRIES`] answers and about
//! [`MAX_BYTES`] of bodies; past that, expired answers are dropped, and if that is not enough the
//! request is served straight from the database.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderValue;
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use shopgate_store::catalog::ProductPage;

/// Answers kept at most.
pub(crate) const MAX_ENTRIES: usize = 1024;
/// Bodies kept at most, in bytes (a page of 100 products is about 15 KiB).
pub(crate) const MAX_BYTES: usize = 4 << 20;

/// Which answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Categories,
    Products(ProductPage),
    Product(i64),
}

/// One answer's JSON body and its strong `ETag`, derived from the body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) body: Bytes,
    pub(crate) etag: HeaderValue,
    /// Counts this body in the cache's total while it lives.
    bytes: Arc<AtomicUsize>,
}

impl Answer {
    fn new(body: Bytes, bytes: Arc<AtomicUsize>) -> Self {
        let digest = Sha256::digest(&body);
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        // Hex digits between quotes are always a valid header value.
        let etag = HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"\""));
        bytes.fetch_add(body.len(), Ordering::Relaxed);
        Self { body, etag, bytes }
    }

    /// Whether an `If-None-Match` header value names this answer (weak comparison, as RFC 9110
    /// prescribes for `If-None-Match`; `*` matches any).
    pub(crate) fn matches(&self, if_none_match: &[u8]) -> bool {
        let ours = self.etag.as_bytes();
        if_none_match.split(|&b| b == b',').map(<[u8]>::trim_ascii).any(|tag| {
            let tag = tag.strip_prefix(b"W/").unwrap_or(tag);
            tag == b"*" || tag == ours
        })
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.bytes.fetch_sub(self.body.len(), Ordering::Relaxed);
    }
}

/// One key's answer, loaded at most once; in force until `started + ttl`.
struct Slot {
    started: Instant,
    answer: OnceCell<Arc<Answer>>,
}

/// Why a load left nothing in its slot.
enum NotKept<E> {
    NotFound,
    Failed(E),
}

/// The cache; `ttl` zero turns it off (every request reads the database).
pub(crate) struct CatalogCache {
    ttl: Duration,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    bytes: Arc<AtomicUsize>,
}

/// Whether an answer came from memory, from a load it started or joined, or bypassed the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Hit,
    Miss,
    Bypass,
}

impl CatalogCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self { ttl, slots: Mutex::new(HashMap::new()), bytes: Arc::new(AtomicUsize::new(0)) }
    }

    /// The answer for `key`: kept, or loaded with `load` (the JSON body, or `None` for "no such
    /// thing", which is not kept). Errors are not kept either: the next request loads again.
    pub(crate) async fn get<E, F, Fut>(&self, key: Key, load: F) -> Result<(Option<Arc<Answer>>, Outcome), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Bytes>, E>>,
    {
        let Some(slot) = self.slot(key) else {
            let body = load().await?;
            return Ok((body.map(|b| Arc::new(Answer::new(b, self.bytes.clone()))), Outcome::Bypass));
        };
        if let Some(answer) = slot.answer.get() {
            return Ok((Some(answer.clone()), Outcome::Hit));
        }
        let answer = slot
            .answer
            .get_or_try_init(|| async {
                match load().await {
                    Ok(Some(body)) => Ok(Arc::new(Answer::new(body, self.bytes.clone()))),
                    Ok(None) => Err(NotKept::NotFound),
                    Err(e) => Err(NotKept::Failed(e)),
                }
            })
            .await;
        match answer {
            Ok(answer) => Ok((Some(answer.clone()), Outcome::Miss)),
            Err(NotKept::NotFound) => {
                self.forget(key, &slot);
                Ok((None, Outcome::Miss))
            }
            Err(NotKept::Failed(e)) => Err(e),
        }
    }

    /// The slot in force for `key`: the current one, or a new one in place of an expired or
    /// missing one; `None` when the cache is off or full of answers still in force.
    fn slot(&self, key: Key) -> Option<Arc<Slot>> {
        if self.ttl.is_zero() {
            return None;
        }
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(&key) {
            if now.duration_since(slot.started) < self.ttl {
                return Some(slot.clone());
            }
            slots.remove(&key);
        }
        if slots.len() >= MAX_ENTRIES || self.bytes.load(Ordering::Relaxed) >= MAX_BYTES {
            slots.retain(|_, s| now.duration_since(s.started) < self.ttl);
            if slots.len() >= MAX_ENTRIES || self.bytes.load(Ordering::Relaxed) >= MAX_BYTES {
                return None;
            }
        }
        let slot = Arc::new(Slot { started: now, answer: OnceCell::new() });
        slots.insert(key, slot.clone());
        Some(slot)
    }

    /// Drops `slot` if it is still `key`'s (its load found nothing).
    fn forget(&self, key: Key, slot: &Arc<Slot>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.get(&key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            slots.remove(&key);
        }
    }
}
