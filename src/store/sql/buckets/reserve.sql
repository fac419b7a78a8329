-- Reserves up to $4 slots (of $3 images each) on the first candidate key of
-- ($1 keys, $2 buckets) with room now, GCRA per bucket, within the daily
-- caps; fast keys get several slots at their moments within $5 seconds.
-- Disabled keys in $6 are due a re-test; keys in $7 get one slot at a time.
-- The bucket's TAT read in `avail` must be unchanged when the UPDATE takes
-- the row lock (PostgreSQL re-checks the WHERE on the newest version), so
-- the slot count computed from it stays within the limit.
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
SELECT (SELECT key_id FROM reserved) AS key_id,
       coalesce((SELECT slots FROM reserved), '{}') AS "slots!",
       (SELECT every FROM reserved) AS every,
       (SELECT extract(epoch FROM min(available_at) - now())::float8 FROM avail) AS earliest,
       EXISTS (SELECT 1 FROM pick) AS "raced!",
       (SELECT count(*) FROM cand c
         WHERE NOT EXISTS (SELECT 1 FROM genq.key_buckets b WHERE b.id = c.bucket_id)) AS "missing!"
