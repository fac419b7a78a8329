-- Creates or updates the buckets (id, scope, model, limits) of the keys'
-- models; configured limits replace learned ones, learned ones are kept.
INSERT INTO genq.key_buckets (id, scope, model, requests_per_minute, images_per_minute, burst,
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
                              EXCLUDED.requests_per_day, EXCLUDED.images_per_day, EXCLUDED.day_secs))
