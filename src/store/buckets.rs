//! SQL for `genq.key_buckets`: the shared GCRA buckets every replica
//! reserves from, one per (account or key, model).
//!
//! A bucket holds a theoretical arrival time (TAT) per dimension (requests,
//! images). With emission interval T = 60 s / rate and burst B, a request of
//! cost c is allowed when `max(tat, now) + T·c <= now + T·max(B, c)`, and
//! then `tat = max(tat, now) + T·c`. One `UPDATE … RETURNING` checks and
//! advances under the row lock, so N replicas share one budget. Every time
//! is the database's: callers get waits, not moments.

use sqlx::PgPool;

use super::StoreError;

/// The rate a bucket starts with or is configured to.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketSpec {
    pub id: String,
    pub scope: String,
    pub model: String,
    pub requests_per_minute: f64,
    pub images_per_minute: Option<f64>,
    pub burst: u32,
    /// Daily caps, counted in windows of `day_secs`.
    pub requests_per_day: Option<u32>,
    pub images_per_day: Option<u32>,
    pub day_secs: f64,
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
    let rpd: Vec<Option<i32>> = specs
        .iter()
        .map(|s| s.requests_per_day.map(|v| v as i32))
        .collect();
    let ipd: Vec<Option<i32>> = specs
        .iter()
        .map(|s| s.images_per_day.map(|v| v as i32))
        .collect();
    let day: Vec<f64> = specs.iter().map(|s| s.day_secs).collect();
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
        "INSERT INTO genq.key_buckets (id, scope, model, requests_per_minute, images_per_minute, burst,
                                       limit_source, requests_per_day, images_per_day, day_secs, tat_requests)
         SELECT t.*,
                -- an account's new bucket starts after its keys' latest use of their own
                greatest(now(), (SELECT max(o.tat_requests) FROM genq.key_buckets o
                                   JOIN genq.api_keys k ON o.scope = k.id
                                  WHERE o.model = t.model AND t.scope <> k.id
                                    AND coalesce(k.account, k.discovered_account) = t.scope))
           FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::int[],
                       $7::text[], $8::int[], $9::int[], $10::float8[])
                AS t(id, scope, model, rpm, ipm, burst, source, rpd, ipd, day)
         ON CONFLICT (id) DO UPDATE
            SET requests_per_minute = EXCLUDED.requests_per_minute,
                images_per_minute = EXCLUDED.images_per_minute,
                burst = EXCLUDED.burst, limit_source = 'configured',
                requests_per_day = EXCLUDED.requests_per_day, images_per_day = EXCLUDED.images_per_day,
                day_secs = EXCLUDED.day_secs, updated_at = now()
          WHERE EXCLUDED.limit_source = 'configured'
            AND (genq.key_buckets.limit_source <> 'configured'
                 OR (genq.key_buckets.requests_per_minute, genq.key_buckets.images_per_minute, genq.key_buckets.burst,
                     genq.key_buckets.requests_per_day, genq.key_buckets.images_per_day, genq.key_buckets.day_secs)
                    IS DISTINCT FROM (EXCLUDED.requests_per_minute, EXCLUDED.images_per_minute, EXCLUDED.burst,
                                      EXCLUDED.requests_per_day, EXCLUDED.images_per_day, EXCLUDED.day_secs))",
    )
    .bind(&ids)
    .bind(&scopes)
    .bind(&models)
    .bind(&rpm)
    .bind(&ipm)
    .bind(&burst)
    .bind(&source)
    .bind(&rpd)
    .bind(&ipd)
    .bind(&day)
    .execute(pool)
    .await?;
    Ok(())
}

/// Granted key, slot waits, its bucket's interval, wait for the earliest
/// candidate (seconds), raced, candidates without a bucket.
type ReserveRow = (
    Option<String>,
    Vec<f64>,
    Option<f64>,
    Option<f64>,
    bool,
    i64,
);

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
    /// Candidates whose bucket row is missing (deleted by `genq keys
    /// reset`): the caller seeds them again.
    pub missing: i64,
}

