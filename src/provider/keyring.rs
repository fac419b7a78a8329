//! The keys a worker may use, and choosing one for a call: which keys serve
//! a model, which bucket each draws from (its account's, else its own), and
//! the reservation that picks the key with the most room right now.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::Mutex;

use crate::keys::ApiKey;
use crate::store::StoreError;
use crate::store::keys::{self as key_store, BucketSpec, KeyRow};

/// The bucket of `scope` (account or key id) for `model`.
pub fn bucket_id(scope: &str, model: &str) -> String {
    format!("{scope}/{model}")
}

/// A reserved slot: call the provider with this key now.
#[derive(Debug)]
pub struct Slot<'a> {
    pub key: &'a ApiKey,
    pub bucket: String,
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
}

impl Keyring {
    pub fn new(keys: Vec<ApiKey>, default_rpm: f64) -> Self {
        Keyring {
            keys,
            default_rpm,
            ensured: Mutex::new(HashSet::new()),
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

    /// Reserves a call of `cost` images on `model`.
    pub async fn reserve(
        &self,
        pool: &PgPool,
        model: &str,
        cost: u32,
    ) -> Result<Result<Slot<'_>, NoSlot>, StoreError> {
        let serving: Vec<(&ApiKey, String)> = self
            .keys
            .iter()
            .filter(|k| k.serves(model))
            .map(|k| (k, bucket_id(k.scope(), model)))
            .collect();
        if serving.is_empty() {
            return Ok(Err(NoSlot::NoKeyServes));
        }
        self.ensure(pool, model, &serving, false).await?;
        let candidates: Vec<(&str, &str)> = serving
            .iter()
            .map(|(k, b)| (k.id.as_str(), b.as_str()))
            .collect();
        let mut found = key_store::reserve(pool, &candidates, cost).await?;
        if found.key_id.is_none() && found.earliest.is_none() {
            // Rows may have been deleted (`genq keys reset`) since we ensured them.
            self.ensure(pool, model, &serving, true).await?;
            found = key_store::reserve(pool, &candidates, cost).await?;
        }
        Ok(match (found.key_id, found.earliest) {
            (Some(id), _) => {
                let (key, bucket) = serving
                    .into_iter()
                    .find(|(k, _)| k.id == id)
                    .expect("reserved one of ours");
                Ok(Slot { key, bucket })
            }
            (None, Some(at)) => Err(NoSlot::Until(at)),
            (None, None) => Err(NoSlot::AllDisabled),
        })
    }

    async fn ensure(
        &self,
        pool: &PgPool,
        model: &str,
        serving: &[(&ApiKey, String)],
        force: bool,
    ) -> Result<(), StoreError> {
        let missing: Vec<BucketSpec> = {
            let ensured = self.ensured.lock().expect("keyring lock");
            let mut seen = HashSet::new();
            serving
                .iter()
                .filter(|(_, b)| force || !ensured.contains(b))
                .filter(|(_, b)| seen.insert(b.clone()))
                .map(|(k, b)| {
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
