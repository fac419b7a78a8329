//! SQL for `genq.api_keys` and `genq.key_buckets`: key health, cooldowns,
//! and the shared GCRA buckets every replica reserves from.
//!
//! A bucket holds a theoretical arrival time (TAT) per dimension (requests,
//! images). With emission interval T = 60 s / rate and burst B, a request of
//! cost c is allowed when `max(tat, now) + T·c <= now + T·max(B, c)`, and
//! then `tat = max(tat, now) + T·c`. One `UPDATE … RETURNING` checks and
//! advances under the row lock, so N replicas share one budget.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::StoreError;

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

/// The rate a bucket starts with or is configured to.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketSpec {
    pub id: String,
    pub scope: String,
    pub model: String,
    pub requests_per_minute: f64,
    pub images_per_minute: Option<f64>,
    pub burst: u32,
    /// Configured limits overwrite the row; others only seed a new row.
    pub configured: bool,
}

/// Creates missing buckets; configured limits overwrite stored ones, while
/// learned and adaptive rates already in the table are kept.
pub async fn ensure_buckets(pool: &PgPool, specs: &[BucketSpec]) -> Result<(), StoreError> {
    let ids: Vec<&str> = specs.iter().map(|s| s.id.as_str()).collect();
    let scopes: Vec<&str> = specs.iter().map(|s| s.scope.as_str()).collect();
    let models: Vec<&str> = specs.iter().map(|s| s.model.as_str()).collect();
    let rpm: Vec<f64> = specs.iter().map(|s| s.requests_per_minute).collect();
    let ipm: Vec<Option<f64>> = specs.iter().map(|s| s.images_per_minute).collect();
    let burst: Vec<i32> = specs.iter().map(|s| s.burst as i32).collect();
    let source: Vec<&str> = specs
        .iter()
        .map(|s| {
            if s.configured {
                "configured"
            } else {
                "adaptive"
            }
        })
        .collect();
    sqlx::query(
        "INSERT INTO genq.key_buckets (id, scope, model, requests_per_minute, images_per_minute, burst, limit_source)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::int[], $7::text[])
         ON CONFLICT (id) DO UPDATE
            SET requests_per_minute = EXCLUDED.requests_per_minute,
                images_per_minute = EXCLUDED.images_per_minute,
                burst = EXCLUDED.burst, limit_source = 'configured', updated_at = now()
          WHERE EXCLUDED.limit_source = 'configured'
            AND (genq.key_buckets.limit_source <> 'configured'
                 OR (genq.key_buckets.requests_per_minute, genq.key_buckets.images_per_minute, genq.key_buckets.burst)
                    IS DISTINCT FROM (EXCLUDED.requests_per_minute, EXCLUDED.images_per_minute, EXCLUDED.burst))",
    )
    .bind(&ids)
    .bind(&scopes)
    .bind(&models)
    .bind(&rpm)
    .bind(&ipm)
    .bind(&burst)
    .bind(&source)
    .execute(pool)
    .await?;
    Ok(())
}

/// Granted key, slot waits, its bucket's interval, wait for the earliest
/// candidate (seconds), raced.
type ReserveRow = (Option<String>, Vec<f64>, Option<f64>, Option<f64>, bool);

/// What [`reserve`] found. Times are waits from the database's `now()`, so
/// a worker whose clock is off neither sends early nor sleeps too long.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// The key whose bucket granted the slots, if any.
    pub key_id: Option<String>,
    /// How long until each granted slot may be used, soonest first (empty if none).
    pub slots: Vec<std::time::Duration>,
    /// The granting bucket's interval between requests (60 s / rate).
    pub interval: Option<std::time::Duration>,
    /// How long until the earliest usable candidate frees up (None: every
    /// candidate is disabled).
    pub earliest: Option<std::time::Duration>,
}

