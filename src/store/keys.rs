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
    sqlx::query(
        "INSERT INTO genq.api_keys (id, account)
         SELECT * FROM unnest($1::text[], $2::text[])
         ON CONFLICT (id) DO UPDATE SET account = EXCLUDED.account
          WHERE genq.api_keys.account IS DISTINCT FROM EXCLUDED.account",
    )
    .bind(&ids)
    .bind(&accounts)
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
    Ok(sqlx::query_as(
        "WITH input AS (
            SELECT * FROM unnest($1::text[], $2::text[], $3::int[]) AS t(key_id, bucket_id, calls)
         ), k AS (
            UPDATE genq.api_keys a
               SET ok_count = a.ok_count + s.calls, consecutive_failures = 0, consecutive_429 = 0,
                   last_used_at = now(), updated_at = now(),
                   -- a disabled key that answered a re-test request is back
                   state = CASE WHEN a.state = 'disabled' THEN 'active'
                                WHEN a.state = 'cooling' AND a.cooldown_until <= now() THEN 'active'
                                ELSE a.state END,
                   disabled_reason = CASE WHEN a.state = 'disabled' THEN NULL ELSE a.disabled_reason END,
                   disabled_at = CASE WHEN a.state = 'disabled' THEN NULL ELSE a.disabled_at END
              FROM (SELECT key_id, sum(calls) AS calls FROM input GROUP BY key_id) s
             WHERE a.id = s.key_id)
         SELECT b.id, b.requests_per_minute, b.limit_source, b.discovery,
                -- successes on the bucket's keys so far, from every replica (before this batch)
                (SELECT coalesce(sum(a.ok_count), 0)::int8 FROM genq.api_keys a
                  WHERE coalesce(a.account, a.discovered_account, a.id) = b.scope) AS ok_before
           FROM genq.key_buckets b
          WHERE b.id IN (SELECT bucket_id FROM input)",
    )
    .bind(&keys)
    .bind(&buckets)
    .bind(&calls)
    .fetch_all(pool)
    .await?)
}

/// A call the provider refused for the job's own sake: the key was fine.
pub async fn record_used(pool: &PgPool, key_id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE genq.api_keys SET last_used_at = now(), updated_at = now() WHERE id = $1")
        .bind(key_id)
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
    Ok(sqlx::query_as(
        "WITH k AS (
            UPDATE genq.api_keys
               SET rate_limited_count = rate_limited_count + 1, consecutive_429 = consecutive_429 + 1,
                   last_used_at = now(), updated_at = now()
             WHERE id = $1
            RETURNING consecutive_429)
         SELECT (SELECT consecutive_429 FROM k), b.requests_per_minute, b.limit_source, b.discovery
           FROM genq.key_buckets b WHERE b.id = $2",
    )
    .bind(key_id)
    .bind(bucket_id)
    .fetch_one(pool)
    .await?)
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
    let left: f64 = sqlx::query_scalar(
        "WITH k AS (
            UPDATE genq.api_keys
               SET state = CASE WHEN state = 'disabled' THEN state ELSE 'cooling' END,
                   cooldown_until = greatest(cooldown_until, now() + make_interval(secs => $3)),
                   last_error = $4, updated_at = now()
             WHERE id = $1
            RETURNING cooldown_until)
         UPDATE genq.key_buckets b
            SET cooldown_until = greatest(b.cooldown_until, now() + make_interval(secs => $3)),
                -- after the cooldown: room for exactly one request, then the steady rate
                tat_requests = greatest(b.tat_requests,
                                 greatest(b.cooldown_until, now() + make_interval(secs => $3))
                                 + make_interval(secs => 60.0 / coalesce($5, b.requests_per_minute) * (b.burst - 1))),
                requests_per_minute = CASE WHEN b.limit_source = 'configured' OR $5 IS NULL
                                           THEN b.requests_per_minute ELSE $5 END,
                updated_at = now()
           WHERE b.id = $2
         RETURNING greatest(0, extract(epoch FROM greatest(b.cooldown_until, (SELECT cooldown_until FROM k)) - now()))::float8",
    )
    .bind(key_id)
    .bind(bucket_id)
    .bind(wait.as_secs_f64())
    .bind(super::storable::message(reason))
    .bind(new_rpm)
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
    Ok(sqlx::query_scalar(
        "UPDATE genq.api_keys
            SET error_count = error_count + 1, consecutive_failures = consecutive_failures + 1,
                last_error = $2, last_used_at = now(), updated_at = now(),
                state = CASE WHEN state <> 'disabled' AND consecutive_failures + 1 >= $3 THEN 'cooling' ELSE state END,
                cooldown_until = CASE WHEN state <> 'disabled' AND consecutive_failures + 1 >= $3
                                      THEN greatest(cooldown_until, now() + $4) ELSE cooldown_until END
          WHERE id = $1
         RETURNING consecutive_failures",
    )
    .bind(key_id)
    .bind(super::storable::message(error))
    .bind(threshold)
    .bind(open_for)
    .fetch_one(pool)
    .await?)
}

/// Disables a key with a reason; it is not used again until enabled.
pub async fn disable(pool: &PgPool, key_id: &str, reason: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE genq.api_keys
            SET state = 'disabled', disabled_reason = $2, last_error = $2, error_count = error_count + 1,
                disabled_at = now(), updated_at = now()
          WHERE id = $1",
    )
    .bind(key_id)
    .bind(super::storable::message(reason))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Re-enables a disabled or cooling key now, on every replica: the key's
