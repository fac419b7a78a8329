//! The keys a worker may use, and choosing one for a call: which keys serve
//! a model, which bucket each draws from (its account's, else its own), and
//! the reservation that picks the key with the most room right now.
//!
//! Reservations are coalesced per model: while one round trip is out, the
//! jobs that want a slot queue behind it, and the next round trip asks for
//! as many slots as jobs are waiting. A fast key grants them all at once
//! (each at its GCRA moment, within [`BATCH_HORIZON`]); a slow key grants
//! one, exactly as if every job had asked alone.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::keys::ApiKey;
use crate::store::StoreError;
use crate::store::keys::{self as key_store, BucketSpec, KeyRow};

/// The bucket of `scope` (account or key id) for `model`.
pub fn bucket_id(scope: &str, model: &str) -> String {
    format!("{scope}/{model}")
}

/// How far ahead one round trip may reserve slots of a fast key.
pub const BATCH_HORIZON: Duration = Duration::from_millis(50);
/// Most slots one round trip asks for.
const MAX_BATCH: u32 = 64;
/// A granted slot unused this long after its moment is dropped, so late
/// requests never bunch up with the next ones.
const STALE_AFTER: Duration = Duration::from_millis(250);

/// A reserved slot: call the provider with this key now.
#[derive(Debug)]
pub struct Slot<'a> {
    pub key: &'a ApiKey,
    pub bucket: String,
}

/// A slot granted by a batch reservation and not yet handed out.
#[derive(Debug)]
struct Granted {
    key: usize,
    bucket: String,
    at: DateTime<Utc>,
}

/// The coalescing state of one (model, cost).
#[derive(Default)]
struct Pending {
    granted: Mutex<VecDeque<Granted>>,
    /// One reservation round trip at a time; the others wait for its slots.
    turn: tokio::sync::Mutex<()>,
    /// Callers inside [`Keyring::reserve`] for this (model, cost).
    waiting: AtomicU32,
}

impl Pending {
    /// The next granted slot that is not stale, dropping stale ones.
    fn take(&self, now: DateTime<Utc>) -> Option<Granted> {
        let stale = chrono::Duration::from_std(STALE_AFTER).expect("small");
        let mut granted = self.granted.lock().expect("granted lock");
        while let Some(g) = granted.pop_front() {
            if g.at + stale >= now {
                return Some(g);
            }
        }
        None
    }
}

/// Counts a caller as waiting for as long as it lives.
struct Waiting<'a>(&'a AtomicU32);

