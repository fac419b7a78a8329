//! SQL for `genq.api_keys`: key health, cooldowns (which also hold the
//! key's bucket, in `genq.key_buckets`), enabling and disabling, and the
//! listing operators read. The buckets themselves are in
//! [`super::buckets`].

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::StoreError;
use crate::keys::KeyState;

/// A key to register: its id and account, never its secret.
#[derive(Debug, Clone)]
pub struct KeyRow<'a> {
    pub id: &'a str,
    pub account: Option<&'a str>,
}

/// Makes sure every key has a row; existing state (cooldowns, disabled) is kept.
pub async fn register(pool: &PgPool, keys: &[KeyRow<'_>]) -> Result<(), StoreError> {
    let ids: Vec<&str> = keys.iter().map(|k| k.id).collect();
    let accounts: Vec<Option<&str>> = keys.iter().map(|k| k.account).collect();
    sqlx::query!(
        "INSERT INTO genq.api_keys (id, account)
         SELECT * FROM unnest($1::text[], $2::text[])
         ON CONFLICT (id) DO UPDATE SET account = EXCLUDED.account
          WHERE genq.api_keys.account IS DISTINCT FROM EXCLUDED.account",
        &ids as &[&str],
        &accounts as &[Option<&str>]
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A bucket after [`record_successes`]: id, rate, limit source, saved
/// discovery state, and the successes of all its keys before the batch.
pub type BucketAfterSuccesses = (String, f64, String, Option<serde_json::Value>, i64);

/// Successful calls to count, per key, and the bucket each was reserved from.
#[derive(Debug, Clone, PartialEq)]
pub struct Successes {
    pub key_id: String,
    pub bucket_id: String,
    pub calls: i32,
}

/// Books successful calls in one round trip: counts them, ends the keys'
/// failure and 429 streaks, and returns each bucket's rate and its source
/// (for raising learned rates).
pub async fn record_successes(
    pool: &PgPool,
    batch: &[Successes],
) -> Result<Vec<BucketAfterSuccesses>, StoreError> {
    let keys: Vec<&str> = batch.iter().map(|s| s.key_id.as_str()).collect();
    let buckets: Vec<&str> = batch.iter().map(|s| s.bucket_id.as_str()).collect();
    let calls: Vec<i32> = batch.iter().map(|s| s.calls).collect();
    let rows = sqlx::query_file!(
        "src/store/sql/keys/record_successes.sql",
        &keys as &[&str],
        &buckets as &[&str],
        &calls as &[i32]
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.id,
                r.requests_per_minute,
                r.limit_source,
                r.discovery,
                r.ok_before,
            )
        })
        .collect())
}

/// A call the provider refused for the job's own sake: the key was fine.
pub async fn record_used(pool: &PgPool, key_id: &str) -> Result<(), StoreError> {
    sqlx::query!(
        "UPDATE genq.api_keys SET last_used_at = now(), updated_at = now() WHERE id = $1",
        key_id
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Counts a 429 on a key; returns its consecutive 429s (including this one)
/// and the bucket's current rate, limit source and discovery state, for the
/// caller's cooldown and rate decisions.
pub async fn note_rate_limited(
    pool: &PgPool,
    key_id: &str,
    bucket_id: &str,
) -> Result<(i32, f64, String, Option<serde_json::Value>), StoreError> {
    let r = sqlx::query_file!(
        "src/store/sql/keys/note_rate_limited.sql",
        key_id,
        bucket_id
    )
    .fetch_one(pool)
    .await?;
    Ok((r.streak, r.requests_per_minute, r.limit_source, r.discovery))
}

/// Cools a key and its bucket for `wait` from the database's `now()` (never
/// shortening a later deadline already set). When the cooldown ends, the
/// bucket lets one request through before the rest follow at the steady rate
/// (the probe). If `new_rpm` is given and the bucket's limit is not
/// configured, the bucket's rate drops to it. Returns how long the key now
/// cools.
pub async fn cool_down(
    pool: &PgPool,
    key_id: &str,
    bucket_id: &str,
    wait: std::time::Duration,
    reason: &str,
    new_rpm: Option<f64>,
) -> Result<std::time::Duration, StoreError> {
    let left = sqlx::query_file_scalar!(
        "src/store/sql/keys/cool_down.sql",
        key_id,
        bucket_id,
        wait.as_secs_f64(),
        super::storable::message(reason),
        new_rpm
    )
    .fetch_one(pool)
    .await?;
    Ok(super::buckets::secs(left))
}

/// A transient failure (5xx, timeout): after `threshold` in a row the key's
/// circuit opens for `open_for`. Returns the key's consecutive failures.
pub async fn record_failure(
    pool: &PgPool,
    key_id: &str,
    error: &str,
    threshold: i32,
    open_for: chrono::Duration,
) -> Result<i32, StoreError> {
    let open_for =
        sqlx::postgres::types::PgInterval::try_from(open_for).map_err(sqlx::Error::Encode)?;
    Ok(sqlx::query_file_scalar!(
        "src/store/sql/keys/record_failure.sql",
        key_id,
        super::storable::message(error),
        threshold,
        open_for
    )
    .fetch_one(pool)
    .await?)
}

/// Disables a key with a reason; it is not used again until enabled.
pub async fn disable(pool: &PgPool, key_id: &str, reason: &str) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE genq.api_keys
            SET state = 'disabled', disabled_reason = $2, last_error = $2, error_count = error_count + 1,
                disabled_at = now(), updated_at = now()
          WHERE id = $1",
        key_id,
        super::storable::message(reason)
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Re-enables a disabled or cooling key now, on every replica: the key's
/// cooldown and its buckets' cooldowns are lifted, and the buckets have room
/// for a request at once. Workers are woken (`genq_keys`).
pub async fn enable(pool: &PgPool, key_id: &str) -> Result<bool, StoreError> {
    let found = sqlx::query_file_scalar!("src/store/sql/keys/enable.sql", key_id)
        .fetch_one(pool)
        .await?;
    Ok(found == 1)
}

/// Enables a key (as [`enable`]) and forgets its counters, its model
/// blocks and what was learned about the limits of its buckets (the
/// learned and adaptive buckets are deleted, unless other keys share them).
/// Running workers notice the missing buckets at their next reservation and
/// seed them again, so the key never drops out of rotation. False if no
/// such key.
pub async fn reset(pool: &PgPool, key_id: &str) -> Result<bool, StoreError> {
    if !enable(pool, key_id).await? {
        return Ok(false);
    }
    sqlx::query_file!("src/store/sql/keys/reset.sql", key_id)
        .execute(pool)
        .await?;
    Ok(true)
}

/// For each of `key_ids`: the account the provider's answers showed (keys
/// with no configured account), and whether the key was ever used.
pub async fn discovered_accounts(
    pool: &PgPool,
    key_ids: &[&str],
) -> Result<Vec<(String, Option<String>, bool)>, StoreError> {
    let rows = sqlx::query!(
        r#"SELECT id, CASE WHEN account IS NULL THEN discovered_account END AS discovered,
                  last_used_at IS NOT NULL AS "used!"
             FROM genq.api_keys WHERE id = ANY($1)"#,
        key_ids as &[&str]
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.id, r.discovered, r.used))
        .collect())
}