/// Reserves up to `want` requests of `cost` images on the candidate whose
/// bucket has the most room, skipping disabled and cooling keys and cooling
/// buckets. `candidates` are (key id, bucket id) pairs, in preference order
/// for ties.
///
/// Several slots are granted only as far as the bucket allows within
/// `horizon` of now, each at the moment GCRA would allow it, so one round
/// trip can serve many jobs of a fast key while a slow key still grants one
/// (or its burst). Buckets that also limit images grant one at a time.
pub async fn reserve(
    pool: &PgPool,
    candidates: &[(&str, &str)],
    cost: u32,
    want: u32,
    horizon: std::time::Duration,
) -> Result<Reservation, StoreError> {
    // The bucket's TAT is read in `avail` and must be unchanged when the
    // UPDATE takes the row lock (PostgreSQL re-checks the WHERE on the newest
    // version), so the slot count computed from it stays within the limit.
    const RESERVE: &str = "
        WITH cand AS (
            SELECT * FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS c(key_id, bucket_id, ord)
        ), avail AS (
            SELECT c.key_id, c.bucket_id, c.ord, b.tat_requests AS tat,
                   60.0 / b.requests_per_minute AS every, b.burst,
                   b.images_per_minute IS NOT NULL AS by_images,
                   greatest(coalesce(k.cooldown_until, '-infinity'),
                            coalesce(b.cooldown_until, '-infinity'),
                            b.tat_requests - make_interval(secs => 60.0 / b.requests_per_minute * (b.burst - 1)),
                            CASE WHEN b.images_per_minute IS NULL THEN '-infinity'::timestamptz
                                 ELSE b.tat_images - make_interval(secs => 60.0 / b.images_per_minute
                                                                          * (greatest(b.burst, $3) - $3)) END
                   ) AS available_at
              FROM cand c
              JOIN genq.api_keys k ON k.id = c.key_id
              JOIN genq.key_buckets b ON b.id = c.bucket_id
             WHERE k.state <> 'disabled'
        ), pick AS (
            SELECT key_id, bucket_id, tat, every, burst,
                   CASE WHEN by_images THEN 1
                        ELSE least($4::float8,
                                   1 + floor((extract(epoch FROM now() - greatest(tat, now()))::float8 + $5)
                                             / every) + burst - 1)::int
                   END AS n
              FROM avail WHERE available_at <= now()
             ORDER BY available_at, ord LIMIT 1
        ), reserved AS (
            UPDATE genq.key_buckets b
               SET tat_requests = greatest(b.tat_requests, now()) + make_interval(secs => p.every * p.n),
                   tat_images = CASE WHEN b.images_per_minute IS NULL THEN b.tat_images
                                ELSE greatest(b.tat_images, now()) + make_interval(secs => 60.0 / b.images_per_minute * $3) END
              FROM pick p
             WHERE b.id = p.bucket_id
               AND b.tat_requests = p.tat
               AND coalesce(b.cooldown_until, '-infinity') <= now()
               AND (b.images_per_minute IS NULL
                    OR b.tat_images - make_interval(secs => 60.0 / b.images_per_minute * (greatest(b.burst, $3) - $3)) <= now())
            RETURNING p.key_id,
                      ARRAY(SELECT greatest(0, extract(epoch FROM greatest(p.tat, now())
                                                   + make_interval(secs => p.every * (j - p.burst + 1)) - now()))::float8
                              FROM generate_series(0, p.n - 1) j) AS slots,
                      p.every::float8 AS every
        )
        SELECT (SELECT key_id FROM reserved), coalesce((SELECT slots FROM reserved), '{}'),
               (SELECT every FROM reserved),
               (SELECT extract(epoch FROM min(available_at) - now())::float8 FROM avail),
               EXISTS (SELECT 1 FROM pick) AS raced";
    let keys: Vec<&str> = candidates.iter().map(|c| c.0).collect();
    let buckets: Vec<&str> = candidates.iter().map(|c| c.1).collect();
    // A candidate that looked free but was taken by a concurrent caller
    // (the row lock's recheck failed) means the snapshot was stale: look again.
    for _ in 0..16 {
        let (key_id, slots, interval, earliest, raced): ReserveRow = sqlx::query_as(RESERVE)
            .bind(&keys)
            .bind(&buckets)
            .bind(cost.max(1) as i32)
            .bind(want.max(1) as i32)
            .bind(horizon.as_secs_f64())
            .fetch_one(pool)
            .await?;
        if key_id.is_some() || !raced {
            return Ok(Reservation {
                key_id,
                slots: slots.into_iter().map(secs).collect(),
                interval: interval.map(secs),
                earliest: earliest.map(secs),
            });
        }
    }
    Ok(Reservation {
        key_id: None,
        slots: Vec::new(),
        interval: None,
        earliest: Some(std::time::Duration::ZERO),
    })
}