impl<'a> Waiting<'a> {
    fn enter(counter: &'a AtomicU32) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why no key could take the call now.
#[derive(Debug, Clone, PartialEq)]
pub enum NoSlot {
    /// The soonest a key serving the model frees up.
    Until(DateTime<Utc>),
    /// Every key that could serve the model is disabled.
    AllDisabled,
    /// No configured key serves the model at all.
    NoKeyServes,
}

/// The keys of this process and the buckets it has made sure exist.
pub struct Keyring {
    keys: Vec<ApiKey>,
    /// Rate assumed for a bucket with no configured limit, until learned.
    default_rpm: f64,
    ensured: Mutex<HashSet<String>>,
    pending: Mutex<HashMap<(String, u32), Arc<Pending>>>,
}

impl Keyring {
    pub fn new(keys: Vec<ApiKey>, default_rpm: f64) -> Self {
        Keyring {
            keys,
            default_rpm,
            ensured: Mutex::new(HashSet::new()),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Gives every key a row (keeping state a previous run persisted).
    pub async fn register(&self, pool: &PgPool) -> Result<(), StoreError> {
        let rows: Vec<KeyRow> = self
            .keys
            .iter()
            .map(|k| KeyRow {
                id: &k.id,
                account: k.account.as_deref(),
            })
            .collect();
        key_store::register(pool, &rows).await
    }

    /// Reserves a call of `cost` images on `model`, returning when the call
    /// may go out.
    pub async fn reserve(
        &self,
        pool: &PgPool,
        model: &str,
        cost: u32,
    ) -> Result<Result<Slot<'_>, NoSlot>, StoreError> {
        let pending = self.pending_for(model, cost);
        let _waiting = Waiting::enter(&pending.waiting);
        loop {
            if let Some(granted) = pending.take(Utc::now()) {
                if let Ok(wait) = (granted.at - Utc::now()).to_std() {
                    tokio::time::sleep(wait).await;
                }
                return Ok(Ok(Slot {
                    key: &self.keys[granted.key],
                    bucket: granted.bucket,
                }));
            }
            let _turn = pending.turn.lock().await;
            if !pending.granted.lock().expect("granted lock").is_empty() {
                continue; // the round trip before ours left slots
            }
            let want = pending.waiting.load(Ordering::SeqCst).clamp(1, MAX_BATCH);
            let (key, bucket, slots) = match self.reserve_batch(pool, model, cost, want).await? {
                Ok(granted) => granted,
                Err(no) => return Ok(Err(no)),
            };
            pending
                .granted
                .lock()
                .expect("granted lock")
                .extend(slots.into_iter().map(|at| Granted {
                    key,
                    bucket: bucket.clone(),
                    at,
                }));
        }
    }

    fn pending_for(&self, model: &str, cost: u32) -> Arc<Pending> {
        let mut pending = self.pending.lock().expect("pending lock");
        pending
            .entry((model.to_string(), cost))
            .or_default()
            .clone()
    }

    /// One round trip for up to `want` slots: (key index, bucket, moments).
    async fn reserve_batch(
        &self,
        pool: &PgPool,
        model: &str,
        cost: u32,
        want: u32,
    ) -> Result<Result<(usize, String, Vec<DateTime<Utc>>), NoSlot>, StoreError> {
        let serving: Vec<(usize, String)> = self
            .keys
            .iter()
            .enumerate()
            .filter(|(_, k)| k.serves(model))
            .map(|(i, k)| (i, bucket_id(k.scope(), model)))
            .collect();
        if serving.is_empty() {
            return Ok(Err(NoSlot::NoKeyServes));
        }
        self.ensure(pool, model, &serving, false).await?;
        let candidates: Vec<(&str, &str)> = serving
            .iter()
            .map(|(i, b)| (self.keys[*i].id.as_str(), b.as_str()))
            .collect();
        let reserve = || key_store::reserve(pool, &candidates, cost, want, BATCH_HORIZON);
        let mut found = reserve().await?;
        if found.key_id.is_none() && found.earliest.is_none() {
            // Rows may have been deleted (`genq keys reset`) since we ensured them.
            self.ensure(pool, model, &serving, true).await?;
            found = reserve().await?;
        }
        Ok(match (found.key_id, found.earliest) {
            (Some(id), _) => {
                let (key, bucket) = serving
                    .into_iter()
                    .find(|(i, _)| self.keys[*i].id == id)
                    .expect("reserved one of ours");
                Ok((key, bucket, found.slots))
            }
            (None, Some(at)) => Err(NoSlot::Until(at)),
            (None, None) => Err(NoSlot::AllDisabled),
        })
    }

    async fn ensure(
        &self,
        pool: &PgPool,
        model: &str,
        serving: &[(usize, String)],
        force: bool,
    ) -> Result<(), StoreError> {
        let missing: Vec<BucketSpec> = {
            let ensured = self.ensured.lock().expect("keyring lock");
            let mut seen = HashSet::new();
            serving
                .iter()
                .filter(|(_, b)| force || !ensured.contains(b))
                .filter(|(_, b)| seen.insert(b.clone()))
                .map(|(i, b)| {
                    let k = &self.keys[*i];
                    let limits = k.limits_for(model);
                    BucketSpec {
                        id: b.clone(),
                        scope: k.scope().to_string(),
                        model: model.to_string(),
                        requests_per_minute: limits
                            .map_or(self.default_rpm, |l| l.requests_per_minute),
                        images_per_minute: limits.and_then(|l| l.images_per_minute),
                        burst: limits.map_or(1, |l| l.burst),
                        configured: limits.is_some(),
                    }
                })
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        if force {
            self.register(pool).await?;
        }
        key_store::ensure_buckets(pool, &missing).await?;
        let mut ensured = self.ensured.lock().expect("keyring lock");
        ensured.extend(missing.into_iter().map(|s| s.id));
        Ok(())
    }
}