/// cooldown and its buckets' cooldowns are lifted, and the buckets have room
/// for a request at once. Workers are woken (`genq_keys`).
pub async fn enable(pool: &PgPool, key_id: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "WITH before AS (
            -- the snapshot before this statement: was the key held back?
            SELECT state <> 'active' OR coalesce(cooldown_until > now(), false) AS held
              FROM genq.api_keys WHERE id = $1
         ), k AS (
            UPDATE genq.api_keys
               SET state = 'active', disabled_reason = NULL, disabled_at = NULL, cooldown_until = NULL,
                   consecutive_failures = 0, consecutive_429 = 0, updated_at = now()
             WHERE id = $1
            RETURNING coalesce(account, discovered_account, id) AS scope
         ), unblocked AS (
            DELETE FROM genq.key_model_blocks WHERE key_id = $1
         ), b AS (
            UPDATE genq.key_buckets b
               SET cooldown_until = NULL, tat_requests = least(b.tat_requests, now()),
                   tat_images = least(b.tat_images, now()), updated_at = now()
              FROM k, before
             WHERE b.scope = k.scope
               AND (b.cooldown_until IS NOT NULL OR before.held)
         )
         SELECT count(*) FROM k",
    )
    .bind(key_id)
    .fetch_one(pool)
    .await?;
    let found: i64 = sqlx::Row::get(&done, 0);
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
    sqlx::query(
        "WITH k AS (
            UPDATE genq.api_keys
               SET ok_count = 0, rate_limited_count = 0, error_count = 0, retested_at = NULL,
                   last_error = NULL, updated_at = now()
             WHERE id = $1
            RETURNING coalesce(account, discovered_account, id) AS scope)
         DELETE FROM genq.key_buckets b
          USING k
          WHERE b.scope = k.scope AND b.limit_source <> 'configured'
            AND NOT EXISTS (SELECT 1 FROM genq.api_keys o WHERE o.id <> $1 AND coalesce(o.account, o.discovered_account, o.id) = k.scope)",
    )
    .bind(key_id)
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
    Ok(sqlx::query_as(
        "SELECT id, CASE WHEN account IS NULL THEN discovered_account END, last_used_at IS NOT NULL
           FROM genq.api_keys WHERE id = ANY($1)",
    )
    .bind(key_ids)
    .fetch_all(pool)
    .await?)
}

/// Records the account the provider named for a key with no configured
/// one. True if it changed.
pub async fn discover_account(
    pool: &PgPool,
    key_id: &str,
    account: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE genq.api_keys SET discovered_account = $2, updated_at = now()
          WHERE id = $1 AND account IS NULL AND discovered_account IS DISTINCT FROM $2",
    )
    .bind(key_id)
    .bind(account)
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
    Ok(sqlx::query_scalar(
        "UPDATE genq.api_keys
            SET retested_at = now()
          WHERE id = ANY($1) AND state = 'disabled'
            AND greatest(disabled_at, retested_at) <= now() - make_interval(secs => $2)
         RETURNING id",
    )
    .bind(key_ids)
    .bind(every.as_secs_f64())
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
    sqlx::query(
        "WITH b AS (
            INSERT INTO genq.key_model_blocks (key_id, model, reason) VALUES ($1, $2, $3)
            ON CONFLICT (key_id, model) DO UPDATE SET reason = EXCLUDED.reason)
         UPDATE genq.api_keys SET last_error = $3, error_count = error_count + 1, updated_at = now()
          WHERE id = $1",
    )
    .bind(key_id)
    .bind(model)
    .bind(super::storable::message(reason))
    .execute(pool)
    .await?;
    Ok(())
}

/// Why queued jobs of `model` wait, if every key serving it is disabled or
/// cooling (`genq.model_waits`).
pub async fn waiting_reason(pool: &PgPool, model: &str) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT reason FROM genq.model_waits WHERE model = $1")
            .bind(model)
            .fetch_optional(pool)
            .await?
            .flatten(),
    )
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
}

/// Every key with its effective state and the limits of its buckets.
pub async fn list(pool: &PgPool) -> Result<Vec<KeyStatus>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT k.id, coalesce(k.account, k.discovered_account) AS account,
                CASE WHEN k.account IS NOT NULL THEN 'configured'
                     WHEN k.discovered_account IS NOT NULL THEN 'provider headers' END AS account_source,
                CASE WHEN k.state = 'cooling' AND k.cooldown_until <= now() THEN 'active' ELSE k.state END AS state,
                k.cooldown_until,
                CASE WHEN k.cooldown_until > now()
                     THEN extract(epoch FROM k.cooldown_until - now())::float8 END AS cooldown_remaining_secs,
                k.disabled_reason, k.ok_count, k.rate_limited_count, k.error_count, k.last_used_at, k.last_error,
                coalesce((SELECT array_agg(format('%s=%s/min (%s)', b.model, round(b.requests_per_minute::numeric, 1),
                                                  b.limit_source) ORDER BY b.model)
                            FROM genq.key_buckets b WHERE b.scope = coalesce(k.account, k.discovered_account, k.id)), '{}') AS limits,
                coalesce((SELECT array_agg(format('%s: %s', m.model, m.reason) ORDER BY m.model)
                            FROM genq.key_model_blocks m WHERE m.key_id = k.id), '{}') AS blocked_models
           FROM genq.api_keys k
          ORDER BY k.id",
    )
    .fetch_all(pool)
    .await?)
}