/// Seconds from the database as a wait; a moment already past is no wait.
fn secs(s: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(s).unwrap_or_default()
}

/// Slots reserved on a bucket that no call will use.
#[derive(Debug, Clone, PartialEq)]
pub struct Unused {
    pub bucket_id: String,
    pub requests: i32,
    pub images: i32,
}

/// Gives unused slots back to their buckets: each bucket's TAT moves back
/// by what they cost, never before `now()` (a returned slot is room now, not
/// a burst saved up).
pub async fn give_back(pool: &PgPool, unused: &[Unused]) -> Result<(), StoreError> {
    let ids: Vec<&str> = unused.iter().map(|u| u.bucket_id.as_str()).collect();
    let requests: Vec<i32> = unused.iter().map(|u| u.requests).collect();
    let images: Vec<i32> = unused.iter().map(|u| u.images).collect();
    sqlx::query(
        "UPDATE genq.key_buckets b
            SET tat_requests = greatest(now(), b.tat_requests - make_interval(secs => 60.0 / b.requests_per_minute * u.requests)),
                tat_images = CASE WHEN b.images_per_minute IS NULL THEN b.tat_images
                             ELSE greatest(now(), b.tat_images - make_interval(secs => 60.0 / b.images_per_minute * u.images)) END,
                updated_at = now()
           FROM (SELECT id, sum(requests) AS requests, sum(images) AS images
                   FROM unnest($1::text[], $2::int[], $3::int[]) AS t(id, requests, images) GROUP BY id) u
          WHERE b.id = u.id",
    )
    .bind(&ids)
    .bind(&requests)
    .bind(&images)
    .execute(pool)
    .await?;
    Ok(())
}

/// Books a request as sent now: the bucket's next slot is no sooner than
/// one interval after this moment, by the database's clock. A slot used a
/// little late thus never bunches with the next one, which a provider that
/// allows no burst would answer with a 429.
pub async fn book_sent(pool: &PgPool, bucket_id: &str, images: i32) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE genq.key_buckets
            SET tat_requests = greatest(tat_requests, now() + make_interval(secs => 60.0 / requests_per_minute)),
                tat_images = CASE WHEN images_per_minute IS NULL THEN tat_images
                             ELSE greatest(tat_images, now() + make_interval(secs => 60.0 / images_per_minute * $2)) END
          WHERE id = $1",
    )
    .bind(bucket_id)
    .bind(images)
    .execute(pool)
    .await?;
    Ok(())
}

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
) -> Result<Vec<(String, f64, String)>, StoreError> {
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
                   state = CASE WHEN a.state = 'cooling' AND a.cooldown_until <= now() THEN 'active' ELSE a.state END
              FROM (SELECT key_id, sum(calls) AS calls FROM input GROUP BY key_id) s
             WHERE a.id = s.key_id)
         SELECT id, requests_per_minute, limit_source FROM genq.key_buckets
          WHERE id IN (SELECT bucket_id FROM input)",
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
/// and the bucket's current rate and limit source, for the caller's cooldown
/// and rate decisions.
pub async fn note_rate_limited(
    pool: &PgPool,
    key_id: &str,
    bucket_id: &str,
) -> Result<(i32, f64, String), StoreError> {
    Ok(sqlx::query_as(
        "WITH k AS (
            UPDATE genq.api_keys
               SET rate_limited_count = rate_limited_count + 1, consecutive_429 = consecutive_429 + 1,
                   last_used_at = now(), updated_at = now()
             WHERE id = $1
            RETURNING consecutive_429)
         SELECT (SELECT consecutive_429 FROM k), b.requests_per_minute, b.limit_source
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
    .bind(reason)
    .bind(new_rpm)
    .fetch_one(pool)
    .await?;
    Ok(secs(left))
}

/// Sets a bucket's rate from what the provider said (`learned`) or from the
/// slow additive increase (`adaptive`); configured limits are never changed.
pub async fn set_rate(
    pool: &PgPool,
    bucket_id: &str,
    requests_per_minute: f64,
    source: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE genq.key_buckets
            SET requests_per_minute = $2, limit_source = $3, updated_at = now()
          WHERE id = $1 AND limit_source <> 'configured'
            AND (requests_per_minute, limit_source) IS DISTINCT FROM ($2, $3)",
    )
    .bind(bucket_id)
    .bind(requests_per_minute)
    .bind(source)
    .execute(pool)
    .await?;
    Ok(())
}