/// Records the account the provider named for a key with no configured
/// one. True if it changed.
pub async fn discover_account(
    pool: &PgPool,
    key_id: &str,
    account: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query!(
        "UPDATE genq.api_keys SET discovered_account = $2, updated_at = now()
          WHERE id = $1 AND account IS NULL AND discovered_account IS DISTINCT FROM $2",
        key_id,
        account
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Of `key_ids`, the disabled ones due a re-test (disabled, or last
/// re-tested, at least `every` ago), each marked as re-tested now. Atomic:
/// across all replicas, one caller gets each key once per `every`.
pub async fn claim_retests(
    pool: &PgPool,
    key_ids: &[&str],
    every: std::time::Duration,
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "UPDATE genq.api_keys
            SET retested_at = now()
          WHERE id = ANY($1) AND state = 'disabled'
            AND greatest(disabled_at, retested_at) <= now() - make_interval(secs => $2)
         RETURNING id",
        key_ids as &[&str],
        every.as_secs_f64()
    )
    .fetch_all(pool)
    .await?)
}

/// Blocks a key for one model (the provider refused it that model only).
pub async fn block_model(
    pool: &PgPool,
    key_id: &str,
    model: &str,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query!(
        "WITH b AS (
            INSERT INTO genq.key_model_blocks (key_id, model, reason) VALUES ($1, $2, $3)
            ON CONFLICT (key_id, model) DO UPDATE SET reason = EXCLUDED.reason)
         UPDATE genq.api_keys SET last_error = $3, error_count = error_count + 1, updated_at = now()
          WHERE id = $1",
        key_id,
        model,
        super::storable::message(reason)
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Why queued jobs of `model` wait, if every key serving it is disabled or
/// cooling (`genq.model_waits`).
pub async fn waiting_reason(pool: &PgPool, model: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar!(
        "SELECT reason FROM genq.model_waits WHERE model = $1",
        model
    )
    .fetch_optional(pool)
    .await?
    .flatten())
}

/// A key as `genq keys list` and `GET /v1/keys` show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct KeyStatus {
    pub id: String,
    /// The account whose budget the key shares: configured, else the
    /// organization/project the provider named.
    pub account: Option<String>,
    /// `configured` or `provider headers`.
    pub account_source: Option<String>,
    /// active, cooling (cooldown not yet over) or disabled.
    pub state: KeyState,
    pub cooldown_until: Option<DateTime<Utc>>,
    pub cooldown_remaining_secs: Option<f64>,
    pub disabled_reason: Option<String>,
    pub ok_count: i64,
    pub rate_limited_count: i64,
    pub error_count: i64,
    pub last_used_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Per model: "model=rate/min (source)".
    pub limits: Vec<String>,
    /// Models this key may not serve (a 403 for that model): "model: reason".
    pub blocked_models: Vec<String>,
    /// What its billed calls cost, in all (from `genq.spend`).
    pub cost_usd: crate::cost::Usd,
}

impl KeyStatus {
    /// The account as people read it: `org/proj`, or `org/proj (from
    /// headers)` when the provider's answers named it; `None` without one.
    pub fn account_label(&self) -> Option<String> {
        let account = self.account.as_ref()?;
        Some(match self.account_source.as_deref() {
            Some("provider headers") => format!("{account} (from headers)"),
            _ => account.clone(),
        })
    }
}

/// Every key with its effective state and the limits of its buckets.
pub async fn list(pool: &PgPool) -> Result<Vec<KeyStatus>, StoreError> {
    Ok(
        sqlx::query_file_as!(KeyStatus, "src/store/sql/keys/list.sql")
            .fetch_all(pool)
            .await?,
    )
}
