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
    sqlx::query_file!(
        "src/store/sql/buckets/register.sql",
        &ids as &[&str],
        &scopes as &[&str],
        &models as &[&str],
        &rpm as &[f64],
        &ipm as &[Option<f64>],
        &burst as &[i32],
        &source as &[&str],
        &rpd as &[Option<i32>],
        &ipd as &[Option<i32>],
        &day as &[f64]
    )
    .execute(pool)
    .await?;
    Ok(())
}

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
    let keys: Vec<&str> = candidates.iter().map(|c| c.0).collect();
    let buckets: Vec<&str> = candidates.iter().map(|c| c.1).collect();
    // A candidate that looked free but was taken by a concurrent caller
    // (the row lock's recheck failed) means the snapshot was stale: look again.
    for _ in 0..16 {
        let row = sqlx::query_file!(
            "src/store/sql/buckets/reserve.sql",
            &keys as &[&str],
            &buckets as &[&str],
            cost.max(1) as i32,
            want.max(1) as i32,
            horizon.as_secs_f64(),
            retest as &[&str],
            single as &[&str]
        )
        .fetch_one(pool)
        .await?;
        let (key_id, slots, interval, earliest, raced, missing) = (
            row.key_id,
            row.slots,
            row.every,
            row.earliest,
            row.raced,
            row.missing,
        );
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
    sqlx::query_file!(
        "src/store/sql/buckets/give_back.sql",
        &ids as &[&str],
        &requests as &[i32],
        &images as &[i32]
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Books a request as sent now: the bucket's next slot is no sooner than
/// one interval after this moment, by the database's clock. A slot used a
/// little late thus never bunches with the next one, which a provider that
/// allows no burst would answer with a 429.
pub async fn book_sent(pool: &PgPool, bucket_id: &str, images: i32) -> Result<(), StoreError> {
    sqlx::query_file!(
        "src/store/sql/buckets/book_sent.sql",
        bucket_id,
        f64::from(images)
    )
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
    sqlx::query!(
        "UPDATE genq.key_buckets
            SET requests_per_minute = $2, limit_source = $3, updated_at = now()
          WHERE id = $1 AND limit_source <> 'configured'
            AND (requests_per_minute, limit_source) IS DISTINCT FROM ($2, $3)",
        bucket_id,
        requests_per_minute,
        source
    )
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
    sqlx::query!(
        "UPDATE genq.key_buckets SET discovery = $2 WHERE id = $1",
        bucket_id,
        state
    )
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
    sqlx::query!(
        "UPDATE genq.key_buckets SET tat_requests = greatest(tat_requests, now() + make_interval(secs => $2)),
                updated_at = now()
          WHERE id = $1",
        bucket_id,
        wait.as_secs_f64()
    )
    .execute(pool)
    .await?;
    Ok(())
}