/// Holds a bucket for `wait` from the database's `now()` without touching
/// the key (the provider said the window has no requests left).
pub async fn hold_bucket(
    pool: &PgPool,
    bucket_id: &str,
    wait: std::time::Duration,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE genq.key_buckets SET tat_requests = greatest(tat_requests, now() + make_interval(secs => $2)),
                updated_at = now()
          WHERE id = $1",
    )
    .bind(bucket_id)
    .bind(wait.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
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
    .bind(error)
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
                updated_at = now()
          WHERE id = $1",
    )
    .bind(key_id)
    .bind(reason)
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
               SET state = 'active', disabled_reason = NULL, cooldown_until = NULL,
                   consecutive_failures = 0, consecutive_429 = 0, updated_at = now()
             WHERE id = $1
            RETURNING coalesce(account, id) AS scope
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

/// Enables a key and forgets its counters and the learned (not configured)
/// limits of its buckets, unless other keys share them. False if no such key.
pub async fn reset(pool: &PgPool, key_id: &str) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let scope: Option<String> = sqlx::query_scalar(
        "UPDATE genq.api_keys
            SET state = 'active', disabled_reason = NULL, cooldown_until = NULL, ok_count = 0,
                rate_limited_count = 0, error_count = 0, consecutive_failures = 0, consecutive_429 = 0,
                last_error = NULL, updated_at = now()
          WHERE id = $1
         RETURNING coalesce(account, id)",
    )
    .bind(key_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(scope) = scope else {
        return Ok(false);
    };
    sqlx::query(
        "DELETE FROM genq.key_buckets b
          WHERE b.scope = $1 AND b.limit_source <> 'configured'
            AND NOT EXISTS (SELECT 1 FROM genq.api_keys o WHERE o.id <> $2 AND coalesce(o.account, o.id) = $1)",
    )
    .bind(&scope)
    .bind(key_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// A key as `genq keys list` and `GET /v1/keys` show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct KeyStatus {
    pub id: String,
    pub account: Option<String>,
    /// active, cooling (cooldown not yet over) or disabled.
    pub state: String,
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
}

/// Every key with its effective state and the limits of its buckets.
pub async fn list(pool: &PgPool) -> Result<Vec<KeyStatus>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT k.id, k.account,
                CASE WHEN k.state = 'cooling' AND k.cooldown_until <= now() THEN 'active' ELSE k.state END AS state,
                k.cooldown_until,
                CASE WHEN k.cooldown_until > now()
                     THEN extract(epoch FROM k.cooldown_until - now())::float8 END AS cooldown_remaining_secs,
                k.disabled_reason, k.ok_count, k.rate_limited_count, k.error_count, k.last_used_at, k.last_error,
                coalesce((SELECT array_agg(format('%s=%s/min (%s)', b.model, round(b.requests_per_minute::numeric, 1),
                                                  b.limit_source) ORDER BY b.model)
                            FROM genq.key_buckets b WHERE b.scope = coalesce(k.account, k.id)), '{}') AS limits
           FROM genq.api_keys k
          ORDER BY k.id",
    )
    .fetch_all(pool)
    .await?)
}
