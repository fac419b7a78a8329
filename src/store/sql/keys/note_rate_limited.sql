-- Counts a 429 on key $1; returns its consecutive 429s and bucket $2's rate,
-- limit source and discovery state.
WITH k AS (
    UPDATE genq.api_keys
       SET rate_limited_count = rate_limited_count + 1, consecutive_429 = consecutive_429 + 1,
           last_used_at = now(), updated_at = now()
     WHERE id = $1
    RETURNING consecutive_429)
 SELECT (SELECT consecutive_429 FROM k) AS "streak!", b.requests_per_minute, b.limit_source, b.discovery
   FROM genq.key_buckets b WHERE b.id = $2
