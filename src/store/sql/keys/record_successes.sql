-- Books successful calls ($1 keys, $2 buckets, $3 calls each): counts them,
-- ends the keys' failure and 429 streaks, brings back a re-tested disabled
-- key, and returns each bucket's rate, source, discovery and successes so far.
WITH input AS (
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
          WHERE coalesce(a.account, a.discovered_account, a.id) = b.scope) AS "ok_before!"
   FROM genq.key_buckets b
  WHERE b.id IN (SELECT bucket_id FROM input)