/// Reserves up to `want` requests of `cost` images on the candidate whose
/// bucket has the most room, skipping disabled and cooling keys, keys
/// blocked for the bucket's model, and cooling buckets. `candidates` are
/// (key id, bucket id) pairs, in preference order for ties. Disabled keys
/// named in `retest` are candidates too, for one slot: their re-test. Keys
/// named in `single` get one slot at most.
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
    retest: &[&str],
    single: &[&str],
) -> Result<Reservation, StoreError> {
    // The bucket's TAT is read in `avail` and must be unchanged when the
    // UPDATE takes the row lock (PostgreSQL re-checks the WHERE on the newest
    // version), so the slot count computed from it stays within the limit.
    const RESERVE: &str = "
        WITH cand AS (
            SELECT * FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS c(key_id, bucket_id, ord)
        ), usable AS (
            SELECT c.key_id, c.bucket_id, c.ord, b.tat_requests AS tat, b.tat_images,
                   60.0 / b.requests_per_minute AS every, b.burst, b.images_per_minute,
                   b.images_per_minute IS NOT NULL AS by_images, k.state = 'disabled' AS retest,
                   greatest(coalesce(k.cooldown_until, '-infinity'), coalesce(b.cooldown_until, '-infinity'))
                       AS cooling_until,
                   b.requests_per_day, b.images_per_day, b.day_requests, b.day_images,
                   b.day_started_at + make_interval(secs => b.day_secs) AS day_ends,
                   coalesce(b.day_started_at + make_interval(secs => b.day_secs) > now(), false) AS in_day
              FROM cand c
              JOIN genq.api_keys k ON k.id = c.key_id
              JOIN genq.key_buckets b ON b.id = c.bucket_id
             WHERE (k.state <> 'disabled' OR k.id = ANY($6))
               AND NOT EXISTS (SELECT 1 FROM genq.key_model_blocks m
                                WHERE m.key_id = k.id AND m.model = b.model)
        ), avail AS (
            SELECT u.*,
                   -- what the daily caps leave in the current window (NULL: no cap)
                   CASE WHEN in_day THEN requests_per_day - day_requests ELSE requests_per_day END AS day_left,
                   CASE WHEN in_day THEN images_per_day - day_images ELSE images_per_day END AS day_images_left,
                   greatest(cooling_until,
                            tat - make_interval(secs => every * (burst - 1)),
                            CASE WHEN images_per_minute IS NULL THEN '-infinity'::timestamptz
                                 ELSE tat_images - make_interval(secs => 60.0 / images_per_minute
                                                                        * (greatest(burst, $3) - $3)) END,
                            CASE WHEN in_day AND (day_requests >= requests_per_day
                                                  OR day_images + $3 > images_per_day)
                                 THEN day_ends ELSE '-infinity'::timestamptz END
                   ) AS available_at
              FROM usable u
        ), pick AS (
            SELECT key_id, bucket_id, tat, every, burst,
                   least(CASE WHEN by_images OR retest OR key_id = ANY($7) THEN 1
                              ELSE least($4::float8,
                                         1 + floor((extract(epoch FROM now() - greatest(tat, now()))::float8 + $5)
                                                   / every) + burst - 1)::int
                         END, day_left, day_images_left / $3) AS n
              FROM avail WHERE available_at <= now()
             ORDER BY available_at, ord LIMIT 1
        ), reserved AS (
            UPDATE genq.key_buckets b
               SET tat_requests = greatest(b.tat_requests, now()) + make_interval(secs => p.every * p.n),
                   tat_images = CASE WHEN b.images_per_minute IS NULL THEN b.tat_images
                                ELSE greatest(b.tat_images, now()) + make_interval(secs => 60.0 / b.images_per_minute * $3) END,
                   -- a daily window starts with its first request
                   day_started_at = CASE WHEN b.day_started_at + make_interval(secs => b.day_secs) > now()
                                         THEN b.day_started_at ELSE now() END,
                   day_requests = CASE WHEN b.day_started_at + make_interval(secs => b.day_secs) > now()
                                       THEN b.day_requests + p.n ELSE p.n END,
                   day_images = CASE WHEN b.day_started_at + make_interval(secs => b.day_secs) > now()
                                     THEN b.day_images + $3 * p.n ELSE $3 * p.n END
              FROM pick p
             WHERE b.id = p.bucket_id
               AND p.n >= 1
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
               EXISTS (SELECT 1 FROM pick) AS raced,
               (SELECT count(*) FROM cand c
                 WHERE NOT EXISTS (SELECT 1 FROM genq.key_buckets b WHERE b.id = c.bucket_id)) AS missing";
    let keys: Vec<&str> = candidates.iter().map(|c| c.0).collect();
    let buckets: Vec<&str> = candidates.iter().map(|c| c.1).collect();
    // A candidate that looked free but was taken by a concurrent caller
    // (the row lock's recheck failed) means the snapshot was stale: look again.
    for _ in 0..16 {
        let (key_id, slots, interval, earliest, raced, missing): ReserveRow =
            sqlx::query_as(RESERVE)
                .bind(&keys)
                .bind(&buckets)
                .bind(cost.max(1) as i32)
                .bind(want.max(1) as i32)
                .bind(horizon.as_secs_f64())
                .bind(retest)
                .bind(single)
                .fetch_one(pool)
                .await?;
        if key_id.is_some() || !raced {
            return Ok(Reservation {
                key_id,
                slots: slots.into_iter().map(secs).collect(),
                interval: interval.map(secs),
                earliest: earliest.map(secs),
                missing,
            });
        }
    }
    Ok(Reservation {
        key_id: None,
        slots: Vec::new(),
        interval: None,
        earliest: Some(std::time::Duration::ZERO),
        missing: 0,
    })
}

/// Seconds from the database as a wait; a moment already past is no wait.
pub(super) fn secs(s: f64) -> std::time::Duration {
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
                day_requests = greatest(0, b.day_requests - u.requests),
                day_images = greatest(0, b.day_images - u.images),
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

/// Saves what discovering an unannounced limit learned, for a restart.
pub async fn save_discovery(
    pool: &PgPool,
    bucket_id: &str,
    state: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE genq.key_buckets SET discovery = $2 WHERE id = $1")
        .bind(bucket_id)
        .bind(state)
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
